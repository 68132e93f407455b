// A model's gradient mode: its parameters by TL name (torch's named_parameters), one recorded
// forward + backward returning every parameter's gradient (model.backward), the cache of
// transposed packings and gradient buffers, and the recording layer ops (grad-ops.ts) wired to
// the model's weights. Functions over GradModel, an interface here, so that hooked-transformer.ts
// and this module form no cycle; HookedTransformer's methods call them.
import * as ag from '../autograd/ops.js';
import { withGrad } from '../autograd/tape.js';
import { TypelensError } from '../errors.js';
import type { Backend, LayerOps, PackedWeight } from '../kernels/index.js';
import type { Tensor } from '../tensor/index.js';
import { BwdHook, checkScalarMetric, FwdHook, GradMetric } from '../hooks/registry.js';
import type { ModelConfig } from './config.js';
import { gradOps } from './grad-ops.js';
import type { PackedModel } from './packed.js';
import { BLOCK_KEYS } from './params.js';
import type { RunOptions } from './run-options.js';
import type { TokensInput } from './tokens-input.js';
import type { Weights } from './weights.js';

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

/** What gradient mode needs of a HookedTransformer. */
export interface GradModel {
  readonly cfg: ModelConfig;
  readonly weights: Weights;
  readonly backend: Backend;
  readonly packed: PackedModel;
  readonly attnMatmulMinPos: number;
  readonly onDispose: (() => void)[];
  readonly derivedCopies: { invalidate(leaf?: Tensor): void }[];
  namedParameters(): Map<string, Tensor>;
  runWithHooks(input: TokensInput, opts: RunOptions & { fwdHooks?: FwdHook[]; bwdHooks?: BwdHook[] }): Tensor;
}

/**
 * Every parameter in TL's names and layouts (`embed.W_E`, `blocks.0.attn.W_Q` [H, M, D], ...;
 * LayerNorm weights only while the model has them, i.e. not after fold_ln), the tensors
 * themselves (torch's named_parameters).
 */
export function namedParameters(W: Weights): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  out.set('embed.W_E', W.W_E);
  out.set('pos_embed.W_pos', W.W_pos);
  W.blocks.forEach((blk, l) => {
    for (const [k, n] of BLOCK_KEYS) {
      const t = blk[k];
      if (t) out.set(`blocks.${l}.${n}`, t);
    }
  });
  if (W.ln_final_w) out.set('ln_final.w', W.ln_final_w);
  if (W.ln_final_b) out.set('ln_final.b', W.ln_final_b);
  out.set('unembed.W_U', W.W_U);
  out.set('unembed.b_U', W.b_U);
  return out;
}

/**
 * One recorded forward and one backward from `f(logits)`: the metric's value, the logits, and
 * (unless params: false) every parameter's gradient by TL name (model.backward).
 */
export function backward(model: GradModel, input: TokensInput, f: GradMetric, opts: BackwardOptions): BackwardResult {
  const wantParams = opts.params ?? true;
  const named = wantParams ? model.namedParameters() : null;
  const run = { ...opts, fwdHooks: opts.fwdHooks ?? [], bwdHooks: opts.bwdHooks ?? [] };
  let logits!: Tensor;
  const { out: m, tape } = withGrad((tp) => {
    if (named) tp.watch(...named.values());
    logits = model.runWithHooks(input, run);
    return f(logits);
  });
  checkScalarMetric(m);
  const g = tape.backward(m);
  const paramGrads = new Map<string, Tensor>();
  if (named) for (const [n, t] of named) paramGrads.set(n, opts.views ? g.view(t) : g.get(t));
  return { value: m.item(), logits, paramGrads };
}

/**
 * A new cache of transposed packings and weight-gradient buffers for the model: released at its
 * dispose and told of its weight edits (setWeight, optimizers drop the stale transposed packings).
 */
export function gradPackCache(model: GradModel): ag.PackCache {
  const c = new ag.PackCache(model.backend);
  model.onDispose.push(() => c.release());
  model.derivedCopies.push(c);
  return c;
}

/**
 * The recording layer ops over the model's weights: each packed weight mapped to its TL-layout
 * leaf. The map is remade when a packed weight is not in it (a write through the model, e.g.
 * setWeight or an optimizer's updateWeights, repacks into new PackedWeights).
 */
export function gradLayerOps(
  model: GradModel,
  cache: ag.PackCache,
  fire: (name: string, t: Tensor) => Tensor,
): LayerOps<Tensor> {
  const leaves = (): Map<PackedWeight, ag.MatWeight> => {
    const W = model.weights,
      mats = new Map<PackedWeight, ag.MatWeight>();
    model.packed.blocks.forEach((pk, l) => {
      const blk = W.blocks[l];
      mats.set(pk.WQ, ag.headsInWeight(blk.W_Q, cache, pk.WQ));
      mats.set(pk.WK, ag.headsInWeight(blk.W_K, cache, pk.WK));
      mats.set(pk.WV, ag.headsInWeight(blk.W_V, cache, pk.WV));
      mats.set(pk.WO, ag.headsOutWeight(blk.W_O, cache, pk.WO));
      mats.set(pk.Win, ag.plainWeight(blk.W_in, cache, pk.Win));
      mats.set(pk.Wout, ag.plainWeight(blk.W_out, cache, pk.Wout));
    });
    mats.set(model.packed.WU, ag.plainWeight(W.W_U, cache, model.packed.WU));
    return mats;
  };
  let mats = leaves();
  const mat = (w: PackedWeight): ag.MatWeight => {
    let m = mats.get(w);
    if (!m) m = (mats = leaves()).get(w);
    if (!m) throw new TypelensError('internal: a packed weight with no TL-layout leaf', 'EGRAD');
    return m;
  };
  return gradOps({ cfg: model.cfg, backend: model.backend, fire, attnMatmulMinPos: model.attnMatmulMinPos, mat });
}
