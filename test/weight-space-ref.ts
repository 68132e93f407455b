// Float64 references for the weight-space tests, written independently of the code under test:
// plain loops over Tensor.get (the naive element path), ml-matrix for dense decompositions.
import fc from 'fast-check';
import type { Test } from 'tap';
import { Matrix, SingularValueDecomposition, EigenvalueDecomposition } from 'ml-matrix';
import { Tensor } from '../src/tensor/index.js';
import { rng } from '../src/model/make-weights.js';

/** A dense float64 matrix, row-major. */
export interface M64 {
  r: number;
  c: number;
  d: Float64Array;
}

export const m64 = (r: number, c: number, d = new Float64Array(r * c)): M64 => ({ r, c, d });

export function mm(a: M64, b: M64): M64 {
  if (a.c !== b.r) throw new Error(`mm: ${a.r}x${a.c} @ ${b.r}x${b.c}`);
  const o = m64(a.r, b.c);
  for (let i = 0; i < a.r; i++)
    for (let k = 0; k < a.c; k++) {
      const x = a.d[i * a.c + k];
      for (let j = 0; j < b.c; j++) o.d[i * b.c + j] += x * b.d[k * b.c + j];
    }
  return o;
}
export function tr(a: M64): M64 {
  const o = m64(a.c, a.r);
  for (let i = 0; i < a.r; i++) for (let j = 0; j < a.c; j++) o.d[j * a.r + i] = a.d[i * a.c + j];
  return o;
}
export const frob = (a: M64): number => Math.sqrt(a.d.reduce((s, x) => s + x * x, 0));

/** Every multi-index of a shape, row-major. */
export function indices(shape: readonly number[]): number[][] {
  const out: number[][] = [[]];
  for (const n of shape) {
    const next: number[][] = [];
    for (const p of out) for (let i = 0; i < n; i++) next.push([...p, i]);
    out.splice(0, out.length, ...next);
  }
  return out;
}

/** Leading shape both a and b broadcast to (numpy rules), by hand. */
export function bcast(a: readonly number[], b: readonly number[]): number[] {
  const n = Math.max(a.length, b.length);
  return Array.from({ length: n }, (_, i) => {
    const x = a[a.length - n + i] ?? 1,
      y = b[b.length - n + i] ?? 1;
    if (x !== y && x !== 1 && y !== 1) throw new Error('no broadcast');
    return x === 1 ? y : x;
  });
}

/** The 2-D item of a [...lead', r, c] tensor at a multi-index of a broadcast leading shape. */
export function item(t: Tensor, idx: readonly number[]): M64 {
  const lead = t.ndim - 2;
  const own = idx.slice(idx.length - lead).map((i, d) => (t.shape[d] === 1 ? 0 : i));
  const [r, c] = t.shape.slice(-2);
  const o = m64(r, c);
  for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) o.d[i * c + j] = t.get(...own, i, j);
  return o;
}

export function mlSvd(a: M64): number[] {
  const mat = new Matrix(a.r, a.c);
  for (let i = 0; i < a.r; i++) for (let j = 0; j < a.c; j++) mat.set(i, j, a.d[i * a.c + j]);
  return new SingularValueDecomposition(mat, { autoTranspose: true }).diagonal;
}
export function mlEig(a: M64): [number, number][] {
  const mat = new Matrix(a.r, a.c);
  for (let i = 0; i < a.r; i++) for (let j = 0; j < a.c; j++) mat.set(i, j, a.d[i * a.c + j]);
  const e = new EigenvalueDecomposition(mat);
  return e.realEigenvalues.map((x, i) => [x, e.imaginaryEigenvalues[i]]);
}

/** Seeded N(0, sd^2) tensor. */
export function randn(shape: readonly number[], seed: number, sd = 1): Tensor {
  const g = rng(seed);
  const n = shape.reduce((a, b) => a * b, 1);
  return Tensor.from(
    Float32Array.from({ length: n }, () => sd * g.normal()),
    shape,
  );
}

/** max |a - b| over two matrices of the same shape (Infinity when they differ in shape). */
export function maxDiff(a: M64, b: M64): number {
  if (a.r !== b.r || a.c !== b.c) return Infinity;
  let m = 0;
  for (let i = 0; i < a.d.length; i++) m = Math.max(m, Math.abs(a.d[i] - b.d[i]));
  return Number.isNaN(m) ? Infinity : m;
}

/**
 * Register one fast-check property as one named tap assertion; a failure carries fast-check's
 * report (seed, path, counterexample) in the diagnostics.
 */
export function invariant<T>(
  tap: Test,
  name: string,
  arb: fc.Arbitrary<T>,
  pred: (x: T) => boolean,
  numRuns = 40,
): void {
  const d = fc.check(fc.property(arb, pred), { numRuns: Number(process.env.TYPELENS_FC_RUNS ?? numRuns) });
  tap.notOk(d.failed, name, d.failed ? { report: fc.defaultReportMessage(d) } : {});
}
