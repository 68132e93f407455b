// Float64 dense linear algebra on plain typed arrays for FactoredMatrix and the weight-space tools:
// Householder QR and a one-sided Jacobi SVD. ml-matrix's decompositions (used by ops.svd) go
// through per-element accessor calls: on a loaded shared 2-core machine they took ~150 ms for a
// 64 x 64 SVD and ~1 s for 768 x 64 (so a GPT-2-sized model's QK/OV SVDs would take minutes);
// these work on contiguous float64 columns instead, and the Jacobi sweeps run in an f64x2 WASM
// kernel (linalg64.wat.mjs) where it is built.

import { linalg64Kernel, type Linalg64Kernel } from './linalg64-kernel.js';

/** A dense float64 matrix, row-major. */
export interface Mat64 {
  rows: number;
  cols: number;
  data: Float64Array;
}

export const mat64 = (rows: number, cols: number, data: ArrayLike<number> = new Float64Array(rows * cols)): Mat64 => ({
  rows,
  cols,
  data: data instanceof Float64Array ? data : Float64Array.from(data),
});

export function transpose64(a: Mat64): Mat64 {
  const o = new Float64Array(a.data.length);
  for (let i = 0; i < a.rows; i++) for (let j = 0; j < a.cols; j++) o[j * a.rows + i] = a.data[i * a.cols + j];
  return { rows: a.cols, cols: a.rows, data: o };
}

export function matmul64(a: Mat64, b: Mat64): Mat64 {
  if (a.cols !== b.rows) throw new Error(`matmul64: ${a.rows}x${a.cols} @ ${b.rows}x${b.cols}`);
  const n = b.cols,
    o = new Float64Array(a.rows * n);
  for (let i = 0; i < a.rows; i++) {
    const oi = i * n;
    for (let k = 0; k < a.cols; k++) {
      const x = a.data[i * a.cols + k];
      if (x === 0) continue;
      const bk = k * n;
      for (let j = 0; j < n; j++) o[oi + j] += x * b.data[bk + j];
    }
  }
  return { rows: a.rows, cols: n, data: o };
}

/**
 * Thin Householder QR of a tall matrix (rows >= cols): a = Q R, Q [rows, cols] with orthonormal
 * columns, R [cols, cols] upper triangular.
 */
export function qr64(a: Mat64): { Q: Mat64; R: Mat64 } {
  const m = a.rows,
    n = a.cols;
  if (m < n) throw new Error(`qr64 needs rows >= cols, got ${m}x${n}`);
  const c = transpose64(a).data; // column-major working copy: column j at c[j*m ..]
  const vs = new Float64Array(m * n),
    taus = new Float64Array(n);
  for (let j = 0; j < n; j++) {
    const cj = j * m;
    let norm = 0;
    for (let i = j; i < m; i++) norm += c[cj + i] * c[cj + i];
    norm = Math.sqrt(norm);
    if (norm === 0) continue; // zero column: H_j = I
    const alpha = c[cj + j] > 0 ? -norm : norm;
    let vv = 0;
    for (let i = j; i < m; i++) {
      const v = i === j ? c[cj + i] - alpha : c[cj + i];
      vs[cj + i] = v;
      vv += v * v;
    }
    const tau = 2 / vv;
    taus[j] = tau;
    c[cj + j] = alpha;
    for (let i = j + 1; i < m; i++) c[cj + i] = 0;
    for (let k = j + 1; k < n; k++) {
      const ck = k * m;
      let w = 0;
      for (let i = j; i < m; i++) w += vs[cj + i] * c[ck + i];
      w *= tau;
      for (let i = j; i < m; i++) c[ck + i] -= w * vs[cj + i];
    }
  }
  // Q = H_0 ... H_{n-1} [I_n; 0], applied from the last reflector to the first
  const q = new Float64Array(m * n); // column-major
  for (let k = 0; k < n; k++) q[k * m + k] = 1;
  for (let j = n - 1; j >= 0; j--) {
    const tau = taus[j],
      cj = j * m;
    if (tau === 0) continue;
    for (let k = j; k < n; k++) {
      const qk = k * m;
      let w = 0;
      for (let i = j; i < m; i++) w += vs[cj + i] * q[qk + i];
      w *= tau;
      for (let i = j; i < m; i++) q[qk + i] -= w * vs[cj + i];
    }
  }
  const R = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = i; j < n; j++) R[i * n + j] = c[j * m + i];
  return { Q: transpose64({ rows: n, cols: m, data: q }), R: { rows: n, cols: n, data: R } };
}

