/**
 * What each section of the Exploratory Analysis Demo computes, as plain functions of the model,
 * the inputs and earlier results; render.ts prints and plots them. A section's cache may log
 * (TL's "Tried to stack head results ..."), so demo.ts runs each section's compute right before
 * its rendering, keeping the printed lines in the notebook's order.
 */
import type { ActivationCache } from '../hooks/cache.js';
import { getActName } from '../hooks/names.js';
import type { HookedTransformer } from '../model/hooked-transformer.js';
import { serial, type PatchingMetric, type ReadyMadeName } from '../patching/index.js';
import type { ForwardPool } from '../parallel/pool.js';
import { parallel } from '../parallel/sweep.js';
import { argmax, map, Tensor, topk } from '../tensor/index.js';
import { headDetectorScores, type HeadScores } from '../analysis/heads.js';
import { logitDiffDirections, logitsToAveLogitDiff, residualStackToLogitDiff } from '../analysis/logit-diff.js';
import type { IoiData } from './data.js';

type Progress = ((done: number, total: number) => void) | undefined;

/** The clean run, cached, and its logit difference per prompt and on average. */
export function logitDifference(
  model: HookedTransformer,
  data: IoiData,
  shared: boolean,
): { cache: ActivationCache; perPrompt: Tensor; original: number } {
  // shared: the pool's workers read the clean activations in place
  const { logits, cache } = model.runWithCache(data.tokens, { shared });
  return {
    cache,
    perPrompt: logitsToAveLogitDiff(logits, data.answerTokens, true),
    original: logitsToAveLogitDiff(logits, data.answerTokens),
  };
}

export interface DirectAttribution {
  answerDirs: Tensor;
  dirs: Tensor;
  finalResid: Tensor;
  calculated: number;
}

/** The final residual stream read out through the frozen final layer norm along W_U[:, correct] - W_U[:, incorrect]. */
export function directLogitAttribution(
  model: HookedTransformer,
  data: IoiData,
  cache: ActivationCache,
): DirectAttribution {
  const B = data.tokens.shape[0],
    P = data.tokens.shape[1];
  const answerDirs = model.tokensToResidualDirections(data.answerTokens);
  const dirs = logitDiffDirections(answerDirs);
  const finalResid = cache.get(['resid_post', -1]);
  const calculated = residualStackToLogitDiff(finalResid.index(1, P - 1), cache, dirs, B).item();
  return { answerDirs, dirs, finalResid, calculated };
}

/**
 * What residual_stack_to_logit_diff divides by: the classic notebook divides by the number of
 * prompts, the seed variant by residual_stack.shape[0] (the number of components), a quirk of
 * that version of the notebook kept so that its numbers match.
 */
export const componentDivisor =
  (data: IoiData) =>
  (stack: Tensor): number =>
    data.variant === 'classic' ? data.tokens.shape[0] : stack.shape[0];

export interface ComponentAttribution {
  logitLens: Tensor;
  logitLensLabels: string[];
  perLayer: Tensor;
  perLayerLabels: string[];
  perHead: Tensor;
}

/** The logit lens (accumulated residual), each layer's and each head's direct effect. */
export function componentAttribution(
  model: HookedTransformer,
  data: IoiData,
  cache: ActivationCache,
  dirs: Tensor,
): ComponentAttribution {
  const { n_layers: L, n_heads: H } = model.cfg;
  const divisor = componentDivisor(data);
  const [acc, logitLensLabels] = cache.accumulatedResid({ layer: -1, inclMid: true, posSlice: -1, returnLabels: true });
  const logitLens = residualStackToLogitDiff(acc, cache, dirs, divisor(acc));
  const [perLayerResid, perLayerLabels] = cache.decomposeResid({ layer: -1, posSlice: -1, returnLabels: true });
  const perLayer = residualStackToLogitDiff(perLayerResid, cache, dirs, divisor(perLayerResid));
  const [perHeadResid] = cache.stackHeadResults({ layer: -1, posSlice: -1, returnLabels: true });
  const perHead = residualStackToLogitDiff(perHeadResid, cache, dirs, divisor(perHeadResid)).reshape([L, H]);
  return { logitLens, logitLensLabels, perLayer, perLayerLabels, perHead };
}

/** The k heads (flat indices l * H + h) with the largest and with the most negative direct effect. */
export function topHeads(perHead: Tensor, k: number): { topPos: number[]; topNeg: number[] } {
  const flat = perHead.reshape([perHead.size]);
  return {
    topPos: topk(flat, k).indices.toArray(),
    topNeg: topk(
      map(flat, (v) => -v),
      k,
    ).indices.toArray(),
  };
}

/** The corrupted prompts' average logit difference (the 0 of the patching metric). */
export function corruptedLogitDiff(model: HookedTransformer, data: IoiData): number {
  const { logits } = model.runWithCache(data.corruptedTokens, { namesFilter: [] });
  return logitsToAveLogitDiff(logits, data.answerTokens);
}

/** 0 = the corrupted run's logit difference, 1 = the clean run's. */
export const restoredFraction =
  (data: IoiData, original: number, corrupted: number): PatchingMetric =>
  (lg) =>
    (logitsToAveLogitDiff(lg, data.answerTokens) - corrupted) / (original - corrupted);

