// The JS peer of `bench forward`: TensorFlow.js on its WASM backend (XNNPACK, the threaded SIMD
// binary) running a plain GPT-2 forward written with tfjs ops on the same checkpoint, every
// activation read back, against typelens on the same thread count. Each side runs in its own
// child process (so that neither's threads share the cores with the other's), twice, alternating;
// each row keeps the faster of the two runs per side. Before timing, the tfjs child checks that its
// logits match typelens's within 1e-3 and fails loudly if not.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const PROMPT15 = [50256, 3260, 1757, 290, 5335, 1816, 284, 262, 3650, 11, 1757, 2921, 257, 9294, 286];
const CASES = [
  { name: 'b1_all', batch: 1, cache: 'all', reps: 15 },
  { name: 'b1_none', batch: 1, cache: 'none', reps: 15 },
  { name: 'b8_all', batch: 8, cache: 'all', reps: 5 },
] as const;
type Timings = Record<(typeof CASES)[number]['name'], number> & { max_abs_logit_diff?: number; threads: number };

/** Median wall time of `reps` calls after one warm-up call, in ms. */
async function median(fn: () => unknown | Promise<unknown>, reps: number): Promise<number> {
  await fn();
  const ms: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    await fn();
    ms.push(performance.now() - t0);
  }
  return ms.sort((a, b) => a - b)[reps >> 1];
}

const tokensOf = (batch: number) => Array.from({ length: batch }, () => PROMPT15);

/** The safetensors checkpoint as name -> [Float32Array, shape] (F32 only, as the bench's). */
function readSafetensors(path: string): Map<string, [Float32Array, number[]]> {
  const buf = readFileSync(path);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<
    string,
    { dtype: string; shape: number[]; data_offsets: [number, number] }
  >;
  const out = new Map<string, [Float32Array, number[]]>();
  for (const [k, v] of Object.entries(header)) {
    if (k === '__metadata__') continue;
    if (v.dtype !== 'F32') throw new Error(`peer-tfjs: ${path}: ${k} is ${v.dtype}, only F32 is read`);
    const bytes = buf.subarray(8 + n + v.data_offsets[0], 8 + n + v.data_offsets[1]);
    out.set(k, [new Float32Array(Uint8Array.from(bytes).buffer), v.shape]);
  }
  return out;
}

/**
 * tfjs's WASM backend with XNNPACK's thread pool. Under Node the backend turns threads off: the
 * WASM_HAS_MULTITHREAD_SUPPORT flag answers false there, the pthread worker script is handed to
 * emscripten as a Blob URL (which worker_threads cannot load), and the pool is capped at half of
 * os.cpus() (2 cores -> 1 thread). All three are lifted here: the flag is set, the worker is a file
 * that evaluates tfjs's worker script and loads the threaded module with require, and os.cpus()
 * reports twice the cores while the module starts.
 */
