/** TL's LayerNorm as differentiable pieces (centre, rmsScale) with its hook points between them. */
import { Tensor } from '../tensor/index.js';
import { add, div, mul } from './elementwise.js';
import { tapeFor } from './tape.js';

// ---------------------------------------------------------------- layer norm pieces
/** x - mean(x) over the last axis (mean in double, rounded once: the tensor core's numbers). */
export function centre(x: Tensor): Tensor {
  const d = x.shape[x.ndim - 1],
    src = x.f32();
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
  const d = c.shape[c.ndim - 1],
    src = c.f32();
  const rows = d === 0 ? 0 : src.length / d;
  const out = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    let v = 0;
    for (let i = 0; i < d; i++) {
      const x = src[r * d + i];
      v += x * x;
    }
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
export function layerNorm(
  x: Tensor,
  eps: number,
  w?: Tensor,
  b?: Tensor,
  hooks: { scale?: (t: Tensor) => Tensor; normalized?: (t: Tensor) => Tensor } = {},
): Tensor {
  const c = centre(x);
  let s = rmsScale(c, eps);
  if (hooks.scale) s = hooks.scale(s);
  let out = div(c, s);
  if (w) out = mul(out, w);
  if (b) out = add(out, b);
  return hooks.normalized ? hooks.normalized(out) : out;
}
