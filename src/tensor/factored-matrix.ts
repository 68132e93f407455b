import { EigenvalueDecomposition, Matrix } from 'ml-matrix';
import { check, TypelensError } from '../errors.js';
import { Mat64, mat64, matmul64, qr64, svd64, transpose64 } from './linalg64.js';
import { broadcastShapes, indexSelect, map, mul, stack, sum } from './ops.js';
import { matmul } from './linalg.js';
import { numel, Shape, Tensor } from './tensor.js';

/**
 * One entry of a FactoredMatrix index (the Python forms in brackets): a number picks one
 * element and removes the axis (`i`), null keeps the whole axis (`:`), a list gathers (`[i, j]`),
 * and `{ start, stop, step }` is a slice (`a:b:c`).
 */
export type FMIndex = number | null | readonly number[] | { start?: number; stop?: number; step?: number };

/** Complex eigenvalues as two real tensors of the same shape. */
export interface ComplexTensor {
  real: Tensor;
  imag: Tensor;
}

/**
 * A matrix kept as the product of two factors, `AB = A @ B`, with leading batch axes (e.g. the
 * [n_layers, n_heads] of a model's QK and OV circuits). TransformerLens's `FactoredMatrix`
 * (transformer_lens/FactoredMatrix.py): the SVD, norm and eigenvalues come from the factors and a
 * small core matrix, never from the (possibly large) product.
 *
 * Shapes: A [...lead, ldim, mdim], B [...lead, mdim, rdim]; the leading axes of A and B
 * broadcast against each other (numpy rules) and the broadcast views are what `A` and `B` hold.
 * Products are f32; the SVD is float64 (src/tensor/linalg64.ts) and the eigenvalues are ml-matrix's
 * float64 eigen solver, both stored as f32.
 */
export class FactoredMatrix {
  readonly A: Tensor;
  readonly B: Tensor;
  readonly ldim: number;
  readonly mdim: number;
  readonly rdim: number;
  /** [...lead, ldim, rdim]: the shape of the product. */
  readonly shape: readonly number[];
  readonly hasLeadingDims: boolean;
  private svdCache?: readonly [Tensor, Tensor, Tensor];

  constructor(A: Tensor, B: Tensor) {
    check(A instanceof Tensor && B instanceof Tensor, 'FactoredMatrix needs two tensors');
    if (A.ndim < 2 || B.ndim < 2) {
      throw new TypelensError(
        `FactoredMatrix factors must be at least 2-D, shapes were A: [${A.shape.join(', ')}], B: [${B.shape.join(', ')}]`,
        'ESHAPE',
      );
    }
    if (A.shape[A.ndim - 1] !== B.shape[B.ndim - 2]) {
      throw new TypelensError(
        `FactoredMatrix factors must match on the inner dimension, shapes were A: [${A.shape.join(', ')}], B: [${B.shape.join(', ')}]`,
        'ESHAPE',
      );
    }
    this.ldim = A.shape[A.ndim - 2];
    this.mdim = B.shape[B.ndim - 2];
    this.rdim = B.shape[B.ndim - 1];
    this.hasLeadingDims = A.ndim > 2 || B.ndim > 2;
    let lead: number[];
    try {
      lead = broadcastShapes(A.shape.slice(0, -2), B.shape.slice(0, -2));
    } catch {
      throw new TypelensError(
        `FactoredMatrix: cannot broadcast the leading dimensions of A [${A.shape.join(', ')}] and B [${B.shape.join(', ')}]`,
        'ESHAPE',
      );
    }
    this.shape = [...lead, this.ldim, this.rdim];
    this.A = sameShape(A.shape, [...lead, this.ldim, this.mdim]) ? A : A.expand([...lead, this.ldim, this.mdim]);
    this.B = sameShape(B.shape, [...lead, this.mdim, this.rdim]) ? B : B.expand([...lead, this.mdim, this.rdim]);
  }

