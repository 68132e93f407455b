// Training and weight-editing costs: `node dist/bench/train.js` writes bench/results/train.json.
// - steps/s and the per-step split (forward, backward, optimizer update, repack) for toy models
//   at 1 and 2 intra-op threads (the WASM matmul helpers), same machine, same run;
// - the weight guard's cost on a gpt2-small-shaped model: a forward with no matrix exposed vs
//   with every matrix exposed (re-fingerprinted per forward), and setWeight of one W_out.
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { HookedTransformer, hfConfig, NO_PROCESSING, PRESETS, randomGPT2, Tensor } from '../src/index.js';
import { reverseTask, repeatedTokens, train } from '../src/train/index.js';
import type { TokenGenerator } from '../src/train/index.js';

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const round = (o: Record<string, number>) => Object.fromEntries(Object.entries(o).map(([k, v]) => [k, +v.toFixed(2)]));

function trainRow(
  label: string,
  cfg: { n_layers: number; d_model: number; n_heads: number; n_ctx: number },
  gen: () => TokenGenerator,
  batchSize: number,
  steps: number,
  threads: number,
) {
  const g = gen();
  const m = HookedTransformer.fromConfig({ ...cfg, d_vocab: g.vocab }, { seed: 1 });
  train(m, g, { steps: 5, batchSize, lr: 1e-3, progress: false, threads }); // warm-up (JIT, packings)
  const r = train(m, g, { steps, batchSize, lr: 1e-3, progress: false, threads });
  m.dispose();
  return {
    model: label,
    batch: batchSize,
    tokens: g.seqLen,
    threads,
    steps,
    steps_per_s: +r.stepsPerSecond.toFixed(2),
    ms_per_step: round(r.timing as unknown as Record<string, number>),
    final_loss: +r.losses.at(-1)!.toFixed(4),
  };
}

const rows = [];
for (const threads of [1, 2]) {
  rows.push(
    trainRow(
      '2L d32 h4 (reverse n=5, A=8)',
      { n_layers: 2, d_model: 32, n_heads: 4, n_ctx: 16 },
      () => reverseTask({ n: 5, alphabet: 8, seed: 1 }),
      32,
      60,
      threads,
    ),
  );
  rows.push(
    trainRow(
      '4L d128 h4 (repeated tokens, 2x16, vocab 256)',
      { n_layers: 4, d_model: 128, n_heads: 4, n_ctx: 64 },
      () => repeatedTokens({ len: 16, vocab: 256, seed: 1 }),
      16,
      20,
      threads,
    ),
  );
}
for (const r of rows) console.log(JSON.stringify(r));

// the weight guard on gpt2-small's shape
const shape = PRESETS['gpt2-small'];
const m = HookedTransformer.fromHFTensors(hfConfig(shape), randomGPT2(shape, 1), NO_PROCESSING);
const tokens = Tensor.from([Array.from({ length: 15 }, (_, i) => 100 + i)]);
const time = (f: () => void, n = 5) => {
  f();
  const ts = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    f();
    ts.push(performance.now() - t0);
  }
  return median(ts);
};
const fwdClean = time(() => m.forward(tokens));
const check0 = time(() => m.checkWeights(), 9);
const sd = m.stateDict();
let scale = 1;
const tSet = time(() => {
  scale *= 1.0001;
  const w = sd['blocks.5.mlp.W_out'];
  m.setWeight(
    'blocks.5.mlp.W_out',
    new Tensor(
      w.f32().map((v) => v * scale),
      w.shape,
    ),
  );
}, 3);
for (const b of m.weights.blocks)
  for (const k of ['W_Q', 'W_K', 'W_V', 'W_O', 'W_in', 'W_out'] as const) void b[k].f32();
void m.weights.W_U.f32();
const fwdExposed = time(() => m.forward(tokens));
const checkAll = time(() => m.checkWeights(), 3);
const guard = {
  model: 'gpt2-small-shaped, f32, unprocessed, 15 tokens',
  threads: (m.backend as { threads?: number }).threads,
  forward_ms_no_matrix_exposed: +fwdClean.toFixed(1),
  check_ms_no_matrix_exposed: +check0.toFixed(2),
  forward_ms_all_matrices_exposed: +fwdExposed.toFixed(1),
  check_ms_all_matrices_exposed: +checkAll.toFixed(1),
  set_weight_ms_one_W_out: +tSet.toFixed(1),
};
console.log(JSON.stringify(guard));
m.dispose();
const out = {
  machine: '2 shared cores (other agents running: figures are noisy)',
  note: 'ms_per_step split: forward (tape forward), backward, update (optimizer math), repack (packing changed matrices + fingerprints + cache invalidation)',
  training: rows,
  guard,
};
mkdirSync('bench/results', { recursive: true });
const p = join('bench/results', 'train.json');
writeFileSync(`${p}.tmp`, JSON.stringify(out, null, 2) + '\n');
renameSync(`${p}.tmp`, p);
console.log(`wrote ${p}`);
