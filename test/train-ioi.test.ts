// The embedded model's training pieces (issue 15): the loss at chosen positions only (against the
// full-logits loss at the same positions, values and gradients), tied embeddings, half-precision
// checkpoints, and the seeded IOI / induction data generators.
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HookedTransformer, Tensor, readSafetensors } from '../src/index.js';
import { ag, withGrad } from '../src/autograd/index.js';
import { encodeText, EOT } from '../src/model/tokenizer.js';
import {
  train,
  saveCheckpoint,
  positionsLoss,
  scoredRows,
  ioiMixture,
  ioiSentences,
  ioiEvalDataset,
  isHeldOutCombo,
  fillTemplate,
  checkSingleTokens,
  IOI_NAMES,
  IOI_PLACES,
  IOI_OBJECTS,
  IOI_DRINKS,
  IOI_TRAIN_TEMPLATES,
  IOI_HELDOUT_TEMPLATES,
} from '../src/train/index.js';
import { ioiPrompts } from '../src/demo/data.js';
import { maxAbsDiff } from './helpers.js';

const CFG = { n_layers: 2, d_model: 16, n_heads: 2, n_ctx: 12, d_vocab: 23 };
const NO_PROC = { foldLn: false, centerWritingWeights: false, centerUnembed: false, foldValueBiases: false };
const seqs = [
  [1, 5, 7, 2, 9, 4, 11, 3],
  [6, 2, 2, 8, 10, 1, 0, 7],
  [3, 3, 15, 4, 12, 9, 2, 2],
];
const posOf = (s: number[]) => (s[0] === 1 ? [7] : s[0] === 6 ? [2, 5] : [1, 4, 6]);

/** Every parameter's gradient of the loss at the scored positions, read off the full logits [B, P, V]. */
function fullLogitsGrads(m: HookedTransformer) {
  const tokens = Tensor.from(seqs.flat(), [seqs.length, seqs[0].length]);
  const { rows, targets } = scoredRows(seqs, posOf);
  const r = m.backward(tokens, (logits) => ag.crossEntropy(ag.selectRows(logits, rows), targets));
  return { value: r.value, grads: r.paramGrads };
}
function positionsGrads(m: HookedTransformer) {
  const tokens = Tensor.from(seqs.flat(), [seqs.length, seqs[0].length]);
  const { rows, targets } = scoredRows(seqs, posOf);
  const named = m.namedParameters();
  const { out, tape } = withGrad((tp) => {
    tp.watch(...named.values());
    return positionsLoss(m, m.forward(tokens, { stopAtLayer: m.cfg.n_layers }), rows, targets);
  });
  const g = tape.backward(out);
  return { value: out.item(), grads: new Map([...named].map(([n, x]) => [n, g.get(x)])) };
}

t.test('positionsLoss equals the full-logits loss at the same positions: value and every gradient', async (t) => {
  const m = HookedTransformer.fromConfig(CFG, { seed: 3 });
  t.teardown(() => m.dispose());
  const a = fullLogitsGrads(m),
    b = positionsGrads(m);
  t.ok(Math.abs(a.value - b.value) <= 1e-6 * Math.abs(a.value), `loss ${b.value} vs ${a.value}`);
  t.equal(b.grads.size, a.grads.size, 'same parameters');
  for (const [n, g] of a.grads) {
    const scale = Math.max(1e-6, ...Array.from(g.f32(), Math.abs));
    t.ok(maxAbsDiff(b.grads.get(n)!.f32(), g.f32()) <= 1e-5 * scale, `${n} (max |g| ${scale.toExponential(2)})`);
  }
});

