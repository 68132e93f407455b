// The ready-made sweeps' defaults take every exact shortcut (layer skipping, no-op patches,
// batching, last-position logits for a metric that declares it): on random small models they give
// the same grids as the slow path with every shortcut turned off (one full forward per patch,
// every position unembedded), bit for bit, serially and on the worker pool.
import t from 'tap';
import { invariants } from './helpers.js';
import fc from 'fast-check';
import { HookedTransformer, randomGPT2, hfConfig, Tensor } from '../src/index.js';
import * as patching from '../src/patching/index.js';
import { parallel } from '../src/parallel/sweep.js';
import { ForwardPool } from '../src/parallel/pool.js';
import { logitsToAveLogitDiff } from '../src/analysis/logit-diff.js';

type Cfg = { n_layer: number; n_head: number; d_head: number; seed: number; B: number; P: number; diffAt: number };
const arbCfg = fc
  .record({
    n_layer: fc.integer({ min: 1, max: 3 }),
    n_head: fc.integer({ min: 1, max: 3 }),
    d_head: fc.integer({ min: 2, max: 5 }),
    seed: fc.nat(),
    B: fc.integer({ min: 1, max: 3 }),
    P: fc.integer({ min: 2, max: 7 }),
    diffAt: fc.nat(),
  })
  .map((c) => ({ ...c, diffAt: c.diffAt % c.P }));
const V = 23;
const shapeOf = (c: Cfg) => ({
  n_layer: c.n_layer,
  n_embd: c.n_head * c.d_head,
  n_head: c.n_head,
  n_positions: 8,
  vocab_size: V,
});
const build = (c: Cfg) => HookedTransformer.fromHFTensors(hfConfig(shapeOf(c), V - 1), randomGPT2(shapeOf(c), c.seed));

/** Clean and corrupted tokens that differ from position diffAt on (the IOI shape: one swapped name). */
function inputs(c: Cfg) {
  const clean = Array.from({ length: c.B * c.P }, (_, i) => (c.seed + 5 * i) % V);
  const corrupted = clean.map((x, i) => (i % c.P === c.diffAt ? (x + 1) % V : x));
  const answers = Array.from({ length: c.B }, (_, b) => [b % V, (b + 2) % V]).flat();
  return {
    clean: Tensor.from(clean, [c.B, c.P]),
    corrupted: Tensor.from(corrupted, [c.B, c.P]),
    answers: Tensor.from(answers, [c.B, 2]),
  };
}

const SLOW = { skipUnchangedLayers: false, skipNoopPatches: false, patchBatch: 1, lastPositionLogits: false };
const NAMES = Object.keys(patching.serial) as patching.ReadyMadeName[];
const firstDiff = (a: Float32Array, b: Float32Array) =>
  a.length !== b.length ? 0 : a.findIndex((x, i) => !Object.is(x, b[i]));

t.test('serial defaults = every shortcut off, bit for bit, for every ready-made function', async (t) => {
  const SAME = (n: string) => `${n}: default = slow path, bit for bit`;
  const LAST = 'a metric declared last-position sees logits [B, 1, V] by default';
  const FULL = 'an undeclared metric, or lastPositionLogits: false, sees every position';
  const NOOP = 'patches before the first differing position cost no forward (fewer metric calls than patches)';
  const inv = invariants(t, [...NAMES.map(SAME), LAST, FULL, NOOP], { optional: [NOOP] });
  await inv.run(() =>
    fc.assert(
      fc.property(arbCfg, (c) => {
        const model = build(c);
        try {
          const { clean, corrupted, answers } = inputs(c);
          const { cache } = model.runWithCache(clean);
          const seen: number[] = [];
          const plain = (lg: Tensor) => (seen.push(lg.shape[1]), logitsToAveLogitDiff(lg, answers));
          const declared = patching.lastPositionMetric(plain);
          for (const name of NAMES) {
            const slow = patching.serial[name](model, corrupted, cache, plain, SLOW).f32();
            inv.check(
              FULL,
              seen.every((p) => p === c.P),
              () => `${name}: positions ${seen}`,
            );
            seen.length = 0;
            const fast = patching.serial[name](model, corrupted, cache, declared).f32();
            inv.check(
              LAST,
              seen.every((p) => p === 1),
              () => `${name}: positions ${seen}`,
            );
            // every layer at the positions before diffAt is a no-op patch; the skip pays one unpatched
            // forward, so it shows as fewer calls than patches once there are at least two no-ops
            if (name === 'getActPatchResidPre' && c.diffAt * c.n_layer >= 2)
              inv.check(NOOP, seen.length < slow.length, () => `${seen.length} calls for ${slow.length} patches`);
            seen.length = 0;
            const i = firstDiff(slow, fast);
            inv.check(SAME(name), i < 0, () => `element ${i}: ${fast[i]} vs ${slow[i]}`);
          }
          patching.getActPatchAttnOut(model, corrupted, cache, declared, { lastPositionLogits: false });
          inv.check(
            FULL,
            seen.every((p) => p === c.P),
            () => `lastPositionLogits: false: positions ${seen}`,
          );
        } finally {
          model.dispose();
        }
      }),
      { numRuns: 12 },
    ),
  );
});

t.test('a clean cache equal to the corrupted run makes every patch a no-op: one forward, the same grid', async (t) => {
  const c: Cfg = { n_layer: 2, n_head: 2, d_head: 3, seed: 4, B: 2, P: 5, diffAt: 2 };
  const model = build(c);
  const { corrupted, answers } = inputs(c);
  const { cache } = model.runWithCache(corrupted);
  let calls = 0;
  const metric = (lg: Tensor) => (calls++, logitsToAveLogitDiff(lg, answers));
  const fast = patching.getActPatchAttnHeadOutByPos(model, corrupted, cache, metric);
  t.equal(calls, 1, 'the metric ran once (the unpatched forward), not once per patch');
  const slow = patching.getActPatchAttnHeadOutByPos(model, corrupted, cache, metric, SLOW);
  t.equal(firstDiff(slow.f32(), fast.f32()), -1, 'every element equals the one-forward-per-patch result');
  model.dispose();
});

t.test('pool defaults = serial slow path, bit for bit', async (t) => {
  const POOL = ['getActPatchResidPre', 'getActPatchAttnHeadOutAllPos', 'getActPatchAttnHeadPatternByPos'] as const;
  const SAME = (n: string) => `${n}: pool default = serial slow path, bit for bit`;
  const inv = invariants(t, POOL.map(SAME));
  await inv.run(() =>
    fc.assert(
      fc.asyncProperty(arbCfg, fc.integer({ min: 1, max: 2 }), async (c, threads) => {
        const model = build(c);
        try {
          const { clean, corrupted, answers } = inputs(c);
          const { cache } = model.runWithCache(clean);
          const plain = (lg: Tensor) => logitsToAveLogitDiff(lg, answers);
          const pool = await ForwardPool.create(model, { threads });
          for (const name of POOL) {
            const slow = patching.serial[name](model, corrupted, cache, plain, SLOW).f32();
            const par = (await parallel[name](pool, corrupted, cache, patching.lastPositionMetric(plain))).f32();
            const i = firstDiff(slow, par);
            inv.check(SAME(name), i < 0, () => `${threads} threads, element ${i}: ${par[i]} vs ${slow[i]}`);
          }
        } finally {
          model.dispose(); // closes the pool
        }
      }),
      { numRuns: 5 },
    ),
  );
});
