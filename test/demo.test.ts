// The Exploratory Analysis Demo end to end: on the tiny preset (GPT-2 tokenizer, random weights),
// on the reference fixtures (small vocab: token ids folded into it), and through the CLI. Printed
// lines are checked against TL's formats; numbers against independent computations (tolerance 1e-4
// on logit-scale values, exact where the arithmetic is the same).
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { HookedTransformer, randomGPT2, hfConfig, PRESETS, Tensor, sum } from '../src/index.js';
import { exploratoryDemo, ioiData, ioiPrompts, IoiData } from '../src/demo/index.js';
import { logitsToAveLogitDiff } from '../src/analysis/logit-diff.js';
import { torchRepr } from '../src/report/format.js';
import { toTokens } from '../src/model/tokenizer.js';

const DEMO_FLAGS = {
  foldLn: true,
  centerWritingWeights: true,
  centerUnembed: true,
  refactorFactoredAttnMatrices: true,
};
const quiet = { print: () => {} };

t.test('torch-style printing', async (t) => {
  t.equal(
    torchRepr(Tensor.from([3.337, 3.202, 2.709, 3.797, 1.72, 5.281, 2.601, 5.767])),
    'tensor([3.3370, 3.2020, 2.7090, 3.7970, 1.7200, 5.2810, 2.6010, 5.7670])',
  );
  t.equal(torchRepr(Tensor.from([-3.5, 0.25])), 'tensor([-3.5000,  0.2500])');
  t.equal(torchRepr(Tensor.from([[18.52], [17.47]])), 'tensor([[18.5200],\n        [17.4700]])');
  t.equal(
    torchRepr(
      Tensor.from([
        [0.039, 0, 0.031],
        [0.189, 0.172, 0.068],
      ]),
    ),
    'tensor([[0.0390, 0.0000, 0.0310],\n        [0.1890, 0.1720, 0.0680]])',
  );
  t.equal(torchRepr(Tensor.from([1, 2])), 'tensor([1., 2.])');
  t.equal(torchRepr(Tensor.from([1e-5, 0.5])), 'tensor([1.0000e-05, 5.0000e-01])');
});

