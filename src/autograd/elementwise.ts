/**
 * Differentiable elementwise ops (binary with broadcasting, unary, activations) and the
 * broadcasting helper their gradients share: each computes its value exactly as the tensor core
 * does and, when an input is tracked on the active tape, records a backward closure.
 */
import * as T from '../tensor/index.js';
import { forEachOffset, numel, Shape, Tensor } from '../tensor/index.js';
import { erf } from '../util/math.js';
import { tapeFor } from './tape.js';

type TN = Tensor | number;
const asT = (x: TN): Tensor => (typeof x === 'number' ? Tensor.scalar(x) : x);
const same = (a: Shape, b: Shape) => a.length === b.length && a.every((d, i) => d === b[i]);

/** Sum a gradient of shape `from` down to the broadcast operand's shape `to`. */
export function reduceToShape(g: Float32Array, from: Shape, to: Shape): Float32Array {
  if (same(from, to)) return g;
  const out = new Float32Array(numel(to));
  const view = new Tensor(out, to).expand(from);
  let i = 0;
  forEachOffset(from, view.strides, 0, (o) => {
    out[o] += g[i++];
  });
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
  const ta = asT(a),
    tb = asT(b);
  return tape.record(out, (g, acc) => {
    if (tape.isTracked(ta)) acc(ta, reduceToShape(g, out.shape, ta.shape));
    if (tape.isTracked(tb)) acc(tb, reduceToShape(g, out.shape, tb.shape));
  });
}
export function sub(a: TN, b: TN): Tensor {
  const out = T.sub(a, b);
  const tape = tapeFor(a, b);
  if (!tape) return out;
  const ta = asT(a),
    tb = asT(b);
  return tape.record(out, (g, acc) => {
    if (tape.isTracked(ta)) acc(ta, reduceToShape(g, out.shape, ta.shape));
    if (tape.isTracked(tb)) {
      const n = g.map((v) => -v);
      acc(tb, reduceToShape(n, out.shape, tb.shape));
    }
  });
}
export function mul(a: TN, b: TN): Tensor {
  const out = T.mul(a, b);
  const tape = tapeFor(a, b);
  if (!tape) return out;
  const ta = asT(a),
    tb = asT(b);
  const av = expandTo(ta.f32(), ta.shape, out.shape),
    bv = expandTo(tb.f32(), tb.shape, out.shape);
  return tape.record(out, (g, acc) => {
    if (tape.isTracked(ta)) {
      const d = new Float32Array(g.length);
      for (let i = 0; i < g.length; i++) d[i] = g[i] * bv[i];
      acc(ta, reduceToShape(d, out.shape, ta.shape));
    }
    if (tape.isTracked(tb)) {
      const d = new Float32Array(g.length);
      for (let i = 0; i < g.length; i++) d[i] = g[i] * av[i];
      acc(tb, reduceToShape(d, out.shape, tb.shape));
    }
  });
}
export function div(a: TN, b: TN): Tensor {
  const out = T.div(a, b);
  const tape = tapeFor(a, b);
  if (!tape) return out;
  const ta = asT(a),
    tb = asT(b);
  const bv = expandTo(tb.f32(), tb.shape, out.shape),
    ov = out.f32();
  return tape.record(out, (g, acc) => {
    if (tape.isTracked(ta)) {
      const d = new Float32Array(g.length);
      for (let i = 0; i < g.length; i++) d[i] = g[i] / bv[i];
      acc(ta, reduceToShape(d, out.shape, ta.shape));
    }
    if (tape.isTracked(tb)) {
      const d = new Float32Array(g.length);
      for (let i = 0; i < g.length; i++) d[i] = (-g[i] * ov[i]) / bv[i];
      acc(tb, reduceToShape(d, out.shape, tb.shape));
    }
  });
}

// ---------------------------------------------------------------- elementwise unary
/** y = f(x) elementwise with dy/dx = df(x, y). */
function unary(x: Tensor, f: (v: number) => number, df: (v: number, y: number) => number): Tensor {
  const out = T.map(x, f);
  const tape = tapeFor(x);
  if (!tape) return out;
  const xv = x.f32(),
    yv = out.f32();
  return tape.record(out, (g, acc) => {
    const d = new Float32Array(g.length);
    for (let i = 0; i < g.length; i++) d[i] = g[i] === 0 ? 0 : g[i] * df(xv[i], yv[i]);
    acc(x, d);
  });
}
export const neg = (x: Tensor) =>
  unary(
    x,
    (v) => -v,
    () => -1,
  );
export const exp = (x: Tensor) => unary(x, Math.exp, (_, y) => y);
export const log = (x: Tensor) => unary(x, Math.log, (v) => 1 / v);
export const sqrt = (x: Tensor) => unary(x, Math.sqrt, (_, y) => 0.5 / y);
export const square = (x: Tensor) =>
  unary(
    x,
    (v) => v * v,
    (v) => 2 * v,
  );
export const tanh = (x: Tensor) => unary(x, Math.tanh, (_, y) => 1 - y * y);
export const relu = (x: Tensor) =>
  unary(
    x,
    (v) => (v > 0 ? v : 0),
    (v) => (v > 0 ? 1 : 0),
  );

const GELU_C = Math.sqrt(2 / Math.PI);
/** gelu_new (GPT-2's tanh approximation), with its exact derivative (taken in the same pass when recording). */
export function geluNew(x: Tensor): Tensor {
  const tape = tapeFor(x);
  if (!tape) return T.geluNew(x);
  // the values from the tensor core (its fast kernel when registered), so that a recorded forward
  // gives the plain forward's numbers; the derivative in the same pass over x
  const out = T.geluNew(x);
  const src = x.f32(),
    dy = new Float32Array(src.length);
  for (let i = 0; i < src.length; i++) {
    const v = src[i],
      t = Math.tanh(GELU_C * (v + 0.044715 * v * v * v));
    dy[i] = 0.5 * (1 + t) + 0.5 * v * (1 - t * t) * GELU_C * (1 + 3 * 0.044715 * v * v);
  }
  return tape.record(out, (g, acc) => {
    for (let i = 0; i < g.length; i++) dy[i] *= g[i];
    acc(x, dy);
  });
}
/** Exact (erf) GELU: x Φ(x); derivative Φ(x) + x φ(x). */
export const gelu = (x: Tensor) =>
  unary(
    x,
    (v) => 0.5 * v * (1 + erf(v / Math.SQRT2)),
    (v) => 0.5 * (1 + erf(v / Math.SQRT2)) + (v * Math.exp(-0.5 * v * v)) / Math.sqrt(2 * Math.PI),
  );
export function activation(x: Tensor, fn: 'gelu_new' | 'gelu' | 'relu'): Tensor {
  return fn === 'gelu_new' ? geluNew(x) : fn === 'gelu' ? gelu(x) : relu(x);
}

/** erf (~1e-12): the one in util/math.ts, which the host's exact GELU uses too. */
export { erf };
