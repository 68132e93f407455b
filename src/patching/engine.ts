/**
 * The serial activation-patching engine (TL's generic_activation_patch) and the pieces it shares
 * with the worker-pool sweep in parallel/sweep.ts: index enumeration, batching, the clean-shape check.
 */
import { TypelensError } from '../errors.js';
import { getActName } from '../hooks/names.js';
import type { ActivationCache } from '../hooks/cache.js';
import type { HookedTransformer, TokensInput } from '../model/hooked-transformer.js';
import { cat, sameShape, Tensor } from '../tensor/index.js';
import type { PatchSetter } from './setters.js';
import { getAttentionMask, maskData, type PaddingSide } from '../model/padding.js';

/** Turns a forward's logits [B, P, V] into one number (e.g. a normalized logit difference). */
export type PatchingMetric = (logits: Tensor) => number;
export type IndexAxis = 'layer' | 'pos' | 'src_pos' | 'dest_pos' | 'head' | 'head_index';

export interface PatchOptions {
  /** Axes of the sweep; the output has one dimension per axis, the last axis varying fastest. */
  indexAxisNames?: IndexAxis[];
  /** Explicit index tuples (first element: layer); the output is then flat, one value per row. */
  indexDf?: number[][];
  /** Called after each patched forward. */
  onProgress?: (done: number, total: number) => void;
  /**
   * Re-run only the blocks from the patched layer on, starting from the corrupted residual
   * stream cached once. The blocks before the patch see identical inputs, so the numbers are
   * the same as a full forward (bit for bit); it is used only when no other hook is attached.
   */
  skipUnchangedLayers?: boolean;
  /** The metric reads only logits[:, -1]: unembed just that position (logits [B, 1, V]). */
  lastPositionLogits?: boolean;
  /**
   * Patched forwards run together as one batch (copies of the corrupted input, each copy patched
   * at its own index): the weights are read once per batch instead of once per patch. Rows never
   * mix, so the numbers are the same as one forward per patch, bit for bit. Default: enough
   * patches to make about 128 rows (batch x positions).
   */
  patchBatch?: number;
  /** Mask of the corrupted tokens [B, P] (TL's attention_mask): every patched forward uses it. */
  attentionMask?: Tensor | number[][];
  /** How the corrupted tokens are padded; 'left' builds the mask from the pad ids when none is given. */
  paddingSide?: PaddingSide;
}

/** The mask repeated k times along the batch axis (one copy per patched index, as the input). */
export const repeatMask = (mask: Tensor | undefined, k: number): Tensor | undefined =>
  mask && k > 1
    ? cat(
        Array.from({ length: k }, () => mask),
        0,
      )
    : mask;

/** Consecutive sweep entries sharing one hook, in chunks of at most k. */
export function groupsOf(indices: number[][], name: (idx: number[]) => string, k: number): number[][] {
  const groups: number[][] = [];
  indices.forEach((idx, i) => {
    const g = groups[groups.length - 1];
    if (g && g.length < k && name(indices[g[0]]) === name(idx)) g.push(i);
    else groups.push([i]);
  });
  return groups;
}

/** Patches per batched forward: opts.patchBatch, or enough to make about 128 rows. */
export const batchSizeFor = (opts: PatchOptions, rows: number): number => {
  const k = opts.patchBatch ?? Math.max(1, Math.floor(128 / rows));
  if (!Number.isInteger(k) || k < 1)
    throw new TypelensError(`patchBatch must be a positive integer, got ${opts.patchBatch}`, 'EINPUT');
  return k;
};
/** The j-th of k equal batch chunks of x. */
export const chunk = (x: Tensor, j: number, k: number): Tensor => {
  const b = x.shape[0] / k;
  return k === 1 ? x : x.slice(0, j * b, (j + 1) * b);
};

