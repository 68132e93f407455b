/** Checks: each weight-processing step preserves the centred logits (tolerance from a condition probe). */
import { HookedTransformer } from '../../model/hooked-transformer.js';
import { NO_PROCESSING } from '../../model/process.js';
import type { ProcessingOptions } from '../../model/process.js';
import { rng } from '../../model/make-weights.js';
import type { Weights } from '../../model/weights.js';
import { Tensor } from '../../tensor/index.js';
import { PROBE_DELTA } from './tolerance.js';
import type { VerifyCheck, VerifyContext } from './types.js';
import { axesOf, fmt, formatWhere, newTally, outcome, plain, tally, whereAt } from './where.js';
import { registerCheck } from './registry.js';

// ---------------------------------------------------------------- processing

export const PROCESSING_STEPS = [
  'foldLn',
  'centerWritingWeights',
  'centerUnembed',
  'foldValueBiases',
  'refactorFactoredAttnMatrices',
] as const;
export type ProcessingStep = (typeof PROCESSING_STEPS)[number];

const INVARIANT_HOOK = (n: string) => /(attn\.hook_pattern|hook_attn_out|hook_mlp_out)$/.test(n);
/** Logits (or any [..., X] activation) minus their mean over the last axis, in f64 then f32. */
function centredLast(t: Tensor): Float32Array {
  const x = plain(t),
    d = t.shape[t.ndim - 1],
    out = new Float32Array(x.length);
  for (let o = 0; o < x.length; o += d) {
    let s = 0;
    for (let i = 0; i < d; i++) s += x[o + i];
    const mu = s / d;
    for (let i = 0; i < d; i++) out[o + i] = x[o + i] - mu;
  }
  return out;
}
const isResidShaped = (n: string) => /hook_(attn_out|mlp_out)$/.test(n);
const invariantOf = (n: string, t: Tensor) => (isResidShaped(n) ? centredLast(t) : plain(t));

/** An f32 copy of the model's weights, each multiplied by (1 + δ·r), r uniform in [-1, 1] (seeded). */
function perturbedCopy(model: HookedTransformer, delta: number, seed: number): HookedTransformer {
  const r = rng(seed);
  const jig = (t?: Tensor): Tensor | undefined =>
    t
      ? new Tensor(
          plain(t).map((v) => v * (1 + delta * (2 * r.uniform() - 1))),
          t.shape,
        )
      : undefined;
  const W = model.weights;
  const w: Weights = {
    W_E: jig(W.W_E)!,
    W_pos: jig(W.W_pos)!,
    W_U: jig(W.W_U)!,
    b_U: jig(W.b_U)!,
    ln_final_w: jig(W.ln_final_w),
    ln_final_b: jig(W.ln_final_b),
    blocks: W.blocks.map((b) => ({
      W_Q: jig(b.W_Q)!,
      W_K: jig(b.W_K)!,
      W_V: jig(b.W_V)!,
      W_O: jig(b.W_O)!,
      b_Q: jig(b.b_Q)!,
      b_K: jig(b.b_K)!,
      b_V: jig(b.b_V)!,
      b_O: jig(b.b_O)!,
      W_in: jig(b.W_in)!,
      b_in: jig(b.b_in)!,
      W_out: jig(b.W_out)!,
      b_out: jig(b.b_out)!,
      ln1_w: jig(b.ln1_w),
      ln1_b: jig(b.ln1_b),
      ln2_w: jig(b.ln2_w),
      ln2_b: jig(b.ln2_b),
    })),
  };
  return new HookedTransformer({ ...model.cfg }, w, { dtype: 'f32', backend: model.backend });
}

interface Baseline {
  logits: Float32Array;
  shape: readonly number[];
  acts: Map<string, Float32Array>;
  /** tolerance on centred logits and on each invariant activation */
  tol: number;
  actTol: Map<string, number>;
  eps: number;
  kappa: number;
  probeMax: number;
}

