/**
 * Differentiable ops over plain Tensors (used as `import * as ag from '../autograd/ops.js'`).
 * Each computes its value exactly as the tensor core does (same arithmetic, so a forward with
 * gradients gives the same numbers as one without) and, when an input is tracked on the active
 * tape, records a backward closure. Gradient formulas are the textbook ones.
 *
 * This module only gathers them; each family lives in its own module:
 * elementwise (+ broadcasting), views (reductions, views, gather), softmax (+ losses),
 * layer-norm, linear (matmul, weight layouts, embedding), pack-cache, attention.
 */
export * from './elementwise.js';
export * from './views.js';
export * from './softmax.js';
export * from './layer-norm.js';
export * from './linear.js';
export { PackCache } from './pack-cache.js';
export * from './attention.js';
