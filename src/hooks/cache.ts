import { TypelensError } from '../errors.js';
import { Tensor } from '../tensor/index.js';
import * as d from './cache-decompose.js';
import type { CacheKey, CacheModel, Labelled, LnOpts } from './cache-decompose.js';
import { bytesPerElement } from '../tensor/dtype.js';
import { inferDims, LazyTensorMap, openCacheFile, writeCacheFile } from './cache-file.js';
import { getActName } from './names.js';
import { Slice, SliceInput } from './slice.js';

export type { CacheKey, CacheModel, CacheLike, Labelled, LnOpts } from './cache-decompose.js';

/**
 * TransformerLens's ActivationCache (activation_cache.py): a name -> activation map in firing order, plus
 * the decomposition helpers. `layer = -1 / null` means "the final LayerNorm" in the helpers
 * (n_layers), while `get(['resid_post', -1])` means the last block, as in TL.
 */
export class ActivationCache {
  /** Where TL's informational messages go ("Tried to stack head results ..."). */
  log: (line: string) => void = (line) => console.log(line);

  /** The input token ids [B, P] of the run that filled this cache (runWithCache records them; save keeps them). */
  tokens?: Tensor;
  /** A loaded cache's other tensors (e.g. `typelens run --out`'s `logits`), read on first use. */
  extra: Map<string, Tensor> = new Map();
  /** The file a cache loaded without its model came from (its model-needing methods then refuse). */
  private detachedFrom?: string;

  constructor(
    readonly cacheDict: Map<string, Tensor>,
    readonly model: CacheModel,
    public hasBatchDim = true,
  ) {}

  // ---------- a Map's views (TL's keys / values / items / __iter__) ----------
  values(): Tensor[] {
    return [...this.cacheDict.values()];
  }
  items(): [string, Tensor][] {
    return [...this.cacheDict.entries()];
  }
  /** [name, activation] pairs in firing order, as a JS Map iterates (TL's __iter__ yields the names: use keys()). */
  *[Symbol.iterator](): IterableIterator<[string, Tensor]> {
    yield* this.cacheDict.entries();
  }

  /**
   * TL's apply_slice_to_batch_dim: a new cache with every activation sliced on the batch axis
   * (views, no copy); an int removes the axis. The identity slice returns this cache.
   */
  applySliceToBatchDim(batchSlice: SliceInput): ActivationCache {
    const s = new Slice(batchSlice);
    if (s.mode === 'identity') return this;
    if (!this.hasBatchDim) throw new TypelensError('Cannot index into a cache without a batch dim', 'ESHAPE');
    const dict = new Map<string, Tensor>();
    for (const [k, t] of this.cacheDict) dict.set(k, s.apply(t, 0));
    const out = new ActivationCache(dict, this.model, s.mode !== 'int');
    out.log = this.log;
    out.detachedFrom = this.detachedFrom;
    if (this.tokens) out.tokens = s.mode === 'int' ? s.apply(this.tokens, 0).unsqueeze(0) : s.apply(this.tokens, 0);
    return out;
  }

  /** Bytes the cached activations hold (their storage dtype's size x elements). Reads a loaded cache's tensors' headers only. */
  get nbytes(): number {
    let n = 0;
    for (const k of this.cacheDict.keys()) n += this.sizeOf(k).bytes;
    return n;
  }

  private sizeOf(k: string): { shape: readonly number[]; dtype: string; bytes: number } {
    const lazy =
      this.cacheDict instanceof LazyTensorMap && !this.cacheDict.isLoaded(k) ? this.fileEntries?.get(k) : undefined;
    if (lazy) {
      const dtype = lazy.dtype === 'F16' ? 'f16' : lazy.dtype === 'BF16' ? 'bf16' : 'f32';
      return { shape: lazy.shape, dtype, bytes: lazy.shape.reduce((a, b) => a * b, 1) * bytesPerElement(dtype) };
    }
    const t = this.cacheDict.get(k)!;
    return { shape: t.shape, dtype: t.dtype, bytes: t.size * bytesPerElement(t.dtype) };
  }
  private fileEntries?: Map<string, { dtype: string; shape: number[] }>;

  /** A summary: how many activations and bytes, then one line per activation (name, shape, dtype, bytes). TL's __repr__ lists the keys. */
  toString(): string {
    const rows = this.keys().map((k) => ({ k, ...this.sizeOf(k) }));
    const total = rows.reduce((a, r) => a + r.bytes, 0);
    const from = this.detachedFrom ? `, loaded from ${this.detachedFrom}` : '';
    return [
      `ActivationCache with ${rows.length} activations, ${fmtBytes(total)}${this.hasBatchDim ? '' : ', batch dim removed'}${from}`,
      ...rows.map((r) => `  ${r.k} [${r.shape.join(', ')}] ${r.dtype} ${fmtBytes(r.bytes)}`),
    ].join('\n');
  }

