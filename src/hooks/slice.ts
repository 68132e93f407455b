import { check } from '../errors.js';
import { indexSelect, Tensor } from '../tensor/index.js';

/**
 * TransformerLens's utils.Slice. In TypeScript the Python forms map to:
 *   null -> identity; k (number) -> index k, axis removed; number[] -> gather, axis kept;
 *   { stop } ~ Python (a,) i.e. [:a]; { start, stop, step } ~ (a, b[, c]).
 */
export type SliceInput =
  null | undefined | number | number[] | { start?: number; stop?: number; step?: number } | Slice;

export class Slice {
  constructor(readonly input: SliceInput = null) {
    if (input instanceof Slice) this.input = input.input;
  }
  get mode(): 'identity' | 'int' | 'array' | 'slice' {
    const i = this.input;
    if (i == null) return 'identity';
    if (typeof i === 'number') return 'int';
    if (Array.isArray(i)) return 'array';
    return 'slice';
  }
  /** run_with_cache's Slice.unwrap: an int k becomes [k] so the axis is kept. */
  static unwrap(x: SliceInput): Slice {
    if (x instanceof Slice) return x;
    return typeof x === 'number' ? new Slice([x]) : new Slice(x);
  }
  apply(t: Tensor, dim = 0): Tensor {
    const i = this.input as Exclude<SliceInput, Slice>;
    switch (this.mode) {
      case 'identity':
        return t;
      case 'int':
        return t.index(dim, i as number);
      case 'array': {
        const n = t.shape[dim < 0 ? dim + t.ndim : dim];
        for (const k of i as number[])
          check(Number.isInteger(k) && k >= -n && k < n, `slice index ${k} out of range for an axis of ${n}`);
        return indexSelect(
          t,
          dim,
          (i as number[]).map((k) => (k < 0 ? k + n : k)),
        );
      }
      default: {
        const s = i as { start?: number; stop?: number; step?: number };
        return t.slice(dim, s.start, s.stop, s.step ?? 1);
      }
    }
  }
  /** The positions this slice selects out of maxCtx. */
  indices(maxCtx: number): number[] {
    const all = Tensor.from(
      Array.from({ length: maxCtx }, (_, k) => k),
      [maxCtx],
    );
    const r = this.apply(all, 0);
    return r.ndim === 0 ? [r.item()] : r.toArray();
  }
}
