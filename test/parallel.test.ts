// The parallel engine: intra-op helper threads and the piscina worker pool give the same numbers
// as one thread, bit for bit (the arithmetic of each output element is unchanged); faults fail the
// request with a clear error and the pool recovers.
import t from 'tap';
import fc from 'fast-check';
import { HookedTransformer, randomGPT2, hfConfig, Tensor, patching, TypelensError } from '../src/index.js';
import { WasmBackend, wasmBackend } from '../src/kernels/index.js';
import { ForwardPool } from '../src/parallel/pool.js';
import { killHelper, killWorker } from '../src/testing.js';
import { logitsToAveLogitDiff } from '../src/analysis/logit-diff.js';

const arbCfg = fc.record({
  n_layer: fc.integer({ min: 1, max: 3 }), n_head: fc.integer({ min: 1, max: 4 }), d_head: fc.integer({ min: 2, max: 9 }),
  seed: fc.nat(), B: fc.integer({ min: 1, max: 4 }), P: fc.integer({ min: 1, max: 9 }),
});
type Cfg = { n_layer: number; n_head: number; d_head: number; seed: number; B: number; P: number };
const V = 97;
const shapeOf = (c: Cfg) => ({ n_layer: c.n_layer, n_embd: c.n_head * c.d_head, n_head: c.n_head, n_positions: 12, vocab_size: V });
const build = (c: Cfg, be?: WasmBackend) => HookedTransformer.fromHFTensors(hfConfig(shapeOf(c), V - 1), randomGPT2(shapeOf(c), c.seed), { backend: be });
const tokensFor = (c: Cfg, shift = 0) => Tensor.from(Array.from({ length: c.B * c.P }, (_, i) => (c.seed + i * 13 + (i % c.P === c.P - 1 ? shift : 0)) % V), [c.B, c.P]);
const same = (a: Tensor, b: Tensor) => a.shape.join() === b.shape.join() && a.f32().every((v, i) => Object.is(v, b.f32()[i]));

t.test('intra-op: logits and caches with 1, 2 and 3 threads are bit-identical', async (t) => {
  const be = new WasmBackend({ parallelMinMacs: 0 }); // split even these small matmuls
  try {
    const results: boolean[] = [];
    await fc.assert(fc.asyncProperty(arbCfg, fc.integer({ min: 2, max: 3 }), async (c, n) => {
      const m = build(c, be);
      const tok = tokensFor(c);
      be.setThreads(1);
      const one = m.runWithCache(tok);
      be.setThreads(n); await be.whenReady();
      const many = m.runWithCache(tok);
      const ok = same(one.logits, many.logits) && one.cache.keys().every((k) => same(one.cache.get(k), many.cache.get(k)));
      m.dispose();
      results.push(ok);
      return ok;
    }), { numRuns: 12 });
    t.ok(results.length > 0);
  } finally {
    be.setThreads(1);
  }
});

t.test('intra-op: a hook that throws fails that forward only', async (t) => {
  const be = wasmBackend()!;
  be.setThreads(2); await be.whenReady();
  const c: Cfg = { n_layer: 2, n_head: 2, d_head: 4, seed: 3, B: 2, P: 5 };
  const m = build(c);
  const want = m.forward(tokensFor(c));
  t.throws(() => m.runWithHooks(tokensFor(c), { fwdHooks: [['blocks.1.hook_resid_pre', () => { throw new Error('boom'); }]] }), /boom/);
  t.ok(same(m.forward(tokensFor(c)), want), 'next forward is unaffected');
  m.dispose();
  be.setThreads(1);
});

t.test('intra-op: a helper thread that dies is retired; results stay right and nothing hangs', async (t) => {
  const be = wasmBackend()!;
  be.setThreads(2); await be.whenReady();
  const K = 300, N = 256, M = 40;
  const a = Float32Array.from({ length: M * K }, (_, i) => Math.sin(i)), b = Float32Array.from({ length: K * N }, (_, i) => Math.cos(i));
  const w = be.pack(b, K, N, 'f32');
  const want = be.matmul(a, M, w).slice();
  await killHelper(be);
  const t0 = Date.now();
  const got = be.matmul(a, M, w);
  t.ok(got.every((v, i) => Object.is(v, want[i])), 'same result after the helper died');
  t.ok(Date.now() - t0 < 5000, `finished in ${Date.now() - t0} ms (deadline 2 s)`);
  t.equal(be.threads, 1, 'the dead helper was retired');
  const t1 = Date.now();
  be.matmul(a, M, w);
  t.ok(Date.now() - t1 < 500, 'later matmuls do not wait for it');
  w.release();
  be.setThreads(1);
});

