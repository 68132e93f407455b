import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { TypelensError } from '../errors.js';
import { Backend, BackendName, CudaBackend, getBackend, PackedWeight, WasmBackend } from '../kernels/index.js';
import { cudaForward, DeviceModel } from '../kernels/cuda/forward.js';
import { add, centreAndScale, divideRows, DType, geluNew, map, mul, softmax, Tensor, embedding, stack } from '../tensor/index.js';
import { HookFn, HookPoint, NameFilter } from '../hooks/hookpoint.js';
import { ActivationCache } from '../hooks/cache.js';
import { Slice, SliceInput } from '../hooks/slice.js';
import { configFromHF, ModelConfig } from './config.js';
import { DEFAULT_PROCESSING, processWeights, ProcessingOptions } from './process.js';
import { readSafetensors, safetensorsFromTensors, StFile, StTensorOut } from './safetensors.js';
import { convertGPT2, Weights } from './weights.js';
import { decodeToken, decodeTokens, encodeText, toTokens } from './tokenizer.js';

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
}

export type TokensInput = string | string[] | Tensor | number[] | number[][];
export type FwdHook = [NameFilter, HookFn];
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
export interface CacheOptions extends RunOptions {
  /**
   * Keep the cached activations in SharedArrayBuffers: worker threads (and pool workers sending
   * caches back) then share them instead of copying.
   */
  shared?: boolean;
  namesFilter?: string | string[] | ((name: string) => boolean);
  posSlice?: SliceInput;
  removeBatchDim?: boolean;
}

const MODEL_ALIASES: Record<string, string> = { 'gpt2-small': 'gpt2-small', gpt2: 'gpt2-small' };

interface Packed { WQ: PackedWeight; WK: PackedWeight; WV: PackedWeight; WO: PackedWeight; Win: PackedWeight; Wout: PackedWeight }
interface ReplicaParts { packed: Packed[]; packedWU: PackedWeight }
type PackedDesc = { ptr: number; bytes: number; K: number; N: number; dtype: DType };
type Arr = { data: Float32Array; shape: number[] };
/** A model as worker threads see it (see HookedTransformer.sharedDescriptor). */
export interface SharedModel {
  cfg: ModelConfig; memory: WebAssembly.Memory; module: WebAssembly.Module; fma: boolean;
  packed: Record<keyof Packed, PackedDesc>[]; packedWU: PackedDesc;
  W_E: { ptr: number; shape: number[] }; W_pos: { ptr: number; shape: number[] };
  small: {
    blocks: { ln1_w?: Arr; ln1_b?: Arr; ln2_w?: Arr; ln2_b?: Arr; b_Q: Arr; b_K: Arr; b_V: Arr; b_O: Arr; b_in: Arr; b_out: Arr }[];
    ln_final_w?: Arr; ln_final_b?: Arr; b_U: Arr;
  };
}

/** GPT-2-shaped transformer with TransformerLens's hook points, names and numbers. */
export class HookedTransformer {
  /** From this many positions on, attention runs through the backend's matmul (see attnScores). */
  static ATTN_MATMUL_MIN_POS = 32;
  readonly hookDict = new Map<string, HookPoint>();
  readonly backend: Backend;
  private packed: Packed[];
  private packedWU: PackedWeight;
  private contextLevel = 0;
  private disposed = false;
  cacheBudgetBytes: number;

  private sharedEmbeds: { ptr: number; bytes: number }[] = [];
  private readonly replica: boolean;
  /** Run at dispose (worker pools attached to this model shut down with it). */
  onDispose: (() => void)[] = [];

