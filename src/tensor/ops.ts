// Elementwise ops, reductions, softmax and layer norm, gathers and concatenation: plain loops
// over contiguous f32 data. Linear algebra (matmul, einsum, svd) is in linalg.ts.
import { check, TypelensError } from '../errors.js';
import { normAxis, numel, sameShape, Shape, Tensor } from './tensor.js';

type T = Tensor | number;
const asTensor = (x: T): Tensor => (typeof x === 'number' ? Tensor.scalar(x) : x);

export function broadcastShapes(a: Shape, b: Shape): number[] {
  const n = Math.max(a.length, b.length);
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    const da = a[a.length - n + i] ?? 1,
      db = b[b.length - n + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) {
      throw new TypelensError(`shapes [${a.join(', ')}] and [${b.join(', ')}] do not broadcast`, 'ESHAPE');
    }
    out[i] = da === 1 ? db : da;
  }
  return out;
}

type BinOp = 'add' | 'sub' | 'mul' | 'div';
function binary(a: T, b: T, op: BinOp): Tensor {
  const ta = asTensor(a),
    tb = asTensor(b);
  const shape = broadcastShapes(ta.shape, tb.shape);
  const x = sameShape(ta.shape, shape) ? ta.f32() : ta.expand(shape).f32();
  const y = sameShape(tb.shape, shape) ? tb.f32() : tb.expand(shape).f32();
  const out = new Float32Array(numel(shape));
  const n = out.length;
  switch (op) {
    case 'add':
      for (let i = 0; i < n; i++) out[i] = x[i] + y[i];
      break;
    case 'sub':
      for (let i = 0; i < n; i++) out[i] = x[i] - y[i];
      break;
    case 'mul':
      for (let i = 0; i < n; i++) out[i] = x[i] * y[i];
      break;
    case 'div':
      for (let i = 0; i < n; i++) out[i] = x[i] / y[i];
      break;
  }
  return new Tensor(out, shape);
}

export const add = (a: T, b: T) => binary(a, b, 'add');
export const sub = (a: T, b: T) => binary(a, b, 'sub');
export const mul = (a: T, b: T) => binary(a, b, 'mul');
export const div = (a: T, b: T) => binary(a, b, 'div');

/** Apply f to every element (fresh contiguous f32 result). */
export function map(x: Tensor, f: (v: number) => number): Tensor {
  const src = x.f32();
  const out = new Float32Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = f(src[i]);
  return new Tensor(out, x.shape);
}

/** Move `axis` last and make the data contiguous: every reduction then walks rows. */
function rows(x: Tensor, axis: number): { data: Float32Array; n: number; outShape: number[]; kept: number[] } {
  const a = normAxis(axis, x.ndim);
  const perm = [...x.shape.keys()].filter((d) => d !== a).concat(a);
  const data = x.permute(...perm).f32();
  const outShape = x.shape.filter((_, d) => d !== a);
  const kept = [...x.shape];
  kept[a] = 1;
  return { data, n: x.shape[a], outShape, kept };
}

function reduce(x: Tensor, axis: number | undefined, keepdim: boolean, kind: 'sum' | 'max' | 'min'): Tensor {
  if (axis === undefined)
    return reduce(x.reshape([x.size]), 0, false, kind).reshape(keepdim ? x.shape.map(() => 1) : []);
  const { data, n, outShape, kept } = rows(x, axis);
  check(n > 0 || kind === 'sum', `cannot take the ${kind} of an empty axis`);
  const m = n === 0 ? numel(outShape) : data.length / n;
  const out = new Float32Array(m);
  for (let r = 0; r < m; r++) {
    const o = r * n;
    if (kind === 'sum') {
      let s = 0;
      for (let i = 0; i < n; i++) s += data[o + i];
      out[r] = s;
    } else if (kind === 'max') {
      let s = -Infinity;
      for (let i = 0; i < n; i++) if (data[o + i] > s || Number.isNaN(data[o + i])) s = data[o + i];
      out[r] = s;
    } else {
      let s = Infinity;
      for (let i = 0; i < n; i++) if (data[o + i] < s || Number.isNaN(data[o + i])) s = data[o + i];
      out[r] = s;
    }
  }
  return new Tensor(out, keepdim ? kept : outShape);
}
/** Sums accumulate in double precision and round once to f32. */
export const sum = (x: Tensor, axis?: number, keepdim = false) => reduce(x, axis, keepdim, 'sum');
export const max = (x: Tensor, axis?: number, keepdim = false) => reduce(x, axis, keepdim, 'max');
export const min = (x: Tensor, axis?: number, keepdim = false) => reduce(x, axis, keepdim, 'min');
export function mean(x: Tensor, axis?: number, keepdim = false): Tensor {
  const n = axis === undefined ? x.size : x.shape[normAxis(axis, x.ndim)];
  return div(sum(x, axis, keepdim), n);
}

