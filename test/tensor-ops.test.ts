// Property tests of every tensor op against naive loops over multi-indices.
// Tolerances: elementwise ops exact (same f32 arithmetic); reductions and matmul 1e-5
// relative + 1e-5 absolute (the reference sums in f64, the op in f64 then rounds, or in f32).
import t from 'tap';
import { invariants } from './helpers.js';
import fc from 'fast-check';
import * as O from '../src/tensor/index.js';
import { Tensor, numel } from '../src/tensor/index.js';
import { allClose, allIndices, arbShape, arbTensor, arbTensorOf, arbValues } from './helpers.js';

const runs = { numRuns: 60 };
const ref = (shape: readonly number[], f: (idx: number[]) => number) => allIndices(shape).map(f);

t.test('f32() of a permuted, strided or broadcast view = get() at every multi-index (the tiled gather)', async (t) => {
  const GATHER = 'f32() of a non-contiguous view equals get() element by element, in row-major order';
  const inv = invariants(t, [GATHER]);
  // shapes up to 70 on an axis so that the 32 x 32 tiles have ragged edges
  const arbView = fc
    .tuple(
      fc.array(fc.integer({ min: 1, max: 70 }), { minLength: 2, maxLength: 4 }),
      fc.nat(),
      fc.boolean(),
      fc.boolean(),
    )
    .filter(([shape]) => numel(shape) <= 20000)
    .map(([shape, seed, step, bcast]) => {
      const x = Tensor.from(
        Array.from({ length: numel(shape) }, (_, i) => ((i * 7919 + seed) % 1000) / 7),
        shape,
      );
      const perm = [...shape.keys()].sort((a, b) => ((a * 31 + seed) % 7) - ((b * 31 + seed) % 7));
      let v = x.permute(...perm);
      if (step && v.shape[0] > 2) v = v.slice(0, 1, v.shape[0], 2);
      if (bcast) v = v.unsqueeze(0).expand([2, ...v.shape]);
      return v;
    });
  await inv.run(() =>
    fc.assert(
      fc.property(arbView, (v) => {
        const flat = v.f32();
        inv.check(GATHER, flat.length === v.size && allIndices(v.shape).every((idx, i) => v.get(...idx) === flat[i]));
      }),
      { numRuns: 40 },
    ),
  );
});

t.test('views: get() through permute/slice/index agrees with the contiguous copy', async (t) => {
  const CONTIG = 'get() through a view = the contiguous copy, element by element';
  const contig = invariants(t, [CONTIG]);
  await contig.run(() =>
    fc.assert(
      fc.property(arbTensor(1, 4), (x) => {
        const c = x.contiguous();
        const flat = c.f32();
        contig.check(
          CONTIG,
          allIndices(x.shape).every((idx, i) => x.get(...idx) === flat[i]),
        );
      }),
      runs,
    ),
  );
  const SLICE_LEN = 'slice(start, end, step) has the length Python gives',
    SLICE_AT = 'slice(start, end, step) picks the elements Python picks';
  const sliced = invariants(t, [SLICE_LEN, SLICE_AT]);
  await sliced.run(() =>
    fc.assert(
      fc.property(
        arbTensor(1, 3, 7),
        fc.integer({ min: -8, max: 8 }),
        fc.integer({ min: -8, max: 8 }),
        fc.integer({ min: 1, max: 3 }),
        (x, s, e, step) => {
          const y = x.slice(0, s, e, step);
          const n = x.shape[0];
          const py: number[] = [];
          const norm = (v: number) => Math.min(Math.max(v < 0 ? v + n : v, 0), n);
          for (let i = norm(s); i < norm(e); i += step) py.push(i);
          sliced.check(
            SLICE_LEN,
            y.shape[0] === py.length,
            () => `[${s}:${e}:${step}] of ${n}: ${y.shape[0]} vs ${py.length}`,
          );
          sliced.check(
            SLICE_AT,
            allIndices(y.shape).every((idx) => y.get(...idx) === x.get(py[idx[0]], ...idx.slice(1))),
          );
        },
      ),
      runs,
    ),
  );
  const x = Tensor.from([
    [1, 2, 3],
    [4, 5, 6],
  ]);
  t.same(x.index(1, -1).toArray(), [3, 6]);
  t.same(x.T.toNested(), [
    [1, 4],
    [2, 5],
    [3, 6],
  ]);
  t.same(x.reshape([3, -1]).shape, [3, 2]);
  t.throws(() => x.index(0, 2), /out of range/);
  t.throws(() => x.reshape([4, 2]), /cannot reshape/);
});

