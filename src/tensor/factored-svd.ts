// The factored SVD the load-time refactor needs, fast: A B = U diag(S) V^T for a tall A [l, m] and
// a wide B [m, r] (m small: d_head), through small [m, m] maps that turn A and B^T into U and V,
// so no [l, r] product and no explicit orthonormal basis is ever formed.
import { svdOfProduct64 } from './factored-matrix.js';
import { matmul, type MatmulKernel } from './linalg.js';
import { mat64, Mat64, svd64 } from './linalg64.js';
import { linalg64Kernel } from './linalg64-kernel.js';
import { Tensor } from './tensor.js';

/**
 * X^T X in float64 (X [n, m] f32), upper triangle. Float64 because the Gram route's loss of
 * orthogonality is eps * cond^2: f32 Grams gave |W_O W_O^T - I| > 1e-4 on small random heads.
 * X is widened once into float64 columns, and each 2 x 2 block of G is four dot products over
 * those columns in one pass: in the f64x2 kernel where it is built (two rows at a time), else in
 * gramBlocks (every entry summed over the rows in order).
 */
function gram64(X: Tensor): Float64Array {
  const [n, m] = X.shape,
    xf = X.f32(),
    np = n + (n & 1), // padded to even counts with zeros, which change no sum
    mp = m + (m & 1),
    G = np * mp;
  const k = linalg64Kernel();
  // [mp columns][np rows] of X, then the [mp, mp] Gram: in the kernel's memory, or here
  const mem = k ? k.f64(G + mp * mp) : new Float64Array(G + mp * mp);
  mem.fill(0, 0, G);
  for (let i = 0; i < n; i++) for (let a = 0; a < m; a++) mem[a * np + i] = xf[i * m + a];
  if (k) k.gram(0, np, mp, G * 8);
  else gramBlocks(mem, np, mp, G);
  const g = new Float64Array(m * m);
  for (let a = 0; a < m; a++) g.set(mem.subarray(G + a * mp + a, G + a * mp + m), a * m + a);
  return g;
}

/** The kernel's gram in JS: c [m columns][n rows] at 0, the upper 2 x 2 blocks of c^T c at g (n, m even). */
function gramBlocks(c: Float64Array, n: number, m: number, g: number): void {
  for (let a = 0; a < m; a += 2) {
    const ca = a * n,
      ca1 = ca + n;
    for (let b = a; b < m; b += 2) {
      const cb = b * n,
        cb1 = cb + n;
      let s00 = 0,
        s01 = 0,
        s10 = 0,
        s11 = 0;
      for (let i = 0; i < n; i++) {
        const xa = c[ca + i],
          xa1 = c[ca1 + i],
          xb = c[cb + i],
          xb1 = c[cb1 + i];
        s00 += xa * xb;
        s01 += xa * xb1;
        s10 += xa1 * xb;
        s11 += xa1 * xb1;
      }
      const o = g + a * m + b;
      c[o] = s00;
      c[o + 1] = s01;
      c[o + m] = s10;
      c[o + m + 1] = s11;
    }
  }
}

/** Upper R with R^T R = G (upper triangle of G [m, m] used), or null when R's diagonal spread says cond > 1e4 or G is singular. */
function choleskyOf(g: Float64Array, m: number): Float64Array | null {
  const r = new Float64Array(m * m);
  let dmax = 0,
    dmin = Infinity;
  for (let j = 0; j < m; j++) {
    let d = g[j * m + j];
    for (let k = 0; k < j; k++) d -= r[k * m + j] * r[k * m + j];
    if (!(d > 0)) return null;
    const rjj = Math.sqrt(d);
    r[j * m + j] = rjj;
    dmax = Math.max(dmax, rjj);
    dmin = Math.min(dmin, rjj);
    for (let c = j + 1; c < m; c++) {
      let s = g[j * m + c];
      for (let k = 0; k < j; k++) s -= r[k * m + j] * r[k * m + c];
      r[j * m + c] = s / rjj;
    }
  }
  return dmax / dmin > 1e4 ? null : r;
}

/** R1 R2^T for upper-triangular [m, m] R1, R2. */
function matmulABt(r1: Float64Array, r2: Float64Array, m: number): Mat64 {
  const out = new Float64Array(m * m);
  for (let i = 0; i < m; i++)
    for (let j = 0; j < m; j++) {
      let s = 0;
      for (let k = Math.max(i, j); k < m; k++) s += r1[i * m + k] * r2[j * m + k];
      out[i * m + j] = s;
    }
  return mat64(m, m, out);
}

