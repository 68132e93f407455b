/**
 * Differentiable ops over plain Tensors. Each computes its value exactly as the tensor core
 * does (same arithmetic, so a forward with gradients gives the same numbers as one without)
 * and, when an input is tracked on the active tape, records a backward closure.
 *
 * Gradient formulas are the textbook ones; the weight matmuls of `linear` run in the backend
 * (WASM SIMD) kernels: dX = dY·Wᵀ against a lazily packed transposed copy of W, and
 * dW = Xᵀ·dY with dY packed as the right-hand operand.
 */
import { check, TypelensError } from '../errors.js';
import type { Backend, PackedWeight } from '../kernels/backend.js';
import { getBackend, WasmBackend } from '../kernels/index.js';
import * as T from '../tensor/index.js';
import { forEachOffset, normAxis, numel, Shape, Tensor } from '../tensor/index.js';
import { backwardEpoch, tapeFor } from './tape.js';
import { GradLayout, outerAvailable, outerInto } from './outer.js';

type TN = Tensor | number;
const asT = (x: TN): Tensor => (typeof x === 'number' ? Tensor.scalar(x) : x);
const same = (a: Shape, b: Shape) => a.length === b.length && a.every((d, i) => d === b[i]);
/** A fresh Tensor object over the same storage (an op's output must be a new identity). */
const fresh = (x: Tensor) => new Tensor(x.data, x.shape, x.strides, x.offset, x.dtype);

/** Sum a gradient of shape `from` down to the broadcast operand's shape `to`. */
export function reduceToShape(g: Float32Array, from: Shape, to: Shape): Float32Array {
  if (same(from, to)) return g;
  const out = new Float32Array(numel(to));
  const view = new Tensor(out, to).expand(from);
  let i = 0;
  forEachOffset(from, view.strides, 0, (o) => { out[o] += g[i++]; });
  return out;
}
/** Values of shape `small` broadcast to `big`, contiguous. */
function expandTo(g: Float32Array, small: Shape, big: Shape): Float32Array {
  if (same(small, big)) return g;
  return new Tensor(g, small).expand(big).f32();
}

// ---------------------------------------------------------------- elementwise binary
export function add(a: TN, b: TN): Tensor {
  const out = T.add(a, b);
  const tape = tapeFor(a, b);
  if (!tape) return out;
  const ta = asT(a), tb = asT(b);
  return tape.record(out, (g, acc) => {
    if (tape.isTracked(ta)) acc(ta, reduceToShape(g, out.shape, ta.shape));
    if (tape.isTracked(tb)) acc(tb, reduceToShape(g, out.shape, tb.shape));
  });
}
export function sub(a: TN, b: TN): Tensor {
  const out = T.sub(a, b);
  const tape = tapeFor(a, b);
  if (!tape) return out;
  const ta = asT(a), tb = asT(b);
  return tape.record(out, (g, acc) => {
    if (tape.isTracked(ta)) acc(ta, reduceToShape(g, out.shape, ta.shape));
    if (tape.isTracked(tb)) { const n = g.map((v) => -v); acc(tb, reduceToShape(n, out.shape, tb.shape)); }
  });
}
export function mul(a: TN, b: TN): Tensor {
  const out = T.mul(a, b);
  const tape = tapeFor(a, b);
  if (!tape) return out;
  const ta = asT(a), tb = asT(b);
  const av = expandTo(ta.f32(), ta.shape, out.shape), bv = expandTo(tb.f32(), tb.shape, out.shape);
  return tape.record(out, (g, acc) => {
    if (tape.isTracked(ta)) { const d = new Float32Array(g.length); for (let i = 0; i < g.length; i++) d[i] = g[i] * bv[i]; acc(ta, reduceToShape(d, out.shape, ta.shape)); }
    if (tape.isTracked(tb)) { const d = new Float32Array(g.length); for (let i = 0; i < g.length; i++) d[i] = g[i] * av[i]; acc(tb, reduceToShape(d, out.shape, tb.shape)); }
  });
}
export function div(a: TN, b: TN): Tensor {
  const out = T.div(a, b);
  const tape = tapeFor(a, b);
  if (!tape) return out;
  const ta = asT(a), tb = asT(b);
  const bv = expandTo(tb.f32(), tb.shape, out.shape), ov = out.f32();
  return tape.record(out, (g, acc) => {
    if (tape.isTracked(ta)) { const d = new Float32Array(g.length); for (let i = 0; i < g.length; i++) d[i] = g[i] / bv[i]; acc(ta, reduceToShape(d, out.shape, ta.shape)); }
    if (tape.isTracked(tb)) { const d = new Float32Array(g.length); for (let i = 0; i < g.length; i++) d[i] = -g[i] * ov[i] / bv[i]; acc(tb, reduceToShape(d, out.shape, tb.shape)); }
  });
}

