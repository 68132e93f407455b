/**
 * Activation-patching sweeps on a worker pool: each patched forward runs in a worker, which
 * applies the patch itself (a declarative task: hook, built-in setter, indices, clean activation);
 * the metric runs here on the logits. Same numbers as patching's serial engine, bit for bit.
 * It lives in parallel/ because it needs the pool; patching/ never imports parallel/.
 */
import { TypelensError } from '../errors.js';
import type { ActivationCache } from '../hooks/cache.js';
import { getActName } from '../hooks/names.js';
import type { TokensInput } from '../model/hooked-transformer.js';
import { batchSizeFor, checkClean, chunk, groupsOf, sweepIndices } from '../patching/engine.js';
import {
  setters,
  type PatchingMetric,
  type PatchOptions,
  type ReadyMadeName,
  type ReadyMadeOptions,
  type SetterName,
} from '../patching/index.js';
import { buildReadyMade } from '../patching/ready-made.js';
import { Tensor } from '../tensor/index.js';
import type { ForwardPool } from './pool.js';
import { fromArr, toArr, type Arr } from './protocol.js';

export type ReadyMadeParallel = (
  pool: ForwardPool,
  corruptedTokens: TokensInput,
  cleanCache: ActivationCache,
  metric: PatchingMetric,
  opts?: ReadyMadeOptions,
) => Promise<Tensor>;

/** genericActivationPatch on a worker pool; the setter is named, since a closure cannot cross threads. */
export async function genericActivationPatchParallel(
  pool: ForwardPool,
  corruptedTokens: TokensInput,
  cleanCache: ActivationCache,
  patchingMetric: PatchingMetric,
  setter: SetterName,
  activationName: string,
  opts: PatchOptions = {},
): Promise<Tensor> {
  const model = pool.model;
  if (!(setter in setters))
    throw new TypelensError(
      `unknown setter "${setter}" (workers run the built-in setters: ${Object.keys(setters).join(', ')})`,
      'EINPUT',
    );
  const { toks, indices, outShape, mask } = sweepIndices(model, corruptedTokens, opts);
  const maskArr = mask ? toArr(mask) : undefined;
  const skip = opts.skipUnchangedLayers ?? true;
  const names = Array.from({ length: model.cfg.n_layers }, (_, l) => getActName('resid_pre', l));
  // activations in shared memory (runWithCache({ shared: true })) go to workers uncopied
  const residPre = skip
    ? model.runWithCache(toks, { namesFilter: names, shared: true, attentionMask: mask }).cache
    : null;
  const out = new Float32Array(indices.length);
  let done = 0;
  const tokArr = toArr(toks);
  const cleanArr = new Map<string, Arr>();
  const residArr = new Map<number, Arr>();
  const residOf = (l: number) => {
    if (!residArr.has(l)) residArr.set(l, toArr(residPre!.get(names[l])));
    return residArr.get(l)!;
  };
  const hookName = (idx: number[]) => getActName(activationName, idx[0]);
  // keep every worker busy: no bigger batches than an even share of the sweep
  const k = Math.min(
    batchSizeFor(opts, toks.shape[0] * toks.shape[1]),
    Math.max(1, Math.ceil(indices.length / pool.threads)),
  );
  await Promise.all(
    groupsOf(indices, hookName, k).map(async (g) => {
      const layer = indices[g[0]][0],
        name = hookName(indices[g[0]]);
      if (!cleanArr.has(name)) {
        const clean = cleanCache.get(name);
        const act = name === names[layer] && residPre ? residPre.get(name) : null;
        if (act) checkClean(name, clean, act);
        cleanArr.set(name, toArr(clean));
      }
      const inBlock = name.startsWith(`blocks.${layer}.`);
      const r = await pool.run({
        ...(residPre && inBlock ? { resid: residOf(layer), startAtLayer: layer } : { tokens: tokArr }),
        lastPositionLogits: opts.lastPositionLogits,
        attentionMask: maskArr,
        patch: { hook: name, setter, indices: g.map((i) => indices[i]), clean: cleanArr.get(name)! },
      });
      const logits = fromArr(r.logits);
      g.forEach((i, j) => {
        out[i] = patchingMetric(chunk(logits, j, g.length));
        opts.onProgress?.(++done, indices.length);
      });
    }),
  );
  return new Tensor(out, outShape);
}

/** The ready-made functions on a worker pool (same names and results as patching's, async). */
export const parallel: Record<ReadyMadeName, ReadyMadeParallel> = buildReadyMade(
  (setter, act, axes) =>
    (pool, corrupted, clean, metric, opts = {}) =>
      genericActivationPatchParallel(pool, corrupted, clean, metric, setter, act, { ...opts, indexAxisNames: axes }),
);
