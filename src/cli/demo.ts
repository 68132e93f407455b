import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { HookedTransformer } from '../model/hooked-transformer.js';
import { makeWeights, PRESETS } from '../model/make-weights.js';
import { exploratoryDemo, ioiData, type DemoVariant } from '../demo/index.js';
import { progress } from './progress.js';
import { wasmBackend } from '../kernels/index.js';
import { existingModelDir, parse, threads, UsageError } from './args.js';
import { ForwardPool } from '../parallel/pool.js';

const DEFAULT_SEED = 0;
export const DEMO_FLAGS = {
  foldLn: true,
  centerWritingWeights: true,
  centerUnembed: true,
  refactorFactoredAttnMatrices: true,
};

const RANDOM_BANNER =
  'GPT-2 small weights were not found in weights/gpt2-small/, so this run uses a seeded RANDOM ' +
  'gpt2-small-shaped checkpoint: every number is meaningless as interpretability. To get the real weights run ' +
  '`npx typelens fetch-weights gpt2-small` on a machine with internet access (or copy HuggingFace ' +
  "openai-community/gpt2's config.json and model.safetensors into weights/gpt2-small/).";

const EMBEDDED_BANNER =
  'GPT-2 small weights were not found in weights/gpt2-small/, so this run uses typelens-ioi, the embedded ' +
  '2-layer GPT-2-layout model that typelens trained itself on synthetic IOI sentences and repeated random tokens ' +
  '(weights/typelens-ioi/; docs/embedded-model.md says what it has and has not learned yet). It is NOT GPT-2. ' +
  'To run on GPT-2 small, run `npx typelens fetch-weights gpt2-small` ' +
  "on a machine with internet access (or copy HuggingFace openai-community/gpt2's config.json and model.safetensors " +
  'into weights/gpt2-small/).';

/** The embedded model's folder: ./weights/typelens-ioi, else the one shipped beside this package. */
export function embeddedModelDir(): string | undefined {
  const here = dirname(fileURLToPath(import.meta.url)); // dist/src/cli
  for (const d of [resolve('weights', 'typelens-ioi'), resolve(here, '..', '..', '..', 'weights', 'typelens-ioi')])
    if (existsSync(join(d, 'model.safetensors'))) return d;
  return undefined;
}

function printBanner(banner: string): void {
  console.log('='.repeat(78));
  console.log(`NOTE: ${banner}`.replace(/(.{1,77})(\s|$)/g, '$1\n').trimEnd());
  console.log('='.repeat(78));
}

/**
 * `typelens demo`: TransformerLens's Exploratory Analysis Demo end to end. Prints what the notebook
 * prints and writes OUT/index.html with every figure.
 */
export async function runDemo(argv: string[]): Promise<number> {
  const { values: v } = parse(argv, {
    model: { type: 'string' },
    out: { type: 'string' },
    prompts: { type: 'string' },
    threads: { type: 'string' },
    'weight-space': { type: 'boolean' },
  });
  const nthreads = threads(v.threads);
  wasmBackend()?.setThreads(nthreads);
  let variant = v.prompts as DemoVariant | undefined;
  if (variant !== undefined && variant !== 'classic' && variant !== 'seed')
    throw new UsageError(`--prompts must be classic or seed, got "${v.prompts}"`);
  const out = resolve((v.out as string | undefined) ?? 'demo-report');
  let dir = v.model as string | undefined;
  let banner: string | undefined;
  if (dir !== undefined) existingModelDir(dir);
  const real = resolve('weights', 'gpt2-small');
  if (!dir) dir = existsSync(join(real, 'model.safetensors')) ? real : undefined;
  const embedded = dir ? undefined : embeddedModelDir();
  if (embedded) {
    // the embedded model is small: the notebook's 8 prompts run in seconds
    dir = embedded;
    banner = EMBEDDED_BANNER;
    printBanner(banner);
  }
  if (!dir) {
    dir = resolve('weights', `random-gpt2-small-seed${DEFAULT_SEED}`);
    banner = RANDOM_BANNER;
    printBanner(banner);
    if (!existsSync(join(dir, 'model.safetensors')))
      makeWeights(dir, PRESETS['gpt2-small'], DEFAULT_SEED, progress('generating random gpt2-small'));
    // The 8-prompt sweeps take minutes on one core and say nothing about random weights: the
    // embedded default runs the single-prompt (seed) variant unless --prompts classic is given.
    variant ??= 'seed';
  }
  variant ??= 'classic';
  const t0 = performance.now();
  const model = HookedTransformer.fromDir(dir, { ...DEMO_FLAGS, onProgress: progress('loading the model') });
  try {
    const name = dir === real ? 'gpt2-small' : dir === embedded ? 'typelens-ioi' : dir;
    console.log(`Loaded pretrained model ${name} into HookedTransformer`);
    console.error(`(loaded in ${((performance.now() - t0) / 1000).toFixed(1)} s, backend ${model.backend.name})`);
    const t1 = performance.now();
    const pool =
      nthreads > 1 && model.backend.sharedMemory ? await ForwardPool.create(model, { threads: nthreads }) : undefined;
    if (pool) console.error(`(patching sweeps on ${nthreads} worker threads)`);
    const result = await exploratoryDemo(model, ioiData(model, variant), {
      banner,
      progress,
      pool,
      weightSpace: !!v['weight-space'],
    });
    const path = join(out, 'index.html');
    result.report.write(path);
    console.log(
      `\nwrote ${path} (${result.report.figures.length} figures) in ${((performance.now() - t1) / 1000).toFixed(1)} s`,
    );
  } finally {
    model.dispose();
  }
  return 0;
}
