// Activation patching (spec 9): setters against naive index loops, the engine against the demo's
// hand-written loop, metric 1 with the clean cache and 0 with the corrupted one, and the two
// shortcuts (start at the patched layer, unembed the last position) against full forwards, bit for bit.
import t from 'tap';
import { invariants } from './helpers.js';
import fc from 'fast-check';
import { HookedTransformer, randomGPT2, hfConfig, Tensor, getActName } from '../src/index.js';
import * as patching from '../src/patching/index.js';
import { logitsToAveLogitDiff } from '../src/analysis/logit-diff.js';
import { allIndices } from './helpers.js';

const arbCfg = fc.record({
  n_layer: fc.integer({ min: 1, max: 3 }),
  n_head: fc.integer({ min: 1, max: 3 }),
  d_head: fc.integer({ min: 2, max: 5 }),
  vocab_size: fc.integer({ min: 6, max: 30 }),
  seed: fc.nat(),
  B: fc.integer({ min: 1, max: 3 }),
  P: fc.integer({ min: 2, max: 6 }),
});
type Cfg = { n_layer: number; n_head: number; d_head: number; vocab_size: number; seed: number; B: number; P: number };
const shapeOf = (c: Cfg) => ({
  n_layer: c.n_layer,
  n_embd: c.n_head * c.d_head,
  n_head: c.n_head,
  n_positions: 8,
  vocab_size: c.vocab_size,
});
const build = (c: Cfg) =>
  HookedTransformer.fromHFTensors(hfConfig(shapeOf(c), c.vocab_size - 1), randomGPT2(shapeOf(c), c.seed));

/** Clean and corrupted tokens that differ at one position, and (correct, incorrect) answers per prompt. */
function inputs(c: Cfg) {
  const clean = Array.from({ length: c.B * c.P }, (_, i) => (c.seed + 3 * i) % c.vocab_size);
  const corrupted = clean.map((x, i) => (i % c.P === c.P - 2 ? (x + 1) % c.vocab_size : x));
  const answers = Array.from({ length: c.B }, (_, b) => [b % c.vocab_size, (b + 1) % c.vocab_size]).flat();
  return {
    clean: Tensor.from(clean, [c.B, c.P]),
    corrupted: Tensor.from(corrupted, [c.B, c.P]),
    answers: Tensor.from(answers, [c.B, 2]),
  };
}

const READY: [string, typeof patching.getActPatchResidPre][] = [
  ['resid_pre', patching.getActPatchResidPre],
  ['resid_mid', patching.getActPatchResidMid],
  ['attn_out', patching.getActPatchAttnOut],
  ['mlp_out', patching.getActPatchMlpOut],
  ['z by pos', patching.getActPatchAttnHeadOutByPos],
  ['q by pos', patching.getActPatchAttnHeadQByPos],
  ['k by pos', patching.getActPatchAttnHeadKByPos],
  ['v by pos', patching.getActPatchAttnHeadVByPos],
  ['pattern by pos', patching.getActPatchAttnHeadPatternByPos],
  ['pattern dest src', patching.getActPatchAttnHeadPatternDestSrcPos],
  ['z all pos', patching.getActPatchAttnHeadOutAllPos],
  ['q all pos', patching.getActPatchAttnHeadQAllPos],
  ['k all pos', patching.getActPatchAttnHeadKAllPos],
  ['v all pos', patching.getActPatchAttnHeadVAllPos],
  ['pattern all pos', patching.getActPatchAttnHeadPatternAllPos],
];

t.test('setters write exactly the indexed slice (naive multi-index loops)', async (t) => {
  const cases: [
    keyof typeof patching.setters,
    number[],
    (r: number[]) => number[],
    (i: number[], idx: number[]) => boolean,
  ][] = [
    ['layerPos', [2, 3, 4], (r) => [0, r[0] % 3], (i, [, p]) => i[1] === p],
    ['layerPosHeadVector', [2, 3, 4, 2], (r) => [0, r[0] % 3, r[1] % 4], (i, [, p, h]) => i[1] === p && i[2] === h],
    ['layerHeadVector', [2, 3, 4, 2], (r) => [0, r[0] % 4], (i, [, h]) => i[2] === h],
    ['layerHeadPattern', [2, 3, 4, 4], (r) => [0, r[0] % 3], (i, [, h]) => i[1] === h],
    ['layerHeadPosPattern', [2, 3, 4, 4], (r) => [0, r[0] % 3, r[1] % 4], (i, [, h, d]) => i[1] === h && i[2] === d],
    [
      'layerHeadDestSrcPosPattern',
      [2, 3, 4, 4],
      (r) => [0, r[0] % 3, r[1] % 4, r[2] % 4],
      (i, [, h, d, s]) => i[1] === h && i[2] === d && i[3] === s,
    ],
  ];
  for (const [name, shape, gen, sel] of cases) {
    const IN_PLACE = `${name} patches the activation in place (returns it)`,
      SLICE = `${name} writes exactly the indexed slice`;
    const inv = invariants(t, [IN_PLACE, SLICE]);
    await inv.run(() =>
      fc.assert(
        fc.property(fc.array(fc.nat(), { minLength: 3, maxLength: 3 }), (raw) => {
          const idx = gen(raw);
          const n = shape.reduce((a, b) => a * b, 1);
          const act = Tensor.from(
            Array.from({ length: n }, (_, i) => i),
            shape,
          );
          const clean = Tensor.from(
            Array.from({ length: n }, (_, i) => -1 - i),
            shape,
          );
          const out = patching.setters[name](act, idx, clean);
          inv.check(IN_PLACE, out === act);
          const wrong = allIndices(shape).find(
            (i) => act.get(...i) !== (sel(i, idx) ? clean.get(...i) : -clean.get(...i) - 1),
          );
          inv.check(SLICE, wrong === undefined, () => `index [${idx}]: element [${wrong}] is ${act.get(...wrong!)}`);
        }),
        { numRuns: 30 },
      ),
    );
  }
  t.throws(
    () => patching.setters.layerPos(Tensor.zeros([1, 3, 2]), [0, 3], Tensor.zeros([1, 3, 2])),
    /pos = 3 is outside \[0, 3\)/,
  );
  t.throws(
    () =>
      Tensor.zeros([1, 3, 2])
        .slice(1, 0, 1)
        .assign(Tensor.zeros([1, 2, 2])),
    /cannot assign a \[1, 2, 2\] tensor into a \[1, 1, 2\] view/,
  );
});

