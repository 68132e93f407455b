// Training (issue 14): optimizers against hand-computed PyTorch updates, clipping, TL's warmup,
// HF-layout checkpoints loading back bit for bit, and a tiny model learning a toy task.
import t from 'tap';
import fc from 'fast-check';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HookedTransformer, Tensor, readSafetensors, tensorF32 } from '../src/index.js';
import {
  train,
  reverseTask,
  take,
  makeOptimizer,
  clipGradNorm,
  warmupFactor,
  decayFactor,
  saveCheckpoint,
} from '../src/train/index.js';
import { maxAbsDiff } from './helpers.js';

t.test('optimizer steps equal hand-computed PyTorch updates (3 parameters, 2 steps)', async (t) => {
  const p0 = [0.5, -1.0, 2.0],
    g1 = [0.1, -0.2, 0.3],
    g2 = [-0.4, 0.05, 0.2],
    lr = 0.1;
  const run = (name: 'Adam' | 'AdamW' | 'SGD', o: object) => {
    const opt = makeOptimizer(name, { lr, ...o });
    const p = Float32Array.from(p0);
    for (const g of [g1, g2]) {
      opt.beginStep();
      opt.update('w', p, Float32Array.from(g), lr);
    }
    return [...p];
  };
  // hand computation in float64 of torch's formulas
  const adam = (wd: number, decoupled: boolean) =>
    p0.map((x, i) => {
      let m = 0,
        v = 0,
        p = x;
      [g1, g2].forEach((gs, k) => {
        const t1 = k + 1;
        let g = gs[i];
        if (decoupled) p *= 1 - lr * wd;
        else g += wd * p;
        m = 0.9 * m + 0.1 * g;
        v = 0.999 * v + 0.001 * g * g;
        p -= ((lr / (1 - 0.9 ** t1)) * m) / (Math.sqrt(v) / Math.sqrt(1 - 0.999 ** t1) + 1e-8);
      });
      return p;
    });
  const sgd = (mom: number, wd: number) =>
    p0.map((x, i) => {
      let b = 0,
        p = x;
      [g1, g2].forEach((gs, k) => {
        const d = gs[i] + wd * p;
        b = k === 0 ? d : mom * b + d;
        p -= lr * b;
      });
      return p;
    });
  const close = (a: number[], b: number[]) => maxAbsDiff(a, b) < 1e-6;
  t.ok(close(run('Adam', {}), adam(0, false)), 'Adam');
  t.ok(close(run('Adam', { weightDecay: 0.1 }), adam(0.1, false)), 'Adam + L2');
  t.ok(close(run('AdamW', { weightDecay: 0.1 }), adam(0.1, true)), 'AdamW decoupled');
  t.ok(close(run('SGD', {}), sgd(0, 0)), 'SGD');
  t.ok(close(run('SGD', { momentum: 0.9, weightDecay: 0.01 }), sgd(0.9, 0.01)), 'SGD momentum + L2');
  // first Adam step moves each parameter by lr·sign(g) (bias correction)
  const o = makeOptimizer('Adam', { lr }),
    p = Float32Array.from(p0);
  o.beginStep();
  o.update('w', p, Float32Array.from(g1), lr);
  t.ok(
    close(
      [...p].map((x, i) => x - p0[i]),
      g1.map((g) => -lr * Math.sign(g)),
    ),
    'first step = -lr·sign(g)',
  );
});

t.test('gradient clipping bounds the global norm; warmup follows TL', async (t) => {
  const a = Float32Array.from([3, 4]),
    b = Float32Array.from([12]);
  t.equal(clipGradNorm([a, b], 1), 13, 'returns the norm before clipping');
  t.ok(Math.abs(Math.hypot(a[0], a[1], b[0]) - 1) < 1e-6, 'norm after = maxNorm');
  const c = Float32Array.from([0.3, 0.4]);
  clipGradNorm([c], 1);
  t.same([...c], [Math.fround(0.3), Math.fround(0.4)], 'below the bound: untouched');
  t.same(
    [0, 1, 5, 10, 11].map((s) => warmupFactor(s, 10)),
    [0, 0.1, 0.5, 1, 1],
    'LambdaLR min(1, step / warmup)',
  );
  t.equal(warmupFactor(0, 0), 1);
});

