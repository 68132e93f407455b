/**
 * Activation patching, TL's transformer_lens.patching in camelCase: setters, the serial engine and
 * the ready-made functions. The worker-pool versions live in parallel/sweep.ts (patching imports
 * nothing from parallel/; the top-level index joins both into one `patching` namespace).
 */
export { setters, type PatchSetter, type SetterName } from './setters.js';
export {
  genericActivationPatch,
  lastPositionMetric,
  product,
  type IndexAxis,
  type PatchingMetric,
  type PatchOptions,
} from './engine.js';
export { logitDiffMetric, normalizedLogitDiffMetric } from './metrics.js';
// for pool workers (parallel/worker.ts), which run the same batched patch as the serial engine
export { batchedPatch, repeatMask } from './engine.js';
export {
  serial,
  type ReadyMade,
  type ReadyMadeName,
  type ReadyMadeOptions,
  getActPatchResidPre,
  getActPatchResidMid,
  getActPatchAttnOut,
  getActPatchMlpOut,
  getActPatchAttnHeadOutByPos,
  getActPatchAttnHeadQByPos,
  getActPatchAttnHeadKByPos,
  getActPatchAttnHeadVByPos,
  getActPatchAttnHeadPatternByPos,
  getActPatchAttnHeadPatternDestSrcPos,
  getActPatchAttnHeadOutAllPos,
  getActPatchAttnHeadQAllPos,
  getActPatchAttnHeadKAllPos,
  getActPatchAttnHeadVAllPos,
  getActPatchAttnHeadPatternAllPos,
  getActPatchAttnHeadAllPosEvery,
  getActPatchAttnHeadByPosEvery,
  getActPatchBlockEvery,
} from './ready-made.js';
// attribution patching: the same sweeps to first order, from one corrupted forward + backward
export {
  attribution,
  attributionGradCache,
  attributionReduce,
  genericAttributionPatch,
  type AttributionOptions,
  type AttributionPatch,
  type AttributionName,
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
  getAttrPatchAttnHeadAllPosEvery,
  getAttrPatchAttnHeadByPosEvery,
  getAttrPatchBlockEvery,
} from './attribution.js';
