// FactorThreads (the load-time refactor's SVDs split across helper threads) against the same jobs
// run one by one on this thread: every factor must be bit for bit the same (each job runs the same
// code wherever it is claimed), a helper must actually take jobs, a helper that hangs mid-job must
// be taken over, and the refactor of whole models must not change a bit when threaded.
import t from 'tap';
import fc from 'fast-check';
import { setTimeout as sleep } from 'node:timers/promises';
import { factorJob, FactorThreads, type FactorJob, type FactorResult } from '../src/tensor/factor-jobs.js';
import { setRefactorThreadsMinWork } from '../src/model/process.js';
import { threadMatmulKernel } from '../src/kernels/index.js';
import { HookedTransformer, randomGPT2, hfConfig } from '../src/index.js';
import { invariants } from './helpers.js';

/** The refactor's own helper module (its products on a WASM instance of its own). */
const HELPER = new URL('../src/model/refactor-helper.js', import.meta.url);

const sameBits = (a: Float32Array, b: Float32Array) =>
  a.length === b.length &&
  Buffer.compare(
    Buffer.from(a.buffer, a.byteOffset, a.byteLength),
    Buffer.from(b.buffer, b.byteOffset, b.byteLength),
  ) === 0;

function randomJob(seed: number, n: number, r: number, m: number, kind: 'even' | 'svd'): FactorJob {
  let s = seed >>> 0 || 1;
  const rand = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32) * 2 - 1;
  return {
    A: Float32Array.from({ length: n * m }, rand),
    n,
    Bt: Float32Array.from({ length: r * m }, rand),
    r,
    m,
    kind,
  };
}

/** Until the pool's threads serve (under tap a thread boots in seconds). */
async function whenReady(pool: FactorThreads): Promise<void> {
  for (let i = 0; i < 3000 && pool.ready() === 0; i++) await sleep(10);
}
const exact = (jobs: FactorJob[], got: FactorResult[]) =>
  jobs.every((j, i) => {
    const want = factorJob(j);
    return sameBits(got[i].U, want.U) && sameBits(got[i].V, want.V);
  });

const arbBatch = fc.record({
  seed: fc.nat(),
  count: fc.integer({ min: 2, max: 24 }),
  n: fc.integer({ min: 1, max: 96 }),
  r: fc.integer({ min: 1, max: 96 }),
  m: fc.integer({ min: 1, max: 12 }),
});

t.test('threaded factor jobs are bit-identical to serial ones, and the helper takes some', async (t) => {
  const inv = invariants(t, ['every U and V is bit-identical to the serial job']);
  // capacity for the largest batch the property draws
  const pool = new FactorThreads(1, {
    helperUrl: HELPER,
    kernel: threadMatmulKernel(),
    capacity: { jobs: 24, floats: 24 * FactorThreads.floatsOf([{ n: 96, r: 96, m: 12 }]) },
  });
  t.teardown(() => pool.close());
  await whenReady(pool);
  t.ok(pool.ready() >= 1, 'the helper thread started');
  await inv.run(() =>
    fc.assert(
      fc.property(arbBatch, (b) => {
        const jobs = Array.from({ length: b.count }, (_, i) =>
          randomJob(b.seed + i, b.n, b.r, b.m, i % 2 ? 'svd' : 'even'),
        );
        const got = pool.run(jobs);
        jobs.forEach((j, i) => {
          const want = factorJob(j);
          inv.check(
            'every U and V is bit-identical to the serial job',
            sameBits(got[i].U, want.U) && sameBits(got[i].V, want.V),
            () => `job ${i} (${j.kind}, n ${j.n}, r ${j.r}, m ${j.m}) differs`,
          );
        });
      }),
      { numRuns: 60 },
    ),
  );
  // big enough jobs that the helper, woken within microseconds, claims some of every batch
  const big = Array.from({ length: 24 }, (_, i) => randomJob(1000 + i, 96, 96, 12, 'svd'));
  const before = pool.stats.onHelpers;
  for (let k = 0; k < 10; k++) pool.run(big);
  t.ok(pool.stats.onHelpers > before, `the helper ran ${pool.stats.onHelpers - before} of 240 jobs`);
});

t.test(
  'a helper that hangs mid-job is taken over: the results are still exact, later batches run serially',
  async (t) => {
    const hang = new URL('./fault-helpers/factor-claim-and-hang.js', import.meta.url);
    const jobs = Array.from({ length: 64 }, (_, i) => randomJob(7 + i, 64, 80, 8, i % 2 ? 'svd' : 'even'));
    const pool = new FactorThreads(1, {
      helperUrl: hang,
      kernel: threadMatmulKernel(),
      capacity: { jobs: 64, floats: FactorThreads.floatsOf(jobs) },
      stallMs: 300,
    });
    t.teardown(() => pool.close());
    // the hanging thread claims a job of the first batch it sees: this one if it boots in time, else the next
    const first = pool.run(jobs);
    await whenReady(pool);
    const second = pool.run(jobs);
    t.ok(pool.stats.takenOver >= 1, `the caller took over ${pool.stats.takenOver} stalled job(s)`);
    t.ok(exact(jobs, first) && exact(jobs, second), 'every result equals the serial job');
    const again = pool.run(jobs.slice(0, 4));
    t.ok(
      again.every((g, i) => sameBits(g.U, factorJob(jobs[i]).U)),
      'after retiring the helper, a batch still runs (on the caller)',
    );
  },
);