export function argmax(x: Tensor, axis = -1): Tensor {
  const { data, n, outShape } = rows(x, axis);
  check(n > 0, 'argmax of an empty axis');
  const m = data.length / n;
  const out = new Float32Array(m);
  for (let r = 0; r < m; r++) {
    let best = 0;
    for (let i = 1; i < n; i++) if (data[r * n + i] > data[r * n + best]) best = i;
    out[r] = best;
  }
  return new Tensor(out, outShape);
}

/** Largest k along the last axis, sorted descending (ties: lower index first, like torch on CPU). */
export function topk(x: Tensor, k: number): { values: Tensor; indices: Tensor } {
  const n = x.shape[x.ndim - 1];
  check(Number.isInteger(k) && k >= 0 && k <= n, `topk: k=${k} out of range for an axis of ${n}`);
  const data = x.f32();
  const m = n === 0 ? 0 : data.length / n;
  const vals = new Float32Array(m * k),
    idx = new Float32Array(m * k);
  for (let r = 0; r < m; r++) {
    const order = Array.from({ length: n }, (_, i) => i);
    const row = data.subarray(r * n, r * n + n);
    order.sort((a, b) => row[b] - row[a] || a - b);
    for (let i = 0; i < k; i++) {
      vals[r * k + i] = row[order[i]];
      idx[r * k + i] = order[i];
    }
  }
  const shape = [...x.shape.slice(0, -1), k];
  return { values: new Tensor(vals, shape), indices: new Tensor(idx, shape) };
}

/** The two halves of a layer norm over the last axis: x - mean, and sqrt(var + eps) per row.
 * Split so a caller (the model's hook points) can act between them. */
export function centreAndScale(x: Tensor, eps: number): { centred: Float32Array; scale: Tensor } {
  const d = x.shape[x.ndim - 1];
  const src = x.f32();
  const m = d === 0 ? 0 : src.length / d;
  const scale = new Float32Array(m),
    centred = new Float32Array(src.length);
  for (let r = 0; r < m; r++) {
    const o = r * d;
    let mu = 0;
    for (let i = 0; i < d; i++) mu += src[o + i];
    mu = Math.fround(mu / d);
    let v = 0;
    for (let i = 0; i < d; i++) {
      const c = Math.fround(src[o + i] - mu);
      centred[o + i] = c;
      v += c * c;
    }
    scale[r] = Math.sqrt(Math.fround(v / d) + eps);
  }
  return { centred, scale: new Tensor(scale, [...x.shape.slice(0, -1), 1]) };
}

/** Divide each row of `centred` (rows of d) by its scale, in place. */
export function divideRows(centred: Float32Array, scale: Float32Array, d: number): Float32Array {
  for (let r = 0; r < scale.length; r++) for (let i = 0; i < d; i++) centred[r * d + i] /= scale[r];
  return centred;
}

/** Layer-norm statistics over the last axis, as TL computes them (population variance, eps
 * inside the square root). `normalized` = (x - mean)/scale; `out` applies w and b if given. */
export function layerNorm(
  x: Tensor,
  eps: number,
  w?: Tensor,
  b?: Tensor,
): { scale: Tensor; normalized: Tensor; out: Tensor } {
  const { centred, scale } = centreAndScale(x, eps);
  const norm = divideRows(centred, scale.f32(), x.shape[x.ndim - 1]);
  const normalized = new Tensor(norm, x.shape);
  let out = normalized;
  if (w) out = mul(out, w);
  if (b) out = add(out, b);
  return { scale, normalized, out };
}

/**
 * Faster kernels for softmax and gelu_new (the WASM SIMD ones, registered by the kernels layer
 * when it loads): every caller in the process then gets the same numbers, the model's host ops
 * and the gradient tape's alike.
 */
export interface FastElementwise {
  geluNew(src: Float32Array): Float32Array;
  softmaxRows(src: Float32Array, n: number): Float32Array;
}
let fast: FastElementwise | null = null;
/** Register (or with null, remove) the fast elementwise kernels. */
export function setFastElementwise(k: FastElementwise | null): void {
  fast = k;
}
/** The registered fast kernels, if any. */
export const fastElementwise = (): FastElementwise | null => fast;

/** Softmax over the last axis. Rows that are all -inf give 0 (TL zeroes the NaNs). */
export function softmax(x: Tensor, axis = -1): Tensor {
  const a = normAxis(axis, x.ndim);
  if (a !== x.ndim - 1) return softmax(x.transpose(a, -1), -1).transpose(a, -1).contiguous();
  const n = x.shape[a];
  const src = x.f32();
  if (fast) return new Tensor(fast.softmaxRows(src, n), x.shape);
  const out = new Float32Array(src.length);
  for (let o = 0; o < src.length; o += n) {
    let mx = -Infinity;
    for (let i = 0; i < n; i++) if (src[o + i] > mx) mx = src[o + i];
    if (mx === -Infinity) continue;
    let s = 0;
    for (let i = 0; i < n; i++) {
      const e = Math.exp(src[o + i] - mx);
      out[o + i] = e;
      s += e;
    }
    for (let i = 0; i < n; i++) out[o + i] = out[o + i] / s;
  }
  return new Tensor(out, x.shape);
}

