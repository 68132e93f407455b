import type { DType } from '../tensor/dtype.js';

/** A [K, N] weight laid out once for a backend's matmul (weights are packed at load). */
export interface PackedWeight {
  readonly K: number;
  readonly N: number;
  readonly dtype: DType;
  readonly backend: string;
  /** Bytes this packing holds (for memory accounting). */
  readonly bytes: number;
  /** Give the memory back; the weight must not be used afterwards. */
  release(): void;
}

/** The one kernel interface model code sees. Activations are contiguous f32. */
export interface Backend {
  readonly name: string;
  /** Pack a row-major [K, N] weight given as f32 or as half-precision bits of `dtype`. */
  pack(data: Float32Array | Uint16Array, K: number, N: number, dtype: DType): PackedWeight;
  /** out[M, N] = a[M, K] @ b. */
  matmul(a: Float32Array, M: number, b: PackedWeight, out?: Float32Array): Float32Array;
}
