import { TypelensError } from '../errors.js';
import { getActName } from '../hooks/names.js';
import type { ActivationCache } from '../hooks/cache.js';
import type { HookedTransformer, TokensInput } from '../model/hooked-transformer.js';
import { cat, stack, Tensor } from '../tensor/index.js';
import type { ForwardPool } from '../parallel/pool.js';
import { SetterName, toArr } from '../parallel/protocol.js';

/** Turns a forward's logits [B, P, V] into one number (e.g. a normalized logit difference). */
export type PatchingMetric = (logits: Tensor) => number;
/** Writes the clean activation into the corrupted one at `index` (in place) and returns it. */
export type PatchSetter = (act: Tensor, index: readonly number[], clean: Tensor) => Tensor;
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
}

/** Consecutive sweep entries sharing one hook, in chunks of at most k. */
function groupsOf(indices: number[][], name: (idx: number[]) => string, k: number): number[][] {
  const groups: number[][] = [];
  indices.forEach((idx, i) => {
    const g = groups[groups.length - 1];
    if (g && g.length < k && name(indices[g[0]]) === name(idx)) g.push(i); else groups.push([i]);
  });
  return groups;
}

const batchSizeFor = (opts: PatchOptions, rows: number) => {
  const k = opts.patchBatch ?? Math.max(1, Math.floor(128 / rows));
  if (!Number.isInteger(k) || k < 1) throw new TypelensError(`patchBatch must be a positive integer, got ${opts.patchBatch}`, 'EINPUT');
  return k;
};
/** The j-th of k equal batch chunks of x. */
const chunk = (x: Tensor, j: number, k: number): Tensor => { const b = x.shape[0] / k; return k === 1 ? x : x.slice(0, j * b, (j + 1) * b); };

/**
 * Several patched forwards as one: the input repeated once per index along the batch axis, and
 * the hook that patches copy j at indices[j] (the serial engine and pool workers both use it).
 */
export function batchedPatch(input: Tensor, setter: PatchSetter, indices: readonly number[][], clean: Tensor, name: string): { input: Tensor; hook: (act: Tensor) => Tensor } {
  const k = indices.length;
  return {
    input: k === 1 ? input : cat(Array.from({ length: k }, () => input), 0),
    hook: (act) => {
      indices.forEach((idx, j) => { const part = chunk(act, j, k); checkClean(name, clean, part); setter(part, idx, clean); });
      return act;
    },
  };
}

const slot = (t: Tensor, axis: number, i: number): Tensor => t.slice(axis, i, i + 1);

function checkIndex(i: number, n: number, what: string, act: Tensor): void {
  if (!Number.isInteger(i) || i < 0 || i >= n) throw new TypelensError(`patch index ${what} = ${i} is outside [0, ${n}) for an activation of shape [${act.shape.join(', ')}]`, 'EINDEX');
}

/**
 * A setter writing clean into act at index[1..] along the given axes (index[0] is the layer):
 * act[sel] = clean[sel], in place, where sel fixes each listed axis at its index value.
 */
function setAt(...axes: [axis: number, what: string][]): PatchSetter {
  return (act, index, clean) => {
    let a = act, c = clean;
    axes.forEach(([axis, what], i) => {
      checkIndex(index[i + 1], act.shape[axis], what, act);
      a = slot(a, axis, index[i + 1]);
      c = slot(c, axis, index[i + 1]);
    });
    a.assign(c);
    return act;
  };
}

/** TL's patch setters (spec 9.2): in place on the corrupted activation, which is returned. */
export const setters = {
  /** (layer, pos): act[:, pos, ...] = clean[:, pos, ...] */
  layerPos: setAt([1, 'pos']),
  /** (layer, pos, head): act[:, pos, head] = clean[:, pos, head] */
  layerPosHeadVector: setAt([1, 'pos'], [2, 'head']),
  /** (layer, head): act[:, :, head] = clean[:, :, head] */
  layerHeadVector: setAt([2, 'head']),
  /** (layer, head): act[:, head, :, :] = clean[:, head, :, :] */
  layerHeadPattern: setAt([1, 'head']),
  /** (layer, head, dest): act[:, head, dest, :] = clean[:, head, dest, :] */
  layerHeadPosPattern: setAt([1, 'head'], [2, 'dest_pos']),
  /** (layer, head, dest, src): act[:, head, dest, src] = clean[:, head, dest, src] */
  layerHeadDestSrcPosPattern: setAt([1, 'head'], [2, 'dest_pos'], [3, 'src_pos']),
};

