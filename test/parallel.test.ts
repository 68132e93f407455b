// The parallel engine: intra-op helper threads and the piscina worker pool give the same numbers
// as one thread, bit for bit (the arithmetic of each output element is unchanged); faults fail the
// request with a clear error and the pool recovers.
import t from 'tap';
import { invariants } from './helpers.js';
import fc from 'fast-check';
import { HookedTransformer, randomGPT2, hfConfig, Tensor, patching, TypelensError } from '../src/index.js';
import { WasmBackend, wasmBackend } from '../src/kernels/index.js';
import { ForwardPool } from '../src/parallel/pool.js';
import { killHelper, killWorker } from '../src/testing.js';
import { logitsToAveLogitDiff } from '../src/analysis/logit-diff.js';

const arbCfg = fc.record({
  n_layer: fc.integer({ min: 1, max: 3 }),
  n_head: fc.integer({ min: 1, max: 4 }),
  d_head: fc.integer({ min: 2, max: 9 }),
  seed: fc.nat(),
  B: fc.integer({ min: 1, max: 4 }),
  P: fc.integer({ min: 1, max: 9 }),
});
type Cfg = { n_layer: number; n_head: number; d_head: number; seed: number; B: number; P: number };
const V = 97;
const shapeOf = (c: Cfg) => ({
  n_layer: c.n_layer,
  n_embd: c.n_head * c.d_head,
  n_head: c.n_head,
  n_positions: 12,
  vocab_size: V,
});
const build = (c: Cfg, be?: WasmBackend) =>
  HookedTransformer.fromHFTensors(hfConfig(shapeOf(c), V - 1), randomGPT2(shapeOf(c), c.seed), { backend: be });
const tokensFor = (c: Cfg, shift = 0) =>
  Tensor.from(
    Array.from({ length: c.B * c.P }, (_, i) => (c.seed + i * 13 + (i % c.P === c.P - 1 ? shift : 0)) % V),
    [c.B, c.P],
  );
const same = (a: Tensor, b: Tensor) =>
  a.shape.join() === b.shape.join() && a.f32().every((v, i) => Object.is(v, b.f32()[i]));

t.test('intra-op: logits and caches with 1, 2 and 3 threads are bit-identical', async (t) => {
  const be = new WasmBackend({ parallelMinMacs: 0 }); // split even these small matmuls
  try {
    const LOGITS = 'logits with 2 or 3 threads = 1 thread, bit for bit',
      CACHE = 'every cached activation with 2 or 3 threads = 1 thread, bit for bit';
    const THREADS = 'the backend really ran with the requested helper threads';
    const inv = invariants(t, [THREADS, LOGITS, CACHE]);
    await inv.run(() =>
      fc.assert(
        fc.asyncProperty(arbCfg, fc.integer({ min: 2, max: 3 }), async (c, n) => {
          const m = build(c, be);
          try {
            const tok = tokensFor(c);
            be.setThreads(1);
            const one = m.runWithCache(tok);
            be.setThreads(n);
            await be.whenReady();
            inv.check(THREADS, be.threads === n, () => `asked for ${n}, have ${be.threads}`);
            const many = m.runWithCache(tok);
            inv.check(LOGITS, same(one.logits, many.logits), () => `${n} threads`);
            for (const k of one.cache.keys())
              inv.check(CACHE, same(one.cache.get(k), many.cache.get(k)), () => `${k}, ${n} threads`);
          } finally {
            m.dispose();
          }
        }),
        { numRuns: 12 },
      ),
    );
  } finally {
    be.setThreads(1);
  }
});

t.test('intra-op: a hook that throws fails that forward only', async (t) => {
  const be = wasmBackend()!;
  be.setThreads(2);
  await be.whenReady();
  const c: Cfg = { n_layer: 2, n_head: 2, d_head: 4, seed: 3, B: 2, P: 5 };
  const m = build(c);
  const want = m.forward(tokensFor(c));
  t.throws(
    () =>
      m.runWithHooks(tokensFor(c), {
        fwdHooks: [
          [
            'blocks.1.hook_resid_pre',
            () => {
              throw new Error('boom');
            },
          ],
        ],
      }),
    /boom/,
  );
  t.ok(same(m.forward(tokensFor(c)), want), 'next forward is unaffected');
  m.dispose();
  be.setThreads(1);
});

