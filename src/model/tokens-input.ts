import { TypelensError } from '../errors.js';
import { Tensor } from '../tensor/index.js';
import type { ModelConfig } from './config.js';
import { toTokens } from './tokenizer.js';

export type TokensInput = string | string[] | Tensor | number[] | number[][];

/** Any accepted token input as a validated contiguous [B, P] tensor of ids (TL's to_tokens for text). */
export function tokensOf(
  input: TokensInput,
  cfg: ModelConfig,
  prependBos?: boolean,
  paddingSide?: 'left' | 'right',
): Tensor {
  let t: Tensor;
  if (typeof input === 'string' || (Array.isArray(input) && typeof input[0] === 'string')) {
    t = toTokens(input as string | string[], { prependBos, paddingSide, nCtx: cfg.n_ctx, bos: cfg.bos_token_id });
  } else if (input instanceof Tensor) t = input;
  else t = Tensor.from(input as number[] | number[][]);
  if (t.ndim === 1) t = t.unsqueeze(0);
  if (t.ndim !== 2) throw new TypelensError(`tokens must be [batch, pos], got [${t.shape.join(', ')}]`, 'ESHAPE');
  const [B, P] = t.shape;
  if (B === 0 || P === 0) throw new TypelensError('empty input: no tokens to run', 'EINPUT');
  if (P > cfg.n_ctx) throw new TypelensError(`input has ${P} tokens, more than n_ctx = ${cfg.n_ctx}`, 'ETOKEN');
  const ids = t.f32();
  for (let i = 0; i < ids.length; i++) {
    if (!Number.isInteger(ids[i]) || ids[i] < 0 || ids[i] >= cfg.d_vocab) {
      throw new TypelensError(
        `token id ${ids[i]} at [${Math.floor(i / P)}, ${i % P}] is outside the vocabulary [0, ${cfg.d_vocab})`,
        'ETOKEN',
      );
    }
  }
  return t.contiguous();
}
