import * as ag from '../autograd/ops.js';
import { currentTape, withGrad } from '../autograd/tape.js';
import { TypelensError } from '../errors.js';
import { Backend, BackendName, getBackend, LayerOps, PackedWeight } from '../kernels/index.js';
import { DType, embedding, stack, Tensor } from '../tensor/index.js';
import { ActivationCache } from '../hooks/cache.js';
import { BwdHook, CacheSettings, checkScalarMetric, FwdHook, GradMetric, HookedRootModule } from '../hooks/registry.js';
import type { ModelConfig } from './config.js';
import { gradOps } from './grad-ops.js';
import { hostOps } from './host-ops.js';
import { embed, transformerBlock, unembed } from './layers.js';
import { loadDir, loadHFTensors, LoadOptions, pretrainedDir } from './load.js';
import { PackedModel, packWeights, releasePacked, shareEmbeddings } from './packed.js';
import type { StFile, StTensorOut } from './safetensors.js';
import { decodeToken, decodeTokens, encodeText, toTokens } from './tokenizer.js';
import { tokensOf, TokensInput } from './tokens-input.js';
import type { Weights } from './weights.js';

export type { LoadOptions } from './load.js';
export type { TokensInput } from './tokens-input.js';
export type { FwdHook, BwdHook, GradMetric } from '../hooks/registry.js';
export interface RunOptions {
  prependBos?: boolean;
  /** Stop before this block and return the residual stream [B, P, d_model]. */
  stopAtLayer?: number;
  /** Start at this block: the input is then the residual stream [B, P, d_model] entering it. */
  startAtLayer?: number;
  /**
   * Unembed only the final position: logits [B, 1, V]. Every hook still sees all positions; for
   * metrics that read logits[:, -1] only (the demo's), this saves most of the unembedding.
   */
  lastPositionLogits?: boolean;
}
export interface CacheOptions extends RunOptions, CacheSettings {}

/** Options of model.backward: the run's options, hooks for it, and which gradients to return. */
export interface BackwardOptions extends RunOptions {
  fwdHooks?: FwdHook[];
  bwdHooks?: BwdHook[];
  /** Return every parameter's gradient (TL names, see namedParameters). Default true. */
  params?: boolean;
  /**
   * Parameter gradients as views of buffers reused by the next backward (an optimizer consumes
   * them at once, like torch's `.grad`), instead of copies.
   */
  views?: boolean;
}
export interface BackwardResult {
  /** The metric's value. */
  value: number;
  /** The forward's output (logits, or the residual stream with stopAtLayer). */
  logits: Tensor;
  /** d metric / d parameter, TL names and layouts (empty with params: false). */
  paramGrads: Map<string, Tensor>;
}

