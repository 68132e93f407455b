/**
 * `verify`: check, on one model and one input, the floating-point invariants that mechanistic
 * interpretability relies on (issue 18): weight processing preserves the outputs, the cache's
 * decompositions sum to what they decompose, direct logit attributions sum to the logit
 * difference, and hooks that return their input change nothing.
 *
 * Every check compares two computations of the same quantity and reports the largest absolute
 * and relative error, a tolerance derived from the precision and the magnitudes involved, and
 * pass/fail; a failure names where (layer, head or neuron, batch, position, component). The
 * checks live in a registry (`registerCheck`), so that later ones — gradients against finite
 * differences, attribution patching on linear metrics — plug in without touching this file's
 * callers. See docs/verify.md for the tolerance derivations.
 *
 * Tolerances (derivation in docs/verify.md):
 * - Same-model checks (decompositions, DLA): both sides evaluate the same sum of products from
 *   the same cached activations and stored weights; they differ only by f32 rounding, so
 *   tol_e = k · u32 · √n · Σ_i |t_i,e| per compared scalar e, the probabilistic bound of Higham &
 *   Mary (SIAM J. Sci. Comput. 41(5), 2019) with λ = k for any order of summation of n terms t_i.
 *   Activations are f32 in every storage dtype, so u = u32 = 2^-24 there whatever `dtype` is.
 * - Hook checks: exact (tolerance 0): an identity hook must not change a single bit.
 * - Processing checks: the unprocessed and processed models are two evaluations whose weights
 *   were rounded separately to the storage dtype and whose arithmetic rounds differently.
 *   Backward error analysis turns both into relative weight perturbations of size
 *   ε = u(dtype) + √K · u32 (K = longest inner product), and a statistical condition estimate
 *   (Kenney & Laub, SIAM J. Sci. Comput. 15(1), 1994) measures how much this model's centred
 *   logits move on this input under random relative weight perturbations of size δ:
 *   tol = k · √2 · (ε / δ) · max|Δlogits_probe|. Ill-conditioned checkpoints (huge weight
 *   scales, near-constant residual rows, saturated attention) get a larger tolerance because
 *   they really are more sensitive, and their errors are reported as they are.
 */

import './verify/checks.js';

export type {
  CheckStatus,
  Where,
  CheckResult,
  Capability,
  VerifyContext,
  CheckOutcome,
  VerifyCheck,
  VerifyOptions,
  VerifyReport,
} from './verify/types.js';
export { unitRoundoff, PROBE_DELTA, DEFAULT_K } from './verify/tolerance.js';
export { formatWhere } from './verify/where.js';
export { registerCheck, unregisterCheck, listChecks } from './verify/registry.js';
export { PROCESSING_STEPS } from './verify/checks-processing.js';
export type { ProcessingStep } from './verify/checks-processing.js';
export { GRADIENT_CHECK_IDS, hasGradients, FD_MAX_HOOK_POINTS, FD_MAX_PARAMS } from './verify/gradients.js';
export { loaderFromDir, loaderFromHF, verify } from './verify/run.js';
export { FAULTS } from './verify/faults.js';
export type { FaultName } from './verify/faults.js';
export { formatVerifyTable } from './verify/format.js';
