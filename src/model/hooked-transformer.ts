import * as ag from '../autograd/ops.js';
import { TypelensError } from '../errors.js';
import { Backend, BackendName, getBackend, LayerOps } from '../kernels/index.js';
import { cat, DType, Tensor } from '../tensor/index.js';
import { ActivationCache } from '../hooks/cache.js';
import { GradMetric, HookedRootModule } from '../hooks/registry.js';
import type { ModelConfig } from './config.js';
import { generate, GenerateOptions } from './generate.js';
import {
  backward,
  BackwardOptions,
  BackwardResult,
  gradLayerOps,
  gradPackCache,
  namedParameters,
} from './gradients.js';
import { forwardPass } from './forward.js';
import type { PaddingSide } from './padding.js';
import type { FactoredMatrix } from '../tensor/factored-matrix.js';
import { allCompositionScores, ovCircuit, qkCircuit } from './circuits.js';
import { hostOps } from './host-ops.js';
import type { CacheOptions, RunOptions } from './run-options.js';
import { UseSwitches } from './use-switches.js';
import { loadDir, loadHFTensors, LoadOptions, pretrainedDir } from './load.js';
import { CheckpointFiles, FileContents, loadCheckpoint, memoryFiles } from './load.js';
import { AsyncFileContents, fetchCheckpointFiles, FileProgress, readFilesAsync } from './load-sources.js';
import { PackedModel, packWeights, releasePacked, shareEmbeddings } from './packed.js';
import type { StFile, StTensorOut } from './safetensors.js';
import { decodeToken, toTokens } from './tokenizer.js';
import * as tok from './token-helpers.js';
import { tokensOf, TokensInput } from './tokens-input.js';
import type { Weights } from './weights.js';
import {
  loadAndProcessStateDict,
  loadStateDict,
  processWeights_,
  setWeight,
  stateDict,
  StateDict,
  updateWeights,
} from './editing.js';
import { paramSlots, WeightGuard } from './params.js';
import { DEFAULT_PROCESSING, ProcessingOptions } from './process.js';
import { initWeights, InitOptions } from './init.js';
import * as wv from './weight-views.js';

export type { LoadOptions } from './load.js';
export type { TokensInput } from './tokens-input.js';
export type { GenerateOptions, SampleOptions } from './generate.js';
export type { PaddingSide } from './padding.js';
export { HookedTransformerKeyValueCache, HookedTransformerKeyValueCacheEntry } from './kv-cache.js';
export type { FwdHook, BwdHook, GradMetric } from '../hooks/registry.js';
export type { RunOptions, ForwardReturnType, CacheOptions } from './run-options.js';
export type { BackwardOptions, BackwardResult } from './gradients.js';

/** Options of the constructor (the static loaders take LoadOptions). */
export interface ModelOptions {
  dtype?: DType;
  backend?: BackendName | Backend;
  cacheBudgetBytes?: number;
  onProgress?: (done: number, total: number) => void;
  attnMatmulMinPos?: number;
  /** Weights already packed in this backend's memory by another model (worker replicas: see replica.ts); not released at dispose. */
  packed?: PackedModel;
}

const processingOf = (o: ProcessingOptions): Required<ProcessingOptions> => {
  const r = { ...DEFAULT_PROCESSING };
  for (const k of Object.keys(r) as (keyof ProcessingOptions)[]) if (o[k] !== undefined) r[k] = !!o[k];
  return r;
};

