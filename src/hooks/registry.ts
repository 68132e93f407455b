import { TypelensError } from '../errors.js';
import { Tensor } from '../tensor/index.js';
import { bytesPerElement, encode, type DType } from '../tensor/dtype.js';
import { HookFn, HookPoint, NameFilter } from './hookpoint.js';
import { activationElements, hookPointTable, ModelDims, posAxis, type HookPointSpec } from './points.js';
import { Slice, SliceInput } from './slice.js';

export type FwdHook = [NameFilter, HookFn];
export interface HookOptions { isPermanent?: boolean; prepend?: boolean; level?: number | null }
export interface ResetOptions { clearContexts?: boolean; includingPermanent?: boolean; level?: number | null }
export interface HooksContextOptions { resetHooksEnd?: boolean; clearContexts?: boolean }
/** What runWithCache adds to a forward's options. */
export interface CacheSettings {
  /**
   * Keep the cached activations in SharedArrayBuffers: worker threads (and pool workers sending
   * caches back) then share them instead of copying.
   */
  shared?: boolean;
  namesFilter?: string | string[] | ((name: string) => boolean);
  posSlice?: SliceInput;
  removeBatchDim?: boolean;
  /**
   * Store the activations as f16 or bf16 (half the memory; TL users run out of memory on caches
   * first). The estimate and budget count the stored bytes; cache methods compute in f32.
   */
  cacheDtype?: DType;
}

/**
 * TransformerLens's HookedRootModule: the hook points of a model (from the table in points.ts)
 * and everything about hooking them: add/reset hooks, the `hooks` context, runWithHooks and the
 * capture half of runWithCache. A model extends it and supplies `forward`.
 */
export abstract class HookedRootModule<In, Opts extends object> {
  readonly hookDict = new Map<string, HookPoint>();
  private readonly specs = new Map<string, HookPointSpec>();
  private contextLevel = 0;
  /** Refuse caches larger than this many bytes before allocating them. */
  cacheBudgetBytes = 8 * 2 ** 30;

  /** The sizes the cache estimate needs (a model's config). */
  abstract readonly cfg: ModelDims;
  abstract forward(input: In, opts?: Opts): Tensor;

  /** Register the hook points of an n-layer model (TL's setup()). */
  protected setupHooks(nLayers: number): void {
    for (const { name, spec } of hookPointTable(nLayers)) {
      this.hookDict.set(name, new HookPoint(name, spec.fires > 0));
      this.specs.set(name, spec);
    }
  }

  /** Run the hooks on a point (the identity when none is attached, or when `name` is no hook point, e.g. `logits`). */
  protected fire(name: string, t: Tensor): Tensor {
    const hp = this.hookDict.get(name);
    return hp && hp.hooks.length ? hp.run(t) : t;
  }

  /** Hook points matching a name or predicate; an unknown exact name is an error. */
  private matching(filter: NameFilter): HookPoint[] {
    if (typeof filter === 'string') return [this.point(filter)];
    return [...this.hookDict.values()].filter((hp) => filter(hp.name));
  }

  private point(name: string): HookPoint {
    const hp = this.hookDict.get(name);
    if (!hp) throw new TypelensError(`unknown hook name "${name}"${suggest(name, this.hookDict)}`, 'EHOOK');
    return hp;
  }

  addHook(filter: NameFilter, fn: HookFn, opts: HookOptions = {}): void {
    for (const hp of this.matching(filter)) {
      const needs = this.specs.get(hp.name)?.needs;
      if (needs && opts.level == null && typeof filter === 'string') {
        throw new TypelensError(`"${hp.name}" needs ${needs}, which typelens's GPT-2 does not enable`, 'EHOOK');
      }
      hp.addHook(fn, opts);
    }
  }
  /** Whether any hook (permanent or not) is attached anywhere. */
  hasHooks(): boolean { return [...this.hookDict.values()].some((hp) => hp.hooks.length > 0); }
  addPermaHook(filter: NameFilter, fn: HookFn): void { this.addHook(filter, fn, { isPermanent: true }); }

  resetHooks(opts: ResetOptions = {}): void {
    const { clearContexts = true, includingPermanent = false, level = null } = opts;
    for (const hp of this.hookDict.values()) {
      hp.removeHooks((h) => (includingPermanent || !h.permanent) && (level === null || h.level === level));
      if (clearContexts) hp.ctx = {};
    }
  }

