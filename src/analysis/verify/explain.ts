/** Which head or neuron a discrepancy vector points along (named in a failure's location). */
import { HookedTransformer } from '../../model/hooked-transformer.js';

/**
 * Which head's output space (the row space of W_O[h]) explains a residual-stream discrepancy
 * vector: the fraction of |Δ|² each head's least-squares projection captures.
 */
export function headExplaining(
  model: HookedTransformer,
  layer: number,
  delta: Float32Array,
): { head: number; frac: number } | undefined {
  const { n_heads: H, d_head: D, d_model: M } = model.cfg;
  const WO = model.weights.blocks[layer].W_O.f32();
  let dd = 0;
  for (const v of delta) dd += v * v;
  if (!(dd > 0)) return undefined;
  const fracs: number[] = [];
  for (let h = 0; h < H; h++) {
    const A = WO.subarray(h * D * M, (h + 1) * D * M);
    const G = new Float64Array(D * D),
      r = new Float64Array(D);
    for (let i = 0; i < D; i++) {
      for (let m = 0; m < M; m++) r[i] += A[i * M + m] * delta[m];
      for (let j = 0; j <= i; j++) {
        let s = 0;
        for (let m = 0; m < M; m++) s += A[i * M + m] * A[j * M + m];
        G[i * D + j] = G[j * D + i] = s;
      }
    }
    const c = solveSpd(G, r, D);
    let e = 0;
    for (let i = 0; i < D; i++) e += c[i] * r[i];
    fracs.push(e / dd);
  }
  const best = fracs.indexOf(Math.max(...fracs));
  const second = Math.max(-Infinity, ...fracs.filter((_, h) => h !== best));
  return fracs[best] > 0.9 && (H === 1 || second < 0.9) ? { head: best, frac: fracs[best] } : undefined;
}
/** Cholesky solve with a small ridge (G is a Gram matrix, possibly rank-deficient). */
function solveSpd(G: Float64Array, b: Float64Array, n: number): Float64Array {
  let tr = 0;
  for (let i = 0; i < n; i++) tr += G[i * n + i];
  const ridge = 1e-10 * (tr / n || 1);
  const Lm = new Float64Array(n * n);
  for (let i = 0; i < n; i++)
    for (let j = 0; j <= i; j++) {
      let s = G[i * n + j] + (i === j ? ridge : 0);
      for (let q = 0; q < j; q++) s -= Lm[i * n + q] * Lm[j * n + q];
      Lm[i * n + j] = i === j ? Math.sqrt(Math.max(s, 1e-300)) : s / Lm[j * n + j];
    }
  const y = new Float64Array(n),
    x = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let s = b[i];
    for (let q = 0; q < i; q++) s -= Lm[i * n + q] * y[q];
    y[i] = s / Lm[i * n + i];
  }
  for (let i = n - 1; i >= 0; i--) {
    let s = y[i];
    for (let q = i + 1; q < n; q++) s -= Lm[q * n + i] * x[q];
    x[i] = s / Lm[i * n + i];
  }
  return x;
}
/** The neuron whose output direction W_out[n] a discrepancy vector points along (|cos| > 0.9). */
export function neuronExplaining(
  model: HookedTransformer,
  layer: number,
  delta: Float32Array,
): { neuron: number; cos: number } | undefined {
  const { d_mlp: F, d_model: M } = model.cfg;
  const Wout = model.weights.blocks[layer].W_out.f32();
  let dd = 0;
  for (const v of delta) dd += v * v;
  let best = -1,
    bestCos = 0;
  for (let n = 0; n < F; n++) {
    let dot = 0,
      ww = 0;
    for (let m = 0; m < M; m++) {
      dot += Wout[n * M + m] * delta[m];
      ww += Wout[n * M + m] ** 2;
    }
    const c = ww > 0 && dd > 0 ? Math.abs(dot) / Math.sqrt(ww * dd) : 0;
    if (c > bestCos) {
      bestCos = c;
      best = n;
    }
  }
  return bestCos > 0.9 ? { neuron: best, cos: bestCos } : undefined;
}