function axisRange(model: HookedTransformer, axis: IndexAxis, seqLen: number): number {
  switch (axis) {
    case 'layer': return model.cfg.n_layers;
    case 'pos': case 'src_pos': case 'dest_pos': return seqLen;
    case 'head': case 'head_index': return model.cfg.n_heads;
    default: throw new TypelensError(`unknown index axis "${axis as string}" (use layer, pos, src_pos, dest_pos, head or head_index)`, 'EINPUT');
  }
}

/** Cartesian product of [0, n) ranges, last axis fastest (itertools.product order). */
export function product(ranges: number[]): number[][] {
  let out: number[][] = [[]];
  for (const n of ranges) out = out.flatMap((prefix) => Array.from({ length: n }, (_, i) => [...prefix, i]));
  return out;
}

function sweepIndices(model: HookedTransformer, corruptedTokens: TokensInput, opts: PatchOptions): { toks: Tensor; indices: number[][]; outShape: number[] } {
  const isText = typeof corruptedTokens === 'string' || (Array.isArray(corruptedTokens) && typeof corruptedTokens[0] === 'string');
  const tokens = corruptedTokens instanceof Tensor ? corruptedTokens
    : isText ? model.toTokens(corruptedTokens as string | string[]) : Tensor.from(corruptedTokens as number[] | number[][]);
  const toks = tokens.ndim === 1 ? tokens.unsqueeze(0) : tokens;
  const seqLen = toks.shape[1];
  let indices: number[][], outShape: number[];
  if (opts.indexDf) {
    indices = opts.indexDf;
    outShape = [indices.length];
  } else {
    const axes = opts.indexAxisNames;
    if (!axes?.length) throw new TypelensError('genericActivationPatch needs indexAxisNames or indexDf', 'EINPUT');
    if (axes[0] !== 'layer') throw new TypelensError(`the first index axis must be "layer", got "${axes[0]}"`, 'EINPUT');
    outShape = axes.map((a) => axisRange(model, a, seqLen));
    indices = product(outShape);
  }
  for (const idx of indices) {
    if (!Number.isInteger(idx[0]) || idx[0] < 0 || idx[0] >= model.cfg.n_layers) throw new TypelensError(`patch layer ${idx[0]} is outside [0, ${model.cfg.n_layers})`, 'EINDEX');
  }
  return { toks, indices, outShape };
}

function checkClean(name: string, clean: Tensor, act: { shape: readonly number[] }): void {
  if (act.shape.length !== clean.ndim || act.shape.some((d, k) => d !== clean.shape[k])) {
    throw new TypelensError(`clean activation ${name} is [${clean.shape.join(', ')}] but the corrupted run's is [${act.shape.join(', ')}]: ` +
      'clean and corrupted inputs must have the same batch size and length', 'ESHAPE');
  }
}

/**
 * TL's generic_activation_patch (spec 9.1): for every index, run the corrupted tokens with
 * `patchSetter` hooked on `getActName(activationName, index[0])` and record the metric.
 */
