// `npm run train:ioi`: trains the embedded IOI model from scratch (the recipe of
// docs/embedded-model.md) and writes weights/typelens-ioi/: the checkpoint (HF GPT-2 layout,
// tied head, f16 storage), training-log.json (the loss curve, wall and CPU time) and
// loss-curve.svg. Flags override the recipe for experiments.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { wasmBackend } from '../kernels/index.js';
import { HookedTransformer } from '../model/hooked-transformer.js';
import { ioiMixture, ioiTrainVocabulary, train } from '../train/index.js';
import { TypelensError } from '../errors.js';
import { saveCheckpoint } from '../train/checkpoint.js';
import { lossCurveSvg } from './svg-figures.js';
import { parse, runScript, UsageError } from './args.js';

/** The recipe (every number here is documented in docs/embedded-model.md). */
export const IOI_RECIPE = {
  model: { n_layers: 2, d_model: 128, n_heads: 4, d_mlp: 512, n_ctx: 64, d_vocab: 50257, bos_token_id: 50256 },
  initSeed: 0,
  /** With embed 'frozen': these stay at their seeded initialisation (TL's std 0.8 / sqrt(d_model)), tied: W_U = W_E^T. */
  freeze: ['embed.W_E', 'unembed.W_U', 'unembed.b_U'],
  /**
   * ln_final.w starts at this (trained from there). With a frozen table a larger start (4) is a
   * lower softmax temperature over 50257 random rows; with the data's rows trained, 1 (TL's init).
   */
  lnFinalInit: 1,
  dataSeed: 1,
  steps: 4400,
  batchSize: 16,
  inductionEvery: 4,
  inductionScored: 4,
  inductionBatchFraction: 0.25,
  inductionLenRange: [12, 32] as [number, number],
  /**
   * The tied embedding: 'frozen' at its seeded initialisation, 'trained' (all 50257 rows), or
   * 'rows': only the rows of the training data's own tokens (ioiTrainVocabulary, ~400), the rest
   * frozen, at a fraction of the dense table's cost per step.
   */
  embed: 'rows' as 'frozen' | 'trained' | 'rows',
  /** Also score S2 (see ioiMixture's scoreSubject). */
  scoreSubject: true,
  /** 0..fillerMax random non-name tokens after BOS and before S2 (see ioiMixture's fillerMax). */
  fillerMax: 8,
  /** The share of IOI rows that get filler. */
  fillerFraction: 1,
  /** Names: the first nameCount of IOI_NAMES (undefined: all 119). */
  nameCount: 16 as number | undefined,
  optimizer: 'AdamW' as const,
  lr: 2e-3,
  weightDecay: 0.01,
  warmupSteps: 50,
  /** After the warmup: 'none' (constant, TL's schedule) or a decay to minLrFraction·lr at the last step. */
  lrDecay: 'cosine' as 'none' | 'cosine' | 'linear',
  minLrFraction: 0.1,
  maxGradNorm: 1.0,
  /** Repeated-token rows and filler draw tokens from [lo, hi) (the demo's randint range). */
  inductionRange: [100, 20000] as [number, number],
  /**
   * With embed 'rows': also train these token rows [lo, hi) (null: none), e.g. the induction
   * range's, so that copying a repeated token has a trained embedding to read and write.
   */
  embedExtraRows: null as [number, number] | null,
};

export const USAGE = `usage: npm run train:ioi -- [options]

Trains the embedded IOI model from scratch (docs/embedded-model.md) and writes the checkpoint,
training-log.json and loss-curve.svg. With no options it is the committed recipe.

  --out DIR                 where to write (default weights/typelens-ioi)
  --steps N --lr X --batch N --layers N --seed N
  --decay none|cosine|linear  --min-lr F      the rate after the warmup, down to F·lr
  --embed frozen|trained|rows                 which embedding rows train
  --embed-extra LO,HI       with --embed rows, also train the rows [LO, HI)
  --names N                 the first N names
  --filler N --filler-fraction F              random tokens around the IOI sentence
  --score-subject           also score the subject's second mention
  --induction-every N       every N-th batch is repeated random tokens
  --induction-fraction F    that batch has F·batch rows
  --induction-scored N      positions scored per repeated-token row
  --induction-range LO,HI   the repeated half's length, drawn from [LO, HI]
  --induction-tokens LO,HI  repeated and filler tokens drawn from [LO, HI)
  --ln-final X              ln_final.w's starting value
  --threads N               intra-op threads (default 1; the model does not depend on it)
  --f32                     store float32 instead of float16
  --max-minutes M           stop after M minutes  --save-every N   checkpoints every N steps`;