t.test('intra-op: a helper thread that dies is retired; results stay right and nothing hangs', async (t) => {
  const be = wasmBackend()!;
  // a helper still booting is skipped (the matmul would run serially and retire nothing): on a
  // loaded machine starting a worker can take seconds, so wait for it generously
  be.setThreads(2);
  await be.whenReady(60_000);
  t.equal(be.threads, 2, 'the helper thread started');
  const K = 300,
    N = 256,
    M = 40;
  const a = Float32Array.from({ length: M * K }, (_, i) => Math.sin(i)),
    b = Float32Array.from({ length: K * N }, (_, i) => Math.cos(i));
  const w = be.pack(b, K, N, 'f32');
  const want = be.matmul(a, M, w).slice();
  await killHelper(be);
  const t0 = Date.now();
  const got = be.matmul(a, M, w);
  t.ok(
    got.every((v, i) => Object.is(v, want[i])),
    'same result after the helper died',
  );
  t.ok(Date.now() - t0 < 5000, `finished in ${Date.now() - t0} ms (deadline 2 s)`);
  t.equal(be.threads, 1, 'the dead helper was retired');
  const t1 = Date.now();
  be.matmul(a, M, w);
  t.ok(Date.now() - t1 < 500, 'later matmuls do not wait for it');
  w.release();
  be.setThreads(1);
});

t.test('pool: sweeps and batches equal the single-thread results bit for bit', async (t) => {
  const SWEEPS = [
    'getActPatchResidPre',
    'getActPatchAttnHeadOutAllPos',
    'getActPatchAttnHeadPatternAllPos',
    'getActPatchAttnHeadVByPos',
  ] as const;
  const SWEEP = (name: string) => `${name}: the pool's sweep = the serial one, bit for bit`;
  const SHARED_MEM = 'a shared cache lives in SharedArrayBuffers',
    SHARED_SAME = 'a shared cache = the ordinary one, bit for bit';
  const BATCH_LOGITS = 'runBatch logits = one forward on the main thread, bit for bit';
  const BATCH_CACHE = 'runBatch cache = the main-thread cache, every activation, bit for bit';
  const inv = invariants(t, [...SWEEPS.map(SWEEP), SHARED_MEM, SHARED_SAME, BATCH_LOGITS, BATCH_CACHE]);
  await inv.run(() =>
    fc.assert(
      fc.asyncProperty(arbCfg, fc.integer({ min: 1, max: 3 }), fc.boolean(), async (c, threads, last) => {
        const m = build(c);
        try {
          const clean = tokensFor(c),
            corrupted = tokensFor(c, 5);
          const answers = Tensor.from(Array.from({ length: c.B }, (_, b) => [b % V, (b + 3) % V]).flat(), [c.B, 2]);
          const { cache } = m.runWithCache(clean);
          const metric = (lg: Tensor) => logitsToAveLogitDiff(lg, answers);
          const pool = await ForwardPool.create(m, { threads });
          for (const name of SWEEPS) {
            const serial = patching[name](m, corrupted, cache, metric, { lastPositionLogits: last });
            const par = await patching.parallel[name](pool, corrupted, cache, metric, { lastPositionLogits: last });
            inv.check(SWEEP(name), same(serial, par), () => `${threads} threads, lastPositionLogits ${last}`);
          }
          const batch = await pool.runBatch(clean, { cache: 'all' });
          const ref = m.runWithCache(clean);
          const sharedRef = m.runWithCache(clean, { shared: true, posSlice: -1 });
          const sliced = m.runWithCache(clean, { posSlice: -1 });
          for (const k of sharedRef.cache.keys()) {
            inv.check(SHARED_MEM, sharedRef.cache.get(k).data.buffer instanceof SharedArrayBuffer, () => k);
            inv.check(SHARED_SAME, same(sharedRef.cache.get(k), sliced.cache.get(k)), () => k);
          }
          inv.check(BATCH_LOGITS, same(batch.logits, ref.logits), () => `${threads} threads`);
          for (const k of ref.cache.keys())
            inv.check(BATCH_CACHE, same(batch.cache!.get(k), ref.cache.get(k)), () => `${k}, ${threads} threads`);
        } finally {
          m.dispose(); // closes the pool
        }
      }),
      { numRuns: 8 },
    ),
  );
});

