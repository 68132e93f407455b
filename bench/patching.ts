// `npm run bench -- patching`: TL's two ready-made sweeps timed in the issue (get_act_patch_resid_pre,
// 180 patches; get_act_patch_attn_head_out_all_pos, 144 heads) on the seed prompt, typelens's public
// functions with their defaults against TransformerLens's loop on torch CPU (bench/tl_patching.py,
// Debian's python3-torch) in the same run, on the same checkpoint and thread count. typelens also
// runs with the shortcuts this section is about turned off (its former defaults), and on the pool.
// Each typelens configuration runs in its own process; the grids are checked against torch's.
// Debian's torch calls the system libblas.so.3: with only the reference BLAS (libblas3) it runs ~30x
// slower than with OpenBLAS, so install libopenblas0-pthread too (it takes over libblas.so.3); the row
// names the BLAS torch loaded.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const CLEAN = [50256, 3260, 1757, 290, 5335, 1816, 284, 262, 3650, 11, 1757, 2921, 257, 9294, 286];
const CORRUPTED = CLEAN.map((t, i) => (i === 10 ? 5335 : t)); // S2 swapped: John -> Mary
const ANSWERS = [5335, 1757]; // (correct, incorrect) for the clean prompt
const SWEEPS = ['getActPatchResidPre', 'getActPatchAttnHeadOutAllPos'] as const;
type Mode = 'default' | 'former-defaults' | 'pool';
type Child = { seconds: Record<string, number>; grids: Record<string, number[]>; threads: number; mode: Mode };

/** One configuration in this process: load (TL's from_pretrained processing), then each sweep once. */
async function child(dir: string, threads: number, mode: Mode): Promise<Child> {
  const { wasmBackend } = await import('../src/kernels/index.js');
  const { HookedTransformer } = await import('../src/model/hooked-transformer.js');
  const patching = await import('../src/patching/index.js');
  const { parallel } = await import('../src/parallel/sweep.js');
  const { ForwardPool } = await import('../src/parallel/pool.js');
  const { Tensor } = await import('../src/tensor/index.js');
  const be = wasmBackend()!;
  be.setThreads(mode === 'pool' ? 1 : threads); // on the pool, its workers are the threads
  await be.whenReady();
  const model = HookedTransformer.fromDir(dir);
  const { cache } = model.runWithCache([CLEAN]);
  const answers = Tensor.from(ANSWERS, [1, 2]);
  const metric = patching.logitDiffMetric(answers);
  // the shortcuts added here off: full logits, every patch run (layer skipping and batching stay)
  const former = { lastPositionLogits: false, skipNoopPatches: false };
  const pool = mode === 'pool' ? await ForwardPool.create(model, { threads }) : null;
  const seconds: Record<string, number> = {},
    grids: Record<string, number[]> = {};
  for (const name of SWEEPS) {
    const t0 = performance.now();
    const grid = pool
      ? await parallel[name](pool, [CORRUPTED], cache, metric)
      : patching.serial[name](model, [CORRUPTED], cache, metric, mode === 'former-defaults' ? former : {});
    seconds[name] = (performance.now() - t0) / 1000;
    grids[name] = [...grid.f32()];
  }
  model.dispose();
  return { seconds, grids, threads, mode };
}

function run(args: string[], what: string, python?: string): unknown | null {
  const r = python
    ? spawnSync(python, args, { encoding: 'utf8', maxBuffer: 1 << 24 })
    : spawnSync(process.execPath, [fileURLToPath(import.meta.url), ...args], { encoding: 'utf8', maxBuffer: 1 << 24 });
  if (r.status !== 0) {
    if (!python) throw new Error(`bench patching ${what} failed:\n${r.stderr}`);
    console.warn(`torch baseline unavailable: ${(r.stderr || r.error?.message || '').trim().split('\n').pop()}`);
    return null;
  }
  return JSON.parse(r.stdout.trim().split('\n').pop()!);
}

/** TransformerLens's figures from issue 16 (torch CPU, this machine, an earlier session): not measured here. */
const QUOTED_TL_SECONDS = { getActPatchResidPre: 13.4, getActPatchAttnHeadOutAllPos: 11.0 };

