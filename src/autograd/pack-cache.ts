/**
 * The weights' lazily packed forward / transposed copies for the backend's matmul kernels, and
 * the weight-gradient buffers kept in the WASM backend's memory and reused across backward passes.
 */
import type { Backend, PackedWeight } from '../kernels/backend.js';
import { getBackend, WasmBackend } from '../kernels/index.js';
import type { Tensor } from '../tensor/index.js';
import { backwardEpoch } from './tape.js';

/** Lazily packed forward / transposed copies of weights, released together. */
export class PackCache {
  private m = new Map<Tensor, { fwd?: PackedWeight; T?: PackedWeight }>();
  private grads = new Map<Tensor, { ptr: number; view: Float32Array; epoch: number }>();
  constructor(readonly backend: Backend = getBackend()) {}
  /**
   * A zeroed gradient buffer for an embedding table of which only `rows` will be written:
   * only the rows written in the previous pass are cleared (a [V, M] table is never swept).
   */
  sparseGradBuffer(leaf: Tensor, rows: ArrayLike<number>, M: number): Float32Array | null {
    const prev = this.grads.has(leaf) ? this.dirty.get(leaf) : null;
    const buf = this.buffer(leaf);
    if (!buf) return null;
    if (!prev)
      buf.fill(0); // new, or last written densely
    else for (const r of prev) buf.fill(0, r * M, r * M + M);
    this.dirty.set(leaf, [...new Set(Array.from(rows))]);
    return buf;
  }
  private dirty = new Map<Tensor, number[]>();
  /**
   * A gradient buffer for `leaf` in the WASM backend's memory (the weight-gradient kernel
   * writes there), reused across backward passes like PyTorch's `.grad`: a gradient handed
   * out from it is valid until the next backward pass. Null when already handed out in this
   * pass (a weight used twice takes the general path) or when the backend is not WASM.
   */
  gradBuffer(leaf: Tensor): Float32Array | null {
    const b = this.buffer(leaf);
    if (b) this.dirty.delete(leaf);
    return b;
  }
  private buffer(leaf: Tensor): Float32Array | null {
    const be = this.backend;
    if (!(be instanceof WasmBackend)) return null;
    const e = backwardEpoch();
    let g = this.grads.get(leaf);
    if (g && g.epoch === e) return null;
    if (!g) {
      const ptr = be.arena.alloc(Math.max(leaf.size, 1) * 4);
      g = { ptr, view: new Float32Array(be.memory.buffer, ptr, leaf.size), epoch: e };
      this.grads.set(leaf, g);
    }
    g.epoch = e;
    return g.view;
  }
  get(leaf: Tensor, kind: 'fwd' | 'T', K: number, N: number, data: () => Float32Array): PackedWeight {
    let e = this.m.get(leaf);
    if (!e) this.m.set(leaf, (e = {}));
    return (e[kind] ??= this.backend.pack(data(), K, N, 'f32'));
  }
  /** Drop the packings of `leaf` (after its values changed), or of every weight. */
  invalidate(leaf?: Tensor): void {
    for (const [k, e] of this.m)
      if (!leaf || k === leaf) {
        e.fwd?.release();
        e.T?.release();
        this.m.delete(k);
      }
  }
  /** Release everything: packings and gradient buffers (gradients handed out become invalid). */
  release(): void {
    this.invalidate();
    const be = this.backend;
    if (be instanceof WasmBackend) for (const g of this.grads.values()) be.arena.release(g.ptr);
    this.grads.clear();
    this.dirty.clear();
  }
}