// ---------------------------------------------------------------- elementwise unary
/** y = f(x) elementwise with dy/dx = df(x, y). */
function unary(x: Tensor, f: (v: number) => number, df: (v: number, y: number) => number): Tensor {
  const out = T.map(x, f);
  const tape = tapeFor(x);
  if (!tape) return out;
  const xv = x.f32(), yv = out.f32();
  return tape.record(out, (g, acc) => {
    const d = new Float32Array(g.length);
    for (let i = 0; i < g.length; i++) d[i] = g[i] === 0 ? 0 : g[i] * df(xv[i], yv[i]);
    acc(x, d);
  });
}
export const neg = (x: Tensor) => unary(x, (v) => -v, () => -1);
export const exp = (x: Tensor) => unary(x, Math.exp, (_, y) => y);
export const log = (x: Tensor) => unary(x, Math.log, (v) => 1 / v);
export const sqrt = (x: Tensor) => unary(x, Math.sqrt, (_, y) => 0.5 / y);
export const square = (x: Tensor) => unary(x, (v) => v * v, (v) => 2 * v);
export const tanh = (x: Tensor) => unary(x, Math.tanh, (_, y) => 1 - y * y);
export const relu = (x: Tensor) => unary(x, (v) => (v > 0 ? v : 0), (v) => (v > 0 ? 1 : 0));

const GELU_C = Math.sqrt(2 / Math.PI);
/** gelu_new (GPT-2's tanh approximation), with its exact derivative (taken in the same pass when recording). */
export function geluNew(x: Tensor): Tensor {
  const tape = tapeFor(x);
  if (!tape) return T.geluNew(x);
  const src = x.f32(), y = new Float32Array(src.length), dy = new Float32Array(src.length);
  for (let i = 0; i < src.length; i++) {
    const v = src[i], t = Math.tanh(GELU_C * (v + 0.044715 * v * v * v));
    y[i] = 0.5 * v * (1 + t);
    dy[i] = 0.5 * (1 + t) + 0.5 * v * (1 - t * t) * GELU_C * (1 + 3 * 0.044715 * v * v);
  }
  const out = new Tensor(y, x.shape);
  return tape.record(out, (g, acc) => {
    for (let i = 0; i < g.length; i++) dy[i] *= g[i];
    acc(x, dy);
  });
}
/** Exact (erf) GELU: x Φ(x); derivative Φ(x) + x φ(x). */
export const gelu = (x: Tensor) => unary(x,
  (v) => 0.5 * v * (1 + erf(v / Math.SQRT2)),
  (v) => 0.5 * (1 + erf(v / Math.SQRT2)) + v * Math.exp(-0.5 * v * v) / Math.sqrt(2 * Math.PI));
export function activation(x: Tensor, fn: 'gelu_new' | 'gelu' | 'relu'): Tensor {
  return fn === 'gelu_new' ? geluNew(x) : fn === 'gelu' ? gelu(x) : relu(x);
}

