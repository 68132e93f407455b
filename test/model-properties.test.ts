// Invariants of weight processing, hooks and the cache, on random small GPT-2 configs.
// Tolerance: 2e-4 absolute on logits-scale quantities (f32 through a few layers); exact where stated.
import t from 'tap';
import { invariants } from './helpers.js';
import fc from 'fast-check';
import {
  HookedTransformer,
  randomGPT2,
  hfConfig,
  NO_PROCESSING,
  Tensor,
  sub,
  mean,
  sum,
  add,
  getActName,
  ActivationCache,
} from '../src/index.js';
import * as utils from '../src/analysis/utils.js';
import type { ProcessingOptions } from '../src/index.js';
import { allClose, maxAbsDiff } from './helpers.js';

const arbCfg = fc.record({
  n_layer: fc.integer({ min: 1, max: 3 }),
  n_head: fc.integer({ min: 1, max: 3 }),
  d_head: fc.integer({ min: 2, max: 7 }),
  vocab_size: fc.integer({ min: 5, max: 40 }),
  seed: fc.nat(),
  B: fc.integer({ min: 1, max: 2 }),
  P: fc.integer({ min: 1, max: 7 }),
});
type Cfg = { n_layer: number; n_head: number; d_head: number; vocab_size: number; seed: number; B: number; P: number };
const shapeOf = (c: Cfg) => ({
  n_layer: c.n_layer,
  n_embd: c.n_head * c.d_head,
  n_head: c.n_head,
  n_positions: 8,
  vocab_size: c.vocab_size,
});
const build = (c: Cfg, p: ProcessingOptions) =>
  HookedTransformer.fromHFTensors(hfConfig(shapeOf(c), c.vocab_size - 1), randomGPT2(shapeOf(c), c.seed), p);
const tokensFor = (c: Cfg) =>
  Tensor.from(
    Array.from({ length: c.B * c.P }, (_, i) => (c.seed + i * 7) % c.vocab_size),
    [c.B, c.P],
  );
const runs = { numRuns: 25 };

/** Logits minus their mean at each position: what processing must preserve. */
const centred = (x: Tensor) => sub(x, mean(x, -1, true)).f32();

t.test('processing preserves logits up to a per-position constant; fold_ln alone is exact', async (t) => {
  const inv = invariants(t, [
    'default processing keeps the logits up to a per-position constant',
    'fold_ln alone keeps the logits exactly',
  ]);
  await inv.run(() =>
    fc.assert(
      fc.property(arbCfg, fc.boolean(), (c, refactor) => {
        const tok = tokensFor(c);
        const raw = build(c, NO_PROCESSING),
          proc = build(c, { refactorFactoredAttnMatrices: refactor }),
          fold = build(c, { ...NO_PROCESSING, foldLn: true });
        try {
          const a = raw.forward(tok),
            b = proc.forward(tok),
            f = fold.forward(tok);
          inv.check(
            'default processing keeps the logits up to a per-position constant',
            allClose(centred(b), centred(a), 0, 2e-4),
            () => `max |diff| of centred logits ${maxAbsDiff(centred(b), centred(a))}`,
          );
          inv.check(
            'fold_ln alone keeps the logits exactly',
            allClose(f.f32(), a.f32(), 0, 2e-4),
            () => `max |diff| ${maxAbsDiff(f.f32(), a.f32())}`,
          );
        } finally {
          [raw, proc, fold].forEach((m) => m.dispose());
        }
      }),
      runs,
    ),
  );
});

t.test('patterns are identical under every processing option; residual hooks lose their mean', async (t) => {
  const PATTERNS = 'attention patterns are the same under every processing option';
  const CENTRED = 'with fold_ln + center_writing_weights the residual hooks are the raw ones minus their mean';
  const inv = invariants(t, [PATTERNS, CENTRED], { optional: [CENTRED] }); // CENTRED only when both flags are drawn
  await inv.run(() =>
    fc.assert(
      fc.property(
        arbCfg,
        fc.record({
          foldLn: fc.boolean(),
          centerWritingWeights: fc.boolean(),
          centerUnembed: fc.boolean(),
          foldValueBiases: fc.boolean(),
          refactorFactoredAttnMatrices: fc.boolean(),
        }),
        (c, p) => {
          const tok = tokensFor(c);
          const raw = build(c, NO_PROCESSING),
            proc = build(c, p);
          try {
            const ca = raw.runWithCache(tok).cache,
              cb = proc.runWithCache(tok).cache;
            for (let l = 0; l < c.n_layer; l++) {
              inv.check(
                PATTERNS,
                allClose(cb.get(['pattern', l]).f32(), ca.get(['pattern', l]).f32(), 0, 1e-5),
                () => `layer ${l}`,
              );
            }
            if (p.centerWritingWeights && p.foldLn) {
              for (const k of ['hook_embed', 'blocks.0.hook_resid_mid', `blocks.${c.n_layer - 1}.hook_resid_post`]) {
                const want = sub(ca.get(k), mean(ca.get(k), -1, true));
                inv.check(CENTRED, allClose(cb.get(k).f32(), want.f32(), 0, 2e-5), () => k);
              }
            }
          } finally {
            raw.dispose();
            proc.dispose();
          }
        },
      ),
      runs,
    ),
  );
});