export function genericActivationPatch(model: HookedTransformer, corruptedTokens: TokensInput, cleanCache: ActivationCache,
  patchingMetric: PatchingMetric, patchSetter: PatchSetter, activationName: string, opts: PatchOptions = {}): Tensor {
  const { toks, indices, outShape } = sweepIndices(model, corruptedTokens, opts);

  // Blocks before the patched layer run on unchanged inputs: start from their cached output.
  const skip = (opts.skipUnchangedLayers ?? true) && !model.hasHooks();
  let residPre: Tensor[] | null = null;
  if (skip) {
    const names = Array.from({ length: model.cfg.n_layers }, (_, l) => getActName('resid_pre', l));
    const { cache } = model.runWithCache(toks, { namesFilter: names });
    residPre = names.map((n) => cache.get(n));
  }

  const out = new Float32Array(indices.length);
  const hookName = (idx: number[]) => getActName(activationName, idx[0]);
  let done = 0;
  for (const g of groupsOf(indices, hookName, batchSizeFor(opts, toks.shape[0] * toks.shape[1]))) {
    const layer = indices[g[0]][0], name = hookName(indices[g[0]]);
    const fromLayer = residPre !== null && name.startsWith(`blocks.${layer}.`);
    const { input, hook } = batchedPatch(fromLayer ? residPre![layer] : toks, patchSetter, g.map((i) => indices[i]), cleanCache.get(name), name);
    const logits = model.runWithHooks(input, { fwdHooks: [[name, hook]], startAtLayer: fromLayer ? layer : undefined, lastPositionLogits: opts.lastPositionLogits });
    g.forEach((i, j) => { out[i] = patchingMetric(chunk(logits, j, g.length)); opts.onProgress?.(++done, indices.length); });
  }
  return new Tensor(out, outShape);
}

/**
 * The same sweep across a pool of worker threads: each patched forward runs in a worker, which
 * applies the patch itself (a declarative spec: hook, built-in setter, index, clean activation);
 * the metric runs here on the logits. Same numbers as genericActivationPatch, bit for bit.
 */
export async function genericActivationPatchParallel(pool: ForwardPool, corruptedTokens: TokensInput, cleanCache: ActivationCache,
  patchingMetric: PatchingMetric, setter: SetterName, activationName: string, opts: PatchOptions = {}): Promise<Tensor> {
  const model = pool.model;
  if (!(setter in setters)) throw new TypelensError(`unknown setter "${setter}" (workers run the built-in setters: ${Object.keys(setters).join(', ')})`, 'EINPUT');
  const { toks, indices, outShape } = sweepIndices(model, corruptedTokens, opts);
  const skip = opts.skipUnchangedLayers ?? true;
  const names = Array.from({ length: model.cfg.n_layers }, (_, l) => getActName('resid_pre', l));
  const residPre = skip ? model.runWithCache(toks, { namesFilter: names, shared: true }).cache : null;
  // activations in shared memory (runWithCache({ shared: true })) go to workers uncopied
  const arr = toArr;
  const out = new Float32Array(indices.length);
  let done = 0;
  const tokArr = arr(toks);
  const cleanArr = new Map<string, { data: Float32Array; shape: number[] }>();
  const residArr = new Map<number, { data: Float32Array; shape: number[] }>();
  const residOf = (l: number) => { if (!residArr.has(l)) residArr.set(l, arr(residPre!.get(names[l]))); return residArr.get(l)!; };
  const hookName = (idx: number[]) => getActName(activationName, idx[0]);
  // keep every worker busy: no bigger batches than an even share of the sweep
  const k = Math.min(batchSizeFor(opts, toks.shape[0] * toks.shape[1]), Math.max(1, Math.ceil(indices.length / pool.threads)));
  await Promise.all(groupsOf(indices, hookName, k).map(async (g) => {
    const layer = indices[g[0]][0], name = hookName(indices[g[0]]);
    if (!cleanArr.has(name)) {
      const clean = cleanCache.get(name);
      const act = name === names[layer] && residPre ? residPre.get(name) : null;
      if (act) checkClean(name, clean, act);
      cleanArr.set(name, arr(clean));
    }
    const inBlock = name.startsWith(`blocks.${layer}.`);
    const r = await pool.run({
      ...(residPre && inBlock ? { resid: residOf(layer), startAtLayer: layer } : { tokens: tokArr }),
      lastPositionLogits: opts.lastPositionLogits, patch: { hook: name, setter, indices: g.map((i) => indices[i]), clean: cleanArr.get(name)! },
    });
    const logits = new Tensor(r.logits.data, r.logits.shape);
    g.forEach((i, j) => { out[i] = patchingMetric(chunk(logits, j, g.length)); opts.onProgress?.(++done, indices.length); });
  }));
  return new Tensor(out, outShape);
}

