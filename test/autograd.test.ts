// Property tests of the gradient tape (src/autograd). Every op's gradient is compared with
// central finite differences of an independent float64 reference written as plain JS loops
// (h = 1e-6·max(1,|x|): truncation ~1e-12, f64 rounding ~1e-10). The tape computes in f32,
// so the tolerance is derived from f32 precision: |g - fd| <= 2e-4·(1 + max|fd|) + 1e-3·|fd|
// (f32 unit roundoff 6e-8 times the depth and fan-in of these small graphs, with margin).
// Scalars are formed as Σ out·R with a random fixed R, so the seed gradient is not uniform.
import t from 'tap';
import fc from 'fast-check';
import { Tensor, numel } from '../src/tensor/index.js';
import { getBackend } from '../src/kernels/index.js';
import { invariants } from './helpers.js';
import {
  ag,
  grad,
  hookGrad,
  PackCache,
  plainWeight,
  headsInWeight,
  headsOutWeight,
  withGrad,
  currentTape,
  reduceToShape,
} from '../src/autograd/index.js';

const be = getBackend();
const cache = new PackCache(be);
t.teardown(() => cache.release());

type F64 = Float64Array;
const RUNS = { numRuns: 12 };
if (process.env.FC_SEED) fc.configureGlobal({ seed: Number(process.env.FC_SEED) });

function rand(seed: number) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return (((x ^ (x >>> 14)) >>> 0) / 4294967296) * 2 - 1;
  };
}
/** A random f32 tensor (values exactly representable, so f64 references see the same inputs). */
function randT(shape: number[], seed: number, scale = 1, offset = 0): Tensor {
  const r = rand(seed);
  return new Tensor(
    Float32Array.from({ length: numel(shape) }, () => offset + scale * r()),
    shape,
  );
}
const f64 = (x: Tensor) => Float64Array.from(x.f32());

/** Autograd gradients of Σ f(xs)·R vs central differences of the f64 reference. */
function checkGrads(
  fT: (...xs: Tensor[]) => Tensor,
  fRef: (xs: F64[]) => ArrayLike<number>,
  xs: Tensor[],
  seed: number,
): { ok: boolean; worst: number; detail?: string } {
  const out0 = fT(...xs);
  const R = randT([...out0.shape], seed + 7);
  const { grads } = grad((...ins) => ag.sum(ag.mul(fT(...ins), R)), xs);
  const Rv = f64(R);
  const scalar = (vs: F64[]) => {
    const o = fRef(vs);
    let s = 0;
    for (let i = 0; i < o.length; i++) s += o[i] * Rv[i];
    return s;
  };
  const base = xs.map(f64);
  let ok = true,
    worst = 0,
    detail = '';
  xs.forEach((x, k) => {
    const g = grads[k].f32();
    const fd = new Float64Array(x.size);
    for (let i = 0; i < x.size; i++) {
      const h = 1e-6 * Math.max(1, Math.abs(base[k][i]));
      const p = base.map((b) => Float64Array.from(b)),
        m = base.map((b) => Float64Array.from(b));
      p[k][i] += h;
      m[k][i] -= h;
      fd[i] = (scalar(p) - scalar(m)) / (2 * h);
    }
    const mx = fd.reduce((a, v) => Math.max(a, Math.abs(v)), 0);
    for (let i = 0; i < fd.length; i++) {
      const err = Math.abs(g[i] - fd[i]);
      worst = Math.max(worst, err / (1 + mx));
      if (!(err <= 2e-4 * (1 + mx) + 1e-3 * Math.abs(fd[i]))) {
        ok = false;
        detail += ` input ${k}[${i}]: tape ${g[i]} fd ${fd[i]};`;
      }
    }
  });
  return { ok, worst, detail };
}