const LN_PARAM_NAMES = [
  ['ln1_w', 'ln1.w'], ['ln1_b', 'ln1.b'], ['W_Q', 'attn.W_Q'], ['W_K', 'attn.W_K'], ['W_V', 'attn.W_V'], ['W_O', 'attn.W_O'],
  ['b_Q', 'attn.b_Q'], ['b_K', 'attn.b_K'], ['b_V', 'attn.b_V'], ['b_O', 'attn.b_O'], ['ln2_w', 'ln2.w'], ['ln2_b', 'ln2.b'],
  ['W_in', 'mlp.W_in'], ['b_in', 'mlp.b_in'], ['W_out', 'mlp.W_out'], ['b_out', 'mlp.b_out'],
] as const;

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

  constructor(readonly cfg: ModelConfig, readonly weights: Weights, opts: ModelOptions = {}) {
    super();
    this.backend = typeof opts.backend === 'object' ? opts.backend : getBackend(opts.backend ?? 'auto');
    this.cacheBudgetBytes = opts.cacheBudgetBytes ?? this.cacheBudgetBytes;
    this.attnMatmulMinPos = opts.attnMatmulMinPos ?? 32;
    this.ownsPacked = !opts.packed;
    if (opts.packed) this.packed = opts.packed;
    else {
      this.packed = packWeights(this.backend, cfg, weights, opts.dtype ?? 'f32', opts.onProgress);
      // embeddings move into the kernels' shared memory, so that worker replicas read them in place
      const shared = this.backend.sharedMemory;
      if (shared) this.sharedEmbeds = shareEmbeddings(shared, weights);
    }
    this.host = hostOps({ cfg, backend: this.backend, fire: (n, t) => this.fire(n, t), attnMatmulMinPos: this.attnMatmulMinPos });
    this.setupHooks(cfg.n_layers);
  }

  /** Load a GPT-2-shaped HF checkpoint folder (config.json + model.safetensors). */
  static fromDir(dir: string, opts: LoadOptions = {}): HookedTransformer {
    const { cfg, weights, onProgress } = loadDir(dir, opts);
    return new HookedTransformer(cfg, weights, { ...opts, onProgress });
  }

  /** Build from HF-layout tensors already in memory (generated models, tests). */
  static fromHFTensors(hf: Record<string, unknown>, tensors: Record<string, StTensorOut> | StFile, opts: LoadOptions = {}): HookedTransformer {
    const { cfg, weights } = loadHFTensors(hf, tensors, opts);
    return new HookedTransformer(cfg, weights, opts);
  }

  /** TL's from_pretrained: reads weights/<name>/ (or $TYPELENS_WEIGHTS, or opts.dir). */
  static fromPretrained(name: string, opts: LoadOptions & { dir?: string } = {}): HookedTransformer {
    return HookedTransformer.fromDir(pretrainedDir(name, opts.dir), opts);
  }

  static fromPretrainedNoProcessing(name: string, opts: LoadOptions & { dir?: string } = {}): HookedTransformer {
    return HookedTransformer.fromPretrained(name, { ...opts, foldLn: false, centerWritingWeights: false, centerUnembed: false, foldValueBiases: false, refactorFactoredAttnMatrices: false });
  }

  /**
   * Run once and cache activations (copies, taken after any other hooks on the point). With
   * `inclBwd`, the forward is recorded and the cache also holds `name + '_grad'`, d metric / d
   * activation, for every cached point; the metric is `opts.metric` (a function of the logits
   * returning a scalar Tensor built with ag.* ops) or TL's return_type='loss' (the LM
   * cross-entropy), and its value comes back as `value`.
   */
  runWithCache(input: TokensInput, opts: CacheOptions = {}): { logits: Tensor; cache: ActivationCache; value?: number } {
    // with startAtLayer the input is a residual stream [B, P, M], passed through as is
    const tokens = opts.startAtLayer != null && input instanceof Tensor ? input : tokensOf(input, this.cfg, opts.prependBos);
    const { logits, store, value } = this.capture(tokens, tokens.shape[0], tokens.shape[1], opts);
    const cache = new ActivationCache(store, this, !opts.removeBatchDim);
    return value === undefined ? { logits, cache } : { logits, cache, value };
  }

  /** TL's return_type='loss': mean next-token cross-entropy of the logits against the input tokens. */
  protected override defaultMetric(input: TokensInput, opts: RunOptions): GradMetric {
    if (opts.startAtLayer != null) throw new TypelensError('with startAtLayer there are no tokens for the loss: pass a metric', 'EGRAD');
    if (opts.stopAtLayer != null || opts.lastPositionLogits) throw new TypelensError('the loss needs every position\'s logits: pass a metric, or leave out stopAtLayer / lastPositionLogits', 'EGRAD');
    const tokens = tokensOf(input, this.cfg, opts.prependBos);
    return (logits) => ag.lmCrossEntropyLoss(logits, tokens);
  }

  // ---------- gradients ----------
  /**
   * Every parameter in TL's names and layouts (`embed.W_E`, `blocks.0.attn.W_Q` [H, M, D], ...;
   * LayerNorm weights only while the model has them, i.e. not after fold_ln), the tensors
   * themselves (torch's named_parameters): watch them on a tape to get their gradients.
   */
  namedParameters(): Map<string, Tensor> {
    const W = this.weights, out = new Map<string, Tensor>();
    out.set('embed.W_E', W.W_E);
    out.set('pos_embed.W_pos', W.W_pos);
    W.blocks.forEach((blk, l) => { for (const [k, n] of LN_PARAM_NAMES) { const t = blk[k]; if (t) out.set(`blocks.${l}.${n}`, t); } });
    if (W.ln_final_w) out.set('ln_final.w', W.ln_final_w);
    if (W.ln_final_b) out.set('ln_final.b', W.ln_final_b);
    out.set('unembed.W_U', W.W_U);
    out.set('unembed.b_U', W.b_U);
    return out;
  }

  /**
   * One recorded forward and one backward from `metric(logits)` (default: the LM loss): the
   * metric's value, the logits, and (unless params: false) every parameter's gradient by TL name.
   * fwdHooks run in the forward; bwdHooks see, and may replace, d metric / d activation. The
   * TL equivalent is `metric(model.run_with_hooks(x, fwd_hooks, bwd_hooks)).backward()`.
   */
  backward(input: TokensInput, metric?: GradMetric, opts: BackwardOptions = {}): BackwardResult {
    const wantParams = opts.params ?? true;
    const named = wantParams ? this.namedParameters() : null;
    const run = { ...opts, fwdHooks: opts.fwdHooks ?? [], bwdHooks: opts.bwdHooks ?? [] };
    const f = metric ?? this.defaultMetric(input, opts);
    let logits!: Tensor;
    const { out: m, tape } = withGrad((tp) => {
      if (named) tp.watch(...named.values());
      logits = this.runWithHooks(input, run);
      return f(logits);
    });
    checkScalarMetric(m);
    const g = tape.backward(m);
    const paramGrads = new Map<string, Tensor>();
    if (named) for (const [n, t] of named) paramGrads.set(n, opts.views ? g.view(t) : g.get(t));
    return { value: m.item(), logits, paramGrads };
  }

  /** d metric / d parameter for every parameter, TL names and layouts (default metric: the LM loss). */
  parameterGrads(input: TokensInput, metric?: GradMetric, opts: Omit<BackwardOptions, 'params'> = {}): Map<string, Tensor> {
    return this.backward(input, metric, { ...opts, params: true }).paramGrads;
  }

  /**
   * Lazily packed transposed weights (for dX = dY·Wᵀ) and reused weight-gradient buffers;
   * released at dispose. Call `invalidate(w)` on it after changing a weight in place.
   */
  get gradPackCache(): ag.PackCache {
    if (!this.gradPacks) {
      const c = this.gradPacks = new ag.PackCache(this.backend);
      this.onDispose.push(() => c.release());
    }
    return this.gradPacks;
  }

  /** The recording layer ops, built on first use: each packed weight mapped to its TL-layout leaf. */
  private gradLayerOps(): LayerOps<Tensor> {
    if (this.grad) return this.grad;
    const cache = this.gradPackCache, W = this.weights, mats = new Map<PackedWeight, ag.MatWeight>();
    this.packed.blocks.forEach((pk, l) => {
      const blk = W.blocks[l];
      mats.set(pk.WQ, ag.headsInWeight(blk.W_Q, cache, pk.WQ));
      mats.set(pk.WK, ag.headsInWeight(blk.W_K, cache, pk.WK));
      mats.set(pk.WV, ag.headsInWeight(blk.W_V, cache, pk.WV));
      mats.set(pk.WO, ag.headsOutWeight(blk.W_O, cache, pk.WO));
      mats.set(pk.Win, ag.plainWeight(blk.W_in, cache, pk.Win));
      mats.set(pk.Wout, ag.plainWeight(blk.W_out, cache, pk.Wout));
    });
    mats.set(this.packed.WU, ag.plainWeight(W.W_U, cache, this.packed.WU));
    const mat = (w: PackedWeight): ag.MatWeight => {
      const m = mats.get(w);
      if (!m) throw new TypelensError('internal: a packed weight with no TL-layout leaf', 'EGRAD');
      return m;
    };
    return this.grad = gradOps({ cfg: this.cfg, backend: this.backend, fire: (n, t) => this.fire(n, t), attnMatmulMinPos: this.attnMatmulMinPos, mat });
  }

  // ---------- tokens ----------
  toTokens(input: string | string[], opts: { prependBos?: boolean; paddingSide?: 'right' | 'left'; truncate?: boolean } = {}): Tensor {
    return toTokens(input, { ...opts, nCtx: this.cfg.n_ctx, bos: this.cfg.bos_token_id });
  }
  toStrTokens(input: string | Tensor | number[], opts: { prependBos?: boolean } = {}): string[] {
    const ids = typeof input === 'string' ? this.toTokens(input, opts).toArray() : input instanceof Tensor ? input.squeeze().toArray() : input;
    return ids.map((id) => (id === this.cfg.bos_token_id ? '<|endoftext|>' : decodeToken(id)));
  }
  toSingleToken(s: string): number {
    const ids = encodeText(s);
    if (ids.length !== 1) throw new TypelensError(`"${s}" is ${ids.length} tokens, not a single token`, 'ETOKEN');
    return ids[0];
  }
  toSingleStrToken(id: number): string { return decodeToken(id); }
  override toString(tokens: Tensor | number[] | number[][]): string | string[] {
    const t = tokens instanceof Tensor ? tokens : Tensor.from(tokens as number[][]);
    if (t.ndim <= 1) return decodeTokens(t.toArray());
    return Array.from({ length: t.shape[0] }, (_, b) => decodeTokens(t.index(0, b).toArray()));
  }
  /** Columns of W_U for tokens: one id -> [M]; [N] -> [N, M]; [B, 2] -> [B, 2, M]. */
  tokensToResidualDirections(tokens: number | string | Tensor | number[]): Tensor {
    const WU = this.W_U;
    if (typeof tokens === 'string') tokens = this.toSingleToken(tokens);
    if (typeof tokens === 'number') return embedding(WU.T, [tokens], [], 'token').reshape([this.cfg.d_model]);
    const t = tokens instanceof Tensor ? tokens : Tensor.from(tokens, [tokens.length]);
    if (t.size === 1) return embedding(WU.T, t.f32(), [], 'token').reshape([this.cfg.d_model]);
    return embedding(WU.T, t);
  }

  // ---------- forward ----------
  /** The model's logits [B, P, V] (or the residual stream when stopAtLayer is given). */
  override forward(input: TokensInput, opts: RunOptions = {}): Tensor {
    if (this.disposed) throw new TypelensError('this model was disposed', 'EDISPOSED');
    const { d_model: M, n_layers: L } = this.cfg;
    // gradient mode: a tape records (withGrad); the layer sequence runs on the recording ops, and the
    // embeddings are the graph's roots (watched unless W_E / W_pos already are), so that every hook
    // point has a gradient whatever the caller watched
    const tape = currentTape();
    let resid: Tensor, start = 0;
    if (opts.startAtLayer == null) {
      const tokens = tokensOf(input, this.cfg, opts.prependBos);
      if (!tape) resid = embed((n, t) => this.fire(n, t), this.weights, tokens);
      else {
        const cache = this.gradPackCache;
        resid = embed((n, t) => this.fire(n, tape.isTracked(t) ? t : tape.watch(t)), this.weights, tokens, (W, ids) => ag.embedding(W, ids, cache));
      }
    } else {
      start = opts.startAtLayer < 0 ? opts.startAtLayer + L : opts.startAtLayer;
      if (!Number.isInteger(start) || start < 0 || start > L) throw new TypelensError(`startAtLayer ${opts.startAtLayer} is outside [0, ${L}]`, 'EINPUT');
      if (!(input instanceof Tensor) || input.ndim !== 3 || input.shape[2] !== M || input.shape[1] > this.cfg.n_ctx) {
        const got = input instanceof Tensor ? `[${input.shape.join(', ')}]` : typeof input;
        throw new TypelensError(`with startAtLayer the input must be the residual stream [batch, pos <= ${this.cfg.n_ctx}, ${M}], got ${got}`, 'ESHAPE');
      }
      resid = ag.copy(input); // hooks may edit the residual in place: never the caller's tensor
      if (tape && !tape.isTracked(resid)) tape.watch(resid);
    }
    let stop = opts.stopAtLayer ?? L;
    if (stop < 0) stop += L;
    if (tape) return this.run(this.gradLayerOps(), resid, start, stop, opts);
    // With nothing asking for an activation, a backend with a device path keeps the whole pass there.
    const device = this.hasHooks() ? undefined : this.backend.deviceOps?.({
      eps: this.cfg.eps, attnScale: this.cfg.attn_scale, nHeads: this.cfg.n_heads, dHead: this.cfg.d_head, actFn: this.cfg.act_fn,
    });
    return device ? this.run(device, resid, start, stop, opts) : this.run(this.host, resid, start, stop, opts);
  }

  /** GPT-2's layer sequence over `ops` (host tensors or device buffers), blocks [start, stop). */
  private run<X>(ops: LayerOps<X>, resid: Tensor, start: number, stop: number, opts: RunOptions): Tensor {
    const L = this.cfg.n_layers, [B, P] = resid.shape;
    let x = ops.fromHost(resid);
    for (let l = start; l < Math.min(stop, L); l++) x = transformerBlock(ops, this.cfg, l, this.weights.blocks[l], this.packed.blocks[l], x, B, P);
    if (stop < L) return ops.toHost(x);
    return ops.toHost(unembed(ops, this.cfg, this.weights, this.packed.WU, x, B, P, opts.lastPositionLogits));
  }

  // ---------- weights as TL names them ----------
  get W_E(): Tensor { return this.weights.W_E; }
  get W_pos(): Tensor { return this.weights.W_pos; }
  get W_U(): Tensor { return this.weights.W_U; }
  get b_U(): Tensor { return this.weights.b_U; }
  private stacked(k: keyof Weights['blocks'][number]): Tensor { return stack(this.weights.blocks.map((b) => b[k] as Tensor)); }
  get W_Q(): Tensor { return this.stacked('W_Q'); }
  get W_K(): Tensor { return this.stacked('W_K'); }
  get W_V(): Tensor { return this.stacked('W_V'); }
  get W_O(): Tensor { return this.stacked('W_O'); }
  get b_Q(): Tensor { return this.stacked('b_Q'); }
  get b_K(): Tensor { return this.stacked('b_K'); }
  get b_V(): Tensor { return this.stacked('b_V'); }
  get b_O(): Tensor { return this.stacked('b_O'); }
  get W_in(): Tensor { return this.stacked('W_in'); }
  get b_in(): Tensor { return this.stacked('b_in'); }
  get W_out(): Tensor { return this.stacked('W_out'); }
  get b_out(): Tensor { return this.stacked('b_out'); }

  /** Sum of the biases written into the residual stream before `layer` (TL's accumulated_bias). */
  accumulatedBias(layer: number, mlpInput = false, includeMlpBiases = true): Tensor {
    const out = new Float32Array(this.cfg.d_model);
    for (let i = 0; i < layer; i++) {
      const bO = this.weights.blocks[i].b_O.f32(), bOut = this.weights.blocks[i].b_out.f32();
      for (let m = 0; m < out.length; m++) out[m] += bO[m] + (includeMlpBiases ? bOut[m] : 0);
    }
    if (mlpInput) { const bO = this.weights.blocks[layer].b_O.f32(); for (let m = 0; m < out.length; m++) out[m] += bO[m]; }
    return new Tensor(out, [this.cfg.d_model]);
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