  get ndim(): number {
    return this.shape.length;
  }
  /** The leading (batch) axes: the shape without its last two entries. */
  get leadingShape(): number[] {
    return this.shape.slice(0, -2);
  }
  /** [A, B] (TL's `pair`). */
  get pair(): [Tensor, Tensor] {
    return [this.A, this.B];
  }

  /** The dense product A @ B [...lead, ldim, rdim]: can be large. */
  get AB(): Tensor {
    return matmul(this.A, this.B);
  }
  /** The reverse product B @ A [...lead, mdim, mdim]; needs ldim == rdim. */
  get BA(): Tensor {
    check(this.rdim === this.ldim, () => `BA needs ldim == rdim, the shape is [${this.shape.join(', ')}]`, 'ESHAPE');
    return matmul(this.B, this.A);
  }
  /** The transpose, (AB)^T = B^T A^T, still factored. */
  get T(): FactoredMatrix {
    return new FactoredMatrix(this.B.transpose(-2, -1), this.A.transpose(-2, -1));
  }

  /**
   * Thin SVD of AB from the factors, never forming AB (TL's FactoredMatrix.svd). TL takes the
   * SVDs of A and B and of the small core diag(Sa) Va^T Ub diag(Sb); here the factors' QR
   * decompositions play the same part (an orthonormal basis times a small factor, and cheaper):
   * A = Qa Ra when A is tall, B = Rb Qb^T when B is wide, then the core Ra Rb = Uc S Vc^T, so
   * AB = (Qa Uc) S (Qb Vc)^T. All in float64 (src/tensor/linalg64.ts), stored as f32.
   * Returns [U, S, V] with AB = U diag(S) V^T: U [...lead, ldim, k], S [...lead, k] descending,
   * V [...lead, rdim, k], k = min(ldim, mdim, rdim). Computed once per instance.
   */
  svd(): readonly [U: Tensor, S: Tensor, V: Tensor] {
    if (!this.svdCache) {
      const parts = this.perMatrix(svdOfProduct);
      const k = Math.min(this.ldim, this.mdim, this.rdim);
      const tails = [[this.ldim, k], [k], [this.rdim, k]];
      this.svdCache = [0, 1, 2].map((i) =>
        this.restack(
          parts.map((p) => p[i]),
          tails[i],
        ),
      ) as unknown as readonly [Tensor, Tensor, Tensor];
    }
    return this.svdCache;
  }
  get U(): Tensor {
    return this.svd()[0];
  }
  get S(): Tensor {
    return this.svd()[1];
  }
  /** Right singular vectors, as columns: AB = U diag(S) V^T. */
  get V(): Tensor {
    return this.svd()[2];
  }
  /**
   * TL's `Vh`, which has always returned V (the right singular vectors as columns, not their
   * transpose): AB = U diag(S) Vh^T. Kept under TL's name and meaning; prefer `V`.
   */
  get Vh(): Tensor {
    return this.svd()[2];
  }

  /**
   * Eigenvalues of AB through BA (TL's FactoredMatrix.eigenvalues): the non-zero eigenvalues of
   * AB and BA coincide (BAv = kv gives AB(Av) = k(Av)), so this is [...lead, mdim] complex
   * values, in the order the float64 eigen solver gives them (unsorted, like torch.linalg.eig).
   */
  get eigenvalues(): ComplexTensor {
    const ba = this.BA;
    const m = this.mdim;
    const re: Tensor[] = [],
      im: Tensor[] = [];
    for (const idx of leadingIndices(this.leadingShape)) {
      const d = at(ba, idx).f32();
      const mat = new Matrix(m, m);
      for (let i = 0; i < m; i++) for (let j = 0; j < m; j++) mat.set(i, j, d[i * m + j]);
      const e = new EigenvalueDecomposition(mat, { assumeSymmetric: false });
      re.push(Tensor.from(e.realEigenvalues, [m]));
      im.push(Tensor.from(e.imaginaryEigenvalues, [m]));
    }
    return { real: this.restack(re, [m]), imag: this.restack(im, [m]) };
  }

