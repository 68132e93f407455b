// The forward's fast paths (issue 16): the WASM SIMD elementwise kernels against naive JS loops,
// and the shortcuts the forward takes when nothing can observe the difference (ln1 once, q/k/v in
// one pass, cache entries kept without a copy) against the hooked path TL's semantics define.
// Tolerances: gelu_new 1e-6 relative + 1e-7 absolute against the f64 tanh formula; softmax 1e-6 relative + 1e-7 absolute
// against f64 exp(x - max) / sum; the bias add and every model-level comparison exact.
import t from 'tap';
import fc from 'fast-check';
import { allClose, invariants, maxAbsDiff } from './helpers.js';
import { HookedTransformer, randomGPT2, hfConfig, Tensor } from '../src/index.js';
import { WasmBackend, wasmBackend } from '../src/kernels/index.js';
import { WasmElementwise } from '../src/kernels/wasm/elementwise.js';

const runs = { numRuns: 40 };
const be = wasmBackend()!;
const ew = new WasmElementwise(be.module);
const f32 = (a: number[]) => Float32Array.from(a);
const arbF32 = (n: fc.Arbitrary<number>, max: number) =>
  n.chain((len) => fc.array(fc.float({ min: -max, max, noNaN: true }), { minLength: len, maxLength: len }));

t.test('gelu_new kernel = the tanh formula (1e-6 relative, 1e-7 absolute), any length', async (t) => {
  const GELU = 'WASM gelu_new is within 1e-6 relative / 1e-7 absolute of the f64 formula';
  const inv = invariants(t, [GELU]);
  const ref = (v: number) => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3)));
  await inv.run(() =>
    fc.assert(
      fc.property(arbF32(fc.integer({ min: 0, max: 37 }), 30), (xs) => {
        const x = f32(xs),
          got = ew.geluNew(x),
          want = Array.from(x, ref);
        inv.check(GELU, allClose(got, want, 1e-6, 1e-7), () => `max |diff| ${maxAbsDiff(got, want)}`);
      }),
      runs,
    ),
  );
});

t.test(
  'softmax kernel = exp(x - max) / sum (1e-6 rel + 1e-7 abs), masked entries exactly 0, all-masked rows 0',
  async (t) => {
    // f32 output of an f32 exp and a sum of up to 19 terms: a few ulps (2^-23 ~ 1.2e-7) relative near 1 —
    // a fixed 2e-7 absolute bound was exceeded by 2.00004e-7 on a row whose largest entry is ~1
    const SOFT = 'WASM softmax is within 1e-6 relative + 1e-7 absolute of the f64 softmax',
      ZERO = 'a -inf entry gives exactly 0',
      ROW0 = 'an all -inf row gives zeros';
    const inv = invariants(t, [SOFT, ZERO, ROW0], { optional: [ZERO, ROW0] });
    await inv.run(() =>
      fc.assert(
        fc.property(
          fc.integer({ min: 1, max: 19 }),
          fc.integer({ min: 1, max: 6 }),
          fc.array(fc.float({ min: -40, max: 40, noNaN: true }), { minLength: 19 * 6, maxLength: 19 * 6 }),
          fc.array(fc.boolean(), { minLength: 19 * 6, maxLength: 19 * 6 }),
          (n, rows, vals, masked) => {
            const x = new Float32Array(n * rows);
            for (let i = 0; i < x.length; i++) x[i] = masked[i] ? -Infinity : vals[i];
            const got = ew.softmaxRows(x, n),
              want = new Float64Array(x.length);
            for (let r = 0; r < rows; r++) {
              const row = Array.from(x.subarray(r * n, (r + 1) * n)),
                mx = Math.max(...row);
              if (mx === -Infinity) {
                inv.check(
                  ROW0,
                  got.subarray(r * n, (r + 1) * n).every((v) => v === 0),
                );
                continue;
              }
              const s = row.reduce((a, v) => a + Math.exp(v - mx), 0);
              row.forEach((v, j) => (want[r * n + j] = Math.exp(v - mx) / s));
            }
            inv.check(SOFT, allClose(got, want, 1e-6, 1e-7), () => `max |diff| ${maxAbsDiff(got, want)}`);
            for (let i = 0; i < x.length; i++) if (x[i] === -Infinity) inv.check(ZERO, got[i] === 0);
          },
        ),
        runs,
      ),
    );
  },
);

t.test('linears (A packed once, bias added in WASM) = matmul + a JS bias loop, bit for bit', async (t) => {
  const SAME = 'each output of linears equals matmul followed by y[i, j] += bias[j], bit for bit';
  const inv = invariants(t, [SAME]);
  const backends = [new WasmBackend({ fma: false }), be];
  await inv.run(() =>
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 13 }),
        fc.integer({ min: 1, max: 40 }),
        fc.array(fc.integer({ min: 1, max: 21 }), { minLength: 1, maxLength: 3 }),
        fc.nat(),
        fc.constantFrom(0, 1),
        (M, K, Ns, seed, which) => {
          const b = backends[which];
          const rnd = (i: number) => Math.fround(Math.sin(seed + i * 12.9898) * 2);
          const a = Float32Array.from({ length: M * K }, (_, i) => rnd(i));
          const ws = Ns.map((N, w) =>
            b.pack(
              Float32Array.from({ length: K * N }, (_, i) => rnd(7 * i + w)),
              K,
              N,
              'f32',
            ),
          );
          const biases = Ns.map((N, w) => Float32Array.from({ length: N }, (_, i) => rnd(3 * i + w + 1)));
          const got = b.linears(a, M, ws, biases);
          ws.forEach((w, i) => {
            const want = b.matmul(a, M, w);
            for (let o = 0; o < want.length; o += w.N) for (let j = 0; j < w.N; j++) want[o + j] += biases[i][j];
            inv.check(
              SAME,
              got[i].every((v, j) => Object.is(v, want[j])),
              () => `M ${M} K ${K} N ${w.N}`,
            );
          });
          ws.forEach((w) => w.release());
        },
      ),
      runs,
    ),
  );
});