/**
 * Thin SVD a = U diag(S) V^T of any matrix: U [rows, k], S [k] descending, V [cols, k],
 * k = min(rows, cols). Wide matrices go through their transpose, tall ones through a QR first,
 * then a one-sided (Hestenes) Jacobi SVD of the square part, which gives orthonormal singular
 * vectors to working precision; columns of U for numerically zero singular values (below
 * max(rows, cols) * eps * S[0]) are completed to an orthonormal set. `tol`: a column pair counts as
 * orthogonal once |cos| <= tol (1e-15: working precision; callers storing f32 may pass more).
 */
export function svd64(a: Mat64, tol = 1e-15): { U: Mat64; S: Float64Array; V: Mat64 } {
  if (a.rows < a.cols) {
    const t = svd64(transpose64(a), tol);
    return { U: t.V, S: t.S, V: t.U };
  }
  if (a.cols === 0) return { U: mat64(a.rows, 0), S: new Float64Array(0), V: mat64(0, 0) };
  if (a.rows > a.cols) {
    const { Q, R } = qr64(a);
    const r = jacobi(R, tol);
    return { U: matmul64(Q, r.U), S: r.S, V: r.V };
  }
  return jacobi(a, tol);
}

/** One-sided Jacobi SVD of a square (or tall) matrix, rows >= cols. */
function jacobi(a: Mat64, eps: number): { U: Mat64; S: Float64Array; V: Mat64 } {
  const m = a.rows,
    n = a.cols;
  const k = linalg64Kernel();
  // the kernel for anything but tiny matrices (there the copies in and out cost more than the sweeps)
  const { w, v } = k && m >= 8 ? jacobiSweepsWasm(k, a, eps) : jacobiSweeps(a, eps);
  const norms = Array.from({ length: n }, (_, j) => {
    let s = 0;
    for (let i = 0; i < m; i++) s += w[j * m + i] * w[j * m + i];
    return Math.sqrt(s);
  });
  const order = norms.map((_, j) => j).sort((x, y) => norms[y] - norms[x] || x - y);
  const U = new Float64Array(m * n),
    V = new Float64Array(n * n),
    S = new Float64Array(n);
  // A column at rounding level of the largest is numerically zero: its direction is noise (and
  // its normalisation loses orthogonality near underflow), so U gets a completed column there.
  const tiny = norms[order[0]] * Math.max(m, n) * 2.3e-16;
  const zero: number[] = [];
  order.forEach((j, k) => {
    S[k] = norms[j];
    for (let i = 0; i < n; i++) V[i * n + k] = v[j * n + i];
    if (!(norms[j] > tiny)) {
      zero.push(k);
      return;
    }
    for (let i = 0; i < m; i++) U[i * n + k] = w[j * m + i] / norms[j];
  });
  if (zero.length) completeColumns(U, m, n, zero);
  return { U: { rows: m, cols: n, data: U }, S, V: { rows: n, cols: n, data: V } };
}

/**
 * The rotations of the one-sided Jacobi SVD, until a sweep rotates no pair: w (a's columns,
 * column-major) becomes U diag(S) and v (column-major, from I) accumulates V.
 */