// ------------------------------------------------------------- f64 references
const strides = (s: number[]) => {
  const r = new Array(s.length);
  let a = 1;
  for (let i = s.length - 1; i >= 0; i--) {
    r[i] = a;
    a *= s[i];
  }
  return r;
};
function bcastRef(a: F64, as: number[], b: F64, bs: number[], f: (x: number, y: number) => number): F64 {
  const n = Math.max(as.length, bs.length);
  const A = [...Array(n - as.length).fill(1), ...as],
    B = [...Array(n - bs.length).fill(1), ...bs];
  const os = A.map((d, i) => Math.max(d, B[i]));
  const sa = strides(A),
    sb = strides(B),
    so = strides(os);
  const out = new Float64Array(numel(os));
  for (let o = 0; o < out.length; o++) {
    let ia = 0,
      ib = 0;
    for (let d = 0; d < n; d++) {
      const i = Math.floor(o / so[d]) % os[d];
      if (A[d] > 1) ia += i * sa[d];
      if (B[d] > 1) ib += i * sb[d];
    }
    out[o] = f(a[ia], b[ib]);
  }
  return out;
}
function rowsRef(x: F64, n: number, f: (row: F64) => F64): F64 {
  const out = new Float64Array(x.length);
  for (let o = 0; o < x.length; o += n) out.set(f(x.subarray(o, o + n)), o);
  return out;
}
const softmaxRow = (r: F64) => {
  const m = Math.max(...r);
  const e = r.map((v) => Math.exp(v - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
};
const logSoftmaxRow = (r: F64) => {
  const m = Math.max(...r);
  const l = m + Math.log(r.reduce((a, v) => a + Math.exp(v - m), 0));
  return r.map((v) => v - l);
};
const lnRow = (eps: number) => (r: F64) => {
  const mu = r.reduce((a, b) => a + b, 0) / r.length;
  const c = r.map((v) => v - mu);
  const s = Math.sqrt(c.reduce((a, v) => a + v * v, 0) / r.length + eps);
  return c.map((v) => v / s);
};
const GC = Math.sqrt(2 / Math.PI);
const geluNewRef = (v: number) => 0.5 * v * (1 + Math.tanh(GC * (v + 0.044715 * v ** 3)));
/** [R, K] @ [K, N] in f64. */
function mm(a: F64, b: F64, R: number, K: number, N: number): F64 {
  const o = new Float64Array(R * N);
  for (let r = 0; r < R; r++)
    for (let k = 0; k < K; k++) {
      const av = a[r * K + k];
      for (let n = 0; n < N; n++) o[r * N + n] += av * b[k * N + n];
    }
  return o;
}
/** Causal attention in f64: q, k, v [P, H, D] -> scores [H, P, P] (-inf masked), z [P, H, D]. */
function attnRef(q: F64, k: F64, v: F64, P: number, H: number, D: number, scale: number) {
  const sc = new Float64Array(H * P * P),
    pat = new Float64Array(H * P * P),
    z = new Float64Array(P * H * D);
  for (let h = 0; h < H; h++)
    for (let i = 0; i < P; i++) {
      for (let j = 0; j < P; j++) {
        let s = 0;
        for (let d = 0; d < D; d++) s += q[(i * H + h) * D + d] * k[(j * H + h) * D + d];
        sc[(h * P + i) * P + j] = j > i ? -Infinity : s / scale;
      }
      pat.set(softmaxRow(sc.subarray((h * P + i) * P, (h * P + i + 1) * P)), (h * P + i) * P);
      for (let j = 0; j <= i; j++)
        for (let d = 0; d < D; d++) z[(i * H + h) * D + d] += pat[(h * P + i) * P + j] * v[(j * H + h) * D + d];
    }
  return { sc, pat, z };
}

// ------------------------------------------------------------- shapes
const arbBroadcastPair = fc
  .tuple(
    fc.array(fc.integer({ min: 1, max: 4 }), { minLength: 1, maxLength: 3 }),
    fc.integer({ min: 0, max: 2 ** 31 - 1 }),
    fc.array(fc.boolean(), { minLength: 3, maxLength: 3 }),
    fc.integer({ min: 0, max: 2 }),
  )
  .map(([s, seed, ones, drop]) => {
    const b = s.map((d, i) => (ones[i] ? 1 : d)).slice(Math.min(drop, s.length - 1));
    return { as: s, bs: b, seed };
  });
const seedArb = fc.integer({ min: 0, max: 2 ** 31 - 1 });

t.test('binary ops: gradients match finite differences, with broadcasting reduce-to-shape', async (t) => {
  const ops: [string, (a: Tensor, b: Tensor) => Tensor, (x: number, y: number) => number][] = [
    ['add', ag.add, (x, y) => x + y],
    ['sub', ag.sub, (x, y) => x - y],
    ['mul', ag.mul, (x, y) => x * y],
    ['div', ag.div, (x, y) => x / y],
  ];
  for (const [name, op, ref] of ops) {
    const FD = `${name}: d/da and d/db (broadcast operands summed back to their shapes) match finite differences`;
    const inv = invariants(t, [FD]);
    await inv.run(() =>
      fc.assert(
        fc.property(arbBroadcastPair, fc.boolean(), ({ as, bs, seed }, swap) => {
          const [sa, sb] = swap ? [bs, as] : [as, bs];
          const a = randT(sa, seed),
            b = name === 'div' ? randT(sb, seed + 1, 1, 2) : randT(sb, seed + 1);
          const r = checkGrads(op, ([x, y]) => bcastRef(x, sa, y, sb, ref), [a, b], seed);
          inv.check(FD, r.ok, () => `[${sa}] ${name} [${sb}]:${r.detail}`);
        }),
        RUNS,
      ),
    );
  }
});

t.test('reduceToShape sums the broadcast axes', async (t) => {
  const g = Float32Array.from({ length: 24 }, (_, i) => i);
  const r = reduceToShape(g, [2, 3, 4], [3, 1]);
  const want = [0, 1, 2].map((j) => {
    let s = 0;
    for (let i = 0; i < 2; i++) for (let k = 0; k < 4; k++) s += (i * 3 + j) * 4 + k;
    return s;
  });
  t.same(Array.from(r), want, 'a [2,3,4] gradient reduced to [3,1] holds the sums over the broadcast axes');
});

t.test('unary ops: gradients match finite differences', async (t) => {
  const ops: [string, (x: Tensor) => Tensor, (v: number) => number, number][] = [
    ['neg', ag.neg, (v) => -v, 0],
    ['exp', ag.exp, Math.exp, 0],
    ['log', ag.log, Math.log, 2],
    ['sqrt', ag.sqrt, Math.sqrt, 2],
    ['square', ag.square, (v) => v * v, 0],
    ['tanh', ag.tanh, Math.tanh, 0],
    ['geluNew', ag.geluNew, geluNewRef, 0],
    ['gelu', ag.gelu, (v) => 0.5 * v * (1 + ag.erf(v / Math.SQRT2)), 0],
    ['relu', ag.relu, (v) => Math.max(v, 0), 0],
  ];
  for (const [name, op, ref, off] of ops) {
    const FD = `${name}: gradient matches finite differences`;
    const inv = invariants(t, [FD]);
    await inv.run(() =>
      fc.assert(
        fc.property(
          fc.array(fc.integer({ min: 1, max: 5 }), { minLength: 1, maxLength: 3 }),
          seedArb,
          (shape, seed) => {
            let x = randT(shape, seed, 1.5, off);
            if (name === 'relu' && x.f32().some((v) => Math.abs(v) < 1e-3)) x = randT(shape, seed + 3, 1, 2); // away from the kink
            const r = checkGrads(op, ([v]) => v.map(ref), [x], seed);
            inv.check(FD, r.ok, () => `shape [${shape}]:${r.detail}`);
          },
        ),
        RUNS,
      ),
    );
  }
});

t.test('reductions and views: gradients match finite differences', async (t) => {
  const SUM_AX = 'sum over an axis (keepdim or not) matches finite differences';
  const MEAN_AX = 'mean over an axis (keepdim or not) matches finite differences';
  const SUM_ALL = 'sum over everything matches finite differences';
  const red = invariants(t, [SUM_AX, MEAN_AX, SUM_ALL]);
  await red.run(() =>
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 1, max: 4 }), { minLength: 1, maxLength: 4 }),
        seedArb,
        fc.boolean(),
        (shape, seed, keep) => {
          const x = randT(shape, seed),
            ax = seed % shape.length;
          const s = strides(shape),
            outShape = shape.filter((_, i) => i !== ax);
          const ref =
            (mean: boolean) =>
            ([v]: F64[]) => {
              const o = new Float64Array(numel(outShape));
              for (let i = 0; i < v.length; i++) {
                let oi = 0,
                  os = 1;
                for (let d = shape.length - 1; d >= 0; d--)
                  if (d !== ax) {
                    oi += (Math.floor(i / s[d]) % shape[d]) * os;
                    os *= shape[d];
                  }
                o[oi] += v[i] / (mean ? shape[ax] : 1);
              }
              return o;
            };
          const where = `shape [${shape}], axis ${ax}, keepdim ${keep}:`;
          const sumAx = checkGrads((v) => ag.sum(v, ax, keep), ref(false), [x], seed);
          red.check(SUM_AX, sumAx.ok, () => where + sumAx.detail);
          const meanAx = checkGrads((v) => ag.mean(v, ax, keep), ref(true), [x], seed);
          red.check(MEAN_AX, meanAx.ok, () => where + meanAx.detail);
          const sumAll = checkGrads(
            (v) => ag.sum(v),
            ([v]) => [v.reduce((a, b) => a + b, 0)],
            [x],
            seed,
          );
          red.check(SUM_ALL, sumAll.ok, () => where + sumAll.detail);
        },
      ),
      RUNS,
    ),
  );
  // views are selections: the reference picks elements by the same view over an index tensor
  const views: [string, (x: Tensor) => Tensor, (t: Tensor) => Tensor][] = [
    ['slice', (x) => ag.slice(x, 1, 1, 4, 2), (t) => t.slice(1, 1, 4, 2)],
    ['index', (x) => ag.index(x, 0, -1), (t) => t.index(0, -1)],
    ['permute', (x) => ag.permute(x, 2, 0, 1), (t) => t.permute(2, 0, 1)],
    ['transpose', (x) => ag.transpose(x), (t) => t.transpose()],
    ['reshape', (x) => ag.reshape(ag.permute(x, 1, 0, 2), [-1, 2]), (t) => t.permute(1, 0, 2).reshape([-1, 2])],
    [
      'expand',
      (x) => ag.expand(ag.unsqueeze(ag.index(x, 2, 0), 0), [3, 2, 5]),
      (t) => t.index(2, 0).unsqueeze(0).expand([3, 2, 5]),
    ],
    ['squeeze', (x) => ag.squeeze(ag.slice(x, 0, 0, 1), 0), (t) => t.slice(0, 0, 1).squeeze(0)],
    ['contiguous', (x) => ag.contiguous(ag.transpose(x, 0, 2)), (t) => t.transpose(0, 2).contiguous()],
  ];
  for (const [name, f, fIdx] of views) {
    const VIEW = `${name}: gradient scatters back through the view`;
    const inv = invariants(t, [VIEW]);
    await inv.run(() =>
      fc.assert(
        fc.property(seedArb, (seed) => {
          const x = randT([2, 5, 4], seed);
          const idx = fIdx(
            new Tensor(
              Float32Array.from({ length: 40 }, (_, i) => i),
              [2, 5, 4],
            ),
          ).f32();
          const r = checkGrads(f, ([v]) => Array.from(idx, (i) => v[i]), [x], seed);
          inv.check(VIEW, r.ok, () => r.detail ?? '');
        }),
        { numRuns: 3 },
      ),
    );
  }
  const GATHER = 'gather (repeated indices included) scatter-adds its gradient';
  const gather = invariants(t, [GATHER]);
  await gather.run(() =>
    fc.assert(
      fc.property(seedArb, (seed) => {
        const x = randT([2, 3, 6], seed);
        const r = rand(seed + 5);
        const idx = new Tensor(
          Float32Array.from({ length: 2 * 3 * 4 }, () => Math.floor((r() + 1) * 3)),
          [2, 3, 4],
        );
        const iv = idx.f32();
        const res = checkGrads(
          (v) => ag.gather(v, idx),
          ([v]) => Array.from(iv, (j, i) => v[Math.floor(i / 4) * 6 + j]),
          [x],
          seed,
        );
        gather.check(GATHER, res.ok, () => res.detail ?? '');
      }),
      RUNS,
    ),
  );
});

