/**
 * TL's ready-made patching functions (transformer_lens.patching: get_act_patch_resid_pre, ...), one
 * table row each: which setter, which activation, which index axes. The serial functions are built
 * here; parallel/sweep.ts builds the worker-pool ones from the same table.
 */
import type { ActivationCache } from '../hooks/cache.js';
import type { HookedTransformer, TokensInput } from '../model/hooked-transformer.js';
import { stack, Tensor } from '../tensor/index.js';
import { genericActivationPatch, type IndexAxis, type PatchingMetric, type PatchOptions } from './engine.js';
import { setters, type SetterName } from './setters.js';

export type ReadyMadeOptions = Pick<
  PatchOptions,
  | 'onProgress'
  | 'skipUnchangedLayers'
  | 'lastPositionLogits'
  | 'skipNoopPatches'
  | 'patchBatch'
  | 'attentionMask'
  | 'paddingSide'
>;
export type ReadyMade = (
  model: HookedTransformer,
  corruptedTokens: TokensInput,
  cleanCache: ActivationCache,
  metric: PatchingMetric,
  opts?: ReadyMadeOptions,
) => Tensor;

/** Setter, activation and index axes of each ready-made function (TL's names in camelCase). */
export const READY_MADE = {
  getActPatchResidPre: ['layerPos', 'resid_pre', ['layer', 'pos']],
  getActPatchResidMid: ['layerPos', 'resid_mid', ['layer', 'pos']],
  getActPatchAttnOut: ['layerPos', 'attn_out', ['layer', 'pos']],
  getActPatchMlpOut: ['layerPos', 'mlp_out', ['layer', 'pos']],
  getActPatchAttnHeadOutByPos: ['layerPosHeadVector', 'z', ['layer', 'pos', 'head']],
  getActPatchAttnHeadQByPos: ['layerPosHeadVector', 'q', ['layer', 'pos', 'head']],
  getActPatchAttnHeadKByPos: ['layerPosHeadVector', 'k', ['layer', 'pos', 'head']],
  getActPatchAttnHeadVByPos: ['layerPosHeadVector', 'v', ['layer', 'pos', 'head']],
  /** Output [L, H, P]: TL's axis order for this one is layer, head, dest. */
  getActPatchAttnHeadPatternByPos: ['layerHeadPosPattern', 'pattern', ['layer', 'head_index', 'dest_pos']],
  getActPatchAttnHeadPatternDestSrcPos: [
    'layerHeadDestSrcPosPattern',
    'pattern',
    ['layer', 'head_index', 'dest_pos', 'src_pos'],
  ],
  getActPatchAttnHeadOutAllPos: ['layerHeadVector', 'z', ['layer', 'head']],
  getActPatchAttnHeadQAllPos: ['layerHeadVector', 'q', ['layer', 'head']],
  getActPatchAttnHeadKAllPos: ['layerHeadVector', 'k', ['layer', 'head']],
  getActPatchAttnHeadVAllPos: ['layerHeadVector', 'v', ['layer', 'head']],
  getActPatchAttnHeadPatternAllPos: ['layerHeadPattern', 'pattern', ['layer', 'head_index']],
} satisfies Record<string, [SetterName, string, IndexAxis[]]>;
export type ReadyMadeName = keyof typeof READY_MADE;

/** One function per table row, made by `make` from the row. */
export const buildReadyMade = <F>(
  make: (setter: SetterName, act: string, axes: IndexAxis[]) => F,
): Record<ReadyMadeName, F> =>
  Object.fromEntries(
    Object.entries(READY_MADE).map(([name, [setter, act, axes]]) => [name, make(setter, act, axes)]),
  ) as Record<ReadyMadeName, F>;

/**
 * The ready-made functions, TL's names in camelCase. By default each takes every exact shortcut
 * the engine has: patched forwards start at the patched layer (skipUnchangedLayers), patches that
 * write what is already there cost no forward (skipNoopPatches), patches run ~128 rows at a time
 * (patchBatch), and only the last position is unembedded when the metric declares it reads only
 * that one (lastPositionMetric). Each can be turned off by its option; the numbers are the same.
 * On more than one thread the matmuls use the backend's helper threads; `patching.parallel` runs
 * the same sweeps on a worker pool (async).
 */
export const serial: Record<ReadyMadeName, ReadyMade> = buildReadyMade(
  (setter, act, axes) =>
    (model, corrupted, clean, metric, opts = {}) =>
      genericActivationPatch(model, corrupted, clean, metric, setters[setter], act, { ...opts, indexAxisNames: axes }),
);

export const {
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
} = serial;

/** [5, L, H]: output, q, k, v, pattern, each patched for all positions. */
export const getActPatchAttnHeadAllPosEvery: ReadyMade = (m, c, cc, f, o) =>
  stack(
    [
      getActPatchAttnHeadOutAllPos,
      getActPatchAttnHeadQAllPos,
      getActPatchAttnHeadKAllPos,
      getActPatchAttnHeadVAllPos,
      getActPatchAttnHeadPatternAllPos,
    ].map((fn) => fn(m, c, cc, f, o)),
  );

/** [5, L, P, H]: as above by position; the pattern result is moved from [L, H, P] to [L, P, H]. */
export const getActPatchAttnHeadByPosEvery: ReadyMade = (m, c, cc, f, o) =>
  stack([
    getActPatchAttnHeadOutByPos(m, c, cc, f, o),
    getActPatchAttnHeadQByPos(m, c, cc, f, o),
    getActPatchAttnHeadKByPos(m, c, cc, f, o),
    getActPatchAttnHeadVByPos(m, c, cc, f, o),
    getActPatchAttnHeadPatternByPos(m, c, cc, f, o).permute(0, 2, 1).contiguous(),
  ]);

/** [3, L, P]: resid_pre, attn_out, mlp_out by layer and position. */
export const getActPatchBlockEvery: ReadyMade = (m, c, cc, f, o) =>
  stack([getActPatchResidPre, getActPatchAttnOut, getActPatchMlpOut].map((fn) => fn(m, c, cc, f, o)));
