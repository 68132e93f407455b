// Reading a model: checkpoint folders (config.json + model.safetensors), in-memory HF tensors,
// and TL's from_pretrained names. Each returns TL-layout weights, processed; packing is the model's.
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { TypelensError } from '../errors.js';
import type { Backend, BackendName } from '../kernels/index.js';
import { runtimeConfig } from '../platform/env.js';
import type { DType } from '../tensor/index.js';
import { configFromHF, ModelConfig } from './config.js';
import { DEFAULT_PROCESSING, processWeights, ProcessingOptions } from './process.js';
import { readSafetensors, safetensorsFromTensors, StFile, StTensorOut } from './safetensors.js';
import { convertGPT2, Weights } from './weights.js';

export interface LoadOptions extends ProcessingOptions {
  /** Storage for the weights; activations are always f32. */
  dtype?: DType;
  backend?: BackendName | Backend;
  /** Load even when a weight holds NaN or Inf. */
  allowNonFinite?: boolean;
  /** Refuse caches larger than this many bytes before allocating them. */
  cacheBudgetBytes?: number;
  /** Loading progress: units done of total (reading, per-layer processing, per-layer packing). */
  onProgress?: (done: number, total: number) => void;
  /** From this many positions on, attention's per-head products run through the backend's matmul (default 32). */
  attnMatmulMinPos?: number;
}

const MODEL_ALIASES: Record<string, string> = { 'gpt2-small': 'gpt2-small', gpt2: 'gpt2-small' };

function pick(o: ProcessingOptions): ProcessingOptions {
  const r: ProcessingOptions = {};
  for (const k of [
    'foldLn',
    'centerWritingWeights',
    'centerUnembed',
    'foldValueBiases',
    'refactorFactoredAttnMatrices',
  ] as const)
    if (o[k] !== undefined) r[k] = o[k];
  return r;
}

/**
 * A GPT-2-shaped HF checkpoint folder, converted and processed. `onProgress` is what the
 * packing step should report through (its units follow reading and processing).
 */
export function loadDir(
  dir: string,
  opts: LoadOptions,
): { cfg: ModelConfig; weights: Weights; onProgress?: (done: number, total: number) => void } {
  const cfgPath = join(dir, 'config.json'),
    stPath = join(dir, 'model.safetensors');
  for (const p of [cfgPath, stPath]) {
    if (!existsSync(p))
      throw new TypelensError(
        `${p} not found (a GPT-2 checkpoint folder needs config.json and model.safetensors)`,
        'ENOENT',
      );
  }
  let hf: Record<string, unknown>;
  try {
    hf = JSON.parse(readFileSync(cfgPath, 'utf8'));
  } catch (e) {
    throw new TypelensError(`${cfgPath}: not valid JSON (${(e as Error).message})`, 'ECONFIG');
  }
  const cfg = configFromHF(hf, cfgPath, (hf._name_or_path as string) ?? dir);
  const L = cfg.n_layers,
    total = 2 * L + 2,
    tick = opts.onProgress;
  tick?.(0, total);
  const weights = convertGPT2(readSafetensors(stPath), cfg, { allowNonFinite: opts.allowNonFinite });
  tick?.(1, total);
  processWeights(weights, cfg, { ...DEFAULT_PROCESSING, ...pick(opts) }, (l) => tick?.(1 + l, total));
  tick?.(1 + L, total);
  return { cfg, weights, onProgress: tick && ((d) => tick(1 + L + d, total)) };
}

/** HF-layout tensors already in memory (generated models, tests), converted and processed. */
export function loadHFTensors(
  hf: Record<string, unknown>,
  tensors: Record<string, StTensorOut> | StFile,
  opts: LoadOptions,
): { cfg: ModelConfig; weights: Weights } {
  const cfg = configFromHF(hf, 'config', 'in-memory');
  const st =
    'entries' in tensors && tensors.entries instanceof Map
      ? (tensors as StFile)
      : safetensorsFromTensors(tensors as Record<string, StTensorOut>);
  const weights = convertGPT2(st, cfg, { allowNonFinite: opts.allowNonFinite });
  processWeights(weights, cfg, { ...DEFAULT_PROCESSING, ...pick(opts) });
  return { cfg, weights };
}

/** The folder TL's from_pretrained name reads: opts.dir, else $TYPELENS_WEIGHTS, else weights/<name>/. */
export function pretrainedDir(name: string, dir?: string): string {
  const canonical = MODEL_ALIASES[name];
  if (!canonical)
    throw new TypelensError(`unknown model "${name}" (known: ${Object.keys(MODEL_ALIASES).join(', ')})`, 'EMODEL');
  const d = dir ?? runtimeConfig().weightsDir ?? resolve('weights', canonical);
  if (!existsSync(join(d, 'model.safetensors'))) {
    throw new TypelensError(
      `${canonical} weights not found in ${d}: put HuggingFace's config.json + model.safetensors there ` +
        `(\`npx typelens fetch-weights ${canonical}\` once it lands), or point TYPELENS_WEIGHTS at such a folder`,
      'ENOENT',
    );
  }
  return d;
}