t.test('lr decay: 1 through the warmup, down to minFraction at the last step, never rising', async (t) => {
  // a naive reference: cosine / linear interpolation written out per step
  const ref = (kind: 'cosine' | 'linear', step: number, total: number, warm: number, min: number) => {
    if (step <= warm) return 1;
    const x = (step - warm) / (total - 1 - warm);
    return min + (1 - min) * (kind === 'cosine' ? (1 + Math.cos(Math.PI * x)) / 2 : 1 - x);
  };
  fc.assert(
    fc.property(
      fc.constantFrom('cosine' as const, 'linear' as const),
      fc.integer({ min: 3, max: 400 }),
      fc.integer({ min: 0, max: 50 }),
      fc.double({ min: 0, max: 1, noNaN: true }),
      (kind, total, w, min) => {
        const warm = Math.min(w, total - 2);
        let prev = Infinity;
        for (let s = 0; s < total; s++) {
          const f = decayFactor(s, total, warm, kind, min);
          if (!(Math.abs(f - ref(kind, s, total, warm, min)) <= 1e-12)) return false;
          if (f > prev + 1e-15) return false;
          prev = f;
        }
        return Math.abs(decayFactor(total - 1, total, warm, kind, min) - min) <= 1e-12;
      },
    ),
  );
  t.pass('decayFactor equals the reference, is non-increasing and ends at minFraction');
  t.equal(decayFactor(7, 10, 2, 'none'), 1, "'none' is TL's constant rate");
  const m = HookedTransformer.fromConfig({ n_layers: 1, d_model: 8, n_heads: 2, n_ctx: 8, d_vocab: 7 }, { seed: 1 });
  const lrs: number[] = [];
  train(m, reverseTask({ n: 2, alphabet: 4, seed: 2 }), {
    steps: 12,
    batchSize: 2,
    lr: 0.01,
    warmupSteps: 3,
    lrDecay: 'linear',
    minLrFraction: 0.2,
    progress: false,
    onStep: (s) => void lrs.push(s.lr),
  });
  t.ok(
    lrs.every((lr, s) => Math.abs(lr - 0.01 * warmupFactor(s, 3) * decayFactor(s, 12, 3, 'linear', 0.2)) < 1e-15),
    'train steps at lr · warmup · decay',
  );
  t.ok(Math.abs(lrs[11] - 0.002) < 1e-15, 'the last step runs at minLrFraction · lr');
  t.throws(
    () => train(m, reverseTask({ n: 2, alphabet: 4, seed: 2 }), { steps: 1, batchSize: 2, lrDecay: 'exp' as 'linear' }),
    /lrDecay "exp"/,
    'an unknown decay is refused by name',
  );
});

t.test('checkpoints: HF GPT-2 layout, atomic, fromDir gives the same logits bit for bit', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'typelens-ckpt-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const m = HookedTransformer.fromConfig({ n_layers: 2, d_model: 16, n_heads: 2, n_ctx: 12, d_vocab: 11 }, { seed: 5 });
  // give every parameter a non-trivial value (fresh biases are zero, LN weights one)
  const sd = m.stateDict();
  for (const [k, v] of Object.entries(sd))
    if (k !== 'unembed.b_U')
      m.setWeight(
        k,
        new Tensor(
          v.f32().map((x, i) => x + 0.01 * Math.sin(i + k.length)),
          v.shape,
        ),
      );
  const tokens = Tensor.from([
    [1, 2, 3, 4, 5, 6, 7],
    [10, 9, 8, 0, 0, 1, 2],
  ]);
  const ck = join(dir, 'model');
  saveCheckpoint(m, ck);
  const cfg = JSON.parse(readFileSync(join(ck, 'config.json'), 'utf8'));
  t.equal(cfg.tie_word_embeddings, false, 'TL init trains W_U apart from W_E: saved untied');
  t.equal(cfg.model_type, 'gpt2');
  const st = readSafetensors(join(ck, 'model.safetensors'));
  t.same(st.entries.get('h.0.attn.c_attn.weight')!.shape, [16, 48]);
  t.same(st.entries.get('lm_head.weight')!.shape, [11, 16]);
  t.same(st.entries.get('h.1.mlp.c_proj.weight')!.shape, [64, 16]);
  t.same(
    [...st.entries.keys()].filter((k) => k.startsWith('h.0.')).sort(),
    [
      'h.0.attn.c_attn.bias',
      'h.0.attn.c_attn.weight',
      'h.0.attn.c_proj.bias',
      'h.0.attn.c_proj.weight',
      'h.0.ln_1.bias',
      'h.0.ln_1.weight',
      'h.0.ln_2.bias',
      'h.0.ln_2.weight',
      'h.0.mlp.c_fc.bias',
      'h.0.mlp.c_fc.weight',
      'h.0.mlp.c_proj.bias',
      'h.0.mlp.c_proj.weight',
    ],
    'GPT-2 names',
  );
  const back = HookedTransformer.fromDir(ck, {
    foldLn: false,
    centerWritingWeights: false,
    centerUnembed: false,
    foldValueBiases: false,
  });
  t.equal(maxAbsDiff(back.forward(tokens).f32(), m.forward(tokens).f32()), 0, 'identical logits');
  const bsd = back.stateDict();
  for (const [k, v] of Object.entries(m.stateDict())) t.equal(maxAbsDiff(bsd[k].f32(), v.f32()), 0, k);
  // tied when W_U = W_E^T: no lm_head, and it loads back
  m.setWeight('unembed.W_U', m.stateDict()['embed.W_E'].T.contiguous());
  saveCheckpoint(m, ck); // replaces the previous one atomically
  t.equal(JSON.parse(readFileSync(join(ck, 'config.json'), 'utf8')).tie_word_embeddings, true);
  t.notOk(readSafetensors(join(ck, 'model.safetensors')).entries.has('lm_head.weight'));
  const tied = HookedTransformer.fromDir(ck, {
    foldLn: false,
    centerWritingWeights: false,
    centerUnembed: false,
    foldValueBiases: false,
  });
  t.equal(maxAbsDiff(tied.forward(tokens).f32(), m.forward(tokens).f32()), 0, 'tied round trip');
  // processed models have b_U != 0 (folded ln_final bias): refused with a reason
  const p = HookedTransformer.fromDir(ck);
  t.throws(() => saveCheckpoint(p, join(dir, 'p')), { code: 'ECHECKPOINT', message: /b_U/ });
  t.throws(() => train(p, [[1, 2, 3]], { batchSize: 1 }), { code: 'EPROCESSED' });
});

