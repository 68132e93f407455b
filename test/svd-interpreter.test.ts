// SVDInterpreter on hand-built tiny models: one head's OV circuit, and one layer's W_in and W_out,
// get a planted rank-1 component 9 e_q e_k^T (or 4 e_0 e_k^T) far above the N(0, 0.02) weights,
// and token t's unembedding column gets 5 e_k, so the top right singular vector is +-e_k and
// the token it writes is t. Every processing option is tried (folding LN and centring change
// the weights but not which token wins). The top vector's projection is also checked against a
// float64 dense SVD (ml-matrix) up to sign, to 1e-4 of the largest projection.
import t from 'tap';
import fc from 'fast-check';
import { Matrix, SingularValueDecomposition } from 'ml-matrix';
import { HookedTransformer, randomGPT2, hfConfig, NO_PROCESSING } from '../src/index.js';
import type { ProcessingOptions } from '../src/index.js';
import { SVDInterpreter } from '../src/analysis/svd-interpreter.js';
import type { SingularVectorType } from '../src/analysis/svd-interpreter.js';
import { item, M64, mm, tr } from './weight-space-ref.js';
import { invariants } from './helpers.js';

const arbPlant = fc
  .record({
    n_layer: fc.integer({ min: 1, max: 2 }),
    n_head: fc.integer({ min: 1, max: 3 }),
    d_head: fc.integer({ min: 3, max: 5 }),
    vocab_size: fc.integer({ min: 8, max: 24 }),
    seed: fc.nat({ max: 1e9 }),
    pick: fc.nat(),
    processing: fc.constantFrom<[string, ProcessingOptions]>(
      ['none', NO_PROCESSING],
      ['default', {}],
      ['foldLn', { ...NO_PROCESSING, foldLn: true }],
    ),
  })
  .map((c) => {
    const H = c.n_head,
      D = c.d_head,
      M = H * D,
      F = 4 * M,
      V = c.vocab_size;
    const layer = c.pick % c.n_layer,
      head = (c.pick >> 3) % H,
      k = (c.pick >> 6) % M,
      q = (c.pick >> 10) % M,
      tok = (c.pick >> 14) % (V - 1);
    const s = { n_layer: c.n_layer, n_embd: M, n_head: H, n_positions: 8, vocab_size: V };
    // built inside each property run (and disposed there): processing edits the weight arrays in place
    const build = () => {
      const w = randomGPT2(s, c.seed);
      const data = (name: string) => w[name].data as Float32Array;
      data('wte.weight')[tok * M + k] += 5; // W_U = wte^T: token tok's column gets 5 e_k
      const p = `h.${layer}.`;
      data(p + 'attn.c_attn.weight')[q * 3 * M + 2 * M + head * D] += 3; // W_V[head][q, 0]
      data(p + 'attn.c_proj.weight')[head * D * M + k] += 3; // W_O[head][0, k]
      data(p + 'mlp.c_fc.weight')[k * F] += 4; // W_in[k, 0]: W_in^T row 0 = 4 e_k
      data(p + 'mlp.c_proj.weight')[k] += 4; // W_out[0, k]
      return HookedTransformer.fromHFTensors(hfConfig(s, V - 1), w, c.processing[1]);
    };
    return {
      build,
      layer,
      head,
      tok,
      M,
      V,
      D,
      processing: c.processing[0],
      toString: () => `${JSON.stringify(s)} layer ${layer} head ${head} k ${k} token ${tok} ${c.processing[0]}`,
    };
  });

/** Top right singular vector of a dense float64 matrix, projected on W_U (f64). */
function denseTopProjection(mat: M64, WU: M64): number[] {
  const m = new Matrix(mat.r, mat.c);
  for (let i = 0; i < mat.r; i++) for (let j = 0; j < mat.c; j++) m.set(i, j, mat.d[i * mat.c + j]);
  const v = new SingularValueDecomposition(m, { autoTranspose: true }).rightSingularVectors.getColumn(0);
  return Array.from({ length: WU.c }, (_, t) => v.reduce((s, x, i) => s + x * WU.d[i * WU.c + t], 0));
}

const types: SingularVectorType[] = ['OV', 'w_in', 'w_out'];

