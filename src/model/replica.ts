// Worker replicas: a model loaded on the main thread, rebuilt in a worker thread over the same
// shared memory (a backend with the `sharedMemory` capability), without copying its weights.
import { TypelensError } from '../errors.js';
import type { Backend, PackedDesc, PackedWeight } from '../kernels/index.js';
import { Arr, Tensor } from '../tensor/index.js';
import type { ModelConfig } from './config.js';
import { HookedTransformer } from './hooked-transformer.js';
import type { PackedBlock } from './packed.js';
import type { BlockWeights, Weights } from './weights.js';

type SmallBlock = {
  ln1_w?: Arr;
  ln1_b?: Arr;
  ln2_w?: Arr;
  ln2_b?: Arr;
  b_Q: Arr;
  b_K: Arr;
  b_V: Arr;
  b_O: Arr;
  b_in: Arr;
  b_out: Arr;
};

/** A model as worker threads see it: addresses in the shared memory, and the small tensors copied. */
export interface SharedModel {
  cfg: ModelConfig;
  memory: WebAssembly.Memory;
  module: WebAssembly.Module;
  fma: boolean;
  packed: Record<keyof PackedBlock, PackedDesc>[];
  packedWU: PackedDesc;
  W_E: { ptr: number; shape: number[] };
  W_pos: { ptr: number; shape: number[] };
  small: { blocks: SmallBlock[]; ln_final_w?: Arr; ln_final_b?: Arr; b_U: Arr };
}

/**
 * What a worker needs to run `model` without copying its weights: the shared memory and kernel
 * module, addresses of the packed weights and embeddings, and the small tensors (copied).
 * Needs a backend with shared memory (WASM).
 */
export function sharedDescriptor(model: HookedTransformer): SharedModel {
  const shared = model.backend.sharedMemory;
  if (!shared)
    throw new TypelensError(
      `worker threads need the WASM backend (this model uses ${model.backend.name})`,
      'ENOKERNEL',
    );
  const arr = (t?: Tensor): Arr | undefined =>
    t ? { data: Float32Array.from(t.f32()), shape: [...t.shape] } : undefined;
  const embed = (t: Tensor) => ({ ptr: (t.data as Float32Array).byteOffset, shape: [...t.shape] });
  const descs = (p: PackedBlock) =>
    Object.fromEntries(Object.entries(p).map(([k, w]) => [k, shared.describe(w)])) as Record<
      keyof PackedBlock,
      PackedDesc
    >;
  const W = model.weights;
  return {
    cfg: model.cfg,
    memory: shared.memory,
    module: shared.module,
    fma: shared.fma,
    packed: model.packed.blocks.map(descs),
    packedWU: shared.describe(model.packed.WU),
    W_E: embed(W.W_E),
    W_pos: embed(W.W_pos),
    small: {
      blocks: W.blocks.map((b) => ({
        ln1_w: arr(b.ln1_w),
        ln1_b: arr(b.ln1_b),
        ln2_w: arr(b.ln2_w),
        ln2_b: arr(b.ln2_b),
        b_Q: arr(b.b_Q)!,
        b_K: arr(b.b_K)!,
        b_V: arr(b.b_V)!,
        b_O: arr(b.b_O)!,
        b_in: arr(b.b_in)!,
        b_out: arr(b.b_out)!,
      })),
      ln_final_w: arr(W.ln_final_w),
      ln_final_b: arr(W.ln_final_b),
      b_U: arr(W.b_U)!,
    },
  };
}

/** A matrix a replica does not hold: reading it is an error that says why. */
function absent<T extends object>(target: T, names: string[]): T {
  for (const name of names) {
    Object.defineProperty(target, name, {
      enumerable: true,
      get: () => {
        throw new TypelensError(
          `${name} is not available in a worker replica (the TL-layout matrices stay with the main thread's model; the forward uses the packed ones)`,
          'EREPLICA',
        );
      },
      set: () => {
        throw new TypelensError(`${name} cannot be set on a worker replica`, 'EREPLICA');
      },
    });
  }
  return target;
}

/** Rebuild a model from sharedDescriptor() in a worker, over `backend` (a backend over the same memory). */
export function fromShared(d: SharedModel, backend: Backend): HookedTransformer {
  const shared = backend.sharedMemory;
  if (!shared)
    throw new TypelensError(`a replica needs a backend with shared memory (got ${backend.name})`, 'ENOKERNEL');
  const t = (x?: Arr) => (x ? new Tensor(x.data, x.shape) : undefined);
  const view = (e: { ptr: number; shape: number[] }) =>
    new Tensor(new Float32Array(d.memory.buffer, e.ptr, e.shape[0] * e.shape[1]), e.shape);
  const weights = absent(
    {
      W_E: view(d.W_E),
      W_pos: view(d.W_pos),
      b_U: t(d.small.b_U)!,
      ln_final_w: t(d.small.ln_final_w),
      ln_final_b: t(d.small.ln_final_b),
      blocks: d.small.blocks.map(
        (b) =>
          absent(
            {
              ln1_w: t(b.ln1_w),
              ln1_b: t(b.ln1_b),
              ln2_w: t(b.ln2_w),
              ln2_b: t(b.ln2_b),
              b_Q: t(b.b_Q)!,
              b_K: t(b.b_K)!,
              b_V: t(b.b_V)!,
              b_O: t(b.b_O)!,
              b_in: t(b.b_in)!,
              b_out: t(b.b_out)!,
            },
            ['W_Q', 'W_K', 'W_V', 'W_O', 'W_in', 'W_out'],
          ) as BlockWeights,
      ),
    },
    ['W_U'],
  ) as Weights;
  const adopt = (w: PackedDesc): PackedWeight => shared.adopt(w);
  const blocks = d.packed.map(
    (p) => Object.fromEntries(Object.entries(p).map(([k, w]) => [k, adopt(w)])) as unknown as PackedBlock,
  );
  return new HookedTransformer(d.cfg, weights, { backend, packed: { blocks, WU: adopt(d.packedWU) } });
}
