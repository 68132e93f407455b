// Issue 12, silent fault 1: weight edits must reach the forward. setWeight / state-dict API
// against an independent reference (a model constructed, and packed, from the edited weights),
// detection of direct edits, analysis and forward agreeing after edits.
import t from 'tap';
import {
  HookedTransformer,
  randomGPT2,
  hfConfig,
  NO_PROCESSING,
  Tensor,
  TypelensError,
  add,
  sum,
} from '../src/index.js';
import type { Weights } from '../src/index.js';
import { maxAbsDiff } from './helpers.js';

const shape = { n_layer: 2, n_embd: 12, n_head: 3, n_positions: 8, vocab_size: 23 };
const build = (p = NO_PROCESSING as object) =>
  HookedTransformer.fromHFTensors(hfConfig(shape, 22), randomGPT2(shape, 7), p);
const tokens = Tensor.from([
  [1, 5, 9, 2, 17, 4],
  [3, 3, 8, 21, 0, 11],
]);

/** A model built from scratch (packed at construction) from a TL state dict: the independent reference. */
function fromStateDict(m: HookedTransformer, sd: Record<string, Tensor>): HookedTransformer {
  const c = (k: string) => sd[k] && new Tensor(Float32Array.from(sd[k].f32()), sd[k].shape);
  const W: Weights = {
    W_E: c('embed.W_E'),
    W_pos: c('pos_embed.W_pos'),
    W_U: c('unembed.W_U'),
    b_U: c('unembed.b_U'),
    ln_final_w: c('ln_final.w'),
    ln_final_b: c('ln_final.b'),
    blocks: Array.from({ length: m.cfg.n_layers }, (_, l) => {
      const g = (n: string) => c(`blocks.${l}.${n}`);
      return {
        ln1_w: g('ln1.w'),
        ln1_b: g('ln1.b'),
        ln2_w: g('ln2.w'),
        ln2_b: g('ln2.b'),
        W_Q: g('attn.W_Q'),
        W_K: g('attn.W_K'),
        W_V: g('attn.W_V'),
        W_O: g('attn.W_O'),
        b_Q: g('attn.b_Q'),
        b_K: g('attn.b_K'),
        b_V: g('attn.b_V'),
        b_O: g('attn.b_O'),
        W_in: g('mlp.W_in'),
        b_in: g('mlp.b_in'),
        W_out: g('mlp.W_out'),
        b_out: g('mlp.b_out'),
      };
    }),
  };
  return new HookedTransformer({ ...m.cfg }, W);
}

t.test('fault 1: a direct edit of a packed weight is never silently ignored', async (t) => {
  const m = build();
  const before = m.forward(tokens).f32().slice();
  m.weights.blocks[0].W_out.f32().fill(0); // what a TL user does: model.blocks[0].mlp.W_out.data.zero_()
  const sd = m.stateDict(); // holds the edited values
  const ref = fromStateDict(m, sd);
  let after: Float32Array | null = null,
    err: unknown = null;
  try {
    after = m.forward(tokens).f32();
  } catch (e) {
    err = e;
  }
  // either the edit takes effect, or it is refused with a message naming the weight
  if (err) {
    t.ok(err instanceof TypelensError, 'refused with a TypelensError', { found: String(err) });
    t.match((err as Error).message, /blocks\.0\.mlp\.W_out/, 'the refusal names the weight');
    t.match((err as Error).message, /setWeight/, 'the refusal points to setWeight');
  } else t.equal(maxAbsDiff(after!, ref.forward(tokens).f32()), 0, 'edit took effect');
  t.not(maxAbsDiff(before, ref.forward(tokens).f32()), 0, 'the edit matters');
  // recovering: hand the edited tensor back to the model
  m.setWeight('blocks.0.mlp.W_out', m.weights.blocks[0].W_out);
  t.equal(
    maxAbsDiff(m.forward(tokens).f32(), ref.forward(tokens).f32()),
    0,
    "after setWeight the forward is the edited model's",
  );
});

