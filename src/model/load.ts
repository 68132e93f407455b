// Reading a model: checkpoint folders (config.json + model.safetensors), in-memory HF tensors,
// and TL's from_pretrained names. Each returns TL-layout weights, processed; packing is the model's.
import { TypelensError } from '../errors.js';
import type { Backend, BackendName } from '../kernels/index.js';
import type { ByteSource } from '../platform/byte-source.js';
import { memorySource, sourceText } from '../platform/byte-source.js';
import { runtimeConfig } from '../platform/env.js';
import { fileExists, fileSource, joinPath, resolvePath } from '../platform/files.js';
import type { DType } from '../tensor/index.js';
import { configFromHF, ModelConfig } from './config.js';
import { checkFitsBackend } from './memory-plan.js';
import { DEFAULT_PROCESSING, processWeights, ProcessingOptions, refactorThreads } from './process.js';
import { openSafetensorsSource, safetensorsFromTensors, StFile, StLazyFile, StTensorOut } from './safetensors.js';
import { openShardedSafetensors, SHARD_INDEX } from '../tensor/safetensors-sharded.js';
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
 * A checkpoint's files by name: config.json plus model.safetensors, or HF's sharded
 * model.safetensors.index.json and the shards it names. A folder on disk, buffers in memory or
 * files fetched from a URL all look like this to the loader.
 */
export interface CheckpointFiles {
  /** How messages name the checkpoint (a folder, a URL, "<memory>"). */
  where: string;
  /** The named file's bytes, or undefined when the checkpoint has no such file. */
  open(name: string): ByteSource | undefined;
}

/** The files of a checkpoint folder on disk (each opened for ranged reads when asked for). */
export function dirFiles(dir: string): CheckpointFiles {
  return {
    where: dir,
    open: (name) => (fileExists(joinPath(dir, name)) ? fileSource(joinPath(dir, name)) : undefined),
  };
}

/** Files given as bytes (ArrayBuffer, typed array, ByteSource) or, for JSON files, text. */
export type FileContents = ByteSource | ArrayBuffer | ArrayBufferView | string;

/** In-memory files by name (what a browser has after reading Files or fetching URLs). */
export function memoryFiles(files: Record<string, FileContents>, where = '<memory>'): CheckpointFiles {
  return {
    where,
    open(name) {
      const f = files[name];
      if (f === undefined) return undefined;
      const label = where === '<memory>' ? name : `${where}/${name}`;
      if (typeof f === 'string') return memorySource(new TextEncoder().encode(f), label);
      if (f instanceof ArrayBuffer || ArrayBuffer.isView(f)) return memorySource(f, label);
      return f;
    },
  };
}

const WEIGHTS_FILE = 'model.safetensors';

/** The checkpoint's HF config, parsed. */
export function readHFConfig(files: CheckpointFiles): { hf: Record<string, unknown>; path: string } {
  const src = files.open('config.json');
  const path = src?.name ?? `${files.where}/config.json`;
  if (!src)
    throw new TypelensError(
      `${path} not found (a GPT-2 checkpoint needs config.json and model.safetensors or ${SHARD_INDEX})`,
      'ENOENT',
    );
  try {
    const hf = JSON.parse(sourceText(src)) as unknown;
    if (typeof hf !== 'object' || hf === null || Array.isArray(hf)) throw new Error('not a JSON object');
    return { hf: hf as Record<string, unknown>, path };
  } catch (e) {
    throw new TypelensError(`${path}: not valid JSON (${(e as Error).message})`, 'ECONFIG');
  } finally {
    src.close?.();
  }
}

/** The checkpoint's tensors: model.safetensors, else the shards its index names (headers read, data lazily). */
export function openCheckpointTensors(files: CheckpointFiles): StLazyFile {
  const single = files.open(WEIGHTS_FILE);
  if (single) {
    try {
      return openSafetensorsSource(single);
    } catch (e) {
      single.close?.();
      throw e;
    }
  }
  const index = files.open(SHARD_INDEX);
  if (!index)
    throw new TypelensError(
      `${files.where}/${WEIGHTS_FILE} not found, nor ${SHARD_INDEX} (a GPT-2 checkpoint needs config.json and one of them)`,
      'ENOENT',
    );
  const text = sourceText(index);
  index.close?.();
  return openShardedSafetensors(text, index.name, (file) => {
    const src = files.open(file);
    if (!src) throw new TypelensError(`${index.name}: shard ${file} not found beside it (${files.where})`, 'ENOENT');
    return src;
  });
}

/**
 * A GPT-2-shaped HF checkpoint, converted and processed, from any CheckpointFiles. `onProgress`
 * is what the packing step should report through (its units follow reading and processing).
 */
export function loadCheckpoint(
  files: CheckpointFiles,
  opts: LoadOptions,
): { cfg: ModelConfig; weights: Weights; onProgress?: (done: number, total: number) => void } {
  const { hf, path } = readHFConfig(files);
  const cfg = configFromHF(hf, path, (hf._name_or_path as string) ?? files.where);
  checkFitsBackend(cfg, opts.dtype ?? 'f32', opts.backend, files.where);
  const L = cfg.n_layers,
    total = 2 * L + 2,
    tick = opts.onProgress;
  tick?.(0, total);
  const processing = { ...DEFAULT_PROCESSING, ...pick(opts) };
  // the refactor's threads start before the read, so they have booted when it needs them
  const threads = processing.refactorFactoredAttnMatrices ? refactorThreads(cfg) : undefined;
  let weights: Weights;
  try {
    const st = openCheckpointTensors(files);
    try {
      weights = convertGPT2(st, cfg, { allowNonFinite: opts.allowNonFinite });
    } finally {
      st.close();
    }
    tick?.(1, total);
    processWeights(weights, cfg, processing, (l) => tick?.(1 + l, total), threads);
  } finally {
    threads?.close();
  }
  tick?.(1 + L, total);
  return { cfg, weights, onProgress: tick && ((d) => tick(1 + L + d, total)) };
}

/** A GPT-2-shaped HF checkpoint folder (see loadCheckpoint). */
export function loadDir(
  dir: string,
  opts: LoadOptions,
): { cfg: ModelConfig; weights: Weights; onProgress?: (done: number, total: number) => void } {
  return loadCheckpoint(dirFiles(dir), opts);
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
  const d = dir ?? runtimeConfig().weightsDir ?? resolvePath('weights', canonical);
  if (!fileExists(joinPath(d, WEIGHTS_FILE)) && !fileExists(joinPath(d, SHARD_INDEX))) {
    throw new TypelensError(
      `${canonical} weights not found in ${d}: put HuggingFace's config.json + model.safetensors there ` +
        `(\`npx typelens fetch-weights ${canonical}\` once it lands), or point TYPELENS_WEIGHTS at such a folder`,
      'ENOENT',
    );
  }
  return d;
}
