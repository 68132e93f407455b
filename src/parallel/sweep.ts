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
import { batchSizeFor, checkClean, chunk, groupsOf, planSweep, sweepIndices } from '../patching/engine.js';
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
  const hookName = (idx: number[]) => getActName(activationName, idx[0]);
  // activations in shared memory (runWithCache({ shared: true })) go to workers uncopied
  const plan = planSweep(model, toks, mask, indices, hookName, cleanCache, patchingMetric, setters[setter], {
    ...opts,
    shared: true,
  });
  const { residPre } = plan;
  const out = new Float32Array(indices.length).fill(plan.baseline);
  let done = indices.length - plan.todo.length;
  if (done > 0) opts.onProgress?.(done, indices.length);
  const tokArr = toArr(toks);
  const cleanArr = new Map<string, Arr>();
  const residArr = new Map<number, Arr>();
  const residOf = (l: number) => {
    if (!residArr.has(l)) residArr.set(l, toArr(residPre!.get(getActName('resid_pre', l))));
    return residArr.get(l)!;
  };
  const todo = plan.todo.map((i) => indices[i]);
  // keep every worker busy: no bigger batches than an even share of the sweep
  const k = Math.min(
    batchSizeFor(opts, toks.shape[0] * toks.shape[1]),
    Math.max(1, Math.ceil(todo.length / pool.threads)),
  );
  // groups come layer by layer, so the longest forwards (from the lowest layers) are queued first
  await Promise.all(
    groupsOf(todo, hookName, k).map(async (g) => {
      const layer = todo[g[0]][0],
        name = hookName(todo[g[0]]);
      if (!cleanArr.has(name)) {
        const clean = cleanCache.get(name);
        if (residPre?.has(name)) checkClean(name, clean, residPre.get(name));
        cleanArr.set(name, toArr(clean));
      }
      const inBlock = name.startsWith(`blocks.${layer}.`);
      const r = await pool.run({
        ...(residPre && inBlock ? { resid: residOf(layer), startAtLayer: layer } : { tokens: tokArr }),
        lastPositionLogits: plan.lastPositionLogits,
        attentionMask: maskArr,
        patch: { hook: name, setter, indices: g.map((i) => todo[i]), clean: cleanArr.get(name)! },
      });
      const logits = fromArr(r.logits);
      g.forEach((i, j) => {
        out[plan.todo[i]] = patchingMetric(chunk(logits, j, g.length));
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