t.test('softmax family and losses: gradients match finite differences', async (t) => {
  const shapeArb = fc.tuple(
    fc.integer({ min: 1, max: 3 }),
    fc.integer({ min: 1, max: 4 }),
    fc.integer({ min: 2, max: 7 }),
  );
  const SOFTMAX = 'softmax gradient matches finite differences';
  const LOG_SOFTMAX = 'logSoftmax gradient matches finite differences';
  const LOSS = 'lmCrossEntropyLoss (fused softmax - onehot backward) matches finite differences';
  const sm = invariants(t, [SOFTMAX]),
    lsm = invariants(t, [LOG_SOFTMAX]),
    loss = invariants(t, [LOSS]);
  await sm.run(() =>
    fc.assert(
      fc.property(shapeArb, seedArb, ([a, b, n], seed) => {
        const r = checkGrads(ag.softmax, ([v]) => rowsRef(v, n, softmaxRow), [randT([a, b, n], seed, 3)], seed);
        sm.check(SOFTMAX, r.ok, () => `[${a}, ${b}, ${n}]:${r.detail}`);
      }),
      RUNS,
    ),
  );
  await lsm.run(() =>
    fc.assert(
      fc.property(shapeArb, seedArb, ([a, b, n], seed) => {
        const r = checkGrads(ag.logSoftmax, ([v]) => rowsRef(v, n, logSoftmaxRow), [randT([a, b, n], seed, 3)], seed);
        lsm.check(LOG_SOFTMAX, r.ok, () => `[${a}, ${b}, ${n}]:${r.detail}`);
      }),
      RUNS,
    ),
  );
  await loss.run(() =>
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 3 }),
        fc.integer({ min: 2, max: 5 }),
        fc.integer({ min: 2, max: 9 }),
        seedArb,
        (B, P, V, seed) => {
          const r = rand(seed + 1);
          const tok = new Tensor(
            Float32Array.from({ length: B * P }, () => Math.floor(((r() + 1) / 2) * V) % V),
            [B, P],
          );
          const tv = tok.f32();
          const ref = ([v]: F64[]) => {
            let s = 0;
            for (let b = 0; b < B; b++)
              for (let p = 0; p < P - 1; p++) {
                const row = logSoftmaxRow(v.subarray((b * P + p) * V, (b * P + p + 1) * V));
                s -= row[tv[b * P + p + 1]];
              }
            return [s / (B * (P - 1))];
          };
          const res = checkGrads((lg) => ag.lmCrossEntropyLoss(lg, tok), ref, [randT([B, P, V], seed, 3)], seed);
          loss.check(LOSS, res.ok, () => `[${B}, ${P}, ${V}]:${res.detail}`);
        },
      ),
      RUNS,
    ),
  );
  // softmax over a causal mask: -inf entries get zero gradient
  const x = Tensor.from([
    [0.5, -Infinity],
    [0.1, 0.3],
  ]);
  const { grads } = grad(
    (v) =>
      ag.sum(
        ag.mul(
          ag.softmax(v),
          Tensor.from([
            [1, 2],
            [3, 4],
          ]),
        ),
      ),
    [x],
  );
  t.equal(grads[0].get(0, 1), 0, 'a masked (-inf) score has zero gradient');
});