  // ---------- on disk ----------
  /**
   * Write this cache to one safetensors file, atomically (temp file + rename). The metadata
   * records the model's config, the token ids, the hook names and typelens's version; the tensors
   * keep their storage dtype bit for bit (f16/bf16 caches stay half size). `extra` tensors (e.g.
   * the logits) are saved beside the activations and come back in a loaded cache's `extra`.
   */
  save(path: string, extra: Record<string, Tensor> = {}): void {
    writeCacheFile(
      path,
      this.cacheDict.entries(),
      {
        cfg: { ...(this.model.cfg as CacheModel['cfg'] & Record<string, unknown>) },
        tokens: this.tokens,
        hasBatchDim: this.hasBatchDim,
      },
      extra,
    );
  }

  /**
   * Read a cache saved by `save` (or by `typelens run --out`). Only the header is read now; each
   * activation is read from the file on first use. Everything that needs only activations works
   * without the model; what needs weights (computeHeadResults, getNeuronResults, logitAttrs, ...)
   * needs `model` (checked against the saved config) and otherwise throws a TypelensError saying so.
   */
  static load(path: string, model?: CacheModel): ActivationCache {
    const { file, info, dict, extra } = openCacheFile(path);
    const cfg = info.cfg ?? (model ? model.cfg : inferDims(file, info.hookNames));
    if (model && info.cfg) {
      for (const k of ['n_layers', 'n_heads', 'd_mlp', 'd_model', 'd_head', 'd_vocab'] as const) {
        const want = (info.cfg as Record<string, unknown>)[k],
          got = (model.cfg as unknown as Record<string, unknown>)[k];
        if (want !== undefined && got !== undefined && want !== got) {
          file.close();
          throw new TypelensError(
            `${path} was saved from a model with ${k} = ${want}, but the model passed has ${k} = ${got}`,
            'ECONFIG',
          );
        }
      }
    }
    const cache = new ActivationCache(dict, model ?? detachedModel(cfg, path), info.hasBatchDim);
    if (!model) cache.detachedFrom = path;
    cache.tokens = info.tokens;
    cache.extra = extra;
    cache.fileEntries = file.entries;
    cache.file = file;
    return cache;
  }
  private file?: { close(): void };

  /** Close a loaded cache's file (activations not read yet can no longer be read); also done at garbage collection. */
  close(): void {
    this.file?.close();
  }

  /** Refuse a model-needing method on a cache loaded without its model, naming what to pass. @internal */
  requireModel(method: string, what: string): void {
    if (this.detachedFrom) {
      throw new TypelensError(
        `${method} needs the model's ${what}, and this cache was loaded from ${this.detachedFrom} without a model: ` +
          `load it with ActivationCache.load(path, model)`,
        'ENOMODEL',
      );
    }
  }

  get hasEmbed(): boolean {
    return this.cacheDict.has('hook_embed');
  }
  get hasPosEmbed(): boolean {
    return this.cacheDict.has('hook_pos_embed');
  }
  keys(): string[] {
    return [...this.cacheDict.keys()];
  }
  get size(): number {
    return this.cacheDict.size;
  }
  has(key: CacheKey): boolean {
    try {
      this.get(key);
      return true;
    } catch {
      return false;
    }
  }

  get(key: CacheKey): Tensor {
    let name: string;
    if (typeof key === 'string') name = this.cacheDict.has(key) ? key : getActName(key);
    else {
      let [n, layer, type] = key;
      if (layer != null && layer < 0) layer = this.model.cfg.n_layers + layer;
      name = getActName(n, layer, type);
    }
    const t = this.cacheDict.get(name);
    if (!t)
      throw new TypelensError(`"${name}" is not in the cache${this.cacheDict.size ? '' : ' (it is empty)'}`, 'EKEY');
    return t;
  }

  removeBatchDim(): this {
    if (!this.hasBatchDim) {
      console.warn('Tried removing batch dimension after already having removed it.');
      return this;
    }
    const vals = [...this.cacheDict.values()];
    if (!vals.some((t) => t.shape[0] === 1) && vals.some((t) => t.ndim > 0 && t.shape[0] > 1)) {
      throw new TypelensError('cannot remove the batch dimension: the batch size is not 1', 'ESHAPE');
    }
    for (const [k, t] of this.cacheDict) if (t.ndim > 0 && t.shape[0] === 1) this.cacheDict.set(k, t.index(0, 0));
    this.hasBatchDim = false;
    return this;
  }

