import { currentTape, hookGrad, withGrad } from '../autograd/tape.js';
import { TypelensError } from '../errors.js';
import { Tensor } from '../tensor/index.js';
import { bytesPerElement, encode, type DType } from '../tensor/dtype.js';
import { HookDir, HookFn, HookPoint, markObserver, NameFilter } from './hookpoint.js';
import { activationElements, hookPointTable, ModelDims, posAxis, type HookPointSpec } from './points.js';
import { Slice, SliceInput } from './slice.js';

export type FwdHook = [NameFilter, HookFn];
/** A backward hook: `fn(grad, hook)` sees d metric / d activation and may return a replacement. */
export type BwdHook = [NameFilter, HookFn];
export interface HookOptions {
  isPermanent?: boolean;
  prepend?: boolean;
  level?: number | null;
  dir?: HookDir;
}
export interface ResetOptions {
  clearContexts?: boolean;
  includingPermanent?: boolean;
  level?: number | null;
  direction?: HookDir | 'both';
}
export interface HooksContextOptions {
  resetHooksEnd?: boolean;
  clearContexts?: boolean;
}
/** A differentiable metric: logits (or whatever the forward returns) -> a scalar Tensor built with `ag.*` ops. */
export type GradMetric = (out: Tensor) => Tensor;
/**
 * An internal listener for gradients at hook points during one recorded forward (runWithCache's
 * `_grad` entries, gpt2Grad): `want` picks points, `onGrad` gets each firing's gradient (after any
 * backward hooks), `firing` counting the point's firings in this forward from 0.
 */