function jacobiSweeps(a: Mat64, eps: number): { w: Float64Array; v: Float64Array } {
  const m = a.rows,
    n = a.cols;
  const w = transpose64(a).data; // column-major: column j at w[j*m ..]
  const v = new Float64Array(n * n); // column-major
  for (let j = 0; j < n; j++) v[j * n + j] = 1;
  // Squared column norms: summed afresh at the start of every sweep and carried through each
  // rotation exactly as it changes them (|w_p|^2 - t·gamma, |w_q|^2 + t·gamma), so a pair costs
  // one dot product instead of three. The drift within one sweep is rounding-level, and the sweep
  // that ends the loop has measured every pair against freshly summed norms.
  const nrm = new Float64Array(n);
  for (let sweep = 0; sweep < 80; sweep++) {
    let rotated = false;
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let i = j * m, e = i + m; i < e; i++) s += w[i] * w[i];
      nrm[j] = s;
    }
    for (let p = 0; p < n - 1; p++) {
      const wp = p * m,
        vp = p * n;
      for (let q = p + 1; q < n; q++) {
        const wq = q * m,
          vq = q * n;
        const alpha = nrm[p],
          beta = nrm[q];
        let gamma = 0;
        for (let i = 0; i < m; i++) gamma += w[wp + i] * w[wq + i];
        if (gamma === 0 || Math.abs(gamma) <= eps * Math.sqrt(alpha * beta)) continue;
        rotated = true;
        const zeta = (beta - alpha) / (2 * gamma);
        const t = (zeta >= 0 ? 1 : -1) / (Math.abs(zeta) + Math.sqrt(1 + zeta * zeta));
        const c = 1 / Math.sqrt(1 + t * t),
          s = c * t;
        for (let i = 0; i < m; i++) {
          const x = w[wp + i],
            y = w[wq + i];
          w[wp + i] = c * x - s * y;
          w[wq + i] = s * x + c * y;
        }
        for (let i = 0; i < n; i++) {
          const x = v[vp + i],
            y = v[vq + i];
          v[vp + i] = c * x - s * y;
          v[vq + i] = s * x + c * y;
        }
        nrm[p] = alpha - t * gamma;
        nrm[q] = beta + t * gamma;
      }
    }
    if (!rotated) break;
  }
  return { w, v };
}

/** jacobiSweeps in the f64x2 kernel: columns padded to even lengths with zeros (which no rotation changes). */
function jacobiSweepsWasm(k: Linalg64Kernel, a: Mat64, eps: number): { w: Float64Array; v: Float64Array } {
  const m = a.rows,
    n = a.cols,
    mp = m + (m & 1),
    np = n + (n & 1);
  // in the kernel's memory: w [n][mp] at 0, v [n][np] at Vo, the norms [n] at N
  const Vo = n * mp,
    N = Vo + n * np;
  const mem = k.f64(N + n);
  mem.fill(0, 0, N + n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) mem[j * mp + i] = a.data[i * n + j];
  for (let j = 0; j < n; j++) mem[Vo + j * np + j] = 1;
  for (let sweep = 0; sweep < 80; sweep++) if (k.sweep(0, Vo * 8, N * 8, mp, n, np, eps) === 0) break;
  const w = new Float64Array(n * m),
    v = new Float64Array(n * n);
  for (let j = 0; j < n; j++) {
    w.set(mem.subarray(j * mp, j * mp + m), j * m);
    v.set(mem.subarray(Vo + j * np, Vo + j * np + n), j * n);
  }
  return { w, v };
}

/** Fill the listed columns of row-major u [m, n] with unit vectors orthogonal to all other columns. */
function completeColumns(u: Float64Array, m: number, n: number, cols: number[]): void {
  const filled = new Set(Array.from({ length: n }, (_, k) => k).filter((k) => !cols.includes(k)));
  let e = 0;
  for (const k of cols) {
    for (; e < m; e++) {
      const x = new Float64Array(m);
      x[e] = 1;
      for (let pass = 0; pass < 2; pass++) {
        // Gram-Schmidt, twice for stability
        for (const j of filled) {
          let d = 0;
          for (let i = 0; i < m; i++) d += u[i * n + j] * x[i];
          for (let i = 0; i < m; i++) x[i] -= d * u[i * n + j];
        }
      }
      let nx = 0;
      for (let i = 0; i < m; i++) nx += x[i] * x[i];
      nx = Math.sqrt(nx);
      if (nx > 1e-8) {
        for (let i = 0; i < m; i++) u[i * n + k] = x[i] / nx;
        filled.add(k);
        e++;
        break;
      }
    }
  }
}