  constructor(readonly cfg: ModelConfig, readonly weights: Weights, opts: { dtype?: DType; backend?: BackendName | Backend; cacheBudgetBytes?: number; replica?: ReplicaParts;
    onProgress?: (done: number, total: number) => void } = {}) {
    this.backend = typeof opts.backend === 'object' ? opts.backend : getBackend(opts.backend ?? 'auto');
    this.cacheBudgetBytes = opts.cacheBudgetBytes ?? 8 * 2 ** 30;
    this.replica = !!opts.replica;
    if (opts.replica) {
      // a worker's view of a model loaded elsewhere: packed weights are already in shared memory
      this.packed = opts.replica.packed;
      this.packedWU = opts.replica.packedWU;
      this.registerHooks();
      return;
    }
    const dtype = opts.dtype ?? 'f32';
    const { d_model: M, n_heads: H, d_head: D, d_mlp: F, d_vocab: V } = cfg;
    // Weights keep their TL layout (for analysis) in the storage dtype, and are packed once
    // for the kernels. [H, M, D] -> [M, H*D] so one matmul yields every head's q, k or v.
    const store = (t: Tensor) => (dtype === 'f32' ? t : Tensor.encode(t.f32(), t.shape, dtype));
    const pack = (t: Tensor, K: number, N: number) => this.backend.pack(dtype === 'f32' ? t.f32() : t.data, K, N, dtype);
    for (const blk of weights.blocks) {
      for (const k of ['W_Q', 'W_K', 'W_V', 'W_O', 'W_in', 'W_out'] as const) blk[k] = store(blk[k]);
    }
    weights.W_U = store(weights.W_U);
    this.packed = weights.blocks.map((blk, l) => (opts.onProgress?.(l, weights.blocks.length + 1), {
      WQ: pack(Tensor.encode(blk.W_Q.permute(1, 0, 2).f32(), [M, H * D], dtype), M, H * D),
      WK: pack(Tensor.encode(blk.W_K.permute(1, 0, 2).f32(), [M, H * D], dtype), M, H * D),
      WV: pack(Tensor.encode(blk.W_V.permute(1, 0, 2).f32(), [M, H * D], dtype), M, H * D),
      WO: pack(blk.W_O, H * D, M),
      Win: pack(blk.W_in, M, F),
      Wout: pack(blk.W_out, F, M),
    }));
    this.packedWU = pack(weights.W_U, M, V);
    opts.onProgress?.(weights.blocks.length + 1, weights.blocks.length + 1);
    // Embeddings move into the kernels' shared memory, so that worker replicas read them in place.
    if (this.backend instanceof WasmBackend) {
      const be = this.backend;
      const share = (t: Tensor): Tensor => {
        const src = t.f32(), bytes = src.length * 4, ptr = be.arena.alloc(bytes);
        const view = new Float32Array(be.memory.buffer, ptr, src.length);
        view.set(src);
        this.sharedEmbeds.push({ ptr, bytes });
        return new Tensor(view, t.shape);
      };
      weights.W_E = share(weights.W_E);
      weights.W_pos = share(weights.W_pos);
    }
    this.registerHooks();
  }

  /**
   * What a worker needs to run this model without copying its weights: the shared memory and
   * kernel module, addresses of the packed weights and embeddings, and the small tensors (copied).
   * Only for the WASM backend.
   */
  sharedDescriptor(): SharedModel {
    const be = this.backend;
    if (!(be instanceof WasmBackend)) throw new TypelensError(`worker threads need the WASM backend (this model uses ${be.name})`, 'ENOKERNEL');
    const desc = (w: PackedWeight) => { const x = w as PackedWeight & { ptr: number }; return { ptr: x.ptr, bytes: x.bytes, K: x.K, N: x.N, dtype: x.dtype }; };
    const arr = (t?: Tensor) => (t ? { data: Float32Array.from(t.f32()), shape: [...t.shape] } : undefined);
    const embed = (t: Tensor) => ({ ptr: (t.data as Float32Array).byteOffset, shape: [...t.shape] });
    return {
      cfg: this.cfg, memory: be.memory, module: be.module, fma: be.fma,
      packed: this.packed.map((p) => Object.fromEntries(Object.entries(p).map(([k, w]) => [k, desc(w)]))) as SharedModel['packed'],
      packedWU: desc(this.packedWU),
      W_E: embed(this.weights.W_E), W_pos: embed(this.weights.W_pos),
      small: {
        blocks: this.weights.blocks.map((b) => ({
          ln1_w: arr(b.ln1_w), ln1_b: arr(b.ln1_b), ln2_w: arr(b.ln2_w), ln2_b: arr(b.ln2_b),
          b_Q: arr(b.b_Q)!, b_K: arr(b.b_K)!, b_V: arr(b.b_V)!, b_O: arr(b.b_O)!, b_in: arr(b.b_in)!, b_out: arr(b.b_out)!,
        })),
        ln_final_w: arr(this.weights.ln_final_w), ln_final_b: arr(this.weights.ln_final_b), b_U: arr(this.weights.b_U)!,
      },
    };
  }