  /** Frobenius norm of AB per leading index: sqrt(sum S^2) (TL's norm). Shape [...lead]. */
  norm(): Tensor {
    return map(sum(mul(this.S, this.S), -1), Math.sqrt);
  }

  /**
   * The same matrix as (U sqrt(S)) (sqrt(S) V^T): each factor carries half of the singular values
   * and has orthogonal columns / rows (TL's make_even).
   */
  makeEven(): FactoredMatrix {
    const root = map(this.S, Math.sqrt);
    return new FactoredMatrix(mul(this.U, root.unsqueeze(-2)), mul(root.unsqueeze(-1), this.V.transpose(-2, -1)));
  }
  /** diag(S) V^T [...lead, k, rdim]: AB with its left orthogonal factor U removed (TL's collapse_l). */
  collapseL(): Tensor {
    return mul(this.S.unsqueeze(-1), this.V.transpose(-2, -1));
  }
  /** U diag(S) [...lead, ldim, k]: AB with its right orthogonal factor removed (TL's collapse_r). */
  collapseR(): Tensor {
    return mul(this.U, this.S.unsqueeze(-2));
  }

  /** The top-left k x ... x k corner of AB, every axis (leading ones too) cut to k (TL's get_corner). */
  getCorner(k = 3): Tensor {
    check(Number.isInteger(k) && k >= 0, `getCorner: k must be a non-negative integer, got ${k}`);
    let c = matmul(this.A.slice(-2, 0, k), this.B.slice(-1, 0, k));
    for (let d = 0; d < c.ndim; d++) c = c.slice(d, 0, k);
    return c.contiguous();
  }

  /** A new axis of size 1 at `k` in both factors (TL's unsqueeze). */
  unsqueeze(k: number): FactoredMatrix {
    const a = k < 0 ? k + this.A.ndim + 1 : k;
    check(
      Number.isInteger(a) && a >= 0 && a <= this.A.ndim - 2,
      `unsqueeze: axis ${k} must be among the leading axes (0..${this.ndim - 2})`,
    );
    return new FactoredMatrix(this.A.unsqueeze(a), this.B.unsqueeze(a));
  }

  /**
   * Index the leading axes (TL's `fm[idx]`): `get([l, h])` picks one head's matrix. An index one
   * entry longer than the leading axes also selects rows of AB, and one two longer also columns;
   * a number there keeps its axis (length 1), as TL turns ints into slices so the result stays a
   * matrix.
   */
  get(idx: readonly FMIndex[]): FactoredMatrix {
    const n = idx.length,
      lead = this.ndim - 2;
    if (n <= lead) return new FactoredMatrix(applyIndex(this.A, idx), applyIndex(this.B, idx));
    if (n === lead + 1) {
      const rows = keepAxis(idx[n - 1], this.ldim);
      return new FactoredMatrix(applyIndex(this.A, [...idx.slice(0, -1), rows]), applyIndex(this.B, idx.slice(0, -1)));
    }
    if (n === lead + 2) {
      const rows = keepAxis(idx[n - 2], this.ldim),
        cols = keepAxis(idx[n - 1], this.rdim);
      const pre = idx.slice(0, -2);
      return new FactoredMatrix(applyIndex(this.A, [...pre, rows]), applyIndex(this.B, [...pre, null, cols]));
    }
    throw new TypelensError(
      `index of length ${n} is too long for a FactoredMatrix of shape [${this.shape.join(', ')}]`,
      'EINDEX',
    );
  }
  /** `fm.index(i)` = `fm.get([i])`: one entry of the first leading axis (e.g. one layer). */
  index(i: number): FactoredMatrix {
    return this.get([i]);
  }

