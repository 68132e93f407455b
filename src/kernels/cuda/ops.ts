// The layer operations on device buffers (see ../layer-ops.ts): with these, GPT-2's one layer
// sequence keeps every activation on the device; the residual stream goes up once and the logits
// (or the residual, with stopAtLayer) come down once. Used when no hook or cache asks for an
// activation; otherwise the model runs its host ops, where hooks see every activation.
import { numel, Tensor } from '../../tensor/index.js';
import type { DeviceParams, PackedWeight } from '../backend.js';
import type { LayerOps } from '../layer-ops.js';
import type { CudaAddon } from './addon.js';

/** A device buffer (an addon handle) and the shape of the value in it. */
export interface DeviceValue {
  id: number;
  shape: number[];
}

/** What the ops need from the CUDA backend. */
export interface DeviceBuffers {
  readonly cu: CudaAddon;
  /** The buffer for one role, grown on demand and reused between forwards. */
  dev(role: string, n: number): number;
  /** A small host array uploaded once (biases, LN weights). */
  resident(data: Float32Array): number;
  /** The device handle of a weight this backend packed. */
  weightId(w: PackedWeight): number;
}

export function cudaLayerOps(be: DeviceBuffers, p: DeviceParams): LayerOps<DeviceValue> | undefined {
  if (p.actFn !== 'gelu_new') return undefined; // the only activation with a device kernel
  const cu = be.cu;
  // One buffer per role within a block (blocks.3.attn.hook_q -> attn.hook_q): a block's values
  // are dead by the time the next block writes the same role (resid_post is read as the next
  // resid_pre before that block's resid_post is written).
  const out = (name: string, shape: number[]): DeviceValue => ({
    id: be.dev(name.replace(/^blocks\.\d+\./, ''), numel(shape)),
    shape,
  });
  return {
    fromHost(t) {
      const x = out('input', [...t.shape]);
      cu.upload(x.id, t.f32());
      return x;
    },
    toHost(x) {
      const host = new Float32Array(numel(x.shape));
      cu.download(x.id, host);
      return new Tensor(host, x.shape);
    },
    hook: (_name, x) => x,
    layerNorm(prefix, x, params) {
      const d = x.shape[x.shape.length - 1],
        rows = numel(x.shape) / d,
        y = out(prefix, x.shape);
      cu.layerNorm(
        x.id,
        y.id,
        be.dev('ln_scale', rows),
        params ? be.resident(params.w.f32()) : null,
        params ? be.resident(params.b.f32()) : null,
        rows,
        d,
        p.eps,
      );
      return y;
    },
    linear(name, x, w, bias, shape) {
      const y = out(name, shape),
        rows = numel(shape) / w.N;
      cu.matmul(x.id, be.weightId(w), y.id, rows, w.K, w.N);
      cu.addBias(y.id, be.resident(bias.f32()), rows, w.N);
      return y;
    },
    attention(prefix, q, k, v) {
      const [B, P, H, D] = q.shape,
        z = out(`${prefix}.hook_z`, q.shape);
      cu.attention(q.id, k.id, v.id, be.dev('attn.pattern', B * H * P * P), z.id, B, P, H, D, 1 / p.attnScale);
      return z;
    },
    act(name, x) {
      const y = out(name, x.shape);
      cu.gelu(x.id, y.id, numel(x.shape));
      return y;
    },
    add(name, a, b) {
      const y = out(name, a.shape);
      cu.add(a.id, b.id, y.id, numel(a.shape));
      return y;
    },
    lastPosition(x) {
      // a host round trip of the last rows only ([B, M]), small next to the unembedding it saves
      const [B, P, M] = x.shape,
        all = new Float32Array(B * P * M),
        last = new Float32Array(B * M);
      cu.download(x.id, all);
      for (let b = 0; b < B; b++) last.set(all.subarray((b * P + P - 1) * M, (b * P + P) * M), b * M);
      const y = out('last_position', [B, 1, M]);
      cu.upload(y.id, last);
      return y;
    },
  };
}
