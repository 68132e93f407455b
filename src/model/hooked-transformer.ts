import { TypelensError } from '../errors.js';
import { Backend, BackendName, getBackend, LayerOps } from '../kernels/index.js';
import { DType, embedding, stack, Tensor } from '../tensor/index.js';
import { ActivationCache } from '../hooks/cache.js';
import type { FactoredMatrix } from '../tensor/factored-matrix.js';
import { allCompositionScores, ovCircuit, qkCircuit } from './circuits.js';
import { CacheSettings, HookedRootModule } from '../hooks/registry.js';
import type { ModelConfig } from './config.js';
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
export type { FwdHook } from '../hooks/registry.js';
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

  /** Run once and cache activations (copies, taken after any other hooks on the point). */
  runWithCache(input: TokensInput, opts: CacheOptions = {}): { logits: Tensor; cache: ActivationCache } {
    // with startAtLayer the input is a residual stream [B, P, M], passed through as is
    const tokens = opts.startAtLayer != null && input instanceof Tensor ? input : tokensOf(input, this.cfg, opts.prependBos);
    const { logits, store } = this.capture(tokens, tokens.shape[0], tokens.shape[1], opts);
    const cache = new ActivationCache(store, this, !opts.removeBatchDim);
    if (opts.startAtLayer == null) cache.tokens = tokens;
    return { logits, cache };
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
    let resid: Tensor, start = 0;
    if (opts.startAtLayer == null) {
      resid = embed((n, t) => this.fire(n, t), this.weights, tokensOf(input, this.cfg, opts.prependBos));
    } else {
      start = opts.startAtLayer < 0 ? opts.startAtLayer + L : opts.startAtLayer;
      if (!Number.isInteger(start) || start < 0 || start > L) throw new TypelensError(`startAtLayer ${opts.startAtLayer} is outside [0, ${L}]`, 'EINPUT');
      if (!(input instanceof Tensor) || input.ndim !== 3 || input.shape[2] !== M || input.shape[1] > this.cfg.n_ctx) {
        const got = input instanceof Tensor ? `[${input.shape.join(', ')}]` : typeof input;
        throw new TypelensError(`with startAtLayer the input must be the residual stream [batch, pos <= ${this.cfg.n_ctx}, ${M}], got ${got}`, 'ESHAPE');
      }
      resid = input.clone(); // hooks may edit the residual in place: never the caller's tensor
    }
    let stop = opts.stopAtLayer ?? L;
    if (stop < 0) stop += L;
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
  /** TL's HookedTransformer.QK: W_Q W_K^T per head, factored, [n_layers, n_heads, d_model, d_model]. */
  get QK(): FactoredMatrix { return qkCircuit(this); }
  /** TL's HookedTransformer.OV: W_V W_O per head, factored, [n_layers, n_heads, d_model, d_model]. */
  get OV(): FactoredMatrix { return ovCircuit(this); }
  /** TL's all_composition_scores: [n_layers, n_heads, n_layers, n_heads], same-or-earlier-layer pairs 0. */
  allCompositionScores(mode: 'Q' | 'K' | 'V'): Tensor { return allCompositionScores(this, mode); }

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