/** R^-1 Y for upper-triangular R [m, m] and Y [m, k] (back substitution, column by column). */
function solveUpper(r: Float64Array, Y: Mat64): Mat64 {
  const m = Y.rows,
    k = Y.cols,
    out = new Float64Array(m * k);
  // row by row, so the inner loops run along contiguous rows of out; each element still
  // subtracts r[i, j]·out[j, c] for j = i+1 .. m-1 in order, then divides (the column loop's sums)
  const row = new Float64Array(k);
  for (let i = m - 1; i >= 0; i--) {
    for (let c = 0; c < k; c++) row[c] = Y.data[i * k + c];
    for (let j = i + 1; j < m; j++) {
      const rij = r[i * m + j],
        oj = j * k;
      for (let c = 0; c < k; c++) row[c] -= rij * out[oj + c];
    }
    const d = r[i * m + i];
    for (let c = 0; c < k; c++) out[i * k + c] = row[c] / d;
  }
  return mat64(m, k, out);
}

/**
 * The balanced factors TL's refactor wants from A B (A [n, m] tall, B = Bt^T, Bt [r, m]), as f32:
 * U diag(fu(S)) [n, m] and V diag(fv(S)) [r, m], with U S V^T = A B the thin SVD. The m x m
 * work (Gram, Cholesky, core SVD, triangular solves) is float64; the two [n, m] x [m, m]
 * products run through `kernel`'s f32 matmul (default: the process's backend; the bulk of the flops). Whatever
 * the rounding of the R factors, U S V^T = A Ra^-1 (Ra Rb^T) Rb^-T B^T... = A B: only the
 * orthogonality of U and V (not the product the model computes) depends on it. Ill-conditioned
 * (cond > 1e4 by R's diagonal) or rank-deficient factors take FactoredMatrix's Householder route
 * in float64 instead.
 */
export function balancedFactors(
  A: Tensor,
  Bt: Tensor,
  fu: (s: number) => number,
  fv: (s: number) => number,
  kernel?: MatmulKernel,
): { U: Float32Array; V: Float32Array } {
  const [n, m] = A.shape,
    r = Bt.shape[0];
  const Ra = n >= m ? choleskyOf(gram64(A), m) : null,
    Rb = Ra && r >= m ? choleskyOf(gram64(Bt), m) : null;
  if (!Ra || !Rb) {
    const B = Bt.T.contiguous();
    const { U, S, V } = svdOfProduct64(mat64(n, m, A.f32()), mat64(m, r, B.f32()));
    const k = S.length;
    const scale = (X: Mat64, f: (s: number) => number, rows: number) => {
      const out = new Float32Array(rows * m); // columns past k (none when n, r >= m) stay 0
      for (let i = 0; i < rows; i++) for (let c = 0; c < k; c++) out[i * m + c] = X.data[i * k + c] * f(S[c]);
      return out;
    };
    return { U: scale(U, fu, n), V: scale(V, fv, r) };
  }
  // the factors are stored as f32: columns orthogonal to 1e-10 are orthogonal to storage precision
  const { U: Uc, S, V: Vc } = svd64(matmulABt(Ra, Rb, m), 1e-10);
  const Ta = scaleCols(solveUpper(Ra, Uc), S, fu),
    Tb = scaleCols(solveUpper(Rb, Vc), S, fv);
  return { U: matmul(A, Ta, kernel).f32(), V: matmul(Bt, Tb, kernel).f32() };
}

/** X^T of a 2-D tensor as a new f32 tensor, in 64 x 64 tiles (the generic strided copy is slow for [V, M]). */
export function transposed(X: Tensor): Tensor {
  const [n, m] = X.shape,
    x = X.f32(),
    out = new Float32Array(n * m);
  const B = 64;
  for (let i0 = 0; i0 < n; i0 += B) {
    const i1 = Math.min(n, i0 + B);
    for (let j0 = 0; j0 < m; j0 += B) {
      const j1 = Math.min(m, j0 + B);
      for (let i = i0; i < i1; i++) for (let j = j0; j < j1; j++) out[j * n + i] = x[i * m + j];
    }
  }
  return new Tensor(out, [m, n]);
}

/** Y diag(f(S)) as an f32 tensor [m, k]. */
function scaleCols(Y: Mat64, S: Float64Array, f: (s: number) => number): Tensor {
  const out = new Float32Array(Y.rows * Y.cols);
  for (let i = 0; i < Y.rows; i++)
    for (let c = 0; c < Y.cols; c++) out[i * Y.cols + c] = Y.data[i * Y.cols + c] * f(S[c]);
  return new Tensor(out, [Y.rows, Y.cols]);
}