t.test('layer norm pieces: gradients match finite differences', async (t) => {
  const CENTRE = 'centre matches finite differences';
  const RMS = 'rmsScale (TL hook_scale) matches finite differences';
  const LN = 'the composed layerNorm with w and b matches finite differences';
  const inv = invariants(t, [CENTRE, RMS, LN]);
  await inv.run(() =>
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 4 }), fc.integer({ min: 2, max: 9 }), seedArb, (R, M, seed) => {
        const x = randT([R, M], seed, 2, 0.3),
          w = randT([M], seed + 1, 1, 1),
          b = randT([M], seed + 2);
        const eps = 1e-5;
        const c = checkGrads(
          ag.centre,
          ([v]) =>
            rowsRef(v, M, (r) => {
              const mu = r.reduce((a, q) => a + q, 0) / M;
              return r.map((q) => q - mu);
            }),
          [x],
          seed,
        );
        inv.check(CENTRE, c.ok, () => `[${R}, ${M}]:${c.detail}`);
        const s = checkGrads(
          (v) => ag.rmsScale(v, eps),
          ([v]) =>
            Array.from({ length: R }, (_, i) =>
              Math.sqrt(v.subarray(i * M, i * M + M).reduce((a, q) => a + q * q, 0) / M + eps),
            ),
          [x],
          seed,
        );
        inv.check(RMS, s.ok, () => `[${R}, ${M}]:${s.detail}`);
        const ln = checkGrads(
          (v, ww, bb) => ag.layerNorm(v, eps, ww, bb),
          ([v, ww, bb]) => {
            const n = rowsRef(v, M, lnRow(eps));
            return n.map((q, i) => q * ww[i % M] + bb[i % M]);
          },
          [x, w, b],
          seed,
        );
        inv.check(LN, ln.ok, () => `[${R}, ${M}]:${ln.detail}`);
      }),
      RUNS,
    ),
  );
});

