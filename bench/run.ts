// `npm run bench -- matmul|forward|parallel|backward|patching|all`: typelens against numpy/OpenBLAS on the same machine,
// in the same run. Timings come from the `benchmark` package (statistically sampled); the
// numpy side runs in a python3 child with OPENBLAS_NUM_THREADS matching our thread count.
import Benchmark from 'benchmark';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cudaStatus, WasmBackend, wasmBackend } from '../src/kernels/index.js';
import { ForwardPool } from '../src/parallel/pool.js';
import * as patching from '../src/patching/index.js';
import { parallel as parallelPatching } from '../src/parallel/sweep.js';
import { Tensor } from '../src/tensor/index.js';
import { ag, withGrad } from '../src/autograd/index.js';
import { HookedTransformer } from '../src/model/hooked-transformer.js';
import { makeWeights, PRESETS } from '../src/model/make-weights.js';
import { NO_PROCESSING } from '../src/model/process.js';
import type { DType } from '../src/tensor/dtype.js';
import { benchLoad, loadOne } from './load.js';
import { peerRows } from './peer-tfjs.js';
import { benchPatching } from './patching.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const benchDir = join(root, 'bench');
const resultsDir = join(benchDir, 'results');

/** numpy with OpenBLAS on n threads; the CORETYPE/L2 overrides are for old OpenBLAS builds and slow a current one. */
function python(args: string[], threads: number): unknown | null {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    OPENBLAS_NUM_THREADS: String(threads),
    OMP_NUM_THREADS: String(threads),
  };
  delete env.OPENBLAS_CORETYPE;
  delete env.OPENBLAS_L2_SIZE;
  const r = spawnSync('python3', args, { env, encoding: 'utf8', maxBuffer: 1 << 24 });
  if (r.status !== 0) {
    console.warn(`numpy baseline unavailable: ${(r.stderr || r.error?.message || '').trim().split('\n').pop()}`);
    return null;
  }
  return JSON.parse(r.stdout.trim().split('\n').pop()!);
}

function time(name: string, fn: () => void, maxTime = 1): number {
  const b = new Benchmark(name, fn, { maxTime, minSamples: 5 }).run({ async: false });
  if (b.error) throw b.error;
  return b.stats.mean * 1000; // ms
}

function benchMatmul(): void {
  const shapes: [number, number, number][] = [[768, 768, 768]];
  for (const M of [15, 120])
    for (const [K, N] of [
      [768, 2304],
      [768, 3072],
      [3072, 768],
      [768, 50257],
    ])
      shapes.push([M, K, N]);
  const np = python([join(benchDir, 'numpy_matmul.py'), ...shapes.map((s) => s.join(','))], 1) as Record<
    string,
    number
  > | null;
  const variants = [new WasmBackend({ fma: false }), new WasmBackend({ fma: true })];
  const rows: Record<string, unknown>[] = [];
  console.log('   M     K      N  threads  wasm-simd  wasm-fma   numpy(1t)  ratio');
  for (const [M, K, N] of shapes) {
    const a = Float32Array.from({ length: M * K }, (_, i) => ((i * 7919) % 1000) / 1000 - 0.5);
    const b = Float32Array.from({ length: K * N }, (_, i) => ((i * 104729) % 1000) / 1000 - 0.5);
    const out = new Float32Array(M * N);
    const g = variants.map((be) => {
      const pw = be.pack(b, K, N, 'f32');
      be.matmul(a, M, pw, out);
      const ms = time(`${be.name} ${M}x${K}x${N}`, () => be.matmul(a, M, pw, out));
      pw.release();
      return (2 * M * K * N) / ms / 1e6;
    });
    const best = Math.max(...g);
    const npg = np ? np[`${M},${K},${N}`] : null;
    const ratio = npg ? best / npg : null;
    rows.push({
      M,
      K,
      N,
      threads: 1,
      typelens_gflops: +best.toFixed(2),
      numpy_gflops: npg ? +npg.toFixed(2) : null,
      ratio: ratio ? +ratio.toFixed(3) : null,
      wasm_simd_gflops: +g[0].toFixed(2),
      wasm_fma_gflops: +g[1].toFixed(2),
      default_backend: variants[0].name,
    });
    console.log(
      `${String(M).padStart(4)} ${String(K).padStart(5)} ${String(N).padStart(6)}  1        ${g[0].toFixed(1).padStart(8)}  ${g[1].toFixed(1).padStart(8)}  ${(npg ?? NaN).toFixed(1).padStart(9)}  ${ratio ? ratio.toFixed(2) : 'n/a'}`,
    );
  }
  writeJson('matmul.json', rows);
}