// a small model: 2 layers, 3 heads of 5
const shape = { n_layer: 2, n_embd: 15, n_head: 3, n_positions: 12, vocab_size: 61 };
const model = () => HookedTransformer.fromHFTensors(hfConfig(shape, 60), randomGPT2(shape, 7));
const tokens = Tensor.from([60, 3, 17, 4, 9, 33, 60, 8, 1, 2, 44, 5], [2, 6]);
const same = (a: Tensor, b: Tensor) =>
  a.shape.join() === b.shape.join() && a.f32().every((v, i) => Object.is(v, b.f32()[i]));

t.test('ln1 once and q/k/v in one pass give the hooked (TL) path its numbers, bit for bit', async (t) => {
  const m = model();
  const fast = m.runWithCache(tokens);
  // a hook that may edit (a plain user hook, returning nothing) forces TL's three ln1 computations
  const ln1 = (n: string) => n.includes('ln1.');
  const slow = m.runWithHooks(tokens, { fwdHooks: [[ln1, () => undefined]] });
  t.ok(same(fast.logits, slow), 'logits: observer-only hooks (one ln1, fused q/k/v) = a hook on ln1 (three ln1)');
  let calls = 0;
  const slowCache = m.hooks([[ln1, () => void calls++]], () => m.runWithCache(tokens));
  t.equal(calls, 3 * 2 * 2, 'a user hook on ln1 still fires three times per point per layer');
  const keys = [...fast.cache.keys()];
  t.same(keys, [...slowCache.cache.keys()], 'the cache holds the same points in the same order');
  t.ok(
    keys.every((k) => same(fast.cache.get(k), slowCache.cache.get(k))),
    'every cached activation is the same bit for bit',
  );
  let scales = 0;
  const seen = m.runWithCache(tokens, { namesFilter: (n) => n === 'blocks.0.ln1.hook_scale' });
  m.hooks([['blocks.1.ln1.hook_scale', () => void scales++]], () => m.forward(tokens));
  t.ok(seen.cache.has('blocks.0.ln1.hook_scale'), 'a filtered cache of an ln1 point is filled');
  t.equal(scales, 3, 'without a cache, a hook on ln1 fires three times');
  m.dispose();
});

t.test('cache entries kept without a copy own their values: editing one leaves the others', async (t) => {
  const m = model();
  const { cache } = m.runWithCache(tokens);
  const post = cache.get('blocks.0.hook_resid_post'),
    pre = cache.get('blocks.1.hook_resid_pre');
  t.ok(same(post, pre), 'resid_post of block 0 = resid_pre of block 1');
  t.not(post.f32(), pre.f32(), 'they do not share storage (TL aliases them; the copying cache never did)');
  const before = Float32Array.from(pre.f32());
  post.f32()[0] += 1;
  t.ok(
    pre.f32().every((v, i) => Object.is(v, before[i])),
    'editing one does not change the other',
  );
  // with a user hook that edits in place, activations are copied at capture (as before)
  const edit = (x: Tensor) => {
    x.f32().fill(0);
  };
  const ref = m.runWithCache(tokens).cache.get('blocks.0.hook_resid_post');
  const hooked = m.hooks([['blocks.1.hook_resid_pre', edit]], () => m.runWithCache(tokens));
  t.ok(
    same(hooked.cache.get('blocks.0.hook_resid_post'), ref),
    "a later hook's in-place edit does not reach an earlier point's cached value",
  );
  t.ok(
    hooked.cache
      .get('blocks.1.hook_resid_pre')
      .f32()
      .every((v) => v === 0),
    'the edited point caches the edited value (the cache hook runs after the user hook)',
  );
  m.dispose();
});

t.test('large A laid out by the WASM pack_a = row chunks laid out in JS, bit for bit', async (t) => {
  const SAME = 'a large-M matmul (pack_a in WASM) equals its row chunks (JS layout) bit for bit';
  const inv = invariants(t, [SAME]);
  await inv.run(() =>
    fc.assert(
      fc.property(
        fc.integer({ min: 200, max: 333 }),
        fc.integer({ min: 330, max: 400 }),
        fc.integer({ min: 1, max: 19 }),
        fc.nat(),
        (M, K, N, seed) => {
          const rnd = (i: number) => Math.fround(Math.sin(seed + i * 78.233) * 3);
          const a = Float32Array.from({ length: M * K }, (_, i) => rnd(i));
          const w = be.pack(
            Float32Array.from({ length: K * N }, (_, i) => rnd(5 * i + 1)),
            K,
            N,
            'f32',
          );
          const whole = be.matmul(a, M, w);
          const rows = 7; // 7 * K < 2^16: the JS layout
          let ok = true;
          for (let r = 0; r < M && ok; r += rows) {
            const m = Math.min(rows, M - r),
              part = be.matmul(a.subarray(r * K, (r + m) * K), m, w);
            ok = part.every((v, i) => Object.is(v, whole[r * N + i]));
          }
          w.release();
          inv.check(SAME, ok, () => `M ${M} K ${K} N ${N}`);
        },
      ),
      { numRuns: 8 },
    ),
  );
});
