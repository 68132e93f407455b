// A model's token helpers, TL's to_str_tokens, to_single_token, to_string and get_token_position:
// functions over TokenModel, an interface here, so that hooked-transformer.ts and this module form
// no cycle; HookedTransformer's methods call them.
import { TypelensError } from '../errors.js';
import { Tensor } from '../tensor/index.js';
import type { ModelConfig } from './config.js';
import type { PaddingSide } from './padding.js';
import { decodeToken, decodeTokens, encodeText } from './tokenizer.js';

/** What the token helpers need of a HookedTransformer. */
export interface TokenModel {
  readonly cfg: ModelConfig;
  toTokens(
    input: string | string[],
    opts?: { prependBos?: boolean; paddingSide?: 'right' | 'left'; truncate?: boolean },
  ): Tensor;
  toSingleToken(s: string): number;
}

/** TL's to_str_tokens: one string per token (BOS as '<|endoftext|>'). */
export function toStrTokens(
  model: TokenModel,
  input: string | Tensor | number[],
  opts: { prependBos?: boolean },
): string[] {
  // TL's to_str_tokens asserts a tensor of tokens is 1D or a batch of one
  if (input instanceof Tensor && (input.ndim > 2 || (input.ndim === 2 && input.shape[0] !== 1))) {
    throw new TypelensError(
      `toStrTokens: tokens must be [P] or [1, P] (batch of one), got [${input.shape.join(', ')}]: index a row first`,
      'ESHAPE',
    );
  }
  const ids =
    typeof input === 'string'
      ? model.toTokens(input, opts).toArray()
      : input instanceof Tensor
        ? input.reshape([input.size]).toArray()
        : input;
  return ids.map((id) => (id === model.cfg.bos_token_id ? '<|endoftext|>' : decodeToken(id)));
}

/** TL's to_single_token: the id of a string that is exactly one token. */
export function toSingleToken(s: string): number {
  const ids = encodeText(s);
  if (ids.length !== 1) throw new TypelensError(`"${s}" is ${ids.length} tokens, not a single token`, 'ETOKEN');
  return ids[0];
}

/** TL's to_string: ids [P] -> one string; [B, P] -> one per row. */
export function tokensToString(tokens: Tensor | number[] | number[][]): string | string[] {
  const t = tokens instanceof Tensor ? tokens : Tensor.from(tokens as number[][]);
  if (t.ndim <= 1) return decodeTokens(t.toArray());
  return Array.from({ length: t.shape[0] }, (_, b) => decodeTokens(t.index(0, b).toArray()));
}

/** TL's get_token_position: the index of singleToken in a one-prompt input (mode 'first' or 'last'). */
export function getTokenPosition(
  model: TokenModel,
  singleToken: string | number,
  input: string | Tensor | number[],
  opts: { mode?: 'first' | 'last'; prependBos?: boolean; paddingSide?: PaddingSide },
): number {
  const { mode = 'first' } = opts;
  let t =
    typeof input === 'string' ? model.toTokens(input, opts) : input instanceof Tensor ? input : Tensor.from(input);
  if (t.ndim === 2) {
    if (t.shape[0] !== 1)
      throw new TypelensError(
        `getTokenPosition: the input must be one prompt (batch of 1), got [${t.shape.join(', ')}]`,
        'ESHAPE',
      );
    t = t.index(0, 0);
  }
  const id = typeof singleToken === 'string' ? model.toSingleToken(singleToken) : singleToken;
  const ids = t.toArray();
  const at = mode === 'first' ? ids.indexOf(id) : mode === 'last' ? ids.lastIndexOf(id) : NaN;
  if (Number.isNaN(at))
    throw new TypelensError(`getTokenPosition: mode must be 'first' or 'last', got ${JSON.stringify(mode)}`, 'EINPUT');
  if (at < 0) throw new TypelensError(`getTokenPosition: token ${id} does not occur in the prompt`, 'ETOKEN');
  return at;
}