/** GPT-2-shaped transformer with TransformerLens's hook points, names and numbers. */
export class HookedTransformer extends HookedRootModule<TokensInput, RunOptions> {
  readonly backend: Backend;
  /** From this many positions on, attention's per-head products run through the backend's matmul. */
  readonly attnMatmulMinPos: number;
  /** The kernels' copies of the weights (packed once at load). */
  readonly packed: PackedModel;
  private readonly ownsPacked: boolean;
  private sharedEmbeds: number[] = [];
  private disposed = false;
  private readonly host: LayerOps<Tensor>;
  private grad?: LayerOps<Tensor>;
  private gradPacks?: ag.PackCache;
  /** Run at dispose (worker pools attached to this model shut down with it). */
  onDispose: (() => void)[] = [];
  /** Storage dtype of the matrices (activations are always f32). */
  readonly dtype: DType;
  /** Detects direct writes into parameters that have derived copies (see params.ts). */
  readonly weightGuard = new WeightGuard();
  /** Bumped by every write through the model (setWeight, loadStateDict, ...): worker pools built before refuse to run. */
  weightsVersion = 0;
  /** Caches derived from weights (e.g. the gradients' transposed packings), told when a weight changes. */
  readonly derivedCopies: { invalidate(leaf?: Tensor): void }[] = [];
  /** The TL processing applied to the weights when known (null: built from weights of unknown history). */
  processing: Required<ProcessingOptions> | null = null;

  constructor(
    readonly cfg: ModelConfig,
    readonly weights: Weights,
    opts: ModelOptions = {},
  ) {
    super();
    this.backend = typeof opts.backend === 'object' ? opts.backend : getBackend(opts.backend ?? 'auto');
    this.cacheBudgetBytes = opts.cacheBudgetBytes ?? this.cacheBudgetBytes;
    this.attnMatmulMinPos = opts.attnMatmulMinPos ?? 32;
    this.ownsPacked = !opts.packed;
    this.dtype = opts.packed ? opts.packed.WU.dtype : (opts.dtype ?? 'f32');
    if (opts.packed) this.packed = opts.packed;
    else {
      this.packed = packWeights(this.backend, cfg, weights, this.dtype, opts.onProgress);
      // embeddings move into the kernels' shared memory, so that worker replicas read them in place
      const shared = this.backend.sharedMemory;
      if (shared) this.sharedEmbeds = shareEmbeddings(shared, weights);
      // W_E and W_pos are read in place by every path (no derived copy): direct edits take effect
      for (const s of paramSlots(cfg, weights, this.packed))
        if (s.key !== 'W_E' && s.key !== 'W_pos')
          this.weightGuard.watch(s.name, (s.owner as unknown as Record<string, Tensor>)[s.key]);
    }
    this.host = hostOps({
      cfg,
      backend: this.backend,
      fire: (n, t) => this.fire(n, t),
      attnMatmulMinPos: this.attnMatmulMinPos,
    });
    this.setupHooks(cfg.n_layers);
  }

  /** Load a GPT-2-shaped HF checkpoint folder (config.json + model.safetensors). */
  static fromDir(dir: string, opts: LoadOptions = {}): HookedTransformer {
    const { cfg, weights, onProgress } = loadDir(dir, opts);
    const m = new HookedTransformer(cfg, weights, { ...opts, onProgress });
    m.processing = processingOf(opts);
    return m;
  }

  /**
   * Load from a checkpoint's files given by name, as bytes or byte sources (what a browser holds):
   * `{ 'config.json': text | bytes, 'model.safetensors': ArrayBuffer | Uint8Array | ByteSource }`,
   * or `model.safetensors.index.json` and its shards. Same loader as fromDir, same numbers.
   */
  static fromSources(files: Record<string, FileContents> | CheckpointFiles, opts: LoadOptions = {}): HookedTransformer {
    const cf =
      typeof files.open === 'function'
        ? (files as CheckpointFiles)
        : memoryFiles(files as Record<string, FileContents>);
    const { cfg, weights, onProgress } = loadCheckpoint(cf, opts);
    const m = new HookedTransformer(cfg, weights, { ...opts, onProgress });
    m.processing = processingOf(opts);
    return m;
  }

  /**
   * fromSources for files that are read asynchronously: File/Blob (a picked or dropped file), URL,
   * or an AsyncByteSource; each is read into memory first, reporting `onDownload(file, done, total)`.
   */
  static async fromSourcesAsync(
    files: Record<string, AsyncFileContents>,
    opts: LoadOptions & { onDownload?: FileProgress } = {},
  ): Promise<HookedTransformer> {
    return HookedTransformer.fromSources(await readFilesAsync(files, opts.onDownload), opts);
  }

