import { TypelensError } from '../errors.js';
import { sameShape, type Tensor } from '../tensor/index.js';

/** A hook receives the live activation and the point; returning a tensor replaces it. */
export type HookFn = (activation: Tensor, hook: HookPoint) => Tensor | void | undefined | null;
/** An exact hook name, or a predicate over all hook names. */
export type NameFilter = string | ((name: string) => boolean);

export interface HookHandle { fn: HookFn; level: number | null; permanent: boolean }

/** An identity point in the forward pass with TransformerLens's name and semantics. */
export class HookPoint {
  /** Scratch space for hooks; cleared by resetHooks({ clearContexts: true }). */
  ctx: Record<string, unknown> = {};
  readonly hooks: HookHandle[] = [];
  constructor(readonly name: string, readonly fires = true) {}

  /** The layer index from the name's second field (`blocks.9.attn.hook_pattern` -> 9). */
  layer(): number {
    const l = Number(this.name.split('.')[1]);
    if (!Number.isInteger(l)) throw new TypelensError(`hook "${this.name}" has no layer index`, 'EHOOK');
    return l;
  }

  addHook(fn: HookFn, opts: { isPermanent?: boolean; prepend?: boolean; level?: number | null } = {}): HookHandle {
    const h = { fn, level: opts.level ?? null, permanent: !!opts.isPermanent };
    if (opts.prepend) this.hooks.unshift(h); else this.hooks.push(h);
    return h;
  }

  removeHooks(pred: (h: HookHandle) => boolean): void {
    for (let i = this.hooks.length - 1; i >= 0; i--) if (pred(this.hooks[i])) this.hooks.splice(i, 1);
  }

  /** Run the hooks in order; each sees the previous one's output. Replacements must keep the shape. */
  run(act: Tensor): Tensor {
    let x = act;
    for (const h of [...this.hooks]) {
      const r = h.fn(x, this);
      if (r !== undefined && r !== null) {
        if (!sameShape(r.shape, x.shape)) {
          throw new TypelensError(`hook on "${this.name}" returned shape [${r.shape.join(', ')}], expected [${x.shape.join(', ')}]`, 'ESHAPE');
        }
        x = r;
      }
    }
    return x;
  }
}
