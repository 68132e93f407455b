/**
 * typelens's public API, listed by name: what a user of the library needs, with every type that
 * appears in these signatures. Kernels' classes, arenas, replica descriptors and formatting helpers
 * are internal. The Exploratory Analysis Demo and the HTML report are the `typelens/demo` subpath
 * (src/demo/index.ts).
 */
export { TypelensError } from './errors.js';

// tensors and the TL-facing ops on them
export { Tensor, numel } from './tensor/index.js';
export type { Shape, NestedArray, DType, Storage } from './tensor/index.js';
export {
  add,
  sub,
  mul,
  div,
  map,
  sum,
  max,
  min,
  mean,
  argmax,
  topk,
  softmax,
  logSoftmax,
  layerNorm,
  geluNew,
  maskCausal,
  embedding,
  indexSelect,
  cat,
  stack,
  matmul,
  einsum,
  svd,
  broadcastShapes,
} from './tensor/index.js';

// backends: chosen by name in LoadOptions.backend; the Backend interface for custom ones
export { getBackend } from './kernels/index.js';
export type {
  Backend,
  BackendName,
  PackedWeight,
  SharedMemory,
  LayerOps,
  DeviceParams,
  AttnOptions,
} from './kernels/index.js';

// the model
export { HookedTransformer } from './model/hooked-transformer.js';
export type {
  LoadOptions,
  RunOptions,
  CacheOptions,
  TokensInput,
  FwdHook,
  ModelOptions,
} from './model/hooked-transformer.js';
export { HookedTransformerKeyValueCache, HookedTransformerKeyValueCacheEntry } from './model/hooked-transformer.js';
export type { GenerateOptions, SampleOptions, PaddingSide, ForwardReturnType } from './model/hooked-transformer.js';
export type { ModelConfig, ActFn } from './model/config.js';
export type { Weights, BlockWeights } from './model/weights.js';
export { DEFAULT_PROCESSING, NO_PROCESSING } from './model/process.js';
export type { ProcessingOptions } from './model/process.js';
export {
  readSafetensors,
  parseSafetensors,
  writeSafetensors,
  serializeSafetensors,
  tensorF32,
  tensorF64,
} from './model/safetensors.js';
export type { StFile, StEntry, StDType, StTensorOut } from './model/safetensors.js';
export { makeWeights, randomGPT2, hfConfig, PRESETS } from './model/make-weights.js';
export type { GPT2Shape } from './model/make-weights.js';
export { fetchWeights, CHECKPOINTS } from './model/fetch.js';
export type { PinnedCheckpoint, PinnedFile, FetchOptions } from './model/fetch.js';

// hooks and the activation cache
export { HookPoint } from './hooks/hookpoint.js';
export type { HookFn, HookHandle, NameFilter } from './hooks/hookpoint.js';
export { ActivationCache } from './hooks/cache.js';
export type { CacheKey, Labelled, LnOpts } from './hooks/cache.js';
export type { CacheModel } from './hooks/cache.js';
export type { CacheSettings } from './hooks/registry.js';
export { getActName } from './hooks/names.js';
export { Slice } from './hooks/slice.js';
export type { SliceInput } from './hooks/slice.js';

// analysis (TL's utils, the demo's logit-difference metric and attributions, head detection)
import { getActName } from './hooks/names.js';
import { tlUtils } from './analysis/utils.js';
import { compositionScores } from './analysis/composition.js';
/** TL's transformer_lens.utils in camelCase (testPrompt, getActName, getAttentionMask, lmCrossEntropyLoss, sampleLogits, compositionScores, …). */
export const utils = { ...tlUtils, getActName, compositionScores };
export { logitsToAveLogitDiff, logitDiffDirections, residualStackToLogitDiff } from './analysis/logit-diff.js';
export { headDetectorScores, diagonalScore } from './analysis/heads.js';
export type { HeadScores } from './analysis/heads.js';

// activation patching, serial and on worker threads
export { ForwardPool } from './parallel/pool.js';
import {
  setters,
  genericActivationPatch,
  serial,
  getActPatchAttnHeadAllPosEvery,
  getActPatchAttnHeadByPosEvery,
  getActPatchBlockEvery,
  attribution,
  genericAttributionPatch,
  attributionGradCache,
  getAttrPatchAttnHeadAllPosEvery,
  getAttrPatchAttnHeadByPosEvery,
  getAttrPatchBlockEvery,
  lastPositionMetric,
  logitDiffMetric,
  normalizedLogitDiffMetric,
} from './patching/index.js';
import { genericActivationPatchParallel, parallel } from './parallel/sweep.js';
/**
 * TL's transformer_lens.patching in camelCase, and `patching.parallel`: the same ready-made
 * functions on a ForwardPool. Joined here, at the root of the import graph, so that patching/
 * never imports parallel/ (the pool runs patching's setters, not the other way round).
 */