export function logSoftmax(x: Tensor): Tensor {
  const n = x.shape[x.ndim - 1];
  const src = x.f32();
  const out = new Float32Array(src.length);
  for (let o = 0; o < src.length; o += n) {
    let mx = -Infinity;
    for (let i = 0; i < n; i++) if (src[o + i] > mx) mx = src[o + i];
    let s = 0;
    for (let i = 0; i < n; i++) s += Math.exp(src[o + i] - mx);
    const lse = mx + Math.log(s);
    for (let i = 0; i < n; i++) out[o + i] = src[o + i] - lse;
  }
  return new Tensor(out, x.shape);
}

/** Replace (not add) scores above the causal diagonal by -inf, on the last two axes [.., Q, K]. */
export function maskCausal(scores: Tensor): Tensor {
  const [q, k] = scores.shape.slice(-2);
  const out = Float32Array.from(scores.f32());
  const shift = k - q; // query i sees keys <= i + shift
  for (let o = 0; o < out.length; o += q * k)
    for (let i = 0; i < q; i++) for (let j = i + shift + 1; j < k; j++) out[o + i * k + j] = -Infinity;
  return new Tensor(out, scores.shape);
}

const GELU_C = Math.sqrt(2 / Math.PI);
/** gelu_new, the tanh approximation GPT-2 uses. */
export const geluNew = (x: Tensor): Tensor =>
  fast
    ? new Tensor(fast.geluNew(x.f32()), x.shape)
    : map(x, (v) => 0.5 * v * (1 + Math.tanh(GELU_C * (v + 0.044715 * v * v * v))));

/** Rows of `table` [V, M] for integer ids (any shape) -> [...ids.shape, M]. */
export function embedding(table: Tensor, ids: Tensor | ArrayLike<number>, idsShape?: Shape, what = 'token id'): Tensor {
  check(table.ndim === 2, 'embedding table must be 2-D');
  const [V, M] = table.shape;
  const idv = ids instanceof Tensor ? ids.f32() : ids;
  const shape = ids instanceof Tensor ? ids.shape : (idsShape ?? [idv.length]);
  const out = new Float32Array(idv.length * M);
  const tab = table.contiguous().f32();
  for (let i = 0; i < idv.length; i++) {
    const t = idv[i];
    if (!Number.isInteger(t) || t < 0 || t >= V)
      throw new TypelensError(`${what} ${t} at index ${i} is outside the vocabulary [0, ${V})`, 'ETOKEN');
    out.set(tab.subarray(t * M, t * M + M), i * M);
  }
  return new Tensor(out, [...shape, M]);
}

/** Select `indices` along `axis` (the axis is kept, with length = number of indices). */
export function indexSelect(x: Tensor, axis: number, indices: ArrayLike<number>): Tensor {
  const a = normAxis(axis, x.ndim);
  const parts = Array.from(indices, (i) => x.index(a, i).unsqueeze(a));
  return parts.length ? cat(parts, a) : x.slice(a, 0, 0).contiguous();
}

export function cat(ts: Tensor[], axis = 0): Tensor {
  check(ts.length > 0, 'cat of no tensors');
  const a = normAxis(axis, ts[0].ndim);
  for (const t of ts)
    check(
      t.ndim === ts[0].ndim && t.shape.every((d, i) => i === a || d === ts[0].shape[i]),
      () => `cat: shapes [${ts[0].shape.join(', ')}] and [${t.shape.join(', ')}] differ off axis ${axis}`,
    );
  const shape = [...ts[0].shape];
  shape[a] = ts.reduce((s, t) => s + t.shape[a], 0);
  const outer = numel(shape.slice(0, a));
  const out = new Float32Array(numel(shape));
  const inner = numel(shape.slice(a + 1));
  let col = 0;
  const rowLen = shape[a] * inner;
  for (const t of ts) {
    const d = t.f32();
    const len = t.shape[a] * inner;
    for (let o = 0; o < outer; o++) out.set(d.subarray(o * len, o * len + len), o * rowLen + col);
    col += len;
  }
  return new Tensor(out, shape);
}

export function stack(ts: Tensor[], axis = 0): Tensor {
  check(ts.length > 0, 'stack of no tensors');
  const a = normAxis(axis, ts[0].ndim + 1);
  return cat(
    ts.map((t) => t.unsqueeze(a)),
    a,
  );
}
