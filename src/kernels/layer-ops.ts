import type { Tensor } from '../tensor/tensor.js';
import type { PackedWeight } from './packed-weight.js';

/**
 * The operations GPT-2's layer sequence (src/model/layers.ts) is written against, so that the
 * sequence exists once whatever runs it. Each producing op takes the TL hook name of its output:
 * on the host (src/model/host-ops.ts) values are Tensors and the hook point fires; on a device
 * (a backend's `deviceOps`) values are device buffers, the name picks a reusable buffer, and no
 * hook fires (the device path only runs when nothing observes the activations).
 * Names are full TL hook names (`blocks.3.attn.hook_q`); a value that is no hook point is named anyway (`logits`).
 */
export interface LayerOps<X> {
  fromHost(t: Tensor): X;
  toHost(x: X): Tensor;
  /** A hook point on an existing value (resid_pre). */
  hook(name: string, x: X): X;
  /** TL's LayerNorm/LNPre at `prefix` (ln1, ln2, ln_final): hook_scale, then hook_normalized. */
  layerNorm(prefix: string, x: X, params?: LnParams): X;
  /** x @ w + bias, reshaped to `shape`, at hook `name`. */
  linear(name: string, x: X, w: PackedWeight, bias: Tensor, shape: number[]): X;
  /** Causal attention at `prefix` (blocks.l.attn): q, k, v [B, P, H, D] -> z [B, P, H, D]. */
  attention(prefix: string, q: X, k: X, v: X): X;
  /** The MLP's activation function. */
  act(name: string, x: X): X;
  add(name: string, a: X, b: X): X;
  /** The last position only: [B, P, M] -> [B, 1, M]. */
  lastPosition(x: X): X;
}

/** A LayerNorm's weight and bias (absent for LNPre, i.e. after fold_ln). */
export interface LnParams { w: Tensor; b: Tensor }