/** erf by its Taylor series near 0 and the erfc continued fraction beyond: ~1e-12 (the model's). */
export function erf(x: number): number {
  const t = Math.abs(x);
  if (t < 2.5) {
    let sum = t, term = t;
    for (let n = 1; n < 60; n++) { term *= -t * t / n; const a = term / (2 * n + 1); sum += a; if (Math.abs(a) < 1e-17) break; }
    return Math.sign(x) * (2 / Math.sqrt(Math.PI)) * sum;
  }
  let f = 0;
  for (let n = 60; n >= 1; n--) f = n / 2 / (t + f);
  return Math.sign(x) * (1 - Math.exp(-t * t) / Math.sqrt(Math.PI) / (t + f));
}

// ---------------------------------------------------------------- reductions
/** Sum over one axis (or all): the gradient is d(out) broadcast back. */
export function sum(x: Tensor, axis?: number, keepdim = false): Tensor {
  const out = T.sum(x, axis, keepdim);
  const tape = tapeFor(x);
  if (!tape) return out;
  return tape.record(out, (g, acc) => {
    let gs: Tensor;
    if (axis === undefined) gs = new Tensor(g, x.shape.map(() => 1));
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
    if (gv.isContiguous()) gx.set(g, gv.offset); // a contiguous block (slices of the first axes, reshapes)
    else { let i = 0; forEachOffset(gv.shape, gv.strides, gv.offset, (o) => { gx[o] += g[i++]; }); }
    acc(x, gx);
  });
}
export const reshape = (x: Tensor, shape: Shape) => view(x, (t) => t.reshape(shape));
export const permute = (x: Tensor, ...axes: number[]) => view(x, (t) => t.permute(...axes));
export const transpose = (x: Tensor, a = -2, b = -1) => view(x, (t) => t.transpose(a, b));
export const slice = (x: Tensor, axis: number, start?: number, end?: number, step = 1) => view(x, (t) => t.slice(axis, start, end, step));
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
  check(idx.ndim === x.ndim && idx.shape.slice(0, -1).every((d, i) => d === x.shape[i]),
    () => `gather: index shape [${idx.shape.join(', ')}] does not fit [${x.shape.join(', ')}] (needs [...leading, K])`);
  const K = idx.shape[idx.ndim - 1], rows = idx.size / Math.max(K, 1);
  const xv = x.f32(), iv = idx.f32();
  const out = new Float32Array(idx.size);
  for (let r = 0; r < rows; r++) for (let k = 0; k < K; k++) {
    const j = iv[r * K + k];
    if (!Number.isInteger(j) || j < 0 || j >= V) throw new TypelensError(`gather: index ${j} outside [0, ${V})`, 'EINDEX');
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

// ---------------------------------------------------------------- softmax family
/** Softmax over the last axis (all -inf rows give 0, as the tensor core does). */
export function softmax(x: Tensor): Tensor {
  const out = T.softmax(x);
  const tape = tapeFor(x);
  if (!tape) return out;
  const p = out.f32(), n = x.shape[x.ndim - 1];
  return tape.record(out, (g, acc) => {
    const d = new Float32Array(g.length);
    for (let o = 0; o < g.length; o += n) {
      let s = 0;
      for (let i = 0; i < n; i++) s += g[o + i] * p[o + i];
      for (let i = 0; i < n; i++) d[o + i] = p[o + i] * (g[o + i] - s);
    }
    acc(x, d);
  });
}
export function logSoftmax(x: Tensor): Tensor {
  const out = T.logSoftmax(x);
  const tape = tapeFor(x);
  if (!tape) return out;
  const ls = out.f32(), n = x.shape[x.ndim - 1];
  return tape.record(out, (g, acc) => {
    const d = new Float32Array(g.length);
    for (let o = 0; o < g.length; o += n) {
      let s = 0;
      for (let i = 0; i < n; i++) s += g[o + i];
      for (let i = 0; i < n; i++) d[o + i] = g[o + i] - Math.exp(ls[o + i]) * s;
    }
    acc(x, d);
  });
}

/**
 * Mean cross-entropy of `logits` [..., V] against integer `targets` (one per row, any shape
 * with logits' leading size), fused: backward is (softmax - onehot) / rows.
 */
export function crossEntropy(logits: Tensor, targets: Tensor | ArrayLike<number>): Tensor {
  const V = logits.shape[logits.ndim - 1];
  const x = logits.f32();
  const rows = x.length / V;
  const tv = targets instanceof Tensor ? targets.f32() : targets;
  check(tv.length === rows, () => `crossEntropy: ${tv.length} targets for ${rows} rows of logits`);
  const tape = tapeFor(logits);
  // when recording, exp(x - max) is kept and becomes the softmax the backward needs
  const e = tape ? new Float32Array(x.length) : null;
  const inv = tape ? new Float64Array(rows) : null;
  let total = 0;
  for (let r = 0; r < rows; r++) {
    const o = r * V, t = tv[r];
    if (!Number.isInteger(t) || t < 0 || t >= V) throw new TypelensError(`crossEntropy: target ${t} outside [0, ${V})`, 'EINDEX');
    let mx = -Infinity;
    for (let i = 0; i < V; i++) if (x[o + i] > mx) mx = x[o + i];
    let s = 0;
    if (e) for (let i = 0; i < V; i++) { const v = Math.exp(x[o + i] - mx); e[o + i] = v; s += v; }
    else for (let i = 0; i < V; i++) s += Math.exp(x[o + i] - mx);
    if (inv) inv[r] = 1 / s;
    total += mx + Math.log(s) - x[o + t];
  }
  const out = Tensor.scalar(total / rows);
  if (!tape) return out;
  return tape.record(out, (g, acc) => {
    const d = e!, k = g[0] / rows;
    for (let r = 0; r < rows; r++) {
      const o = r * V, c = inv![r] * k;
      for (let i = 0; i < V; i++) d[o + i] *= c;
      d[o + tv[r]] -= k;
    }
    acc(logits, d);
  });
}

/** TL's lm_cross_entropy_loss: mean next-token loss of logits [B, P, V] on tokens [B, P]. */
export function lmCrossEntropyLoss(logits: Tensor, tokens: Tensor): Tensor {
  check(logits.ndim === 3 && tokens.ndim === 2 && tokens.shape[0] === logits.shape[0] && tokens.shape[1] === logits.shape[1],
    () => `lmCrossEntropyLoss: logits [${logits.shape.join(', ')}] and tokens [${tokens.shape.join(', ')}] do not match`);
  const P = logits.shape[1];
  check(P >= 2, 'lmCrossEntropyLoss needs at least 2 positions');
  return crossEntropy(slice(logits, 1, 0, P - 1), tokens.slice(1, 1).f32());
}

// ---------------------------------------------------------------- layer norm pieces
/** x - mean(x) over the last axis (mean in double, rounded once: the tensor core's numbers). */
export function centre(x: Tensor): Tensor {
  const d = x.shape[x.ndim - 1], src = x.f32();
  const out = new Float32Array(src.length);
  for (let o = 0; o < src.length; o += d) {
    let mu = 0;
    for (let i = 0; i < d; i++) mu += src[o + i];
    mu = Math.fround(mu / d);
    for (let i = 0; i < d; i++) out[o + i] = src[o + i] - mu;
  }
  const res = new Tensor(out, x.shape);
  const tape = tapeFor(x);
  if (!tape) return res;
  return tape.record(res, (g, acc) => {
    const gx = new Float32Array(g.length);
    for (let o = 0; o < g.length; o += d) {
      let m = 0;
      for (let i = 0; i < d; i++) m += g[o + i];
      m /= d;
      for (let i = 0; i < d; i++) gx[o + i] = g[o + i] - m;
    }
    acc(x, gx);
  });
}
/** sqrt(mean(c²) + eps) over the last axis, kept as [..., 1] (TL's hook_scale). */
export function rmsScale(c: Tensor, eps: number): Tensor {
  const d = c.shape[c.ndim - 1], src = c.f32();
  const rows = d === 0 ? 0 : src.length / d;
  const out = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    let v = 0;
    for (let i = 0; i < d; i++) { const x = src[r * d + i]; v += x * x; }
    out[r] = Math.sqrt(Math.fround(v / d) + eps);
  }
  const res = new Tensor(out, [...c.shape.slice(0, -1), 1]);
  const tape = tapeFor(c);
  if (!tape) return res;
  return tape.record(res, (g, acc) => {
    const gc = new Float32Array(src.length);
    for (let r = 0; r < rows; r++) {
      const k = g[r] / (d * out[r]);
      for (let i = 0; i < d; i++) gc[r * d + i] = k * src[r * d + i];
    }
    acc(c, gc);
  });
}
/**
 * TL's LayerNorm with its hook order: centre → scale (hook) → divide → w, b → normalized (hook).
 * `hooks` lets a caller wrap the two hook points (forward and backward hooks).
 */
