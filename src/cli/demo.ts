import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import type { parseArgs } from 'node:util';
import { HookedTransformer } from '../model/hooked-transformer.js';
import { makeWeights, PRESETS } from '../model/make-weights.js';
import { testPrompt } from '../analysis/utils.js';
import { progress } from './main.js';

type Parse = (argv: string[], o: NonNullable<Parameters<typeof parseArgs>[0]>['options']) => { values: Record<string, unknown> };

const DEFAULT_SEED = 0;

/**
 * `typelens demo`: for now the opening of the Exploratory Analysis Demo (model loading with
 * the demo's processing flags and test_prompt) plus a timed forward with a full cache. The
 * remaining sections are tracked in the demo issue.
 */
export async function runDemo(argv: string[], parse: Parse): Promise<number> {
  const { values: v } = parse(argv, { model: { type: 'string' }, out: { type: 'string' } });
  let dir = v.model as string | undefined;
  const real = resolve('weights', 'gpt2-small');
  if (!dir) dir = existsSync(resolve(real, 'model.safetensors')) ? real : undefined;
  if (!dir) {
    dir = resolve('weights', `random-gpt2-small-seed${DEFAULT_SEED}`);
    console.log('='.repeat(78));
    console.log('NOTE: GPT-2 small weights were not found in weights/gpt2-small/.');
    console.log('Running on a seeded RANDOM gpt2-small-shaped checkpoint: every number below is');
    console.log('meaningless as interpretability. For the real ones, put HuggingFace');
    console.log("openai-community/gpt2's config.json and model.safetensors in weights/gpt2-small/.");
    console.log('='.repeat(78));
    if (!existsSync(resolve(dir, 'model.safetensors'))) makeWeights(dir, PRESETS['gpt2-small'], DEFAULT_SEED, progress('generating random gpt2-small'));
  }
  const t0 = performance.now();
  const model = HookedTransformer.fromDir(dir, { foldLn: true, centerWritingWeights: true, centerUnembed: true, refactorFactoredAttnMatrices: true });
  console.log(`Loaded pretrained model ${dir} into HookedTransformer (${((performance.now() - t0) / 1000).toFixed(1)} s, backend ${model.backend.name})`);
  const prompt = 'After John and Mary went to the store, John gave a bottle of milk to';
  testPrompt(prompt, ' Mary', model);
  const tokens = model.toTokens(prompt);
  model.runWithCache(tokens);
  const times: number[] = [];
  for (let i = 0; i < 5; i++) { const t = performance.now(); model.runWithCache(tokens); times.push(performance.now() - t); }
  times.sort((a, b) => a - b);
  console.log(`forward with full cache (${tokens.shape[1]} tokens): median ${times[2].toFixed(1)} ms`);
  model.dispose();
  return 0;
}