t.test(
  "saving HF's own GPT-2 checkpoint (tiny-hf, written by transformers) gives back its tensors bit for bit",
  async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'typelens-ckpt-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const src = 'test/fixtures/tiny-hf';
    const m = HookedTransformer.fromDir(src, {
      foldLn: false,
      centerWritingWeights: false,
      centerUnembed: false,
      foldValueBiases: false,
    });
    saveCheckpoint(m, join(dir, 'out'));
    const a = readSafetensors(join(src, 'model.safetensors')),
      b = readSafetensors(join(dir, 'out', 'model.safetensors'));
    const want = [...a.entries.keys()].filter((k) => !/\.attn\.(masked_)?bias$/.test(k)); // mask buffers
    const strip = (k: string) => k.replace(/^transformer\./, '');
    t.same(
      [...b.entries.keys()].sort(),
      want.map(strip).sort(),
      'same tensor names (GPT-2 hub checkpoints carry no transformer. prefix), tied: no lm_head',
    );
    for (const k of want) t.equal(maxAbsDiff(tensorF32(b, strip(k)), tensorF32(a, k)), 0, strip(k));
    const cfg = JSON.parse(readFileSync(join(dir, 'out', 'config.json'), 'utf8')),
      orig = JSON.parse(readFileSync(join(src, 'config.json'), 'utf8'));
    for (const k of [
      'n_layer',
      'n_embd',
      'n_head',
      'n_positions',
      'vocab_size',
      'activation_function',
      'layer_norm_epsilon',
      'bos_token_id',
      'n_inner',
      'tie_word_embeddings',
      'model_type',
    ])
      t.same(cfg[k], orig[k], k);
  },
);