t.test('positionsLoss gradient matches central finite differences (float64 reference on a few weights)', async (t) => {
  const m = HookedTransformer.fromConfig(CFG, { seed: 4 });
  t.teardown(() => m.dispose());
  const { grads } = positionsGrads(m);
  const tokens = Tensor.from(seqs.flat(), [seqs.length, seqs[0].length]);
  const { rows, targets } = scoredRows(seqs, posOf);
  const loss = () => positionsLoss(m, m.forward(tokens, { stopAtLayer: m.cfg.n_layers }), rows, targets).item();
  for (const [name, i] of [
    ['blocks.1.attn.W_V', 17],
    ['ln_final.w', 3],
    ['unembed.W_U', 40],
    ['blocks.0.mlp.W_in', 5],
  ] as const) {
    const h = 1e-2;
    const at = (d: number) => {
      m.updateWeights([name], (_, x) => (x[i] += d));
      const v = loss();
      m.updateWeights([name], (_, x) => (x[i] -= d));
      return v;
    };
    const fd = (at(h) - at(-h)) / (2 * h);
    const g = grads.get(name)!.f32()[i];
    t.ok(Math.abs(fd - g) <= 2e-3 + 0.02 * Math.abs(fd), `${name}[${i}]: analytic ${g} vs finite difference ${fd}`);
  }
});

t.test("train's lossPositions over every target position is TL's full next-token loss", async (t) => {
  const run = (o: object) => {
    const m = HookedTransformer.fromConfig(CFG, { seed: 9 });
    const r = train(m, seqs, { batchSize: 3, steps: 3, lr: 1e-2, progress: false, ...o });
    const sd = m.stateDict();
    m.dispose();
    return { losses: r.losses, sd };
  };
  const full = run({}),
    pos = run({ lossPositions: [1, 2, 3, 4, 5, 6, 7] });
  t.ok(maxAbsDiff(Float32Array.from(pos.losses), Float32Array.from(full.losses)) <= 1e-5, 'same losses');
  for (const [k, v] of Object.entries(full.sd))
    t.ok(maxAbsDiff(pos.sd[k].f32(), v.f32()) <= 1e-5, `${k} after 3 Adam steps`);
  const m = HookedTransformer.fromConfig(CFG, { seed: 9 });
  t.teardown(() => m.dispose());
  t.throws(() => train(m, seqs, { batchSize: 3, steps: 1, lossPositions: [0], progress: false }), {
    code: 'EINPUT',
    message: /position 0/,
  });
  t.throws(() => train(m, seqs, { batchSize: 3, steps: 1, lossPositions: 'answers', progress: false }), {
    code: 'EINPUT',
    message: /generator/,
  });
});

t.test('tied embeddings: one SGD step moves W_E by dW_E + dW_U^T and keeps W_U = W_E^T', async (t) => {
  const m = HookedTransformer.fromConfig(CFG, { seed: 11 });
  t.teardown(() => m.dispose());
  const E0 = m.stateDict()['embed.W_E'];
  m.setWeight('unembed.W_U', E0.T.contiguous()); // what tieEmbeddings starts from
  const tokens = Tensor.from(seqs.flat(), [seqs.length, seqs[0].length]);
  const g = m.parameterGrads(tokens); // full LM loss, the reference
  const lr = 0.5;
  const want = E0.f32().map((e, i) => {
    const [v, d] = [Math.floor(i / CFG.d_model), i % CFG.d_model];
    return e - lr * (g.get('embed.W_E')!.f32()[i] + g.get('unembed.W_U')!.f32()[d * CFG.d_vocab + v]);
  });
  train(m, seqs, { batchSize: 3, steps: 1, lr, optimizer: 'SGD', tieEmbeddings: true, progress: false });
  const sd = m.stateDict();
  t.ok(maxAbsDiff(sd['embed.W_E'].f32(), want) <= 1e-6, 'W_E stepped with the summed gradient');
  t.equal(maxAbsDiff(sd['unembed.W_U'].f32(), sd['embed.W_E'].T.contiguous().f32()), 0, 'W_U = W_E^T bit for bit');
  t.throws(
    () => train(m, seqs, { batchSize: 3, steps: 1, tieEmbeddings: true, freeze: ['embed.W_E'], progress: false }),
    { code: 'EINPUT', message: /both or neither/ },
  );
});