export function benchPatching(dir: string, benchDir: string, writeJson: (name: string, data: unknown) => void): void {
  const threads = 2;
  const configs: [number, Mode][] = [
    [1, 'default'],
    [threads, 'default'],
    [threads, 'pool'],
    [threads, 'former-defaults'],
  ];
  const ours: Child[] = configs.map(([n, mode]) => run([dir, String(n), mode], `${mode} x${n}`) as Child);
  // Debian's torch is installed for the system python (/usr/bin/python3), not the default python3
  const python = ['/usr/bin/python3', 'python3'].find((p) => p === 'python3' || existsSync(p))!;
  const tl = run(
    [
      join(benchDir, 'tl_patching.py'),
      dir,
      String(threads),
      CLEAN.join(','),
      CORRUPTED.join(','),
      ...ANSWERS.map(String),
    ],
    'torch',
    python,
  ) as
    | (Record<string, { seconds: number; grid: number[] }> & { torch_version: string; threads: number; blas?: string })
    | null;
  const tlName = {
    getActPatchResidPre: 'get_act_patch_resid_pre',
    getActPatchAttnHeadOutAllPos: 'get_act_patch_attn_head_out_all_pos',
  };
  const rows = SWEEPS.map((name) => {
    const tlSeconds = tl ? tl[tlName[name]].seconds : QUOTED_TL_SECONDS[name];
    const by = (n: number, mode: Mode) => ours.find((c) => c.threads === n && c.mode === mode)!.seconds[name];
    const best = Math.min(by(threads, 'default'), by(threads, 'pool'));
    let agreement: number | null = null;
    if (tl) {
      const a = tl[tlName[name]].grid,
        b = ours[1].grids[name];
      agreement = a.length === b.length ? Math.max(...a.map((x, i) => Math.abs(x - b[i]))) : Infinity;
    }
    const row = {
      sweep: name,
      patches: ours[0].grids[name].length,
      threads,
      typelens_default_1_thread_s: +by(1, 'default').toFixed(3),
      typelens_default_s: +by(threads, 'default').toFixed(3),
      typelens_pool_s: +by(threads, 'pool').toFixed(3),
      typelens_former_defaults_s: +by(threads, 'former-defaults').toFixed(3),
      tl_torch_s: +tlSeconds.toFixed(3),
      tl_source: tl
        ? `measured: bench/tl_patching.py (TL's loop in plain torch ${tl.torch_version}, ${tl.threads} threads, BLAS ${tl.blas ?? 'unknown'})`
        : 'quoted from issue 16, not measured here (torch unavailable)',
      speedup_vs_tl_default: +(tlSeconds / by(threads, 'default')).toFixed(2),
      speedup_vs_tl_best: +(tlSeconds / best).toFixed(2),
      speedup_default_vs_former_defaults: +(by(threads, 'former-defaults') / by(threads, 'default')).toFixed(2),
      max_abs_diff_vs_torch_grid: agreement,
      goal: 'typelens >= 3x faster than TL on torch CPU',
      load_average: loadavg().map((x) => +x.toFixed(2)),
    };
    console.log(
      `${name} (${row.patches} patches): typelens ${row.typelens_default_s} s default / ${row.typelens_pool_s} s pool / ${row.typelens_former_defaults_s} s former defaults at ${threads} threads, ${row.typelens_default_1_thread_s} s at 1; TL torch ${row.tl_torch_s} s (${tl ? 'measured' : 'quoted'}); ${row.speedup_vs_tl_default}x (best ${row.speedup_vs_tl_best}x); grid vs torch max |diff| ${agreement}`,
    );
    return row;
  });
  writeJson('patching.json', {
    model:
      'random gpt2-small-shaped (seed 0), f32, TL from_pretrained processing (typelens) / unprocessed (torch: same function, same metric values); seed prompt, 15 tokens; metric: logit diff at the last position',
    rows,
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [dir, threads, mode] = process.argv.slice(2);
  console.log(JSON.stringify(await child(dir, Number(threads), mode as Mode)));
  process.exit(0);
}
