// `npm run bench -- load [--presets gpt2-medium,gpt2-large,gpt2-xl]`: load time with and without
// the demo's processing, peak and resident RSS per dtype, and the large presets (load, one
// 15-token forward with the full cache, peak RSS). Each configuration runs in its own process
// (so peak RSS is its own); the baseline in the same run is reading the checkpoint's bytes
// (the floor any loader pays from a warm page cache).
import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, openSync, readSync, statSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { wasmBackend } from '../src/kernels/index.js';
import { runtimeConfig } from '../src/platform/env.js';
import { HookedTransformer } from '../src/model/hooked-transformer.js';
import { makeWeights, PRESETS } from '../src/model/make-weights.js';
import { NO_PROCESSING, DEFAULT_PROCESSING } from '../src/model/process.js';
import { readSafetensors } from '../src/tensor/safetensors.js';
import type { DType } from '../src/tensor/dtype.js';

const PROMPT15 = [464, 3290, 286, 4881, 318, 6342, 13, 383, 3139, 286, 4486, 318, 11307, 290, 262];
const PROCESSING = {
  none: NO_PROCESSING,
  default: DEFAULT_PROCESSING,
  // the demo's (src/cli/demo.ts DEMO_FLAGS): TL's defaults plus refactor_factored_attn_matrices
  demo: { ...DEFAULT_PROCESSING, refactorFactoredAttnMatrices: true },
} as const;
type Processing = keyof typeof PROCESSING;

/** Bytes of the checkpoint's tensors in `dtype` (what "one copy of each weight" would hold). */
function weightBytes(dir: string, dtype: DType): number {
  const st = readSafetensors(join(dir, 'model.safetensors'));
  let n = 0;
  for (const e of st.entries.values()) n += e.shape.reduce((a, b) => a * b, 1);
  (st as { close?: () => void }).close?.();
  return n * (dtype === 'f32' ? 4 : 2);
}

/** Read a file's bytes in 64 MiB pieces: the warm-cache floor of any loader. */
function readMs(path: string): number {
  const t0 = performance.now();
  const fd = openSync(path, 'r'),
    buf = new Uint8Array(64 << 20);
  for (let off = 0; readSync(fd, buf, 0, buf.length, off) > 0; off += buf.length);
  closeSync(fd);
  return performance.now() - t0;
}

/** One configuration in this process (run as a child): load, optional forward, memory. */
export function loadOne(dir: string, dtype: DType, processing: Processing, forward: boolean): void {
  wasmBackend()?.setThreads(1);
  const t0 = performance.now();
  let model: HookedTransformer;
  try {
    model = HookedTransformer.fromDir(dir, { ...PROCESSING[processing], dtype });
  } catch (e) {
    console.log(JSON.stringify({ error: (e as Error).message }));
    return;
  }
  const loadMs = performance.now() - t0;
  const peakLoad = process.resourceUsage().maxRSS * 1024;
  (globalThis as { gc?: () => void }).gc?.();
  const resident = process.memoryUsage().rss;
  let forwardMs: number | null = null;
  if (forward) {
    model.runWithCache([PROMPT15]); // warm-up
    const t1 = performance.now();
    model.runWithCache([PROMPT15]);
    forwardMs = performance.now() - t1;
  }
  console.log(
    JSON.stringify({
      load_ms: loadMs,
      peak_rss_load_mb: peakLoad / 2 ** 20,
      resident_mb: resident / 2 ** 20,
      forward_ms: forwardMs,
      peak_rss_mb: (process.resourceUsage().maxRSS * 1024) / 2 ** 20,
    }),
  );
}

function child(dir: string, dtype: DType, processing: Processing, forward: boolean): Record<string, unknown> {
  const r = spawnSync(
    process.execPath,
    [
      '--expose-gc',
      fileURLToPath(new URL('./run.js', import.meta.url)),
      'load-one',
      dir,
      dtype,
      processing,
      forward ? '1' : '0',
    ],
    { encoding: 'utf8', maxBuffer: 1 << 26 },
  );
  if (r.status !== 0) return { error: `exit ${r.status}: ${r.stderr.trim().split('\n').slice(-3).join(' | ')}` };
  return JSON.parse(r.stdout.trim().split('\n').pop()!);
}

const round = (x: unknown, d = 1) => (typeof x === 'number' ? +x.toFixed(d) : x);

export function benchLoad(root: string, presets: string[]): Record<string, unknown>[] {
  const rows: Record<string, unknown>[] = [];
  const sets: [string, DType[], Processing[], boolean][] = [
    ['gpt2-small', ['f32', 'bf16'], ['none', 'default', 'demo'], false],
    ...presets.map(
      (p) =>
        [p, ['bf16', 'f32'] as DType[], ['none'] as Processing[], true] as [string, DType[], Processing[], boolean],
    ),
  ];
  for (const [preset, dtypes, procs, forward] of sets) {
    const dir = join(root, 'weights', `random-${preset}-seed0`);
    if (!existsSync(join(dir, 'model.safetensors'))) {
      console.log(`generating random ${preset} (seed 0)...`);
      makeWeights(dir, PRESETS[preset], 0);
    }
    const file = join(dir, 'model.safetensors');
    readMs(file); // warm the page cache
    const baseline = readMs(file);
    for (const dtype of dtypes)
      for (const processing of procs) {
        const load1 = loadavg()[0];
        const res = child(dir, dtype, processing, forward);
        const wb = weightBytes(dir, dtype);
        const row = {
          section: 'load',
          preset,
          dtype,
          processing,
          file_mb: round(statSync(file).size / 2 ** 20),
          weights_mb: round(wb / 2 ** 20),
          read_file_ms: round(baseline),
          // the refactor's SVDs run on TYPELENS_THREADS threads (the matmuls here on one)
          processing_threads: processing === 'demo' ? runtimeConfig().threads : 1,
          ...Object.fromEntries(Object.entries(res).map(([k, v]) => [k, round(v)])),
          peak_over_resident:
            typeof res.peak_rss_load_mb === 'number'
              ? round((res.peak_rss_load_mb as number) / (res.resident_mb as number), 2)
              : null,
          resident_over_weights:
            typeof res.resident_mb === 'number' ? round((res.resident_mb as number) / (wb / 2 ** 20), 2) : null,
          loadavg_1m: round(load1, 2),
        };
        rows.push(row);
        console.log(JSON.stringify(row));
      }
  }
  return rows;
}