t.test('embedRows: one SGD step moves only the listed rows, by dW_E + dW_U^T, and keeps W_U = W_E^T', async (t) => {
  const m = HookedTransformer.fromConfig(CFG, { seed: 11 });
  t.teardown(() => m.dispose());
  const E0 = m.stateDict()['embed.W_E'];
  m.setWeight('unembed.W_U', E0.T.contiguous());
  const tokens = Tensor.from(seqs.flat(), [seqs.length, seqs[0].length]);
  const g = m.parameterGrads(tokens); // full LM loss, the reference
  const lr = 0.5,
    M = CFG.d_model,
    V = CFG.d_vocab;
  const rows = [seqs[0][1], seqs[1][2], 3, V - 1]; // two tokens of the data, two that never occur
  const listed = new Set(rows);
  const want = E0.f32().map((e, i) => {
    const [v, d] = [Math.floor(i / M), i % M];
    return listed.has(v) ? e - lr * (g.get('embed.W_E')!.f32()[i] + g.get('unembed.W_U')!.f32()[d * V + v]) : e;
  });
  train(m, seqs, {
    batchSize: 3,
    steps: 1,
    lr,
    optimizer: 'SGD',
    tieEmbeddings: true,
    embedRows: rows,
    progress: false,
  });
  const sd = m.stateDict();
  t.ok(
    maxAbsDiff(sd['embed.W_E'].f32(), want) <= 1e-6,
    'listed rows stepped with the summed gradient, the others untouched',
  );
  t.equal(maxAbsDiff(sd['unembed.W_U'].f32(), sd['embed.W_E'].T.contiguous().f32()), 0, 'W_U = W_E^T bit for bit');
  t.throws(() => train(m, seqs, { batchSize: 3, steps: 1, embedRows: [1], progress: false }), {
    code: 'EINPUT',
    message: /tieEmbeddings/,
  });
  t.throws(() => train(m, seqs, { batchSize: 3, steps: 1, tieEmbeddings: true, embedRows: [V], progress: false }), {
    code: 'EINPUT',
    message: new RegExp(`token ${V}`),
  });
});

t.test('an f16 checkpoint of a tied model is tied, half the size, and reloads to the f16-rounded logits', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'typelens-ioi-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const m = HookedTransformer.fromConfig(CFG, { seed: 12 });
  t.teardown(() => m.dispose());
  train(m, seqs, { batchSize: 3, steps: 2, tieEmbeddings: true, progress: false });
  saveCheckpoint(m, join(dir, 'f32'));
  saveCheckpoint(m, join(dir, 'f16'), {}, { dtype: 'F16' });
  const st = readSafetensors(join(dir, 'f16', 'model.safetensors'));
  t.notOk(st.entries.has('lm_head.weight'), 'tied: no lm_head');
  t.ok(
    [...st.entries.values()].every((e) => e.dtype === 'F16'),
    'every tensor F16',
  );
  t.equal(JSON.parse(readFileSync(join(dir, 'f16', 'config.json'), 'utf8')).tie_word_embeddings, true);
  const a = HookedTransformer.fromDir(join(dir, 'f32'), NO_PROC),
    b = HookedTransformer.fromDir(join(dir, 'f16'), NO_PROC);
  t.teardown(() => (a.dispose(), b.dispose()));
  const tokens = Tensor.from(seqs.flat(), [seqs.length, seqs[0].length]);
  t.equal(maxAbsDiff(a.forward(tokens).f32(), m.forward(tokens).f32()), 0, 'f32 round trip exact');
  t.ok(maxAbsDiff(b.forward(tokens).f32(), m.forward(tokens).f32()) < 2e-2, 'f16 round trip within f16 rounding');
});

