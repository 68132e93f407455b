import { join, resolve } from 'node:path';
import { TypelensError } from '../errors.js';
import { HookedTransformer } from '../model/hooked-transformer.js';
import { makeWeights, PRESETS } from '../model/make-weights.js';
import { NO_PROCESSING } from '../model/process.js';
import { ActivationCache } from '../hooks/cache.js';
import type { DType } from '../tensor/dtype.js';
import { testPrompt } from '../analysis/utils.js';
import { runDemo } from './demo.js';
import { runVerify, VERIFY_USAGE } from './verify.js';
import { cmdGenerate } from './generate.js';
import { CHECKPOINTS, fetchWeights } from '../model/fetch.js';
import { wasmBackend } from '../kernels/index.js';
import { progress } from './progress.js';
import { runServe, SERVE_USAGE } from './serve.js';
import { existingModelDir, int, need, parse, parseTokens, threads, UsageError } from './args.js';

export { progress };

const USAGE = `usage: typelens <command> [options]

commands:
  run --model DIR (--tokens "1,2,3[;4,5,6]" | --prompt TEXT) --out FILE.safetensors
      [--no-processing] [--dtype f32|f16|bf16] [--cache all|NAME,NAME] [--repeat N] [--threads N]
  test-prompt --model DIR [--no-prepend-bos] "PROMPT" " ANSWER"
  generate --model DIR --prompt TEXT [--max-new-tokens N] [--temperature T] [--seed S]
      [--top-k K] [--top-p P] [--no-kv-cache] [--no-stop-at-eos]
  make-weights --preset tiny|gpt2-small|gpt2-medium|gpt2-large|gpt2-xl [--seed N] [--dtype f32|bf16] --out DIR
  demo [--model DIR] [--out DIR] [--prompts classic|seed] [--threads N] [--weight-space]
  fetch-weights gpt2-small [--dir DIR] [--base-url URL]
${VERIFY_USAGE}
${SERVE_USAGE}`;

async function cmdRun(argv: string[]): Promise<number> {
  const { values: v } = parse(argv, {
    model: { type: 'string' },
    tokens: { type: 'string' },
    prompt: { type: 'string' },
    out: { type: 'string' },
    'no-processing': { type: 'boolean' },
    dtype: { type: 'string' },
    cache: { type: 'string' },
    repeat: { type: 'string' },
    threads: { type: 'string' },
  });
  if (v.threads !== undefined) wasmBackend()?.setThreads(threads(v.threads));
  const dir = need(v.model, '--model DIR');
  const out = need(v.out, '--out FILE.safetensors');
  if ((v.tokens === undefined) === (v.prompt === undefined))
    throw new UsageError('give exactly one of --tokens or --prompt');
  const dtype = (v.dtype ?? 'f32') as DType;
  if (!['f32', 'f16', 'bf16'].includes(dtype))
    throw new UsageError(`--dtype must be f32, f16 or bf16, got "${v.dtype}"`);
  const repeat = int(v.repeat, '--repeat', 0);
  existingModelDir(dir);
  const model = HookedTransformer.fromDir(dir, { ...(v['no-processing'] ? NO_PROCESSING : {}), dtype });
  const input = v.tokens !== undefined ? parseTokens(v.tokens as string) : model.toTokens(v.prompt as string);
  const names =
    v.cache === undefined ? [] : v.cache === 'all' ? null : (v.cache as string).split(',').map((s) => s.trim());
  const go = () =>
    names && names.length === 0
      ? { logits: model.forward(input), cache: null }
      : model.runWithCache(input, { namesFilter: names ?? undefined });
  const { logits, cache } = go();
  // one safetensors file: the activations, then the logits; its metadata (config, token ids, hook
  // names) makes it loadable by ActivationCache.load
  const saved = cache ?? new ActivationCache(new Map(), model);
  saved.tokens = input;
  saved.save(resolve(out), { logits });
  console.log(`wrote ${out}: logits [${logits.shape.join(', ')}]${cache ? ` + ${cache.size} cached activations` : ''}`);
  if (repeat > 0) {
    const times: number[] = [];
    for (let i = 0; i < repeat; i++) {
      const t0 = performance.now();
      go();
      times.push(performance.now() - t0);
    }
    times.sort((a, b) => a - b);
    console.log(`forward median: ${times[Math.floor(times.length / 2)].toFixed(2)} ms`);
  }
  model.dispose();
  return 0;
}