t.test('setWeight on every kind of parameter equals a model built from the edited weights (bit for bit)', async (t) => {
  const names = [
    'embed.W_E',
    'pos_embed.W_pos',
    'blocks.0.attn.W_Q',
    'blocks.1.attn.W_K',
    'blocks.0.attn.W_V',
    'blocks.1.attn.W_O',
    'blocks.0.attn.b_Q',
    'blocks.0.attn.b_V',
    'blocks.1.attn.b_O',
    'blocks.0.ln1.w',
    'blocks.1.ln2.b',
    'blocks.0.mlp.W_in',
    'blocks.1.mlp.b_in',
    'blocks.0.mlp.W_out',
    'blocks.1.mlp.b_out',
    'ln_final.w',
    'ln_final.b',
    'unembed.W_U',
    'unembed.b_U',
  ];
  for (const [i, name] of names.entries()) {
    const m = build();
    const sd = m.stateDict();
    const old = sd[name];
    const edited = new Tensor(
      old.f32().map((v, j) => (j % 3 === i % 3 ? -2 * v + 0.01 * j : v)),
      old.shape,
    );
    t.ok(m.setWeight(name, edited), `${name} changed`);
    sd[name] = edited;
    const ref = fromStateDict(m, sd);
    t.equal(maxAbsDiff(m.forward(tokens).f32(), ref.forward(tokens).f32()), 0, name);
    t.equal(maxAbsDiff(m.stateDict()[name].f32(), edited.f32()), 0, `${name} reads back`);
    t.notOk(m.setWeight(name, edited), `${name}: the same values again change nothing`);
    m.dispose();
    ref.dispose();
  }
});

t.test('setWeight errors: shape, name, folded LN, non-tensor', async (t) => {
  const m = build(),
    p = build({});
  t.throws(() => m.setWeight('blocks.0.mlp.W_out', Tensor.zeros([12, 48])), {
    code: 'ESHAPE',
    message: /blocks\.0\.mlp\.W_out.*\[12, 48\].*\[48, 12\]/,
  });
  t.throws(() => m.setWeight('blocks.0.mlp.W_nope', Tensor.zeros([1])), {
    code: 'EWEIGHT',
    message: /no such parameter/,
  });
  t.throws(() => m.setWeight('blocks.9.attn.W_Q', Tensor.zeros([1])), { code: 'EWEIGHT' });
  t.throws(() => p.setWeight('blocks.0.ln1.w', Tensor.zeros([12])), { code: 'EWEIGHT', message: /folded/ });
  t.throws(() => m.setWeight('unembed.b_U', [1, 2] as unknown as Tensor), { code: 'EINPUT' });
});

t.test('direct edits through any path are detected, naming the weight', async (t) => {
  const cases: [string, (m: HookedTransformer) => void][] = [
    [
      'blocks.1.attn.W_Q',
      (m) => {
        m.weights.blocks[1].W_Q.data[5] += 1;
      },
    ],
    [
      'blocks.0.attn.W_O',
      (m) => {
        m.weights.blocks[0].W_O.index(0, 1).assign(Tensor.zeros([4, 12]));
      },
    ],
    [
      'blocks.0.attn.b_K',
      (m) => {
        m.weights.blocks[0].b_K.f32()[0] = 3;
      },
    ],
    [
      'unembed.W_U',
      (m) => {
        const a = m.W_U.f32();
        const x = a[0];
        a[0] = a[1];
        a[1] = x;
      },
    ], // a swap
    [
      'blocks.1.ln2.w',
      (m) => {
        m.weights.blocks[1].ln2_w!.f32().fill(2);
      },
    ],
  ];
  for (const [name, edit] of cases) {
    const m = build();
    m.forward(tokens); // biases are read (exposed) by every forward: detection must still work
    edit(m);
    t.throws(() => m.forward(tokens), { code: 'EWEIGHTEDIT', message: new RegExp(name.replace(/\./g, '\\.')) }, name);
    t.throws(() => m.runWithCache(tokens), { code: 'EWEIGHTEDIT' }, `${name}: runWithCache too`);
    m.loadStateDict(m.stateDict()); // keep the edit: the model takes its own storage back
    t.doesNotThrow(() => m.forward(tokens), `${name}: consistent again`);
  }
  // references taken long before an edit are still watched
  const m = build();
  const held = m.weights.blocks[0].W_in.f32();
  m.forward(tokens);
  held[7] = 100;
  t.throws(() => m.forward(tokens), { code: 'EWEIGHTEDIT', message: /blocks\.0\.mlp\.W_in/ });
  // W_E / W_pos have no derived copy: direct edits take effect, as in TL
  const e = build();
  e.W_E.f32().fill(0.5, 0, 12);
  const sd = e.stateDict();
  t.equal(
    maxAbsDiff(e.forward(tokens).f32(), fromStateDict(e, sd).forward(tokens).f32()),
    0,
    'W_E edited in place takes effect',
  );
  // a model nobody read the big matrices of checks nothing big
  const fresh = build();
  fresh.forward(tokens);
  t.notOk(
    fresh.weightGuard.exposedNames().some((n) => /W_/.test(n)),
    'forward alone exposes no matrix',
  );
});