t.test('broadcast add/sub/mul/div equal the naive loop (exact)', async (t) => {
  const arbPair = arbShape(1, 4, 5).chain((s) =>
    fc.tuple(
      arbTensorOf(s),
      fc.array(fc.boolean(), { minLength: s.length, maxLength: s.length }).chain((ones) => {
        const s2 = s.map((d, i) => (ones[i] ? 1 : d)).slice(fc.sample(fc.integer({ min: 0, max: 0 }), 1)[0]);
        return arbTensorOf(s2);
      }),
    ),
  );
  for (const [name, f, g] of [
    ['add', O.add, (a: number, b: number) => a + b],
    ['sub', O.sub, (a: number, b: number) => a - b],
    ['mul', O.mul, (a: number, b: number) => a * b],
    ['div', O.div, (a: number, b: number) => a / b],
  ] as const) {
    const SHAPE = `${name}: the output has the broadcast shape`,
      EXACT = `${name}: every element = the f32 scalar op (exact)`;
    const inv = invariants(t, [SHAPE, EXACT]);
    await inv.run(() =>
      fc.assert(
        fc.property(arbPair, fc.boolean(), ([a, b], swap) => {
          const [x, y] = swap ? [b, a] : [a, b];
          const out = f(x, y);
          const shape = O.broadcastShapes(x.shape, y.shape);
          const at = (z: Tensor, idx: number[]) =>
            z.get(...idx.slice(idx.length - z.ndim).map((v, i) => (z.shape[i] === 1 ? 0 : v)));
          const want = ref(shape, (idx) => Math.fround(g(at(x, idx), at(y, idx))));
          // exact, with 0/0 = NaN on both sides counted as equal
          const got = out.f32();
          inv.check(
            SHAPE,
            out.shape.join() === shape.join() && got.length === want.length,
            () => `[${out.shape}] vs [${shape}]`,
          );
          const bad = want.findIndex((v, i) => !(Object.is(Math.fround(v), got[i]) || v === got[i]));
          inv.check(EXACT, bad < 0, () => `element ${bad}: ${got[bad]} vs ${want[bad]}`);
        }),
        runs,
      ),
    );
  }
  t.throws(() => O.add(Tensor.zeros([2, 3]), Tensor.zeros([4])), /do not broadcast/);
});

t.test('sum/mean/max/min/argmax over any axis', async (t) => {
  const SHAPE = 'sum keeps (keepdim) or drops the reduced axis',
    SUM = 'sum = the naive sum',
    MEAN = 'mean = the naive mean';
  const MAX = 'max = the naive max (exact)',
    MIN = 'min = the naive min (exact)',
    ARGMAX = 'argmax = the first index of the max';
  const inv = invariants(t, [SHAPE, SUM, MEAN, MAX, MIN, ARGMAX]);
  await inv.run(() =>
    fc.assert(
      fc.property(arbTensor(1, 4), fc.integer({ min: 0, max: 3 }), fc.boolean(), (x, ax0, keep) => {
        const ax = ax0 % x.ndim;
        const outShape = x.shape.filter((_, d) => d !== ax);
        const col = (idx: number[]) =>
          Array.from({ length: x.shape[ax] }, (_, i) => {
            const full = [...idx];
            full.splice(ax, 0, i);
            return x.get(...full);
          });
        const s = O.sum(x, ax, keep),
          m = O.mean(x, ax),
          mx = O.max(x, ax),
          mn = O.min(x, ax),
          am = O.argmax(x, ax);
        const shapeOk = keep ? s.shape.length === x.ndim && s.shape[ax] === 1 : s.shape.length === x.ndim - 1;
        inv.check(SHAPE, shapeOk, () => `[${s.shape}] from [${x.shape}] over axis ${ax}, keepdim ${keep}`);
        inv.check(
          SUM,
          allClose(
            s.f32(),
            ref(outShape, (i) => col(i).reduce((a, b) => a + b, 0)),
            1e-5,
            1e-5,
          ),
        );
        inv.check(
          MEAN,
          allClose(
            m.f32(),
            ref(outShape, (i) => col(i).reduce((a, b) => a + b, 0) / x.shape[ax]),
            1e-5,
            1e-5,
          ),
        );
        inv.check(
          MAX,
          allClose(
            mx.f32(),
            ref(outShape, (i) => Math.max(...col(i))),
            0,
            0,
          ),
        );
        inv.check(
          MIN,
          allClose(
            mn.f32(),
            ref(outShape, (i) => Math.min(...col(i))),
            0,
            0,
          ),
        );
        inv.check(
          ARGMAX,
          allClose(
            am.f32(),
            ref(outShape, (i) => {
              const c = col(i);
              return c.indexOf(Math.max(...c));
            }),
            0,
            0,
          ),
        );
      }),
      runs,
    ),
  );
  t.equal(O.sum(Tensor.from([1, 2, 3])).item(), 6);
});

