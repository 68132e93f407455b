// The model's parameters under TransformerLens's names, and the guard that keeps every derived
// copy (packed panels, device buffers, worker replicas) in step with them.
//
// Why a guard and not read-only arrays: JavaScript cannot make a typed array read-only
// (Object.freeze throws on one with elements; a Proxy is ~100x slower per element and is not a
// typed array to WebAssembly or TypedArray methods), and handing out copies leaves the silent
// divergence in place (an edit to a copy is lost without a word). So the model detects instead:
//
// - Every parameter tensor whose values have a derived copy (the matmul weights, packed for the
//   kernels; biases and LN weights, uploaded once by the CUDA backend and copied into worker
//   replicas) gets an accessor on its `data`: the first read of the raw storage marks the tensor
//   *exposed* and fingerprints it (a 4-lane Fletcher sum of its bits, which any single change,
//   and any swap of two different values, alters). Nothing else can write into the storage:
//   Tensor views (`.T`, slices) and `f32()` go through `data` too.
// - `checkWeights()` (at the start of every forward, gradient pass and worker-pool run)
//   re-fingerprints only the exposed tensors and throws a TypelensError naming the first that
//   changed, telling the user to call `setWeight`. A model whose big matrices nobody has read
//   pays nothing; biases are read by every forward but are small (gpt2-small: ~0.2M values).
// - Writes through the model (setWeight, loadStateDict, processWeights_, updateWeights) go to
//   the raw storage, repack what changed and re-fingerprint.
// - W_E and W_pos have no derived copy (the embedding is a host gather on every backend, and
//   worker replicas read them in place in shared memory), so direct edits to them take effect,
//   as in TL; they are not guarded.
import { TypelensError } from '../errors.js';
import type { Backend, PackedWeight } from '../kernels/index.js';
import { DType, encode, sameShape, Storage, Tensor } from '../tensor/index.js';
import type { ModelConfig } from './config.js';
import type { PackedBlock, PackedModel } from './packed.js';
import type { BlockWeights, Weights } from './weights.js';

/** Which packing a matmul weight has (see packed.ts): plain [K, N], or W_Q/K/V [H, M, D] as [M, H·D]. */
export type PackKind = 'plain' | 'headsIn';

/** One parameter: its TL name, shape, where it lives in Weights, and its packed copy if any. */
export interface ParamSlot {
  name: string;
  shape: number[];
  /** Weights object and key holding it (a BlockWeights for `blocks.L.*`). */
  owner: Weights | BlockWeights;
  key: string;
  pack?: { block: PackedBlock | null; key: keyof PackedBlock | 'WU'; kind: PackKind; K: number; N: number };
}

/** Block weights' keys and their TL parameter names (`blocks.L.` + name). */
export const BLOCK_KEYS: [keyof BlockWeights, string][] = [
  ['ln1_w', 'ln1.w'],
  ['ln1_b', 'ln1.b'],
  ['W_Q', 'attn.W_Q'],
  ['W_K', 'attn.W_K'],
  ['W_V', 'attn.W_V'],
  ['W_O', 'attn.W_O'],
  ['b_Q', 'attn.b_Q'],
  ['b_K', 'attn.b_K'],
  ['b_V', 'attn.b_V'],
  ['b_O', 'attn.b_O'],
  ['ln2_w', 'ln2.w'],
  ['ln2_b', 'ln2.b'],
  ['W_in', 'mlp.W_in'],
  ['b_in', 'mlp.b_in'],
  ['W_out', 'mlp.W_out'],
  ['b_out', 'mlp.b_out'],
];
const LN_KEYS = new Set(['ln1_w', 'ln1_b', 'ln2_w', 'ln2_b', 'ln_final_w', 'ln_final_b']);
export const isLnKey = (k: string): boolean => LN_KEYS.has(k);

/** TL's state-dict key for a block field, e.g. ('W_out', 3) -> 'blocks.3.mlp.W_out'. */
export function blockParamName(l: number, key: keyof BlockWeights): string {
  return `blocks.${l}.${BLOCK_KEYS.find(([k]) => k === key)![1]}`;
}

/**
 * Every parameter slot of a GPT-2-shaped model in TL's state-dict order, LN weights included
 * whether present or not (`withLn`: only while the config has them, i.e. normalization 'LN').
 */