export function layerNorm(x: Tensor, eps: number, w?: Tensor, b?: Tensor,
  hooks: { scale?: (t: Tensor) => Tensor; normalized?: (t: Tensor) => Tensor } = {}): Tensor {
  const c = centre(x);
  let s = rmsScale(c, eps);
  if (hooks.scale) s = hooks.scale(s);
  let out = div(c, s);
  if (w) out = mul(out, w);
  if (b) out = add(out, b);
  return hooks.normalized ? hooks.normalized(out) : out;
}

// ---------------------------------------------------------------- embedding
/** Rows of `table` [V, M] for integer ids -> [...ids.shape, M]; backward scatter-adds rows. */
export function embedding(table: Tensor, ids: Tensor, cache?: PackCache): Tensor {
  const out = T.embedding(table, ids);
  const tape = tapeFor(table);
  if (!tape) return out;
  const iv = ids.f32(), M = table.shape[1];
  return tape.record(out, (g, acc) => {
    // a reused buffer (only the rows written last time are cleared) or a fresh zero table
    const gt = cache?.sparseGradBuffer(table, iv, M) ?? new Float32Array(table.size);
    for (let i = 0; i < iv.length; i++) {
      const o = iv[i] * M;
      for (let m = 0; m < M; m++) gt[o + m] += g[i * M + m];
    }
    acc(table, gt);
  });
}