const PROMPT15 = [50256, 3260, 1757, 290, 5335, 1816, 284, 262, 3650, 11, 1757, 2921, 257, 9294, 286];

/** Median wall time of n runs (for runs too long for the benchmark package's sampling). */
function medianMs(fn: () => void, n: number): number {
  const ts: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    fn();
    ts.push(performance.now() - t0);
  }
  return ts.sort((a, b) => a - b)[n >> 1];
}

/** A prompt of n tokens: the 15-token one repeated (1,024 tokens for the long-context rows). */
const promptOf = (n: number) => Array.from({ length: n }, (_, i) => PROMPT15[i % 15]);

/** One configuration in its own process so that peak RSS is its own (1 thread, 15 tokens, full cache unless given). */
async function forwardOne(dir: string, dtype: DType, batch: number, threads = 1, P = 15, cache = 'all'): Promise<void> {
  const be = wasmBackend()!;
  be.setThreads(threads);
  await be.whenReady();
  const model = HookedTransformer.fromDir(dir, { ...NO_PROCESSING, dtype });
  const tokens = Array.from({ length: batch }, () => promptOf(P));
  const run = cache === 'all' ? () => model.runWithCache(tokens) : () => model.forward(tokens);
  // a 1,024-token forward takes seconds (minutes on a loaded machine): one timed run, no warm-up
  // (the kernels are compiled at load and the JS warms up within the first block)
  if (P <= 100) run();
  const ms = P > 100 ? medianMs(run, 1) : time(`forward ${dtype}`, run, 3);
  console.log(JSON.stringify({ dtype, batch, median_ms: ms, peak_rss_mb: process.resourceUsage().maxRSS / 1024 }));
}

/**
 * Issue 16's rows: at 2 threads against numpy with OPENBLAS_NUM_THREADS=2, 15 tokens (full cache,
 * logits only, batch 8 logits only) and 1,024 tokens (full cache and logits only). numpy always
 * keeps every activation (its reference forward), so it is the same baseline for both cache modes.
 */
function forwardThreaded(dir: string): Record<string, unknown>[] {
  const rows: Record<string, unknown>[] = [];
  const configs: [number, number, string][] = [
    [1, 15, 'all'],
    [1, 15, 'none'],
    [8, 15, 'none'],
    [1, 1024, 'all'],
    [1, 1024, 'none'],
  ];
  const np = new Map<string, number | null>();
  for (const [batch, P, cache] of configs) {
    const key = `${batch}x${P}`;
    if (!np.has(key)) {
      const toks = Array.from({ length: batch }, () => promptOf(P).join(',')).join(';');
      const r = python([join(benchDir, 'numpy_forward.py'), dir, toks, P > 100 ? '1' : '7'], 2) as {
        median_ms: number;
      } | null;
      np.set(key, r?.median_ms ?? null);
    }
    const r = spawnSync(
      process.execPath,
      [fileURLToPath(import.meta.url), 'forward-one', dir, 'f32', String(batch), '2', String(P), cache],
      { encoding: 'utf8' },
    );
    if (r.status !== 0) throw new Error(r.stderr);
    const res = JSON.parse(r.stdout.trim().split('\n').pop()!);
    const base = np.get(key) ?? null;
    const row = {
      ...res,
      tokens: P,
      cache,
      threads: 2,
      numpy_median_ms: base,
      ratio: base ? +(res.median_ms / base).toFixed(3) : null,
      load_avg_1m: +loadavg()[0].toFixed(2),
    };
    rows.push(row);
    console.log(
      `batch ${batch} x ${P} tokens, cache ${cache}, 2 threads: typelens ${res.median_ms.toFixed(1)} ms, numpy ${base?.toFixed(1) ?? 'n/a'} ms, ratio ${row.ratio ?? 'n/a'}`,
    );
  }
  return rows;
}

