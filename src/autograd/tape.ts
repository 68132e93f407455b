/**
 * A small reverse-mode tape over plain Tensors (micrograd/tinygrad style, see docs/gradients.md).
 *
 * Why a tape of Tensors and not a `Var` wrapper: the model's forward is a sequence of plain
 * functions over Tensors, and hooks hand Tensors to user closures. Keeping the value type a
 * Tensor means the same layer functions run with or without gradients, and a metric written
 * with the differentiable ops (`src/autograd/ops.ts`) is ordinary typelens code.
 *
 * - A Tape is active only inside `withGrad` / `grad` / `tape.run`. Outside, every
 *   differentiable op checks one module variable (`active === null`) and records nothing:
 *   the forward pays a null check per op, no allocation.
 * - A Tensor is *tracked* when it is a watched leaf (`watch`) or the output of a recorded op.
 *   An op records a node only when one of its inputs is tracked, so constants (token ids,
 *   masks, frozen weights) cost nothing.
 * - Each node holds its output Tensor and a backward closure that receives d(out) as a
 *   contiguous Float32Array and hands each input's gradient to `acc`. Nodes are kept in
 *   execution order, which is a topological order: the reverse walk sees a tensor's gradient
 *   complete before its producer's node runs.
 * - Gradients are contiguous f32 arrays of the tensor's shape; accumulation is copy-on-write
 *   (a backward may hand the same array to two inputs).
 */
import { check, TypelensError } from '../errors.js';
import { Tensor } from '../tensor/index.js';
import { isSharedBuffer } from '../util/shared.js';

/** Hands `g` (contiguous, `t`'s shape) to `t` as (part of) its gradient. */
export type Accumulate = (t: Tensor, g: Float32Array) => void;
export type BackwardFn = (gOut: Float32Array, acc: Accumulate) => void;

interface Node {
  out: Tensor;
  backward: BackwardFn;
}

/** A gradient hook: sees d(metric)/d(t) (t's shape) and may return a replacement. */
export type GradHook = (grad: Tensor) => Tensor | void;

/** The gradients a backward pass produced, keyed by tensor identity. */
export class Gradients {
  constructor(private readonly map: Map<Tensor, Float32Array>) {}
  /**
   * d(metric)/d(t), t's shape; zeros when t did not influence the metric. Always the caller's
   * own array (a weight gradient written by the kernel into a reused buffer is copied).
   */
  get(t: Tensor): Tensor {
    const g = this.map.get(t);
    if (!g) return new Tensor(new Float32Array(t.size), t.shape);
    return new Tensor(isSharedBuffer(g.buffer) ? Float32Array.from(g) : g, t.shape);
  }
  /**
   * Like get() without the copy: a weight gradient may be a view of a kernel buffer that the
   * next backward pass through the same weights overwrites (PyTorch's `.grad` likewise).
   * For optimizers, which consume it at once.
   */
  view(t: Tensor): Tensor {
    const g = this.map.get(t);
    return new Tensor(g ?? new Float32Array(t.size), t.shape);
  }
  has(t: Tensor): boolean {
    return this.map.has(t);
  }
}

let active: Tape | null = null;
let epoch = 0;
/** Counts backward passes: per-pass resources (kernel gradient buffers) are handed out once per pass. */
export function backwardEpoch(): number {
  return epoch;
}

export class Tape {
  private nodes: Node[] = [];
  private tracked = new Set<Tensor>();
  private leaves = new Set<Tensor>();

  /** Mark tensors as leaves whose gradient is wanted. Returns the first (for chaining). */
  watch<T extends Tensor>(...ts: T[]): T {
    for (const t of ts)
      if (!this.tracked.has(t)) {
        this.tracked.add(t);
        this.leaves.add(t);
      }
    return ts[0];
  }
  isTracked(t: unknown): boolean {
    return t instanceof Tensor && this.tracked.has(t);
  }
  /** Record an op: `out` was computed from `inputs`; `backward` maps d(out) to the inputs. */
  record(out: Tensor, backward: BackwardFn): Tensor {
    this.tracked.add(out);
    this.nodes.push({ out, backward });
    return out;
  }
  get size(): number {
    return this.nodes.length;
  }

  /** Run `fn` with this tape recording (tapes nest: the innermost records). */
  run<R>(fn: () => R): R {
    const prev = active;
    // eslint-disable-next-line @typescript-eslint/no-this-alias -- the module's current tape is this one while fn runs
    active = this;
    try {
      return fn();
    } finally {
      active = prev;
    }
  }