t.test('embedding, matmul and linear: gradients match finite differences', async (t) => {
  const EMBED = 'embedding scatter-adds into the rows of repeated ids';
  const emb = invariants(t, [EMBED]);
  await emb.run(() =>
    fc.assert(
      fc.property(
        fc.integer({ min: 2, max: 7 }),
        fc.integer({ min: 1, max: 5 }),
        fc.integer({ min: 1, max: 6 }),
        seedArb,
        (V, M, n, seed) => {
          const r = rand(seed + 9);
          const ids = new Tensor(
            Float32Array.from({ length: n }, () => Math.floor(((r() + 1) / 2) * V) % V),
            [1, n],
          );
          const iv = ids.f32();
          const res = checkGrads(
            (tab) => ag.embedding(tab, ids),
            ([tab]) => Float64Array.from({ length: n * M }, (_, i) => tab[iv[Math.floor(i / M)] * M + (i % M)]),
            [randT([V, M], seed)],
            seed,
          );
          emb.check(EMBED, res.ok, () => `ids [${Array.from(iv)}]:${res.detail}`);
        },
      ),
      RUNS,
    ),
  );
  const MM2 =
    'batched matmul with a broadcast 2-D right operand (its gradient summed over the batch) matches finite differences';
  const MM3 = 'batched matmul with a batched right operand matches finite differences';
  const mmInv = invariants(t, [MM2, MM3]);
  await mmInv.run(() =>
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 3 }),
        fc.integer({ min: 1, max: 5 }),
        fc.integer({ min: 1, max: 6 }),
        fc.integer({ min: 1, max: 9 }),
        seedArb,
        (Bt, R, K, N, seed) => {
          const a = randT([Bt, R, K], seed),
            b = randT([K, N], seed + 1),
            b3 = randT([Bt, K, N], seed + 2);
          const ref2 = ([x, y]: F64[]) => {
            const o = new Float64Array(Bt * R * N);
            for (let i = 0; i < Bt; i++) o.set(mm(x.subarray(i * R * K), y, R, K, N), i * R * N);
            return o;
          };
          const ref3 = ([x, y]: F64[]) => {
            const o = new Float64Array(Bt * R * N);
            for (let i = 0; i < Bt; i++) o.set(mm(x.subarray(i * R * K), y.subarray(i * K * N), R, K, N), i * R * N);
            return o;
          };
          const where = `[${Bt}, ${R}, ${K}] @ [${K}, ${N}]:`;
          const r2 = checkGrads((x, y) => ag.matmul(x, y, be), ref2, [a, b], seed);
          mmInv.check(MM2, r2.ok, () => where + r2.detail);
          const r3 = checkGrads((x, y) => ag.matmul(x, y, be), ref3, [a, b3], seed);
          mmInv.check(MM3, r3.ok, () => where + r3.detail);
        },
      ),
      RUNS,
    ),
  );
  const PLAIN = 'linear with a plain [K,N] weight matches finite differences';
  const HEADS_IN = 'linear with a heads-in [H,M,D] weight matches finite differences';
  const HEADS_OUT = 'linear with a heads-out [H,D,M] weight matches finite differences';
  const lin = invariants(t, [PLAIN, HEADS_IN, HEADS_OUT]);
  await lin.run(() =>
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 7 }),
        fc.integer({ min: 1, max: 4 }),
        fc.integer({ min: 1, max: 5 }),
        fc.integer({ min: 1, max: 3 }),
        seedArb,
        (R, H, D, M0, seed) => {
          const M = M0 * 3,
            x = randT([R, M], seed),
            N = H * D;
          const w = randT([M, N], seed + 1),
            b = randT([N], seed + 2);
          const where = `R ${R}, H ${H}, D ${D}, M ${M}:`;
          const plain = checkGrads(
            (xx, ww, bb) => ag.linear(xx, plainWeight(ww, cache), bb, be),
            ([xx, ww, bb]) => mm(xx, ww, R, M, N).map((v, i) => v + bb[i % N]),
            [x, w, b],
            seed,
          );
          // W_Q layout [H, M, D] and W_O layout [H, D, M]
          const wq = randT([H, M, D], seed + 3),
            bq = randT([H, D], seed + 4),
            wo = randT([H, D, M], seed + 5),
            z = randT([R, H, D], seed + 6);
          const asMN = (w3: F64) => {
            const o = new Float64Array(M * N);
            for (let h = 0; h < H; h++)
              for (let m = 0; m < M; m++) for (let d = 0; d < D; d++) o[m * N + h * D + d] = w3[(h * M + m) * D + d];
            return o;
          };
          const qin = checkGrads(
            (xx, ww, bb) => ag.linear(xx, headsInWeight(ww, cache), bb, be, [R, H, D]),
            ([xx, ww, bb]) => mm(xx, asMN(ww), R, M, N).map((v, i) => v + bb[i % N]),
            [x, wq, bq],
            seed,
          );
          const out = checkGrads(
            (zz, ww) => ag.linear(zz, headsOutWeight(ww, cache), undefined, be),
            ([zz, ww]) => mm(zz, ww, R, N, M),
            [z, wo],
            seed,
          );
          cache.release();
          lin.check(PLAIN, plain.ok, () => where + plain.detail);
          lin.check(HEADS_IN, qin.ok, () => where + qin.detail);
          lin.check(HEADS_OUT, out.ok, () => where + out.detail);
        },
      ),
      RUNS,
    ),
  );
});