t.test('IOI data: single-token words, both orders, held-out combos and templates kept out of training', async (t) => {
  for (const [l, w] of [
    [IOI_NAMES, 'name'],
    [IOI_PLACES, 'place'],
    [IOI_OBJECTS, 'object'],
    [IOI_DRINKS, 'drink'],
  ] as const) {
    t.doesNotThrow(() => checkSingleTokens(l, w), `${w}s are single tokens`);
    t.ok(
      l.every((x) => encodeText(' ' + x).length === 1),
      `${w}s: one token each after a space`,
    );
  }
  t.throws(() => checkSingleTokens(['Zxqvwy'], 'name'), { code: 'ETOKEN', message: /Zxqvwy/ });
  t.equal(IOI_TRAIN_TEMPLATES.filter((x) => IOI_HELDOUT_TEMPLATES.includes(x)).length, 0, 'templates disjoint');
  t.ok(IOI_HELDOUT_TEMPLATES.length >= 2, 'at least two held-out templates');
  const next = ioiSentences({ templates: IOI_TRAIN_TEMPLATES, seed: 5, combos: 'train' });
  const drawn = Array.from({ length: 3000 }, next);
  t.equal(
    drawn.filter((s) => isHeldOutCombo(s.IO.trim(), s.S.trim(), s.place, s.object)).length,
    0,
    'no held-out combination in training',
  );
  t.ok(drawn.some((s) => s.order === 'ABBA') && drawn.some((s) => s.order === 'BABA'), 'both orders');
  const held = ioiEvalDataset({ templates: 'train', combos: 'heldout', n: 200, seed: 7 });
  t.ok(
    held.samples.every((s) => {
      const d = drawn.find((x) => x.text === s.text);
      return d === undefined;
    }),
    'held-out-combo prompts never appear among training draws',
  );
  // the notebook's prompts are held-out combinations
  const { prompts, answers } = ioiPrompts('classic');
  prompts.forEach((p, i) => {
    const [io, s] = answers[i].map((x) => x.trim());
    const place = /the (\w+),/.exec(p)![1],
      obj = /(?:the|a|an) (\w+) to$/.exec(p)![1];
    t.ok(isHeldOutCombo(io, s, place, obj), `classic prompt ${i} is held out`);
  });
  // a filled sentence ends with the IO; ABBA swaps the first two names; "a" before a vowel is "an"
  const f = fillTemplate(IOI_TRAIN_TEMPLATES[1], 'ABBA', 'Mary', 'John', 'shops', 'apple');
  t.equal(f, 'When Mary and John went to the shops, John gave an apple to Mary');
});

t.test(
  'ioiMixture: seeded, IOI rows scored at the IO token, repeated-token rows scored in the second half',
  async (t) => {
    const a = ioiMixture({ seed: 3 }),
      b = ioiMixture({ seed: 3 }),
      c = ioiMixture({ seed: 4 });
    const batches = (g: ReturnType<typeof ioiMixture>) => Array.from({ length: 8 }, () => g.nextBatch!(6));
    const A = batches(a),
      B = batches(b),
      C = batches(c);
    t.same(A, B, 'same seed, same batches');
    t.notSame(A, C, 'another seed, other batches');
    A.forEach((batch, k) => {
      t.ok(
        batch.every((r) => r.length === batch[0].length && r.length <= a.seqLen),
        `batch ${k}: one length <= seqLen`,
      );
      if (k % 4 === 3) {
        t.equal(batch[0].length, 64, 'repeated tokens: 2 x 32 (the demo seqLen at n_ctx 64)');
        for (const r of batch) {
          t.same(r.slice(32), r.slice(0, 32), 'second half repeats the first');
          t.ok(
            r.every((x) => x >= 100 && x < 20000),
            "tokens in the demo's randint range",
          );
          t.ok(
            a.answerPositionsOf!(r).every((p) => p > 32 && p < 64),
            'scored where induction determines the token',
          );
        }
      } else
        for (const r of batch) {
          t.equal(r[0], EOT, 'BOS first');
          const [p] = a.answerPositionsOf!(r);
          const text = r.slice(1, p + 1);
          t.ok(text.slice(0, p - 1).includes(r[p]), 'the scored token (the IO) appeared before in the prompt');
          t.ok(
            r.slice(p + 1).every((x) => x === EOT),
            'padding after the IO only',
          );
        }
    });
  },
);