function benchForward(): void {
  const dir = resolve(root, 'weights', 'random-gpt2-small-seed0');
  if (!existsSync(join(dir, 'model.safetensors'))) {
    console.log('generating random gpt2-small (seed 0)...');
    makeWeights(dir, PRESETS['gpt2-small'], 0);
  }
  const rows: Record<string, unknown>[] = [];
  for (const batch of [1, 8]) {
    const toks = Array.from({ length: batch }, () => PROMPT15.join(',')).join(';');
    const np = python([join(benchDir, 'numpy_forward.py'), dir, toks, '7'], 1) as { median_ms: number } | null;
    for (const dtype of (batch === 1 ? ['f32', 'bf16', 'f16'] : ['f32']) as DType[]) {
      const r = spawnSync(
        process.execPath,
        [fileURLToPath(import.meta.url), 'forward-one', dir, dtype, String(batch)],
        { encoding: 'utf8' },
      );
      if (r.status !== 0) throw new Error(r.stderr);
      const res = JSON.parse(r.stdout.trim().split('\n').pop()!);
      const row = {
        ...res,
        tokens: 15,
        cache: 'all',
        threads: 1,
        numpy_median_ms: np?.median_ms ?? null,
        ratio: np ? +(res.median_ms / np.median_ms).toFixed(3) : null,
      };
      rows.push(row);
      console.log(
        `batch ${batch} ${dtype}: typelens ${res.median_ms.toFixed(1)} ms (peak RSS ${res.peak_rss_mb.toFixed(0)} MB), numpy ${np?.median_ms.toFixed(1) ?? 'n/a'} ms, ratio ${row.ratio ?? 'n/a'} (lower is faster)`,
      );
    }
  }
  rows.push(...forwardThreaded(dir));
  rows.push(...peerRows(dir)); // tfjs-wasm, same checkpoint, 2 threads (bench/peer-tfjs.ts)
  writeJson('forward.json', rows);
}

/**
 * One thread count in its own process (so peak RSS is its own): latency of one 15-token forward
 * with the full cache, throughput of a batch of 8 (intra-op helpers, and the worker pool), and a
 * 144-head patching sweep (one patched forward per head; serial at 1 thread, the pool above).
 */
async function parallelOne(dir: string, threads: number): Promise<void> {
  const be = wasmBackend()!;
  be.setThreads(threads);
  await be.whenReady();
  const model = HookedTransformer.fromDir(dir, NO_PROCESSING);
  const one = [PROMPT15],
    eight = Array.from({ length: 8 }, () => PROMPT15);
  model.runWithCache(one);
  const latency = time(`latency x${threads}`, () => model.runWithCache(one), 3);
  const batchIntra = time(`batch x${threads}`, () => model.forward(eight), 3);
  const batchIntraCache = time(`batch+cache x${threads}`, () => model.runWithCache(eight), 3);
  const corrupted = [...PROMPT15];
  corrupted[10] = 5335; // S2 swapped: John -> Mary
  const answers = Tensor.from([5335, 1757], [1, 2]);
  const { cache } = model.runWithCache(one);
  const metric = patching.logitDiffMetric(answers); // declares it reads the last position only
  let sweep: number,
    batchPool: number | null = null,
    batchPoolCache: number | null = null;
  if (threads === 1) {
    const t0 = performance.now();
    patching.getActPatchAttnHeadOutAllPos(model, [corrupted], cache, metric);
    sweep = performance.now() - t0;
  } else {
    be.setThreads(1); // the pool's workers are the threads now
    const pool = await ForwardPool.create(model, { threads });
    const t0 = performance.now();
    await parallelPatching.getActPatchAttnHeadOutAllPos(pool, [corrupted], cache, metric);
    sweep = performance.now() - t0;
    const tok = Tensor.from(eight.flat(), [8, 15]);
    await pool.runBatch(tok);
    let t1 = performance.now();
    for (let i = 0; i < 5; i++) await pool.runBatch(tok);
    batchPool = (performance.now() - t1) / 5;
    t1 = performance.now();
    for (let i = 0; i < 3; i++) await pool.runBatch(tok, { cache: 'all' });
    batchPoolCache = (performance.now() - t1) / 3;
  }
  model.dispose();
  console.log(
    JSON.stringify({
      threads,
      latency_ms: latency,
      batch8_intra_op_ms: batchIntra,
      batch8_pool_ms: batchPool,
      batch8_cache_intra_op_ms: batchIntraCache,
      batch8_cache_pool_ms: batchPoolCache,
      sweep144_ms: sweep,
      peak_rss_mb: process.resourceUsage().maxRSS / 1024,
    }),
  );
}