t.test('layerNorm and LNPre: (x - mean)/sqrt(var + eps), scale keeps a trailing 1', async (t) => {
  const SCALE_SHAPE = 'scale keeps a trailing axis of 1',
    SCALE = 'scale = sqrt(var + eps)';
  const NORMALIZED = 'normalized = (x - mean) / scale (to the conditioning of the row)',
    OUT = 'out = normalized * w + b';
  const inv = invariants(t, [SCALE_SHAPE, SCALE, NORMALIZED, OUT]);
  await inv.run(() =>
    fc.assert(
      fc.property(arbShape(1, 3, 6), fc.integer({ min: 1, max: 9 }), (lead, d) => {
        const shape = [...lead, d];
        const x = fc.sample(arbTensorOf(shape), 1)[0];
        const w = Tensor.from(fc.sample(arbValues(d), 1)[0], [d]),
          b = Tensor.from(fc.sample(arbValues(d), 1)[0], [d]);
        const eps = 1e-5;
        const { scale, normalized, out } = O.layerNorm(x, eps, w, b);
        const stats = (idx: number[]) => {
          const row = Array.from({ length: d }, (_, i) => x.get(...idx, i));
          const mu = row.reduce((a, c) => a + c, 0) / d;
          const v = row.reduce((a, c) => a + (c - mu) ** 2, 0) / d;
          return { row, mu, s: Math.sqrt(v + eps) };
        };
        const wantS = ref(lead, (i) => stats(i).s);
        // f32 centring loses ~1 ulp of max|row|, amplified by 1/scale: the tolerance says so
        // (rows of near-equal values have scale ~ sqrt(eps) and are ill-conditioned in any f32 code)
        inv.check(
          SCALE_SHAPE,
          scale.shape.length === shape.length && scale.shape[shape.length - 1] === 1,
          () => `[${scale.shape}] for [${shape}]`,
        );
        inv.check(SCALE, allClose(scale.f32(), wantS, 1e-5, 1e-6));
        for (const i of allIndices(shape)) {
          const st = stats(i.slice(0, -1)),
            k = i[i.length - 1];
          const want = (st.row[k] - st.mu) / st.s,
            wantOut = want * w.get(k) + b.get(k);
          const tol = 1e-4 * (1 + Math.abs(want)) + (4e-7 * (1 + Math.max(...st.row.map(Math.abs)))) / st.s;
          const off = i.reduce((acc, v, a) => acc * shape[a] + v, 0);
          inv.check(
            NORMALIZED,
            Math.abs(normalized.f32()[off] - want) <= tol,
            () => `[${i}]: ${normalized.f32()[off]} vs ${want}`,
          );
          inv.check(
            OUT,
            Math.abs(out.f32()[off] - wantOut) <= tol * (1 + Math.abs(w.get(k))) + 1e-5 * (1 + Math.abs(b.get(k))),
            () => `[${i}]: ${out.f32()[off]} vs ${wantOut}`,
          );
        }
      }),
      { numRuns: 40 },
    ),
  );
});