export function paramSlots(
  cfg: ModelConfig,
  W: Weights,
  packed: PackedModel | null,
  withLn = cfg.normalization_type === 'LN',
): ParamSlot[] {
  const { d_model: M, n_heads: H, d_head: D, d_mlp: F, d_vocab: V, n_ctx: C } = cfg;
  const shapes: Record<string, number[]> = {
    ln1_w: [M],
    ln1_b: [M],
    ln2_w: [M],
    ln2_b: [M],
    W_Q: [H, M, D],
    W_K: [H, M, D],
    W_V: [H, M, D],
    W_O: [H, D, M],
    b_Q: [H, D],
    b_K: [H, D],
    b_V: [H, D],
    b_O: [M],
    W_in: [M, F],
    b_in: [F],
    W_out: [F, M],
    b_out: [M],
  };
  const packs: Record<string, { key: keyof PackedBlock; kind: PackKind; K: number; N: number }> = {
    W_Q: { key: 'WQ', kind: 'headsIn', K: M, N: H * D },
    W_K: { key: 'WK', kind: 'headsIn', K: M, N: H * D },
    W_V: { key: 'WV', kind: 'headsIn', K: M, N: H * D },
    W_O: { key: 'WO', kind: 'plain', K: H * D, N: M },
    W_in: { key: 'Win', kind: 'plain', K: M, N: F },
    W_out: { key: 'Wout', kind: 'plain', K: F, N: M },
  };
  const out: ParamSlot[] = [
    { name: 'embed.W_E', shape: [V, M], owner: W, key: 'W_E' },
    { name: 'pos_embed.W_pos', shape: [C, M], owner: W, key: 'W_pos' },
  ];
  W.blocks.forEach((blk, l) => {
    for (const [k, n] of BLOCK_KEYS) {
      if (isLnKey(k) && !withLn) continue;
      const p = packs[k];
      out.push({
        name: `blocks.${l}.${n}`,
        shape: shapes[k],
        owner: blk,
        key: k,
        pack: p && { ...p, block: packed ? packed.blocks[l] : null },
      });
    }
  });
  if (withLn)
    out.push(
      { name: 'ln_final.w', shape: [M], owner: W, key: 'ln_final_w' },
      { name: 'ln_final.b', shape: [M], owner: W, key: 'ln_final_b' },
    );
  out.push({
    name: 'unembed.W_U',
    shape: [M, V],
    owner: W,
    key: 'W_U',
    pack: { block: null, key: 'WU', kind: 'plain', K: M, N: V },
  });
  out.push({ name: 'unembed.b_U', shape: [V], owner: W, key: 'b_U' });
  return out;
}

/** 4-lane Fletcher sum over the bits of a typed array: cheap, and changed by any edit of one value or a swap of two. */
export function fingerprint(a: Storage): number {
  const w =
    a.byteOffset % 4 === 0 && a.byteLength % 4 === 0
      ? new Int32Array(a.buffer, a.byteOffset, a.byteLength >> 2)
      : Int32Array.from(a);
  let a0 = 0,
    a1 = 0,
    a2 = 0,
    a3 = 0,
    b0 = 0,
    b1 = 0,
    b2 = 0,
    b3 = 0;
  const n = w.length & ~3;
  for (let i = 0; i < n; i += 4) {
    a0 = (a0 + w[i]) | 0;
    b0 = (b0 + a0) | 0;
    a1 = (a1 + w[i + 1]) | 0;
    b1 = (b1 + a1) | 0;
    a2 = (a2 + w[i + 2]) | 0;
    b2 = (b2 + a2) | 0;
    a3 = (a3 + w[i + 3]) | 0;
    b3 = (b3 + a3) | 0;
  }
  for (let i = n; i < w.length; i++) {
    a0 = (a0 + w[i]) | 0;
    b0 = (b0 + a0) | 0;
  }
  let h = 0x811c9dc5;
  for (const v of [a0, a1, a2, a3, b0, b1, b2, b3]) h = Math.imul(h ^ v, 0x01000193);
  return h;
}

interface Guarded {
  name: string;
  raw: Storage;
  exposed: boolean;
  fp: number;
}