  /** Rebuild a model from sharedDescriptor() in a worker, over `backend` (same memory). */
  static fromShared(d: SharedModel, backend: WasmBackend): HookedTransformer {
    const t = (x?: { data: Float32Array; shape: number[] }) => (x ? new Tensor(x.data, x.shape) : undefined);
    const none = Tensor.zeros([0]);
    const view = (e: { ptr: number; shape: number[] }) => new Tensor(new Float32Array(d.memory.buffer, e.ptr, e.shape[0] * e.shape[1]), e.shape);
    const weights: Weights = {
      W_E: view(d.W_E), W_pos: view(d.W_pos), W_U: none, b_U: t(d.small.b_U)!,
      ln_final_w: t(d.small.ln_final_w), ln_final_b: t(d.small.ln_final_b),
      blocks: d.small.blocks.map((b) => ({
        ln1_w: t(b.ln1_w), ln1_b: t(b.ln1_b), ln2_w: t(b.ln2_w), ln2_b: t(b.ln2_b),
        b_Q: t(b.b_Q)!, b_K: t(b.b_K)!, b_V: t(b.b_V)!, b_O: t(b.b_O)!, b_in: t(b.b_in)!, b_out: t(b.b_out)!,
        // TL-layout matrices stay with the main thread (analysis); the forward uses the packed ones
        W_Q: none, W_K: none, W_V: none, W_O: none, W_in: none, W_out: none,
      })),
    };
    const packed = d.packed.map((p) => Object.fromEntries(Object.entries(p).map(([k, w]) => [k, backend.adopt(w)]))) as unknown as Packed[];
    return new HookedTransformer(d.cfg, weights, { backend, replica: { packed, packedWU: backend.adopt(d.packedWU) } });
  }

  /** Load a GPT-2-shaped HF checkpoint folder (config.json + model.safetensors). */
  static fromDir(dir: string, opts: LoadOptions = {}): HookedTransformer {
    const cfgPath = join(dir, 'config.json'), stPath = join(dir, 'model.safetensors');
    for (const p of [cfgPath, stPath]) {
      if (!existsSync(p)) throw new TypelensError(`${p} not found (a GPT-2 checkpoint folder needs config.json and model.safetensors)`, 'ENOENT');
    }
    let hf: Record<string, unknown>;
    try { hf = JSON.parse(readFileSync(cfgPath, 'utf8')); } catch (e) {
      throw new TypelensError(`${cfgPath}: not valid JSON (${(e as Error).message})`, 'ECONFIG');
    }
    const cfg = configFromHF(hf, cfgPath, (hf._name_or_path as string) ?? dir);
    const L = cfg.n_layers, total = 2 * L + 2, tick = opts.onProgress;
    tick?.(0, total);
    const W = convertGPT2(readSafetensors(stPath), cfg, { allowNonFinite: opts.allowNonFinite });
    tick?.(1, total);
    processWeights(W, cfg, { ...DEFAULT_PROCESSING, ...pick(opts) }, (l) => tick?.(1 + l, total));
    tick?.(1 + L, total);
    return new HookedTransformer(cfg, W, { ...opts, onProgress: tick && ((d) => tick(1 + L + d, total)) });
  }

  /** Build from HF-layout tensors already in memory (generated models, tests). */
  static fromHFTensors(hf: Record<string, unknown>, tensors: Record<string, StTensorOut> | StFile, opts: LoadOptions = {}): HookedTransformer {
    const cfg = configFromHF(hf, 'config', 'in-memory');
    const st = 'entries' in tensors && tensors.entries instanceof Map ? (tensors as StFile) : safetensorsFromTensors(tensors as Record<string, StTensorOut>);
    const W = convertGPT2(st, cfg, { allowNonFinite: opts.allowNonFinite });
    processWeights(W, cfg, { ...DEFAULT_PROCESSING, ...pick(opts) });
    return new HookedTransformer(cfg, W, opts);
  }

  /** TL's from_pretrained: reads weights/<name>/ (or $TYPELENS_WEIGHTS, or opts.dir). */
  static fromPretrained(name: string, opts: LoadOptions & { dir?: string } = {}): HookedTransformer {
    const canonical = MODEL_ALIASES[name];
    if (!canonical) throw new TypelensError(`unknown model "${name}" (known: ${Object.keys(MODEL_ALIASES).join(', ')})`, 'EMODEL');
    const dir = opts.dir ?? process.env.TYPELENS_WEIGHTS ?? resolve('weights', canonical);
    if (!existsSync(join(dir, 'model.safetensors'))) {
      throw new TypelensError(`${canonical} weights not found in ${dir}: put HuggingFace's config.json + model.safetensors there ` +
        `(\`npx typelens fetch-weights ${canonical}\` once it lands), or point TYPELENS_WEIGHTS at such a folder`, 'ENOENT');
    }
    return HookedTransformer.fromDir(dir, opts);
  }

  static fromPretrainedNoProcessing(name: string, opts: LoadOptions & { dir?: string } = {}): HookedTransformer {
    return HookedTransformer.fromPretrained(name, { ...opts, foldLn: false, centerWritingWeights: false, centerUnembed: false, foldValueBiases: false, refactorFactoredAttnMatrices: false });
  }