function benchParallel(): void {
  const dir = resolve(root, 'weights', 'random-gpt2-small-seed0');
  if (!existsSync(join(dir, 'model.safetensors'))) {
    console.log('generating random gpt2-small (seed 0)...');
    makeWeights(dir, PRESETS['gpt2-small'], 0);
  }
  const res: Record<
    number,
    {
      latency_ms: number;
      batch8_intra_op_ms: number;
      batch8_pool_ms: number | null;
      batch8_cache_intra_op_ms: number;
      batch8_cache_pool_ms: number | null;
      sweep144_ms: number;
      peak_rss_mb: number;
    }
  > = {};
  for (const threads of [1, 2]) {
    const r = spawnSync(process.execPath, [fileURLToPath(import.meta.url), 'parallel-one', dir, String(threads)], {
      encoding: 'utf8',
    });
    if (r.status !== 0) throw new Error(r.stderr);
    res[threads] = JSON.parse(r.stdout.trim().split('\n').pop()!);
  }
  const np: Record<string, number | null> = {};
  for (const [batch, threads] of [
    [1, 1],
    [8, 1],
    [1, 2],
    [8, 2],
  ]) {
    const toks = Array.from({ length: batch }, () => PROMPT15.join(',')).join(';');
    np[`b${batch}t${threads}`] =
      (python([join(benchDir, 'numpy_forward.py'), dir, toks, '7'], threads) as { median_ms: number } | null)
        ?.median_ms ?? null;
  }
  const [a, b] = [res[1], res[2]];
  const batch2 = Math.min(b.batch8_intra_op_ms, b.batch8_pool_ms ?? Infinity);
  const out = {
    threads: 2,
    latency_speedup: +(a.latency_ms / b.latency_ms).toFixed(2),
    batch_speedup: +(a.batch8_intra_op_ms / batch2).toFixed(2),
    sweep_speedup: +(a.sweep144_ms / b.sweep144_ms).toFixed(2),
    rss_ratio: +(b.peak_rss_mb / a.peak_rss_mb).toFixed(2),
    batch_mode_at_2: b.batch8_intra_op_ms <= (b.batch8_pool_ms ?? Infinity) ? 'intra-op' : 'pool',
    runs: res,
    numpy_median_ms: np,
    numpy_ratio_latency_same_threads: np.b1t2 ? +(b.latency_ms / np.b1t2).toFixed(2) : null,
    numpy_ratio_batch_same_threads: np.b8t2 ? +(batch2 / np.b8t2).toFixed(2) : null,
    numpy_ratio_latency_numpy_1_thread: np.b1t1 ? +(b.latency_ms / np.b1t1).toFixed(2) : null,
    numpy_ratio_batch_numpy_1_thread: np.b8t1 ? +(batch2 / np.b8t1).toFixed(2) : null,
    batch_with_cache_speedup: +(
      a.batch8_cache_intra_op_ms / Math.min(b.batch8_cache_intra_op_ms, b.batch8_cache_pool_ms ?? Infinity)
    ).toFixed(2),
    model:
      'random gpt2-small-shaped, unprocessed, f32; 15 tokens; latency with the full cache; batch throughput = logits only (with-cache figures in runs); ' +
      'numpy runs its reference forward (which keeps every activation) with OPENBLAS_NUM_THREADS as stated',
  };
  console.log(JSON.stringify(out, null, 2));
  writeJson('parallel.json', out);
}