  /** TL's `with model.hooks(fwd_hooks)`: hooks added at a new context level, removed after. */
  hooks<R>(fwdHooks: FwdHook[], body: () => R, opts: HooksContextOptions = {}): R {
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

  runWithHooks(input: In, opts: Opts & { fwdHooks?: FwdHook[] } & HooksContextOptions = {} as Opts): Tensor {
    return this.hooks(opts.fwdHooks ?? [], () => this.forward(input, opts), opts);
  }

  /** Bytes a cache of these hooks would take for a [B, P] input, stored as `cacheDtype` (f32 unless given). */
  estimateCacheBytes(B: number, P: number, names: string[], cacheDtype: DType = 'f32'): number {
    let n = 0;
    for (const name of names) n += activationElements(this.specs.get(name)?.kind ?? 'resid', B, P, this.cfg);
    return n * bytesPerElement(cacheDtype);
  }

  /**
   * TL's run_with_cache, capture half: run once with a caching hook on every wanted point that
   * fires, and return the activations (copies taken after any other hooks on the point) in firing
   * order. `B, P` size the budget check before anything runs.
   */
  protected capture(input: In, B: number, P: number, opts: Opts & CacheSettings): { logits: Tensor; store: Map<string, Tensor> } {
    const f = opts.namesFilter;
    const want: (n: string) => boolean = f == null ? () => true : typeof f === 'string' ? (n) => n === f : Array.isArray(f) ? (n) => f.includes(n) : f;
    const names = [...this.hookDict.values()].filter((hp) => hp.fires && want(hp.name)).map((hp) => hp.name);
    if (typeof f === 'string' || Array.isArray(f)) for (const n of typeof f === 'string' ? [f] : f) this.point(n);
    const dtype = opts.cacheDtype ?? 'f32';
    if (!['f32', 'f16', 'bf16'].includes(dtype)) throw new TypelensError(`cacheDtype must be 'f32', 'f16' or 'bf16', got ${JSON.stringify(dtype)}`, 'EINVAL');
    const est = this.estimateCacheBytes(B, P, names, dtype);
    if (est > this.cacheBudgetBytes) {
      throw new TypelensError(`cache would need ${(est / 2 ** 20).toFixed(1)} MiB, over the ${(this.cacheBudgetBytes / 2 ** 20).toFixed(0)} MiB budget: ` +
        'pass namesFilter or posSlice, or raise cacheBudgetBytes', 'ENOMEM');
    }
    const slice = opts.posSlice == null ? null : Slice.unwrap(opts.posSlice);
    const store = new Map<string, Tensor>();
    const copy = (a: Tensor): Tensor => {
      if (dtype !== 'f32') {
        const bits = encode(a.f32(), dtype) as Uint16Array; // a fresh array: the copy
        const d = opts.shared ? new Uint16Array(new SharedArrayBuffer(bits.byteLength)) : bits;
        if (d !== bits) d.set(bits);
        return new Tensor(d, a.shape, undefined, 0, dtype);
      }
      if (!opts.shared) return a.clone();
      const d = new Float32Array(new SharedArrayBuffer(a.size * 4));
      d.set(a.f32());
      return new Tensor(d, a.shape);
    };
    const hooks: FwdHook[] = names.map((name) => {
      const axis = posAxis(this.specs.get(name)!.kind);
      return [name, (act: Tensor) => {
        // slice the view first, then copy once: only what is kept is copied
        let t = act;
        if (slice && t.ndim >= -axis) t = slice.apply(t, axis);
        if (opts.removeBatchDim) t = t.index(0, 0);
        store.set(name, copy(t));
      }];
    });
    const logits = this.runWithHooks(input, { ...opts, fwdHooks: hooks });
    return { logits, store };
  }
}

/** " (did you mean ...?)" for a misspelt hook name: a known name with the same last part. */
export function suggest(name: string, dict: Map<string, unknown>): string {
  const tail = name.split('.').pop() ?? name;
  const close = [...dict.keys()].find((k) => k.endsWith(tail));
  return close ? ` (did you mean "${close}"?)` : '';
}