t.test('decompositions sum to what they decompose', async (t) => {
  const inv = invariants(t, [
    'decomposeResid sums to the final resid_post',
    'accumulatedResid with mids has 2L+1 components',
    'accumulatedResid ends at the final resid_post exactly',
    'head results + b_O sum to attn_out',
    'neuron results + b_out sum to mlp_out',
    'the full decomposition sums to the final resid_post',
  ]);
  await inv.run(() =>
    fc.assert(
      fc.property(arbCfg, (c) => {
        const m = build(c, { refactorFactoredAttnMatrices: true });
        try {
          const { cache } = m.runWithCache(tokensFor(c));
          const L = c.n_layer;
          const final = cache.get(['resid_post', -1]);
          inv.check(
            'decomposeResid sums to the final resid_post',
            allClose(sum(cache.decomposeResid(), 0).f32(), final.f32(), 0, 1e-5),
          );
          const acc = cache.accumulatedResid({ layer: -1, inclMid: true });
          inv.check(
            'accumulatedResid with mids has 2L+1 components',
            acc.shape[0] === 2 * L + 1,
            () => `shape [${acc.shape}], L = ${L}`,
          );
          inv.check(
            'accumulatedResid ends at the final resid_post exactly',
            maxAbsDiff(acc.index(0, -1).f32(), final.f32()) === 0,
          );
          const heads = cache.stackHeadResults({ layer: -1 }); // [L*H, B, P, M], layer-major
          for (let l = 0; l < L; l++) {
            const s = sum(heads.slice(0, l * c.n_head, (l + 1) * c.n_head), 0);
            inv.check(
              'head results + b_O sum to attn_out',
              allClose(add(s, m.weights.blocks[l].b_O).f32(), cache.get(['attn_out', l]).f32(), 0, 1e-5),
              () => `layer ${l}`,
            );
            const neurons = cache.getNeuronResults(l); // [B, P, F, M]
            inv.check(
              'neuron results + b_out sum to mlp_out',
              allClose(
                add(sum(neurons, -2), m.weights.blocks[l].b_out).f32(),
                cache.get(['mlp_out', l]).f32(),
                0,
                1e-5,
              ),
              () => `layer ${l}`,
            );
          }
          const full = cache.getFullResidDecomposition({ layer: -1, expandNeurons: false }) as Tensor;
          inv.check(
            'the full decomposition sums to the final resid_post',
            allClose(sum(full, 0).f32(), final.f32(), 0, 1e-4),
          );
        } finally {
          m.dispose();
        }
      }),
      runs,
    ),
  );
});

t.test('DLA: LN-applied decomposition . logit direction = logit difference - b_U difference', async (t) => {
  const inv = invariants(t, [
    'logitAttrs gives one column per prompt',
    'the attributions sum to the logit difference minus the b_U difference',
  ]);
  await inv.run(() =>
    fc.assert(
      fc.property(arbCfg, (c) => {
        const m = build(c, { refactorFactoredAttnMatrices: true });
        try {
          const tok = tokensFor(c);
          const { logits, cache } = m.runWithCache(tok);
          const good = Array.from({ length: c.B }, (_, b) => (b + 1) % c.vocab_size),
            bad = Array.from({ length: c.B }, (_, b) => (b + 3) % c.vocab_size);
          const stack = cache.decomposeResid({ layer: -1, posSlice: -1 });
          const attrs = cache.logitAttrs(stack, good, { incorrectTokens: bad, posSlice: -1 }); // [C, B]
          const total = sum(attrs, 0).f32();
          const bU = m.b_U.f32();
          inv.check(
            'logitAttrs gives one column per prompt',
            attrs.shape[1] === c.B,
            () => `shape [${attrs.shape}], B = ${c.B}`,
          );
          for (let b = 0; b < c.B; b++) {
            const diff = logits.get(b, c.P - 1, good[b]) - logits.get(b, c.P - 1, bad[b]);
            const err = Math.abs(total[b] - (diff - (bU[good[b]] - bU[bad[b]])));
            inv.check(
              'the attributions sum to the logit difference minus the b_U difference',
              err < 2e-4,
              () => `prompt ${b}: off by ${err}`,
            );
          }
        } finally {
          m.dispose();
        }
      }),
      runs,
    ),
  );
});