t.test('clean cache gives metric 1 and corrupted cache metric 0 for every ready-made function', async (t) => {
  const CLEAN = 'patching all of resid_pre at layer 0 from the clean cache gives metric 1';
  const zero = (name: string) => `${name}: patching from the corrupted cache itself gives metric 0 everywhere`;
  // CLEAN needs clean and corrupted runs whose logit differences differ (almost every draw)
  const inv = invariants(t, [CLEAN, ...READY.slice(0, 11).map(([name]) => zero(name))], { optional: [CLEAN] });
  await inv.run(() =>
    fc.assert(
      fc.property(arbCfg, (c) => {
        const model = build(c);
        try {
          const { clean, corrupted, answers } = inputs(c);
          const { logits: cl, cache: cleanCache } = model.runWithCache(clean);
          const { logits: co, cache: corruptedCache } = model.runWithCache(corrupted);
          const a = logitsToAveLogitDiff(cl, answers),
            b = logitsToAveLogitDiff(co, answers);
          const metric = (lg: Tensor) => (logitsToAveLogitDiff(lg, answers) - b) / (a - b);
          if (Math.abs(a - b) > 1e-3) {
            // patching every position of resid_pre at layer 0 with clean = the clean run
            const full = patching.genericActivationPatch(
              model,
              corrupted,
              cleanCache,
              metric,
              (act, _i, cl2) => act.assign(cl2),
              'resid_pre',
              { indexAxisNames: ['layer'] },
            );
            inv.check(CLEAN, Math.abs(full.get(0) - 1) < 1e-4, () => `metric ${full.get(0)}`);
          }
          for (const [name, fn] of READY.slice(0, 11)) {
            const r = fn(model, corrupted, corruptedCache, (lg) => logitsToAveLogitDiff(lg, answers) - b).toArray();
            inv.check(
              zero(name),
              r.every((x) => Math.abs(x) < 1e-5),
              () => `max |metric| ${Math.max(...r.map(Math.abs))}`,
            );
          }
        } finally {
          model.dispose();
        }
      }),
      { numRuns: 12 },
    ),
  );
});

