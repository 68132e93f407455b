import { TypelensError } from '../errors.js';
import { sameShape, type Tensor } from '../tensor/index.js';

/** A hook receives the live activation and the point; returning a tensor replaces it. */
export type HookFn = (activation: Tensor, hook: HookPoint) => Tensor | void | undefined | null;
/** An exact hook name, or a predicate over all hook names. */
export type NameFilter = string | ((name: string) => boolean);

/**
 * Marks a hook that only reads its activation (never edits it, never returns a replacement): the
 * cache's capture hooks. With only such hooks on a point, the forward may compute a value once for
 * several firings (ln1, see LayerOps.layerNormOnce). Internal: user hooks are never marked.
 */
const OBSERVER = Symbol('typelens.observer');
export function markObserver(fn: HookFn): HookFn {
  (fn as HookFn & { [OBSERVER]?: true })[OBSERVER] = true;
  return fn;
}

export interface HookHandle {
  fn: HookFn;
  level: number | null;
  permanent: boolean;
}
/** TL's hook directions: forward hooks see activations, backward hooks the gradient of the metric at the point. */
export type HookDir = 'fwd' | 'bwd';

/** An identity point in the forward pass with TransformerLens's name and semantics. */
export class HookPoint {
  /** Scratch space for hooks; cleared by resetHooks({ clearContexts: true }). */
  ctx: Record<string, unknown> = {};
  /** Forward hooks, in the order they run. */
  readonly hooks: HookHandle[] = [];
  /**
   * Backward hooks (TL's `add_hook(hook, dir="bwd")`, a torch full backward hook on the identity
   * module): each sees d metric / d (this point's output), the activation's shape, and may return
   * a replacement, which is what flows upstream. They run only when the forward was recorded on a
   * gradient tape (see docs/gradients.md).
   */
  readonly bwdHooks: HookHandle[] = [];
  constructor(
    readonly name: string,
    readonly fires = true,
  ) {}

  /** Whether every forward hook here only observes (true when none is attached). */
  observedOnly(): boolean {
    return this.hooks.every((h) => (h.fn as HookFn & { [OBSERVER]?: true })[OBSERVER] === true);
  }

  /** The layer index from the name's second field (`blocks.9.attn.hook_pattern` -> 9). */
  layer(): number {
    const l = Number(this.name.split('.')[1]);
    if (!Number.isInteger(l)) throw new TypelensError(`hook "${this.name}" has no layer index`, 'EHOOK');
    return l;
  }

  addHook(
    fn: HookFn,
    opts: { isPermanent?: boolean; prepend?: boolean; level?: number | null; dir?: HookDir } = {},
  ): HookHandle {
    const h = { fn, level: opts.level ?? null, permanent: !!opts.isPermanent };
    const list = this.list(opts.dir ?? 'fwd');
    if (opts.prepend) list.unshift(h);
    else list.push(h);
    return h;
  }

  /** Remove the hooks matching `pred` in one direction or both (TL's remove_hooks(dir)). */
  removeHooks(pred: (h: HookHandle) => boolean, dir: HookDir | 'both' = 'fwd'): void {
    for (const d of dir === 'both' ? (['fwd', 'bwd'] as const) : [dir]) {
      const list = this.list(d);
      for (let i = list.length - 1; i >= 0; i--) if (pred(list[i])) list.splice(i, 1);
    }
  }

  private list(dir: HookDir): HookHandle[] {
    if (dir === 'fwd') return this.hooks;
    if (dir === 'bwd') return this.bwdHooks;
    throw new TypelensError(`invalid hook direction "${dir as string}" (use "fwd" or "bwd")`, 'EHOOK');
  }

  /**
   * Run hooks in order; each sees the previous one's output. Replacements must keep the shape.
   * The backward hooks go through here too, on the gradient (`hooks` = a snapshot of bwdHooks).
   */
  run(act: Tensor, hooks: readonly HookHandle[] = this.hooks): Tensor {
    let x = act;
    for (const h of [...hooks]) {
      const r = h.fn(x, this);
      if (r !== undefined && r !== null) {
        if (!sameShape(r.shape, x.shape)) {
          throw new TypelensError(
            `${hooks === this.hooks ? '' : 'backward '}hook on "${this.name}" returned shape [${r.shape.join(', ')}], expected [${x.shape.join(', ')}]`,
            'ESHAPE',
          );
        }
        x = r;
      }
    }
    return x;
  }
}