/** The unprocessed model's run and the condition probe, shared by every processing check. */
function baseline(ctx: VerifyContext): Baseline {
  const hit = ctx.memo.get('processingBaseline');
  if (hit) return hit as Baseline;
  const raw = ctx.load!({ ...NO_PROCESSING });
  try {
    const { logits, cache } = raw.runWithCache(ctx.tokens, { namesFilter: INVARIANT_HOOK });
    const probe = perturbedCopy(raw, PROBE_DELTA, 0x5eed);
    let pr;
    try {
      pr = probe.runWithCache(ctx.tokens, { namesFilter: INVARIANT_HOOK });
    } finally {
      probe.dispose();
    }
    const { d_mlp: F, d_model: M } = raw.cfg;
    const K = Math.max(F, M, ctx.tokens.shape[1]);
    // relative weight perturbation equivalent to one evaluation's rounding (storage + arithmetic)
    const eps = ctx.uStorage + Math.sqrt(K) * ctx.uCompute;
    const scaleTol = (a: Float32Array, b: Float32Array) => {
      let mx = 0;
      for (let i = 0; i < a.length; i++) mx = Math.max(mx, Math.abs(a[i] - b[i]));
      return { tol: ctx.k * Math.SQRT2 * (eps / PROBE_DELTA) * mx, mx };
    };
    const base = centredLast(logits);
    const { tol, mx } = scaleTol(base, centredLast(pr.logits));
    let ref = 0;
    for (const v of base) ref = Math.max(ref, Math.abs(v));
    const acts = new Map<string, Float32Array>(),
      actTol = new Map<string, number>();
    for (const k of cache.keys()) {
      const a = invariantOf(k, cache.get(k));
      acts.set(k, a);
      actTol.set(k, scaleTol(a, invariantOf(k, pr.cache.get(k))).tol);
    }
    const b: Baseline = {
      logits: base,
      shape: logits.shape,
      acts,
      actTol,
      tol,
      eps,
      kappa: ref > 0 ? mx / (PROBE_DELTA * ref) : 0,
      probeMax: mx,
    };
    ctx.memo.set('processingBaseline', b);
    return b;
  } finally {
    raw.dispose();
  }
}

function processingCheck(id: string, title: string, opts: ProcessingOptions): VerifyCheck {
  return {
    id,
    group: 'processing',
    title,
    needs: ['loader'],
    run(ctx) {
      const base = baseline(ctx);
      const proc = ctx.load!({ ...NO_PROCESSING, ...opts });
      try {
        const logits = proc.forward(ctx.tokens);
        const t = newTally();
        tally(t, centredLast(logits), base.logits, base.tol);
        const detail = { eps: base.eps, condition: base.kappa, probeDelta: PROBE_DELTA, probeMaxAbs: base.probeMax };
        const where =
          t.worstI >= 0
            ? whereAt(t.worstI, base.shape, ['batch', 'pos', 'token'], { hook: 'logits (centred)' })
            : undefined;
        const r = outcome(t, where, undefined, 'centred logits, processed vs unprocessed', detail);
        let ref = 0;
        for (const x of base.logits) ref = Math.max(ref, Math.abs(x));
        const weak = ref > 0 ? base.tol / ref : 0;
        if (r.status === 'pass' && weak > 0.25) {
          r.warning =
            `weak: tol is ${(100 * weak).toFixed(0)}% of max |centred logit| (condition ≈ ${base.kappa.toExponential(1)}): ` +
            `in ${ctx.dtype} this checkpoint cannot show smaller faults`;
        }
        if (t.bad > 0) {
          // localise: the first invariant activation (pattern, centred attn/mlp out) that moved beyond its own tolerance
          const { cache } = proc.runWithCache(ctx.tokens, { namesFilter: INVARIANT_HOOK });
          for (const k of cache.keys()) {
            const want = base.acts.get(k);
            if (!want) continue;
            const at = newTally();
            tally(at, invariantOf(k, cache.get(k)), want, base.actTol.get(k)!);
            if (at.bad > 0) {
              r.where = whereAt(at.worstI, cache.get(k).shape, axesOf(k), {
                hook: isResidShaped(k) ? `${k} (centred)` : k,
              });
              r.message =
                `first diverges at ${formatWhere(r.where)} by ${fmt(at.worstErr)} (tol ${fmt(at.worstTol)}); ` +
                `centred logits off by up to ${fmt(t.maxAbs)} > tol ${fmt(t.worstTol)} (${t.bad} scalars over tol)`;
              break;
            }
          }
        }
        return r;
      } finally {
        proc.dispose();
      }
    },
  };
}
for (const s of PROCESSING_STEPS)
  registerCheck(processingCheck(`processing.${s}`, `${s} alone preserves the centred logits`, { [s]: true }));
registerCheck(
  processingCheck(
    'processing.all',
    'all five steps together preserve the centred logits',
    Object.fromEntries(PROCESSING_STEPS.map((s) => [s, true])),
  ),
);