t.test('output shapes follow TL (spec 9.3), last axis fastest', async (t) => {
  const c: Cfg = { n_layer: 2, n_head: 3, d_head: 2, vocab_size: 11, seed: 5, B: 2, P: 4 };
  const model = build(c);
  const { clean, corrupted, answers } = inputs(c);
  const { cache } = model.runWithCache(clean);
  const metric = (lg: Tensor) => logitsToAveLogitDiff(lg, answers);
  const want: Record<string, number[]> = {
    resid_pre: [2, 4],
    resid_mid: [2, 4],
    attn_out: [2, 4],
    mlp_out: [2, 4],
    'z by pos': [2, 4, 3],
    'q by pos': [2, 4, 3],
    'k by pos': [2, 4, 3],
    'v by pos': [2, 4, 3],
    'pattern by pos': [2, 3, 4],
    'pattern dest src': [2, 3, 4, 4],
    'z all pos': [2, 3],
    'q all pos': [2, 3],
    'k all pos': [2, 3],
    'v all pos': [2, 3],
    'pattern all pos': [2, 3],
  };
  for (const [name, fn] of READY) t.same(fn(model, corrupted, cache, metric).shape, want[name], name);
  t.same(patching.getActPatchAttnHeadAllPosEvery(model, corrupted, cache, metric).shape, [5, 2, 3]);
  const every = patching.getActPatchAttnHeadByPosEvery(model, corrupted, cache, metric);
  t.same(every.shape, [5, 2, 4, 3]);
  const pat = patching.getActPatchAttnHeadPatternByPos(model, corrupted, cache, metric);
  t.equal(every.get(4, 1, 3, 2), pat.get(1, 2, 3), 'pattern slice moved from [L,H,P] to [L,P,H]');
  t.same(patching.getActPatchBlockEvery(model, corrupted, cache, metric).shape, [3, 2, 4]);
  // index_df: flat output, one value per row, equal to the grid's entries
  const grid = patching.getActPatchResidPre(model, corrupted, cache, metric);
  const rows = [
    [1, 3],
    [0, 2],
  ];
  const flat = patching.genericActivationPatch(
    model,
    corrupted,
    cache,
    metric,
    patching.setters.layerPos,
    'resid_pre',
    { indexDf: rows },
  );
  t.same(flat.shape, [2]);
  t.equal(flat.get(0), grid.get(1, 3));
  t.equal(flat.get(1), grid.get(0, 2));
  t.throws(
    () =>
      patching.genericActivationPatch(model, corrupted, cache, metric, patching.setters.layerPos, 'resid_pre', {
        indexDf: [[5, 0]],
      }),
    /layer 5 is outside/,
  );
  t.throws(
    () => patching.genericActivationPatch(model, corrupted, cache, metric, patching.setters.layerPos, 'resid_pre', {}),
    /needs indexAxisNames/,
  );
  const { cache: longer } = model.runWithCache(Tensor.from([1, 2, 3, 4, 5, 6, 7, 8, 1, 2], [2, 5]));
  t.throws(
    () => patching.getActPatchResidPre(model, corrupted, longer, metric),
    /clean activation blocks.0.hook_resid_pre is \[2, 5, 6\] but the corrupted run's is \[2, 4, 6\]/,
  );
  model.dispose();
});

t.test(
  'shortcuts are exact: starting at the patched layer, batching patches and unembedding the last position match one full forward per patch, bit for bit',
  async (t) => {
    const SHORTCUT = (name: string) =>
      `${name}: starting at the patched layer and unembedding the last position = full forwards, bit for bit`;
    const BATCHED = (name: string) => `${name}: three patches per batched forward = one forward per patch, bit for bit`;
    const LOOP = "the demo's hand-written resid_pre loop gives the same grid, bit for bit";
    const inv = invariants(t, [...READY.flatMap(([name]) => [SHORTCUT(name), BATCHED(name)]), LOOP]);
    const firstDiff = (a: Float32Array, b: Float32Array) => a.findIndex((x, i) => !Object.is(x, b[i]));
    await inv.run(() =>
      fc.assert(
        fc.property(arbCfg, (c) => {
          const model = build(c);
          try {
            const { clean, corrupted, answers } = inputs(c);
            const { cache } = model.runWithCache(clean);
            const metric = (lg: Tensor) => logitsToAveLogitDiff(lg, answers);
            for (const [name, fn] of READY) {
              const slow = fn(model, corrupted, cache, metric, { skipUnchangedLayers: false, patchBatch: 1 }).f32();
              const fast = fn(model, corrupted, cache, metric, { lastPositionLogits: true }).f32();
              const batched = fn(model, corrupted, cache, metric, { patchBatch: 3, skipUnchangedLayers: false }).f32();
              const i = firstDiff(slow, fast),
                j = firstDiff(slow, batched);
              inv.check(
                SHORTCUT(name),
                i < 0 && fast.length === slow.length,
                () => `element ${i}: ${fast[i]} vs ${slow[i]}`,
              );
              inv.check(
                BATCHED(name),
                j < 0 && batched.length === slow.length,
                () => `element ${j}: ${batched[j]} vs ${slow[j]}`,
              );
            }
            // the demo's hand-written loop (cell 62) gives the same grid
            const grid = patching.getActPatchResidPre(model, corrupted, cache, metric);
            for (let l = 0; l < c.n_layer; l++)
              for (let p = 0; p < c.P; p++) {
                const hook = (act: Tensor) => {
                  act.slice(1, p, p + 1).assign(cache.get(getActName('resid_pre', l)).slice(1, p, p + 1));
                  return act;
                };
                const got = metric(model.runWithHooks(corrupted, { fwdHooks: [[getActName('resid_pre', l), hook]] }));
                inv.check(LOOP, got === grid.get(l, p), () => `[${l}, ${p}]: ${got} vs ${grid.get(l, p)}`);
              }
          } finally {
            model.dispose();
          }
        }),
        { numRuns: 10 },
      ),
    );
  },
);

t.test('a hook already on the model disables the layer-skipping shortcut (it must still fire)', async (t) => {
  const c: Cfg = { n_layer: 2, n_head: 2, d_head: 3, vocab_size: 9, seed: 1, B: 1, P: 3 };
  const model = build(c);
  const { clean, corrupted, answers } = inputs(c);
  const { cache } = model.runWithCache(clean);
  let fired = 0;
  model.addHook('hook_embed', () => {
    fired++;
  });
  patching.getActPatchResidPre(model, corrupted, cache, (lg) => logitsToAveLogitDiff(lg, answers), { patchBatch: 1 });
  t.equal(fired, 2 * 3, 'embed hook fired once per patched forward');
  model.resetHooks();
  model.dispose();
});