/**
 * Gradients (issue 14): one 15-token forward of a gpt2-small-shaped model (logits, no cache) against
 * the same forward recorded on the tape plus its backward from the LM loss, with every parameter's
 * gradient (training's case) and with activation gradients only (attribution patching's case).
 * One thread, as the forward table. numpy has no autograd and no torch is installed: no baseline.
 */
function benchBackward(): void {
  const dir = resolve(root, 'weights', 'random-gpt2-small-seed0');
  if (!existsSync(join(dir, 'model.safetensors'))) {
    console.log('generating random gpt2-small (seed 0)...');
    makeWeights(dir, PRESETS['gpt2-small'], 0);
  }
  wasmBackend()!.setThreads(1);
  const model = HookedTransformer.fromDir(dir, NO_PROCESSING);
  const tokens = [PROMPT15];
  const loss = (lg: Tensor) => ag.lmCrossEntropyLoss(lg, Tensor.from(tokens));
  model.forward(tokens);
  model.backward(tokens, loss, { views: true });
  model.backward(tokens, loss, { params: false });
  const fwd = time('forward', () => model.forward(tokens), 3);
  const fwdRec = time('recorded forward + loss', () => withGrad(() => loss(model.forward(tokens))), 3);
  const fb = time('forward + backward (params)', () => model.backward(tokens, loss, { views: true }), 3);
  const fbAct = time('forward + backward (activations only)', () => model.backward(tokens, loss, { params: false }), 3);
  const np = python([join(benchDir, 'numpy_forward.py'), dir, PROMPT15.join(','), '7'], 1) as {
    median_ms: number;
  } | null;
  model.dispose();
  const load = loadavg();
  const row = {
    model: 'random gpt2-small-shaped, unprocessed, f32; 15 tokens; 1 thread; loss = LM cross-entropy',
    forward_ms: +fwd.toFixed(2),
    recorded_forward_ms: +fwdRec.toFixed(2),
    forward_backward_ms: +fb.toFixed(2),
    backward_ms: +(fb - fwdRec).toFixed(2),
    ratio_forward_backward_to_forward: +(fb / fwd).toFixed(3),
    ratio_backward_to_forward: +((fb - fwdRec) / fwd).toFixed(3),
    forward_backward_activations_only_ms: +fbAct.toFixed(2),
    ratio_activations_only_backward_to_forward: +((fbAct - fwdRec) / fwd).toFixed(3),
    target: 'backward <= 2.5x forward',
    baseline:
      'no baseline available: torch is not installed and numpy has no autograd (numpy forward for scale: numpy_forward_ms)',
    numpy_forward_ms: np?.median_ms ?? null,
    load_average: load.map((x) => +x.toFixed(2)),
  };
  console.log(JSON.stringify(row, null, 2));
  writeJson('backward.json', row);
}