export function checkClean(name: string, clean: Tensor, act: { shape: readonly number[] }): void {
  // TL's setters assign clean[..] into corrupted[..] with torch broadcasting: a clean run of
  // batch 1 patches every row of a corrupted batch (one clean prompt against many corruptions).
  const broadcasts = clean.shape[0] === 1 && sameShape(act.shape.slice(1), clean.shape.slice(1));
  if (!sameShape(act.shape, clean.shape) && !broadcasts) {
    throw new TypelensError(
      `clean activation ${name} is [${clean.shape.join(', ')}] but the corrupted run's is [${act.shape.join(', ')}]: ` +
        'clean and corrupted inputs must have the same length, and the same batch size or a clean batch of 1',
      'ESHAPE',
    );
  }
}

/** The clean activation at the corrupted one's shape (a batch of 1 broadcast over the batch). */
export const broadcastClean = (clean: Tensor, act: Tensor): Tensor =>
  clean.shape[0] === act.shape[0] ? clean : clean.expand(act.shape as number[]);

/**
 * Apply a setter to `part` (a view into the hooked activation). TL's generic_activation_patch
 * uses what the setter returns (`patched = patch_setter(corrupted, index, clean); return patched`):
 * a setter that builds a new tensor instead of writing in place is honoured by copying its result in.
 */
export function applySetter(
  setter: PatchSetter,
  part: Tensor,
  idx: readonly number[],
  clean: Tensor,
  name: string,
): void {
  checkClean(name, clean, part);
  const r = setter(part, idx, broadcastClean(clean, part));
  if (r == null || r === part) return;
  if (!sameShape(r.shape, part.shape))
    throw new TypelensError(
      `patch setter on ${name} returned shape [${r.shape.join(', ')}], expected [${part.shape.join(', ')}]`,
      'ESHAPE',
    );
  part.assign(r);
}

/**
 * Several patched forwards as one: the input repeated once per index along the batch axis, and
 * the hook that patches copy j at indices[j] (the serial engine and pool workers both use it).
 */
export function batchedPatch(
  input: Tensor,
  setter: PatchSetter,
  indices: readonly number[][],
  clean: Tensor,
  name: string,
): { input: Tensor; hook: (act: Tensor) => Tensor } {
  const k = indices.length;
  return {
    input:
      k === 1
        ? input
        : cat(
            Array.from({ length: k }, () => input),
            0,
          ),
    hook: (act) => {
      indices.forEach((idx, j) => applySetter(setter, chunk(act, j, k), idx, clean, name));
      return act;
    },
  };
}

function axisRange(model: HookedTransformer, axis: IndexAxis, seqLen: number): number {
  switch (axis) {
    case 'layer':
      return model.cfg.n_layers;
    case 'pos':
    case 'src_pos':
    case 'dest_pos':
      return seqLen;
    case 'head':
    case 'head_index':
      return model.cfg.n_heads;
    default:
      throw new TypelensError(
        `unknown index axis "${axis as string}" (use layer, pos, src_pos, dest_pos, head or head_index)`,
        'EINPUT',
      );
  }
}

/** Cartesian product of [0, n) ranges, last axis fastest (itertools.product order). */
export function product(ranges: number[]): number[][] {
  let out: number[][] = [[]];
  for (const n of ranges) out = out.flatMap((prefix) => Array.from({ length: n }, (_, i) => [...prefix, i]));
  return out;
}

