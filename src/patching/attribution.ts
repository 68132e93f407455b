/**
 * Attribution patching: the linear approximation of activation patching (Neel Nanda,
 * "Attribution Patching: Activation Patching At Industrial Scale"). Activation patching runs the
 * corrupted input with the clean activation written in at one index and reads the metric; to first
 * order that changes the metric by
 *
 *     (clean − corrupted) · ∂metric/∂activation   (gradient at the corrupted run, summed over the
 *                                                  entries the patch overwrites, and over the batch)
 *
 * so one corrupted forward + backward (the gradient cache) and the clean cache give every index
 * of a sweep at once. The ready-made functions mirror patching/ready-made.ts name by name
 * (getActPatchX -> getAttrPatchX) with the same output shapes; each value is the predicted
 * *change* metric(patched) − metric(corrupted) (activation patching returns metric(patched):
 * subtract metric(corrupted) to compare, or use a metric that is 0 on the corrupted run, like the
 * notebook's restored fraction). When the metric is linear in the patched activation the two agree
 * exactly (tested).
 */
import { TypelensError } from '../errors.js';
import type { ActivationCache } from '../hooks/cache.js';
import { getActName } from '../hooks/names.js';
import type { GradMetric } from '../hooks/registry.js';
import type { HookedTransformer, TokensInput } from '../model/hooked-transformer.js';
import { stack, Tensor } from '../tensor/index.js';
import { checkClean, sweepIndices } from './engine.js';
import { buildReadyMade, type ReadyMadeName } from './ready-made.js';
import type { SetterName } from './setters.js';

export interface AttributionOptions {
  /**
   * The corrupted run's activations and `_grad` entries (from `attributionGradCache`), to share one
   * backward between several functions; computed (for this function's points only) when absent.
   */
  corruptedGradCache?: ActivationCache;
  /** The metric reads only logits[:, -1]: unembed just that position. */
  lastPositionLogits?: boolean;
  /** Stop before this block: the metric then reads the residual stream [B, P, d_model] (probing). */
  stopAtLayer?: number;
}
export type AttributionPatch = (
  model: HookedTransformer,
  corruptedTokens: TokensInput,
  cleanCache: ActivationCache,
  metric: GradMetric,
  opts?: AttributionOptions,
) => Tensor;

/** Which axes of the activation the patch index fixes, per setter (the others are summed over). */
const KEPT_AXES: Record<SetterName, number[]> = {
  layerPos: [1],
  layerPosHeadVector: [1, 2],
  layerHeadVector: [2],
  layerHeadPattern: [1],
  layerHeadPosPattern: [1, 2],
  layerHeadDestSrcPosPattern: [1, 2, 3],
};

/**
 * One corrupted forward + backward: a cache of the activations at `names` (every point when absent)
 * and their gradients `name + '_grad'`, of `metric` (a scalar Tensor of the logits, ag.* ops).
 */
export function attributionGradCache(
  model: HookedTransformer,
  corruptedTokens: TokensInput,
  metric: GradMetric,
  names?: string[],
  opts: AttributionOptions = {},
): ActivationCache {
  const { toks } = sweepIndices(model, corruptedTokens, { indexDf: [] });
  return model.runWithCache(toks, {
    inclBwd: true,
    metric,
    namesFilter: names,
    lastPositionLogits: opts.lastPositionLogits,
    stopAtLayer: opts.stopAtLayer,
  }).cache;
}

/** sum over the non-kept axes of (clean − corrupted) · grad, shape = act.shape at the kept axes. */
export function attributionReduce(clean: Tensor, corrupted: Tensor, grad: Tensor, kept: number[]): Tensor {
  const shape = corrupted.shape,
    nd = shape.length;
  const c = clean.f32(),
    x = corrupted.f32(),
    g = grad.f32();
  const outShape = kept.map((a) => shape[a]);
  // output stride of each activation axis (0 for summed axes)
  const ostr = new Array<number>(nd).fill(0);
  let s = 1;
  for (let i = kept.length - 1; i >= 0; i--) {
    ostr[kept[i]] = s;
    s *= shape[kept[i]];
  }
  const out = new Float64Array(s);
  const idx = new Array<number>(nd).fill(0);
  let o = 0;
  for (let i = 0; i < x.length; i++) {
    const d = c[i] - x[i];
    if (d !== 0 && g[i] !== 0) out[o] += d * g[i]; // masked pattern entries: 0 · 0 (and -inf never reaches here)
    for (let a = nd - 1; a >= 0; a--) {
      o += ostr[a];
      if (++idx[a] < shape[a]) break;
      o -= ostr[a] * shape[a];
      idx[a] = 0;
    }
  }
  return new Tensor(Float32Array.from(out), outShape);
}