/** WASM vs CUDA on the same machine and process: 15 tokens with the full cache, and 8 x 15. */
function benchCuda(): void {
  const { addon, reason } = cudaStatus();
  if (!addon) {
    console.error(`bench cuda: ${reason}`);
    process.exitCode = 1;
    return;
  }
  const dir = resolve(root, 'weights', 'random-gpt2-small-seed0');
  if (!existsSync(join(dir, 'model.safetensors'))) {
    console.log('generating random gpt2-small (seed 0)...');
    makeWeights(dir, PRESETS['gpt2-small'], 0);
  }
  // agreement at gpt2-small scale first (the CUDA checks use tiny models): d_model 768 > one block's
  // 256 threads, K up to 3072, and 200 positions (> the attention kernel's 128 threads, and the host
  // path's attention scores through the backend's matmul)
  const agreement: Record<string, unknown>[] = [];
  {
    const wasm = HookedTransformer.fromDir(dir, { ...NO_PROCESSING, backend: 'wasm' }),
      cuda = HookedTransformer.fromDir(dir, { ...NO_PROCESSING, backend: 'cuda' });
    const maxDiff = (a: Float32Array, b: Float32Array) => {
      let m = a.length === b.length ? 0 : Infinity;
      for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
      return m;
    };
    const inputs: [string, Parameters<HookedTransformer['forward']>[0]][] = [
      ['8 x 15 tokens', Array.from({ length: 8 }, () => PROMPT15)],
      [
        '200 tokens',
        Tensor.from(
          Array.from({ length: 200 }, (_, i) => (i * 7919) % 50257),
          [1, 200],
        ),
      ],
    ];
    for (const [input, tok] of inputs) {
      const w = wasm.forward(tok).f32(),
        d = cuda.forward(tok).f32();
      const h = cuda.runWithHooks(tok, { fwdHooks: [['blocks.0.hook_resid_pre', (x) => x]] }).f32();
      const scale = w.reduce((a, v) => Math.max(a, Math.abs(v)), 0);
      const row = {
        input,
        max_abs_logit: scale,
        device_vs_wasm: maxDiff(d, w),
        host_vs_wasm: maxDiff(h, w),
        device_vs_host: maxDiff(d, h),
        ok: true,
      };
      row.ok = Math.max(row.device_vs_wasm, row.host_vs_wasm) <= 1e-4 * (1 + scale);
      if (!row.ok) process.exitCode = 1;
      console.log(
        `${row.ok ? 'ok  ' : 'FAIL'} gpt2-small logits, ${input}: max |diff| device vs WASM ${row.device_vs_wasm.toExponential(1)}, host vs WASM ${row.host_vs_wasm.toExponential(1)}, device vs host ${row.device_vs_host.toExponential(1)} (max |logit| ${scale.toFixed(2)})`,
      );
      agreement.push(row);
    }
    wasm.dispose();
    cuda.dispose();
  }
  writeJson('cuda-agreement.json', agreement);
  const rows: Record<string, unknown>[] = [];
  const ms: Record<string, number> = {};
  for (const backend of ['wasm', 'cuda'] as const) {
    const model = HookedTransformer.fromDir(dir, { ...NO_PROCESSING, backend });
    for (const batch of [1, 8]) {
      const tokens = Array.from({ length: batch }, () => PROMPT15);
      model.runWithCache(tokens);
      ms[`${backend}${batch}all`] = time(`${backend} batch ${batch} cache`, () => model.runWithCache(tokens), 3);
      model.forward(tokens);
      ms[`${backend}${batch}none`] = time(`${backend} batch ${batch}`, () => model.forward(tokens), 3);
    }
    model.dispose();
  }
  console.log('| input | wasm (ms) | cuda (ms) | speedup |\n|---|---|---|---|');
  for (const batch of [1, 8])
    for (const cache of ['all', 'none']) {
      const w = ms[`wasm${batch}${cache}`],
        c = ms[`cuda${batch}${cache}`];
      rows.push({
        batch,
        tokens: 15,
        cache,
        wasm_ms: w,
        cuda_ms: c,
        speedup: +(w / c).toFixed(2),
        device: addon.deviceName(),
      });
      console.log(
        `| ${batch === 1 ? '15 tokens' : '8 x 15 tokens'}, ${cache === 'all' ? 'full cache (host path)' : 'logits only (device path)'} | ${w.toFixed(1)} | ${c.toFixed(1)} | ${(w / c).toFixed(2)}x |`,
      );
    }
  writeJson('cuda.json', rows);
}

