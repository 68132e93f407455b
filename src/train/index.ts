export { train } from './train.js';
export type { TrainConfig, TrainResult, StepInfo, StepTiming, Dataset } from './train.js';
export { makeOptimizer, clipGradNorm, warmupFactor, decayFactor } from './optim.js';
export type { Optimizer, OptimizerName, OptimizerOptions } from './optim.js';
export { reverseTask, copyTask, repeatedTokens, take } from './data.js';
export type { TokenGenerator } from './data.js';
export { saveCheckpoint, toHFTensors, hfConfigOf } from './checkpoint.js';
export {
  ioiMixture,
  ioiEvalDataset,
  ioiTrainVocabulary,
  ioiNames,
  ioiSentences,
  fillTemplate,
  isHeldOutCombo,
  checkSingleTokens,
  IOI_NAMES,
  IOI_PLACES,
  IOI_OBJECTS,
  IOI_DRINKS,
  IOI_TRAIN_TEMPLATES,
  IOI_HELDOUT_TEMPLATES,
} from './ioi-data.js';
export type { IoiSentence, IoiMixtureOptions } from './ioi-data.js';
export { positionsLoss, scoredRows } from './loss.js';
