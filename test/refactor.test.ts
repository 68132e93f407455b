// refactorFactoredAttnMatrices (TL's refactor_factored_attn_matrices) through the fast factored SVD:
// it must change the factorisation, never the model. Tolerance: logits within 1e-4 absolute plus
// 1e-4 relative to the largest logit (f32 weights through up to 3 layers); per-head products and
// the orthogonality of the new factors within 1e-4 relative.
import t from 'tap';
import fc from 'fast-check';
import { invariants, maxAbsDiff } from './helpers.js';
import { HookedTransformer, randomGPT2, hfConfig, Tensor, matmul } from '../src/index.js';
import type { StTensorOut } from '../src/tensor/safetensors.js';

const arbCfg = fc.record({
  n_layer: fc.integer({ min: 1, max: 3 }),
  n_head: fc.integer({ min: 1, max: 3 }),
  d_head: fc.integer({ min: 2, max: 9 }),
  seed: fc.nat(),
  P: fc.integer({ min: 1, max: 7 }),
  /** Zero one V column of head 0 in layer 0: a rank-deficient OV factor (the Householder route). */
  deficient: fc.boolean(),
});
type Cfg = { n_layer: number; n_head: number; d_head: number; seed: number; P: number; deficient: boolean };
const V = 23;
const shapeOf = (c: Cfg) => ({
  n_layer: c.n_layer,
  n_embd: c.n_head * c.d_head,
  n_head: c.n_head,
  n_positions: 8,
  vocab_size: V,
});

function tensorsOf(c: Cfg): Record<string, StTensorOut> {
  const ts = randomGPT2(shapeOf(c), c.seed);
  if (c.deficient) {
    const M = c.n_head * c.d_head;
    const w = ts['h.0.attn.c_attn.weight'].data as Float32Array; // [M, 3M], V block last
    for (let m = 0; m < M; m++) w[m * 3 * M + 2 * M] = 0;
  }
  return ts;
}
const build = (c: Cfg, refactor: boolean) =>
  HookedTransformer.fromHFTensors(hfConfig(shapeOf(c), V - 1), tensorsOf(c), {
    refactorFactoredAttnMatrices: refactor,
  });

/** [a; 1] @ [b; 1]^T-style bilinear form of head (l, h): [W_Q; b_Q] [W_K; b_K]^T, [M+1, M+1]. */
function qkForm(m: HookedTransformer, l: number, h: number): Float32Array {
  const aug = (W: Tensor, b: Tensor) => {
    const w = W.index(0, l).index(0, h).contiguous(),
      bb = b.index(0, l).index(0, h).contiguous();
    const [M, D] = w.shape;
    const x = new Float32Array((M + 1) * D);
    x.set(w.f32());
    x.set(bb.f32(), M * D);
    return new Tensor(x, [M + 1, D]);
  };
  const q = aug(m.W_Q, m.b_Q),
    k = aug(m.W_K, m.b_K);
  return matmul(q, k.T.contiguous()).f32();
}
const ovProduct = (m: HookedTransformer, l: number, h: number) =>
  matmul(m.W_V.index(0, l).index(0, h).contiguous(), m.W_O.index(0, l).index(0, h).contiguous()).f32();
const scale = (x: Float32Array) => x.reduce((a, v) => Math.max(a, Math.abs(v)), 0);

t.test('refactoring keeps the logits and each head QK form and OV product, and balances the factors', async (t) => {
  const inv = invariants(t, [
    'logits equal the unrefactored ones',
    'each head QK bilinear form is kept',
    'each head OV product is kept',
    'W_O rows are orthonormal after the refactor',
  ]);
  await inv.run(() =>
    fc.assert(
      fc.property(arbCfg, (c) => {
        const a = build(c, false),
          b = build(c, true);
        try {
          const tok = Tensor.from(
            Array.from({ length: c.P }, (_, i) => (c.seed + 5 * i) % V),
            [1, c.P],
          );
          const la = a.forward(tok).f32(),
            lb = b.forward(tok).f32();
          const d = maxAbsDiff(la, lb);
          inv.check('logits equal the unrefactored ones', d <= 1e-4 + 1e-4 * scale(la), () => `max |diff| ${d}`);
          for (let l = 0; l < c.n_layer; l++)
            for (let h = 0; h < c.n_head; h++) {
              const qa = qkForm(a, l, h),
                qb = qkForm(b, l, h);
              inv.check(
                'each head QK bilinear form is kept',
                maxAbsDiff(qa, qb) <= 1e-4 * scale(qa) + 1e-7,
                () => `L${l}H${h}: max |diff| ${maxAbsDiff(qa, qb)} of ${scale(qa)}`,
              );
              const oa = ovProduct(a, l, h),
                ob = ovProduct(b, l, h);
              inv.check(
                'each head OV product is kept',
                maxAbsDiff(oa, ob) <= 1e-4 * scale(oa) + 1e-7,
                () => `L${l}H${h}: max |diff| ${maxAbsDiff(oa, ob)} of ${scale(oa)}`,
              );
              const WO = b.W_O.index(0, l).index(0, h).contiguous(); // [D, M]
              const gram = matmul(WO, WO.T.contiguous()).f32();
              const D = WO.shape[0];
              const eye = Float32Array.from({ length: D * D }, (_, i) => (i % (D + 1) === 0 ? 1 : 0));
              // rank-deficient heads keep zero rows for their zero singular values
              const ok =
                maxAbsDiff(gram, eye) <= 1e-4 ||
                (c.deficient && gram.every((g, i) => Math.abs(g - eye[i]) <= 1e-4 || (i % (D + 1) === 0 && g < 1e-4)));
              inv.check(
                'W_O rows are orthonormal after the refactor',
                ok,
                () => `L${l}H${h}: |W_O W_O^T - I| ${maxAbsDiff(gram, eye)}`,
              );
            }
        } finally {
          a.dispose();
          b.dispose();
        }
      }),
      { numRuns: 30 },
    ),
  );
});