/** Small GPT-2 shapes for the whole-model properties (4 heads of 12 at most: a 48-wide stream). */
const arbModel = fc.record({
  n_layer: fc.integer({ min: 1, max: 3 }),
  n_head: fc.integer({ min: 1, max: 4 }),
  d_head: fc.integer({ min: 2, max: 12 }),
  seed: fc.nat(),
});
const shapeOf = (c: { n_layer: number; n_head: number; d_head: number }) => ({
  n_layer: c.n_layer,
  n_head: c.n_head,
  n_embd: c.n_head * c.d_head,
  n_positions: 8,
  vocab_size: 31,
});

t.test('refactorFactoredAttnMatrices gives the same bits with its SVDs on helper threads', async (t) => {
  const inv = invariants(t, ['every parameter is bit-identical threaded and serial']);
  t.teardown(() => setRefactorThreadsMinWork());
  await inv.run(() =>
    fc.assert(
      fc.property(arbModel, (c) => {
        const shape = shapeOf(c);
        const load = (minWork: number) => {
          setRefactorThreadsMinWork(minWork);
          return HookedTransformer.fromHFTensors(hfConfig(shape, 30), randomGPT2(shape, c.seed), {
            refactorFactoredAttnMatrices: true,
          });
        };
        const serial = load(Infinity),
          threaded = load(0);
        try {
          const a = new Map(serial.namedParameters()),
            b = new Map(threaded.namedParameters());
          for (const [name, p] of a)
            inv.check(
              'every parameter is bit-identical threaded and serial',
              sameBits(p.f32(), b.get(name)!.f32()),
              () => name,
            );
        } finally {
          serial.dispose();
          threaded.dispose();
        }
      }),
      { numRuns: 15 },
    ),
  );
});

t.test(
  'processWeights with a started, warmed pool: the helper takes heads and every parameter keeps its bits',
  async (t) => {
    const { processWeights } = await import('../src/model/process.js');
    const { convertGPT2 } = await import('../src/model/weights.js');
    const { configFromHF } = await import('../src/model/config.js');
    const { safetensorsFromTensors } = await import('../src/model/safetensors.js');
    // one pool for every case, sized for the largest (4 heads of 12 on a 48-wide stream), started
    // and warmed before the first, as the loader does before it reads a checkpoint
    const pool = new FactorThreads(1, {
      helperUrl: HELPER,
      kernel: threadMatmulKernel(),
      capacity: { jobs: 8, floats: 8 * FactorThreads.floatsOf([{ n: 49, r: 49, m: 12 }]) },
      warm: { n: 49, m: 12 },
    });
    t.teardown(() => pool.close());
    await whenReady(pool);
    const inv = invariants(t, ['every processed parameter is bit-identical with the pool and without']);
    const weightsOf = (shape: Parameters<typeof randomGPT2>[0], seed: number) => {
      const cfg = configFromHF(hfConfig(shape, 30));
      return { cfg, W: convertGPT2(safetensorsFromTensors(randomGPT2(shape, seed)), cfg) };
    };
    const flat = (W: ReturnType<typeof weightsOf>['W']) =>
      W.blocks.flatMap((b) => [b.W_Q, b.W_K, b.W_V, b.W_O, b.b_Q, b.b_K, b.b_V, b.b_O].map((x) => x.f32()));
    await inv.run(() =>
      fc.assert(
        fc.property(arbModel, (c) => {
          const shape = shapeOf(c);
          const a = weightsOf(shape, c.seed),
            b = weightsOf(shape, c.seed);
          processWeights(a.W, a.cfg, { refactorFactoredAttnMatrices: true }, undefined, pool);
          setRefactorThreadsMinWork(Infinity);
          try {
            processWeights(b.W, b.cfg, { refactorFactoredAttnMatrices: true });
          } finally {
            setRefactorThreadsMinWork();
          }
          const fa = flat(a.W),
            fb = flat(b.W);
          inv.check(
            'every processed parameter is bit-identical with the pool and without',
            fa.every((x, i) => sameBits(x, fb[i])),
            () => `shape ${JSON.stringify(c)}`,
          );
        }),
        { numRuns: 20 },
      ),
    );
    t.ok(pool.stats.onHelpers > 0, `the helper ran ${pool.stats.onHelpers} of ${pool.stats.jobs} head factorisations`);
  },
);
