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

/**
 * Turns a forward's logits [B, P, V] into one number (e.g. a normalized logit difference). A metric
 * that reads only logits[:, -1] may say so with `positions: 'last'` (see lastPositionMetric): the
 * sweeps then unembed only the last position by default, which gives it the same numbers.
 */
export type PatchingMetric = ((logits: Tensor) => number) & { readonly positions?: 'last' | 'all' };

/**
 * `fn` declared to read only the last position's logits (logits[:, -1], as TL's logit-difference
 * metrics do): sweeps then pass it logits [B, 1, V]. A function that reads other positions must
 * not be declared so: it would see a one-position tensor.
 */
export const lastPositionMetric = (fn: (logits: Tensor) => number): PatchingMetric =>
  Object.assign((logits: Tensor) => fn(logits), { positions: 'last' as const });
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
  /**
   * The metric reads only logits[:, -1]: unembed just that position (logits [B, 1, V]). Default:
   * true when the metric declares `positions: 'last'` (lastPositionMetric), else false.
   */
  lastPositionLogits?: boolean;
  /**
   * Skip the forward of a patch that changes nothing: where the setter writes into the corrupted
   * activation exactly the bits already there (clean and corrupted runs agree at that index, e.g.
   * positions before the first differing token), the patched forward is the unpatched one, so its
   * metric is the corrupted run's, computed once. Default true; used only when no other hook is
   * attached (hooks might count or change what they see).
   */
  skipNoopPatches?: boolean;
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

/** Bitwise equality of two f32 tensors of one shape (-0 is not 0 here: the forward could tell them apart). */
function sameBits(a: Tensor, b: Tensor): boolean {
  const x = a.contiguous().f32(),
    y = b.contiguous().f32();
  const u = new Uint32Array(x.buffer, x.byteOffset, x.length),
    v = new Uint32Array(y.buffer, y.byteOffset, y.length);
  if (u.length !== v.length) return false;
  for (let i = 0; i < u.length; i++) if (u[i] !== v[i]) return false;
  return true;
}

/** What a sweep takes from one unpatched corrupted forward, and which patches it still has to run. */
export interface SweepPlan {
  /** Positions in `indices` whose patched forward must run (the others are no-ops). */
  todo: number[];
  /** The corrupted run's resid_pre per layer, to start patched forwards from; null: run from the tokens. */
  residPre: ActivationCache | null;
  /** The metric of the unpatched corrupted run, for the no-op patches (NaN when there are none). */
  baseline: number;
  lastPositionLogits: boolean;
}

/**
 * One unpatched forward of the corrupted tokens caching what the shortcuts need (resid_pre per
 * layer for skipUnchangedLayers, each patched hook's activation for skipNoopPatches), and the
 * indices left to run. The serial engine and the worker-pool sweep share it.
 */
export function planSweep(
  model: HookedTransformer,
  toks: Tensor,
  mask: Tensor | undefined,
  indices: number[][],
  hookName: (idx: number[]) => string,
  cleanCache: ActivationCache,
  metric: PatchingMetric,
  setter: PatchSetter,
  opts: PatchOptions & { shared?: boolean },
): SweepPlan {
  const lastPositionLogits = opts.lastPositionLogits ?? metric.positions === 'last';
  const hooked = model.hasHooks();
  const skip = (opts.skipUnchangedLayers ?? true) && !hooked;
  const noop = (opts.skipNoopPatches ?? true) && !hooked;
  const residNames = Array.from({ length: model.cfg.n_layers }, (_, l) => getActName('resid_pre', l));
  const hookNames = noop ? [...new Set(indices.map(hookName))] : [];
  const names = [...new Set([...(skip ? residNames : []), ...hookNames])];
  const all = indices.map((_, i) => i);
  if (names.length === 0) return { todo: all, residPre: null, baseline: NaN, lastPositionLogits };
  const { logits, cache } = model.runWithCache(toks, {
    namesFilter: names,
    attentionMask: mask,
    lastPositionLogits,
    shared: opts.shared,
  });
  const isNoop = (idx: number[]): boolean => {
    const name = hookName(idx);
    const act = cache.get(name),
      probe = act.clone();
    applySetter(setter, probe, idx, cleanCache.get(name), name);
    return sameBits(probe, act);
  };
  const todo = noop ? all.filter((i) => !isNoop(indices[i])) : all;
  const baseline = todo.length < indices.length ? metric(logits) : NaN;
  return { todo, residPre: skip ? cache : null, baseline, lastPositionLogits };
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
  const hookName = (idx: number[]) => getActName(activationName, idx[0]);
  // Blocks before the patched layer run on unchanged inputs: start from their cached output.
  const plan = planSweep(model, toks, mask, indices, hookName, cleanCache, patchingMetric, patchSetter, opts);
  const out = new Float32Array(indices.length).fill(plan.baseline);
  let done = indices.length - plan.todo.length;
  if (done > 0) opts.onProgress?.(done, indices.length);
  const todo = plan.todo.map((i) => indices[i]);
  for (const g of groupsOf(todo, hookName, batchSizeFor(opts, toks.shape[0] * toks.shape[1]))) {
    const layer = todo[g[0]][0],
      name = hookName(todo[g[0]]);
    const fromLayer = plan.residPre !== null && name.startsWith(`blocks.${layer}.`);
    const { input, hook } = batchedPatch(
      fromLayer ? plan.residPre!.get(getActName('resid_pre', layer)) : toks,
      patchSetter,
      g.map((i) => todo[i]),
      cleanCache.get(name),
      name,
    );
    const logits = model.runWithHooks(input, {
      fwdHooks: [[name, hook]],
      startAtLayer: fromLayer ? layer : undefined,
      lastPositionLogits: plan.lastPositionLogits,
      attentionMask: repeatMask(mask, g.length),
    });
    g.forEach((i, j) => {
      out[plan.todo[i]] = patchingMetric(chunk(logits, j, g.length));
      opts.onProgress?.(++done, indices.length);
    });
  }
  return new Tensor(out, outShape);
}