  /** Load a checkpoint served under a base URL (config.json + model.safetensors or a sharded index), streamed with progress. */
  static async fromUrl(
    baseUrl: string,
    opts: LoadOptions & { onDownload?: FileProgress; fetch?: typeof fetch } = {},
  ): Promise<HookedTransformer> {
    const files = await fetchCheckpointFiles(baseUrl, { onProgress: opts.onDownload, fetch: opts.fetch });
    return HookedTransformer.fromSources(files, opts);
  }

  /** Build from HF-layout tensors already in memory (generated models, tests). */
  static fromHFTensors(
    hf: Record<string, unknown>,
    tensors: Record<string, StTensorOut> | StFile,
    opts: LoadOptions = {},
  ): HookedTransformer {
    const { cfg, weights } = loadHFTensors(hf, tensors, opts);
    const m = new HookedTransformer(cfg, weights, opts);
    m.processing = processingOf(opts);
    return m;
  }

  /**
   * A freshly initialised model from a config (TL's HookedTransformer(cfg) with init_weights):
   * GPT-2's initialisation, seeded, unprocessed (what train() needs). See init.ts.
   */
  static fromConfig(
    cfg: Partial<ModelConfig> & Pick<ModelConfig, 'n_layers' | 'd_model' | 'n_ctx' | 'd_vocab'>,
    opts: ModelOptions & InitOptions = {},
  ): HookedTransformer {
    const { cfg: full, weights } = initWeights(cfg, opts);
    const m = new HookedTransformer(full, weights, opts);
    m.processing = {
      foldLn: false,
      centerWritingWeights: false,
      centerUnembed: false,
      foldValueBiases: false,
      refactorFactoredAttnMatrices: false,
    };
    return m;
  }

  /** TL's from_pretrained: reads weights/<name>/ (or $TYPELENS_WEIGHTS, or opts.dir). */
  static fromPretrained(name: string, opts: LoadOptions & { dir?: string } = {}): HookedTransformer {
    return HookedTransformer.fromDir(pretrainedDir(name, opts.dir), opts);
  }

  static fromPretrainedNoProcessing(name: string, opts: LoadOptions & { dir?: string } = {}): HookedTransformer {
    return HookedTransformer.fromPretrained(name, {
      ...opts,
      foldLn: false,
      centerWritingWeights: false,
      centerUnembed: false,
      foldValueBiases: false,
      refactorFactoredAttnMatrices: false,
    });
  }

  /**
   * Run once and cache activations (copies, taken after any other hooks on the point). With
   * `inclBwd`, the forward is recorded and the cache also holds `name + '_grad'`, d metric / d
   * activation, for every cached point; the metric is `opts.metric` (a function of the logits
   * returning a scalar Tensor built with ag.* ops) or TL's return_type='loss' (the LM
   * cross-entropy), and its value comes back as `value`.
   */
  runWithCache(
    input: TokensInput,
    opts: CacheOptions = {},
  ): { logits: Tensor; cache: ActivationCache; value?: number } {
    // with startAtLayer the input is a residual stream [B, P, M], passed through as is
    const tokens =
      opts.startAtLayer != null && input instanceof Tensor
        ? input
        : tokensOf(input, this.cfg, opts.prependBos, opts.paddingSide);
    const { logits, store, value } = this.capture(tokens, tokens.shape[0], tokens.shape[1], opts);
    const cache = new ActivationCache(store, this, !opts.removeBatchDim);
    if (opts.startAtLayer == null) cache.tokens = tokens;
    return value === undefined ? { logits, cache } : { logits, cache, value };
  }