// ---------------------------------------------------------------- matmul / linear
/** Batched a [..., M, K] @ b [..., K, N] (both at least 2-D), broadcasting batch axes. */
export function matmul(a: Tensor, b: Tensor, backend: Backend = getBackend()): Tensor {
  check(a.ndim >= 2 && b.ndim >= 2, 'autograd matmul needs 2-D or batched operands');
  const out = T.matmul(a, b, backend);
  const tape = tapeFor(a, b);
  if (!tape) return out;
  return tape.record(out, (g, acc) => {
    const gt = new Tensor(g, out.shape);
    if (tape.isTracked(a)) { const ga = T.matmul(gt, b.transpose(-2, -1), backend); acc(a, reduceToShape(ga.f32(), ga.shape, a.shape)); }
    if (tape.isTracked(b)) { const gb = T.matmul(a.transpose(-2, -1), gt, backend); acc(b, reduceToShape(gb.f32(), gb.shape, b.shape)); }
  });
}

/**
 * A weight used as x @ W with W a logical [K, N] matrix whose gradient belongs to `leaf`
 * (TL layout: [K, N] itself, [H, M, D] for W_Q/K/V, [H, D, M] for W_O). `packed` is the
 * forward packing, `packedT` a [N, K] packing of Wᵀ for dX; both may be supplied by the model
 * (packed at load) or made lazily by a PackCache.
 */
export interface MatWeight {
  readonly leaf: Tensor;
  readonly K: number;
  readonly N: number;
  packed(): PackedWeight;
  packedT(): PackedWeight;
  /** dW [K, N] -> the leaf's layout. */
  toLeaf(dW: Float32Array): Float32Array;
  /** Where (k, n) of dW lives in the leaf's layout, and the cache owning kernel gradient buffers. */
  readonly layout?: GradLayout;
  readonly cache?: PackCache;
}