  /**
   * Reverse-mode pass from `y` (seeded with ones, or `seed` of y's shape). Returns every
   * tracked tensor's gradient; the tape's nodes are dropped afterwards unless `retain`.
   */
  backward(y: Tensor, opts: { seed?: Tensor; retain?: boolean } = {}): Gradients {
    if (!this.tracked.has(y))
      throw new TypelensError(
        'backward: the metric does not depend on any watched tensor (was it computed inside withGrad with differentiable ops?)',
        'EGRAD',
      );
    epoch++;
    const grads = new Map<Tensor, Float32Array>();
    const owned = new Set<Float32Array>();
    const acc: Accumulate = (t, g) => {
      if (!this.tracked.has(t)) return;
      check(
        g.length === t.size,
        () => `internal: gradient of ${g.length} elements for a tensor of shape [${t.shape.join(', ')}]`,
      );
      const prev = grads.get(t);
      if (!prev) {
        grads.set(t, g);
        return;
      }
      let into = prev;
      if (!owned.has(prev)) {
        into = Float32Array.from(prev);
        owned.add(into);
        grads.set(t, into);
      }
      for (let i = 0; i < g.length; i++) into[i] += g[i];
    };
    if (opts.seed) {
      check(
        opts.seed.size === y.size,
        () => `backward: seed of shape [${opts.seed!.shape.join(', ')}] for a metric of shape [${y.shape.join(', ')}]`,
      );
      grads.set(y, Float32Array.from(opts.seed.f32()));
    } else grads.set(y, new Float32Array(y.size).fill(1));
    for (let i = this.nodes.length - 1; i >= 0; i--) {
      const n = this.nodes[i];
      const g = grads.get(n.out);
      if (!g) continue;
      n.backward(g, acc);
      if (!this.leaves.has(n.out)) grads.delete(n.out); // intermediates are not kept
    }
    if (!opts.retain) this.nodes = [];
    return new Gradients(grads);
  }
}

/** The recording tape, or null (the common, free case). */
export function currentTape(): Tape | null {
  return active;
}

/** The active tape when any of `xs` is tracked on it, else null: ops record only then. */
export function tapeFor(...xs: unknown[]): Tape | null {
  const t = active;
  if (t === null) return null;
  for (const x of xs) if (t.isTracked(x)) return t;
  return null;
}

/** Mark leaves on the active tape (no-op outside gradient mode). */
export function watch<T extends Tensor>(...ts: T[]): T {
  if (active) active.watch(...ts);
  return ts[0];
}

/** Run `fn` recording on a fresh tape; call `tape.backward(metric)` afterwards. */
export function withGrad<R>(fn: (tape: Tape) => R): { out: R; tape: Tape } {
  const tape = new Tape();
  const out = tape.run(() => fn(tape));
  return { out, tape };
}

/** Run `fn` with recording switched off (inside a withGrad). */
export function noGrad<R>(fn: () => R): R {
  const prev = active;
  active = null;
  try {
    return fn();
  } finally {
    active = prev;
  }
}

/**
 * Functional form: the value of the scalar (or seeded) `fn(...inputs)` and its gradient with
 * respect to each input (same shapes), in one forward and one backward pass.
 */
export function grad(
  fn: (...xs: Tensor[]) => Tensor,
  inputs: Tensor[],
  opts: { seed?: Tensor } = {},
): { value: Tensor; grads: Tensor[] } {
  const { out, tape } = withGrad((tp) => {
    tp.watch(...inputs);
    return fn(...inputs);
  });
  if (!tape.isTracked(out)) return { value: out, grads: inputs.map((x) => Tensor.zeros(x.shape)) };
  const g = tape.backward(out, opts);
  return { value: out, grads: inputs.map((x) => g.get(x)) };
}

/**
 * Identity on values; on the way back, `fn` sees d(metric)/d(x) (x's shape) and may return a
 * replacement of that shape, which is what flows upstream. This is the primitive behind TL's
 * backward hooks: a hook point's output is wrapped once per firing.
 */
export function hookGrad(x: Tensor, fn: GradHook): Tensor {
  const tape = tapeFor(x);
  if (!tape) return x;
  const y = new Tensor(x.data, x.shape, x.strides, x.offset, x.dtype); // a fresh identity, same storage
  return tape.record(y, (g, acc) => {
    const r = fn(new Tensor(g, x.shape));
    if (r instanceof Tensor) {
      check(
        r.size === x.size && r.ndim === x.ndim && r.shape.every((d, i) => d === x.shape[i]),
        () => `a backward hook returned shape [${r.shape.join(', ')}] for a gradient of shape [${x.shape.join(', ')}]`,
      );
      acc(x, Float32Array.from(r.f32()));
    } else acc(x, g);
  });
}
