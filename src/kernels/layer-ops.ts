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
  /**
   * TL's LayerNorm at `prefix` computed once for `firings` consumers (ln1 feeds q, k and v), its
   * hook points fired `firings` times in TL's order on the one value. Null when a hook there may
   * edit or replace the value: the caller then runs layerNorm once per consumer, as TL does.
   * Optional (absent = always null).
   */
  layerNormOnce?(prefix: string, x: X, params: LnParams | undefined, firings: number): X | null;
  /** x @ w + bias, reshaped to `shape`, at hook `name`. */
  linear(name: string, x: X, w: PackedWeight, bias: Tensor, shape: number[]): X;
  /**
   * Several linears on one input (q, k, v from one ln1 output) in one pass; output i is
   * linear(names[i], x, ws[i], biases[i], shape) and its hook fires in order. Optional.
   */
  linears?(names: string[], x: X, ws: PackedWeight[], biases: Tensor[], shape: number[]): X[];
  /**
   * Causal attention at `prefix` (blocks.l.attn): q, k, v [B, P, H, D] -> z [B, P, H, D].
   * `opts` (host only; the model never passes it to a device path): the score divisor, a key
   * padding mask, a KV cache entry whose past keys/values come before k and v.
   */
  attention(prefix: string, q: X, k: X, v: X, opts?: AttnOptions): X;
  /** The MLP's activation function. */
  act(name: string, x: X): X;
  add(name: string, a: X, b: X): X;
  /** The last position only: [B, P, M] -> [B, 1, M]. */
  lastPosition(x: X): X;
}

/** What attention may take besides q, k, v (all optional; absent = TL's plain causal attention). */
export interface AttnOptions {
  /** Divisor of the scores (default: the config's attn_scale); TL's scale_attn_by_inverse_layer_idx gives block l attn_scale * (l + 1). */
  scale?: number;
  /** [B, Pk] row-major, 1 = a real token, 0 = padding, over every key position (past ones included). */
  keyMask?: Float32Array;
  /** A KV cache entry (TL's HookedTransformerKeyValueCacheEntry): returns past + new keys and values [B, Pk, H, D], storing them unless frozen. */
  cache?: { append(k: Tensor, v: Tensor): [Tensor, Tensor] };
}

/** A LayerNorm's weight and bias (absent for LNPre, i.e. after fold_ln). */
export interface LnParams {
  w: Tensor;
  b: Tensor;
}