t.test('softmax with causal mask: rows sum to 1, masked entries are -inf then 0', async (t) => {
  const MASKED = 'maskCausal puts -inf above the diagonal',
    ZERO = 'softmax gives masked entries exactly 0';
  const KEPT = 'maskCausal keeps the diagonal and below',
    SOFTMAX = 'softmax of the kept entries = exp(x - max) / sum (1e-6)';
  const inv = invariants(t, [MASKED, KEPT, ZERO, SOFTMAX]);
  await inv.run(() =>
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 7 }), (h, p) => {
        const x = fc.sample(arbTensorOf([h, p, p]), 1)[0];
        const masked = O.maskCausal(x);
        const sm = O.softmax(masked);
        for (const [a, i, j] of allIndices([h, p, p])) {
          if (j > i) {
            inv.check(MASKED, masked.get(a, i, j) === -Infinity, () => `[${a}, ${i}, ${j}]`);
            inv.check(ZERO, sm.get(a, i, j) === 0, () => `[${a}, ${i}, ${j}]: ${sm.get(a, i, j)}`);
            continue;
          }
          inv.check(KEPT, masked.get(a, i, j) === x.get(a, i, j), () => `[${a}, ${i}, ${j}]`);
          const row = Array.from({ length: i + 1 }, (_, k) => x.get(a, i, k));
          const m = Math.max(...row);
          const z = row.reduce((s, v) => s + Math.exp(v - m), 0);
          const want = Math.exp(x.get(a, i, j) - m) / z;
          inv.check(
            SOFTMAX,
            Math.abs(sm.get(a, i, j) - want) < 1e-6,
            () => `[${a}, ${i}, ${j}]: ${sm.get(a, i, j)} vs ${want}`,
          );
        }
      }),
      runs,
    ),
  );
  t.same(O.softmax(Tensor.from([-Infinity, -Infinity])).toArray(), [0, 0], 'all-masked rows give 0, not NaN');
  const LOG = 'logSoftmax = log(softmax)';
  const log = invariants(t, [LOG]);
  await log.run(() =>
    fc.assert(
      fc.property(arbTensor(1, 3), (x) =>
        log.check(LOG, allClose(O.logSoftmax(x).f32(), O.softmax(x).f32().map(Math.log), 1e-4, 1e-5)),
      ),
      runs,
    ),
  );
});

t.test('gelu_new is the tanh approximation', async (t) => {
  const GELU = 'gelu_new = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (1e-6 relative)';
  const inv = invariants(t, [GELU]);
  await inv.run(() =>
    fc.assert(
      fc.property(arbTensor(1, 3), (x) =>
        inv.check(
          GELU,
          allClose(
            O.geluNew(x).f32(),
            ref(x.shape, (i) => {
              const v = x.get(...i);
              return 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3)));
            }),
            1e-6,
            1e-7,
          ),
        ),
      ),
      runs,
    ),
  );
});