t.test('pool: sweeps and batches equal the single-thread results bit for bit', async (t) => {
  await fc.assert(fc.asyncProperty(arbCfg, fc.integer({ min: 1, max: 3 }), fc.boolean(), async (c, threads, last) => {
    const m = build(c);
    const clean = tokensFor(c), corrupted = tokensFor(c, 5);
    const answers = Tensor.from(Array.from({ length: c.B }, (_, b) => [b % V, (b + 3) % V]).flat(), [c.B, 2]);
    const { cache } = m.runWithCache(clean);
    const metric = (lg: Tensor) => logitsToAveLogitDiff(lg, answers);
    const pool = await ForwardPool.create(m, { threads });
    let ok = true;
    for (const name of ['getActPatchResidPre', 'getActPatchAttnHeadOutAllPos', 'getActPatchAttnHeadPatternAllPos', 'getActPatchAttnHeadVByPos'] as const) {
      const serial = patching[name](m, corrupted, cache, metric, { lastPositionLogits: last });
      const par = await patching.parallel[name](pool, corrupted, cache, metric, { lastPositionLogits: last });
      ok &&= same(serial, par);
    }
    const batch = await pool.runBatch(clean, { cache: 'all' });
    const ref = m.runWithCache(clean);
    const sharedRef = m.runWithCache(clean, { shared: true, posSlice: -1 });
    const sliced = m.runWithCache(clean, { posSlice: -1 });
    ok &&= sharedRef.cache.keys().every((k) => sharedRef.cache.get(k).data.buffer instanceof SharedArrayBuffer && same(sharedRef.cache.get(k), sliced.cache.get(k)));
    ok &&= same(batch.logits, ref.logits) && ref.cache.keys().every((k) => same(batch.cache!.get(k), ref.cache.get(k)));
    m.dispose(); // closes the pool
    return ok;
  }), { numRuns: 8 });
  t.pass();
});

t.test('pool faults: a throwing worker, a worker killed mid-sweep, dispose during a run', async (t) => {
  const c: Cfg = { n_layer: 3, n_head: 4, d_head: 8, seed: 11, B: 2, P: 9 };
  const m = build(c);
  const clean = tokensFor(c), corrupted = tokensFor(c, 7);
  const answers = Tensor.from([1, 2, 3, 4], [2, 2]);
  const { cache } = m.runWithCache(clean);
  const metric = (lg: Tensor) => logitsToAveLogitDiff(lg, answers);
  const pool = await ForwardPool.create(m, { threads: 2 });
  const want = patching.getActPatchAttnHeadVByPos(m, corrupted, cache, metric);

  await t.rejects(pool.run({ kind: 'throw' }), /worker failed: injected failure/);
  m.addHook('blocks.0.hook_resid_pre', (x) => x);
  await t.rejects(patching.parallel.getActPatchAttnHeadVByPos(pool, corrupted, cache, metric), /the model has hooks attached/, 'main-thread hooks are refused, not silently dropped');
  m.resetHooks({ includingPermanent: true });
  t.ok(same(await patching.parallel.getActPatchAttnHeadVByPos(pool, corrupted, cache, metric), want), 'after a throwing task, a sweep succeeds');

  let killed = false;
  const sweep = patching.parallel.getActPatchAttnHeadVByPos(pool, corrupted, cache, metric, {
    onProgress: (done) => { if (!killed && done >= 3) { killed = true; killWorker(pool); } },
  });
  const r = await sweep.then(() => 'ok', (e) => e);
  t.ok(r === 'ok' || (r instanceof TypelensError && /worker failed/.test(r.message)), `killed mid-sweep: ${r instanceof Error ? r.message : r}`);
  t.ok(same(await patching.parallel.getActPatchAttnHeadVByPos(pool, corrupted, cache, metric), want), 'the pool recovered: the next sweep is right');
  // a request racing a kill may fail (that is the contract); the one after it must not
  for (let i = 0; i < 5; i++) { killWorker(pool); await new Promise((r) => setTimeout(r, 30)); await pool.runBatch(clean).catch((e) => { if (!(e instanceof TypelensError)) throw e; }); }
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