t.test('analysis and forward agree after edits (computeHeadResults, W_U directions)', async (t) => {
  const m = build();
  const WO = m.stateDict()['blocks.1.attn.W_O'];
  m.setWeight(
    'blocks.1.attn.W_O',
    new Tensor(
      WO.f32().map((v, i) => (i < 48 ? 0 : 3 * v)),
      WO.shape,
    ),
  );
  const { cache } = m.runWithCache(tokens);
  cache.computeHeadResults();
  const summed = add(sum(cache.get('blocks.1.attn.hook_result'), -2), m.weights.blocks[1].b_O);
  t.ok(
    maxAbsDiff(summed.f32(), cache.get('blocks.1.hook_attn_out').f32()) < 1e-5,
    'head results + b_O = hook_attn_out',
  );
  const WU = m.stateDict()['unembed.W_U'];
  m.setWeight(
    'unembed.W_U',
    new Tensor(
      WU.f32().map((v) => v * 0.5),
      WU.shape,
    ),
  );
  const logits = m.forward(tokens);
  const { cache: c2 } = m.runWithCache(tokens);
  const dir = m.tokensToResidualDirections(4); // [M]
  const x = c2.get('ln_final.hook_normalized').f32(),
    M = 12;
  let s = 0;
  for (let k = 0; k < M; k++) s += x[k] * dir.f32()[k];
  t.ok(Math.abs(s + m.b_U.f32()[4] - logits.f32()[4]) < 1e-5, 'residual direction · final resid = logit');
});

t.test('stateDict / loadStateDict / loadAndProcessStateDict / processWeights_', async (t) => {
  const a = build(),
    b = HookedTransformer.fromHFTensors(hfConfig(shape, 22), randomGPT2(shape, 8), NO_PROCESSING);
  t.same(Object.keys(a.stateDict()).slice(0, 4), ['embed.W_E', 'pos_embed.W_pos', 'blocks.0.ln1.w', 'blocks.0.ln1.b']);
  const sd = b.stateDict();
  const { changed } = a.loadStateDict(sd);
  t.same(
    Object.keys(sd).filter((k) => !changed.includes(k)),
    ['unembed.b_U'],
    'every parameter but b_U (zero in both) changed',
  );
  t.equal(maxAbsDiff(a.forward(tokens).f32(), b.forward(tokens).f32()), 0, 'loaded model = source');
  t.same(a.loadStateDict(sd).changed, [], 'loading the same again repacks nothing');
  const one = a.stateDict();
  one['blocks.1.mlp.W_in'] = Tensor.zeros([12, 48]);
  t.same(a.loadStateDict(one).changed, ['blocks.1.mlp.W_in'], 'only what changed');
  t.throws(() => a.loadStateDict({ 'blocks.0.mlp.W_in': Tensor.zeros([12, 48]) }), {
    code: 'EWEIGHT',
    message: /missing/,
  });
  t.same(a.loadStateDict({ 'blocks.0.mlp.W_in': Tensor.zeros([12, 48]) }, { strict: false }).changed, [
    'blocks.0.mlp.W_in',
  ]);
  t.throws(() => a.loadStateDict({ foo: Tensor.zeros([1]) }, { strict: false }), {
    code: 'EWEIGHT',
    message: /unexpected/,
  });
  t.throws(() => a.loadStateDict({ 'unembed.b_U': Tensor.zeros([3]) }, { strict: false }), { code: 'ESHAPE' });
  // process_weights_ on an unprocessed model = loading with from_pretrained's processing
  const raw = build(),
    processed = build({});
  raw.processWeights_();
  t.equal(raw.cfg.normalization_type, 'LNPre');
  t.notOk('blocks.0.ln1.w' in raw.stateDict(), 'LN weights folded away');
  t.equal(
    maxAbsDiff(raw.forward(tokens).f32(), processed.forward(tokens).f32()),
    0,
    'processWeights_ = processed load',
  );
  t.same(raw.processing, {
    foldLn: true,
    centerWritingWeights: true,
    centerUnembed: true,
    foldValueBiases: true,
    refactorFactoredAttnMatrices: false,
  });
  // load_and_process_state_dict: an unprocessed state dict into a processed model
  const target = build({});
  target.loadAndProcessStateDict(build().stateDict());
  t.equal(
    maxAbsDiff(target.forward(tokens).f32(), processed.forward(tokens).f32()),
    0,
    'loadAndProcessStateDict = processed load',
  );
  const unfolded = build({});
  unfolded.loadAndProcessStateDict(build().stateDict(), {
    foldLn: false,
    centerWritingWeights: false,
    centerUnembed: false,
    foldValueBiases: false,
  });
  t.equal(unfolded.cfg.normalization_type, 'LN', 'LN weights came back');
  t.equal(maxAbsDiff(unfolded.forward(tokens).f32(), build().forward(tokens).f32()), 0, 'unprocessed again');
});