  /** TL's return_type='loss': mean next-token cross-entropy of the logits against the input tokens. */
  protected override defaultMetric(input: TokensInput, opts: RunOptions): GradMetric {
    if (opts.startAtLayer != null)
      throw new TypelensError('with startAtLayer there are no tokens for the loss: pass a metric', 'EGRAD');
    if (opts.stopAtLayer != null || opts.lastPositionLogits)
      throw new TypelensError(
        "the loss needs every position's logits: pass a metric, or leave out stopAtLayer / lastPositionLogits",
        'EGRAD',
      );
    const tokens = tokensOf(input, this.cfg, opts.prependBos);
    return (logits) => ag.lmCrossEntropyLoss(logits, tokens);
  }

  // ---------- gradients (see gradients.ts) ----------
  /**
   * Every parameter in TL's names and layouts (`embed.W_E`, `blocks.0.attn.W_Q` [H, M, D], ...;
   * LayerNorm weights only while the model has them, i.e. not after fold_ln), the tensors
   * themselves (torch's named_parameters): watch them on a tape to get their gradients.
   */
  namedParameters(): Map<string, Tensor> {
    return namedParameters(this.weights);
  }

  /**
   * One recorded forward and one backward from `metric(logits)` (default: the LM loss): the
   * metric's value, the logits, and (unless params: false) every parameter's gradient by TL name.
   * fwdHooks run in the forward; bwdHooks see, and may replace, d metric / d activation. The
   * TL equivalent is `metric(model.run_with_hooks(x, fwd_hooks, bwd_hooks)).backward()`.
   */
  backward(input: TokensInput, metric?: GradMetric, opts: BackwardOptions = {}): BackwardResult {
    return backward(this, input, metric ?? this.defaultMetric(input, opts), opts);
  }

  /** d metric / d parameter for every parameter, TL names and layouts (default metric: the LM loss). */
  parameterGrads(
    input: TokensInput,
    metric?: GradMetric,
    opts: Omit<BackwardOptions, 'params'> = {},
  ): Map<string, Tensor> {
    return this.backward(input, metric, { ...opts, params: true }).paramGrads;
  }

  /**
   * Lazily packed transposed weights (for dX = dY·Wᵀ) and reused weight-gradient buffers;
   * released at dispose. Call `invalidate(w)` on it after changing a weight in place.
   */
  get gradPackCache(): ag.PackCache {
    return (this.gradPacks ??= gradPackCache(this));
  }

  /** The recording layer ops, built on first use: each packed weight mapped to its TL-layout leaf. */
  private gradLayerOps(): LayerOps<Tensor> {
    return (this.grad ??= gradLayerOps(this, this.gradPackCache, (n, t) => this.fire(n, t)));
  }

  // ---------- tokens ----------
  toTokens(
    input: string | string[],
    opts: { prependBos?: boolean; paddingSide?: 'right' | 'left'; truncate?: boolean } = {},
  ): Tensor {
    return toTokens(input, { ...opts, nCtx: this.cfg.n_ctx, bos: this.cfg.bos_token_id });
  }
  toStrTokens(input: string | Tensor | number[], opts: { prependBos?: boolean } = {}): string[] {
    return tok.toStrTokens(this, input, opts);
  }
  toSingleToken(s: string): number {
    return tok.toSingleToken(s);
  }
  toSingleStrToken(id: number): string {
    return decodeToken(id);
  }
  override toString(tokens: Tensor | number[] | number[][]): string | string[] {
    return tok.tokensToString(tokens);
  }
  /** Columns of W_U for tokens: one id -> [M]; [N] -> [N, M]; [B, 2] -> [B, 2, M]. */
  tokensToResidualDirections(tokens: number | string | Tensor | number[]): Tensor {
    return wv.tokensToResidualDirections(this.cfg, this.weights, tokens);
  }

