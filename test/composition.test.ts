// Composition scores against their definition, ||W_A W_B||_F / (||W_A||_F ||W_B||_F), computed in
// float64 by hand from the factors (TL's orientation: row vectors, so W_A = OV = W_V W_O acts
// first and W_B is the later head's QK = W_Q W_K^T, its transpose, or its OV). Tolerance: scores
// lie in [0, 1] and f32 rounding through the collapsed SVDs moves them by ~1e-7; 1e-5 absolute.
import t from 'tap';
import fc from 'fast-check';
import { HookedTransformer, randomGPT2, hfConfig, NO_PROCESSING, Tensor } from '../src/index.js';
import type { ProcessingOptions } from '../src/index.js';
import { FactoredMatrix } from '../src/tensor/factored-matrix.js';
import { compositionScores, allCompositionScores, qkCircuit, ovCircuit } from '../src/analysis/composition.js';
import { bcast, frob, indices, item, M64, maxDiff, mm, randn, tr, invariant } from './weight-space-ref.js';
import { invariants } from './helpers.js';

const TOL = 1e-5;
const sameShape = (a: readonly number[], b: readonly number[]) =>
  a.length === b.length && a.every((d, i) => d === b[i]);
const score = (x: M64, y: M64) => frob(mm(x, y)) / frob(x) / frob(y);
const dense = (fm: FactoredMatrix, idx: number[]) => mm(item(fm.A, idx), item(fm.B, idx));
const at = (x: Tensor, idx: number[]) => x.get(...idx);

/** Two factored matrices whose inner product dimension R matches; leading axes of 0..2 dims each. */
const arbPair = (broadcastable: boolean) =>
  fc
    .record({
      ll: fc.array(fc.integer({ min: 1, max: 3 }), { maxLength: 2 }),
      lr: fc.array(fc.integer({ min: 1, max: 3 }), { maxLength: 2 }),
      ones: fc.array(fc.boolean(), { minLength: 2, maxLength: 2 }),
      a: fc.integer({ min: 1, max: 6 }),
      m1: fc.integer({ min: 1, max: 6 }),
      R: fc.integer({ min: 1, max: 7 }),
      m2: fc.integer({ min: 1, max: 6 }),
      b: fc.integer({ min: 1, max: 6 }),
      seed: fc.nat({ max: 1e9 }),
    })
    .map((c) => {
      // for broadcasting the right's leading axes are the left's, some of them 1
      const lr = broadcastable ? c.ll.map((d, i) => (c.ones[i] ? 1 : d)) : c.lr;
      const left = new FactoredMatrix(randn([...c.ll, c.a, c.m1], c.seed), randn([...c.ll, c.m1, c.R], c.seed + 1));
      const right = new FactoredMatrix(randn([...lr, c.R, c.m2], c.seed + 2), randn([...lr, c.m2, c.b], c.seed + 3));
      return { left, right, ll: c.ll, lr };
    });

t.test('compositionScores', async (t) => {
  invariant(
    t,
    'broadcastDims: [...left lead, ...right lead] of ||L R|| / (||L|| ||R||) in float64',
    arbPair(false),
    ({ left, right, ll, lr }) => {
      const s = compositionScores(left, right);
      if (!sameShape(s.shape, [...ll, ...lr])) return false;
      return indices(ll).every((i) =>
        indices(lr).every((j) => Math.abs(at(s, [...i, ...j]) - score(dense(left, i), dense(right, j))) <= TOL),
      );
    },
  );

  invariant(t, 'broadcastDims false: leading axes broadcast pairwise', arbPair(true), ({ left, right, ll, lr }) => {
    const s = compositionScores(left, right, { broadcastDims: false });
    const lead = bcast(ll, lr);
    if (!sameShape(s.shape, lead)) return false;
    return indices(lead).every((i) => Math.abs(at(s, i) - score(dense(left, i), dense(right, i))) <= TOL);
  });

  invariant(t, 'scores lie in [0, 1] (the Frobenius norm is submultiplicative)', arbPair(false), ({ left, right }) =>
    compositionScores(left, right)
      .toArray()
      .every((x) => x >= 0 && x <= 1 + TOL),
  );

  invariant(
    t,
    'a scalar multiple of either side leaves the scores unchanged',
    fc.tuple(arbPair(false), fc.double({ min: 0.1, max: 10, noNaN: true })),
    ([{ left, right }, k]) => {
      const base = compositionScores(left, right).toArray();
      return compositionScores(left.mul(k), right.mul(-k))
        .toArray()
        .every((x, i) => Math.abs(x - base[i]) <= TOL);
    },
  );

  t.throws(
    () =>
      compositionScores(
        new FactoredMatrix(randn([3, 2], 1), randn([2, 4], 2)),
        new FactoredMatrix(randn([5, 2], 3), randn([2, 3], 4)),
      ),
    { code: 'ESHAPE' },
    'left.rdim must equal right.ldim',
  );
});

