/** The softmax family: softmax, log-softmax and the (fused) cross-entropy losses. */
import { check, TypelensError } from '../errors.js';
import * as T from '../tensor/index.js';
import { Tensor } from '../tensor/index.js';
import { tapeFor } from './tape.js';
import { slice } from './views.js';

// ---------------------------------------------------------------- softmax family
/** Softmax over the last axis (all -inf rows give 0, as the tensor core does). */
export function softmax(x: Tensor): Tensor {
  const out = T.softmax(x);
  const tape = tapeFor(x);
  if (!tape) return out;
  const p = out.f32(),
    n = x.shape[x.ndim - 1];
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
  const ls = out.f32(),
    n = x.shape[x.ndim - 1];
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
    const o = r * V,
      t = tv[r];
    if (!Number.isInteger(t) || t < 0 || t >= V)
      throw new TypelensError(`crossEntropy: target ${t} outside [0, ${V})`, 'EINDEX');
    let mx = -Infinity;
    for (let i = 0; i < V; i++) if (x[o + i] > mx) mx = x[o + i];
    let s = 0;
    if (e)
      for (let i = 0; i < V; i++) {
        const v = Math.exp(x[o + i] - mx);
        e[o + i] = v;
        s += v;
      }
    else for (let i = 0; i < V; i++) s += Math.exp(x[o + i] - mx);
    if (inv) inv[r] = 1 / s;
    total += mx + Math.log(s) - x[o + t];
  }
  const out = Tensor.scalar(total / rows);
  if (!tape) return out;
  return tape.record(out, (g, acc) => {
    const d = e!,
      k = g[0] / rows;
    for (let r = 0; r < rows; r++) {
      const o = r * V,
        c = inv![r] * k;
      for (let i = 0; i < V; i++) d[o + i] *= c;
      d[o + tv[r]] -= k;
    }
    acc(logits, d);
  });
}

/** TL's lm_cross_entropy_loss: mean next-token loss of logits [B, P, V] on tokens [B, P]. */
export function lmCrossEntropyLoss(logits: Tensor, tokens: Tensor): Tensor {
  check(
    logits.ndim === 3 &&
      tokens.ndim === 2 &&
      tokens.shape[0] === logits.shape[0] &&
      tokens.shape[1] === logits.shape[1],
    () =>
      `lmCrossEntropyLoss: logits [${logits.shape.join(', ')}] and tokens [${tokens.shape.join(', ')}] do not match`,
  );
  const P = logits.shape[1];
  check(P >= 2, 'lmCrossEntropyLoss needs at least 2 positions');
  return crossEntropy(slice(logits, 1, 0, P - 1), tokens.slice(1, 1).f32());
}