t.test('SVDInterpreter on models with a planted top singular vector', async (t) => {
  const runs = { numRuns: Number(process.env.TYPELENS_FC_RUNS ?? 20) };
  for (const type of types) {
    const SHAPE = `${type}: getSingularVectors is [d_vocab, 1, numVectors]`;
    const RAW_TOP = `${type}: the top singular vector's largest |entry| is the planted token`;
    const ONE_PER_VECTOR = `${type}: topTokens gives one entry per singular vector`;
    const TOP_ID = `${type}: topTokens' first id is the planted token`;
    const TOP_POSITIVE = `${type}: topTokens' first value is positive`;
    const TOP_STRING = `${type}: topTokens' first token is the planted token's string`;
    const DESCENDING = `${type}: topTokens' values are in descending order`;
    const inv = invariants(t, [SHAPE, RAW_TOP, ONE_PER_VECTOR, TOP_ID, TOP_POSITIVE, TOP_STRING, DESCENDING]);
    await inv.run(() =>
      fc.assert(
        fc.property(arbPlant, ({ build, layer, head, tok, V }) => {
          const model = build();
          try {
            const si = new SVDInterpreter(model);
            const opts = { layerIndex: layer, headIndex: head, numVectors: 2 };
            const vecs = si.getSingularVectors(type, opts);
            inv.check(
              SHAPE,
              vecs.shape.length === 3 && vecs.shape[0] === V && vecs.shape[1] === 1 && vecs.shape[2] === 2,
              () => `[${vecs.shape}], want [${V}, 1, 2]`,
            );
            const col = Array.from({ length: V }, (_, i) => vecs.get(i, 0, 0));
            const byAbs = col.reduce((b, x, i) => (Math.abs(x) > Math.abs(col[b]) ? i : b), 0);
            inv.check(RAW_TOP, byAbs === tok, () => `token ${byAbs}, planted ${tok}`);
            const top = si.topTokens(type, { ...opts, k: 3 });
            inv.check(ONE_PER_VECTOR, top.length === 2, () => `${top.length} entries`);
            inv.check(TOP_ID, top[0].ids[0] === tok, () => `id ${top[0].ids[0]}, planted ${tok}`);
            inv.check(TOP_POSITIVE, top[0].values[0] > 0, () => `value ${top[0].values[0]}`);
            inv.check(
              TOP_STRING,
              top[0].tokens[0] === model.toStrTokens([tok])[0],
              () => `${JSON.stringify(top[0].tokens[0])} vs ${JSON.stringify(model.toStrTokens([tok])[0])}`,
            );
            inv.check(
              DESCENDING,
              top[0].values[0] >= top[0].values[1] && top[0].values[1] >= top[0].values[2],
              () => `values [${top[0].values}]`,
            );
          } finally {
            model.dispose();
          }
        }),
        runs,
      ),
    );
  }

  const projections = types.map(
    (type) => `${type}: the top vector equals a float64 dense SVD's, projected on W_U, up to sign` as const,
  );
  const inv = invariants(t, projections);
  await inv.run(() =>
    fc.assert(
      fc.property(arbPlant, ({ build, layer, head, V }) => {
        const model = build();
        try {
          const si = new SVDInterpreter(model);
          const WU = item(model.W_U, []);
          const ln2 = model.weights.blocks[layer].ln2_w;
          const win = tr(item(model.W_in.index(0, layer), []));
          if (ln2) for (let i = 0; i < win.r; i++) for (let j = 0; j < win.c; j++) win.d[i * win.c + j] *= ln2.get(j);
          const dense: Record<SingularVectorType, M64> = {
            OV: mm(item(model.W_V, [layer, head]), item(model.W_O, [layer, head])),
            w_in: win,
            w_out: item(model.W_out.index(0, layer), []),
          };
          types.forEach((type, n) => {
            const got = Array.from({ length: V }, (_, i) =>
              si.getSingularVectors(type, { layerIndex: layer, headIndex: head, numVectors: 1 }).get(i, 0, 0),
            );
            const want = denseTopProjection(dense[type], WU);
            const scale = Math.max(...want.map(Math.abs));
            const sign = Math.sign(got.reduce((s, x, i) => s + x * want[i], 0)) || 1;
            const worst = Math.max(...got.map((x, i) => Math.abs(sign * x - want[i])));
            inv.check(
              projections[n],
              got.every((x, i) => Math.abs(sign * x - want[i]) <= 1e-4 * scale),
              () => `max |diff| ${worst} > ${1e-4 * scale}`,
            );
          });
        } finally {
          model.dispose();
        }
      }),
      runs,
    ),
  );
});

t.test("SVDInterpreter argument checks (TL's assertions)", async (t) => {
  const s = { n_layer: 2, n_embd: 6, n_head: 2, n_positions: 8, vocab_size: 9 };
  const m = HookedTransformer.fromHFTensors(hfConfig(s, 8), randomGPT2(s, 3), NO_PROCESSING);
  const si = new SVDInterpreter(m);
  t.throws(
    () => si.getSingularVectors('OV', { layerIndex: 0 }),
    /Head index optional only for w_in and w_out/,
    'OV needs a head',
  );
  t.throws(
    () => si.getSingularVectors('OV', { layerIndex: 2, headIndex: 0 }),
    /Layer index must be between 0 and 1/,
    'layer out of range',
  );
  t.throws(
    () => si.getSingularVectors('OV', { layerIndex: 0, headIndex: 2 }),
    /Head index must be between 0 and 1/,
    'head out of range',
  );
  t.throws(
    () => si.getSingularVectors('OV', { layerIndex: 0, headIndex: 0, numVectors: 4 }),
    /numVectors must be an integer in \[1, 3\]/,
    'OV has d_head singular vectors',
  );
  t.throws(
    () => si.getSingularVectors('QK' as 'OV', { layerIndex: 0, headIndex: 0 }),
    /Vector type must be in/,
    'unknown vector type',
  );
  t.same(
    si.getSingularVectors('w_out', { layerIndex: 1, numVectors: 6 }).shape,
    [9, 1, 6],
    'w_out: [d_vocab, 1, numVectors]',
  );
  t.throws(
    () => si.getSingularVectors('w_in', { layerIndex: 1 }),
    /numVectors must be an integer in \[1, 6\]/,
    'the default of 10 vectors is more than d_model = 6 here',
  );
  m.dispose();
});
