// TL's past_key_value_caching: the keys and values each attention layer has seen, so that
// generation runs only the new positions through the model.
import { TypelensError } from '../errors.js';
import { cat, Tensor } from '../tensor/index.js';
import type { ModelConfig } from './config.js';

/** One layer's past keys and values [B, Pk, H, D] (TL's HookedTransformerKeyValueCacheEntry). */
export class HookedTransformerKeyValueCacheEntry {
  frozen = false;
  constructor(
    public pastKeys: Tensor,
    public pastValues: Tensor,
  ) {}

  static initCacheEntry(cfg: ModelConfig, batchSize: number): HookedTransformerKeyValueCacheEntry {
    const empty = () => Tensor.zeros([batchSize, 0, cfg.n_heads, cfg.d_head]);
    return new HookedTransformerKeyValueCacheEntry(empty(), empty());
  }

  /** Past + new keys and values; stored unless frozen (TL's append). */
  append(newKeys: Tensor, newValues: Tensor): [Tensor, Tensor] {
    if (newKeys.shape[0] !== this.pastKeys.shape[0]) {
      throw new TypelensError(
        `KV cache holds a batch of ${this.pastKeys.shape[0]}, the input is a batch of ${newKeys.shape[0]}`,
        'ESHAPE',
      );
    }
    const k = this.pastKeys.shape[1] === 0 ? newKeys.contiguous() : cat([this.pastKeys, newKeys], 1);
    const v = this.pastValues.shape[1] === 0 ? newValues.contiguous() : cat([this.pastValues, newValues], 1);
    if (!this.frozen) {
      this.pastKeys = k;
      this.pastValues = v;
    }
    return [k, v];
  }
}

/**
 * TL's HookedTransformerKeyValueCache: one entry per layer and the attention mask of every
 * position seen so far. Pass it as `pastKvCache` to forward: the input is then only the new
 * tokens, their positions continue from the cached length, and hooks see only the new positions.
 */
export class HookedTransformerKeyValueCache {
  frozen = false;
  constructor(
    readonly entries: HookedTransformerKeyValueCacheEntry[],
    public previousAttentionMask: Tensor,
  ) {}

  static initCache(cfg: ModelConfig, batchSize: number): HookedTransformerKeyValueCache {
    return new HookedTransformerKeyValueCache(
      Array.from({ length: cfg.n_layers }, () => HookedTransformerKeyValueCacheEntry.initCacheEntry(cfg, batchSize)),
      Tensor.zeros([batchSize, 0]),
    );
  }

  /** Positions cached so far. */
  get length(): number {
    return this.previousAttentionMask.shape[1];
  }
  get batchSize(): number {
    return this.previousAttentionMask.shape[0];
  }

  /** Previous mask + this one [B, Pk]; stored unless frozen (TL's append_attention_mask). */
  appendAttentionMask(mask: Tensor): Tensor {
    const full = this.length === 0 ? mask.contiguous() : cat([this.previousAttentionMask, mask], 1);
    if (!this.frozen) this.previousAttentionMask = full;
    return full;
  }

  /** Stop storing (forwards read the cache without extending it); TL's freeze/unfreeze. */
  freeze(): void {
    this.frozen = true;
    this.entries.forEach((e) => {
      e.frozen = true;
    });
  }
  unfreeze(): void {
    this.frozen = false;
    this.entries.forEach((e) => {
      e.frozen = false;
    });
  }

  at(layer: number): HookedTransformerKeyValueCacheEntry {
    return this.entries[layer];
  }
}
