// The layer operations on host tensors, firing TL's hook points (see kernels/layer-ops.ts).
import type { Backend, LayerOps, PackedWeight } from '../kernels/index.js';
import type { AttnOptions, LnParams } from '../kernels/layer-ops.js';
import { add, centreAndScale, divideRows, geluNew, map, mul, softmax, Tensor } from '../tensor/index.js';
import { erf } from '../util/math.js';
import { attnMix, attnScores } from './attention.js';
import type { ModelConfig } from './config.js';

export interface HostContext {
  cfg: ModelConfig;
  backend: Backend;
  /** Run a hook point's hooks on a value (identity when none is attached or the name is no point). */
  fire(name: string, t: Tensor): Tensor;
  /** From this many positions on, attention's per-head products use the backend's matmul. */
  attnMatmulMinPos: number;
}

export function hostOps(ctx: HostContext): LayerOps<Tensor> {
  const { cfg, backend, fire } = ctx;
  const linear = (x: Tensor, w: PackedWeight, bias: Tensor, shape: number[]): Tensor => {
    const y = backend.matmul(x.f32(), x.size / w.K, w);
    const b = bias.f32(),
      N = w.N;
    for (let o = 0; o < y.length; o += N) for (let j = 0; j < N; j++) y[o + j] += b[j];
    return new Tensor(y, shape);
  };
  const act = (x: Tensor): Tensor => {
    switch (cfg.act_fn) {
      case 'gelu_new':
        return geluNew(x);
      case 'relu':
        return map(x, (v) => (v > 0 ? v : 0));
      case 'gelu':
        return map(x, (v) => 0.5 * v * (1 + erf(v / Math.SQRT2)));
    }
  };
  return {
    fromHost: (t) => t,
    toHost: (t) => t,
    hook: fire,
    /** TL's hook order: centre, hook_scale, divide, (w, b), hook_normalized. */
    layerNorm(prefix, x, params?: LnParams) {
      const { centred, scale } = centreAndScale(x, cfg.eps);
      divideRows(centred, fire(`${prefix}.hook_scale`, scale).f32(), x.shape[x.ndim - 1]);
      // TL's LayerNorm applies w and b *inside* hook_normalized (the reference fixtures agree);
      // with LNPre there are no parameters, so the two readings coincide for processed models.
      let out = new Tensor(centred, x.shape);
      if (params) out = add(mul(out, params.w), params.b);
      return fire(`${prefix}.hook_normalized`, out);
    },
    linear: (name, x, w, bias, shape) => fire(name, linear(x, w, bias, shape)),
    attention(prefix, q, k, v, o: AttnOptions = {}) {
      // with a KV cache, hook_k/hook_v saw only the new positions; attention reads past + new (TL's
      // AbstractAttention.forward: past_kv_cache_entry.append(k, v) after the hooks)
      if (o.cache) [k, v] = o.cache.append(k, v);
      const [B, P, H, D] = q.shape,
        Pk = k.shape[1],
        dims = { B, P, H, D, Pk };
      const sc = fire(
        `${prefix}.hook_attn_scores`,
        new Tensor(
          attnScores(backend, q.f32(), k.f32(), dims, o.scale ?? cfg.attn_scale, ctx.attnMatmulMinPos, o.keyMask),
          [B, H, P, Pk],
        ),
      );
      // a query whose keys are all masked (a left-pad position) gets an all-zero pattern: TL's
      // softmax gives NaN there and AbstractAttention replaces the NaNs with 0 (softmax does so here)
      const pattern = fire(`${prefix}.hook_pattern`, softmax(sc)).f32();
      return fire(
        `${prefix}.hook_z`,
        new Tensor(attnMix(backend, pattern, v.f32(), dims, ctx.attnMatmulMinPos), [B, P, H, D]),
      );
    },
    act: (name, x) => fire(name, act(x)),
    add: (name, a, b) => fire(name, add(a, b)),
    lastPosition: (x) => x.slice(1, x.shape[1] - 1, x.shape[1]).contiguous(),
  };
}
