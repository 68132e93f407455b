// The silent faults of issue 12 (2-6; weight edits are elsewhere): each assertion failed before its fix.
import t from 'tap';
import { HookedTransformer, randomGPT2, hfConfig, Tensor, NO_PROCESSING } from '../src/index.js';
import type { StTensorOut } from '../src/index.js';
import * as patching from '../src/patching/index.js';
import { testPrompt } from '../src/analysis/utils.js';
import { allClose, maxAbsDiff } from './helpers.js';

const shape = { n_layer: 2, n_embd: 12, n_head: 3, n_positions: 16, vocab_size: 23 };
/** Random weights with attention sharp enough (c_attn x30) that scaling the scores shows in the logits. */
function weights(): Record<string, StTensorOut> {
  const w = randomGPT2(shape, 7);
  for (let l = 0; l < shape.n_layer; l++)
    (w[`h.${l}.attn.c_attn.weight`].data as Float32Array).forEach((v, i, a) => {
      a[i] = v * 30;
    });
  return w;
}
const build = (hfExtra: Record<string, unknown> = {}, tensors = weights(), opts = {}) =>
  HookedTransformer.fromHFTensors({ ...hfConfig(shape, 22), ...hfExtra }, tensors, opts);
const toks = Tensor.from([
  [22, 3, 5, 9, 1, 4],
  [22, 8, 2, 2, 7, 11],
]);

t.test('fault 2: a patch setter that returns a new tensor is used', async (t) => {
  const m = build();
  const clean = Tensor.from([
    [22, 1, 1, 1, 1, 1],
    [22, 2, 2, 2, 2, 2],
  ]);
  const { logits: cleanLogits, cache } = m.runWithCache(clean);
  const metric = (l: Tensor) => l.get(0, l.shape[1] - 1, 0);
  // returns the clean activation as a new tensor, leaving `act` untouched
  const setter = (_act: Tensor, _idx: readonly number[], c: Tensor) => c.clone();
  const out = patching.genericActivationPatch(m, toks, cache, metric, setter, 'resid_pre', {
    indexDf: [[0]],
    skipUnchangedLayers: false,
  });
  t.ok(
    Math.abs(out.get(0) - metric(cleanLogits)) < 1e-5,
    'patched metric equals the clean run (the returned tensor was used)',
  );
  m.dispose();
});

t.test('fault 4: stopAtLayer >= n_layers returns the residual stream', async (t) => {
  const m = build();
  const { cache } = m.runWithCache(toks);
  const r = m.forward(toks, { stopAtLayer: 2 });
  t.same(r.shape, [2, 6, 12], 'residual shape');
  t.equal(maxAbsDiff(r.f32(), cache.get('blocks.1.hook_resid_post').f32()), 0, 'equals resid_post of the last block');
  m.dispose();
});

/** The same tensors with block l's W_Q and b_Q multiplied by f(l): c_attn's first M columns. */
function rescaledQ(f: (l: number) => number): Record<string, StTensorOut> {
  const w = weights(),
    M = shape.n_embd;
  for (let l = 0; l < shape.n_layer; l++) {
    const W = w[`h.${l}.attn.c_attn.weight`].data as Float32Array,
      b = w[`h.${l}.attn.c_attn.bias`].data as Float32Array;
    for (let i = 0; i < M; i++) {
      for (let j = 0; j < M; j++) W[i * 3 * M + j] *= f(l);
      b[i] *= f(l);
    }
  }
  return w;
}