type ReadyOpts = Pick<PatchOptions, 'onProgress' | 'skipUnchangedLayers' | 'lastPositionLogits' | 'patchBatch'>;
type Ready = (model: HookedTransformer, corruptedTokens: TokensInput, cleanCache: ActivationCache, metric: PatchingMetric, opts?: ReadyOpts) => Tensor;
type ReadyParallel = (pool: ForwardPool, corruptedTokens: TokensInput, cleanCache: ActivationCache, metric: PatchingMetric, opts?: ReadyOpts) => Promise<Tensor>;

/** TL's ready-made functions (spec 9.3): setter, activation and index axes of each. */
const READY = {
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
  getActPatchAttnHeadPatternDestSrcPos: ['layerHeadDestSrcPosPattern', 'pattern', ['layer', 'head_index', 'dest_pos', 'src_pos']],
  getActPatchAttnHeadOutAllPos: ['layerHeadVector', 'z', ['layer', 'head']],
  getActPatchAttnHeadQAllPos: ['layerHeadVector', 'q', ['layer', 'head']],
  getActPatchAttnHeadKAllPos: ['layerHeadVector', 'k', ['layer', 'head']],
  getActPatchAttnHeadVAllPos: ['layerHeadVector', 'v', ['layer', 'head']],
  getActPatchAttnHeadPatternAllPos: ['layerHeadPattern', 'pattern', ['layer', 'head_index']],
} satisfies Record<string, [SetterName, string, IndexAxis[]]>;
type ReadyName = keyof typeof READY;

const build = <F>(make: (setter: SetterName, act: string, axes: IndexAxis[]) => F) =>
  Object.fromEntries(Object.entries(READY).map(([name, [setter, act, axes]]) => [name, make(setter, act, axes)])) as Record<ReadyName, F>;

/** The ready-made functions, TL's names in camelCase. */
export const serial: Record<ReadyName, Ready> = build((setter, act, axes) =>
  (model, corrupted, clean, metric, opts = {}) => genericActivationPatch(model, corrupted, clean, metric, setters[setter], act, { ...opts, indexAxisNames: axes }));
/** The same on a worker pool (same names, same results, async). */
export const parallel: Record<ReadyName, ReadyParallel> = build((setter, act, axes) =>
  (pool, corrupted, clean, metric, opts = {}) => genericActivationPatchParallel(pool, corrupted, clean, metric, setter, act, { ...opts, indexAxisNames: axes }));

export const {
  getActPatchResidPre, getActPatchResidMid, getActPatchAttnOut, getActPatchMlpOut, getActPatchAttnHeadOutByPos, getActPatchAttnHeadQByPos,
  getActPatchAttnHeadKByPos, getActPatchAttnHeadVByPos, getActPatchAttnHeadPatternByPos, getActPatchAttnHeadPatternDestSrcPos,
  getActPatchAttnHeadOutAllPos, getActPatchAttnHeadQAllPos, getActPatchAttnHeadKAllPos, getActPatchAttnHeadVAllPos, getActPatchAttnHeadPatternAllPos,
} = serial;

/** [5, L, H]: output, q, k, v, pattern, each patched for all positions. */
export const getActPatchAttnHeadAllPosEvery: Ready = (m, c, cc, f, o) => stack([
  getActPatchAttnHeadOutAllPos, getActPatchAttnHeadQAllPos, getActPatchAttnHeadKAllPos, getActPatchAttnHeadVAllPos, getActPatchAttnHeadPatternAllPos,
].map((fn) => fn(m, c, cc, f, o)));

/** [5, L, P, H]: as above by position; the pattern result is moved from [L, H, P] to [L, P, H]. */
export const getActPatchAttnHeadByPosEvery: Ready = (m, c, cc, f, o) => stack([
  getActPatchAttnHeadOutByPos(m, c, cc, f, o), getActPatchAttnHeadQByPos(m, c, cc, f, o), getActPatchAttnHeadKByPos(m, c, cc, f, o),
  getActPatchAttnHeadVByPos(m, c, cc, f, o), getActPatchAttnHeadPatternByPos(m, c, cc, f, o).permute(0, 2, 1).contiguous(),
]);

/** [3, L, P]: resid_pre, attn_out, mlp_out by layer and position. */
export const getActPatchBlockEvery: Ready = (m, c, cc, f, o) => stack([getActPatchResidPre, getActPatchAttnOut, getActPatchMlpOut].map((fn) => fn(m, c, cc, f, o)));