  // ---------- hooks ----------
  private registerHooks(): void {
    const reg = (name: string, fires = true) => this.hookDict.set(name, new HookPoint(name, fires));
    reg('hook_embed'); reg('hook_pos_embed');
    for (let l = 0; l < this.cfg.n_layers; l++) {
      const b = `blocks.${l}.`;
      reg(b + 'hook_resid_pre');
      for (const n of ['hook_attn_in', 'hook_q_input', 'hook_k_input', 'hook_v_input']) reg(b + n, false);
      reg(b + 'ln1.hook_scale'); reg(b + 'ln1.hook_normalized');
      for (const n of ['q', 'k', 'v', 'attn_scores', 'pattern', 'z']) reg(`${b}attn.hook_${n}`);
      reg(b + 'attn.hook_result', false);
      reg(b + 'hook_attn_out'); reg(b + 'hook_resid_mid'); reg(b + 'hook_mlp_in', false);
      reg(b + 'ln2.hook_scale'); reg(b + 'ln2.hook_normalized');
      reg(b + 'mlp.hook_pre'); reg(b + 'mlp.hook_post'); reg(b + 'hook_mlp_out'); reg(b + 'hook_resid_post');
    }
    reg('ln_final.hook_scale'); reg('ln_final.hook_normalized');
  }

  /** Hook points matching a name or predicate; an unknown exact name is an error. */
  private matching(filter: NameFilter): HookPoint[] {
    if (typeof filter === 'string') {
      const hp = this.hookDict.get(filter);
      if (!hp) throw new TypelensError(`unknown hook name "${filter}"${suggest(filter, this.hookDict)}`, 'EHOOK');
      return [hp];
    }
    return [...this.hookDict.values()].filter((hp) => filter(hp.name));
  }

  addHook(filter: NameFilter, fn: HookFn, opts: { isPermanent?: boolean; prepend?: boolean; level?: number | null } = {}): void {
    for (const hp of this.matching(filter)) {
      if (hp.name.endsWith('attn.hook_result') && opts.level == null && typeof filter === 'string') {
        throw new TypelensError(`"${hp.name}" needs use_attn_result, which typelens's GPT-2 does not enable`, 'EHOOK');
      }
      hp.addHook(fn, opts);
    }
  }
  /** Whether any hook (permanent or not) is attached anywhere. */
  hasHooks(): boolean { return [...this.hookDict.values()].some((hp) => hp.hooks.length > 0); }
  addPermaHook(filter: NameFilter, fn: HookFn): void { this.addHook(filter, fn, { isPermanent: true }); }

  resetHooks(opts: { clearContexts?: boolean; includingPermanent?: boolean; level?: number | null } = {}): void {
    const { clearContexts = true, includingPermanent = false, level = null } = opts;
    for (const hp of this.hookDict.values()) {
      hp.removeHooks((h) => (includingPermanent || !h.permanent) && (level === null || h.level === level));
      if (clearContexts) hp.ctx = {};
    }
  }

  /** TL's `with model.hooks(fwd_hooks)`: hooks added at a new context level, removed after. */
  hooks<R>(fwdHooks: FwdHook[], body: () => R, opts: { resetHooksEnd?: boolean; clearContexts?: boolean } = {}): R {
    const { resetHooksEnd = true, clearContexts = false } = opts;
    this.contextLevel++;
    const level = this.contextLevel;
    try {
      for (const [f, fn] of fwdHooks) this.addHook(f, fn, { level });
      return body();
    } finally {
      if (resetHooksEnd) this.resetHooks({ clearContexts, level });
      this.contextLevel--;
    }
  }

  runWithHooks(input: TokensInput, opts: RunOptions & { fwdHooks?: FwdHook[]; resetHooksEnd?: boolean; clearContexts?: boolean } = {}): Tensor {
    return this.hooks(opts.fwdHooks ?? [], () => this.forward(input, opts), opts);
  }