t.test('embedding, indexSelect, cat, stack', async (t) => {
  const EMBED = 'embedding(W, ids)[i] = W[ids[i]]',
    SELECT = 'indexSelect(W, 0, ids)[i] = W[ids[i]]';
  const rows = invariants(t, [EMBED, SELECT]);
  await rows.run(() =>
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 9 }),
        fc.integer({ min: 1, max: 5 }),
        fc.array(fc.nat(), { minLength: 1, maxLength: 7 }),
        (V, M, raw) => {
          const W = fc.sample(arbTensorOf([V, M]), 1)[0];
          const ids = raw.map((r) => r % V);
          const e = O.embedding(W, ids);
          const s = O.indexSelect(W, 0, ids);
          rows.check(
            EMBED,
            allIndices([ids.length, M]).every(([i, m]) => e.get(i, m) === W.get(ids[i], m)),
          );
          rows.check(
            SELECT,
            allIndices([ids.length, M]).every(([i, m]) => s.get(i, m) === W.get(ids[i], m)),
          );
        },
      ),
      runs,
    ),
  );
  t.throws(() => O.embedding(Tensor.zeros([5, 2]), [1, 5]), /token id 5 at index 1 is outside the vocabulary \[0, 5\)/);
  const CAT = 'cat places each part after the previous one along the axis',
    STACK = 'stack puts part k at index k of a new axis';
  const joined = invariants(t, [CAT, STACK]);
  await joined.run(() =>
    fc.assert(
      fc.property(
        arbShape(1, 3, 4),
        fc.integer({ min: 0, max: 2 }),
        fc.integer({ min: 1, max: 3 }),
        (shape, ax0, n) => {
          const ax = ax0 % shape.length;
          const parts = Array.from({ length: n }, (_, k) => {
            const s = [...shape];
            s[ax] = k + 1;
            return fc.sample(arbTensorOf(s), 1)[0];
          });
          const c = O.cat(parts, ax);
          const st = O.stack(
            parts.map((p) => p.slice(ax, 0, 1)),
            ax,
          );
          const okCat = allIndices(c.shape).every((idx) => {
            let i = idx[ax],
              k = 0;
            while (i >= parts[k].shape[ax]) {
              i -= parts[k].shape[ax];
              k++;
            }
            const j = [...idx];
            j[ax] = i;
            return c.get(...idx) === parts[k].get(...j);
          });
          const okStack = allIndices(st.shape).every((idx) => {
            const j = [...idx];
            const k = j.splice(ax, 1)[0];
            return st.get(...idx) === parts[k].slice(ax, 0, 1).get(...j);
          });
          joined.check(CAT, okCat, () => `${n} parts of [${shape}] on axis ${ax}`);
          joined.check(STACK, okStack, () => `${n} parts of [${shape}] on axis ${ax}`);
        },
      ),
      runs,
    ),
  );
});

t.test('matmul (2-D and batched, broadcast, non-contiguous) equals the naive triple loop', async (t) => {
  const TWO_D = 'a [(nb,) M, K] @ [K, N] = the triple loop (broadcast over the batch)',
    BATCHED = 'a [nb, M, K] @ [nb, K, N] = the triple loop per batch';
  const inv = invariants(t, [TWO_D, BATCHED]);
  await inv.run(() =>
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 13 }),
        fc.integer({ min: 1, max: 19 }),
        fc.integer({ min: 1, max: 21 }),
        fc.integer({ min: 0, max: 3 }),
        (M, K, N, nb) => {
          const a = fc.sample(arbTensorOf(nb ? [nb, M, K] : [M, K]), 1)[0];
          const b = fc.sample(arbTensorOf([K, N]), 1)[0];
          const b3 = nb > 1 ? fc.sample(arbTensorOf([nb, K, N]), 1)[0] : b;
          const c = O.matmul(a, b),
            c3 = O.matmul(a, b3);
          const dot = (ia: number[], bb: Tensor, ib: number[], n: number) => {
            let s = 0;
            for (let k = 0; k < K; k++) s += a.get(...ia, k) * bb.get(...ib, k, n);
            return s;
          };
          const want = ref(c.shape, (i) => dot(i.slice(0, -1), b, [], i[i.length - 1]));
          const want3 = ref(c3.shape, (i) => dot(i.slice(0, -1), b3, b3.ndim === 3 ? [i[0]] : [], i[i.length - 1]));
          inv.check(TWO_D, allClose(c.f32(), want, 1e-5, 1e-5), () => `M ${M}, K ${K}, N ${N}, nb ${nb}`);
          inv.check(BATCHED, allClose(c3.f32(), want3, 1e-5, 1e-5), () => `M ${M}, K ${K}, N ${N}, nb ${nb}`);
        },
      ),
      runs,
    ),
  );
  t.throws(() => O.matmul(Tensor.zeros([2, 3]), Tensor.zeros([4, 2])), /inner dimensions differ/);
});