export async function main(argv: string[]): Promise<number> {
  const { values: v, positionals } = parse(argv, {
    out: { type: 'string', default: 'weights/typelens-ioi' },
    steps: { type: 'string' },
    lr: { type: 'string' },
    batch: { type: 'string' },
    layers: { type: 'string' },
    f32: { type: 'boolean' },
    'max-minutes': { type: 'string' },
    'save-every': { type: 'string' },
    embed: { type: 'string' },
    'induction-range': { type: 'string' },
    'induction-every': { type: 'string' },
    seed: { type: 'string' },
    'score-subject': { type: 'boolean' },
    'induction-scored': { type: 'string' },
    'ln-final': { type: 'string' },
    filler: { type: 'string' },
    'filler-fraction': { type: 'string' },
    names: { type: 'string' },
    decay: { type: 'string' },
    'min-lr': { type: 'string' },
    'induction-tokens': { type: 'string' },
    'embed-extra': { type: 'string' },
    threads: { type: 'string' },
    'induction-fraction': { type: 'string' },
  }) as { values: Record<string, string | undefined>; positionals: string[] };
  if (positionals.length) throw new UsageError(`unexpected argument "${positionals[0]}"`);
  const R = { ...IOI_RECIPE, model: { ...IOI_RECIPE.model } };
  if (v.steps) R.steps = Number(v.steps);
  if (v.lr) R.lr = Number(v.lr);
  if (v.batch) R.batchSize = Number(v.batch);
  if (v.layers) R.model.n_layers = Number(v.layers);
  if (v.embed) {
    if (!['frozen', 'trained', 'rows'].includes(v.embed))
      throw new TypelensError(`--embed ${v.embed}: expected frozen, trained or rows`, 'EINPUT');
    R.embed = v.embed as typeof R.embed;
  }
  if (v['induction-range']) R.inductionLenRange = v['induction-range'].split(',').map(Number) as [number, number];
  if (v['induction-every']) R.inductionEvery = Number(v['induction-every']);
  if (v.seed) R.initSeed = Number(v.seed);
  if (v['score-subject']) R.scoreSubject = true;
  if (v['induction-fraction']) {
    const f = Number(v['induction-fraction']);
    if (!(f > 0 && f <= 1))
      throw new TypelensError(`--induction-fraction ${v['induction-fraction']}: expected 0 < F <= 1`, 'EINPUT');
    R.inductionBatchFraction = f;
  }
  if (v['induction-scored']) R.inductionScored = Number(v['induction-scored']);
  if (v['ln-final']) R.lnFinalInit = Number(v['ln-final']);
  if (v.filler) R.fillerMax = Number(v.filler);
  if (v['filler-fraction']) R.fillerFraction = Number(v['filler-fraction']);
  if (v.names) R.nameCount = Number(v.names);
  if (v.decay) {
    if (!['none', 'cosine', 'linear'].includes(v.decay))
      throw new TypelensError(`--decay ${v.decay}: expected none, cosine or linear`, 'EINPUT');
    R.lrDecay = v.decay as typeof R.lrDecay;
  }
  if (v['min-lr']) R.minLrFraction = Number(v['min-lr']);
  const pair = (flag: string, x: string): [number, number] => {
    const p = x.split(',').map(Number);
    if (p.length !== 2 || !p.every(Number.isInteger) || !(p[0] >= 0 && p[0] < p[1] && p[1] <= R.model.d_vocab))
      throw new TypelensError(`--${flag} ${x}: expected lo,hi with 0 <= lo < hi <= ${R.model.d_vocab}`, 'EINPUT');
    return p as [number, number];
  };
  if (v['induction-tokens']) R.inductionRange = pair('induction-tokens', v['induction-tokens']);
  if (v['embed-extra']) R.embedExtraRows = pair('embed-extra', v['embed-extra']);
  const out = resolve(v.out as string);
  // one intra-op thread by default (two experiments can share the 2-core machine); the threads
  // change the schedule of the matmuls, not their sums, so the model is the same
  const threads = v.threads ? Number(v.threads) : 1;
  if (!(Number.isInteger(threads) && threads >= 1))
    throw new TypelensError(`--threads ${v.threads}: expected a whole number >= 1`, 'EINPUT');
  wasmBackend()?.setThreads(threads);
  const model = HookedTransformer.fromConfig(R.model, { seed: R.initSeed });
  model.updateWeights(['ln_final.w'], (_, d) => d.fill(R.lnFinalInit));
  const data = ioiMixture({
    seed: R.dataSeed,
    inductionEvery: R.inductionEvery,
    inductionScored: R.inductionScored,
    inductionBatchFraction: R.inductionBatchFraction,
    inductionLenRange: R.inductionLenRange,
    scoreSubject: R.scoreSubject,
    fillerMax: R.fillerMax,
    fillerFraction: R.fillerFraction,
    nameCount: R.nameCount,
    inductionRange: R.inductionRange,
  });
  const maxMs = v['max-minutes'] ? Number(v['max-minutes']) * 60000 : Infinity;
  const cpu0 = process.cpuUsage(),
    t0 = performance.now();
  const log: { step: number; loss: number; kind: 'ioi' | 'induction' }[] = [];
  let last = 0;
  const res = train(model, data, {
    steps: R.steps,
    batchSize: R.batchSize,
    optimizer: R.optimizer,
    lr: R.lr,
    weightDecay: R.weightDecay,
    warmupSteps: R.warmupSteps,
    lrDecay: R.lrDecay,
    minLrFraction: R.minLrFraction,
    maxGradNorm: R.maxGradNorm,
    lossPositions: 'answers',
    tieEmbeddings: true,
    freeze: R.embed === 'frozen' ? R.freeze : ['unembed.b_U'],
    embedRows: R.embed === 'rows' ? embedRowsOf(R) : undefined,
    saveEvery: v['save-every'] ? Number(v['save-every']) : undefined,
    saveDir: v['save-every'] ? `${out}-steps` : undefined,
    onStep: (s) => {
      log.push({
        step: s.step + 1,
        loss: s.loss,
        kind: s.step % R.inductionEvery === R.inductionEvery - 1 ? 'induction' : 'ioi',
      });
      if (!process.stderr.isTTY && performance.now() - last > 30000) {
        last = performance.now();
        const ioi = log.filter((x) => x.kind === 'ioi').slice(-20);
        const ind = log.filter((x) => x.kind === 'induction').slice(-5);
        const m = (xs: { loss: number }[]) => (xs.reduce((a, x) => a + x.loss, 0) / Math.max(1, xs.length)).toFixed(3);
        const cpu = process.cpuUsage(cpu0);
        console.error(
          `step ${s.step + 1}/${R.steps} ioi ${m(ioi)} induction ${m(ind)} ${((last - t0) / 1000).toFixed(0)} s wall ${((cpu.user + cpu.system) / 1e6).toFixed(0)} s CPU`,
        );
      }
      // a wall-clock cap for experiments: without lrDecay, stopping at step K gives the K-step recipe's model
      // (with a decay it does not: the rate had not finished annealing)
      return performance.now() - t0 < maxMs;
    },
  });
  const wall = (performance.now() - t0) / 1000,
    cpu = process.cpuUsage(cpu0);
  mkdirSync(out, { recursive: true });
  saveCheckpoint(
    model,
    out,
    { recipe: 'typelens train:ioi (docs/embedded-model.md)', steps: String(res.steps) },
    { dtype: v.f32 ? 'F32' : 'F16' },
  );
  const summary = {
    recipe: R,
    data: data.description,
    steps: res.steps,
    wallSeconds: +wall.toFixed(1),
    cpuSeconds: +((cpu.user + cpu.system) / 1e6).toFixed(1),
    stepsPerSecond: +res.stepsPerSecond.toFixed(3),
    msPerStep: res.timing,
    finalIoiLoss: mean(log.filter((x) => x.kind === 'ioi').slice(-50)),
    finalInductionLoss: mean(log.filter((x) => x.kind === 'induction').slice(-12)),
    losses: log,
  };
  writeFileSync(join(out, 'training-log.json'), JSON.stringify(summary, null, 1) + '\n');
  writeFileSync(
    join(out, 'loss-curve.svg'),
    lossCurveSvg(log, `typelens-ioi: ${res.steps} steps, ${summary.wallSeconds} s wall, ${summary.cpuSeconds} s CPU`),
  );
  console.log(
    `wrote ${out} (${res.steps} steps, ${summary.wallSeconds} s wall, ${summary.cpuSeconds} s CPU; IOI loss ${summary.finalIoiLoss.toFixed(3)}, induction loss ${summary.finalInductionLoss.toFixed(3)})`,
  );
  model.dispose();
  return 0;
}

/** The trained embedding rows of embed 'rows': the data's vocabulary plus embedExtraRows (train dedups and sorts). */
function embedRowsOf(R: typeof IOI_RECIPE): number[] {
  const [lo, hi] = R.embedExtraRows ?? [0, 0];
  return [...ioiTrainVocabulary(), ...Array.from({ length: hi - lo }, (_, i) => lo + i)];
}

const mean = (xs: { loss: number }[]) => xs.reduce((a, x) => a + x.loss, 0) / Math.max(1, xs.length);

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split('/').pop()!))
  runScript('train:ioi', USAGE, main, process.argv.slice(2)).then((c) => process.exit(c));