/** Lazily packed forward / transposed copies of weights, released together. */
export class PackCache {
  private m = new Map<Tensor, { fwd?: PackedWeight; T?: PackedWeight }>();
  private grads = new Map<Tensor, { ptr: number; view: Float32Array; epoch: number }>();
  constructor(readonly backend: Backend = getBackend()) {}
  /**
   * A gradient buffer for `leaf` in the WASM backend's memory (the weight-gradient kernel
   * writes there), reused across backward passes like PyTorch's `.grad`: a gradient handed
   * out from it is valid until the next backward pass. Null when already handed out in this
   * pass (a weight used twice takes the general path) or when the backend is not WASM.
   */
  /**
   * A zeroed gradient buffer for an embedding table of which only `rows` will be written:
   * only the rows written in the previous pass are cleared (a [V, M] table is never swept).
   */
  sparseGradBuffer(leaf: Tensor, rows: ArrayLike<number>, M: number): Float32Array | null {
    const prev = this.grads.has(leaf) ? this.dirty.get(leaf) : null;
    const buf = this.buffer(leaf);
    if (!buf) return null;
    if (!prev) buf.fill(0); // new, or last written densely
    else for (const r of prev) buf.fill(0, r * M, r * M + M);
    this.dirty.set(leaf, [...new Set(Array.from(rows))]);
    return buf;
  }
  private dirty = new Map<Tensor, number[]>();
  gradBuffer(leaf: Tensor): Float32Array | null {
    const b = this.buffer(leaf);
    if (b) this.dirty.delete(leaf);
    return b;
  }
  private buffer(leaf: Tensor): Float32Array | null {
    const be = this.backend;
    if (!(be instanceof WasmBackend)) return null;
    const e = backwardEpoch();
    let g = this.grads.get(leaf);
    if (g && g.epoch === e) return null;
    if (!g) {
      const ptr = be.arena.alloc(Math.max(leaf.size, 1) * 4);
      g = { ptr, view: new Float32Array(be.memory.buffer, ptr, leaf.size), epoch: e };
      this.grads.set(leaf, g);
    }
    g.epoch = e;
    return g.view;
  }
  get(leaf: Tensor, kind: 'fwd' | 'T', K: number, N: number, data: () => Float32Array): PackedWeight {
    let e = this.m.get(leaf);
    if (!e) this.m.set(leaf, e = {});
    return e[kind] ??= this.backend.pack(data(), K, N, 'f32');
  }
  /** Drop the packings of `leaf` (after its values changed), or of every weight. */
  invalidate(leaf?: Tensor): void {
    for (const [k, e] of this.m) if (!leaf || k === leaf) { e.fwd?.release(); e.T?.release(); this.m.delete(k); }
  }
  /** Release everything: packings and gradient buffers (gradients handed out become invalid). */
  release(): void {
    this.invalidate();
    const be = this.backend;
    if (be instanceof WasmBackend) for (const g of this.grads.values()) be.arena.release(g.ptr);
    this.grads.clear();
    this.dirty.clear();
  }
}

/** A plain [K, N] weight. */
export function plainWeight(w: Tensor, cache: PackCache, packed?: PackedWeight): MatWeight {
  check(w.ndim === 2, `plainWeight needs [K, N], got [${w.shape.join(', ')}]`);
  const [K, N] = w.shape;
  return {
    leaf: w, K, N,
    packed: () => packed ?? cache.get(w, 'fwd', K, N, () => w.f32()),
    packedT: () => cache.get(w, 'T', N, K, () => w.T.f32()),
    toLeaf: (dW) => dW,
    layout: { S: N, ss: 0, rs: N }, cache,
  };
}
/** TL's W_Q/W_K/W_V [H, M, D] used as [M, H·D] (one matmul for every head). */
export function headsInWeight(w: Tensor, cache: PackCache, packed?: PackedWeight): MatWeight {
  check(w.ndim === 3, `headsInWeight needs [H, M, D], got [${w.shape.join(', ')}]`);
  const [H, M, D] = w.shape;
  return {
    leaf: w, K: M, N: H * D,
    packed: () => packed ?? cache.get(w, 'fwd', M, H * D, () => w.permute(1, 0, 2).f32()),
    packedT: () => cache.get(w, 'T', H * D, M, () => w.permute(0, 2, 1).f32()),
    toLeaf: (dW) => new Tensor(dW, [M, H, D]).permute(1, 0, 2).f32(),
    layout: { S: D, ss: M * D, rs: D }, cache,
  };
}
/** TL's W_O [H, D, M] used as [H·D, M]. */
export function headsOutWeight(w: Tensor, cache: PackCache, packed?: PackedWeight): MatWeight {
  check(w.ndim === 3, `headsOutWeight needs [H, D, M], got [${w.shape.join(', ')}]`);
  const [H, D, M] = w.shape;
  return {
    leaf: w, K: H * D, N: M,
    packed: () => packed ?? cache.get(w, 'fwd', H * D, M, () => w.f32()),
    packedT: () => cache.get(w, 'T', M, H * D, () => w.permute(2, 0, 1).f32()),
    toLeaf: (dW) => dW,
    layout: { S: M, ss: 0, rs: M }, cache,
  };
}