t.test('attention scores and mixing: gradients match finite differences', async (t) => {
  const PATTERN = 'causal attnScores → softmax (pattern) matches finite differences';
  const Z = 'attnMix of the causal pattern (z) matches finite differences';
  const MIX = 'attnMix with a full pattern matches finite differences';
  const inv = invariants(t, [PATTERN, Z, MIX]);
  await inv.run(() =>
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 2 }),
        fc.integer({ min: 1, max: 5 }),
        fc.integer({ min: 1, max: 3 }),
        fc.integer({ min: 1, max: 4 }),
        seedArb,
        (B, P, H, D, seed) => {
          const q = randT([B, P, H, D], seed),
            k = randT([B, P, H, D], seed + 1),
            v = randT([B, P, H, D], seed + 2);
          const scale = Math.sqrt(D);
          const per =
            (f: (qq: F64, kk: F64, vv: F64) => F64) =>
            ([qq, kk, vv]: F64[]) => {
              const parts: number[] = [];
              for (let b = 0; b < B; b++) {
                const n = P * H * D;
                parts.push(
                  ...f(
                    qq.subarray(b * n, b * n + n),
                    kk.subarray(b * n, b * n + n),
                    (vv ?? qq).subarray(b * n, b * n + n),
                  ),
                );
              }
              return parts.map((x) => (x === -Infinity ? 0 : x));
            };
          // (scores themselves hold -inf, so Σ out·R is undefined: they are checked through the pattern)
          const where = `B ${B}, P ${P}, H ${H}, D ${D}:`;
          const pat = checkGrads(
            (qq, kk) => ag.softmax(ag.attnScores(qq, kk, scale)),
            per((qq, kk) => attnRef(qq, kk, kk, P, H, D, scale).pat),
            [q, k],
            seed,
          );
          inv.check(PATTERN, pat.ok, () => where + pat.detail);
          const z = checkGrads(
            (qq, kk, vv) => ag.attnMix(ag.softmax(ag.attnScores(qq, kk, scale)), vv),
            per((qq, kk, vv) => attnRef(qq, kk, vv, P, H, D, scale).z),
            [q, k, v],
            seed,
          );
          inv.check(Z, z.ok, () => where + z.detail);
          const pIn = ag.softmax(randT([B, H, P, P], seed + 4));
          const mix = checkGrads(
            (pp, vv) => ag.attnMix(pp, vv),
            ([pp, vv]) => {
              const o = new Float64Array(B * P * H * D);
              for (let b = 0; b < B; b++)
                for (let h = 0; h < H; h++)
                  for (let i = 0; i < P; i++)
                    for (let j = 0; j < P; j++)
                      for (let d = 0; d < D; d++)
                        o[((b * P + i) * H + h) * D + d] +=
                          pp[((b * H + h) * P + i) * P + j] * vv[((b * P + j) * H + h) * D + d];
              return o;
            },
            [pIn, v],
            seed,
          );
          inv.check(MIX, mix.ok, () => where + mix.detail);
        },
      ),
      RUNS,
    ),
  );
});