t.test('fault 5: HF config flags are honoured or refused', async (t) => {
  const inv = build({ scale_attn_by_inverse_layer_idx: true }, undefined, NO_PROCESSING);
  const ref = HookedTransformer.fromHFTensors(
    hfConfig(shape, 22),
    rescaledQ((l) => 1 / (l + 1)),
    NO_PROCESSING,
  );
  t.ok(
    allClose(inv.forward(toks).f32(), ref.forward(toks).f32(), 1e-5, 1e-5),
    'scale_attn_by_inverse_layer_idx = W_Q/(l+1)',
  );
  const noScale = build({ scale_attn_weights: false }, undefined, NO_PROCESSING);
  const ref2 = HookedTransformer.fromHFTensors(
    hfConfig(shape, 22),
    rescaledQ(() => Math.sqrt(4)),
    NO_PROCESSING,
  );
  t.ok(
    allClose(noScale.forward(toks).f32(), ref2.forward(toks).f32(), 1e-5, 1e-5),
    'scale_attn_weights false = W_Q*sqrt(d_head)',
  );
  const upcast = build({ reorder_and_upcast_attn: true }, undefined, NO_PROCESSING),
    plain = build({}, undefined, NO_PROCESSING);
  t.ok(
    allClose(upcast.forward(toks).f32(), plain.forward(toks).f32(), 0, 1e-6),
    'reorder_and_upcast_attn: f32 throughout, same numbers',
  );
  // untied lm_head: the logits read lm_head.weight, not wte
  const w = weights();
  const head = new Float32Array(shape.vocab_size * shape.n_embd).map((_, i) => Math.sin(i) * 0.1);
  const untied = build(
    { tie_word_embeddings: false },
    { ...w, 'lm_head.weight': { dtype: 'F32', shape: [shape.vocab_size, shape.n_embd], data: head } },
    NO_PROCESSING,
  );
  const { logits, cache } = untied.runWithCache(toks);
  const x = cache.get('ln_final.hook_normalized').f32(),
    want = new Float32Array(logits.size);
  for (let r = 0; r < 12; r++)
    for (let v = 0; v < shape.vocab_size; v++) {
      let s = 0;
      for (let m = 0; m < shape.n_embd; m++) s += x[r * shape.n_embd + m] * head[v * shape.n_embd + m];
      want[r * shape.vocab_size + v] = s;
    }
  t.ok(allClose(logits.f32(), want, 1e-5, 1e-5), 'untied lm_head is the unembedding');
  t.throws(() => build({ tie_word_embeddings: false }), /lm_head\.weight/, 'untied without lm_head.weight is refused');
  t.throws(() => build({ activation_function: 'silu' }), /activation_function/, 'unknown activation refused');
  const relu = build({ activation_function: 'relu' }, undefined, NO_PROCESSING);
  const post = relu.runWithCache(toks).cache;
  t.ok(
    post
      .get('blocks.0.mlp.hook_post')
      .f32()
      .every((v, i) => v === Math.max(0, post.get('blocks.0.mlp.hook_pre').f32()[i])),
    'relu honoured',
  );
  const inner = build({ n_inner: 20 }, {
    ...w,
    ...Object.fromEntries(
      Object.entries(w)
        .filter(([k]) => k.includes('mlp'))
        .map(([k, v]) => {
          const s = k.includes('c_fc.weight')
            ? [12, 20]
            : k.includes('c_fc.bias')
              ? [20]
              : k.includes('c_proj.weight')
                ? [20, 12]
                : v.shape;
          return [k, { dtype: 'F32', shape: s, data: new Float32Array(s.reduce((a, b) => a * b, 1)).fill(0.01) }];
        }),
    ),
  } as Record<string, StTensorOut>);
  t.equal(inner.cfg.d_mlp, 20, 'n_inner honoured');
  const eps = build({ layer_norm_epsilon: 0.5 });
  t.equal(eps.cfg.eps, 0.5, 'layer_norm_epsilon honoured');
  t.throws(() => build({ add_cross_attention: true }), /add_cross_attention/, 'cross attention refused');
  [inv, ref, noScale, ref2, upcast, plain, untied, relu, inner, eps].forEach((m) => m.dispose());
});

t.test('fault 6: small silent behaviours', async (t) => {
  const m = build();
  t.throws(() => m.toStrTokens(toks), /batch/, 'toStrTokens on [2, P] asserts');
  t.same(m.toStrTokens(toks.slice(0, 0, 1)).length, 6, 'toStrTokens on [1, P] is fine');
  const lines: string[] = [];
  const g = HookedTransformer.fromHFTensors(
    hfConfig({ ...shape, vocab_size: 50257 }),
    randomGPT2({ ...shape, vocab_size: 50257 }, 1),
  );
  testPrompt('The cat', ' sat', g, { printDetails: false, print: (l) => lines.push(l) });
  t.notOk(
    lines.some((l) => l.startsWith('Tokenized')),
    'printDetails false prints no tokenized lines',
  );
  t.ok(
    lines.some((l) => l.startsWith('Ranks')),
    'ranks still printed',
  );
  g.dispose();
  for (const n of [
    'blocks.0.hook_mlp_in',
    'blocks.0.hook_attn_in',
    'blocks.0.hook_q_input',
    'blocks.0.attn.hook_result',
  ]) {
    t.throws(() => m.addHook(n, () => {}), /use_|setUse/, `addHook on dormant ${n} asserts`);
  }
  // one clean prompt against a corrupted batch: the clean activation broadcasts over the batch
  const { cache } = m.runWithCache(toks.slice(0, 0, 1));
  const metric = (l: Tensor) => l.get(1, 5, 0);
  const got = patching.getActPatchResidPre(m, toks, cache, metric);
  const { cache: rep } = m.runWithCache(
    Tensor.from([
      [22, 3, 5, 9, 1, 4],
      [22, 3, 5, 9, 1, 4],
    ]),
  );
  const want = patching.getActPatchResidPre(m, toks, rep, metric);
  t.ok(allClose(got.f32(), want.f32(), 0, 1e-6), 'a [1, P] clean cache broadcasts over a [2, P] corrupted batch');
  m.dispose();
});

t.test('fault 3: left padding is masked and positions shifted', async (t) => {
  const m = build();
  const alone = m.forward(Tensor.from([[22, 3, 5]]));
  const padded = Tensor.from([
    [22, 22, 22, 22, 3, 5],
    [22, 8, 2, 2, 7, 11],
  ]);
  const mask = Tensor.from([
    [0, 0, 0, 1, 1, 1],
    [1, 1, 1, 1, 1, 1],
  ]);
  const out = m.forward(padded, { attentionMask: mask } as never);
  t.ok(
    allClose(out.index(0, 0).slice(0, 3, 6).f32(), alone.index(0, 0).f32(), 0, 1e-5),
    'padded row = prompt alone (explicit mask)',
  );
  const auto = m.forward(padded, { paddingSide: 'left' } as never);
  t.ok(
    allClose(auto.index(0, 0).slice(0, 3, 6).f32(), alone.index(0, 0).f32(), 0, 1e-5),
    'padded row = prompt alone (paddingSide left builds the mask)',
  );
  t.ok(
    allClose(
      out.index(0, 1).f32(),
      m
        .forward(padded.slice(0, 1, 2))
        .index(0, 0)
        .f32(),
      0,
      1e-5,
    ),
    'unpadded row unchanged',
  );
  m.dispose();
});