/**
 * y [..., N] (reshaped to `outShape` if given) = x [..., K] @ W + b, in the backend's kernels.
 * Backward: dX = dY·Wᵀ (packed transposed copy), dW = Xᵀ·dY (dY packed), db = Σ rows dY.
 */
export function linear(x: Tensor, w: MatWeight, b: Tensor | undefined, backend: Backend, outShape?: Shape): Tensor {
  const { K, N } = w;
  // the trailing axes of x that multiply to K are contracted (z [B, P, H, D] against W_O [H·D, M])
  let tail = 1, lead = x.ndim;
  do tail *= x.shape[--lead]; while (lead > 0 && tail < K);
  check(tail === K || K === 0, () => `linear: input [${x.shape.join(', ')}] against a [${K}, ${N}] weight`);
  const xv = x.f32();
  const rows = K === 0 ? 0 : xv.length / K;
  const y = backend.matmul(xv, rows, w.packed());
  if (b) {
    check(b.size === N, () => `linear: bias of ${b.size} for ${N} outputs`);
    const bv = b.f32();
    for (let o = 0; o < y.length; o += N) for (let j = 0; j < N; j++) y[o + j] += bv[j];
  }
  const out = new Tensor(y, outShape ?? [...x.shape.slice(0, lead), N]);
  const tape = tapeFor(x, w.leaf, b);
  if (!tape) return out;
  return tape.record(out, (g, acc) => {
    if (tape.isTracked(x)) acc(x, backend.matmul(g, rows, w.packedT()));
    const buf = tape.isTracked(w.leaf) && w.layout && w.cache && outerAvailable(backend, w.layout, N) ? w.cache.gradBuffer(w.leaf) : null;
    if (buf) {
      outerInto(backend, xv, g, rows, K, N, w.layout!, buf, false);
      acc(w.leaf, buf);
    } else if (tape.isTracked(w.leaf)) {
      const xT = new Float32Array(K * rows);
      for (let r = 0; r < rows; r++) for (let k = 0; k < K; k++) xT[k * rows + r] = xv[r * K + k];
      const gp = backend.pack(g, rows, N, 'f32');
      let dW: Float32Array;
      try { dW = backend.matmul(xT, K, gp); } finally { gp.release(); }
      acc(w.leaf, w.toLeaf(dW));
    }
    if (b && tape.isTracked(b)) {
      const db = new Float32Array(N);
      for (let o = 0; o < g.length; o += N) for (let j = 0; j < N; j++) db[j] += g[o + j];
      acc(b, db);
    }
  });
}

// ---------------------------------------------------------------- attention
/**
 * Causal scores [B, H, Q, K] = q·k / attnScale from q [B, Q, H, D], k [B, K, H, D]; entries
 * with key > query + (K - Q) are -inf (constants: no gradient).
 */