/** The corrupted tokens as [B, P], every index tuple of the sweep, and the output's shape. */
export function sweepIndices(
  model: HookedTransformer,
  corruptedTokens: TokensInput,
  opts: PatchOptions,
): { toks: Tensor; indices: number[][]; outShape: number[]; mask?: Tensor } {
  const isText =
    typeof corruptedTokens === 'string' || (Array.isArray(corruptedTokens) && typeof corruptedTokens[0] === 'string');
  const tokens =
    corruptedTokens instanceof Tensor
      ? corruptedTokens
      : isText
        ? model.toTokens(corruptedTokens as string | string[], { paddingSide: opts.paddingSide })
        : Tensor.from(corruptedTokens as number[] | number[][]);
  const toks = tokens.ndim === 1 ? tokens.unsqueeze(0) : tokens;
  // an explicit mask, or TL's from the pad ids for left padding: explicit from here on, since
  // patched forwards may start from a cached residual stream (no tokens to build it from)
  const mask =
    opts.attentionMask != null
      ? new Tensor(maskData(opts.attentionMask, toks.shape[0], toks.shape[1]), toks.shape)
      : opts.paddingSide === 'left'
        ? getAttentionMask(toks, { padTokenId: model.cfg.bos_token_id, paddingSide: 'left' })
        : undefined;
  const seqLen = toks.shape[1];
  let indices: number[][], outShape: number[];
  if (opts.indexDf) {
    indices = opts.indexDf;
    outShape = [indices.length];
  } else {
    const axes = opts.indexAxisNames;
    if (!axes?.length) throw new TypelensError('genericActivationPatch needs indexAxisNames or indexDf', 'EINPUT');
    if (axes[0] !== 'layer')
      throw new TypelensError(`the first index axis must be "layer", got "${axes[0]}"`, 'EINPUT');
    outShape = axes.map((a) => axisRange(model, a, seqLen));
    indices = product(outShape);
  }
  for (const idx of indices) {
    if (!Number.isInteger(idx[0]) || idx[0] < 0 || idx[0] >= model.cfg.n_layers)
      throw new TypelensError(`patch layer ${idx[0]} is outside [0, ${model.cfg.n_layers})`, 'EINDEX');
  }
  return { toks, indices, outShape, mask };
}

/**
 * TL's patching.generic_activation_patch: for every index, run the corrupted tokens with
 * `patchSetter` hooked on `getActName(activationName, index[0])` and record the metric.
 */
export function genericActivationPatch(
  model: HookedTransformer,
  corruptedTokens: TokensInput,
  cleanCache: ActivationCache,
  patchingMetric: PatchingMetric,
  patchSetter: PatchSetter,
  activationName: string,
  opts: PatchOptions = {},
): Tensor {
  const { toks, indices, outShape, mask } = sweepIndices(model, corruptedTokens, opts);

  // Blocks before the patched layer run on unchanged inputs: start from their cached output.
  const skip = (opts.skipUnchangedLayers ?? true) && !model.hasHooks();
  let residPre: Tensor[] | null = null;
  if (skip) {
    const names = Array.from({ length: model.cfg.n_layers }, (_, l) => getActName('resid_pre', l));
    const { cache } = model.runWithCache(toks, { namesFilter: names, attentionMask: mask });
    residPre = names.map((n) => cache.get(n));
  }

  const out = new Float32Array(indices.length);
  const hookName = (idx: number[]) => getActName(activationName, idx[0]);
  let done = 0;
  for (const g of groupsOf(indices, hookName, batchSizeFor(opts, toks.shape[0] * toks.shape[1]))) {
    const layer = indices[g[0]][0],
      name = hookName(indices[g[0]]);
    const fromLayer = residPre !== null && name.startsWith(`blocks.${layer}.`);
    const { input, hook } = batchedPatch(
      fromLayer ? residPre![layer] : toks,
      patchSetter,
      g.map((i) => indices[i]),
      cleanCache.get(name),
      name,
    );
    const logits = model.runWithHooks(input, {
      fwdHooks: [[name, hook]],
      startAtLayer: fromLayer ? layer : undefined,
      lastPositionLogits: opts.lastPositionLogits,
      attentionMask: repeatMask(mask, g.length),
    });
    g.forEach((i, j) => {
      out[i] = patchingMetric(chunk(logits, j, g.length));
      opts.onProgress?.(++done, indices.length);
    });
  }
  return new Tensor(out, outShape);
}
