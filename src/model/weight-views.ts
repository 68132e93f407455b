import { embedding, stack, Tensor } from '../tensor/index.js';
import type { ModelConfig } from './config.js';
import { weightStorage } from './params.js';
import * as tok from './token-helpers.js';
import type { Weights } from './weights.js';

// Read-only views of a model's weights (HookedTransformer's stacked W_Q / ... getters,
// accumulated_bias, tokens_to_residual_directions), as functions over its config and weights.

/** An unguarded view of a parameter (reading it does not mark it exposed: copies are made from it). */
export const raw = (t: Tensor): Tensor => new Tensor(weightStorage(t), t.shape, undefined, 0, t.dtype);

/** One per-block parameter stacked over the layers [n_layers, ...]. */
export function stackedWeight(weights: Weights, k: keyof Weights['blocks'][number]): Tensor {
  return stack(weights.blocks.map((b) => raw(b[k] as Tensor)));
}

/** Sum of the biases written into the residual stream before `layer` (TL's accumulated_bias). */
export function accumulatedBias(
  cfg: ModelConfig,
  weights: Weights,
  layer: number,
  mlpInput: boolean,
  includeMlpBiases: boolean,
): Tensor {
  const out = new Float32Array(cfg.d_model);
  for (let i = 0; i < layer; i++) {
    const bO = weights.blocks[i].b_O.f32(),
      bOut = weights.blocks[i].b_out.f32();
    for (let m = 0; m < out.length; m++) out[m] += bO[m] + (includeMlpBiases ? bOut[m] : 0);
  }
  if (mlpInput) {
    const bO = weights.blocks[layer].b_O.f32();
    for (let m = 0; m < out.length; m++) out[m] += bO[m];
  }
  return new Tensor(out, [cfg.d_model]);
}

/** Columns of W_U for tokens: one id -> [M]; [N] -> [N, M]; [B, 2] -> [B, 2, M]. */
export function tokensToResidualDirections(
  cfg: ModelConfig,
  weights: Weights,
  tokens: number | string | Tensor | number[],
): Tensor {
  const WU = raw(weights.W_U); // read-only use: does not mark W_U exposed (params.ts)
  if (typeof tokens === 'string') tokens = tok.toSingleToken(tokens);
  if (typeof tokens === 'number') return embedding(WU.T, [tokens], [], 'token').reshape([cfg.d_model]);
  const t = tokens instanceof Tensor ? tokens : Tensor.from(tokens, [tokens.length]);
  if (t.size === 1) return embedding(WU.T, t.f32(), [], 'token').reshape([cfg.d_model]);
  return embedding(WU.T, t);
}

/** TL's all_head_labels: "L{l}H{h}", layer-major. */
export function allHeadLabels(cfg: ModelConfig): string[] {
  return Array.from(
    { length: cfg.n_layers * cfg.n_heads },
    (_, i) => `L${Math.floor(i / cfg.n_heads)}H${i % cfg.n_heads}`,
  );
}
