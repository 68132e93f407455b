/** Differentiable reductions (sum, mean), views (reshape, slice, ...), copies and gather. */
import { check, TypelensError } from '../errors.js';
import * as T from '../tensor/index.js';
import { forEachOffset, normAxis, Shape, Tensor } from '../tensor/index.js';
import { div } from './elementwise.js';
import { tapeFor } from './tape.js';

/** A fresh Tensor object over the same storage (an op's output must be a new identity). */
const fresh = (x: Tensor) => new Tensor(x.data, x.shape, x.strides, x.offset, x.dtype);

// ---------------------------------------------------------------- reductions
/** Sum over one axis (or all): the gradient is d(out) broadcast back. */
export function sum(x: Tensor, axis?: number, keepdim = false): Tensor {
  const out = T.sum(x, axis, keepdim);
  const tape = tapeFor(x);
  if (!tape) return out;
  return tape.record(out, (g, acc) => {
    let gs: Tensor;
    if (axis === undefined)
      gs = new Tensor(
        g,
        x.shape.map(() => 1),
      );
    else gs = keepdim ? new Tensor(g, out.shape) : new Tensor(g, out.shape).unsqueeze(normAxis(axis, x.ndim));
    acc(x, gs.expand(x.shape).f32());
  });
}
export function mean(x: Tensor, axis?: number, keepdim = false): Tensor {
  const n = axis === undefined ? x.size : x.shape[normAxis(axis, x.ndim)];
  return div(sum(x, axis, keepdim), n);
}

// ---------------------------------------------------------------- views
/**
 * Any view (slice, index, permute, reshape, expand, ...): `f` maps a tensor of x's shape to
 * the view. Backward applies the same `f` to a zero gradient buffer of x's shape and adds
 * d(out) through it (+=, so broadcast views sum).
 */
export function view(x: Tensor, f: (t: Tensor) => Tensor): Tensor {
  const v = f(x);
  const out = v === x ? fresh(x) : v;
  const tape = tapeFor(x);
  if (!tape) return out;
  return tape.record(out, (g, acc) => {
    const gx = new Float32Array(x.size);
    const gv = f(new Tensor(gx, x.shape));
    check(gv.data === gx, 'internal: a differentiable view must be a view (no copy) of a contiguous tensor');
    if (gv.isContiguous())
      gx.set(g, gv.offset); // a contiguous block (slices of the first axes, reshapes)
    else {
      let i = 0;
      forEachOffset(gv.shape, gv.strides, gv.offset, (o) => {
        gx[o] += g[i++];
      });
    }
    acc(x, gx);
  });
}
export const reshape = (x: Tensor, shape: Shape) => view(x, (t) => t.reshape(shape));
export const permute = (x: Tensor, ...axes: number[]) => view(x, (t) => t.permute(...axes));
export const transpose = (x: Tensor, a = -2, b = -1) => view(x, (t) => t.transpose(a, b));
export const slice = (x: Tensor, axis: number, start?: number, end?: number, step = 1) =>
  view(x, (t) => t.slice(axis, start, end, step));
export const index = (x: Tensor, axis: number, i: number) => view(x, (t) => t.index(axis, i));
export const unsqueeze = (x: Tensor, axis: number) => view(x, (t) => t.unsqueeze(axis));
export const squeeze = (x: Tensor, axis?: number) => view(x, (t) => t.squeeze(axis));
export const expand = (x: Tensor, shape: Shape) => view(x, (t) => t.expand(shape));
/** A contiguous copy; gradient passes straight through. */
export function contiguous(x: Tensor): Tensor {
  const c = x.contiguous();
  const out = c === x ? fresh(x) : c;
  const tape = tapeFor(x);
  if (!tape) return out;
  return tape.record(out, (g, acc) => acc(x, g));
}

/** A copy (never shares storage, unlike contiguous); gradient passes straight through. */
export function copy(x: Tensor): Tensor {
  const out = x.clone();
  const tape = tapeFor(x);
  if (!tape) return out;
  return tape.record(out, (g, acc) => acc(x, g));
}

/**
 * Pick entries along the last axis: out[..., k] = x[..., idx[..., k]], with idx of shape
 * [...x.shape[:-1], K] (integers). The backward scatter-adds.
 */
export function gather(x: Tensor, idx: Tensor): Tensor {
  const V = x.shape[x.ndim - 1];
  check(
    idx.ndim === x.ndim && idx.shape.slice(0, -1).every((d, i) => d === x.shape[i]),
    () => `gather: index shape [${idx.shape.join(', ')}] does not fit [${x.shape.join(', ')}] (needs [...leading, K])`,
  );
  const K = idx.shape[idx.ndim - 1],
    rows = idx.size / Math.max(K, 1);
  const xv = x.f32(),
    iv = idx.f32();
  const out = new Float32Array(idx.size);
  for (let r = 0; r < rows; r++)
    for (let k = 0; k < K; k++) {
      const j = iv[r * K + k];
      if (!Number.isInteger(j) || j < 0 || j >= V)
        throw new TypelensError(`gather: index ${j} outside [0, ${V})`, 'EINDEX');
      out[r * K + k] = xv[r * V + j];
    }
  const res = new Tensor(out, idx.shape);
  const tape = tapeFor(x);
  if (!tape) return res;
  return tape.record(res, (g, acc) => {
    const gx = new Float32Array(x.size);
    for (let r = 0; r < rows; r++) for (let k = 0; k < K; k++) gx[r * V + iv[r * K + k]] += g[r * K + k];
    acc(x, gx);
  });
}

/**
 * Rows of x [..., M] (all leading axes flattened to R rows) picked by `rows` (integers in [0, R))
 * -> [N, M], torch's x.reshape(-1, M)[rows]. The backward scatter-adds into the picked rows. Used
 * to unembed only the positions a loss reads (the [rows, d_vocab] matmul is the costly one).
 */
export function selectRows(x: Tensor, rows: ArrayLike<number>): Tensor {
  const M = x.shape[x.ndim - 1],
    R = x.size / Math.max(M, 1);
  const xv = x.contiguous().f32(),
    N = rows.length;
  const out = new Float32Array(N * M);
  for (let n = 0; n < N; n++) {
    const r = rows[n];
    if (!Number.isInteger(r) || r < 0 || r >= R)
      throw new TypelensError(`selectRows: row ${r} outside [0, ${R}) of [${x.shape.join(', ')}]`, 'EINDEX');
    out.set(xv.subarray(r * M, (r + 1) * M), n * M);
  }
  const res = new Tensor(out, [N, M]);
  const tape = tapeFor(x);
  if (!tape) return res;
  const idx = Array.from(rows);
  return tape.record(res, (g, acc) => {
    const gx = new Float32Array(x.size);
    for (let n = 0; n < N; n++) {
      const o = idx[n] * M;
      for (let m = 0; m < M; m++) gx[o + m] += g[n * M + m];
    }
    acc(x, gx);
  });
}