t.test('pool faults: a throwing worker, a worker killed mid-sweep, dispose during a run', async (t) => {
  const c: Cfg = { n_layer: 3, n_head: 4, d_head: 8, seed: 11, B: 2, P: 9 };
  const m = build(c);
  const clean = tokensFor(c),
    corrupted = tokensFor(c, 7);
  const answers = Tensor.from([1, 2, 3, 4], [2, 2]);
  const { cache } = m.runWithCache(clean);
  const metric = (lg: Tensor) => logitsToAveLogitDiff(lg, answers);
  const pool = await ForwardPool.create(m, { threads: 2 });
  const want = patching.getActPatchAttnHeadVByPos(m, corrupted, cache, metric);

  await t.rejects(pool.run({ kind: 'throw' }), /worker failed: injected failure/);
  m.addHook('blocks.0.hook_resid_pre', (x) => x);
  await t.rejects(
    patching.parallel.getActPatchAttnHeadVByPos(pool, corrupted, cache, metric),
    /the model has hooks attached/,
    'main-thread hooks are refused, not silently dropped',
  );
  m.resetHooks({ includingPermanent: true });
  t.ok(
    same(await patching.parallel.getActPatchAttnHeadVByPos(pool, corrupted, cache, metric), want),
    'after a throwing task, a sweep succeeds',
  );

  let killed = false;
  const sweep = patching.parallel.getActPatchAttnHeadVByPos(pool, corrupted, cache, metric, {
    onProgress: (done) => {
      if (!killed && done >= 3) {
        killed = true;
        killWorker(pool);
      }
    },
  });
  // whether the killed worker held one of this sweep's tasks is a race: either the sweep fails with a
  // clear error or (the worker was idle) it completes, and then its grid must still be right
  const r = await sweep.then(
    (grid) => ({ grid }),
    (error: unknown) => ({ error }),
  );
  t.ok(killed, 'a worker was killed while the sweep ran');
  if ('grid' in r)
    t.ok(same(r.grid, want), 'killed mid-sweep, the sweep completed (the worker was idle) with the right grid');
  else {
    t.type(r.error, TypelensError, 'killed mid-sweep, the sweep fails with a TypelensError');
    t.match(
      r.error,
      { code: 'EWORKER', message: /^worker failed: / },
      'killed mid-sweep, the error says a worker failed',
    );
  }
  t.ok(
    same(await patching.parallel.getActPatchAttnHeadVByPos(pool, corrupted, cache, metric), want),
    'the pool recovered: the next sweep is right',
  );
  // a request racing a kill may fail (that is the contract); the one after it must not
  for (let i = 0; i < 5; i++) {
    killWorker(pool);
    await new Promise((r) => setTimeout(r, 30));
    await pool.runBatch(clean).catch((e) => {
      if (!(e instanceof TypelensError)) throw e;
    });
  }
  t.ok(same((await pool.runBatch(clean)).logits, m.forward(clean)), 'still right after five more kills');
  t.ok(pool.slotsInUse <= 2, `dead workers' scratch regions were freed (${pool.slotsInUse} in use)`);

  const running = patching.parallel.getActPatchAttnHeadVByPos(pool, corrupted, cache, metric);
  await new Promise((res) => setTimeout(res, 5));
  m.dispose();
  await t.rejects(running, TypelensError, 'dispose during a run fails it clearly');
  await t.rejects(pool.run({ tokens: { data: Float32Array.of(1), shape: [1, 1] } }), /worker pool was closed/);
});

t.test('pool refuses a non-WASM model clearly', async (t) => {
  const c: Cfg = { n_layer: 1, n_head: 1, d_head: 4, seed: 1, B: 1, P: 2 };
  const m = HookedTransformer.fromHFTensors(hfConfig(shapeOf(c), V - 1), randomGPT2(shapeOf(c), 1), { backend: 'js' });
  await t.rejects(ForwardPool.create(m, { threads: 2 }), /worker threads need the WASM backend \(this model uses js\)/);
});
