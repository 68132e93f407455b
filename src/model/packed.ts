import type { Backend, PackedWeight, SharedMemory } from '../kernels/index.js';
import { DType, Tensor } from '../tensor/index.js';
import type { ModelConfig } from './config.js';
import type { Weights } from './weights.js';

/** One block's matrices packed for the backend's matmul ([in, out] each). */
export interface PackedBlock {
  WQ: PackedWeight;
  WK: PackedWeight;
  WV: PackedWeight;
  WO: PackedWeight;
  Win: PackedWeight;
  Wout: PackedWeight;
}
export interface PackedModel {
  blocks: PackedBlock[];
  WU: PackedWeight;
}

/**
 * Store the TL-layout matrices in `dtype` (for analysis) and pack them once for the kernels,
 * W_Q/W_K/W_V as [M, H*D] ([H, M, D] permuted) so one matmul yields every head's q, k or v.
 * `onProgress(l, L + 1)` ticks per block and once for W_U.
 */
export function packWeights(
  backend: Backend,
  cfg: ModelConfig,
  weights: Weights,
  dtype: DType,
  onProgress?: (done: number, total: number) => void,
): PackedModel {
  const { d_model: M, n_heads: H, d_head: D, d_mlp: F, d_vocab: V } = cfg;
  const store = (t: Tensor) => (dtype === 'f32' ? t : Tensor.encode(t.f32(), t.shape, dtype));
  const pack = (t: Tensor, K: number, N: number) => backend.pack(dtype === 'f32' ? t.f32() : t.data, K, N, dtype);
  const heads = (t: Tensor) => pack(Tensor.encode(headsToColumns(t.f32(), H, M, D), [M, H * D], dtype), M, H * D);
  for (const blk of weights.blocks) {
    for (const k of ['W_Q', 'W_K', 'W_V', 'W_O', 'W_in', 'W_out'] as const) blk[k] = store(blk[k]);
  }
  weights.W_U = store(weights.W_U);
  const L = weights.blocks.length;
  const blocks = weights.blocks.map(
    (blk, l) => (
      onProgress?.(l, L + 1),
      {
        WQ: heads(blk.W_Q),
        WK: heads(blk.W_K),
        WV: heads(blk.W_V),
        WO: pack(blk.W_O, H * D, M),
        Win: pack(blk.W_in, M, F),
        Wout: pack(blk.W_out, F, M),
      }
    ),
  );
  const WU = pack(weights.W_U, M, V);
  onProgress?.(L + 1, L + 1);
  return { blocks, WU };
}

/** [H, M, D] -> [M, H*D] (head h's D columns at h*D): a plain loop, the generic permute copy is slow at load. */
function headsToColumns(w: Float32Array, H: number, M: number, D: number): Float32Array {
  const out = new Float32Array(H * M * D);
  for (let h = 0; h < H; h++)
    for (let m = 0; m < M; m++) {
      const src = (h * M + m) * D,
        dst = m * H * D + h * D;
      for (let d = 0; d < D; d++) out[dst + d] = w[src + d];
    }
  return out;
}

export function releasePacked(p: PackedModel): void {
  for (const b of p.blocks) for (const w of Object.values(b)) w.release();
  p.WU.release();
}

/**
 * Move W_E and W_pos into the backend's shared memory, so that worker replicas read them in
 * place. Returns the addresses to release at dispose.
 */
export function shareEmbeddings(shared: SharedMemory, weights: Weights): number[] {
  const ptrs: number[] = [];
  const share = (t: Tensor): Tensor => {
    const src = t.f32(),
      ptr = shared.alloc(src.length * 4);
    const view = new Float32Array(shared.memory.buffer, ptr, src.length);
    view.set(src);
    ptrs.push(ptr);
    return new Tensor(view, t.shape);
  };
  weights.W_E = share(weights.W_E);
  weights.W_pos = share(weights.W_pos);
  return ptrs;
}