t.test('backward hooks: hookGrad sees and replaces the gradient', async (t) => {
  const SCALED_X = "a backward hook scaling the gradient by c scales the input's gradient (upstream) by c";
  const SCALED_W = "a backward hook scaling the gradient by c scales the upstream weight's gradient by c";
  const DOWNSTREAM = "a backward hook leaves the downstream weight's gradient unchanged (bit for bit)";
  const SEEN = "a backward hook sees a gradient of the activation's shape";
  const inv = invariants(t, [SCALED_X, SCALED_W, DOWNSTREAM, SEEN]);
  await inv.run(() =>
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 4 }),
        fc.integer({ min: 2, max: 6 }),
        fc.double({ min: -3, max: 3, noNaN: true }),
        seedArb,
        (R, M, c, seed) => {
          const x = randT([R, M], seed),
            w1 = randT([M, M], seed + 1),
            w2 = randT([M], seed + 2);
          let seen: Tensor | null = null;
          const run = (hook: boolean) =>
            grad(
              (xx, a, b) => {
                let h = ag.tanh(ag.linear(xx, plainWeight(a, cache), undefined, be));
                if (hook)
                  h = hookGrad(h, (g) => {
                    seen = g.clone();
                    return ag.mul(g, c);
                  });
                return ag.sum(ag.mul(ag.square(h), b));
              },
              [x, w1, w2],
            );
          const plain = run(false),
            hooked = run(true);
          cache.release();
          const scaled = (i: number) =>
            plain.grads[i]
              .f32()
              .every((v, j) => Math.abs(hooked.grads[i].f32()[j] - c * v) <= 1e-5 * (1 + Math.abs(c * v)));
          // the downstream weight w2 is not upstream of the hook: unchanged
          const downstream = plain.grads[2].f32().every((v, j) => v === hooked.grads[2].f32()[j]);
          inv.check(SCALED_X, scaled(0), () => `c = ${c}`);
          inv.check(SCALED_W, scaled(1), () => `c = ${c}`);
          inv.check(DOWNSTREAM, downstream);
          const seenShape = seen === null ? 'nothing' : `[${(seen as Tensor).shape}]`;
          inv.check(SEEN, seenShape === `[${[R, M]}]`, () => `saw ${seenShape}, want [${R},${M}]`);
        },
      ),
      RUNS,
    ),
  );
  const x = randT([2, 3], 1);
  t.throws(
    () => grad((v) => ag.sum(hookGrad(ag.exp(v), () => Tensor.zeros([3, 2]))), [x]),
    /backward hook returned shape/,
    'a replacement of the wrong shape is refused',
  );
  const { grads } = grad(
    (v) => {
      const a = hookGrad(ag.exp(v), (g) => ag.add(g, 1));
      return ag.sum(hookGrad(a, (g) => ag.mul(g, 2)));
    },
    [x],
  );
  t.ok(
    grads[0].f32().every((g, i) => Math.abs(g - 3 * Math.exp(x.f32()[i])) < 1e-5 * Math.exp(x.f32()[i]) * 3),
    'stacked hooks compose in reverse order (outer hook first, as gradients flow)',
  );
});

t.test('gradient mode costs nothing outside it', async (t) => {
  const x = randT([3, 4], 3),
    w = randT([4, 4], 4);
  t.equal(currentTape(), null, 'no tape is active outside withGrad');
  const y1 = ag.softmax(ag.add(ag.matmul(x, w, be), 1));
  const { out: y2, tape } = withGrad((tp) => {
    tp.watch(x);
    return ag.softmax(ag.add(ag.matmul(x, w, be), 1));
  });
  t.same(Array.from(y1.f32()), Array.from(y2.f32()), 'values are bit-identical with and without the tape');
  t.equal(tape.size, 3, 'the tape recorded exactly the three ops that depend on a watched tensor');
  const { tape: t2 } = withGrad(() => ag.softmax(ag.add(x, 1)));
  t.equal(t2.size, 0, 'ops on unwatched tensors record nothing, even in gradient mode');
});

t.test('a composed mini-transformer block (LN → attention → MLP) matches finite differences', async (t) => {
  const BLOCK =
    'every input and weight gradient of LN → causal multi-head attention → LN → MLP → residual matches finite differences';
  const inv = invariants(t, [BLOCK]);
  await inv.run(() =>
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 5 }),
        fc.integer({ min: 1, max: 3 }),
        fc.integer({ min: 1, max: 3 }),
        fc.constantFrom('gelu_new', 'gelu', 'relu') as fc.Arbitrary<'gelu_new' | 'gelu' | 'relu'>,
        seedArb,
        (P, H, D, act, seed) => {
          const M = H * D,
            F = 2 * M,
            eps = 1e-5,
            scale = Math.sqrt(D);
          const x = randT([1, P, M], seed, 1.5),
            lnw = randT([M], seed + 1, 0.5, 1),
            lnb = randT([M], seed + 2, 0.2);
          const WQ = randT([H, M, D], seed + 3, 0.7),
            WK = randT([H, M, D], seed + 4, 0.7),
            WV = randT([H, M, D], seed + 5, 0.7),
            WO = randT([H, D, M], seed + 6, 0.7);
          const bQ = randT([H, D], seed + 7, 0.1),
            Win = randT([M, F], seed + 8, 0.7),
            bin = randT([F], seed + 9, 0.1),
            Wout = randT([F, M], seed + 10, 0.7),
            bout = randT([M], seed + 11, 0.1);
          const block = (
            xx: Tensor,
            w: Tensor,
            b: Tensor,
            wq: Tensor,
            wk: Tensor,
            wv: Tensor,
            wo: Tensor,
            bq: Tensor,
            wi: Tensor,
            bi: Tensor,
            wu: Tensor,
            bu: Tensor,
          ) => {
            const n = ag.layerNorm(xx, eps, w, b);
            const q = ag.linear(n, headsInWeight(wq, cache), bq, be, [1, P, H, D]);
            const k = ag.linear(n, headsInWeight(wk, cache), undefined, be, [1, P, H, D]);
            const v = ag.linear(n, headsInWeight(wv, cache), undefined, be, [1, P, H, D]);
            const z = ag.attnMix(ag.softmax(ag.attnScores(q, k, scale)), v);
            const mid = ag.add(xx, ag.linear(z, headsOutWeight(wo, cache), undefined, be, [1, P, M]));
            const h = ag.activation(ag.linear(ag.layerNorm(mid, eps, w, b), plainWeight(wi, cache), bi, be), act);
            return ag.add(mid, ag.linear(h, plainWeight(wu, cache), bu, be));
          };
          const actRef =
            act === 'gelu_new'
              ? geluNewRef
              : act === 'gelu'
                ? (v: number) => 0.5 * v * (1 + ag.erf(v / Math.SQRT2))
                : (v: number) => Math.max(v, 0);
          const ref = ([xx, w, b, wq, wk, wv, wo, bq, wi, bi, wu, bu]: F64[]) => {
            const ln = (r: F64) => rowsRef(r, M, lnRow(eps)).map((v, i) => v * w[i % M] + b[i % M]);
            const heads = (w3: F64) => {
              const o = new Float64Array(M * M);
              for (let h = 0; h < H; h++)
                for (let m = 0; m < M; m++) for (let d = 0; d < D; d++) o[m * M + h * D + d] = w3[(h * M + m) * D + d];
              return o;
            };
            const n = ln(xx);
            const q = mm(n, heads(wq), P, M, M).map((v, i) => v + bq[i % M]),
              k = mm(n, heads(wk), P, M, M),
              v = mm(n, heads(wv), P, M, M);
            const { z } = attnRef(q, k, v, P, H, D, scale);
            const mid = mm(z, wo, P, M, M).map((u, i) => u + xx[i]);
            const hh = mm(ln(mid), wi, P, M, F).map((u, i) => actRef(u + bi[i % F]));
            return mm(hh, wu, P, F, M).map((u, i) => u + bu[i % M] + mid[i]);
          };
          const r = checkGrads(block, ref, [x, lnw, lnb, WQ, WK, WV, WO, bQ, Win, bin, Wout, bout], seed);
          cache.release();
          inv.check(BLOCK, r.ok, () => `P ${P}, H ${H}, D ${D}, ${act}: worst ${r.worst} of scale;${r.detail}`);
        },
      ),
      { numRuns: 8 },
    ),
  );
});