  // ---------- forward ----------
  /** The model's logits [B, P, V] (or the residual stream when stopAtLayer is given; the loss or both with returnType). */
  override forward(input: TokensInput, opts?: RunOptions & { returnType?: 'logits' | 'loss' }): Tensor;
  override forward(input: TokensInput, opts: RunOptions & { returnType: 'both' }): { logits: Tensor; loss: Tensor };
  override forward(input: TokensInput, opts: RunOptions & { returnType: null }): null;
  override forward(input: TokensInput, opts: RunOptions = {}): Tensor | { logits: Tensor; loss: Tensor } | null {
    if (this.disposed) throw new TypelensError('this model was disposed', 'EDISPOSED');
    this.weightGuard.check();
    return forwardPass(
      this,
      {
        fire: (n, t) => this.fire(n, t),
        host: this.host,
        gradOps: () => this.gradLayerOps(),
        hasHooks: () => this.hasHooks(),
        flags: this.use.flags,
      },
      input,
      opts,
    );
  }

  // ---------- weights as TL names them ----------
  get W_E(): Tensor {
    return this.weights.W_E;
  }
  get W_pos(): Tensor {
    return this.weights.W_pos;
  }
  get W_U(): Tensor {
    return this.weights.W_U;
  }
  get b_U(): Tensor {
    return this.weights.b_U;
  }
  private stacked(k: keyof Weights['blocks'][number]): Tensor {
    return wv.stackedWeight(this.weights, k);
  }
  get W_Q(): Tensor {
    return this.stacked('W_Q');
  }
  get W_K(): Tensor {
    return this.stacked('W_K');
  }
  get W_V(): Tensor {
    return this.stacked('W_V');
  }
  get W_O(): Tensor {
    return this.stacked('W_O');
  }
  get b_Q(): Tensor {
    return this.stacked('b_Q');
  }
  get b_K(): Tensor {
    return this.stacked('b_K');
  }
  get b_V(): Tensor {
    return this.stacked('b_V');
  }
  get b_O(): Tensor {
    return this.stacked('b_O');
  }
  get W_in(): Tensor {
    return this.stacked('W_in');
  }
  get b_in(): Tensor {
    return this.stacked('b_in');
  }
  get W_out(): Tensor {
    return this.stacked('W_out');
  }
  get b_out(): Tensor {
    return this.stacked('b_out');
  }
  /** TL's HookedTransformer.QK: W_Q W_K^T per head, factored, [n_layers, n_heads, d_model, d_model]. */
  get QK(): FactoredMatrix {
    return qkCircuit(this);
  }
  /** TL's HookedTransformer.OV: W_V W_O per head, factored, [n_layers, n_heads, d_model, d_model]. */
  get OV(): FactoredMatrix {
    return ovCircuit(this);
  }
  /** TL's all_composition_scores: [n_layers, n_heads, n_layers, n_heads], same-or-earlier-layer pairs 0. */
  allCompositionScores(mode: 'Q' | 'K' | 'V'): Tensor {
    return allCompositionScores(this, mode);
  }

  /** Sum of the biases written into the residual stream before `layer` (TL's accumulated_bias). */
  accumulatedBias(layer: number, mlpInput = false, includeMlpBiases = true): Tensor {
    return wv.accumulatedBias(this.cfg, this.weights, layer, mlpInput, includeMlpBiases);
  }

  // ---------- editing weights (TL's state-dict API; see editing.ts and params.ts) ----------
  /** Replace one parameter (TL name, e.g. 'blocks.0.mlp.W_out'), shape-checked; repacks it. Returns whether anything changed. */
  setWeight(name: string, value: Tensor): boolean {
    return setWeight(this, name, value);
  }
  /** Let `fn` write the named parameters' own f32 storage in place (optimizers), then remake their derived copies. */
  updateWeights(names: Iterable<string>, fn: (name: string, data: Float32Array) => void): void {
    updateWeights(this, names, fn);
  }
  /** TL's state_dict: every parameter under its TL name (f32 copies). */
  stateDict(): Record<string, Tensor> {
    return stateDict(this);
  }
  /** TL's load_state_dict (strict by default); repacks only the parameters whose values changed. */
  loadStateDict(dict: StateDict, opts: { strict?: boolean } = {}): { changed: string[] } {
    return loadStateDict(this, dict, opts);
  }
  /** TL's load_and_process_state_dict: overlay `dict`, apply TL's processing (from_pretrained's defaults), load. */
  loadAndProcessStateDict(dict: StateDict, opts: ProcessingOptions = {}): { changed: string[] } {
    return loadAndProcessStateDict(this, dict, opts);
  }
  /** TL's process_weights_: process the model's own weights in place (from_pretrained's defaults). */
  processWeights_(opts: ProcessingOptions = {}): { changed: string[] } {
    return processWeights_(this, opts);
  }
  /** Throw (naming the weight) if a parameter with derived copies was written outside the model since it last wrote it. */
  checkWeights(): void {
    this.weightGuard.check();
  }
  /** @internal */
  assertUsable(): void {
    if (this.disposed) throw new TypelensError('this model was disposed', 'EDISPOSED');
    if (!this.ownsPacked)
      throw new TypelensError(
        "a worker replica's weights belong to the main thread's model: edit them there",
        'EREPLICA',
      );
  }

