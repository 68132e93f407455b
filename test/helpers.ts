import fc from 'fast-check';
import { Tensor, numel } from '../src/tensor/index.js';

/** A random shape of rank [minRank, maxRank] with dims 1..maxDim (1s and odd sizes included). */
export const arbShape = (minRank = 1, maxRank = 4, maxDim = 6) =>
  fc.array(fc.integer({ min: 1, max: maxDim }), { minLength: minRank, maxLength: maxRank });

export const arbValues = (n: number) =>
  fc.array(fc.float({ min: -4, max: 4, noNaN: true, noDefaultInfinity: true }), { minLength: n, maxLength: n });

/**
 * A tensor of the given shape that is, at random, either contiguous or a non-contiguous view
 * (a reversed-axes permute of a contiguous tensor, or a strided slice of a larger one).
 */
export const arbTensorOf = (shape: number[]) =>
  fc.tuple(arbValues(numel(shape) * 2), fc.constantFrom('contig', 'permuted', 'strided')).map(([vals, kind]) => {
    if (kind === 'permuted' && shape.length > 1) {
      const rev = [...shape].reverse();
      const base = Tensor.from(vals.slice(0, numel(shape)), rev);
      return base.permute(...rev.map((_, i) => rev.length - 1 - i));
    }
    if (kind === 'strided') {
      const big = [...shape]; big[0] *= 2;
      return Tensor.from(vals, big).slice(0, 0, undefined, 2);
    }
    return Tensor.from(vals.slice(0, numel(shape)), shape);
  });

export const arbTensor = (minRank = 1, maxRank = 4, maxDim = 6) => arbShape(minRank, maxRank, maxDim).chain(arbTensorOf);

/** Element of a tensor by multi-index through the public get() (the naive reference path). */
export function allIndices(shape: readonly number[]): number[][] {
  const out: number[][] = [];
  const rec = (pre: number[]) => {
    if (pre.length === shape.length) { out.push(pre); return; }
    for (let i = 0; i < shape[pre.length]; i++) rec([...pre, i]);
  };
  rec([]);
  return out;
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity;
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    if (Object.is(a[i], b[i])) continue;
    const d = Math.abs(a[i] - b[i]);
    if (!(d <= m)) m = d;
  }
  return m;
}

/** |a-b| <= atol + rtol*|b| elementwise; infinities must match exactly. */
export function allClose(a: ArrayLike<number>, b: ArrayLike<number>, rtol = 1e-5, atol = 1e-6): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    if (a[i] === b[i]) continue;
    if (!(Math.abs(a[i] - b[i]) <= atol + rtol * Math.abs(b[i]))) return false;
  }
  return true;
}
