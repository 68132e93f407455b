// Causal self-attention on the host, per head: scores = q.k / attn_scale (masked), then
// z = pattern @ v. Short prompts use plain loops; from `matmulMinPos` positions on, each head's
// product goes through the backend's matmul (SIMD, threads), which is what makes long prompts
// practical (the loop is ~30x slower there).
import type { Backend } from '../kernels/index.js';

/** Pk: key positions (past + new, with a KV cache; default P). */
export interface AttnDims {
  B: number;
  P: number;
  H: number;
  D: number;
  Pk?: number;
}

/**
 * Causal attention scores [B, H, P, Pk] from q [B, P, H, D], k [B, Pk, H, D]: q.k / attnScale,
 * -inf where a key is after its query (query i sits at Pk - P + i: past keys come first, as in
 * TL's apply_causal_mask with `mask[-query_ctx:, -key_ctx:]`) or where keyMask [B, Pk] is 0
 * (padding: TL's AbstractAttention masks with the attention mask too).
 */
export function attnScores(
  backend: Backend,
  q: Float32Array,
  k: Float32Array,
  dims: AttnDims,
  attnScale: number,
  matmulMinPos: number,
  keyMask?: Float32Array,
): Float32Array {
  const scores = attnScoresCausal(backend, q, k, dims, attnScale, matmulMinPos);
  if (keyMask) {
    const { B, P, H } = dims,
      Pk = dims.Pk ?? P;
    for (let b = 0; b < B; b++)
      for (let j = 0; j < Pk; j++) {
        if (keyMask[b * Pk + j] !== 0) continue;
        for (let h = 0; h < H; h++) for (let i = 0; i < P; i++) scores[((b * H + h) * P + i) * Pk + j] = -Infinity;
      }
  }
  return scores;
}

function attnScoresCausal(
  backend: Backend,
  q: Float32Array,
  k: Float32Array,
  { B, P, H, D, Pk = P }: AttnDims,
  attnScale: number,
  matmulMinPos: number,
): Float32Array {
  const scores = new Float32Array(B * H * P * Pk);
  const inv = 1 / attnScale,
    past = Pk - P;
  if (P < matmulMinPos || past !== 0) {
    for (let b = 0; b < B; b++)
      for (let h = 0; h < H; h++)
        for (let i = 0; i < P; i++) {
          const o = ((b * H + h) * P + i) * Pk,
            qo = ((b * P + i) * H + h) * D;
          for (let j = 0; j < Pk; j++) {
            if (j > past + i) {
              scores[o + j] = -Infinity;
              continue;
            }
            const ko = ((b * Pk + j) * H + h) * D;
            let s = 0;
            for (let d = 0; d < D; d++) s += q[qo + d] * k[ko + d];
            scores[o + j] = Math.fround(s) * inv;
          }
        }
    return scores;
  }
  const qh = new Float32Array(P * D),
    kT = new Float32Array(D * P),
    out = new Float32Array(P * P);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++) {
      for (let i = 0; i < P; i++) {
        const src = ((b * P + i) * H + h) * D;
        for (let d = 0; d < D; d++) {
          qh[i * D + d] = q[src + d];
          kT[d * P + i] = k[src + d];
        }
      }
      const w = backend.pack(kT, D, P, 'f32');
      try {
        backend.matmul(qh, P, w, out);
      } finally {
        w.release();
      }
      const o = (b * H + h) * P * P;
      for (let i = 0; i < P; i++)
        for (let j = 0; j < P; j++) scores[o + i * P + j] = j > i ? -Infinity : out[i * P + j] * inv;
    }
  return scores;
}

/** z [B, P, H, D] = pattern [B, H, P, Pk] @ v [B, Pk, H, D] per head. */
export function attnMix(
  backend: Backend,
  pattern: Float32Array,
  v: Float32Array,
  { B, P, H, D, Pk = P }: AttnDims,
  matmulMinPos: number,
): Float32Array {
  const z = new Float32Array(B * P * H * D);
  if (P < matmulMinPos || Pk !== P) {
    for (let b = 0; b < B; b++)
      for (let h = 0; h < H; h++)
        for (let i = 0; i < P; i++) {
          const po = ((b * H + h) * P + i) * Pk,
            zo = ((b * P + i) * H + h) * D;
          for (let j = 0; j < Pk; j++) {
            const p = pattern[po + j];
            if (p === 0) continue;
            const vo = ((b * Pk + j) * H + h) * D;
            for (let d = 0; d < D; d++) z[zo + d] += p * v[vo + d];
          }
        }
    return z;
  }
  const vh = new Float32Array(P * D),
    out = new Float32Array(P * D);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++) {
      for (let j = 0; j < P; j++) {
        const src = ((b * P + j) * H + h) * D;
        for (let d = 0; d < D; d++) vh[j * D + d] = v[src + d];
      }
      const w = backend.pack(vh, P, D, 'f32');
      const o = (b * H + h) * P * P;
      try {
        backend.matmul(pattern.subarray(o, o + P * P), P, w, out);
      } finally {
        w.release();
      }
      for (let i = 0; i < P; i++) {
        const dst = ((b * P + i) * H + h) * D;
        for (let d = 0; d < D; d++) z[dst + d] = out[i * D + d];
      }
    }
  return z;
}