  // ---------- TL's use_* switches (off by default; each makes a dormant hook point fire; see use-switches.ts) ----------
  private readonly use = new UseSwitches();
  protected override flagEnabled(flag: string): boolean {
    return this.use.enabled(flag);
  }
  /** TL's set_use_attn_result: blocks.l.attn.hook_result [B, P, H, d_model], each head's write to the residual. */
  setUseAttnResult(on: boolean): void {
    this.use.setAttnResult(on);
  }
  /** TL's set_use_split_qkv_input: hook_q_input / hook_k_input / hook_v_input [B, P, H, d_model], one input per head. */
  setUseSplitQkvInput(on: boolean): void {
    this.use.setSplitQkvInput(on);
  }
  /** TL's set_use_hook_mlp_in: blocks.l.hook_mlp_in [B, P, d_model], the MLP's input before ln2. */
  setUseHookMlpIn(on: boolean): void {
    this.use.setHookMlpIn(on);
  }
  /** TL's set_use_attn_in: blocks.l.hook_attn_in [B, P, H, d_model], attention's input repeated per head. */
  setUseAttnIn(on: boolean): void {
    this.use.setAttnIn(on);
  }

  // ---------- generation, positions, labels (TL's generate, get_token_position, all_head_labels, W_E_pos) ----------
  /** TL's generate: continue the prompt(s) maxNewTokens tokens, sampling (seeded with `seed`) or greedy; see GenerateOptions. */
  generate(input: string, opts?: GenerateOptions & { returnType?: 'input' | 'str' }): string;
  generate(
    input: string | string[] | Tensor | number[] | number[][],
    opts?: GenerateOptions,
  ): string | string[] | Tensor;
  generate(
    input: string | string[] | Tensor | number[] | number[][],
    opts: GenerateOptions = {},
  ): string | string[] | Tensor {
    return generate(this, input, opts);
  }

  /** TL's get_token_position: the index of singleToken in a one-prompt input (mode 'first' or 'last'). */
  getTokenPosition(
    singleToken: string | number,
    input: string | Tensor | number[],
    opts: { mode?: 'first' | 'last'; prependBos?: boolean; paddingSide?: PaddingSide } = {},
  ): number {
    return tok.getTokenPosition(this, singleToken, input, opts);
  }

  /** TL's all_head_labels: "L{l}H{h}", layer-major. */
  get allHeadLabels(): string[] {
    return wv.allHeadLabels(this.cfg);
  }
  /** TL's W_E_pos: W_E and W_pos stacked along the first axis [d_vocab + n_ctx, d_model]. */
  get W_E_pos(): Tensor {
    return cat([this.W_E, this.W_pos], 0);
  }

  /** Give the packed weights back to the kernel memory. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.onDispose.forEach((f) => f());
    this.onDispose = [];
    if (!this.ownsPacked) return; // a replica: the weights belong to the main thread's model
    releasePacked(this.packed);
    const shared = this.backend.sharedMemory;
    if (shared) for (const p of this.sharedEmbeds) shared.release(p);
  }
}