  /** Run once and cache activations (copies, taken after any other hooks on the point). */
  runWithCache(input: TokensInput, opts: CacheOptions = {}): { logits: Tensor; cache: ActivationCache } {
    // with startAtLayer the input is a residual stream [B, P, M], passed through as is
    const tokens = opts.startAtLayer != null && input instanceof Tensor ? input : this.tokensOf(input, opts.prependBos);
    const f = opts.namesFilter;
    const want: (n: string) => boolean = f == null ? () => true : typeof f === 'string' ? (n) => n === f : Array.isArray(f) ? (n) => f.includes(n) : f;
    const names = [...this.hookDict.values()].filter((hp) => hp.fires && want(hp.name)).map((hp) => hp.name);
    if (typeof f === 'string' || Array.isArray(f)) {
      for (const n of typeof f === 'string' ? [f] : f) if (!this.hookDict.has(n)) throw new TypelensError(`unknown hook name "${n}"${suggest(n, this.hookDict)}`, 'EHOOK');
    }
    const est = this.estimateCacheBytes(tokens.shape[0], tokens.shape[1], names);
    if (est > this.cacheBudgetBytes) {
      throw new TypelensError(`cache would need ${(est / 2 ** 20).toFixed(1)} MiB, over the ${(this.cacheBudgetBytes / 2 ** 20).toFixed(0)} MiB budget: ` +
        'pass namesFilter or posSlice, or raise cacheBudgetBytes', 'ENOMEM');
    }
    const slice = opts.posSlice == null ? null : Slice.unwrap(opts.posSlice);
    const store = new Map<string, Tensor>();
    const copy = (a: Tensor): Tensor => {
      if (!opts.shared) return a.clone();
      const d = new Float32Array(new SharedArrayBuffer(a.size * 4));
      d.set(a.f32());
      return new Tensor(d, a.shape);
    };
    const hooks: FwdHook[] = names.map((name) => [name, (act: Tensor) => {
      // slice the view first, then copy once: only what is kept is copied
      let t = act;
      if (slice) {
        const zAxis = /hook_(q|k|v|z|result)$/.test(name);
        if (t.ndim >= (zAxis ? 3 : 2)) t = slice.apply(t, zAxis ? -3 : -2);
      }
      if (opts.removeBatchDim) t = t.index(0, 0);
      store.set(name, copy(t));
    }]);
    const logits = this.runWithHooks(tokens, { ...opts, fwdHooks: hooks });
    return { logits, cache: new ActivationCache(store, this, !opts.removeBatchDim) };
  }