export interface GradTap {
  want(name: string): boolean;
  onGrad(name: string, firing: number, grad: Tensor): void;
  fired?: Map<string, number>;
}
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
   * Also cache `name + '_grad'` for every cached point: d metric / d activation, from one forward
   * recorded on a tape and one backward (TL's incl_bwd). ln1's points fire three times per layer;
   * their `_grad` is the sum over the firings (the gradient with respect to the shared value).
   */
  inclBwd?: boolean;
  /** The metric whose gradient inclBwd caches (default: the model's, the LM loss). */
  metric?: GradMetric;
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
  private gradTaps: GradTap[] = [];
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

  /**
   * Run the hooks on a point (the identity when none is attached, or when `name` is no hook point, e.g. `logits`).
   * While a gradient tape records, the (hooked) output is wrapped in an identity node whose backward
   * runs the point's backward hooks, as torch's full backward hook on TL's identity HookPoint does
   * (transformer_lens/hook_points.py, HookPoint.add_hook with dir="bwd"): once per firing, so ln1,
   * which fires three times, gets three backward calls. The hooks are taken when the point fires, so
   * a hook removed after the forward (runWithHooks resets its hooks) still runs in that backward.
   */
  protected fire(name: string, t: Tensor): Tensor {
    const hp = this.hookDict.get(name);
    if (!hp) return t;
    const x = hp.hooks.length ? hp.run(t) : t;
    if ((hp.bwdHooks.length === 0 && this.gradTaps.length === 0) || currentTape() === null) return x;
    const bwd = [...hp.bwdHooks];
    const taps = this.gradTaps
      .filter((tp) => tp.want(name))
      .map((tp) => {
        const fired = (tp.fired ??= new Map());
        const i = fired.get(name) ?? 0;
        fired.set(name, i + 1);
        return { tp, i };
      });
    if (!bwd.length && !taps.length) return x;
    return hookGrad(x, (g) => {
      const out = bwd.length ? hp.run(g, bwd) : g;
      for (const { tp, i } of taps) tp.onGrad(name, i, out);
      return out === g ? undefined : out;
    });
  }

  /** @internal Whether the hooks on `name` (if it is a point) only observe: none, or the cache's capture hooks. */
  observesOnly(name: string): boolean {
    return this.hookDict.get(name)?.observedOnly() ?? true;
  }

  /** @internal Run `body` with `tap` listening to the gradients of the forwards it records. */
  withGradTap<R>(tap: GradTap, body: () => R): R {
    this.gradTaps.push(tap);
    try {
      return body();
    } finally {
      this.gradTaps = this.gradTaps.filter((t) => t !== tap);
    }
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

  /** Whether a dormant point's TL flag (use_attn_result, ...) is on; the model overrides this. */
  protected flagEnabled(_flag: string): boolean {
    return false;
  }
  /** Whether a hook point fires in a forward (a dormant one only when its flag is on). */
  fires(name: string): boolean {
    const s = this.specs.get(name);
    return !!s && (s.fires > 0 || (!!s.needs && this.flagEnabled(s.needs)));
  }

  addHook(filter: NameFilter, fn: HookFn, opts: HookOptions = {}): void {
    for (const hp of this.matching(filter)) {
      const needs = this.specs.get(hp.name)?.needs;
      if (needs && !this.flagEnabled(needs)) {
        // TL's check_hooks_to_add asserts for a point whose use_* flag is off. A predicate that
        // matches it is let through without attaching (the point never fires).
        if (typeof filter === 'string') {
          const setter = 'setU' + needs.slice(1).replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
          throw new TypelensError(
            `cannot add a hook to "${hp.name}": it needs ${needs} (model.${setter}(true))`,
            'EHOOK',
          );
        }
        continue;
      }
      hp.addHook(fn, opts);
    }
  }
  /** Whether any forward hook (permanent or not) is attached anywhere; with dir 'bwd' or 'both', backward hooks count. */
  hasHooks(dir: HookDir | 'both' = 'fwd'): boolean {
    return [...this.hookDict.values()].some(
      (hp) => (dir !== 'bwd' && hp.hooks.length > 0) || (dir !== 'fwd' && hp.bwdHooks.length > 0),
    );
  }
  addPermaHook(filter: NameFilter, fn: HookFn): void {
    this.addHook(filter, fn, { isPermanent: true });
  }

  /** TL's reset_hooks(clear_contexts, direction, including_permanent, level): direction 'fwd', 'bwd' or 'both' (default). */
  resetHooks(opts: ResetOptions = {}): void {
    const { clearContexts = true, includingPermanent = false, level = null, direction = 'both' } = opts;
    for (const hp of this.hookDict.values()) {
      hp.removeHooks((h) => (includingPermanent || !h.permanent) && (level === null || h.level === level), direction);
      if (clearContexts) hp.ctx = {};
    }
  }

  /**
   * TL's `with model.hooks(fwd_hooks, bwd_hooks, reset_hooks_end, clear_contexts)`: hooks added at a
   * new context level, removed after: `hooks(fwdHooks, body, opts)` or `hooks(fwdHooks, bwdHooks, body, opts)`.
   */
  hooks<R>(fwdHooks: FwdHook[], body: () => R, opts?: HooksContextOptions): R;
  hooks<R>(fwdHooks: FwdHook[], bwdHooks: BwdHook[], body: () => R, opts?: HooksContextOptions): R;
  hooks<R>(
    fwdHooks: FwdHook[],
    a: BwdHook[] | (() => R),
    b?: (() => R) | HooksContextOptions,
    c?: HooksContextOptions,
  ): R {
    const [bwdHooks, body, opts] =
      typeof a === 'function' ? [[], a, (b ?? {}) as HooksContextOptions] : [a, b as () => R, c ?? {}];
    const { resetHooksEnd = true, clearContexts = false } = opts;
    this.contextLevel++;
    const level = this.contextLevel;
    try {
      for (const [f, fn] of fwdHooks) this.addHook(f, fn, { level });
      for (const [f, fn] of bwdHooks) this.addHook(f, fn, { level, dir: 'bwd' });
      return body();
    } finally {
      if (resetHooksEnd) this.resetHooks({ clearContexts, level });
      this.contextLevel--;
    }
  }

  /**
   * TL's run_with_hooks(fwd_hooks, bwd_hooks, reset_hooks_end, clear_contexts). Backward hooks need
   * the forward to be recorded: call it inside `withGrad` and run the backward from your metric, as
   * TL users write `metric(model.run_with_hooks(x, bwd_hooks=...)).backward()`:
   * `const { out, tape } = withGrad(() => metric(model.runWithHooks(x, { bwdHooks }))); tape.backward(out);`
   * (the hooks are taken at the forward, so resetting them at its end, the default, is fine here,
   * unlike TL), or use the model's `backward(x, metric, { bwdHooks })`.
   */
  runWithHooks(
    input: In,
    opts: Opts & { fwdHooks?: FwdHook[]; bwdHooks?: BwdHook[] } & HooksContextOptions = {} as Opts,
  ): Tensor {
    if (opts.bwdHooks?.length && currentTape() === null) {
      throw new TypelensError(
        'backward hooks need a recorded forward: call runWithHooks inside withGrad(() => metric(model.runWithHooks(...))) ' +
          'and then tape.backward(metric), or use model.backward(input, metric, { bwdHooks })',
        'EGRAD',
      );
    }
    return this.hooks(opts.fwdHooks ?? [], opts.bwdHooks ?? [], () => this.forward(input, opts), opts);
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
  protected capture(
    input: In,
    B: number,
    P: number,
    opts: Opts & CacheSettings,
  ): { logits: Tensor; store: Map<string, Tensor>; value?: number } {
    const f = opts.namesFilter;
    const want: (n: string) => boolean =
      f == null ? () => true : typeof f === 'string' ? (n) => n === f : Array.isArray(f) ? (n) => f.includes(n) : f;
    const names = [...this.hookDict.values()].filter((hp) => this.fires(hp.name) && want(hp.name)).map((hp) => hp.name);
    if (typeof f === 'string' || Array.isArray(f)) for (const n of typeof f === 'string' ? [f] : f) this.point(n);
    const dtype = opts.cacheDtype ?? 'f32';
    if (!['f32', 'f16', 'bf16'].includes(dtype))
      throw new TypelensError(`cacheDtype must be 'f32', 'f16' or 'bf16', got ${JSON.stringify(dtype)}`, 'EINVAL');
    const est = this.estimateCacheBytes(B, P, names, dtype) * (opts.inclBwd ? 2 : 1);
    if (est > this.cacheBudgetBytes) {
      throw new TypelensError(
        `cache would need ${(est / 2 ** 20).toFixed(1)} MiB, over the ${(this.cacheBudgetBytes / 2 ** 20).toFixed(0)} MiB budget: ` +
          'pass namesFilter or posSlice, or raise cacheBudgetBytes',
        'ENOMEM',
      );
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
    // slice the view first, then copy once: only what is kept is copied
    const keep = (name: string, act: Tensor): Tensor => {
      const axis = posAxis(this.specs.get(name)!.kind);
      let t = act;
      if (slice && t.ndim >= -axis) t = slice.apply(t, axis);
      if (opts.removeBatchDim) t = t.index(0, 0);
      return copy(t);
    };
    // Copy-on-hook: with no other forward hook anywhere, nothing but the forward touches an
    // activation, and the forward never writes into one it has fired, so the live tensor can be
    // kept as it is. The one exception is aliasing between points (TL: resid_post of block l *is*
    // resid_pre of block l + 1): a tensor already kept under another name is copied, so that every
    // cache entry owns its storage as the copying path gives. Hooks that may edit in place, slices
    // (a view would pin the whole activation), half-precision, shared and gradient caches copy.
    const live = dtype === 'f32' && !opts.shared && !slice && !opts.removeBatchDim && !opts.inclBwd && !this.hasHooks();
    const keptAs = new Map<Tensor, string>();
    const keepLive = (name: string, act: Tensor): Tensor => {
      const other = keptAs.get(act);
      if ((other !== undefined && other !== name) || act.contiguous() !== act) return act.clone();
      keptAs.set(act, name);
      return act;
    };
    const hooks: FwdHook[] = names.map((name) => [
      name,
      markObserver((act: Tensor) => {
        store.set(name, live ? keepLive(name, act) : keep(name, act));
      }),
    ]);
    if (!opts.inclBwd) return { logits: this.runWithHooks(input, { ...opts, fwdHooks: hooks }), store };

    // TL's incl_bwd: one recorded forward, then backward from the metric; `_grad` entries in the
    // order the backward reaches them (TL's too), a point firing several times summed over firings
    const metric = opts.metric ?? this.defaultMetric(input, opts);
    const cached = new Set(names),
      grads = new Map<string, Tensor>();
    const tap: GradTap = {
      want: (n) => cached.has(n),
      onGrad: (n, _i, g) => {
        const prev = grads.get(n)?.f32();
        if (!prev) grads.set(n, new Tensor(Float32Array.from(g.f32()), g.shape));
        else {
          const d = g.f32();
          for (let i = 0; i < d.length; i++) prev[i] += d[i];
        }
      },
    };
    let logits!: Tensor;
    const { out: m, tape } = withGrad(() => {
      logits = this.withGradTap(tap, () => this.runWithHooks(input, { ...opts, fwdHooks: hooks }));
      return metric(logits);
    });
    checkScalarMetric(m);
    tape.backward(m);
    for (const [n, g] of grads) store.set(n + '_grad', keep(n, g));
    return { logits, store, value: m.item() };
  }

  /** The metric runWithCache({ inclBwd }) differentiates when none is given (a model: the LM loss). */
  protected defaultMetric(_input: In, _opts: Opts): GradMetric {
    throw new TypelensError('runWithCache({ inclBwd: true }) needs a metric for this module', 'EGRAD');
  }
}

/** A backward needs a one-element metric (TL: "grad can be implicitly created only for scalar outputs"). */
export function checkScalarMetric(m: unknown): asserts m is Tensor {
  if (!(m instanceof Tensor))
    throw new TypelensError('the metric must return a Tensor (a scalar built with ag.* ops), got ' + typeof m, 'EGRAD');
  if (m.size !== 1) throw new TypelensError(`the metric must be a scalar, got shape [${m.shape.join(', ')}]`, 'EGRAD');
}

/** " (did you mean ...?)" for a misspelt hook name: a known name with the same last part. */
export function suggest(name: string, dict: Map<string, unknown>): string {
  const tail = name.split('.').pop() ?? name;
  const close = [...dict.keys()].find((k) => k.endsWith(tail));
  return close ? ` (did you mean "${close}"?)` : '';
}