async function cmdTestPrompt(argv: string[]): Promise<number> {
  const { values: v, positionals } = parse(argv, { model: { type: 'string' }, 'no-prepend-bos': { type: 'boolean' } });
  const dir = need(v.model, '--model DIR');
  if (positionals.length !== 2) throw new UsageError('test-prompt needs exactly two arguments: "PROMPT" " ANSWER"');
  existingModelDir(dir);
  const model = HookedTransformer.fromDir(dir);
  testPrompt(positionals[0], positionals[1], model, { prependBos: !v['no-prepend-bos'] });
  model.dispose();
  return 0;
}

async function cmdMakeWeights(argv: string[]): Promise<number> {
  const { values: v } = parse(argv, {
    preset: { type: 'string' },
    seed: { type: 'string' },
    out: { type: 'string' },
    dtype: { type: 'string' },
  });
  const preset = need(v.preset, `--preset ${Object.keys(PRESETS).join('|')}`);
  const dtype = String(v.dtype ?? 'f32').toUpperCase();
  if (dtype !== 'F32' && dtype !== 'BF16') throw new UsageError(`--dtype must be f32 or bf16, got "${v.dtype}"`);
  const shape = PRESETS[preset];
  if (!shape) throw new UsageError(`--preset must be one of ${Object.keys(PRESETS).join(', ')}, got "${preset}"`);
  const out = need(v.out, '--out DIR');
  const seed = int(v.seed, '--seed', 0);
  makeWeights(resolve(out), shape, seed, progress(`generating ${preset} (seed ${seed})`), dtype);
  console.log(`wrote ${out}/config.json and ${out}/model.safetensors (${preset}, seed ${seed})`);
  return 0;
}

async function cmdFetchWeights(argv: string[]): Promise<number> {
  const { values: v, positionals } = parse(argv, { dir: { type: 'string' }, 'base-url': { type: 'string' } });
  if (positionals.length !== 1)
    throw new UsageError(`fetch-weights needs one model name (${Object.keys(CHECKPOINTS).join(', ')})`);
  const ckpt = CHECKPOINTS[positionals[0]];
  if (!ckpt) throw new UsageError(`unknown model "${positionals[0]}" (known: ${Object.keys(CHECKPOINTS).join(', ')})`);
  const dir = resolve((v.dir as string | undefined) ?? join('weights', positionals[0]));
  const bars = new Map<string, ReturnType<typeof progress>>();
  await fetchWeights(ckpt, {
    dir,
    baseUrl: v['base-url'] as string | undefined,
    onProgress: (file, done, total) => {
      if (!bars.has(file)) bars.set(file, progress(`${file} (bytes)`));
      bars.get(file)?.(done, total || done);
    },
  });
  console.log(`${ckpt.repo}@${ckpt.revision.slice(0, 12)} is in ${dir} (sizes and sha256 verified)`);
  return 0;
}

/** Entry point: returns the exit code; errors are one line, never a stack trace. */
export async function run(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    switch (cmd) {
      case 'run':
        return await cmdRun(rest);
      case 'test-prompt':
        return await cmdTestPrompt(rest);
      case 'generate':
        return await cmdGenerate(rest);
      case 'make-weights':
        return await cmdMakeWeights(rest);
      case 'demo':
        return await runDemo(rest);
      case 'fetch-weights':
        return await cmdFetchWeights(rest);
      case 'verify':
        return await runVerify(rest);
      case 'serve':
        return await runServe(rest);
      case undefined:
      case '-h':
      case '--help':
      case 'help':
        console.log(USAGE);
        return cmd === undefined ? 2 : 0;
      default:
        throw new UsageError(`unknown command "${cmd}"`);
    }
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(`typelens: ${e.message}\n\n${USAGE}`);
      return 2;
    }
    if (e instanceof TypelensError) {
      console.error(`typelens: ${e.message}`);
      return 1;
    }
    console.error(`typelens: internal error: ${(e as Error).stack ?? e}`);
    return 70;
  }
}
