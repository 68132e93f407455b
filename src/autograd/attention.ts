/** Differentiable causal attention pieces: scores (q·k, masked) and the pattern-weighted mix of values. */
import { check } from '../errors.js';
import { Tensor } from '../tensor/index.js';
import { tapeFor } from './tape.js';

// ---------------------------------------------------------------- attention
/**
 * Causal scores [B, H, Q, K] = q·k / attnScale from q [B, Q, H, D], k [B, K, H, D]; entries
 * with key > query + (K - Q) are -inf (constants: no gradient).
 */
export function attnScores(q: Tensor, k: Tensor, attnScale: number, value?: Float32Array): Tensor {
  check(
    q.ndim === 4 && k.ndim === 4 && q.shape[0] === k.shape[0] && q.shape[2] === k.shape[2] && q.shape[3] === k.shape[3],
    () => `attnScores: q [${q.shape.join(', ')}] and k [${k.shape.join(', ')}] do not match`,
  );
  const [B, Q, H, D] = q.shape,
    P = k.shape[1],
    shift = P - Q;
  const qv = q.f32(),
    kv = k.f32(),
    inv = 1 / attnScale;
  // `value`: the scores already computed by the caller (the model's kernels), the backward is the same
  const s = value ?? new Float32Array(B * H * Q * P);
  if (!value)
    for (let b = 0; b < B; b++)
      for (let h = 0; h < H; h++)
        for (let i = 0; i < Q; i++) {
          const o = ((b * H + h) * Q + i) * P,
            qo = ((b * Q + i) * H + h) * D;
          for (let j = 0; j < P; j++) {
            if (j > i + shift) {
              s[o + j] = -Infinity;
              continue;
            }
            const ko = ((b * P + j) * H + h) * D;
            let acc = 0;
            for (let d = 0; d < D; d++) acc += qv[qo + d] * kv[ko + d];
            s[o + j] = Math.fround(acc) * inv;
          }
        }
  const out = new Tensor(s, [B, H, Q, P]);
  const tape = tapeFor(q, k);
  if (!tape) return out;
  return tape.record(out, (g, acc) => {
    const gq = new Float32Array(qv.length),
      gk = new Float32Array(kv.length);
    for (let b = 0; b < B; b++)
      for (let h = 0; h < H; h++)
        for (let i = 0; i < Q; i++) {
          const o = ((b * H + h) * Q + i) * P,
            qo = ((b * Q + i) * H + h) * D;
          for (let j = 0; j <= Math.min(P - 1, i + shift); j++) {
            const gs = g[o + j] * inv;
            if (gs === 0) continue;
            const ko = ((b * P + j) * H + h) * D;
            for (let d = 0; d < D; d++) {
              gq[qo + d] += gs * kv[ko + d];
              gk[ko + d] += gs * qv[qo + d];
            }
          }
        }
    if (tape.isTracked(q)) acc(q, gq);
    if (tape.isTracked(k)) acc(k, gk);
  });
}

/** z [B, Q, H, D] = pattern [B, H, Q, K] @ v [B, K, H, D] per head (`value`: z already computed by the caller). */
export function attnMix(pattern: Tensor, v: Tensor, value?: Float32Array): Tensor {
  check(
    pattern.ndim === 4 &&
      v.ndim === 4 &&
      pattern.shape[0] === v.shape[0] &&
      pattern.shape[1] === v.shape[2] &&
      pattern.shape[3] === v.shape[1],
    () => `attnMix: pattern [${pattern.shape.join(', ')}] and v [${v.shape.join(', ')}] do not match`,
  );
  const [B, H, Q, P] = pattern.shape,
    D = v.shape[3];
  const pv = pattern.f32(),
    vv = v.f32();
  const z = value ?? new Float32Array(B * Q * H * D);
  if (!value)
    for (let b = 0; b < B; b++)
      for (let h = 0; h < H; h++)
        for (let i = 0; i < Q; i++) {
          const po = ((b * H + h) * Q + i) * P,
            zo = ((b * Q + i) * H + h) * D;
          for (let j = 0; j < P; j++) {
            const p = pv[po + j];
            if (p === 0) continue;
            const vo = ((b * P + j) * H + h) * D;
            for (let d = 0; d < D; d++) z[zo + d] += p * vv[vo + d];
          }
        }
  const out = new Tensor(z, [B, Q, H, D]);
  const tape = tapeFor(pattern, v);
  if (!tape) return out;
  return tape.record(out, (g, acc) => {
    const gp = new Float32Array(pv.length),
      gv = new Float32Array(vv.length);
    const vStride = H * D;
    for (let b = 0; b < B; b++)
      for (let h = 0; h < H; h++)
        for (let i = 0; i < Q; i++) {
          const po = ((b * H + h) * Q + i) * P,
            zo = ((b * Q + i) * H + h) * D;
          let vo = (b * P * H + h) * D;
          for (let j = 0; j < P; j++, vo += vStride) {
            const p = pv[po + j];
            let s = 0;
            if (p === 0)
              for (let d = 0; d < D; d++) s += g[zo + d] * vv[vo + d]; // masked: d(pattern) only
            else
              for (let d = 0; d < D; d++) {
                const gz = g[zo + d];
                s += gz * vv[vo + d];
                gv[vo + d] += p * gz;
              }
            gp[po + j] = s;
          }
        }
    if (tape.isTracked(pattern)) acc(pattern, gp);
    if (tape.isTracked(v)) acc(v, gv);
  });
}
