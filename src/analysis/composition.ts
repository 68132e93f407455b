// The weight-space circuits live in model/circuits.ts, where HookedTransformer's QK / OV /
// allCompositionScores getters can reach them (the model may not import analysis/); this is
// their public home for users (TL's utils.composition_scores and friends).
export { allCompositionScores, compositionScores, ovCircuit, qkCircuit, type AttnWeights } from '../model/circuits.js';
