// An ActivationCache on disk: one safetensors file, read back tensor by tensor. The format is the
// safetensors one (what TL users save caches with via safetensors.torch.save_file); the metadata
// records what a loaded cache needs without its model.
import { TypelensError } from '../errors.js';
import { forEachOffset, Tensor } from '../tensor/tensor.js';
import type { DType } from '../tensor/dtype.js';
import {
  openSafetensors,
  serializeSafetensors,
  type StDType,
  type StFile,
  type StTensorOut,
} from '../tensor/safetensors.js';
import { writeFileAtomic } from '../util/fs.js';
import { typelensVersion } from '../util/version.js';

/** What the `__metadata__` of a saved cache holds (every value a string, as safetensors requires). */
export const CACHE_FORMAT = 'typelens.activation_cache.v1';

/**
 * A name -> tensor map whose entries may be loaded on first use (a loaded cache's): `has`, `keys`
 * and `size` never read a tensor; `get` reads one; `values`/`entries`/iteration read them all.
 * Entries keep the file's order; entries added later (computed head results) follow.
 */
export class LazyTensorMap extends Map<string, Tensor> {
  private names!: Set<string>;
  private loaders!: Map<string, () => Tensor>;

  static of(loaders: Iterable<[string, () => Tensor]>): LazyTensorMap {
    const m = new LazyTensorMap();
    m.names = new Set();
    m.loaders = new Map();
    for (const [k, f] of loaders) {
      m.names.add(k);
      m.loaders.set(k, f);
    }
    return m;
  }
  /** Whether this entry has been read from the file (or set) already. */
  isLoaded(k: string): boolean {
    return super.has(k);
  }
  override get(k: string): Tensor | undefined {
    let t = super.get(k);
    if (t) return t;
    const f = this.loaders.get(k);
    if (!f) return undefined;
    t = f();
    super.set(k, t);
    this.loaders.delete(k);
    return t;
  }
  override has(k: string): boolean {
    return this.names.has(k);
  }
  override set(k: string, v: Tensor): this {
    // before LazyTensorMap.of has run (Map's constructor) there is nothing to track
    if (this.names) {
      this.names.add(k);
      this.loaders.delete(k);
    }
    return super.set(k, v);
  }
  override delete(k: string): boolean {
    this.loaders.delete(k);
    const had = this.names.delete(k);
    super.delete(k);
    return had;
  }
  override clear(): void {
    this.names.clear();
    this.loaders.clear();
    super.clear();
  }
  override get size(): number {
    return this.names.size;
  }
  override *keys(): MapIterator<string> {
    yield* this.names;
  }
  override *values(): MapIterator<Tensor> {
    for (const k of this.names) yield this.get(k)!;
  }
  override *entries(): MapIterator<[string, Tensor]> {
    for (const k of this.names) yield [k, this.get(k)!];
  }
  override [Symbol.iterator](): MapIterator<[string, Tensor]> {
    return this.entries();
  }
  override forEach(fn: (v: Tensor, k: string, m: Map<string, Tensor>) => void, thisArg?: unknown): void {
    for (const [k, v] of this.entries()) fn.call(thisArg, v, k, this);
  }
}

const ST_DTYPE: Record<DType, StDType> = { f32: 'F32', f16: 'F16', bf16: 'BF16' };

/** A tensor's stored elements, contiguous, in its own storage dtype (f16/bf16 bits as they are: a bit-exact save). */
export function rawTensor(t: Tensor): StTensorOut {
  if (t.dtype === 'f32') return { dtype: 'F32', shape: t.shape, data: t.f32() };
  const src = t.data as Uint16Array;
  let data: Uint16Array;
  if (t.isContiguous()) data = src.subarray(t.offset, t.offset + t.size);
  else {
    data = new Uint16Array(t.size);
    let i = 0;
    forEachOffset(t.shape, t.strides, t.offset, (o) => {
      data[i++] = src[o];
    });
  }
  return { dtype: ST_DTYPE[t.dtype], shape: t.shape, data };
}

/** Read one tensor of a file as typelens stores it: F32 as f32, F16/BF16 kept as half bits, F64 narrowed. */
export function readTensor(f: StFile, name: string): Tensor {
  const e = f.entries.get(name)!;
  const raw = f.bytes(name);
  const bytes = raw.byteOffset % 8 === 0 ? raw : new Uint8Array(raw); // typed views need alignment
  const n = e.shape.reduce((a, b) => a * b, 1);
  switch (e.dtype) {
    case 'F32':
      return new Tensor(new Float32Array(bytes.buffer, bytes.byteOffset, n), e.shape);
    case 'F16':
      return new Tensor(new Uint16Array(bytes.buffer, bytes.byteOffset, n), e.shape, undefined, 0, 'f16');
    case 'BF16':
      return new Tensor(new Uint16Array(bytes.buffer, bytes.byteOffset, n), e.shape, undefined, 0, 'bf16');
    case 'F64':
      return new Tensor(Float32Array.from(new Float64Array(bytes.buffer, bytes.byteOffset, n)), e.shape);
  }
}

export interface SavedCacheInfo {
  /** The model's config as saved (all of it: a HookedTransformer's ModelConfig). */
  cfg: Record<string, unknown> & { n_layers: number; n_heads: number; d_mlp: number };
  tokens?: Tensor;
  hookNames: string[];
  hasBatchDim: boolean;
  version: string;
}