  /**
   * this @ other (TL's `__matmul__`). A FactoredMatrix gives (this @ other.A) @ other.B; a
   * vector [rdim] gives the vector A (B v) [...lead, ldim]; a matrix [..., rdim, n] gives a
   * FactoredMatrix that keeps the smaller inner dimension: (A, B @ other) when rdim > mdim,
   * else (AB, other).
   */
  matmul(other: FactoredMatrix): FactoredMatrix;
  matmul(other: Tensor): FactoredMatrix | Tensor;
  matmul(other: Tensor | FactoredMatrix): FactoredMatrix | Tensor {
    if (other instanceof FactoredMatrix)
      return (this.matmul(other.A) as FactoredMatrix).matmul(other.B) as FactoredMatrix;
    if (other.ndim < 2) {
      check(
        other.shape[0] === this.rdim,
        () => `matmul: a vector of ${other.shape[0]} does not match rdim ${this.rdim}`,
        'ESHAPE',
      );
      return matmul(this.A, matmul(this.B, other.unsqueeze(-1))).squeeze(-1);
    }
    check(
      other.shape[other.ndim - 2] === this.rdim,
      () =>
        `matmul: the right matrix must match on the inner dimension, shapes were self: [${this.shape.join(', ')}], other: [${other.shape.join(', ')}]`,
      'ESHAPE',
    );
    return this.rdim > this.mdim
      ? new FactoredMatrix(this.A, matmul(this.B, other))
      : new FactoredMatrix(this.AB, other);
  }

  /**
   * other @ this (TL's `__rmatmul__`). A FactoredMatrix gives other.A @ (other.B @ this); a
   * vector [ldim] gives (v A) B [...lead, rdim]; a matrix [..., n, ldim] gives (other @ A, B)
   * when ldim > mdim, else (other, AB).
   */
  rmatmul(other: FactoredMatrix): FactoredMatrix;
  rmatmul(other: Tensor): FactoredMatrix | Tensor;
  rmatmul(other: Tensor | FactoredMatrix): FactoredMatrix | Tensor {
    if (other instanceof FactoredMatrix)
      return (this.rmatmul(other.B) as FactoredMatrix).rmatmul(other.A) as FactoredMatrix;
    check(
      other.shape[other.ndim - 1] === this.ldim,
      () =>
        `rmatmul: the left matrix must match on the inner dimension, shapes were self: [${this.shape.join(', ')}], other: [${other.shape.join(', ')}]`,
      'ESHAPE',
    );
    if (other.ndim < 2) return matmul(matmul(other.unsqueeze(-2), this.A), this.B).squeeze(-2);
    return this.ldim > this.mdim
      ? new FactoredMatrix(matmul(other, this.A), this.B)
      : new FactoredMatrix(other, this.AB);
  }

  /** Scalar multiple (TL's `*`): the scalar goes into A. */
  mul(scalar: number | Tensor): FactoredMatrix {
    if (scalar instanceof Tensor)
      check(
        scalar.size === 1,
        () => `mul needs a scalar, got shape [${scalar.shape.join(', ')}]; use matmul for products`,
        'ESHAPE',
      );
    const s = scalar instanceof Tensor ? scalar.item() : scalar;
    return new FactoredMatrix(mul(this.A, s), this.B);
  }

  toString(): string {
    return `FactoredMatrix: Shape([${this.shape.join(', ')}]), Hidden Dim(${this.mdim})`;
  }

  /** Run f on each leading index's 2-D factors, in row-major order. */
  private perMatrix<R>(f: (a: Tensor, b: Tensor) => R): R[] {
    return leadingIndices(this.leadingShape).map((idx) => f(at(this.A, idx), at(this.B, idx)));
  }
  /** Stack per-index results back under the leading axes. */
  private restack(ts: Tensor[], tail: number[]): Tensor {
    const lead = this.leadingShape;
    if (lead.length === 0) return ts[0].contiguous();
    if (ts.length === 0) return Tensor.zeros([...lead, ...tail]); // a zero-size leading axis
    return stack(ts).reshape([...lead, ...tail]);
  }
}

const toMat64 = (t: Tensor): Mat64 => mat64(t.shape[0], t.shape[1], t.f32());
const toTensor = (m: Mat64): Tensor => new Tensor(Float32Array.from(m.data), [m.rows, m.cols]);

