export { train } from './train.js';
export type { TrainConfig, TrainResult, StepInfo, StepTiming, Dataset } from './train.js';
export { makeOptimizer, clipGradNorm, warmupFactor } from './optim.js';
export type { Optimizer, OptimizerName, OptimizerOptions } from './optim.js';
export { reverseTask, copyTask, repeatedTokens, take } from './data.js';
export type { TokenGenerator } from './data.js';
export { saveCheckpoint, toHFTensors, hfConfigOf } from './checkpoint.js';
