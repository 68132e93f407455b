import type { DType } from '../tensor/dtype.js';

/** A [K, N] weight laid out once for a backend's matmul (weights are packed at load). */
export interface PackedWeight {
  readonly K: number;
  readonly N: number;
  readonly dtype: DType;
  /** Name of the backend that packed it (its `Backend.name`). */
  readonly backend: string;
  /** Bytes this packing holds (for memory accounting). */
  readonly bytes: number;
  /** Give the memory back; the weight must not be used afterwards. */
  release(): void;
}
