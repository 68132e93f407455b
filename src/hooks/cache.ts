import { TypelensError } from '../errors.js';
import { cat, div, matmul, mean, mul, sameShape, stack, sub, sum, Tensor } from '../tensor/index.js';
import type { MatmulKernel } from '../tensor/linalg.js';
import { bytesPerElement } from '../tensor/dtype.js';
import { inferDims, LazyTensorMap, openCacheFile, writeCacheFile } from './cache-file.js';
import { getActName } from './names.js';
import { Slice, SliceInput } from './slice.js';

export type CacheKey = string | [string, (number | null)?, (string | null)?];
export type Labelled = [Tensor, string[]];

/**
 * What an ActivationCache needs from its model (TL's cache holds the model for the same few
 * things): sizes, the W_O / W_out it decomposes through, the biases and unembedding directions,
 * and the kernels to multiply with.
 */
export interface CacheModel {
  readonly cfg: { readonly n_layers: number; readonly n_heads: number; readonly d_mlp: number };
  readonly backend: MatmulKernel;
  readonly weights: { readonly blocks: readonly { readonly W_O: Tensor; readonly W_out: Tensor }[] };
  accumulatedBias(layer: number, mlpInput?: boolean, includeMlpBiases?: boolean): Tensor;
  tokensToResidualDirections(tokens: number | string | Tensor | number[]): Tensor;
}