async function tfjsWithThreads(threads: number) {
  const require = createRequire(import.meta.url);
  const tf = await import('@tensorflow/tfjs-core');
  const wasm = await import('@tensorflow/tfjs-backend-wasm');
  const out = join(dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json')), 'wasm-out');
  const workerFile = join(mkdtempSync(join(tmpdir(), 'typelens-tfjs-')), 'worker.cjs');
  const main = JSON.stringify(join(out, 'tfjs-backend-wasm-threaded-simd.js'));
  const script = JSON.stringify(join(out, 'tfjs-backend-wasm-threaded-simd.worker.js'));
  writeFileSync(
    workerFile,
    [
      `global.require = require; global.__filename = ${script};`,
      // tfjs escapes newlines the same way before making its Blob
      `(0, eval)(require(${script}).wasmWorkerContents.replace(/\\n/g, '\\\\n'));`,
      "URL.createObjectURL = () => 'tfjs-main'; URL.revokeObjectURL = () => {};",
      'const importScripts0 = global.importScripts;',
      `global.importScripts = (f) => (f === 'tfjs-main' ? (global.WasmBackendModuleThreadedSimd = require(${main})) : importScripts0(f));`,
    ].join('\n'),
  );
  const createObjectURL = URL.createObjectURL;
  URL.createObjectURL = (b: Blob) => (b?.type === 'application/javascript' ? workerFile : createObjectURL(b));
  const os = require('node:os') as typeof import('node:os');
  const cpus = os.cpus;
  os.cpus = () => [...cpus(), ...cpus()];
  tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', true);
  wasm.setThreadsCount(threads);
  try {
    if (!(await tf.setBackend('wasm'))) throw new Error('peer-tfjs: the wasm backend did not start');
    await tf.ready();
  } finally {
    os.cpus = cpus;
    URL.createObjectURL = createObjectURL;
  }
  if (wasm.getThreadsCount() !== threads)
    throw new Error(`peer-tfjs: asked tfjs for ${threads} threads, it runs ${wasm.getThreadsCount()}`);
  return tf;
}

type TF = Awaited<ReturnType<typeof tfjsWithThreads>>;
type T = ReturnType<TF['tensor']>;

/** GPT-2 (HF layout, gelu_new, tied unembedding) in tfjs ops; every activation TL caches is returned. */
function gpt2(tf: TF, dir: string) {
  const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as {
    n_layer: number;
    n_head: number;
    n_embd: number;
    layer_norm_epsilon?: number;
  };
  const W = new Map<string, T>();
  for (const [k, [data, shape]] of readSafetensors(join(dir, 'model.safetensors'))) W.set(k, tf.tensor(data, shape));
  // tfjs's WASM matMul takes XNNPACK's cached fully-connected path only for an untransposed b
  // (batch_mat_mul_impl.cc; transposeB falls back to its scalar loops, ~1 s for the [768, 50257]
  // unembedding): the tied head is transposed once here, as a tfjs user would store it
  W.set('wte.weight.T', tf.transpose(W.get('wte.weight')!));
  const w = (k: string) => W.get(k)!;
  const [L, H, M] = [cfg.n_layer, cfg.n_head, cfg.n_embd];
  const D = M / H,
    eps = cfg.layer_norm_epsilon ?? 1e-5;
  const ln = (x: T, p: string, acts: T[]) => {
    const c = tf.sub(x, tf.mean(x, -1, true));
    const scale = tf.sqrt(tf.add(tf.mean(tf.square(c), -1, true), eps));
    const normalized = tf.add(tf.mul(tf.div(c, scale), w(`${p}.weight`)), w(`${p}.bias`));
    acts.push(scale, normalized);
    return normalized;
  };
  // x @ W + b in one fused kernel (tfjs's _FusedMatMul: XNNPACK's fully-connected op with the bias)
  const lin = (x: T, p: string) => tf.fused.matMul({ a: x, b: w(`${p}.weight`), bias: w(`${p}.bias`) });
  const gelu = (x: T) =>
    tf.mul(
      tf.mul(x, 0.5),
      tf.add(1, tf.tanh(tf.mul(Math.sqrt(2 / Math.PI), tf.add(x, tf.mul(tf.pow(x, 3), 0.044715))))),
    );
  // tidy returns the tensors to read (it walks its result, so it must not return the typed arrays)
  const run = (tokens: number[][], all: boolean): T[] =>
    tf.tidy(() => {
      const B = tokens.length,
        P = tokens[0].length;
      const acts: T[] = [];
      const embed = tf.gather(w('wte.weight'), tf.tensor2d(tokens, [B, P], 'int32'));
      const pos = tf.slice(w('wpe.weight'), [0, 0], [P, M]);
      acts.push(embed, pos);
      let x = tf.reshape(tf.add(embed, pos), [B * P, M]);
      const causal = tf.linalg.bandPart(tf.ones([P, P]), -1, 0);
      const maskAdd = tf.mul(tf.sub(1, causal), -1e30);
      for (let l = 0; l < L; l++) {
        const p = `h.${l}`;
        acts.push(x);
        const qkv = lin(ln(x, `${p}.ln_1`, acts), `${p}.attn.c_attn`);
        const [q, k, v] = tf.split(qkv, 3, 1).map((t) => tf.reshape(t, [B, P, H, D]));
        acts.push(q, k, v);
        const [qh, kh, vh] = [q, k, v].map((t) => tf.transpose(t, [0, 2, 1, 3]));
        const scores = tf.add(tf.div(tf.matMul(qh, kh, false, true), Math.sqrt(D)), maskAdd);
        const pattern = tf.softmax(scores);
        const z = tf.transpose(tf.matMul(pattern, vh), [0, 2, 1, 3]);
        acts.push(scores, pattern, z);
        const attnOut = lin(tf.reshape(z, [B * P, M]), `${p}.attn.c_proj`);
        const mid = tf.add(x, attnOut);
        const pre = lin(ln(mid, `${p}.ln_2`, acts), `${p}.mlp.c_fc`);
        const post = gelu(pre);
        const mlpOut = lin(post, `${p}.mlp.c_proj`);
        x = tf.add(mid, mlpOut);
        acts.push(attnOut, mid, pre, post, mlpOut, x);
      }
      const logits = tf.matMul(ln(x, 'ln_f', acts), w('wte.weight.T'));
      return all ? [...acts, logits] : [logits];
    });
  // read back: every activation with `all`, else the logits only
  return (tokens: number[][], all: boolean): Float32Array[] => {
    const out = run(tokens, all);
    const data = out.map((t) => t.dataSync() as Float32Array);
    tf.dispose(out);
    return data;
  };
}

async function childTfjs(dir: string, threads: number): Promise<Timings> {
  // typelens's logits first (its own process state is gone before tfjs starts its threads)
  const { HookedTransformer } = await import('../src/model/hooked-transformer.js');
  const { NO_PROCESSING } = await import('../src/model/process.js');
  const ref = HookedTransformer.fromDir(dir, NO_PROCESSING);
  const want = ref.forward([PROMPT15]).f32();
  ref.dispose();
  const tf = await tfjsWithThreads(threads);
  const forward = gpt2(tf, dir);
  const got = forward([PROMPT15], false)[0];
  let diff = got.length === want.length ? 0 : Infinity;
  for (let i = 0; i < got.length; i++) diff = Math.max(diff, Math.abs(got[i] - want[i]));
  if (!(diff <= 1e-3))
    throw new Error(`peer-tfjs: tfjs logits differ from typelens's by ${diff} (> 1e-3): the two forwards disagree`);
  const r: Partial<Timings> = { threads, max_abs_logit_diff: diff };
  for (const c of CASES) r[c.name] = await median(() => forward(tokensOf(c.batch), c.cache === 'all'), c.reps);
  return r as Timings;
}

async function childTypelens(dir: string, threads: number): Promise<Timings> {
  const { wasmBackend } = await import('../src/kernels/index.js');
  const { HookedTransformer } = await import('../src/model/hooked-transformer.js');
  const { NO_PROCESSING } = await import('../src/model/process.js');
  const be = wasmBackend()!;
  be.setThreads(threads);
  await be.whenReady();
  const model = HookedTransformer.fromDir(dir, NO_PROCESSING);
  const r: Partial<Timings> = { threads };
  for (const c of CASES)
    r[c.name] = await median(
      () => (c.cache === 'all' ? model.runWithCache(tokensOf(c.batch)) : model.forward(tokensOf(c.batch))),
      c.reps,
    );
  model.dispose();
  return r as Timings;
}

function child(side: 'tfjs' | 'typelens', dir: string, threads: number): Timings {
  const r = spawnSync(process.execPath, [fileURLToPath(import.meta.url), side, dir, String(threads)], {
    encoding: 'utf8',
    maxBuffer: 1 << 24,
  });
  if (r.status !== 0) throw new Error(`peer-tfjs ${side} child failed:\n${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as Timings;
}

/** Rows for forward.json: typelens against tfjs-wasm, same checkpoint and thread count. */
export function peerRows(dir: string, threads = 2): Record<string, unknown>[] {
  const runs: Record<string, Timings[]> = { typelens: [], tfjs: [] };
  for (let round = 0; round < 2; round++)
    for (const side of ['typelens', 'tfjs'] as const) runs[side].push(child(side, dir, threads));
  const best = (side: string, k: keyof Timings) => Math.min(...runs[side].map((r) => r[k] as number));
  return CASES.map((c) => {
    const ours = best('typelens', c.name),
      peer = best('tfjs', c.name);
    const row = {
      peer: 'tfjs-wasm 4.22 (XNNPACK, threaded SIMD)',
      batch: c.batch,
      tokens: 15,
      cache: c.cache,
      threads,
      typelens_median_ms: +ours.toFixed(2),
      peer_median_ms: +peer.toFixed(2),
      ratio: +(ours / peer).toFixed(3),
      runs_typelens_ms: runs.typelens.map((r) => +r[c.name].toFixed(2)),
      runs_peer_ms: runs.tfjs.map((r) => +r[c.name].toFixed(2)),
      max_abs_logit_diff: runs.tfjs[0].max_abs_logit_diff,
      load_average: loadavg().map((x) => +x.toFixed(2)),
    };
    console.log(
      `peer ${c.name}: typelens ${ours.toFixed(1)} ms, tfjs-wasm ${peer.toFixed(1)} ms at ${threads} threads, ratio ${row.ratio} (lower is faster)`,
    );
    return row;
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [side, dir, threads] = process.argv.slice(2);
  const r = await (side === 'tfjs' ? childTfjs : childTypelens)(dir, Number(threads));
  console.log(JSON.stringify(r));
  process.exit(0); // tfjs's pthread workers would keep the process alive
}
