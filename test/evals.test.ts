// evals (TL's evals.py) on models whose answers are known: fake models whose logits are fixed
// functions of the tokens (uniform, per-token constants, an oracle that reads the next token),
// and a random GPT-2-vocabulary model checked against per-prompt runs.
import t from 'tap';
import { HookedTransformer, NO_PROCESSING, Tensor, randomGPT2, hfConfig } from '../src/index.js';
import { encodeText, toTokens } from '../src/model/tokenizer.js';
import {
  evaluate,
  evals,
  inductionLoss,
  IOIDataset,
  ioiEval,
  lossOf,
  sanityCheck,
  SANITY_CHECK_TEXT,
  streamToRows,
  type EvalModel,
} from '../src/analysis/evals.js';

const V = 50257;
/** A model whose logits at [b, p] are f(tokens row b, p) (a length-V array). */
function fake(
  f: (row: number[], p: number) => Float32Array | ((v: number) => number),
  nCtx = 1024,
): EvalModel & { calls: number } {
  const m = {
    calls: 0,
    cfg: { n_ctx: nCtx, d_vocab: V, bos_token_id: 50256 },
    toTokens: (s: string) => toTokens(s, { prependBos: true }),
    forward(tokens: Tensor): Tensor {
      m.calls++;
      const [B, P] = tokens.shape;
      const out = new Float32Array(B * P * V);
      for (let b = 0; b < B; b++) {
        const row = tokens.index(0, b).toArray();
        for (let p = 0; p < P; p++) {
          const r = f(row, p);
          if (r instanceof Float32Array) out.set(r, (b * P + p) * V);
          else for (let v = 0; v < V; v++) out[(b * P + p) * V + v] = r(v);
        }
      }
      return new Tensor(out, [B, P, V]);
    },
  };
  return m;
}
const zeros = new Float32Array(V);
const spike = (id: number, h: number) => {
  const a = new Float32Array(V);
  a[id] = h;
  return a;
};

