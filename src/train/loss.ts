// The loss at chosen positions only: the training loop's answer to GPT-2's 50257-token
// unembedding, which dominates a small model's step when every position is unembedded.
import * as ag from '../autograd/ops.js';
import { TypelensError } from '../errors.js';
import type { HookedTransformer } from '../model/hooked-transformer.js';
import { Tensor } from '../tensor/index.js';

/**
 * Flat residual rows (b * P + p - 1) and target tokens (seqs[b][p]) of every scored target
 * position p (1 <= p < P) of every row.
 */
export function scoredRows(
  seqs: number[][],
  positionsOf: (seq: number[]) => readonly number[],
): { rows: number[]; targets: number[] } {
  const rows: number[] = [],
    targets: number[] = [];
  seqs.forEach((s, b) => {
    const P = s.length;
    for (const p of positionsOf(s)) {
      if (!Number.isInteger(p) || p < 1 || p >= P)
        throw new TypelensError(`lossPositions: position ${p} is not a target position in [1, ${P})`, 'EINPUT');
      rows.push(b * P + p - 1);
      targets.push(s[p]);
    }
  });
  if (!rows.length) throw new TypelensError('lossPositions: the batch has no scored position', 'EINPUT');
  return { rows, targets };
}

/**
 * Mean cross-entropy at the given residual rows: resid [B, P, M] (the stream after the last
 * block, i.e. a forward with stopAtLayer = n_layers) -> pick rows -> ln_final -> x @ W_U + b_U
 * -> cross-entropy against `targets`. Equal to the full forward's logits at those rows (same ops,
 * same order per row), at the cost of [rows, M] x [M, d_vocab] instead of [B·P, M] x [M, d_vocab].
 */
export function positionsLoss(
  model: HookedTransformer,
  resid: Tensor,
  rows: number[],
  targets: number[],
  opts: { tied?: boolean } = {},
): Tensor {
  const W = model.weights,
    cfg = model.cfg;
  const x = ag.selectRows(resid, rows); // [N, M]
  const ln = ag.layerNorm(x, cfg.eps, W.ln_final_w, W.ln_final_b);
  const WU = ag.plainWeight(W.W_U, model.gradPackCache, model.packed.WU);
  // tied (W_U = W_E^T exactly, the caller's promise): dX's transposed copy is W_E itself, already
  // contiguous, instead of a [V, M] gather of W_U each time the weights change
  if (opts.tied) {
    const cache = model.gradPackCache,
      E = W.W_E;
    WU.packedT = () => cache.get(W.W_U, 'T', cfg.d_vocab, cfg.d_model, () => E.contiguous().f32());
  }
  const logits = ag.linear(ln, WU, W.b_U, model.backend); // [N, V]
  return ag.crossEntropy(logits, targets);
}

/** dst [C, R] := src [R, C]^T, in cache-sized tiles. */
export function transposeInto(src: Float32Array, R: number, C: number, dst: Float32Array): Float32Array {
  const T = 64;
  for (let r0 = 0; r0 < R; r0 += T)
    for (let c0 = 0; c0 < C; c0 += T) {
      const r1 = Math.min(R, r0 + T),
        c1 = Math.min(C, c0 + T);
      for (let r = r0; r < r1; r++) for (let c = c0; c < c1; c++) dst[c * R + r] = src[r * C + c];
    }
  return dst;
}