/** 1,000 consecutive forwards with hooks and full caches on the tiny preset: RSS must not grow. */
function soak(): void {
  if (!global.gc) {
    console.error('soak: run with node --expose-gc (npm run soak does)');
    process.exitCode = 2;
    return;
  }
  const shape = PRESETS.tiny;
  const dir = resolve(root, 'weights', 'random-tiny-seed0');
  if (!existsSync(join(dir, 'model.safetensors'))) makeWeights(dir, shape, 0);
  const model = HookedTransformer.fromDir(dir);
  const tokens = Array.from({ length: 4 }, (_, b) => Array.from({ length: 32 }, (_, i) => (b * 131 + i * 17) % 50257));
  const rss: number[] = [],
    heap: number[] = [];
  global.gc?.();
  const t0 = performance.now();
  for (let i = 1; i <= 1000; i++) {
    let seen = 0;
    const { cache } = model.runWithCache(tokens, {});
    model.runWithHooks(tokens, {
      fwdHooks: [
        [
          (n: string) => n.endsWith('hook_z'),
          (z) => {
            seen += z.size;
          },
        ],
      ],
    });
    if (cache.size === 0 || seen === 0) throw new Error('soak: hooks or cache did not fire');
    if (i % 100 === 0) {
      global.gc?.();
      const u = process.memoryUsage();
      rss.push(u.rss / 2 ** 20);
      heap.push((u.heapUsed + u.arrayBuffers) / 2 ** 20);
    }
  }
  const ms = performance.now() - t0;
  // live memory (JS heap + array buffers after a full GC) is the leak signal; RSS also moves with
  // the allocator's free lists, so it gets a looser bound on its peak
  const heapGrowth = heap[heap.length - 1] - heap[0],
    rssPeak = Math.max(...rss) - rss[0];
  const row = {
    forwards: 1000,
    per_iteration: `runWithCache (full, ${model.cfg.n_layers * 17 + 4} activations) + runWithHooks (hook_z)`,
    batch: 4,
    tokens: 32,
    seconds: +(ms / 1000).toFixed(1),
    live_mb_every_100: heap.map((x) => +x.toFixed(1)),
    rss_mb_every_100: rss.map((x) => +x.toFixed(1)),
    live_growth_mb: +heapGrowth.toFixed(2),
    live_bound_mb: 5,
    rss_peak_over_first_mb: +rssPeak.toFixed(1),
    rss_bound_mb: 100,
    within_bound: heapGrowth <= 5 && rssPeak <= 100,
  };
  console.log(JSON.stringify(row, null, 2));
  writeJson('soak.json', row);
  model.dispose();
  if (!row.within_bound) process.exitCode = 1;
}

function writeJson(name: string, data: unknown): void {
  mkdirSync(resultsDir, { recursive: true });
  const p = join(resultsDir, name);
  writeFileSync(`${p}.tmp`, JSON.stringify(data, null, 2) + '\n');
  renameSync(`${p}.tmp`, p);
  console.log(`wrote ${p}`);
}

const [what = 'all', ...rest] = process.argv.slice(2);
if (what === 'forward-one')
  await forwardOne(rest[0], rest[1] as DType, Number(rest[2]), Number(rest[3] ?? 1), Number(rest[4] ?? 15), rest[5]);
else if (what === 'load-one') loadOne(rest[0], rest[1] as DType, rest[2] as 'none', rest[3] === '1');
else if (what === 'load') {
  const i = rest.indexOf('--presets');
  writeJson('load.json', benchLoad(root, i >= 0 ? rest[i + 1].split(',') : []));
} else if (what === 'parallel-one') await parallelOne(rest[0], Number(rest[1]));
else {
  if (what === 'matmul' || what === 'all') benchMatmul();
  if (what === 'forward' || what === 'all') benchForward();
  if (what === 'cuda') benchCuda();
  if (what === 'soak') soak();
  if (what === 'parallel' || what === 'all') benchParallel();
  if (what === 'backward' || what === 'all') benchBackward();
  if (what === 'patching' || what === 'all') {
    const dir = resolve(root, 'weights', 'random-gpt2-small-seed0');
    if (!existsSync(join(dir, 'model.safetensors'))) makeWeights(dir, PRESETS['gpt2-small'], 0);
    benchPatching(dir, benchDir, writeJson);
  }
  if (!['matmul', 'forward', 'all', 'cuda', 'soak', 'parallel', 'backward', 'patching'].includes(what)) {
    console.error(`unknown benchmark "${what}" (matmul, forward, parallel, backward, patching, all, cuda, soak)`);
    process.exitCode = 2;
  }
}