t.test('hooks: identity changes nothing, replacements propagate, contexts clean up, ln1 fires 3x', async (t) => {
  const c: Cfg = { n_layer: 2, n_head: 2, d_head: 3, vocab_size: 20, seed: 5, B: 1, P: 4 };
  const m = build(c, {});
  const tok = tokensFor(c);
  const base = m.forward(tok);
  t.equal(
    maxAbsDiff(m.runWithHooks(tok, { fwdHooks: [[(n) => n.startsWith('blocks'), (x) => x]] }).f32(), base.f32()),
    0,
    'identity hooks are a no-op',
  );
  let calls = 0;
  const zeroed = m.runWithHooks(tok, {
    fwdHooks: [
      ['blocks.0.hook_attn_out', (x) => Tensor.zeros(x.shape)],
      [
        'blocks.0.ln1.hook_scale',
        () => {
          calls++;
        },
      ],
    ],
  });
  t.ok(maxAbsDiff(zeroed.f32(), base.f32()) > 1e-4, 'a replacement changes the logits');
  t.equal(calls, 3, 'ln1 hooks fire once per q, k, v input');
  const { cache } = m.runWithCache(tok, { namesFilter: (n) => n.endsWith('attn_out') });
  t.same(
    cache.keys(),
    ['blocks.0.hook_attn_out', 'blocks.1.hook_attn_out'],
    'namesFilter keeps only what was asked for',
  );
  t.equal(maxAbsDiff(m.forward(tok).f32(), base.f32()), 0, 'context hooks were removed after the run');
  m.addHook('blocks.0.hook_attn_out', (x) => Tensor.zeros(x.shape));
  m.runWithCache(tok);
  t.ok(
    maxAbsDiff(m.forward(tok).f32(), zeroed.f32()) === 0,
    'a directly added hook survives runWithCache (TL level semantics)',
  );
  m.resetHooks();
  t.equal(maxAbsDiff(m.forward(tok).f32(), base.f32()), 0, 'resetHooks removes it');
  t.throws(
    () => m.runWithHooks(tok, { fwdHooks: [['blocks.0.hook_attn_out', () => Tensor.zeros([1])]] }),
    /returned shape \[1\]/,
  );
  t.throws(
    () => m.runWithHooks(tok, { fwdHooks: [['blocks.9.hook_resid_pre', (x) => x]] }),
    /unknown hook name "blocks.9.hook_resid_pre"/,
  );
  const sliced = m.runWithCache(tok, { posSlice: -1 }).cache;
  t.same(
    sliced.get('blocks.0.attn.hook_z').shape,
    [1, 1, 2, 3],
    'run_with_cache int posSlice keeps the axis (z on axis -3)',
  );
  t.same(sliced.get('blocks.0.attn.hook_pattern').shape, [1, 2, 1, 4], 'patterns are sliced on the query axis');
  const nb = m.runWithCache(tok, { removeBatchDim: true }).cache;
  t.same(nb.get('hook_embed').shape, [4, 6]);
  t.ok(nb instanceof ActivationCache && !nb.hasBatchDim);
  m.dispose();
});

t.test('getActName follows TL, quirks included', async (t) => {
  const cases: [Parameters<typeof getActName>, string][] = [
    [['embed'], 'hook_embed'],
    [['resid_pre', 3], 'blocks.3.hook_resid_pre'],
    [['attn', 9], 'blocks.9.attn.hook_pattern'],
    [['attn_scores', 9], 'blocks.9.attn.hook_attn_scores'],
    [['q', 6, 'a'], 'blocks.6.attn.hook_q'],
    [['k6'], 'blocks.6.attn.hook_k'],
    [['pre', 2], 'blocks.2.mlp.hook_pre'],
    [['scale', 4, 'ln1'], 'blocks.4.ln1.hook_scale'],
    [['scale4ln1'], 'blocks.4.ln1.hook_scale'],
    [['scale'], 'ln_final.hook_scale'],
    [['normalized'], 'ln_final.hook_normalized'],
    [['scale', 4], 'blocks.4.hook_scale'],
    [['blocks.0.hook_resid_pre'], 'blocks.0.hook_resid_pre'],
    [['z', 9], 'blocks.9.attn.hook_z'],
  ];
  for (const [args, want] of cases) t.equal(getActName(...args), want, `getActName(${args.join(', ')})`);
});