/** TL-style generic function: attribution for `activationName` at every layer, one row per layer. */
export function genericAttributionPatch(
  model: HookedTransformer,
  corruptedTokens: TokensInput,
  cleanCache: ActivationCache,
  metric: GradMetric,
  setter: SetterName,
  activationName: string,
  opts: AttributionOptions = {},
): Tensor {
  const L = model.cfg.n_layers;
  const names = Array.from({ length: L }, (_, l) => getActName(activationName, l));
  // blocks from stopAtLayer on do not run: patching them changes nothing (rows of zeros)
  const stop = opts.stopAtLayer == null ? L : opts.stopAtLayer < 0 ? opts.stopAtLayer + L : opts.stopAtLayer;
  const ran = (l: number) => l < stop;
  const gc =
    opts.corruptedGradCache ??
    attributionGradCache(
      model,
      corruptedTokens,
      metric,
      names.filter((_, l) => ran(l)),
      opts,
    );
  const kept = KEPT_AXES[setter];
  if (!kept) throw new TypelensError(`unknown patch setter "${setter}"`, 'EINPUT');
  return stack(
    names.map((name, l) => {
      const clean = cleanCache.get(name);
      if (!ran(l)) return Tensor.zeros(kept.map((a) => clean.shape[a]));
      const corrupted = gc.get(name);
      checkClean(name, clean, corrupted);
      // a point the backward never reached does not influence the metric: zero gradient
      const grad = gc.has(name + '_grad') ? gc.get(name + '_grad') : Tensor.zeros(corrupted.shape);
      return attributionReduce(clean, corrupted, grad, kept);
    }),
  );
}

/** getAttrPatchX for each ready-made getActPatchX. */
export type AttributionName = ReadyMadeName extends infer N
  ? N extends `getActPatch${infer R}`
    ? `getAttrPatch${R}`
    : never
  : never;

/** The ready-made attribution functions: getAttrPatch* for every getActPatch* (same shapes). */
export const attribution = Object.fromEntries(
  Object.entries(
    buildReadyMade(
      (setter, act) =>
        ((model, corrupted, clean, metric, opts = {}) =>
          genericAttributionPatch(model, corrupted, clean, metric, setter, act, opts)) as AttributionPatch,
    ),
  ).map(([name, f]) => [name.replace(/^getActPatch/, 'getAttrPatch'), f]),
) as Record<AttributionName, AttributionPatch>;
const fns = attribution;
export const {
  getAttrPatchResidPre,
  getAttrPatchResidMid,
  getAttrPatchAttnOut,
  getAttrPatchMlpOut,
  getAttrPatchAttnHeadOutByPos,
  getAttrPatchAttnHeadQByPos,
  getAttrPatchAttnHeadKByPos,
  getAttrPatchAttnHeadVByPos,
  getAttrPatchAttnHeadPatternByPos,
  getAttrPatchAttnHeadPatternDestSrcPos,
  getAttrPatchAttnHeadOutAllPos,
  getAttrPatchAttnHeadQAllPos,
  getAttrPatchAttnHeadKAllPos,
  getAttrPatchAttnHeadVAllPos,
  getAttrPatchAttnHeadPatternAllPos,
} = fns;

/** One gradient cache for several activations at every layer (the `Every` functions share it). */
const sharedCache =
  (acts: string[]) =>
  (
    model: HookedTransformer,
    corrupted: TokensInput,
    metric: GradMetric,
    opts: AttributionOptions,
  ): AttributionOptions =>
    opts.corruptedGradCache
      ? opts
      : {
          ...opts,
          corruptedGradCache: attributionGradCache(
            model,
            corrupted,
            metric,
            acts.flatMap((a) => Array.from({ length: model.cfg.n_layers }, (_, l) => getActName(a, l))),
            opts,
          ),
        };
const HEAD_ACTS = ['z', 'q', 'k', 'v', 'pattern'];

/** [5, L, H]: output, q, k, v, pattern, each for all positions (one backward). */
export const getAttrPatchAttnHeadAllPosEvery: AttributionPatch = (m, c, cc, f, o = {}) => {
  const opts = sharedCache(HEAD_ACTS)(m, c, f, o);
  return stack(
    [
      getAttrPatchAttnHeadOutAllPos,
      getAttrPatchAttnHeadQAllPos,
      getAttrPatchAttnHeadKAllPos,
      getAttrPatchAttnHeadVAllPos,
      getAttrPatchAttnHeadPatternAllPos,
    ].map((fn) => fn(m, c, cc, f, opts)),
  );
};

/** [5, L, P, H]: as above by position; the pattern result is moved from [L, H, P] to [L, P, H]. */
export const getAttrPatchAttnHeadByPosEvery: AttributionPatch = (m, c, cc, f, o = {}) => {
  const opts = sharedCache(HEAD_ACTS)(m, c, f, o);
  return stack([
    getAttrPatchAttnHeadOutByPos(m, c, cc, f, opts),
    getAttrPatchAttnHeadQByPos(m, c, cc, f, opts),
    getAttrPatchAttnHeadKByPos(m, c, cc, f, opts),
    getAttrPatchAttnHeadVByPos(m, c, cc, f, opts),
    getAttrPatchAttnHeadPatternByPos(m, c, cc, f, opts).permute(0, 2, 1).contiguous(),
  ]);
};

/** [3, L, P]: resid_pre, attn_out, mlp_out by layer and position (one backward). */
export const getAttrPatchBlockEvery: AttributionPatch = (m, c, cc, f, o = {}) => {
  const opts = sharedCache(['resid_pre', 'attn_out', 'mlp_out'])(m, c, f, o);
  return stack([getAttrPatchResidPre, getAttrPatchAttnOut, getAttrPatchMlpOut].map((fn) => fn(m, c, cc, f, opts)));
};