t.test('einsum for the analysis patterns', async (t) => {
  const NAMED = "einsum('c batch d_model, batch d_model -> c') = the naive sum",
    LETTERS = "einsum('cbm,bm->cb') = the naive sum";
  const inv = invariants(t, [NAMED, LETTERS]);
  await inv.run(() =>
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 4 }),
        fc.integer({ min: 1, max: 5 }),
        fc.integer({ min: 1, max: 6 }),
        (C, B, M) => {
          const st = fc.sample(arbTensorOf([C, B, M]), 1)[0];
          const dirs = fc.sample(arbTensorOf([B, M]), 1)[0];
          const e = O.einsum('c batch d_model, batch d_model -> c', st, dirs);
          const e2 = O.einsum('cbm,bm->cb', st, dirs);
          const want = ref([C], ([c]) => {
            let s = 0;
            for (let b = 0; b < B; b++) for (let m = 0; m < M; m++) s += st.get(c, b, m) * dirs.get(b, m);
            return s;
          });
          const want2 = ref([C, B], ([c, b]) => {
            let s = 0;
            for (let m = 0; m < M; m++) s += st.get(c, b, m) * dirs.get(b, m);
            return s;
          });
          inv.check(NAMED, allClose(e.f32(), want, 1e-5, 1e-5), () => `C ${C}, B ${B}, M ${M}`);
          inv.check(LETTERS, allClose(e2.f32(), want2, 1e-5, 1e-5), () => `C ${C}, B ${B}, M ${M}`);
        },
      ),
      runs,
    ),
  );
});

t.test('topk sorts descending with indices; svd reconstructs', async (t) => {
  const TOPK_SHAPE = 'topk keeps k per row',
    AT_INDEX = 'each topk value is the input at its index',
    SORTED = 'topk values are the k largest, descending';
  const top = invariants(t, [TOPK_SHAPE, AT_INDEX, SORTED]);
  await top.run(() =>
    fc.assert(
      fc.property(arbTensor(1, 2, 9), fc.nat(), (x, k0) => {
        const n = x.shape[x.ndim - 1];
        const k = k0 % (n + 1);
        const { values, indices } = O.topk(x, k);
        top.check(
          TOPK_SHAPE,
          values.shape.join() === [...x.shape.slice(0, -1), k].join() && indices.shape.join() === values.shape.join(),
          () => `[${values.shape}] for k ${k} of [${x.shape}]`,
        );
        for (const idx of allIndices(values.shape)) {
          const row = idx.slice(0, -1);
          const v = values.get(...idx),
            i = indices.get(...idx);
          const sorted = Array.from({ length: n }, (_, j) => x.get(...row, j)).sort((a, b) => b - a);
          top.check(AT_INDEX, v === x.get(...row, i), () => `[${idx}]: ${v} at index ${i}`);
          top.check(
            SORTED,
            v === sorted[idx[idx.length - 1]],
            () => `[${idx}]: ${v} vs ${sorted[idx[idx.length - 1]]}`,
          );
        }
      }),
      runs,
    ),
  );
  const RECONSTRUCTS = 'U diag(S) V^T reconstructs the matrix (1e-4)',
    ORDERED = 'singular values are non-negative and descending';
  const svd = invariants(t, [RECONSTRUCTS, ORDERED]);
  await svd.run(() =>
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 8 }), fc.integer({ min: 1, max: 8 }), (r, c) => {
        const m = fc.sample(arbTensorOf([r, c]), 1)[0];
        const { U, S, V } = O.svd(m);
        const rec = O.matmul(O.mul(U, S), V.T);
        const sv = S.toArray();
        svd.check(RECONSTRUCTS, allClose(rec.f32(), m.contiguous().f32(), 1e-4, 1e-4), () => `${r}x${c}`);
        svd.check(
          ORDERED,
          sv.every((s, i) => s >= 0 && (i === 0 || s <= sv[i - 1] + 1e-6)),
          () => `S = [${sv}]`,
        );
      }),
      runs,
    ),
  );
});

t.test('half storage round-trips within the format precision', async (t) => {
  const BF16 = 'bf16 round-trips to 2^-8 relative',
    F16 = 'f16 round-trips to 2^-11 relative (2^-24 absolute for subnormals)';
  const inv = invariants(t, [BF16, F16]);
  await inv.run(() =>
    fc.assert(
      fc.property(arbValues(33), (vals) => {
        const x = Float32Array.from(vals);
        const bf = Tensor.encode(x, [33], 'bf16').f32(),
          h = Tensor.encode(x, [33], 'f16').f32();
        inv.check(BF16, allClose(bf, x, 2 ** -8, 1e-30));
        inv.check(F16, allClose(h, x, 2 ** -11, 2 ** -24));
      }),
      runs,
    ),
  );
  t.equal(numel([2, 3, 4]), 24);
});
