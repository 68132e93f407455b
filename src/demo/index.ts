/**
 * `typelens/demo`: TransformerLens's Exploratory Analysis Demo and the HTML report it fills.
 * A subpath, so that the library's main entry does not carry the demo's prompts or plotly.
 */
export { exploratoryDemo } from './demo.js';
export type { DemoOptions, DemoResult } from './demo.js';
export { ioiData, ioiPrompts, EXAMPLE_TEXT } from './data.js';
export type { IoiData, DemoVariant } from './data.js';
export { visualizeAttentionPatterns } from './render.js';
export { weightSpaceSection } from './weight-space.js';
export type { WeightSpace } from './weight-space.js';
export { Report } from '../report/html.js';
export type { FigureInfo } from '../report/html.js';
export { circuitFigures } from './circuit-figures.js';
export type { CircuitFigures } from './circuit-figures.js';
