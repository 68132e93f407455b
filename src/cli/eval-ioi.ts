// `node dist/src/cli/eval-ioi.js [model dir] [--report DIR]`: the embedded model's evaluation
// table (docs/embedded-model.md) as JSON: ioiEval on 1,000 fresh seeded prompts per split, the
// notebook's 8 prompts and test_prompt, and the circuit figures the demo's sections find.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ioiEval } from '../analysis/evals.js';
import { testPrompt } from '../analysis/utils.js';
import { circuitFigures, exploratoryDemo, ioiData } from '../demo/index.js';
import { wasmBackend } from '../kernels/index.js';
import { HookedTransformer } from '../model/hooked-transformer.js';
import { ioiEvalDataset } from '../train/index.js';
import { DEMO_FLAGS } from './demo.js';
import { heatmapSvg } from './svg-figures.js';
import { parse, runScript, UsageError } from './args.js';
import type { Tensor } from '../tensor/index.js';

/** Seeds of the evaluation prompts: never the training stream's (dataSeed 1, and +1 for its induction rows). */
export const EVAL_SEEDS = { trainCombos: 1001, heldoutCombos: 1002, heldoutTemplates: 1003 };

export const USAGE = `usage: node dist/src/cli/eval-ioi.js [MODEL_DIR] [options]

Evaluates a train:ioi checkpoint (default weights/typelens-ioi): ioiEval on fresh seeded prompts per
split, the notebook's 8 prompts, test_prompt and the demo's circuit figures, printed as JSON.

  --n N            prompts per split (default 1000)
  --names N        draw names from the first N (default: the training log's --names)
  --json FILE      also write the JSON there
  --figures DIR    write the circuit figures as SVG
  --report DIR     write the demo's HTML report for this model`;

export async function main(argv: string[]): Promise<number> {
  const { values: v, positionals } = parse(argv, {
    report: { type: 'string' },
    n: { type: 'string', default: '1000' },
    json: { type: 'string' },
    figures: { type: 'string' },
    names: { type: 'string' },
  }) as { values: Record<string, string | undefined>; positionals: string[] };
  if (positionals.length > 1) throw new UsageError(`expected one model directory, got ${positionals.length}`);
  const n = Number(v.n);
  if (!(Number.isInteger(n) && n >= 1)) throw new UsageError(`--n must be a positive integer, got "${v.n}"`);
  wasmBackend()?.setThreads(1);
  const dir = resolve(positionals[0] ?? 'weights/typelens-ioi');
  const t0 = performance.now();
  const model = HookedTransformer.fromDir(dir, DEMO_FLAGS);
  const loadSeconds = (performance.now() - t0) / 1000;
  // the training data's name set (train:ioi's --names), from the checkpoint's training log unless given
  const logPath = join(dir, 'training-log.json');
  const nameCount = v.names
    ? Number(v.names)
    : existsSync(logPath)
      ? (JSON.parse(readFileSync(logPath, 'utf8')) as { recipe?: { nameCount?: number } }).recipe?.nameCount
      : undefined;
  const split = (templates: 'train' | 'heldout', combos: 'train' | 'heldout' | 'any', seed: number) => {
    const r = ioiEval(model, { dataset: ioiEvalDataset({ templates, combos, n, seed, nameCount }), batchSize: 50 });
    return { n, accuracy: r.Accuracy, logitDiff: r['Logit Difference'] };
  };
  const evals = {
    trainTemplatesTrainCombos: split('train', 'train', EVAL_SEEDS.trainCombos),
    trainTemplatesHeldoutCombos: split('train', 'heldout', EVAL_SEEDS.heldoutCombos),
    heldoutTemplates: split('heldout', 'any', EVAL_SEEDS.heldoutTemplates),
  };
  const data = ioiData(model, 'classic');
  const lines: string[] = [];
  const result = await exploratoryDemo(model, data, { print: (l) => lines.push(l) });
  const tp = testPrompt(data.testPrompt![0], data.testPrompt![1], model, { print: () => {} });
  const rank = Number(/\(' Mary', (\d+)\)/.exec(tp[tp.length - 1])?.[1]);
  const figures = circuitFigures(model, data, result);
  const out = {
    model: dir,
    loadSeconds: +loadSeconds.toFixed(2),
    ioiEval: evals,
    classic: {
      perPrompt: Array.from(result.perPromptLogitDiff.f32()),
      mean: result.originalAverageLogitDiff,
      testPromptMaryRank: rank,
    },
    circuit: figures,
  };
  const text = JSON.stringify(out, null, 1);
  console.log(text);
  if (v.json) writeFileSync(resolve(v.json), text + '\n');
  if (v.report) result.report.write(join(resolve(v.report), 'index.html'));
  if (v.figures) {
    const f = resolve(v.figures),
      { n_layers: L, n_heads: H } = model.cfg;
    mkdirSync(f, { recursive: true });
    const fig = (name: string, t: Tensor, title: string) =>
      writeFileSync(join(f, name), heatmapSvg(t.reshape([t.size]).f32(), L, H, title));
    fig(
      'dla-per-head.svg',
      result.perHead,
      "Direct logit attribution per head (classic prompts' mean logit difference)",
    );
    fig(
      'patching-head-out.svg',
      result.patchedHeadZ,
      'Activation patching, head outputs (fraction of logit difference restored)',
    );
    fig('induction-scores.svg', result.headScores.induction, "Induction scores on the demo's repeated random tokens");
  }
  model.dispose();
  return 0;
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split('/').pop()!))
  runScript('eval-ioi', USAGE, main, process.argv.slice(2)).then((c) => process.exit(c));