t.test("IOIDataset: TL's templates and words, single GPT-2 tokens, both orders, seeded", async (t) => {
  for (const w of [
    ...IOIDataset.getDefaultNames(),
    ...IOIDataset.getDefaultNouns().LOCATION,
    ...IOIDataset.getDefaultNouns().OBJECT,
  ]) {
    t.equal(encodeText(' ' + w).length, 1, `" ${w}" is one GPT-2 token`);
  }
  const d = new IOIDataset({ numSamples: 40 });
  t.equal(d.length, 40);
  t.same(new IOIDataset({ numSamples: 40 }).samples, d.samples, 'the same seed gives the same samples');
  t.notSame(new IOIDataset({ numSamples: 40, seed: 7 }).samples, d.samples, 'another seed, other samples');
  const abba = d.samples.filter((s) => s.text.startsWith(s.IO.slice(1) + ' and' + s.S));
  const baba = d.samples.filter((s) => s.text.startsWith('Then,' + s.S + ' and' + s.IO));
  t.ok(
    abba.length > 0 && baba.length > 0 && abba.length + baba.length === 40,
    `both orders: ${abba.length} ABBA, ${baba.length} BABA`,
  );
  t.ok(
    d.samples.every((s) => s.text.endsWith(' to' + s.IO) && s.IO !== s.S),
    'every sentence ends with its indirect object; IO != S',
  );
  t.ok(
    d.samples.every((s) => !/\[/.test(s.text)),
    'every placeholder filled',
  );
  const it = d.get(0);
  t.equal(it.prompt[0], 50256, 'BOS first');
  t.same(it.prompt.slice(-it.IO.length), it.IO, 'the prompt ends with the IO tokens');
  const sym = new IOIDataset({ numSamples: 10, symmetric: true, names: ['Alice', 'Bob', 'Charlie'] });
  t.equal(sym.length, 10);
  t.ok(
    [0, 2, 4, 6, 8].every(
      (i) => sym.samples[i].IO === sym.samples[i + 1].S && sym.samples[i].S === sym.samples[i + 1].IO,
    ),
    'symmetric: each draw in both name orders',
  );
  t.equal(evals.IOIDataset, IOIDataset);
});

t.test('ioiEval on models whose answers are known', async (t) => {
  const d = new IOIDataset({ numSamples: 30 });
  // the oracle reads the next token: the IO gets logit 1, the subject 0
  const oracle = fake((row, p) => spike(row[p + 1] ?? 0, 1));
  t.same(
    ioiEval(oracle, { dataset: d }),
    { 'Logit Difference': 1, Accuracy: 1 },
    'an oracle: difference 1, accuracy 1',
  );
  // per-token constants: John +1, Mary -1: the difference is +2 when the IO is John, -2 when Mary
  const john = encodeText(' John')[0],
    mary = encodeText(' Mary')[0];
  const biased = fake(() => (v) => (v === john ? 1 : v === mary ? -1 : 0));
  const nJohn = d.samples.filter((s) => s.IO === ' John').length;
  const r = ioiEval(biased, { dataset: d, batchSize: 7 });
  t.equal(r.Accuracy, nJohn / 30, 'accuracy = the fraction of samples whose IO is John');
  t.ok(
    Math.abs(r['Logit Difference'] - (2 * nJohn - 2 * (30 - nJohn)) / 30) < 1e-12,
    'difference = (2 x #John - 2 x #Mary) / n',
  );
  t.ok(nJohn > 0 && nJohn < 30, 'both names are IOs');
  const def = ioiEval(oracle, { numSamples: 10, symmetric: true });
  t.same(def, { 'Logit Difference': 1, Accuracy: 1 }, 'the default dataset');
});

t.test('ioiEval, sanityCheck, inductionLoss and evaluate on a random GPT-2-vocabulary model', async (t) => {
  const s = { n_layer: 1, n_embd: 8, n_head: 2, n_positions: 64, vocab_size: V };
  const model = HookedTransformer.fromHFTensors(hfConfig(s), randomGPT2(s, 3), NO_PROCESSING);
  const d = new IOIDataset({ numSamples: 12, names: ['John', 'Mary', 'Tom'] });
  // reference: each prompt run alone, the IO - S logit at the last prompt position before the IO
  let diff = 0,
    correct = 0;
  for (let i = 0; i < d.length; i++) {
    const it = d.get(i);
    const lg = model.forward(Tensor.from(it.prompt, [1, it.prompt.length]));
    const pos = it.prompt.length - it.IO.length - 1;
    const x = lg.get(0, pos, it.IO[0]) - lg.get(0, pos, it.S[0]);
    diff += x;
    if (x > 0) correct++;
  }
  const r8 = ioiEval(model, { dataset: d, batchSize: 8 }),
    r1 = ioiEval(model, { dataset: d, batchSize: 1 });
  t.ok(Math.abs(r8['Logit Difference'] - diff / d.length) < 1e-5, 'padded batches = prompts run alone');
  t.equal(r8.Accuracy, correct / d.length, 'accuracy too');
  t.ok(Math.abs(r8['Logit Difference'] - r1['Logit Difference']) < 1e-5, 'batch size does not matter');
  const sc = sanityCheck(model);
  t.ok(
    Number.isFinite(sc) && Math.abs(sc - lossOf(model, model.toTokens(SANITY_CHECK_TEXT))) === 0,
    `sanityCheck = the loss on the paragraph (${sc.toFixed(3)})`,
  );
  t.ok(Number.isFinite(inductionLoss(model, { batchSize: 2, subseqLen: 16 })), 'inductionLoss runs');
  t.throws(() => inductionLoss(model), { code: 'EINPUT' }, 'subseqLen 384 does not fit n_ctx 64');
  const lines: string[] = [];
  const ev = evaluate(
    model,
    { tiny: Array.from({ length: 200 }, (_, i) => (i * 37) % 5000) },
    { seqLen: 32, batchSize: 2, print: (l) => lines.push(l) },
  );
  const rows = streamToRows(
    Array.from({ length: 200 }, (_, i) => (i * 37) % 5000),
    32,
    { bos: model.cfg.bos_token_id },
  );
  let ref = 0,
    nb = 0;
  for (let i = 0; i < rows.length; i += 2) {
    ref += lossOf(model, Tensor.from(rows.slice(i, i + 2).flat(), [Math.min(2, rows.length - i), 32]));
    nb++;
  }
  t.ok(Math.abs(ev.tiny_loss - ref / nb) < 1e-9, "evaluate = the mean of the batches' mean losses");
  t.same(lines, [`tiny: ${ev.tiny_loss}`], 'prints name: loss as TL');
  model.dispose();
});

t.test('losses with known values: uniform logits give log V; an induction oracle its exact loss', async (t) => {
  const uniform = fake(() => zeros);
  t.ok(Math.abs(sanityCheck(uniform) - Math.log(V)) < 1e-12, 'sanityCheck of uniform logits = log V');
  const n = 12;
  // at position p the oracle puts 10 on the token seen subseqLen - 1 positions back (what an induction head copies)
  const copier = fake((row, p) => spike(row[p - n + 1] ?? 0, 10), 64);
  const want = Math.log(Math.exp(10) + V - 1) - 10;
  t.ok(
    Math.abs(inductionLoss(copier, { batchSize: 3, subseqLen: n }) - want) < 1e-9,
    'inductionLoss of a perfect copier = -log softmax(10 among V)',
  );
  t.ok(
    Math.abs(inductionLoss(uniform, { batchSize: 2, subseqLen: n }) - Math.log(V)) < 1e-12,
    'inductionLoss of uniform logits = log V',
  );
  t.same(
    streamToRows([1, 2, 3, 4, 5, 6, 7], 3, { bos: 9 }),
    [
      [9, 1, 2],
      [9, 3, 4],
      [9, 5, 6],
    ],
    'rows of seqLen - 1 tokens after BOS, tail dropped',
  );
  t.same(
    streamToRows([1, 2, 3, 4, 5, 6, 7], 3, { addBosToken: false }),
    [
      [1, 2, 3],
      [4, 5, 6],
    ],
    'without BOS',
  );
  const counting = fake(() => zeros, 64);
  const ev = evaluate(
    counting,
    { a: Array.from({ length: 100 }, (_, i) => i), b: Array.from({ length: 40 }, (_, i) => i) },
    { seqLen: 5, batchSize: 2, truncate: 2, print: () => {} },
  );
  t.equal(counting.calls, 3 + 3, 'truncate 2: three batches per stream (TL stops once the count exceeds truncate)');
  t.same(Object.keys(ev), ['a_loss', 'b_loss'], "TL's keys");
  t.ok(Math.abs(ev.a_loss - Math.log(V)) < 1e-12, 'uniform: log V');
});