t.test('classic demo on the tiny preset: every section, TL formats, consistent numbers', async (t) => {
  const model = HookedTransformer.fromHFTensors(hfConfig(PRESETS.tiny), randomGPT2(PRESETS.tiny, 1), DEMO_FLAGS);
  const data = ioiData(model, 'classic');
  t.same(data.prompts[0], 'When John and Mary went to the shops, John gave the bag to');
  t.same(data.answerTokens.toNested()[0], [5335, 1757], 'Mary, John');
  t.same(data.tokens.shape, [8, 15]);
  t.same(data.exampleRepeatedTokens.shape, [1, 43]);
  t.same(data.repeatedRandomTokens.shape, [2, 128]);
  const r = await exploratoryDemo(model, data, { ...quiet, weightSpace: true });
  const L = 2,
    H = 4,
    B = 8,
    P = 15;
  const text = r.lines.join('\n');
  t.match(
    text,
    /^Tokenized prompt: \['<\|endoftext\|>', 'After', ' John', ' and', ' Mary', ' went', ' to', ' the', ' store'/m,
  );
  t.match(
    text,
    /^\['When John and Mary went to the shops, John gave the bag to', 'When John and Mary went to the shops, Mary gave the bag to', /m,
  );
  t.match(text, /^\[\(' Mary', ' John'\), \(' John', ' Mary'\), \(' Tom', ' James'\)/m);
  t.equal(r.lines.filter((l) => l === 'Prompt length: 15').length, 8);
  t.match(text, /^Per prompt logit difference: tensor\(\[(\s*-?\d\.\d{4}(e[+-]\d\d)?,?){8}\]\)$/m);
  t.match(text, /^Average logit difference: -?\d+\.\d{3}$/m);
  t.match(text, /^Answer residual directions shape: torch\.Size\(\[8, 2, 64\]\)$/m);
  t.match(text, /^Logit difference directions shape: torch\.Size\(\[8, 64\]\)$/m);
  t.match(text, /^Final residual stream shape: torch\.Size\(\[8, 15, 64\]\)$/m);
  t.match(text, /^Calculated average logit diff: -?\d+\.\d{3}\nOriginal logit difference: -?\d+\.\d{3}$/m);
  t.match(text, /^Tried to stack head results when they weren't cached\. Computing head results now$/m);
  t.match(text, /^Corrupted Average Logit Diff -?\d+\.\d\d\nClean Average Logit Diff -?\d+\.\d\d$/m);
  t.match(text, /^\['<\|endoftext\|>When John and Mary went to the shops, Mary gave the bag to', /m);
  t.match(text, /^Top Name Mover to ablate: L\dH\d$/m);
  t.match(
    text,
    /^Original logit diff: -?\d+\.\d\d\nPost ablation logit diff: -?\d+\.\d\d\nDirect Logit Attribution of top name mover head: -?\d+\.\d\d\nNaive prediction of post ablation logit diff: -?\d+\.\d\d$/m,
  );
  t.match(text, /^Average LN scaling ratio: \d+\.\d{3}\nAblation LN scale tensor\(\[\[/m);

  // numbers, against independent computations
  const logits = model.forward(data.tokens);
  const direct = Array.from(
    { length: B },
    (_, b) =>
      logits.get(b, P - 1, 5335 * 0 + data.answerTokens.get(b, 0)) - logits.get(b, P - 1, data.answerTokens.get(b, 1)),
  );
  t.ok(
    direct.every((d, b) => Math.abs(d - r.perPromptLogitDiff.get(b)) < 1e-5),
    'per-prompt logit diff = gathered logits',
  );
  const bU = model.b_U;
  const biasGap =
    direct.reduce((a, _, b) => a + bU.get(data.answerTokens.get(b, 0)) - bU.get(data.answerTokens.get(b, 1)), 0) / B;
  t.ok(
    Math.abs(r.calculatedAverageLogitDiff + biasGap - r.originalAverageLogitDiff) < 1e-4,
    'DLA of the final residual + b_U gap = logit diff (spec 7.4)',
  );
  t.equal(r.logitLens.shape[0], 2 * L + 1);
  t.same(r.logitLensLabels, ['0_pre', '0_mid', '1_pre', '1_mid', 'final_post']);
  t.ok(Math.abs(r.logitLens.get(2 * L) - r.calculatedAverageLogitDiff) < 1e-5, 'logit lens ends at the full DLA');
  t.equal(r.perLayer.shape[0], 2 * L + 2);
  t.ok(Math.abs(sum(r.perLayer).item() - r.calculatedAverageLogitDiff) < 1e-4, 'per-layer DLA sums to the total');
  t.same(r.perHead.shape, [L, H]);
  t.same(r.patchedResidPre.shape, [L, P]);
  // clean and corrupted differ only at position 10 (S2): earlier columns are exactly 0, [0, 10] exactly 1
  for (let l = 0; l < L; l++)
    for (let p = 0; p < 10; p++) t.equal(r.patchedResidPre.get(l, p), 0, `resid_pre [${l}, ${p}]`);
  t.equal(r.patchedResidPre.get(0, 10), 1, 'patching S2 at layer 0 restores the clean run exactly');
  t.ok(
    Math.abs(
      r.corruptedAverageLogitDiff - logitsToAveLogitDiff(model.forward(data.corruptedTokens), data.answerTokens),
    ) < 1e-6,
  );
  t.same(r.patchedHeadZ.shape, [L, H]);
  t.same(r.patchedHeadV.shape, [L, H]);
  t.same(r.patchedHeadPattern.shape, [L, H]);
  const { head, postAblation, dla, original, naive } = r.ablation;
  t.equal(
    r.perHead
      .reshape([L * H])
      .toArray()
      .indexOf(Math.max(...r.perHead.toArray())),
    head,
    'ablated head = top DLA head',
  );
  t.equal(r.ablation.perHeadAblated.get(Math.floor(head / H), head % H), 0, 'ablated head DLA is exactly 0');
  t.ok(Math.abs(naive - (original - dla)) < 1e-6);
  t.not(postAblation, original);

  // report: every figure with its axes and data shape
  const figs = r.report.figures;
  const byTitle = (s: string) => figs.find((f) => f.title === s);
  t.same(byTitle('Logit Difference From Accumulate Residual Stream'), {
    id: byTitle('Logit Difference From Accumulate Residual Stream')!.id,
    kind: 'line',
    title: 'Logit Difference From Accumulate Residual Stream',
    xTitle: 'x',
    yTitle: 'y',
    shape: [5],
  });
  t.same(byTitle('Logit Difference From Each Layer')?.shape, [6]);
  for (const title of [
    'Logit Difference From Each Head',
    'Logit Difference From Patched Head Output',
    'Logit Difference From Patched Head Value',
    'Logit Difference From Patched Head Pattern',
    'Previous Token Scores',
    'Duplicate Token Scores',
    'Induction Head Scores',
  ]) {
    t.match(byTitle(title), { kind: 'heatmap', xTitle: 'Head', yTitle: 'Layer', shape: [L, H] }, title);
  }
  for (const title of [
    'Logit Difference From Patched Residual Stream',
    'Logit Difference From Patched Attention Layer',
    'Logit Difference From Patched MLP Layer',
  ]) {
    t.match(byTitle(title), { kind: 'heatmap', xTitle: 'Position', yTitle: 'Layer', shape: [L, P] }, title);
  }
  t.match(byTitle('Scatter plot of output patching vs value patching'), {
    kind: 'scatter',
    xTitle: 'Value Patch',
    yTitle: 'Output Patch',
    shape: [L * H],
  });
  t.match(byTitle('Scatter plot of output patching vs attention patching'), {
    kind: 'scatter',
    xTitle: 'Attention Patch',
    yTitle: 'Output Patch',
  });
  t.match(byTitle('Original vs Post-Ablation Direct Logit Attribution of Heads'), {
    kind: 'scatter',
    xTitle: 'Ablated',
    yTitle: 'Original',
  });
  t.equal(figs.filter((f) => f.title.startsWith('Top 3 Positive Logit Attribution Heads')).length, 3);
  // attribution patching section: heatmap, scatter against activation patching, both timed
  t.match(byTitle('Attribution Patching of Head Outputs'), {
    kind: 'heatmap',
    xTitle: 'Head',
    yTitle: 'Layer',
    shape: [L, H],
  });
  t.match(byTitle('Attribution vs Activation Patching of Head Outputs'), {
    kind: 'scatter',
    xTitle: 'Activation Patch',
    yTitle: 'Attribution Patch',
    shape: [L * H],
  });
  t.match(
    text,
    /^Activation patching, 8 heads: \d+\.\d\d s\nAttribution patching, 8 heads: \d+\.\d\d s \(one forward \+ one backward\)\nCorrelation between the two: (-?\d\.\d{3}|NaN)$/m,
  );
  t.ok(
    r.attribution.activation.f32().every((v, i) => Object.is(v, r.patchedHeadZ.f32()[i])),
    "the timed activation patching is the patching section's, bit for bit",
  );
  t.same(r.attribution.attribution.shape, [L, H], "attribution has activation patching's shape");
  t.ok(r.attribution.attribution.f32().every(Number.isFinite), 'attribution values are finite');
  t.ok(figs.filter((f) => f.kind === 'attention').every((f) => f.shape[0] === P && f.shape[1] === P));
  // the weight-space section, after the notebook's last figure: composition heatmaps and the top heads' OV tokens
  const ablationFig = figs.findIndex((f) => f.title === 'Original vs Post-Ablation Direct Logit Attribution of Heads');
  for (const mode of ['Q', 'K', 'V'] as const) {
    const i = figs.findIndex((f) => f.title === `${mode}-Composition Scores`);
    t.match(
      figs[i],
      { kind: 'heatmap', xTitle: 'Later head', yTitle: 'Earlier head', shape: [L * H, L * H] },
      `${mode}-composition heatmap`,
    );
    t.ok(i > ablationFig, `${mode}-composition comes after the notebook's last figure`);
    const want = model.allCompositionScores(mode).f32(),
      got = r.weightSpace!.compositionScores[mode].f32();
    t.ok(
      got.every((v, k) => Object.is(v, want[k])),
      `${mode}-composition scores = model.allCompositionScores('${mode}')`,
    );
  }
  t.same(
    r.weightSpace!.ovTokens.map((o) => o.head),
    r.topPositiveHeads,
    'OV tokens for the top direct-attribution heads',
  );
  t.ok(
    r.weightSpace!.ovTokens.every((o) => o.vectors.length === 3 && o.vectors.every((v) => v.tokens.length === 5)),
    '3 singular vectors x 5 tokens each',
  );
  t.match(
    r.report.html(),
    /What the top heads&#39;? OV circuits copy|What the top heads' OV circuits copy/,
    'the OV section is in the report',
  );
  t.notMatch(text, /Composition/, "nothing of it is printed: the printed lines stay the notebook's");
  // the same demo with the sweeps on a worker pool: the same numbers, bit for bit
  const { ForwardPool } = await import('../src/parallel/pool.js');
  const pool = await ForwardPool.create(model, { threads: 2 });
  const rp = await exploratoryDemo(model, data, { ...quiet, pool, weightSpace: true });
  for (const k of [
    'patchedResidPre',
    'patchedAttnOut',
    'patchedMlpOut',
    'patchedHeadZ',
    'patchedHeadV',
    'patchedHeadPattern',
  ] as const) {
    t.ok(
      rp[k].f32().every((v, i) => Object.is(v, r[k].f32()[i])),
      `${k}: pool = serial`,
    );
  }
  const untimed = (lines: string[]) => lines.filter((l) => !/^(Activation|Attribution) patching, \d+ heads: /.test(l));
  t.same(untimed(rp.lines), untimed(r.lines), 'same printed output (but the timings)');
  await pool.destroy();
  const html = r.report.html();
  t.ok(html.length > 3e6, 'plotly.js is inlined');
  t.notMatch(html, /<script[^>]+src=/, 'no external scripts');
  const manifest = JSON.parse(
    html.match(/<script type="application\/json" id="typelens-figures">(.*?)<\/script>/s)![1],
  );
  t.equal(manifest.length, figs.length);
  t.equal((html.match(/class="figure"/g) ?? []).length, figs.length, 'one div per figure');
  model.dispose();
});

t.test(
  'seed variant: one prompt, and the logit lens divided by the number of components (spec 10.10 quirk 1, 10.11)',
  async (t) => {
    const model = HookedTransformer.fromHFTensors(hfConfig(PRESETS.tiny), randomGPT2(PRESETS.tiny, 4), DEMO_FLAGS);
    const data = ioiData(model, 'seed');
    t.same(data.prompts, ['When John and Mary went to the shops, John gave the bag to']);
    t.same(data.answerTokens.toNested(), [[5335, 1757]]);
    t.same(data.corruptedPrompts, ['When John and Mary went to the shops, Mary gave the bag to']);
    t.same(data.testPrompt, ['After John and Mary went to the shops, John gave a bottle of milk to', ' Mary']);
    const r = await exploratoryDemo(model, data, quiet);
    const n = r.logitLens.shape[0];
    t.equal(n, 5);
    t.ok(
      Math.abs(r.logitLens.get(n - 1) * n - r.calculatedAverageLogitDiff) < 1e-5,
      'last logit-lens value x number of components = the DLA of the final residual',
    );
    t.ok(
      Math.abs(sum(r.perLayer).item() * r.perLayer.shape[0] - r.calculatedAverageLogitDiff) < 1e-4,
      'per-layer values are divided by their count too',
    );
    t.match(r.lines.join('\n'), /^Per prompt logit difference: tensor\(\[\s*-?\d\.\d{4}\]\)$/m);
    model.dispose();
  },
);

t.test('every section runs on the reference fixtures (token ids folded into their small vocab)', async (t) => {
  for (const name of ['tiny', 'tiny-odd']) {
    const dir = fileURLToPath(new URL(`../../test/fixtures/${name}`, import.meta.url));
    const model = HookedTransformer.fromDir(dir, DEMO_FLAGS);
    const { d_vocab: V, n_ctx } = model.cfg;
    const fold = (t: Tensor) =>
      Tensor.from(
        t.toArray().map((x) => (x === 50256 ? model.cfg.bos_token_id : x % V)),
        t.shape,
      );
    const gpt2 = (p: string[]) => toTokens(p, { nCtx: 1024, bos: 50256, prependBos: true });
    const [big, corrupted] = [gpt2(ioiPrompts('classic').prompts), gpt2(ioiPrompts('classic').corruptedPrompts)];
    const seqLen = Math.floor(n_ctx / 2);
    const rows = [0, 1].map((b) => Array.from({ length: seqLen }, (_, i) => (7 * i + 13 * b + 1) % V));
    const data: IoiData = {
      variant: 'classic',
      prompts: ioiPrompts('classic').prompts,
      answers: ioiPrompts('classic').answers,
      tokens: fold(big),
      corruptedTokens: fold(corrupted),
      answerTokens: Tensor.from(
        [5335, 1757, 1757, 5335, 5335, 1757, 1757, 5335, 5, 6, 6, 5, 7, 8, 8, 7].map((x) => x % V),
        [8, 2],
      ),
      corruptedPrompts: ioiPrompts('classic').corruptedPrompts,
      testPrompt: null,
      exampleRepeatedTokens: Tensor.from([model.cfg.bos_token_id, 1, 2, 3, 4, 1, 2, 3, 4], [1, 9]),
      repeatedRandomTokens: Tensor.from(
        rows.flatMap((r) => [...r, ...r]),
        [2, 2 * seqLen],
      ),
      seqLen,
    };
    const r = await exploratoryDemo(model, data, quiet);
    const { n_layers: L, n_heads: H } = model.cfg;
    t.same(r.patchedResidPre.shape, [L, 15], `${name}: resid_pre grid`);
    t.same(r.headScores.induction.shape, [L, H], `${name}: induction scores`);
    // the notebook's figures: 2 lines, 11 head/layer heatmaps and 3 scatters, then one attention
    // heatmap per head it shows (top and bottom min(3, L*H) DLA heads, the min(10, L*H) heads that
    // matter most to patching, the example induction heads L6H9 and L5H1 where the model has them)
    const figs = r.report.figures;
    const kinds = (want: string[]) =>
      figs
        .filter((f) => want.includes(f.kind))
        .map((f) => f.kind)
        .sort();
    // the notebook's 11 heatmaps, 2 lines and 3 scatters, then the attribution-patching section's heatmap and scatter
    t.same(
      kinds(['line', 'heatmap', 'scatter']),
      [...Array(12).fill('heatmap'), 'line', 'line', 'scatter', 'scatter', 'scatter', 'scatter'],
      `${name}: the fixed figures`,
    );
    const shown = [
      ...r.topPositiveHeads,
      ...r.topNegativeHeads,
      ...r.topPatchedHeads,
      ...[81, 65].filter((i) => i < L * H),
    ];
    t.equal(r.topPositiveHeads.length, Math.min(3, L * H), `${name}: min(3, L*H) top DLA heads`);
    t.equal(r.topPatchedHeads.length, Math.min(10, L * H), `${name}: min(10, L*H) top patched heads`);
    t.same(
      figs
        .filter((f) => f.kind === 'attention')
        .map((f) => f.title.split(': ').pop())
        .sort(),
      shown.map((i) => `L${Math.floor(i / H)}H${i % H}`).sort(),
      `${name}: one attention figure per head shown`,
    );
    t.equal(figs.length, 18 + shown.length, `${name}: ${figs.length} figures in all`);
    model.dispose();
  }
});

t.test('typelens demo --prompts seed on a small checkpoint writes the report; bad flags exit 2', async (t) => {
  const bin = fileURLToPath(new URL('../../bin/typelens.js', import.meta.url));
  const tmp = mkdtempSync(join(tmpdir(), 'typelens-demo-'));
  const model = join(tmp, 'tiny'),
    out = join(tmp, 'report');
  t.equal(spawnSync(process.execPath, [bin, 'make-weights', '--preset', 'tiny', '--out', model]).status, 0);
  const r = spawnSync(
    process.execPath,
    [bin, 'demo', '--model', model, '--out', out, '--prompts', 'seed', '--threads', '2'],
    { encoding: 'utf8' },
  );
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /^Per prompt logit difference: tensor\(\[\s*-?\d\.\d{4}\]\)$/m);
  t.match(
    r.stdout,
    /^Prompt as tokens: \['<\|endoftext\|>', 'When', ' John', ' and', ' Mary', ' went', ' to', ' the', ' shops', ',', ' John', ' gave', ' the', ' bag', ' to'\]$/m,
  );
  t.match(r.stdout, /wrote .*index\.html \(\d+ figures\)/);
  t.ok(existsSync(join(out, 'index.html')));
  t.same(readdirSync(out), ['index.html'], 'no temp files left');
  t.ok(readFileSync(join(out, 'index.html'), 'utf8').includes('Logit Difference From Patched Head Pattern'));
  t.notOk(
    readFileSync(join(out, 'index.html'), 'utf8').includes('Q-Composition Scores'),
    'no weight-space section unless asked',
  );
  const ws = spawnSync(
    process.execPath,
    [bin, 'demo', '--model', model, '--out', out, '--prompts', 'seed', '--threads', '2', '--weight-space'],
    { encoding: 'utf8' },
  );
  t.equal(ws.status, 0, ws.stderr);
  t.ok(
    readFileSync(join(out, 'index.html'), 'utf8').includes('Q-Composition Scores'),
    '--weight-space adds the weight-space section',
  );
  const badThreads = spawnSync(process.execPath, [bin, 'demo', '--model', model, '--threads', '0'], {
    encoding: 'utf8',
  });
  t.equal(badThreads.status, 2);
  t.match(badThreads.stderr, /--threads must be a positive integer, got "0"/);
  const bad = spawnSync(process.execPath, [bin, 'demo', '--model', model, '--prompts', 'many'], { encoding: 'utf8' });
  t.equal(bad.status, 2);
  t.match(bad.stderr, /--prompts must be classic or seed, got "many"/);
  const missing = spawnSync(process.execPath, [bin, 'demo', '--model', join(tmp, 'nope')], { encoding: 'utf8' });
  t.equal(missing.status, 1);
  t.match(missing.stderr, /--model: .*nope does not exist/);
});