export interface LnOpts {
  layer?: number | null;
  mlpInput?: boolean;
  posSlice?: SliceInput;
  batchSlice?: SliceInput;
  hasBatchDim?: boolean;
}

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

  /** Refuse a model-needing method on a cache loaded without its model, naming what to pass. */
  private requireModel(method: string, what: string): void {
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

  /** null / -1 -> n_layers; other negatives are an error, as in TL. */
  private finalLayer(layer: number | null | undefined, what: string): number {
    const L = this.model.cfg.n_layers;
    if (layer == null || layer === -1) return L;
    if (!Number.isInteger(layer) || layer < 0 || layer > L)
      throw new TypelensError(
        `${what}: layer ${layer} out of range (use 0..${L}, -1 or null for the final LN)`,
        'EKEY',
      );
    return layer;
  }

  applyLnToStack(residualStack: Tensor, opts: LnOpts = {}): Tensor {
    const layer = this.finalLayer(opts.layer, 'applyLnToStack');
    const hasBatch = opts.hasBatchDim ?? true;
    let x = residualStack;
    if (hasBatch && opts.batchSlice != null) x = new Slice(opts.batchSlice).apply(x, 1);
    x = sub(x, mean(x, -1, true));
    const L = this.model.cfg.n_layers;
    let scale =
      layer === L
        ? this.get('ln_final.hook_scale')
        : this.get(`blocks.${layer}.${opts.mlpInput ? 'ln2' : 'ln1'}.hook_scale`);
    scale = new Slice(opts.posSlice).apply(scale, -2);
    if (this.hasBatchDim && opts.batchSlice != null) scale = new Slice(opts.batchSlice).apply(scale, 0);
    return div(x, scale);
  }

  accumulatedResid(opts: {
    layer?: number | null;
    inclMid?: boolean;
    applyLn?: boolean;
    posSlice?: SliceInput;
    mlpInput?: boolean;
    returnLabels: true;
  }): Labelled;
  accumulatedResid(opts?: {
    layer?: number | null;
    inclMid?: boolean;
    applyLn?: boolean;
    posSlice?: SliceInput;
    mlpInput?: boolean;
    returnLabels?: false;
  }): Tensor;
  accumulatedResid(
    opts: {
      layer?: number | null;
      inclMid?: boolean;
      applyLn?: boolean;
      posSlice?: SliceInput;
      mlpInput?: boolean;
      returnLabels?: boolean;
    } = {},
  ): Tensor | Labelled {
    const layer = this.finalLayer(opts.layer, 'accumulatedResid');
    const L = this.model.cfg.n_layers;
    const parts: Tensor[] = [],
      labels: string[] = [];
    const ps = new Slice(opts.posSlice);
    for (let l = 0; l <= layer; l++) {
      if (l === L) {
        parts.push(this.get(`blocks.${L - 1}.hook_resid_post`));
        labels.push('final_post');
        continue;
      }
      parts.push(this.get(`blocks.${l}.hook_resid_pre`));
      labels.push(`${l}_pre`);
      if ((opts.inclMid && l < layer) || (opts.mlpInput && l === layer)) {
        parts.push(this.get(`blocks.${l}.hook_resid_mid`));
        labels.push(`${l}_mid`);
      }
    }
    let st = stack(parts.map((p) => ps.apply(p, -2)));
    if (opts.applyLn) st = this.applyLnToStack(st, { layer, posSlice: opts.posSlice, mlpInput: opts.mlpInput });
    return opts.returnLabels ? [st, labels] : st;
  }

  decomposeResid(opts: {
    layer?: number | null;
    mlpInput?: boolean;
    mode?: 'all' | 'attn' | 'mlp';
    applyLn?: boolean;
    posSlice?: SliceInput;
    inclEmbeds?: boolean;
    returnLabels: true;
  }): Labelled;
  decomposeResid(opts?: {
    layer?: number | null;
    mlpInput?: boolean;
    mode?: 'all' | 'attn' | 'mlp';
    applyLn?: boolean;
    posSlice?: SliceInput;
    inclEmbeds?: boolean;
    returnLabels?: false;
  }): Tensor;
  decomposeResid(
    opts: {
      layer?: number | null;
      mlpInput?: boolean;
      mode?: 'all' | 'attn' | 'mlp';
      applyLn?: boolean;
      posSlice?: SliceInput;
      inclEmbeds?: boolean;
      returnLabels?: boolean;
    } = {},
  ): Tensor | Labelled {
    const layer = this.finalLayer(opts.layer, 'decomposeResid');
    const mode = opts.mode ?? 'all';
    const ps = new Slice(opts.posSlice);
    const parts: Tensor[] = [],
      labels: string[] = [];
    if (opts.inclEmbeds ?? true) {
      if (this.hasEmbed) {
        parts.push(this.get('hook_embed'));
        labels.push('embed');
      }
      if (this.hasPosEmbed) {
        parts.push(this.get('hook_pos_embed'));
        labels.push('pos_embed');
      }
    }
    for (let l = 0; l < layer; l++) {
      if (mode !== 'mlp') {
        parts.push(this.get(`blocks.${l}.hook_attn_out`));
        labels.push(`${l}_attn_out`);
      }
      if (mode !== 'attn') {
        parts.push(this.get(`blocks.${l}.hook_mlp_out`));
        labels.push(`${l}_mlp_out`);
      }
    }
    if (opts.mlpInput && mode !== 'mlp') {
      parts.push(this.get(`blocks.${layer}.hook_attn_out`));
      labels.push(`${layer}_attn_out`);
    }
    let st = parts.length ? stack(parts.map((p) => ps.apply(p, -2))) : this.emptyLike(ps);
    if (opts.applyLn) st = this.applyLnToStack(st, { layer, posSlice: opts.posSlice, mlpInput: opts.mlpInput });
    return opts.returnLabels ? [st, labels] : st;
  }

  /** Append resid_post(layer - 1) minus the summed components (TL's "remainder" row, -1 wrapping included). */
  private withRemainder(st: Tensor, layer: number, ps: Slice, labels: string[]): Tensor {
    const resid = ps.apply(this.get(['resid_post', layer - 1]), -2);
    labels.push('remainder');
    return cat([st, sub(resid, sum(st, 0)).unsqueeze(0)], 0);
  }

  private emptyLike(ps: Slice): Tensor {
    const e = ps.apply(this.get('hook_embed'), -2);
    return Tensor.zeros([0, ...e.shape]);
  }

  /** result[..., h, :] = z[..., h, :] @ W_O[h] for every layer (no b_O), stored as attn.hook_result. */
  computeHeadResults(): void {
    const { n_layers: L, n_heads: H } = this.model.cfg;
    if (this.cacheDict.has('blocks.0.attn.hook_result')) {
      console.warn('Tried to compute head results when they were already cached');
      return;
    }
    this.requireModel('computeHeadResults', 'W_O');
    for (let l = 0; l < L; l++) {
      const z = this.get(`blocks.${l}.attn.hook_z`);
      const WO = this.model.weights.blocks[l].W_O;
      const heads = Array.from({ length: H }, (_, h) => matmul(z.index(-2, h), WO.index(0, h), this.model.backend));
      this.cacheDict.set(`blocks.${l}.attn.hook_result`, stack(heads, -2));
    }
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
    const layer = this.finalLayer(opts.layer, 'stackHeadResults');
    const H = this.model.cfg.n_heads;
    if (!this.cacheDict.has('blocks.0.attn.hook_result')) {
      this.requireModel('stackHeadResults', 'W_O (to compute the head results, which are not cached)');
      this.log("Tried to stack head results when they weren't cached. Computing head results now");
      this.computeHeadResults();
    }
    const ps = new Slice(opts.posSlice);
    const labels: string[] = [];
    const per: Tensor[] = [];
    for (let l = 0; l < layer; l++) {
      per.push(ps.apply(this.get(`blocks.${l}.attn.hook_result`), -3));
      for (let h = 0; h < H; h++) labels.push(`L${l}H${h}`);
    }
    let st: Tensor;
    if (per.length) {
      st = toFront(cat(per, -2), -2).contiguous(); // [..., layer*H, M] -> [layer*H, ..., M]
    } else st = this.emptyLike(ps);
    if (opts.inclRemainder) st = this.withRemainder(st, layer, ps, labels);
    if (opts.applyLn) st = this.applyLnToStack(st, { layer, posSlice: opts.posSlice });
    return opts.returnLabels ? [st, labels] : st;
  }

  /** post[..., n] * W_out[n, :] -> [B, (P), F', M] (no b_out). */
  getNeuronResults(layer: number, neuronSlice?: SliceInput, posSlice?: SliceInput): Tensor {
    this.requireModel('getNeuronResults', 'W_out');
    const post = new Slice(neuronSlice).apply(
      new Slice(posSlice).apply(this.get(`blocks.${layer}.mlp.hook_post`), -2),
      -1,
    );
    const Wout = new Slice(neuronSlice).apply(this.model.weights.blocks[layer].W_out, 0);
    return mul(post.unsqueeze(-1), Wout);
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
    const lyr = this.finalLayer(layer, 'stackNeuronResults');
    const ps = new Slice(opts.posSlice);
    const per: Tensor[] = [],
      labels: string[] = [];
    const idx = new Slice(opts.neuronSlice).indices(this.model.cfg.d_mlp);
    for (let l = 0; l < lyr; l++) {
      const r = this.getNeuronResults(l, opts.neuronSlice, opts.posSlice);
      per.push(toFront(r, -2));
      for (const n of idx) labels.push(`L${l}N${n}`);
    }
    let st = per.length ? cat(per, 0) : this.emptyLike(ps);
    if (opts.inclRemainder) st = this.withRemainder(st, lyr, ps, labels);
    if (opts.applyLn) st = this.applyLnToStack(st, { layer: lyr, posSlice: opts.posSlice });
    return opts.returnLabels ? [st, labels] : st;
  }

  stackActivation(name: string, layer: number | null = -1, sublayerType?: string): Tensor {
    const lyr = this.finalLayer(layer, 'stackActivation');
    return stack(Array.from({ length: lyr }, (_, l) => this.get([name, l, sublayerType ?? null])));
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
    const layer = this.finalLayer(opts.layer, 'getFullResidDecomposition');
    this.requireModel('getFullResidDecomposition', 'W_O, W_out and biases');
    const ps = new Slice(opts.posSlice);
    const expand = opts.expandNeurons ?? true;
    const [heads, hl] = this.stackHeadResults({
      layer: layer + (opts.mlpInput ? 1 : 0),
      posSlice: opts.posSlice,
      returnLabels: true,
    });
    const parts = [heads],
      labels = [...hl];
    if (layer > 0) {
      const [mlp, ml] = expand
        ? (this.stackNeuronResults(layer, { posSlice: opts.posSlice, returnLabels: true }) as Labelled)
        : this.decomposeResid({ layer, mode: 'mlp', inclEmbeds: false, posSlice: opts.posSlice, returnLabels: true });
      parts.push(mlp);
      labels.push(...ml);
    }
    const embed = ps.apply(this.get('hook_embed'), -2),
      pos = ps.apply(this.get('hook_pos_embed'), -2);
    parts.push(embed.unsqueeze(0), pos.unsqueeze(0));
    labels.push('embed', 'pos_embed');
    const bias = this.model.accumulatedBias(layer, opts.mlpInput, expand).expand(embed.shape).unsqueeze(0);
    parts.push(bias);
    labels.push('bias');
    let st = cat(
      parts.map((p) => p.contiguous()),
      0,
    );
    if (opts.applyLn) st = this.applyLnToStack(st, { layer, posSlice: opts.posSlice, mlpInput: opts.mlpInput });
    return opts.returnLabels ? [st, labels] : st;
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
    this.requireModel('logitAttrs', 'unembedding W_U');
    let dirs = this.model.tokensToResidualDirections(tokens);
    if (opts.incorrectTokens !== undefined) {
      const wrong = this.model.tokensToResidualDirections(opts.incorrectTokens);
      if (!sameShape(wrong.shape, dirs.shape)) {
        throw new TypelensError(
          `tokens and incorrectTokens have different shapes ([${dirs.shape.slice(0, -1).join(', ')}] vs [${wrong.shape.slice(0, -1).join(', ')}])`,
          'ESHAPE',
        );
      }
      dirs = sub(dirs, wrong);
    }
    const scaled = this.applyLnToStack(residualStack, {
      layer: -1,
      posSlice: opts.posSlice,
      batchSlice: opts.batchSlice,
      hasBatchDim: opts.hasBatchDim,
    });
    return sum(mul(scaled, dirs), -1);
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

/** Move one axis to the front (a view). */
function toFront(t: Tensor, axis: number): Tensor {
  const a = axis < 0 ? axis + t.ndim : axis;
  return t.permute(a, ...[...Array(t.ndim).keys()].filter((d) => d !== a));
}
