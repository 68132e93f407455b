// What a model will need in its backend's memory, known from the config alone, so that a model
// too large for it fails before a byte of its checkpoint is read (not after minutes, deep inside
// a WebAssembly grow).
import { TypelensError } from '../errors.js';
import type { Backend, BackendName } from '../kernels/index.js';
import { getBackend } from '../kernels/index.js';
import type { DType } from '../tensor/index.js';
import type { ModelConfig } from './config.js';

/** A wasm32 memory addresses 4 GiB (65536 pages of 64 KiB). */
export const WASM32_BYTES = 2 ** 32;
/** Panel width the packed layout pads N to (wasm's [N/8][K][8] panels; an upper bound elsewhere). */
const PANEL = 8;
/** Room kept for activations, scratch and the matmul helpers' buffers. */
const HEADROOM = 256 * 2 ** 20;

const packedBytes = (K: number, N: number, dtype: DType) =>
  Math.ceil(N / PANEL) * PANEL * K * (dtype === 'f32' ? 4 : 2);

/**
 * Bytes of backend memory the model's packed weights take: per block W_Q, W_K, W_V [M, H*D],
 * W_O [H*D, M], W_in [M, F], W_out [F, M] in `dtype`, W_U [M, V], plus W_E and W_pos shared in
 * f32 (shareEmbeddings).
 */
export function packedModelBytes(cfg: ModelConfig, dtype: DType): number {
  const { d_model: M, n_heads: H, d_head: D, d_mlp: F, d_vocab: V, n_ctx: C, n_layers: L } = cfg;
  const block =
    3 * packedBytes(M, H * D, dtype) +
    packedBytes(H * D, M, dtype) +
    packedBytes(M, F, dtype) +
    packedBytes(F, M, dtype);
  return L * block + packedBytes(M, V, dtype) + 4 * (V * M + C * M);
}

const gib = (b: number) => `${(b / 2 ** 30).toFixed(2)} GiB`;

/**
 * Refuse, before loading, a model whose packed weights cannot fit the backend's shared
 * WebAssembly memory (one wasm32 memory: 4 GiB). Backends without
 * that capability (the JS reference, CUDA) are not limited here.
 */
export function checkFitsBackend(
  cfg: ModelConfig,
  dtype: DType,
  backend: BackendName | Backend | undefined,
  where: string,
): void {
  const be = typeof backend === 'object' ? backend : getBackend(backend ?? 'auto');
  const mem = be.sharedMemory?.memory;
  if (!mem) return;
  // what is already in use is left to the allocator (freed blocks are reused): this is the bound
  // no amount of freeing can meet
  const need = packedModelBytes(cfg, dtype) + HEADROOM;
  if (need > WASM32_BYTES)
    throw new TypelensError(
      `${where}: this model needs ${gib(need)} of WebAssembly memory for its packed ${dtype} weights ` +
        `(${cfg.n_layers} layers, d_model ${cfg.d_model}), more than the ${gib(WASM32_BYTES)} one wasm32 ` +
        'memory can address; nothing was loaded' +
        (dtype === 'f32' ? ' (dtype bf16 or f16 halves it)' : ''),
      'ENOMEM',
    );
}