  /** Bytes a full-precision cache of these hooks would take for a [B, P] input. */
  estimateCacheBytes(B: number, P: number, names: string[]): number {
    const { d_model: M, n_heads: H, d_head: D, d_mlp: F } = this.cfg;
    let n = 0;
    for (const name of names) {
      if (/hook_(attn_scores|pattern)$/.test(name)) n += B * H * P * P;
      else if (/hook_(q|k|v|z)$/.test(name)) n += B * P * H * D;
      else if (/mlp\.hook_(pre|post)$/.test(name)) n += B * P * F;
      else if (/hook_scale$/.test(name)) n += B * P;
      else n += B * P * M;
    }
    return n * 4;
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
  toString(tokens: Tensor | number[] | number[][]): string | string[] {
    const t = tokens instanceof Tensor ? tokens : Tensor.from(tokens as number[][]);
    if (t.ndim <= 1) return decodeTokens(t.toArray());
    return Array.from({ length: t.shape[0] }, (_, b) => decodeTokens(t.index(0, b).toArray()));
  }
  /** Columns of W_U for tokens: one id -> [M]; [N] -> [N, M]; [B, 2] -> [B, 2, M]. */
  tokensToResidualDirections(tokens: number | string | Tensor | number[]): Tensor {
    const WU = this.weights.W_U;
    if (typeof tokens === 'string') tokens = this.toSingleToken(tokens);
    if (typeof tokens === 'number') return embedding(WU.T, [tokens], [], 'token').reshape([this.cfg.d_model]);
    const t = tokens instanceof Tensor ? tokens : Tensor.from(tokens, [tokens.length]);
    if (t.size === 1) return embedding(WU.T, t.f32(), [], 'token').reshape([this.cfg.d_model]);
    return embedding(WU.T, t);
  }

  private tokensOf(input: TokensInput, prependBos?: boolean): Tensor {
    let t: Tensor;
    if (typeof input === 'string' || (Array.isArray(input) && typeof input[0] === 'string')) t = this.toTokens(input as string | string[], { prependBos });
    else if (input instanceof Tensor) t = input;
    else t = Tensor.from(input as number[] | number[][]);
    if (t.ndim === 1) t = t.unsqueeze(0);
    if (t.ndim !== 2) throw new TypelensError(`tokens must be [batch, pos], got [${t.shape.join(', ')}]`, 'ESHAPE');
    const [B, P] = t.shape;
    if (B === 0 || P === 0) throw new TypelensError('empty input: no tokens to run', 'EINPUT');
    if (P > this.cfg.n_ctx) throw new TypelensError(`input has ${P} tokens, more than n_ctx = ${this.cfg.n_ctx}`, 'ETOKEN');
    const ids = t.f32();
    for (let i = 0; i < ids.length; i++) {
      if (!Number.isInteger(ids[i]) || ids[i] < 0 || ids[i] >= this.cfg.d_vocab) {
        throw new TypelensError(`token id ${ids[i]} at [${Math.floor(i / P)}, ${i % P}] is outside the vocabulary [0, ${this.cfg.d_vocab})`, 'ETOKEN');
      }
    }
    return t.contiguous();
  }

  // ---------- forward ----------
  private fire(name: string, t: Tensor): Tensor {
    const hp = this.hookDict.get(name)!;
    return hp.hooks.length ? hp.run(t) : t;
  }

  /** LN / LNPre with TL's hook order: centre, hook_scale, divide, (w, b), hook_normalized. */
  private norm(x: Tensor, prefix: string, w?: Tensor, b?: Tensor): Tensor {
    const { centred, scale } = centreAndScale(x, this.cfg.eps);
    divideRows(centred, this.fire(`${prefix}.hook_scale`, scale).f32(), x.shape[x.ndim - 1]);
    // TL's LayerNorm applies w and b *inside* hook_normalized (the reference fixtures agree);
    // with LNPre there are no parameters, so the two readings coincide for processed models.
    let out = new Tensor(centred, x.shape);
    if (this.cfg.normalization_type === 'LN' && w && b) out = add(mul(out, w), b);
    return this.fire(`${prefix}.hook_normalized`, out);
  }

  private linear(x: Tensor, w: PackedWeight, bias: Tensor, shape: number[]): Tensor {
    const y = this.backend.matmul(x.f32(), x.size / w.K, w);
    const b = bias.f32(), N = w.N;
    for (let o = 0; o < y.length; o += N) for (let j = 0; j < N; j++) y[o + j] += b[j];
    return new Tensor(y, shape);
  }

  private act(x: Tensor): Tensor {
    switch (this.cfg.act_fn) {
      case 'gelu_new': return geluNew(x);
      case 'relu': return map(x, (v) => (v > 0 ? v : 0));
      case 'gelu': return map(x, (v) => 0.5 * v * (1 + erf(v / Math.SQRT2)));
    }
  }

  private deviceModel(B: number, P: number, start: number, stop: number, final: boolean): DeviceModel {
    const { d_model: M, n_heads: H, d_head: D, d_mlp: F, d_vocab: V } = this.cfg;
    const ln = (w?: Tensor, b?: Tensor): [Float32Array, Float32Array] | undefined =>
      (this.cfg.normalization_type === 'LN' && w && b ? [w.f32(), b.f32()] : undefined);
    const W = this.weights;
    return {
      B, P, M, H, D, F, V, eps: this.cfg.eps, attnScale: this.cfg.attn_scale, start, stop, final,
      blocks: W.blocks.map((k, l) => ({
        ln1: ln(k.ln1_w, k.ln1_b), ln2: ln(k.ln2_w, k.ln2_b),
        bQ: k.b_Q.f32(), bK: k.b_K.f32(), bV: k.b_V.f32(), bO: k.b_O.f32(), bIn: k.b_in.f32(), bOut: k.b_out.f32(),
        WQ: this.packed[l].WQ, WK: this.packed[l].WK, WV: this.packed[l].WV, WO: this.packed[l].WO, Win: this.packed[l].Win, Wout: this.packed[l].Wout,
      })),
      lnFinal: ln(W.ln_final_w, W.ln_final_b), bU: W.b_U.f32(), WU: this.packedWU,
    };
  }

  /**
   * Causal attention scores [B, H, P, P] from q, k [B, P, H, D]: q.k / attn_scale, -inf above the
   * diagonal. Short prompts use a plain loop; from HookedTransformer.ATTN_MATMUL_MIN_POS positions on, each head's
   * q @ k^T goes through the backend's matmul (SIMD, threads), which is what makes long prompts
   * practical (the loop is ~30x slower there).
   */
  private attnScores(q: Float32Array, k: Float32Array, B: number, P: number): Float32Array {
    const { n_heads: H, d_head: D } = this.cfg;
    const scores = new Float32Array(B * H * P * P);
    const inv = 1 / this.cfg.attn_scale;
    if (P < HookedTransformer.ATTN_MATMUL_MIN_POS) {
      for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) for (let i = 0; i < P; i++) {
        const o = ((b * H + h) * P + i) * P, qo = ((b * P + i) * H + h) * D;
        for (let j = 0; j < P; j++) {
          if (j > i) { scores[o + j] = -Infinity; continue; }
          const ko = ((b * P + j) * H + h) * D;
          let s = 0;
          for (let d = 0; d < D; d++) s += q[qo + d] * k[ko + d];
          scores[o + j] = Math.fround(s) * inv;
        }
      }
      return scores;
    }
    const qh = new Float32Array(P * D), kT = new Float32Array(D * P), out = new Float32Array(P * P);
    for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) {
      for (let i = 0; i < P; i++) {
        const src = ((b * P + i) * H + h) * D;
        for (let d = 0; d < D; d++) { qh[i * D + d] = q[src + d]; kT[d * P + i] = k[src + d]; }
      }
      const w = this.backend.pack(kT, D, P, 'f32');
      try { this.backend.matmul(qh, P, w, out); } finally { w.release(); }
      const o = (b * H + h) * P * P;
      for (let i = 0; i < P; i++) for (let j = 0; j < P; j++) scores[o + i * P + j] = j > i ? -Infinity : out[i * P + j] * inv;
    }
    return scores;
  }

  /** z [B, P, H, D] = pattern [B, H, P, P] @ v per head (loop for short prompts, matmul for long). */
  private attnMix(pattern: Float32Array, v: Float32Array, B: number, P: number): Float32Array {
    const { n_heads: H, d_head: D } = this.cfg;
    const z = new Float32Array(B * P * H * D);
    if (P < HookedTransformer.ATTN_MATMUL_MIN_POS) {
      for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) for (let i = 0; i < P; i++) {
        const po = ((b * H + h) * P + i) * P, zo = ((b * P + i) * H + h) * D;
        for (let j = 0; j < P; j++) {
          const p = pattern[po + j];
          if (p === 0) continue;
          const vo = ((b * P + j) * H + h) * D;
          for (let d = 0; d < D; d++) z[zo + d] += p * v[vo + d];
        }
      }
      return z;
    }
    const vh = new Float32Array(P * D), out = new Float32Array(P * D);
    for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) {
      for (let j = 0; j < P; j++) { const src = ((b * P + j) * H + h) * D; for (let d = 0; d < D; d++) vh[j * D + d] = v[src + d]; }
      const w = this.backend.pack(vh, P, D, 'f32');
      const o = (b * H + h) * P * P;
      try { this.backend.matmul(pattern.subarray(o, o + P * P), P, w, out); } finally { w.release(); }
      for (let i = 0; i < P; i++) { const dst = ((b * P + i) * H + h) * D; for (let d = 0; d < D; d++) z[dst + d] = out[i * D + d]; }
    }
    return z;
  }

  /** The model's logits [B, P, V] (or the residual stream when stopAtLayer is given). */
  forward(input: TokensInput, opts: RunOptions = {}): Tensor {
    if (this.disposed) throw new TypelensError('this model was disposed', 'EDISPOSED');
    const { d_model: M, n_heads: H, d_head: D, d_mlp: F, d_vocab: V, n_layers: L } = this.cfg;
    const W = this.weights;
    let resid: Tensor, start = 0;
    if (opts.startAtLayer == null) {
      const tokens = this.tokensOf(input, opts.prependBos);
      const [B, P] = tokens.shape;
      const embed = this.fire('hook_embed', embedding(W.W_E, tokens));
      const pos = this.fire('hook_pos_embed', W.W_pos.slice(0, 0, P).unsqueeze(0).expand([B, P, M]).clone());
      resid = add(embed, pos);
    } else {
      start = opts.startAtLayer < 0 ? opts.startAtLayer + L : opts.startAtLayer;
      if (!Number.isInteger(start) || start < 0 || start > L) throw new TypelensError(`startAtLayer ${opts.startAtLayer} is outside [0, ${L}]`, 'EINPUT');
      if (!(input instanceof Tensor) || input.ndim !== 3 || input.shape[2] !== M || input.shape[1] > this.cfg.n_ctx) {
        const got = input instanceof Tensor ? `[${input.shape.join(', ')}]` : typeof input;
        throw new TypelensError(`with startAtLayer the input must be the residual stream [batch, pos <= ${this.cfg.n_ctx}, ${M}], got ${got}`, 'ESHAPE');
      }
      resid = input.clone(); // hooks may edit the residual in place: never the caller's tensor
    }
    const [B, P] = resid.shape;
    let stop = opts.stopAtLayer ?? L;
    if (stop < 0) stop += L;
    // With the CUDA backend and nothing asking for an activation, the whole pass stays on the device.
    if (this.backend instanceof CudaBackend && this.cfg.act_fn === 'gelu_new' && !this.hasHooks()) {
      const out = cudaForward(this.backend, this.deviceModel(B, P, start, Math.min(stop, L), stop >= L), resid.f32());
      if (stop < L) return new Tensor(out, [B, P, M]);
      const logits = new Tensor(out, [B, P, V]);
      return opts.lastPositionLogits ? logits.slice(1, P - 1, P).contiguous() : logits;
    }
    for (let l = start; l < Math.min(stop, L); l++) {
      const blk = W.blocks[l], pk = this.packed[l], pre = `blocks.${l}.`;
      const residPre = this.fire(pre + 'hook_resid_pre', resid);
      // ln1 runs once per q/k/v input, as in TL (its hooks fire three times)
      const xq = this.norm(residPre, pre + 'ln1', blk.ln1_w, blk.ln1_b);
      const xk = this.norm(residPre, pre + 'ln1', blk.ln1_w, blk.ln1_b);
      const xv = this.norm(residPre, pre + 'ln1', blk.ln1_w, blk.ln1_b);
      const q = this.fire(pre + 'attn.hook_q', this.linear(xq, pk.WQ, blk.b_Q, [B, P, H, D])).f32();
      const k = this.fire(pre + 'attn.hook_k', this.linear(xk, pk.WK, blk.b_K, [B, P, H, D])).f32();
      const v = this.fire(pre + 'attn.hook_v', this.linear(xv, pk.WV, blk.b_V, [B, P, H, D])).f32();
      const sc = this.fire(pre + 'attn.hook_attn_scores', new Tensor(this.attnScores(q, k, B, P), [B, H, P, P]));
      const pattern = this.fire(pre + 'attn.hook_pattern', softmax(sc)).f32();
      const z = this.attnMix(pattern, v, B, P);
      const zt = this.fire(pre + 'attn.hook_z', new Tensor(z, [B, P, H, D]));
      const attnOut = this.fire(pre + 'hook_attn_out', this.linear(zt, pk.WO, blk.b_O, [B, P, M]));
      const residMid = this.fire(pre + 'hook_resid_mid', add(residPre, attnOut));
      const x2 = this.norm(residMid, pre + 'ln2', blk.ln2_w, blk.ln2_b);
      const hPre = this.fire(pre + 'mlp.hook_pre', this.linear(x2, pk.Win, blk.b_in, [B, P, F]));
      const hPost = this.fire(pre + 'mlp.hook_post', this.act(hPre));
      const mlpOut = this.fire(pre + 'hook_mlp_out', this.linear(hPost, pk.Wout, blk.b_out, [B, P, M]));
      resid = this.fire(pre + 'hook_resid_post', add(residMid, mlpOut));
    }
    if (stop < L) return resid;
    const xf = this.norm(resid, 'ln_final', W.ln_final_w, W.ln_final_b);
    if (opts.lastPositionLogits) return this.linear(xf.slice(1, P - 1, P).contiguous(), this.packedWU, W.b_U, [B, 1, V]);
    return this.linear(xf, this.packedWU, W.b_U, [B, P, V]);
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
    if (this.replica) return; // the weights belong to the main thread's model
    for (const p of this.packed) for (const w of Object.values(p)) w.release();
    this.packedWU.release();
    if (this.backend instanceof WasmBackend) for (const e of this.sharedEmbeds) this.backend.arena.release(e.ptr);
  }
}

