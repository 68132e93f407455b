import type { DType } from '../tensor/dtype.js';
import type { LayerOps } from './layer-ops.js';
import type { PackedWeight } from './packed-weight.js';

export type { PackedWeight } from './packed-weight.js';

/** Where a packed weight lives in a shared memory (what a worker needs to adopt it). */
export interface PackedDesc {
  ptr: number;
  bytes: number;
  K: number;
  N: number;
  dtype: DType;
}

/**
 * Capability: one WebAssembly.Memory that worker threads can share. The model keeps its packed
 * weights and embeddings there, so replicas in workers read them in place (no copies).
 */
export interface SharedMemory {
  readonly memory: WebAssembly.Memory;
  readonly module: WebAssembly.Module;
  readonly fma: boolean;
  alloc(bytes: number): number;
  release(ptr: number): void;
  /** Where a weight this backend packed lives. */
  describe(w: PackedWeight): PackedDesc;
  /** Wrap a weight already in this memory (packed by the main thread's backend). */
  adopt(d: PackedDesc): PackedWeight;
}

/** What a backend's device path needs to know about the model (GPT-2 hyper-parameters). */
export interface DeviceParams {
  eps: number;
  attnScale: number;
  nHeads: number;
  dHead: number;
  actFn: string;
}

/**
 * The one kernel interface model code sees: a small required core (pack, matmul) and optional
 * named capabilities. The model asks for a capability (`backend.sharedMemory`, `backend.deviceOps`),
 * never tests a backend's class. Activations are contiguous f32.
 */
export interface Backend {
  readonly name: string;
  /** Pack a row-major [K, N] weight given as f32 or as half-precision bits of `dtype`. */
  pack(data: Float32Array | Uint16Array, K: number, N: number, dtype: DType): PackedWeight;
  /** out[M, N] = a[M, K] @ b. */
  matmul(a: Float32Array, M: number, b: PackedWeight, out?: Float32Array): Float32Array;
  /** Capability: memory that worker threads share (model replicas). */
  readonly sharedMemory?: SharedMemory;
  /**
   * Capability: x @ w_i + bias_i for several weights on one input [M, K] (A laid out once), each
   * result [M, N_i] the same numbers as matmul followed by a row-wise f32 bias add.
   */
  linears?(a: Float32Array, M: number, ws: PackedWeight[], biases: Float32Array[]): Float32Array[];
  /**
   * Capability: the layer operations on device-resident buffers, for a forward that no hook or
   * cache observes; undefined when the device cannot run this model (e.g. its activation).
   */
  deviceOps?(p: DeviceParams): LayerOps<unknown> | undefined;
}
