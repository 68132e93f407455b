// The options of a model's forward (and of runWithCache): TL's forward / run_with_cache keyword
// arguments. In their own module so that modules the model uses (gradients.ts) can name them
// without importing hooked-transformer.ts.
import type { CacheSettings } from '../hooks/registry.js';
import type { Tensor } from '../tensor/index.js';
import type { HookedTransformerKeyValueCache } from './kv-cache.js';
import type { PaddingSide } from './padding.js';

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
  /**
   * [B, P]: 1 for real tokens, 0 for padding (TL's attention_mask). Padding keys are masked in
   * every attention layer and position ids count only real tokens. Absent: built with
   * utils.getAttentionMask when paddingSide is 'left' or a KV cache is used, else none (as TL).
   */
  attentionMask?: Tensor | number[][];
  /** Which side the tokens were padded on (TL's padding_side; default 'right'). */
  paddingSide?: PaddingSide;
  /** TL's past_kv_cache: the input is only the new tokens; keys and values before them come from (and are added to) the cache. */
  pastKvCache?: HookedTransformerKeyValueCache;
  /** TL's return_type: 'logits' (default), 'loss' (scalar, or [B, P-1] with lossPerToken), 'both' ({ logits, loss }), null (nothing). */
  returnType?: ForwardReturnType;
  lossPerToken?: boolean;
}
export type ForwardReturnType = 'logits' | 'loss' | 'both' | null;
export interface CacheOptions extends RunOptions, CacheSettings {}