export const patching = {
  setters,
  genericActivationPatch,
  genericActivationPatchParallel,
  ...serial,
  getActPatchAttnHeadAllPosEvery,
  getActPatchAttnHeadByPosEvery,
  getActPatchBlockEvery,
  parallel,
  ...attribution,
  genericAttributionPatch,
  attributionGradCache,
  getAttrPatchAttnHeadAllPosEvery,
  getAttrPatchAttnHeadByPosEvery,
  getAttrPatchBlockEvery,
  lastPositionMetric,
  logitDiffMetric,
  normalizedLogitDiffMetric,
};
export type { AttributionOptions, AttributionPatch, AttributionName } from './patching/index.js';
export type {
  PatchSetter,
  SetterName,
  PatchingMetric,
  PatchOptions,
  IndexAxis,
  ReadyMade,
  ReadyMadeName,
  ReadyMadeOptions,
} from './patching/index.js';
export type { ReadyMadeParallel } from './parallel/sweep.js';

// weight space (TL's FactoredMatrix, composition scores, SVDInterpreter)
export { FactoredMatrix } from './tensor/factored-matrix.js';
export type { FMIndex, ComplexTensor } from './tensor/factored-matrix.js';
export { compositionScores, allCompositionScores, qkCircuit, ovCircuit } from './analysis/composition.js';
export type { AttnWeights } from './analysis/composition.js';
export { SVDInterpreter } from './analysis/svd-interpreter.js';
export type {
  SingularVectorType,
  SingularVectorOptions,
  SingularVectorTokens,
  SVDModel,
} from './analysis/svd-interpreter.js';

// checking a checkpoint's linear-decomposition invariants (typelens verify)
export {
  verify,
  registerCheck,
  unregisterCheck,
  listChecks,
  loaderFromDir,
  loaderFromHF,
  formatVerifyTable,
  formatWhere,
  unitRoundoff,
  hasGradients,
  FAULTS,
  PROCESSING_STEPS,
  GRADIENT_CHECK_IDS,
  PROBE_DELTA,
  DEFAULT_K,
} from './analysis/verify.js';
export type {
  VerifyOptions,
  VerifyReport,
  VerifyCheck,
  VerifyContext,
  CheckResult,
  CheckOutcome,
  CheckStatus,
  Where,
  Capability,
  FaultName,
} from './analysis/verify.js';

// editing weights and training (TL's state dict, process_weights_, transformer_lens.train)
export {
  train,
  makeOptimizer,
  clipGradNorm,
  warmupFactor,
  decayFactor,
  reverseTask,
  copyTask,
  repeatedTokens,
  take,
  saveCheckpoint,
  toHFTensors,
  hfConfigOf,
  ioiMixture,
  ioiEvalDataset,
  positionsLoss,
  scoredRows,
} from './train/index.js';
export type {
  TrainConfig,
  TrainResult,
  StepInfo,
  StepTiming,
  Dataset,
  Optimizer,
  OptimizerName,
  OptimizerOptions,
  TokenGenerator,
} from './train/index.js';
export { weightStorage, fingerprint } from './model/params.js';
export type { StateDict } from './model/editing.js';
export type { InitOptions } from './model/init.js';

// gradients (a tape over plain Tensors; the model's own forward records inside withGrad)
export { withGrad, grad, noGrad, watch, hookGrad, currentTape, Tape, Gradients, ag } from './autograd/index.js';
export type { GradHook } from './autograd/index.js';
export { logitDiffMetric, gpt2Grad, namedParameters } from './model/gpt2-grad.js';
export type { Gpt2GradResult } from './model/gpt2-grad.js';
export type { BwdHook, GradMetric, BackwardOptions, BackwardResult } from './model/hooked-transformer.js';
export type { HookDir } from './hooks/hookpoint.js';

// head detection and evals (TL's head_detector and evals), lazily read safetensors (saved caches)
export {
  headDetector,
  detectHead,
  getPreviousTokenHeadDetectionPattern,
  getDuplicateTokenHeadDetectionPattern,
  getInductionHeadDetectionPattern,
  getSupportedHeads,
  computeHeadAttentionSimilarityScore,
  HEAD_NAMES,
} from './analysis/head-detector.js';
export type { HeadName, ErrorMeasure, LayerHeads, DetectHeadOptions } from './analysis/head-detector.js';
export {
  evals,
  sanityCheck,
  inductionLoss,
  evaluate,
  evaluateOnDataset,
  ioiEval,
  IOIDataset,
  streamToRows,
} from './analysis/evals.js';
export type { EvalModel, IOISample, IOIItem, IOIDatasetOptions, IOIEvalResult } from './analysis/evals.js';
export { openSafetensors } from './model/safetensors.js';

// checkpoints from bytes, Blobs, URLs and shards (the platform's byte sources; Node and browsers)
export {
  memorySource,
  blobSource,
  urlSource,
  fetchBytes,
  readIntoMemory,
  asAsyncSource,
  sourceText,
} from './platform/byte-source.js';
export type { ByteSource, AsyncByteSource, ByteProgress, UrlOptions } from './platform/byte-source.js';
export { openSafetensorsSource, safetensorsHeader } from './tensor/safetensors.js';
export { openShardedSafetensors, parseShardIndex, SHARD_INDEX } from './tensor/safetensors-sharded.js';
export { dirFiles, memoryFiles, loadCheckpoint, openCheckpointTensors } from './model/load.js';
export type { CheckpointFiles, FileContents } from './model/load.js';
export { readFilesAsync, fetchCheckpointFiles } from './model/load-sources.js';
export type { AsyncFileContents, FileProgress } from './model/load-sources.js';
export { packedModelBytes, WASM32_BYTES } from './model/memory-plan.js';
export type { StLazyFile } from './model/safetensors.js';