export interface Patching {
  residPre: Tensor;
  attnOut: Tensor;
  mlpOut: Tensor;
  headZ: Tensor;
  headV: Tensor;
  headPattern: Tensor;
}

/** The notebook's activation-patching sweeps, on the worker pool when there is one (same numbers, bit for bit). */
export async function activationPatching(
  model: HookedTransformer,
  data: IoiData,
  cache: ActivationCache,
  metric: PatchingMetric,
  opts: { pool?: ForwardPool; progress?: (label: string) => Progress },
): Promise<Patching> {
  const sweep = async (label: string, name: ReadyMadeName): Promise<Tensor> => {
    const o = { onProgress: opts.progress?.(label), lastPositionLogits: true };
    return opts.pool
      ? parallel[name](opts.pool, data.corruptedTokens, cache, metric, o)
      : serial[name](model, data.corruptedTokens, cache, metric, o);
  };
  const residPre = await sweep('patching resid_pre', 'getActPatchResidPre');
  const attnOut = await sweep('patching attn_out', 'getActPatchAttnOut');
  const mlpOut = await sweep('patching mlp_out', 'getActPatchMlpOut');
  const headZ = await sweep('patching head outputs', 'getActPatchAttnHeadOutAllPos');
  const headV = await sweep('patching head values', 'getActPatchAttnHeadVAllPos');
  const headPattern = await sweep('patching head patterns', 'getActPatchAttnHeadPatternAllPos');
  return { residPre, attnOut, mlpOut, headZ, headV, headPattern };
}

/** The ten heads (or fewer) whose output patching matters most, by |effect|. */
export const topPatchedHeads = (headZ: Tensor): number[] =>
  topk(map(headZ.reshape([headZ.size]), Math.abs), Math.min(10, headZ.size)).indices.toArray();

/** The bonus section: a cache of the repeated example text and the head-detector scores on repeated random tokens. */
export function inductionHeads(
  model: HookedTransformer,
  data: IoiData,
): { exampleCache: ActivationCache; scores: HeadScores } {
  const { cache: exampleCache } = model.runWithCache(data.exampleRepeatedTokens);
  return { exampleCache, scores: headDetectorScores(model, data.repeatedRandomTokens, data.seqLen) };
}

export interface Ablation {
  head: number;
  layer: number;
  headIndex: number;
  cache: ActivationCache;
  original: number;
  postAblation: number;
  dla: number;
}

/** Zero the top direct-attribution head's z at the final position and rerun the clean prompts. */
export function ablateTopNameMover(
  model: HookedTransformer,
  data: IoiData,
  perHead: Tensor,
  original: number,
): Ablation {
  const H = model.cfg.n_heads,
    B = data.tokens.shape[0],
    P = data.tokens.shape[1];
  const head = argmax(perHead.reshape([perHead.size]), 0).item();
  const [layer, headIndex] = [Math.floor(head / H), head % H];
  // the notebook attaches the hook to the hook point directly, where it stays for the rest of
  // the session; here it is scoped to this run so that later runs are not affected
  const ablate = (z: Tensor) => {
    z.slice(1, P - 1, P)
      .slice(2, headIndex, headIndex + 1)
      .assign(Tensor.zeros([B, 1, 1, model.cfg.d_head]));
    return z;
  };
  const ablated = model.hooks([[getActName('z', layer), ablate]], () => model.runWithCache(data.tokens));
  return {
    head,
    layer,
    headIndex,
    cache: ablated.cache,
    original,
    postAblation: logitsToAveLogitDiff(ablated.logits, data.answerTokens),
    dla: perHead.get(layer, headIndex),
  };
}

/** Each head's direct effect after the ablation, and how the final layer norm's scale moved. */
export function ablatedAttribution(
  model: HookedTransformer,
  data: IoiData,
  clean: ActivationCache,
  ablated: ActivationCache,
  dirs: Tensor,
): { perHeadAblated: Tensor; lnScaleRatio: number; scaleOriginal: Float32Array; scaleAblated: Float32Array } {
  const { n_layers: L, n_heads: H } = model.cfg;
  const B = data.tokens.shape[0],
    P = data.tokens.shape[1];
  const [ablHeadResid] = ablated.stackHeadResults({ layer: -1, posSlice: -1, returnLabels: true });
  const perHeadAblated = residualStackToLogitDiff(
    ablHeadResid,
    ablated,
    dirs,
    componentDivisor(data)(ablHeadResid),
  ).reshape([L, H]);
  const scaleOriginal = lastScale(clean, P),
    scaleAblated = lastScale(ablated, P);
  let ratio = 0;
  for (let b = 0; b < B; b++) ratio += scaleOriginal[b] / scaleAblated[b];
  ratio /= B;
  return { perHeadAblated, lnScaleRatio: ratio, scaleOriginal, scaleAblated };
}

/** ln_final.hook_scale at the final position, one value per prompt. */
function lastScale(cache: ActivationCache, P: number): Float32Array {
  const s = cache.get('ln_final.hook_scale'); // [B, P, 1]
  return s
    .index(1, P - 1)
    .reshape([s.shape[0]])
    .f32();
}