function pick(o: ProcessingOptions): ProcessingOptions {
  const r: ProcessingOptions = {};
  for (const k of ['foldLn', 'centerWritingWeights', 'centerUnembed', 'foldValueBiases', 'refactorFactoredAttnMatrices'] as const) if (o[k] !== undefined) r[k] = o[k];
  return r;
}

/** erf by its Taylor series near 0 and the erfc continued fraction beyond: ~1e-12, ample for f32. */
function erf(x: number): number {
  const t = Math.abs(x);
  if (t < 2.5) {
    let sum = t, term = t;
    for (let n = 1; n < 60; n++) { term *= -t * t / n; const add = term / (2 * n + 1); sum += add; if (Math.abs(add) < 1e-17) break; }
    return Math.sign(x) * (2 / Math.sqrt(Math.PI)) * sum;
  }
  // erfc continued fraction for large |x|
  let f = 0;
  for (let n = 60; n >= 1; n--) f = n / 2 / (t + f);
  return Math.sign(x) * (1 - Math.exp(-t * t) / Math.sqrt(Math.PI) / (t + f));
}

function suggest(name: string, dict: Map<string, HookPoint>): string {
  const tail = name.split('.').pop() ?? name;
  const close = [...dict.keys()].find((k) => k.endsWith(tail));
  return close ? ` (did you mean "${close}"?)` : '';
}