t.test('ioiMixture options: a varying repeat period, and S2 scored beside the IO', async (t) => {
  const g = ioiMixture({ seed: 5, inductionLenRange: [8, 20], scoreSubject: true });
  const halves = new Set<number>();
  for (let k = 0; k < 40; k++) {
    const batch = g.nextBatch!(4);
    if (k % 4 === 3) {
      const half = batch[0].length / 2;
      halves.add(half);
      t.ok(half >= 8 && half <= 20, `period ${half} within [8, 20]`);
      for (const r of batch) {
        t.same(r.slice(half), r.slice(0, half), 'second half repeats the first');
        t.ok(
          g.answerPositionsOf!(r).every((p) => p > half && p < 2 * half),
          'scored where induction determines the token',
        );
      }
    } else
      for (const r of batch) {
        const ps = g.answerPositionsOf!(r);
        t.equal(ps.length, 2, 'two scored positions: S2 and the IO');
        const [s2, io] = ps;
        t.ok(r.indexOf(r[s2]) < s2, 'the first scored token (S2) repeats an earlier token (S1)');
        t.ok(r.indexOf(r[io]) < io && r[io] !== r[s2], 'the second (the IO) appeared before and is not S');
      }
  }
  t.ok(halves.size >= 3, `the period varies between batches (${[...halves].join(', ')})`);
  t.throws(
    () => ioiMixture({ inductionLenRange: [10, 40] }),
    /inductionLenRange/,
    'a range past inductionLen is refused',
  );
});

t.test(
  'ioiMixture fillerMax: non-name tokens before the names and before S2 in some rows, the answers unchanged',
  async (t) => {
    const g = ioiMixture({ seed: 6, fillerMax: 6, scoreSubject: true, inductionEvery: 1000 });
    const names = new Set(IOI_NAMES.map((n) => encodeText(' ' + n)[0]));
    let moved = 0,
      rows = 0;
    for (let k = 0; k < 20; k++)
      for (const r of g.nextBatch!(4)) {
        rows++;
        const [s2, io] = g.answerPositionsOf!(r);
        const nameAt = r.map((x, i) => (names.has(x) ? i : -1)).filter((i) => i >= 0 && i <= io);
        t.equal(nameAt.length, 4, 'exactly four name tokens up to the answer: IO, S1, S2, IO (filler holds no name)');
        t.equal(nameAt[2], s2, 'S2 is the third name');
        t.equal(
          r[nameAt[3]],
          r[nameAt[0]] === r[s2] ? r[nameAt[1]] : r[nameAt[0]],
          'the answer is the name that is not repeated',
        );
        if (nameAt[0] !== 2 && nameAt[0] !== 3) moved++;
      }
    t.ok(
      moved > rows / 5 && moved < rows,
      `the first name moved from its template position in ${moved} of ${rows} rows`,
    );
  },
);

t.test(
  'ioiMixture nameCount / fillerFraction: names from the first N only, filler in every row at fraction 1',
  async (t) => {
    const g = ioiMixture({ seed: 7, nameCount: 16, fillerMax: 6, fillerFraction: 1, inductionEvery: 1000 });
    const all = new Set(IOI_NAMES.map((n) => encodeText(' ' + n)[0]));
    const core = new Set(IOI_NAMES.slice(0, 16).map((n) => encodeText(' ' + n)[0]));
    const templateFirst = new Set(
      IOI_TRAIN_TEMPLATES.map((tp) => encodeText(fillTemplate(tp, 'ABBA', 'John', 'Mary', 'store', 'bag'))[0]),
    );
    let outside = 0,
      unfilled = 0,
      rows = 0;
    for (let k = 0; k < 25; k++)
      for (const r of g.nextBatch!(4)) {
        rows++;
        for (const x of r) if (all.has(x) && !core.has(x)) outside++;
        // filler after BOS: the template's first token is right after BOS only when k1 = 0 (1 in 7)
        if (templateFirst.has(r[1])) unfilled++;
      }
    t.equal(outside, 0, 'no name outside the first 16');
    t.ok(unfilled < rows / 4, `the template starts right after BOS in ${unfilled} of ${rows} rows (k1 = 0 only)`);
    const names = ioiEvalDataset({ templates: 'train', combos: 'any', n: 200, seed: 3, nameCount: 8 }).samples.flatMap(
      (s) => [s.IO, s.S],
    );
    t.ok(
      names.every((n) => IOI_NAMES.slice(0, 8).includes(n.trim())),
      'ioiEvalDataset with nameCount 8 draws only the notebook names',
    );
    t.throws(() => ioiMixture({ nameCount: 1 }), { code: 'EINPUT', message: /nameCount 1/ });
    t.throws(() => ioiMixture({ fillerFraction: 2 }), { code: 'EINPUT', message: /fillerFraction 2/ });
  },
);