t.test('python-style formatting used by testPrompt', async (t) => {
  t.equal(utils.f52(18.0912), '18.09');
  t.equal(utils.f52(3.2), ' 3.20');
  t.equal(utils.pct(0.0467), ' 4.67%');
  t.equal(utils.pct(0.70071), '70.07%');
  t.equal(utils.pyList(['<|endoftext|>', ' Mary', "'s"]), `['<|endoftext|>', ' Mary', "'s"]`);
});

t.test('half-precision weight storage gives the f32 logits within the format precision', async (t) => {
  const c: Cfg = { n_layer: 2, n_head: 3, d_head: 5, vocab_size: 30, seed: 9, B: 2, P: 5 };
  const tok = tokensFor(c);
  const ref = build(c, {}).forward(tok).f32();
  const scale = Math.max(...Array.from(ref, Math.abs));
  for (const [dtype, tol] of [
    ['bf16', 2 ** -6],
    ['f16', 2 ** -9],
  ] as const) {
    const m = HookedTransformer.fromHFTensors(hfConfig(shapeOf(c), c.vocab_size - 1), randomGPT2(shapeOf(c), c.seed), {
      dtype,
    });
    const got = m.forward(tok).f32();
    t.ok(
      maxAbsDiff(got, ref) <= tol * scale,
      `${dtype}: max |diff| ${maxAbsDiff(got, ref).toExponential(2)} <= ${(tol * scale).toExponential(2)}`,
    );
    t.ok(maxAbsDiff(got, ref) > 0, `${dtype} storage is really used`);
    t.equal(m.weights.blocks[0].W_in.dtype, dtype);
    m.dispose();
  }
});

t.test('fromPretrained without weights says how to get them', async (t) => {
  t.throws(
    () => HookedTransformer.fromPretrained('gpt2-small', { dir: '/nonexistent/typelens' }),
    /typelens fetch-weights gpt2-small/,
  );
  t.throws(() => HookedTransformer.fromPretrained('gpt7'), /unknown model "gpt7"/);
});

t.test(
  'long prompts: attention through the matmul kernel equals the plain loop (1e-5 on logits, 1e-6 on patterns)',
  async (t) => {
    const LOGITS = 'logits through the matmul kernel = the plain loop (1e-5)',
      PATTERNS = 'patterns through the matmul kernel = the plain loop (1e-6)';
    const inv = invariants(t, [LOGITS, PATTERNS]);
    await inv.run(() =>
      fc.assert(
        fc.property(
          fc.integer({ min: 1, max: 2 }),
          fc.integer({ min: 1, max: 3 }),
          fc.integer({ min: 2, max: 9 }),
          fc.nat(),
          fc.integer({ min: 1, max: 2 }),
          fc.integer({ min: 2, max: 40 }),
          (n_layer, n_head, d_head, seed, B, P) => {
            const shape = { n_layer, n_embd: n_head * d_head, n_head, n_positions: 48, vocab_size: 30 };
            const m = HookedTransformer.fromHFTensors(hfConfig(shape, 29), randomGPT2(shape, seed), {
              attnMatmulMinPos: 1e9,
            });
            const m1 = HookedTransformer.fromHFTensors(hfConfig(shape, 29), randomGPT2(shape, seed), {
              attnMatmulMinPos: 1,
            });
            const tok = Tensor.from(
              Array.from({ length: B * P }, (_, i) => (seed + 7 * i) % 30),
              [B, P],
            );
            try {
              const loop = m.runWithCache(tok, { namesFilter: (n) => n.endsWith('hook_pattern') });
              const mm = m1.runWithCache(tok, { namesFilter: (n) => n.endsWith('hook_pattern') });
              inv.check(
                LOGITS,
                allClose(mm.logits.f32(), loop.logits.f32(), 0, 1e-5),
                () => `max |diff| ${maxAbsDiff(mm.logits.f32(), loop.logits.f32())}`,
              );
              for (const k of loop.cache.keys())
                inv.check(PATTERNS, allClose(mm.cache.get(k).f32(), loop.cache.get(k).f32(), 0, 1e-6), () => k);
            } finally {
              m.dispose();
              m1.dispose();
            }
          },
        ),
        { numRuns: 30 },
      ),
    );
  },
);
