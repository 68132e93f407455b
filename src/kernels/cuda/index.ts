import { TypelensError } from '../../errors.js';
import { runtimeConfig } from '../../platform/env.js';
import { platform } from '../../platform/index.js';
import { decode, DType } from '../../tensor/dtype.js';
import type { Backend, DeviceParams, PackedWeight } from '../backend.js';
import type { LayerOps } from '../layer-ops.js';
import type { CudaAddon } from './addon.js';
import { cudaLayerOps } from './ops.js';

export type { CudaAddon } from './addon.js';

let probe: { addon: CudaAddon | null; reason: string } | undefined;

/** Load the addon once: null with the reason when it is not built, fails to load, or sees no GPU. */
export function cudaStatus(): { addon: CudaAddon | null; reason: string } {
  if (probe) return probe;
  // the platform loads the N-API addon (native/build/Release/typelens_cuda.node in Node; none in browsers)
  const loaded = platform.nativeAddon(runtimeConfig().cudaAddon);
  if (!loaded.addon) return (probe = { addon: null, reason: loaded.reason });
  const addon = loaded.addon as CudaAddon;
  const n = addon.deviceCount();
  if (n === 0) return (probe = { addon: null, reason: 'CUDA addon built, but no CUDA device (or driver) is present' });
  return (probe = { addon, reason: `CUDA device: ${addon.deviceName()}` });
}

/** A device buffer that grows on demand and is reused between calls (scratch for activations). */
class Scratch {
  id = 0;
  n = 0;
  constructor(private cu: CudaAddon) {}
  get(n: number): number {
    if (n > this.n) {
      if (this.id) this.cu.free(this.id);
      this.id = this.cu.alloc(n);
      this.n = n;
    }
    return this.id;
  }
}

/**
 * CUDA backend: weights are uploaded once at pack time and stay on the device; a matmul copies the
 * activation in and the result out (the explicit host boundary of the current forward). The fused
 * kernels (layer norm, causal attention, gelu_new) back the `deviceOps` capability (./ops.ts).
 */
export class CudaBackend implements Backend {
  readonly name = 'cuda';
  readonly cu: CudaAddon;
  private named = new Map<string, Scratch>();
  private uploaded = new WeakMap<Float32Array, number>();

  constructor() {
    const { addon, reason } = cudaStatus();
    if (!addon) throw new TypelensError(`CUDA backend unavailable: ${reason}`, 'ENOKERNEL');
    this.cu = addon;
  }

  pack(data: Float32Array | Uint16Array, K: number, N: number, dtype: DType): PackedWeight {
    if (data.length !== K * N)
      throw new TypelensError(`cannot pack ${data.length} values as a [${K}, ${N}] weight`, 'ESHAPE');
    const f32 = data instanceof Float32Array ? data : decode(data, dtype, new Float32Array(K * N));
    const cu = this.cu;
    const id = cu.alloc(K * N);
    cu.upload(id, f32);
    let live = true;
    return {
      K,
      N,
      dtype,
      backend: 'cuda',
      bytes: K * N * 4,
      id,
      release() {
        if (live) {
          cu.free(id);
          live = false;
        }
      },
    } as PackedWeight & { id: number };
  }

  /** Capability: GPT-2's layer operations on device buffers (see ./ops.ts). */
  deviceOps(p: DeviceParams): LayerOps<unknown> | undefined {
    return cudaLayerOps(this, p) as LayerOps<unknown> | undefined;
  }

  weightId(b: PackedWeight): number {
    const w = b as PackedWeight & { id?: number };
    if (w.backend !== 'cuda' || w.id === undefined)
      throw new TypelensError(`weight packed for ${b.backend}, not cuda`, 'ENOKERNEL');
    return w.id;
  }

  matmul(a: Float32Array, M: number, b: PackedWeight, out = new Float32Array(M * b.N)): Float32Array {
    const id = this.weightId(b);
    if (a.length !== M * b.K)
      throw new TypelensError(`matmul: a has ${a.length} values, expected [${M}, ${b.K}]`, 'ESHAPE');
    const A = this.dev('matmul_a', M * b.K),
      C = this.dev('matmul_c', M * b.N);
    this.cu.upload(A, a);
    this.cu.matmul(A, id, C, M, b.K, b.N);
    this.cu.download(C, out);
    return out;
  }

  /** TL's layer norm on rows of d: centred / sqrt(mean sq + eps), then w, b when given. */
  layerNorm(
    x: Float32Array,
    d: number,
    eps: number,
    w?: Float32Array,
    b?: Float32Array,
  ): { out: Float32Array; scale: Float32Array } {
    const rows = x.length / d,
      cu = this.cu;
    const X = this.dev('ln_x', x.length),
      O = this.dev('ln_out', x.length),
      S = this.dev('ln_scale', rows);
    cu.upload(X, x);
    let W: number | null = null,
      Bb: number | null = null;
    if (w && b) {
      W = this.dev('ln_w', d);
      Bb = this.dev('ln_b', d);
      cu.upload(W, w);
      cu.upload(Bb, b);
    }
    cu.layerNorm(X, O, S, W, Bb, rows, d, eps);
    const out = new Float32Array(x.length),
      scale = new Float32Array(rows);
    cu.download(O, out);
    cu.download(S, scale);
    return { out, scale };
  }

  /** Causal attention from q, k, v [B, P, H, D]: pattern [B, H, P, P] and z [B, P, H, D]. */
  attention(
    q: Float32Array,
    k: Float32Array,
    v: Float32Array,
    B: number,
    P: number,
    H: number,
    D: number,
    attnScale: number,
  ): { pattern: Float32Array; z: Float32Array } {
    const n = B * P * H * D,
      cu = this.cu;
    const [Q, K, V, PT, Z] = ['att_q', 'att_k', 'att_v', 'att_pattern', 'att_z'].map((r) =>
      this.dev(r, r === 'att_pattern' ? B * H * P * P : n),
    );
    cu.upload(Q, q);
    cu.upload(K, k);
    cu.upload(V, v);
    cu.attention(Q, K, V, PT, Z, B, P, H, D, 1 / attnScale);
    const pattern = new Float32Array(B * H * P * P),
      z = new Float32Array(n);
    cu.download(PT, pattern);
    cu.download(Z, z);
    return { pattern, z };
  }

  /** A device buffer for one role in a forward pass ("resid", "q", ...), grown on demand and reused. */
  dev(role: string, n: number): number {
    let s = this.named.get(role);
    if (!s) {
      s = new Scratch(this.cu);
      this.named.set(role, s);
    }
    return s.get(n);
  }

  /** Upload a small host array once (biases, LN weights) and keep it on the device. */
  resident(data: Float32Array): number {
    let id = this.uploaded.get(data);
    if (id === undefined) {
      id = this.cu.alloc(data.length);
      this.cu.upload(id, data);
      this.uploaded.set(data, id);
    }
    return id;
  }

  gelu(x: Float32Array): Float32Array {
    const X = this.dev('gelu_x', x.length),
      O = this.dev('gelu_out', x.length);
    this.cu.upload(X, x);
    this.cu.gelu(X, O, x.length);
    const out = new Float32Array(x.length);
    this.cu.download(O, out);
    return out;
  }
}
