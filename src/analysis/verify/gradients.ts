/** Gradient-mode helpers shared by the gradient checks: the logit-difference metric, one recorded backward, sampling. */
import { TypelensError } from '../../errors.js';
import { HookedTransformer } from '../../model/hooked-transformer.js';
import type { BwdHook, GradMetric } from '../../model/hooked-transformer.js';
import { ag } from '../../autograd/index.js';
import { Tensor } from '../../tensor/index.js';
import type { VerifyContext } from './types.js';
import { plain } from './where.js';

// ---------------------------------------------------------------- gradients

/**
 * The two gradient checks (ids in GRADIENT_CHECK_IDS). Both need `model.backward` (gradient
 * mode); a model that gradient mode refuses (attention masks, KV caches, use_* switches,
 * scale_attn_by_inverse_layer_idx: EGRAD) is skipped with the refusal as the reason. Gradients
 * are f32 in every storage dtype (weights are decoded to f32), so u = u32 in their roundings;
 * the storage dtype only limits which weight perturbations can be represented.
 */
export const GRADIENT_CHECK_IDS = ['gradients.finiteDifferences', 'gradients.attributionPatchingLinear'] as const;

/** Whether the model has a backward pass (gradient mode: model.backward). */
export function hasGradients(model: HookedTransformer): boolean {
  return typeof (model as unknown as { backward?: unknown }).backward === 'function';
}

/** Σ_b (logit[b, -1, correct_b] − logit[b, -1, incorrect_b]) as a differentiable metric. */
function logitDiffMetric(answers: [number, number][]): GradMetric {
  return (logits) => {
    const last = ag.index(logits, 1, logits.shape[1] - 1); // [B, V]
    const idx = new Tensor(Float32Array.from(answers.flat()), [answers.length, 2]);
    const picked = ag.gather(last, idx); // [B, 2]
    return ag.sum(ag.sub(ag.index(picked, 1, 0), ag.index(picked, 1, 1)));
  };
}
/** The same metric in f64 from f32 logits (no tape). */
export function logitDiffValue(answers: [number, number][], logits: Tensor): number {
  const lg = plain(logits),
    [B, P, V] = logits.shape;
  let s = 0;
  for (let b = 0; b < B; b++) {
    const o = (b * P + P - 1) * V;
    s += lg[o + answers[b][0]] - lg[o + answers[b][1]];
  }
  return s;
}

interface GradRun {
  value: number;
  acts: Map<string, Float32Array>;
  shapes: Map<string, readonly number[]>;
  order: string[];
  params: Map<string, Float32Array>;
}

/** One recorded forward and backward of the logit difference: every hook point's gradient (summed over firings, in backward order) and every parameter's. */
export function gradRun(ctx: VerifyContext): GradRun {
  const hit = ctx.memo.get('gradRun');
  if (hit) return hit as GradRun;
  const acts = new Map<string, Float32Array>(),
    shapes = new Map<string, readonly number[]>(),
    order: string[] = [];
  const capture: BwdHook = [
    () => true,
    (g: Tensor, hp: { name: string }) => {
      const f = plain(g),
        prev = acts.get(hp.name);
      if (prev) for (let i = 0; i < f.length; i++) prev[i] += f[i];
      else {
        acts.set(hp.name, Float32Array.from(f));
        shapes.set(hp.name, g.shape);
        order.push(hp.name);
      }
    },
  ];
  const r = ctx.model.backward(ctx.tokens, logitDiffMetric(ctx.answers), {
    params: true,
    lastPositionLogits: true,
    bwdHooks: [...(ctx.gradHooks ?? []), capture],
  });
  const params = new Map<string, Float32Array>();
  for (const [n, t] of r.paramGrads) params.set(n, Float32Array.from(plain(t)));
  const run = { value: r.value, acts, shapes, order, params };
  ctx.memo.set('gradRun', run);
  return run;
}

/** Why gradient mode cannot run on this model and input (its EGRAD refusal), or undefined. */
export function gradRefusal(ctx: VerifyContext): string | undefined {
  if (!hasGradients(ctx.model)) return 'needs gradients (model.backward), which this model does not have';
  try {
    gradRun(ctx);
  } catch (e) {
    if (e instanceof TypelensError && e.code === 'EGRAD') return `gradient mode refuses this model: ${e.message}`;
    throw e;
  }
  return undefined;
}

/** Entries of an activation a finite difference may perturb: attention scores/patterns only at key ≤ query (masked entries are −inf / 0). */
export function validEntry(name: string, shape: readonly number[], i: number): boolean {
  if (!/hook_(attn_scores|pattern)$/.test(name)) return true;
  const k = i % shape[3],
    q = Math.floor(i / shape[3]) % shape[2];
  return k <= q;
}
/** RMS over the finite entries (masked attention scores are −inf). */
export const rms = (x: ArrayLike<number>) => {
  let s = 0,
    n = 0;
  for (let i = 0; i < x.length; i++)
    if (Number.isFinite(x[i])) {
      s += x[i] * x[i];
      n++;
    }
  return Math.sqrt(s / Math.max(1, n));
};
export const maxAbsOf = (x: ArrayLike<number>) => {
  let m = 0;
  for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i]));
  return m;
};

/** FD sample sizes: hook points (all when there are at most this many), coordinates per point, parameters. */
export const FD_MAX_HOOK_POINTS = 48;
export const FD_MAX_PARAMS = 8;
/** Parameters larger than this are not perturbed (each perturbation rewrites and repacks the whole tensor). */
export const FD_MAX_PARAM_SIZE = 1 << 22;

export interface FdSample {
  kind: 'hook' | 'param';
  name: string;
  i: number;
  shape: readonly number[];
  got: number;
  fd: number;
  tol: number;
  step: number;
  trunc: number;
}