t.test(
  'train:ioi flags: --decay, --induction-tokens and --embed-extra reach the recipe; bad values are refused',
  async (t) => {
    const { main } = await import('../src/cli/train-ioi.js');
    const out = mkdtempSync(join(tmpdir(), 'typelens-trainioi-'));
    t.teardown(() => rmSync(out, { recursive: true, force: true }));
    const quiet = (f: () => Promise<number>) => {
      const log = console.log;
      console.log = () => {};
      return f().finally(() => (console.log = log));
    };
    for (const [flags, msg] of [
      [['--decay', 'exp'], /--decay exp/],
      [['--embed-extra', '200,100'], /--embed-extra 200,100/],
      [['--induction-tokens', '0,60000'], /--induction-tokens 0,60000/],
    ] as [string[], RegExp][])
      await t.rejects(
        quiet(() => main(['--out', out, '--steps', '1', ...flags])),
        { code: 'EINPUT', message: msg },
      );
    const code = await quiet(() =>
      main([
        '--out',
        out,
        '--steps',
        '3',
        '--layers',
        '1',
        '--decay',
        'cosine',
        '--min-lr',
        '0.2',
        '--induction-tokens',
        '300,340',
        '--embed-extra',
        '300,340',
        '--induction-every',
        '2',
      ]),
    );
    t.equal(code, 0, 'a 3-step run with the new flags exits 0');
    const log = JSON.parse(readFileSync(join(out, 'training-log.json'), 'utf8'));
    t.same(
      [log.recipe.lrDecay, log.recipe.minLrFraction, log.recipe.inductionRange, log.recipe.embedExtraRows],
      ['cosine', 0.2, [300, 340], [300, 340]],
      'training-log.json records the flags in its recipe',
    );
  },
);

t.test(
  'train:ioi and eval-ioi as scripts: --help, unknown flags and bad values end in a message and an exit code, not a stack',
  async (t) => {
    const { runScript } = await import('../src/cli/args.js');
    const train = await import('../src/cli/train-ioi.js');
    const evalIoi = await import('../src/cli/eval-ioi.js');
    const run = async (name: string, usage: string, main: (a: string[]) => Promise<number>, argv: string[]) => {
      const out: string[] = [];
      const [log, err] = [console.log, console.error];
      console.log = console.error = (...a: unknown[]) => void out.push(a.join(' '));
      try {
        return { code: await runScript(name, usage, main, argv), text: out.join('\n') };
      } finally {
        [console.log, console.error] = [log, err];
      }
    };
    const help = await run('train:ioi', train.USAGE, train.main, ['--help']);
    t.same(
      [help.code, help.text.startsWith('usage: npm run train:ioi')],
      [0, true],
      'train:ioi --help prints the usage, exit 0',
    );
    const bogus = await run('train:ioi', train.USAGE, train.main, ['--bogus']);
    t.same(
      [bogus.code, /--bogus/.test(bogus.text), /usage:/.test(bogus.text)],
      [2, true, true],
      'an unknown flag: exit 2, named, with the usage',
    );
    const bad = await run('train:ioi', train.USAGE, train.main, ['--decay', 'exp']);
    t.same(
      [bad.code, bad.text],
      [1, 'train:ioi: --decay exp: expected none, cosine or linear'],
      'a bad value: exit 1, one line',
    );
    const frac = await run('train:ioi', train.USAGE, train.main, ['--induction-fraction', '1.5']);
    t.same(
      [frac.code, /--induction-fraction 1.5/.test(frac.text)],
      [1, true],
      '--induction-fraction outside (0, 1] is refused',
    );
    const n = await run('eval-ioi', evalIoi.USAGE, evalIoi.main, ['--n', 'x']);
    t.same([n.code, /--n must be a positive integer/.test(n.text)], [2, true], 'eval-ioi --n x: exit 2, named');
    const missing = await run('eval-ioi', evalIoi.USAGE, evalIoi.main, [join(tmpdir(), 'typelens-no-such-model')]);
    t.same(
      [missing.code, /typelens-no-such-model/.test(missing.text), /\n\s+at /.test(missing.text)],
      [1, true, false],
      'eval-ioi on a missing folder: exit 1, the path, no stack',
    );
  },
);
