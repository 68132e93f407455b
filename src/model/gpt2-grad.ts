/**
 * GPT-2 gradients through the model's own forward: thin wrappers over HookedTransformer's
 * gradient mode (a forward inside withGrad runs src/model/layers.ts on the recording ops of
 * src/model/grad-ops.ts). Kept for phase-1 callers (training, the fixture tests).
 */
import type { HookedTransformer } from './hooked-transformer.js';
import { Tensor } from '../tensor/index.js';
import * as ag from '../autograd/ops.js';
import type { GradHook } from '../autograd/tape.js';

/** The model's lazily packed transposed weights and reused gradient buffers (model.gradPackCache). */
export function packCacheFor(model: HookedTransformer): ag.PackCache {
  return model.gradPackCache;
}

/** Every parameter in TL's names and layouts (model.namedParameters()). */
export function namedParameters(model: HookedTransformer): Map<string, Tensor> {
  return model.namedParameters();
}

/** Called at each hook point firing: return the (possibly replaced) activation. */
export type FireFn = (name: string, t: Tensor) => Tensor;

/**
 * Logits [B, P, V] of tokens [B, P], recording on the active tape when one is running: the
 * model's forward, with `fire` as a forward hook on every point.
 */
export function gpt2Forward(model: HookedTransformer, tokens: Tensor, fire?: FireFn): Tensor {
  if (!fire) return model.forward(tokens);
  return model.runWithHooks(tokens, { fwdHooks: [[() => true, (t, hp) => fire(hp.name, t)]] });
}

export interface Gpt2GradResult {
  /** The metric's value. */
  value: number;
  /** d metric / d parameter, TL names (see namedParameters). Empty when params is false. */
  params: Map<string, Tensor>;
  /** d metric / d hook point output, summed over firings (ln1 fires three times per layer). */
  hooks: Map<string, Tensor>;
  /** Per-firing gradients for hook points that fire more than once: name -> [first, second, ...]. */
  firings: Map<string, Tensor[]>;
}

/**
 * One forward with the tape and one backward: the gradient of `metric(logits)` with respect to
 * every parameter (TL names) and every hook point. `bwdHooks` see (and may replace) the
 * gradient at a hook point, as TL's backward hooks do.
 */
export function gpt2Grad(
  model: HookedTransformer,
  tokens: Tensor,
  metric: (logits: Tensor) => Tensor,
  opts: {
    params?: boolean;
    hooks?: boolean;
    bwdHooks?: [string | ((n: string) => boolean), GradHook][];
    /** Return weight gradients as views of reused kernel buffers (valid until the next backward), not copies. */
    views?: boolean;
  } = {},
): Gpt2GradResult {
  const wantHooks = opts.hooks ?? true;
  model.checkWeights(); // a weight edited outside the model would disagree with its packed copy
  const firings = new Map<string, Tensor[]>();
  const tap = {
    want: () => wantHooks,
    onGrad: (name: string, i: number, g: Tensor) => {
      const list = firings.get(name) ?? [];
      list[i] = g.clone();
      firings.set(name, list);
    },
  };
  const tok = tokens.ndim === 1 ? tokens.unsqueeze(0) : tokens;
  const bwdHooks = (opts.bwdHooks ?? []).map(
    ([f, fn]) => [f, (g: Tensor) => fn(g)] as [string | ((n: string) => boolean), (g: Tensor) => Tensor | void],
  );
  const r = model.withGradTap(tap, () =>
    model.backward(tok, metric, { params: opts.params ?? true, views: opts.views, bwdHooks }),
  );
  const hooks = new Map<string, Tensor>();
  for (const [n, list] of firings) {
    if (list.length === 1) {
      hooks.set(n, list[0]);
      continue;
    }
    const s = Float32Array.from(list[0].f32());
    for (const t of list.slice(1)) {
      const d = t.f32();
      for (let i = 0; i < s.length; i++) s[i] += d[i];
    }
    hooks.set(n, new Tensor(s, list[0].shape));
  }
  for (const n of [...firings.keys()]) if (firings.get(n)!.length === 1) firings.delete(n);
  return { value: r.value, params: r.paramGrads, hooks, firings };
}

/** TL's logit difference metric: mean over batch of logits[b, -1, A] - logits[b, -1, B]. */
export function logitDiffMetric(answer: [number, number]): (logits: Tensor) => Tensor {
  return (logits) => {
    const last = ag.index(logits, 1, -1); // [B, V]
    const Bn = last.shape[0];
    const idx = new Tensor(
      Float32Array.from({ length: 2 * Bn }, (_, i) => answer[i % 2]),
      [Bn, 2],
    );
    const picked = ag.gather(last, idx); // [B, 2]
    return ag.mean(ag.sub(ag.index(picked, 1, 0), ag.index(picked, 1, 1)));
  };
}