const rawOf = new WeakMap<Tensor, Storage>();
/**
 * A parameter tensor's storage without marking it exposed: for typelens code that only reads
 * (packing, gradients, checkpoints). Writing through it bypasses the guard: only the model's
 * own write paths do that.
 */
export function weightStorage(t: Tensor): Storage {
  return rawOf.get(t) ?? t.data;
}

/** The exposure/fingerprint guard of one model (see the comment at the top of this file). */
export class WeightGuard {
  private entries = new Map<Tensor, Guarded>();

  /** Guard `t` (a parameter named `name`): install the accessor on its `data`. */
  watch(name: string, t: Tensor): void {
    if (this.entries.has(t)) {
      this.entries.get(t)!.name = name;
      return;
    }
    const raw = rawOf.get(t) ?? t.data;
    const e: Guarded = { name, raw, exposed: false, fp: 0 };
    this.entries.set(t, e);
    rawOf.set(t, raw);
    Object.defineProperty(t, 'data', {
      configurable: true,
      enumerable: true,
      get: () => {
        if (!e.exposed) {
          e.exposed = true;
          e.fp = fingerprint(e.raw);
        }
        return e.raw;
      },
    });
  }
  /** Stop guarding `t` (it left the model: replaced or folded away). Its data stays readable. */
  unwatch(t: Tensor): void {
    const e = this.entries.get(t);
    if (!e) return;
    this.entries.delete(t);
    Object.defineProperty(t, 'data', { configurable: true, enumerable: true, writable: false, value: e.raw });
  }
  /** After the model wrote into `t`'s storage: the new content is the reference. */
  written(t: Tensor): void {
    const e = this.entries.get(t);
    if (e?.exposed) e.fp = fingerprint(e.raw);
  }
  /** Whether `t`'s storage was written outside the model since the model last wrote it. */
  dirty(t: Tensor): boolean {
    const e = this.entries.get(t);
    return !!e && e.exposed && fingerprint(e.raw) !== e.fp;
  }
  /** Throw, naming the weight, when an exposed tensor's storage changed since the model last wrote it. */
  check(): void {
    for (const e of this.entries.values()) {
      if (!e.exposed) continue;
      if (fingerprint(e.raw) !== e.fp) {
        throw new TypelensError(
          `weight "${e.name}" was modified in place, outside the model: the forward reads packed copies of the ` +
            `weights, which would no longer match it. Write weights with model.setWeight('${e.name}', tensor) ` +
            `(or loadStateDict / updateWeights), which keeps every derived copy in step; to keep the edit already made, ` +
            `call model.setWeight('${e.name}', model.weights…) with the edited tensor itself`,
          'EWEIGHTEDIT',
        );
      }
    }
  }
  /** Tensors currently exposed (for tests and the cost report). */
  exposedNames(): string[] {
    return [...this.entries.values()].filter((e) => e.exposed).map((e) => e.name);
  }
}

/** Storage of `src` (any layout) as contiguous `dtype` data of the slot's shape, checked. */
export function checkedValues(slot: ParamSlot, src: Tensor): Float32Array {
  if (!(src instanceof Tensor))
    throw new TypelensError(`setWeight("${slot.name}"): expected a Tensor, got ${typeof src}`, 'EINPUT');
  if (!sameShape(src.shape, slot.shape)) {
    throw new TypelensError(
      `setWeight("${slot.name}"): shape [${src.shape.join(', ')}] does not match the parameter's [${slot.shape.join(', ')}]`,
      'ESHAPE',
    );
  }
  return src.contiguous().f32();
}

/**
 * Pack a slot's TL-layout values for the backend, the layouts packWeights uses, reading the raw
 * storage (not marking the weight exposed). `dtype` is the model's storage dtype.
 */
export function packSlot(backend: Backend, dtype: DType, slot: ParamSlot, t: Tensor): PackedWeight {
  const p = slot.pack!;
  const r = new Tensor(weightStorage(t), t.shape, undefined, 0, t.dtype);
  if (p.kind === 'headsIn') {
    const f = r.permute(1, 0, 2).contiguous().f32();
    return backend.pack(dtype === 'f32' ? f : encode(f, dtype), p.K, p.N, dtype);
  }
  return backend.pack(dtype === 'f32' ? r.f32() : r.data, p.K, p.N, dtype);
}