t.test('train: array and tensor datasets, epochs, saveEvery, onStep, errors', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'typelens-train-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const data = take(reverseTask({ n: 3, alphabet: 4, seed: 2 }), 10); // 10 rows, batch 4 -> 3 steps per epoch
  const m = HookedTransformer.fromConfig({ n_layers: 1, d_model: 8, n_heads: 2, n_ctx: 8, d_vocab: 5 }, { seed: 1 });
  const seen: number[] = [];
  const r = train(m, data, {
    batchSize: 4,
    numEpochs: 2,
    lr: 1e-2,
    saveEvery: 3,
    saveDir: dir,
    progress: false,
    onStep: (s) => {
      seen.push(s.epoch);
    },
  });
  t.equal(r.steps, 6);
  t.same(seen, [0, 0, 0, 1, 1, 1]);
  t.same(r.saved, [join(dir, 'step-3'), join(dir, 'step-6')]);
  const back = HookedTransformer.fromDir(join(dir, 'step-6'), {
    foldLn: false,
    centerWritingWeights: false,
    centerUnembed: false,
    foldValueBiases: false,
  });
  const tok = Tensor.from(data.slice(0, 2));
  t.equal(maxAbsDiff(back.forward(tok).f32(), m.forward(tok).f32()), 0, 'the last checkpoint is the trained model');
  // same seed, same data: same losses; a Tensor dataset is the same as its rows
  const again = (d: number[][] | Tensor) =>
    train(HookedTransformer.fromConfig({ n_layers: 1, d_model: 8, n_heads: 2, n_ctx: 8, d_vocab: 5 }, { seed: 1 }), d, {
      batchSize: 4,
      steps: 4,
      seed: 3,
      progress: false,
    }).losses;
  t.same(again(data), again(Tensor.from(data)), 'deterministic; Tensor dataset = array dataset');
  t.equal(
    train(m, data, { batchSize: 2, steps: 50, progress: false, onStep: (s) => s.step < 2 }).steps,
    3,
    'onStep returning false stops',
  );
  const logs: string[] = [];
  train(m, data, { batchSize: 5, numEpochs: 1, printEvery: 1, log: (l) => logs.push(l), progress: false });
  t.match(logs[0], /step 1\/2 epoch 0 loss \d/);
  t.throws(() => train(m, [[1, 2, 9]], { batchSize: 1 }), { code: 'EINPUT', message: /token 9/ });
  t.throws(() => train(m, reverseTask({ n: 3, alphabet: 4 }), { batchSize: 1 }), { code: 'EINPUT', message: /steps/ });
  t.throws(() => train(m, data, { batchSize: 0 }), { code: 'EINPUT' });
  t.throws(() => train(m, data, { batchSize: 2, optimizer: 'Lion' as 'Adam' }), {
    code: 'EINPUT',
    message: /unknown optimizer/,
  });
});

t.test('a tiny model learns to reverse a sequence', async (t) => {
  // Task: n = 4 digits from an alphabet of A = 6, a separator, the digits reversed (P = 9).
  // TL's loss averages the 8 next-token predictions; the first n - 1 = 3 are of random digits,
  // whose best loss is ln A each, the separator and the n answers are determined: the loss floor
  // is 3·ln 6 / 8 = 0.672. Uniform over the answers would score ln 6 = 1.79 on each answer.
  // Pass: mean loss on the answer positions < ln(6)/10 (= 0.18) and answer accuracy >= 90%
  // on 200 held-out sequences.
  const gen = reverseTask({ n: 4, alphabet: 6, seed: 1 });
  const m = HookedTransformer.fromConfig(
    { n_layers: 2, d_model: 32, n_heads: 4, n_ctx: 16, d_vocab: gen.vocab },
    { seed: 3 },
  );
  const start = performance.now();
  const r = train(m, gen, {
    steps: 200,
    batchSize: 16,
    lr: 1e-2,
    optimizer: 'AdamW',
    weightDecay: 0,
    warmupSteps: 10,
    maxGradNorm: 1,
    progress: false,
  });
  const secs = (performance.now() - start) / 1000;
  const evalSet = take(reverseTask({ n: 4, alphabet: 6, seed: 99 }), 200);
  const logits = m.forward(Tensor.from(evalSet)).f32();
  const V = gen.vocab,
    P = 9;
  let loss = 0,
    right = 0,
    count = 0;
  evalSet.forEach((s, b) => {
    for (const pos of gen.answerPositions) {
      const o = (b * P + pos - 1) * V;
      let mx = -Infinity,
        arg = 0;
      for (let v = 0; v < V; v++)
        if (logits[o + v] > mx) {
          mx = logits[o + v];
          arg = v;
        }
      let z = 0;
      for (let v = 0; v < V; v++) z += Math.exp(logits[o + v] - mx);
      loss += mx + Math.log(z) - logits[o + s[pos]];
      right += arg === s[pos] ? 1 : 0;
      count++;
    }
  });
  const ansLoss = loss / count,
    acc = right / count;
  t.comment(
    `200 steps in ${secs.toFixed(1)} s (${r.stepsPerSecond.toFixed(1)} steps/s; ms/step ${JSON.stringify(Object.fromEntries(Object.entries(r.timing).map(([k, v]) => [k, +v.toFixed(1)])))}); ` +
      `loss ${r.losses[0].toFixed(3)} -> ${r.losses.at(-1)!.toFixed(3)} (floor 0.672); answer loss ${ansLoss.toFixed(4)}, accuracy ${(100 * acc).toFixed(1)}%`,
  );
  t.ok(r.losses.at(-1)! < r.losses[0], 'loss fell');
  t.ok(ansLoss < Math.log(6) / 10, `answer loss ${ansLoss} < ln(6)/10`);
  t.ok(acc >= 0.9, `answer accuracy ${acc} >= 90%`);
  t.equal(r.losses.length, 200);
});