const arbModel = fc.record({
  n_layer: fc.integer({ min: 1, max: 3 }),
  n_head: fc.integer({ min: 1, max: 3 }),
  d_head: fc.integer({ min: 2, max: 5 }),
  vocab_size: fc.integer({ min: 5, max: 20 }),
  seed: fc.nat({ max: 1e9 }),
  processed: fc.boolean(),
});
type MCfg = { n_layer: number; n_head: number; d_head: number; vocab_size: number; seed: number; processed: boolean };
function build(c: MCfg): HookedTransformer {
  const s = {
    n_layer: c.n_layer,
    n_embd: c.n_head * c.d_head,
    n_head: c.n_head,
    n_positions: 8,
    vocab_size: c.vocab_size,
  };
  const p: ProcessingOptions = c.processed ? { refactorFactoredAttnMatrices: true } : NO_PROCESSING;
  return HookedTransformer.fromHFTensors(hfConfig(s, c.vocab_size - 1), randomGPT2(s, c.seed), p);
}
const withModel = (f: (m: HookedTransformer, c: MCfg) => boolean) => (c: MCfg) => {
  const m = build(c);
  try {
    return f(m, c);
  } finally {
    m.dispose();
  }
};

t.test('QK / OV circuits and allCompositionScores on random models', async (t) => {
  const QK_SHAPE = 'qkCircuit is [L, H, M, M] with inner dim d_head';
  const OV_SHAPE = 'ovCircuit is [L, H, M, M] with inner dim d_head';
  const QK = 'qkCircuit is W_Q W_K^T per head';
  const OV = 'ovCircuit is W_V W_O per head';
  const inv = invariants(t, [QK_SHAPE, OV_SHAPE, QK, OV]);
  await inv.run(() =>
    fc.assert(
      fc.property(
        arbModel,
        withModel((m, c) => {
          const qk = qkCircuit(m),
            ov = ovCircuit(m),
            M = c.n_head * c.d_head;
          inv.check(
            QK_SHAPE,
            sameShape(qk.shape, [c.n_layer, c.n_head, M, M]) && qk.mdim === c.d_head,
            () => `[${qk.shape}], mdim ${qk.mdim}`,
          );
          inv.check(
            OV_SHAPE,
            sameShape(ov.shape, [c.n_layer, c.n_head, M, M]) && ov.mdim === c.d_head,
            () => `[${ov.shape}], mdim ${ov.mdim}`,
          );
          const WQ = m.W_Q,
            WK = m.W_K,
            WV = m.W_V,
            WO = m.W_O;
          for (const i of indices([c.n_layer, c.n_head])) {
            const q = mm(item(WQ, i), tr(item(WK, i))),
              o = mm(item(WV, i), item(WO, i));
            inv.check(
              QK,
              maxDiff(dense(qk, i), q) <= 1e-6 * (1 + frob(q)),
              () => `head [${i}]: max |diff| ${maxDiff(dense(qk, i), q)}`,
            );
            inv.check(
              OV,
              maxDiff(dense(ov, i), o) <= 1e-6 * (1 + frob(o)),
              () => `head [${i}]: max |diff| ${maxDiff(dense(ov, i), o)}`,
            );
          }
          return true;
        }),
      ),
      { numRuns: Number(process.env.TYPELENS_FC_RUNS ?? 15) },
    ),
  );

  for (const mode of ['Q', 'K', 'V'] as const) {
    invariant(
      t,
      `allCompositionScores('${mode}') is the definition for earlier -> later heads and 0 elsewhere`,
      arbModel,
      withModel((m, c) => {
        const s = allCompositionScores(m, mode);
        const { n_layer: L, n_head: H } = c;
        if (!sameShape(s.shape, [L, H, L, H])) return false;
        const WQ = m.W_Q,
          WK = m.W_K,
          WV = m.W_V,
          WO = m.W_O;
        const ov = (l: number, h: number) => mm(item(WV, [l, h]), item(WO, [l, h]));
        const qk = (l: number, h: number) => mm(item(WQ, [l, h]), tr(item(WK, [l, h])));
        const right = (l: number, h: number) => (mode === 'Q' ? qk(l, h) : mode === 'K' ? tr(qk(l, h)) : ov(l, h));
        return indices([L, H, L, H]).every(([l1, h1, l2, h2]) => {
          const got = s.get(l1, h1, l2, h2);
          return l2 <= l1 ? got === 0 : Math.abs(got - score(ov(l1, h1), right(l2, h2))) <= TOL;
        });
      }),
      10,
    );
  }

  const m = build({ n_layer: 2, n_head: 2, d_head: 3, vocab_size: 7, seed: 5, processed: false });
  t.throws(() => allCompositionScores(m, 'X' as 'Q'), { code: 'EINVAL' }, 'an unknown mode is refused');
  // the model's getters (TL's model.QK / model.OV / model.all_composition_scores) are the same functions
  const same = (a: Tensor, b: Tensor) =>
    sameShape(a.shape, b.shape) && a.f32().every((v, i) => Object.is(v, b.f32()[i]));
  t.ok(same(m.QK.AB, qkCircuit(m).AB) && same(m.OV.AB, ovCircuit(m).AB), 'model.QK / model.OV = qkCircuit / ovCircuit');
  t.ok(
    (['Q', 'K', 'V'] as const).every((k) => same(m.allCompositionScores(k), allCompositionScores(m, k))),
    'model.allCompositionScores = allCompositionScores',
  );
  m.dispose();
});
