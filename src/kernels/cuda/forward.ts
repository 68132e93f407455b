import type { PackedWeight } from '../backend.js';
import type { CudaBackend } from './index.js';

/** What the device-resident forward needs from a model (host tensors as f32 arrays). */
export interface DeviceModel {
  B: number; P: number; M: number; H: number; D: number; F: number; V: number;
  eps: number; attnScale: number; start: number; stop: number; final: boolean;
  blocks: { ln1?: [Float32Array, Float32Array]; ln2?: [Float32Array, Float32Array]; bQ: Float32Array; bK: Float32Array; bV: Float32Array; bO: Float32Array; bIn: Float32Array; bOut: Float32Array;
    WQ: PackedWeight; WK: PackedWeight; WV: PackedWeight; WO: PackedWeight; Win: PackedWeight; Wout: PackedWeight }[];
  lnFinal?: [Float32Array, Float32Array]; bU: Float32Array; WU: PackedWeight;
}

const id = (w: PackedWeight) => (w as PackedWeight & { id: number }).id;

/**
 * The GPT-2 forward with every activation on the device: the residual stream goes up once and
 * the logits (or the residual, with stopAtLayer) come down once. Used when no hook or cache asks
 * for an activation; otherwise the model runs its host path, where hooks see every activation.
 */
export function cudaForward(be: CudaBackend, m: DeviceModel, resid: Float32Array): Float32Array {
  const cu = be.cu, rows = m.B * m.P, { M, H, D, F, V } = m;
  const R = be.dev('resid', rows * M), R2 = be.dev('resid_mid', rows * M), X = be.dev('x', rows * M), S = be.dev('scale', rows);
  const Q = be.dev('q', rows * M), K = be.dev('k', rows * M), Vv = be.dev('v', rows * M), Z = be.dev('z', rows * M);
  const PAT = be.dev('pattern', m.B * H * m.P * m.P), T = be.dev('tmp', rows * Math.max(M, F)), G = be.dev('gelu', rows * F);
  cu.upload(R, resid);
  const ln = (src: number, dst: number, p?: [Float32Array, Float32Array]) =>
    cu.layerNorm(src, dst, S, p ? be.resident(p[0]) : null, p ? be.resident(p[1]) : null, rows, M, m.eps);
  const linear = (x: number, w: PackedWeight, b: Float32Array, out: number) => {
    cu.matmul(x, id(w), out, rows, w.K, w.N);
    cu.addBias(out, be.resident(b), rows, w.N);
  };
  for (let l = m.start; l < m.stop; l++) {
    const k = m.blocks[l];
    ln(R, X, k.ln1);
    linear(X, k.WQ, k.bQ, Q); linear(X, k.WK, k.bK, K); linear(X, k.WV, k.bV, Vv);
    cu.attention(Q, K, Vv, PAT, Z, m.B, m.P, H, D, 1 / m.attnScale);
    linear(Z, k.WO, k.bO, T);
    cu.add(R, T, R2, rows * M);
    ln(R2, X, k.ln2);
    linear(X, k.Win, k.bIn, T);
    cu.gelu(T, G, rows * F);
    linear(G, k.Wout, k.bOut, T);
    cu.add(R2, T, R, rows * M);
  }
  if (!m.final) {
    const out = new Float32Array(rows * M);
    cu.download(R, out);
    return out;
  }
  ln(R, X, m.lnFinal);
  const L = be.dev('logits', rows * V);
  linear(X, m.WU, m.bU, L);
  const logits = new Float32Array(rows * V);
  cu.download(L, logits);
  return logits;
}
