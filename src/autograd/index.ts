export { Tape, Gradients, withGrad, grad, noGrad, watch, hookGrad, currentTape, tapeFor } from './tape.js';
export type { GradHook, BackwardFn, Accumulate } from './tape.js';
export * as ag from './ops.js';
export { PackCache, plainWeight, headsInWeight, headsOutWeight, reduceToShape } from './ops.js';
export type { MatWeight } from './ops.js';