t.test(
  'the weight-gradient kernel (dW = Xᵀ·dY in WASM, written in the leaf layout) is exact to f32 rounding',
  async (t) => {
    const PLAIN = 'plain [K,N] weight gradient (odd K, N not a multiple of 8) matches an f64 Xᵀ·dY';
    const HEADS_IN = 'heads-in [H,M,D] weight gradient matches an f64 Xᵀ·dY';
    const TWICE = 'a weight used twice sums both uses (2 Xᵀ·dY)';
    const inv = invariants(t, [PLAIN, HEADS_IN, TWICE]);
    await inv.run(() =>
      fc.assert(
        fc.property(
          fc.integer({ min: 1, max: 17 }),
          fc.integer({ min: 1, max: 21 }),
          fc.integer({ min: 1, max: 3 }),
          fc.constantFrom(8, 16),
          fc.integer({ min: 1, max: 41 }),
          seedArb,
          (R, M, H, D, N, seed) => {
            const x = randT([R, M], seed),
              gy = randT([R, N], seed + 1),
              gq = randT([R, H * D], seed + 2);
            const w = randT([M, N], seed + 3),
              wq = randT([H, M, D], seed + 4);
            const run = (twice: boolean) =>
              grad(
                (xx, ww, qq) => {
                  const y = ag.linear(xx, plainWeight(ww, cache), undefined, be);
                  let s = ag.add(
                    ag.sum(ag.mul(y, gy)),
                    ag.sum(ag.mul(ag.linear(xx, headsInWeight(qq, cache), undefined, be), gq)),
                  );
                  if (twice) s = ag.add(s, ag.sum(ag.mul(ag.linear(xx, plainWeight(ww, cache), undefined, be), gy))); // second use: general path, summed
                  return s;
                },
                [x, w, wq],
              );
            const once = run(false),
              twice = run(true);
            const dW = mm(
              Float64Array.from({ length: M * R }, (_, i) => x.f32()[(i % R) * M + Math.floor(i / R)]),
              f64(gy),
              M,
              R,
              N,
            );
            const dQ = mm(
              Float64Array.from({ length: M * R }, (_, i) => x.f32()[(i % R) * M + Math.floor(i / R)]),
              f64(gq),
              M,
              R,
              H * D,
            );
            const close = (a: Float32Array, b: ArrayLike<number>, k = 1) =>
              a.every((v, i) => Math.abs(v - k * b[i]) <= 1e-5 * (1 + Math.abs(k * b[i])));
            const q = once.grads[2].f32();
            const qOk = [...Array(H * M * D).keys()].every((i) => {
              const h = Math.floor(i / (M * D)),
                m = Math.floor(i / D) % M,
                d = i % D;
              return Math.abs(q[i] - dQ[m * H * D + h * D + d]) <= 1e-5 * (1 + Math.abs(dQ[m * H * D + h * D + d]));
            });
            cache.release();
            const where = () => `R ${R}, M ${M}, H ${H}, D ${D}, N ${N}`;
            inv.check(PLAIN, close(once.grads[1].f32(), dW), where);
            inv.check(HEADS_IN, qOk, where);
            inv.check(TWICE, close(twice.grads[1].f32(), dW, 2), where);
          },
        ),
        { numRuns: 25 },
      ),
    );
  },
);