/**
 * Write a cache's tensors (and any extra tensors, e.g. the logits) to one safetensors file,
 * atomically. The metadata records the format, the model's config, the token ids, the hook
 * names (the cache's entries; extra tensors are not among them), the batch axis and typelens's version.
 */
export function writeCacheFile(
  path: string,
  entries: Iterable<[string, Tensor]>,
  info: Omit<SavedCacheInfo, 'version' | 'hookNames'>,
  extra: Record<string, Tensor> = {},
): void {
  const tensors: Record<string, StTensorOut> = {};
  const hookNames: string[] = [];
  for (const [k, t] of entries) {
    tensors[k] = rawTensor(t);
    hookNames.push(k);
  }
  for (const [k, t] of Object.entries(extra)) {
    if (k in tensors)
      throw new TypelensError(`cannot save extra tensor "${k}": the cache has an entry of that name`, 'EINVAL');
    tensors[k] = rawTensor(t);
  }
  const metadata: Record<string, string> = {
    format: CACHE_FORMAT,
    typelens_version: typelensVersion(),
    model_config: JSON.stringify(info.cfg),
    hook_names: JSON.stringify(hookNames),
    has_batch_dim: String(info.hasBatchDim),
  };
  if (info.tokens) metadata.tokens = JSON.stringify({ shape: info.tokens.shape, ids: info.tokens.toArray() });
  writeFileAtomic(path, serializeSafetensors(tensors, metadata), { createDir: false });
}

/**
 * Open a saved cache: its metadata and a lazy map of its hook tensors (plus one of any other
 * tensors, e.g. `typelens run --out`'s logits). Files without typelens metadata (older
 * `typelens run --out` files, or any safetensors of activations) are read with every tensor but
 * `logits` as a hook and the sizes inferred from the names and shapes.
 */
export function openCacheFile(path: string): {
  file: StFile & { close(): void };
  info: Omit<SavedCacheInfo, 'cfg'> & { cfg?: SavedCacheInfo['cfg'] };
  dict: LazyTensorMap;
  extra: LazyTensorMap;
} {
  const file = openSafetensors(path);
  try {
    const md = file.metadata;
    const bad = (what: string): never => {
      throw new TypelensError(
        `${path}: metadata "${what}" is not valid (${JSON.stringify(md[what])?.slice(0, 80)})`,
        'EFORMAT',
      );
    };
    const json = <T>(k: string): T | undefined => {
      if (md[k] === undefined) return undefined;
      try {
        return JSON.parse(md[k]) as T;
      } catch {
        return bad(k);
      }
    };
    const hookNames = json<string[]>('hook_names') ?? [...file.entries.keys()].filter((k) => k !== 'logits');
    if (!Array.isArray(hookNames) || !hookNames.every((k) => typeof k === 'string')) bad('hook_names');
    for (const k of hookNames)
      if (!file.entries.has(k))
        throw new TypelensError(`${path}: hook "${k}" is listed in the metadata but has no tensor`, 'EFORMAT');
    const cfg = json<SavedCacheInfo['cfg']>('model_config');
    if (cfg !== undefined && (typeof cfg !== 'object' || !Number.isInteger(cfg.n_layers))) bad('model_config');
    const tk = json<{ shape: number[]; ids: number[] }>('tokens');
    let tokens: Tensor | undefined;
    if (tk !== undefined) {
      try {
        tokens = Tensor.from(tk.ids, tk.shape);
      } catch {
        bad('tokens');
      }
    }
    const hasBatchDim = md.has_batch_dim === undefined ? true : md.has_batch_dim === 'true';
    const load = (k: string) => (): Tensor => readTensor(file, k);
    const dict = LazyTensorMap.of(hookNames.map((k) => [k, load(k)] as [string, () => Tensor]));
    const hooks = new Set(hookNames);
    const extra = LazyTensorMap.of(
      [...file.entries.keys()].filter((k) => !hooks.has(k)).map((k) => [k, load(k)] as [string, () => Tensor]),
    );
    return {
      file,
      info: { cfg, tokens, hookNames, hasBatchDim, version: md.typelens_version ?? 'unknown' },
      dict,
      extra,
    };
  } catch (e) {
    file.close();
    throw e;
  }
}

/** Sizes of a cache saved without its config: n_layers from the block names, n_heads and d_mlp from shapes. */
export function inferDims(file: StFile, names: string[]): SavedCacheInfo['cfg'] {
  let L = 0,
    H = 0,
    F = 0;
  for (const k of names) {
    const m = /^blocks\.(\d+)\./.exec(k);
    if (m) L = Math.max(L, Number(m[1]) + 1);
    const s = file.entries.get(k)!.shape;
    if (/attn\.hook_(pattern|attn_scores)$/.test(k) && s.length >= 3) H = s[s.length - 3];
    else if (/attn\.hook_[qkvz]$/.test(k) && s.length >= 2) H = s[s.length - 2];
    if (/mlp\.hook_(pre|post)$/.test(k)) F = s[s.length - 1];
  }
  return { n_layers: L, n_heads: H, d_mlp: F };
}