  /** Divide a residual stack by the LayerNorm scale of `layer` (-1 / null: ln_final), after centring. */
  applyLnToStack(residualStack: Tensor, opts: LnOpts = {}): Tensor {
    return d.applyLnToStack(this, residualStack, opts);
  }

  accumulatedResid(opts: d.AccumulatedResidOptions & { returnLabels: true }): Labelled;
  accumulatedResid(opts?: d.AccumulatedResidOptions & { returnLabels?: false }): Tensor;
  accumulatedResid(opts: d.AccumulatedResidOptions = {}): Tensor | Labelled {
    return d.accumulatedResid(this, opts);
  }

  decomposeResid(opts: d.DecomposeResidOptions & { returnLabels: true }): Labelled;
  decomposeResid(opts?: d.DecomposeResidOptions & { returnLabels?: false }): Tensor;
  decomposeResid(opts: d.DecomposeResidOptions = {}): Tensor | Labelled {
    return d.decomposeResid(this, opts);
  }

  /** result[..., h, :] = z[..., h, :] @ W_O[h] for every layer (no b_O), stored as attn.hook_result. */
  computeHeadResults(): void {
    d.computeHeadResults(this);
  }

  stackHeadResults(opts: {
    layer?: number | null;
    returnLabels: true;
    inclRemainder?: boolean;
    posSlice?: SliceInput;
    applyLn?: boolean;
  }): Labelled;
  stackHeadResults(opts?: {
    layer?: number | null;
    returnLabels?: false;
    inclRemainder?: boolean;
    posSlice?: SliceInput;
    applyLn?: boolean;
  }): Tensor;
  stackHeadResults(
    opts: {
      layer?: number | null;
      returnLabels?: boolean;
      inclRemainder?: boolean;
      posSlice?: SliceInput;
      applyLn?: boolean;
    } = {},
  ): Tensor | Labelled {
    return d.stackHeadResults(this, opts);
  }

  /** post[..., n] * W_out[n, :] -> [B, (P), F', M] (no b_out). */
  getNeuronResults(layer: number, neuronSlice?: SliceInput, posSlice?: SliceInput): Tensor {
    return d.getNeuronResults(this, layer, neuronSlice, posSlice);
  }

  stackNeuronResults(
    layer: number,
    opts: {
      posSlice?: SliceInput;
      neuronSlice?: SliceInput;
      returnLabels?: boolean;
      inclRemainder?: boolean;
      applyLn?: boolean;
    } = {},
  ): Tensor | Labelled {
    return d.stackNeuronResults(this, layer, opts);
  }

  stackActivation(name: string, layer: number | null = -1, sublayerType?: string): Tensor {
    return d.stackActivation(this, name, layer, sublayerType);
  }

  getFullResidDecomposition(
    opts: {
      layer?: number | null;
      mlpInput?: boolean;
      expandNeurons?: boolean;
      applyLn?: boolean;
      posSlice?: SliceInput;
      returnLabels?: boolean;
    } = {},
  ): Tensor | Labelled {
    return d.getFullResidDecomposition(this, opts);
  }

  /** Direct logit attribution of each component: (LN-scaled stack) . (W_U[:, tok] - W_U[:, wrong]). No b_U. */
  logitAttrs(
    residualStack: Tensor,
    tokens: number | string | Tensor | number[],
    opts: {
      incorrectTokens?: number | string | Tensor | number[];
      posSlice?: SliceInput;
      batchSlice?: SliceInput;
      hasBatchDim?: boolean;
    } = {},
  ): Tensor {
    return d.logitAttrs(this, residualStack, tokens, opts);
  }
}

const fmtBytes = (n: number): string =>
  n < 1024 ? `${n} B` : n < 2 ** 20 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 2 ** 20).toFixed(1)} MiB`;

/** A stand-in for the model of a cache loaded without one: its sizes, and errors for the rest (a backstop for requireModel). */
function detachedModel(cfg: CacheModel['cfg'], path: string): CacheModel {
  const need = (what: string): never => {
    throw new TypelensError(
      `this needs the model's ${what}, and this cache was loaded from ${path} without a model: load it with ActivationCache.load(path, model)`,
      'ENOMODEL',
    );
  };
  return {
    cfg,
    get backend(): never {
      return need('kernels');
    },
    get weights(): never {
      return need('weights');
    },
    accumulatedBias: () => need('biases'),
    tokensToResidualDirections: () => need('unembedding W_U'),
  };
}