export function attnScores(q: Tensor, k: Tensor, attnScale: number, value?: Float32Array): Tensor {
  check(q.ndim === 4 && k.ndim === 4 && q.shape[0] === k.shape[0] && q.shape[2] === k.shape[2] && q.shape[3] === k.shape[3],
    () => `attnScores: q [${q.shape.join(', ')}] and k [${k.shape.join(', ')}] do not match`);
  const [B, Q, H, D] = q.shape, P = k.shape[1], shift = P - Q;
  const qv = q.f32(), kv = k.f32(), inv = 1 / attnScale;
  // `value`: the scores already computed by the caller (the model's kernels), the backward is the same
  const s = value ?? new Float32Array(B * H * Q * P);
  if (!value) for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) for (let i = 0; i < Q; i++) {
    const o = ((b * H + h) * Q + i) * P, qo = ((b * Q + i) * H + h) * D;
    for (let j = 0; j < P; j++) {
      if (j > i + shift) { s[o + j] = -Infinity; continue; }
      const ko = ((b * P + j) * H + h) * D;
      let acc = 0;
      for (let d = 0; d < D; d++) acc += qv[qo + d] * kv[ko + d];
      s[o + j] = Math.fround(acc) * inv;
    }
  }
  const out = new Tensor(s, [B, H, Q, P]);
  const tape = tapeFor(q, k);
  if (!tape) return out;
  return tape.record(out, (g, acc) => {
    const gq = new Float32Array(qv.length), gk = new Float32Array(kv.length);
    for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) for (let i = 0; i < Q; i++) {
      const o = ((b * H + h) * Q + i) * P, qo = ((b * Q + i) * H + h) * D;
      for (let j = 0; j <= Math.min(P - 1, i + shift); j++) {
        const gs = g[o + j] * inv;
        if (gs === 0) continue;
        const ko = ((b * P + j) * H + h) * D;
        for (let d = 0; d < D; d++) { gq[qo + d] += gs * kv[ko + d]; gk[ko + d] += gs * qv[qo + d]; }
      }
    }
    if (tape.isTracked(q)) acc(q, gq);
    if (tape.isTracked(k)) acc(k, gk);
  });
}

/** z [B, Q, H, D] = pattern [B, H, Q, K] @ v [B, K, H, D] per head (`value`: z already computed by the caller). */
export function attnMix(pattern: Tensor, v: Tensor, value?: Float32Array): Tensor {
  check(pattern.ndim === 4 && v.ndim === 4 && pattern.shape[0] === v.shape[0] && pattern.shape[1] === v.shape[2] && pattern.shape[3] === v.shape[1],
    () => `attnMix: pattern [${pattern.shape.join(', ')}] and v [${v.shape.join(', ')}] do not match`);
  const [B, H, Q, P] = pattern.shape, D = v.shape[3];
  const pv = pattern.f32(), vv = v.f32();
  const z = value ?? new Float32Array(B * Q * H * D);
  if (!value) for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) for (let i = 0; i < Q; i++) {
    const po = ((b * H + h) * Q + i) * P, zo = ((b * Q + i) * H + h) * D;
    for (let j = 0; j < P; j++) {
      const p = pv[po + j];
      if (p === 0) continue;
      const vo = ((b * P + j) * H + h) * D;
      for (let d = 0; d < D; d++) z[zo + d] += p * vv[vo + d];
    }
  }
  const out = new Tensor(z, [B, Q, H, D]);
  const tape = tapeFor(pattern, v);
  if (!tape) return out;
  return tape.record(out, (g, acc) => {
    const gp = new Float32Array(pv.length), gv = new Float32Array(vv.length);
    const vStride = H * D;
    for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) for (let i = 0; i < Q; i++) {
      const po = ((b * H + h) * Q + i) * P, zo = ((b * Q + i) * H + h) * D;
      let vo = (b * P * H + h) * D;
      for (let j = 0; j < P; j++, vo += vStride) {
        const p = pv[po + j];
        let s = 0;
        if (p === 0) for (let d = 0; d < D; d++) s += g[zo + d] * vv[vo + d]; // masked: d(pattern) only
        else for (let d = 0; d < D; d++) { const gz = g[zo + d]; s += gz * vv[vo + d]; gv[vo + d] += p * gz; }
        gp[po + j] = s;
      }
    }
    if (tape.isTracked(pattern)) acc(pattern, gp);
    if (tape.isTracked(v)) acc(v, gv);
  });
}