/** SVD of a @ b for 2-D a [l, m], b [m, r] from QRs of the factors and the SVD of the small core. */
function svdOfProduct(a: Tensor, b: Tensor): [Tensor, Tensor, Tensor] {
  const { U, S, V } = svdOfProduct64(toMat64(a), toMat64(b));
  return [toTensor(U), new Tensor(Float32Array.from(S), [S.length]), toTensor(V)];
}

/**
 * Thin SVD of the product A B (A [l, m], B [m, r]) in float64 without forming it (TL's
 * FactoredMatrix.svd, with QRs standing in for the factors' SVDs): A = Qa Ra when A is tall,
 * B = Rb Qb^T when B is wide, the core Ra Rb = Uc S Vc^T ([m, m] at most), so
 * AB = (Qa Uc) S (Qb Vc)^T. U [l, k], S [k] descending, V [r, k], k = min(l, m, r).
 */
export function svdOfProduct64(A: Mat64, B: Mat64): { U: Mat64; S: Float64Array; V: Mat64 } {
  const l = A.rows,
    m = A.cols,
    r = B.cols;
  let Qa: Mat64 | null = null,
    Ra = A; // A = Qa Ra
  if (l > m) ({ Q: Qa, R: Ra } = qr64(A));
  let Qb: Mat64 | null = null,
    Rb = B; // B = Rb Qb^T
  if (r > m) {
    const f = qr64(transpose64(B));
    Qb = f.Q;
    Rb = transpose64(f.R);
  }
  const core = svd64(matmul64(Ra, Rb)); // [min(l, m), min(m, r)]
  return { U: Qa ? matmul64(Qa, core.U) : core.U, S: core.S, V: Qb ? matmul64(Qb, core.V) : core.V };
}

const sameShape = (a: Shape, b: Shape) => a.length === b.length && a.every((d, i) => d === b[i]);

/** Every multi-index of `shape`, row-major ([[]] for a scalar shape). */
function leadingIndices(shape: Shape): number[][] {
  const out: number[][] = [];
  const n = numel(shape);
  for (let i = 0; i < n; i++) {
    const idx = new Array<number>(shape.length);
    for (let d = shape.length - 1, r = i; d >= 0; d--) {
      idx[d] = r % shape[d];
      r = Math.floor(r / shape[d]);
    }
    out.push(idx);
  }
  return out;
}

function at(t: Tensor, idx: readonly number[]): Tensor {
  let r = t;
  for (const i of idx) r = r.index(0, i);
  return r;
}

/** TL's _convert_to_slice: a number on a matrix axis becomes a length-1 slice (axis kept). */
function keepAxis(i: FMIndex, n: number): FMIndex {
  if (typeof i !== 'number') return i;
  check(Number.isInteger(i) && i >= -n && i < n, `index ${i} out of range for an axis of size ${n}`, 'EINDEX');
  const k = i < 0 ? i + n : i;
  return { start: k, stop: k + 1 };
}

/** Apply index entries to the leading axes of t, left to right. */
function applyIndex(t: Tensor, idx: readonly FMIndex[]): Tensor {
  let r = t,
    axis = 0;
  for (const i of idx) {
    if (i === null) {
      axis++;
      continue;
    }
    if (typeof i === 'number') {
      const n = r.shape[axis];
      check(Number.isInteger(i) && i >= -n && i < n, `index ${i} out of range for axis ${axis} of size ${n}`, 'EINDEX');
      r = r.index(axis, i);
      continue;
    }
    if (Array.isArray(i)) {
      const n = r.shape[axis];
      const list = i as readonly number[];
      for (const k of list)
        check(
          Number.isInteger(k) && k >= -n && k < n,
          `index ${k} out of range for axis ${axis} of size ${n}`,
          'EINDEX',
        );
      r = indexSelect(
        r,
        axis,
        list.map((k) => (k < 0 ? k + n : k)),
      );
    } else {
      const s = i as { start?: number; stop?: number; step?: number };
      r = r.slice(axis, s.start, s.stop, s.step ?? 1);
    }
    axis++;
  }
  return r;
}
