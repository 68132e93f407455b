// The layer operations on host tensors, firing TL's hook points (see kernels/layer-ops.ts).
import type { Backend, LayerOps, PackedWeight } from '../kernels/index.js';
import type { AttnOptions, LnParams } from '../kernels/layer-ops.js';
import { add, centreAndScale, geluNew, map, softmax, Tensor } from '../tensor/index.js';
import { erf } from '../util/math.js';
import { attnMix, attnScores } from './attention.js';
import type { ModelConfig } from './config.js';

export interface HostContext {
  cfg: ModelConfig;
  backend: Backend;
  /** Run a hook point's hooks on a value (identity when none is attached or the name is no point). */
  fire(name: string, t: Tensor): Tensor;
  /** Whether the hooks on a point only observe (none, or the cache's capture hooks); absent = never. */
  observesOnly?(name: string): boolean;
  /** From this many positions on, attention's per-head products use the backend's matmul. */
  attnMatmulMinPos: number;
}

/**
 * centred [rows, d] / scale[row], then * w + b when given: one pass with the rounding of the
 * separate ops (divide, multiply, add, each rounded to f32), so the same numbers as
 * divideRows + mul + add without materializing w and b broadcast over the rows.
 */
export function lnFinish(centred: Float32Array, scale: Float32Array, d: number, params?: LnParams): Float32Array {
  if (!params) {
    for (let r = 0; r < scale.length; r++) {
      const s = scale[r],
        o = r * d;
      for (let i = 0; i < d; i++) centred[o + i] /= s;
    }
    return centred;
  }
  const w = params.w.contiguous().f32(),
    b = params.b.contiguous().f32();
  for (let r = 0; r < scale.length; r++) {
    const s = scale[r],
      o = r * d;
    for (let i = 0; i < d; i++) centred[o + i] = Math.fround(Math.fround(centred[o + i] / s) * w[i]) + b[i];
  }
  return centred;
}

export function hostOps(ctx: HostContext): LayerOps<Tensor> {
  const { cfg, backend, fire } = ctx;
  /** [rows, N] += bias[N] per row (one f32 add per element). */
  const addBias = (y: Float32Array, b: Float32Array, N: number) => {
    for (let o = 0; o < y.length; o += N) for (let j = 0; j < N; j++) y[o + j] += b[j];
  };
  const linear = (x: Tensor, w: PackedWeight, bias: Tensor, shape: number[]): Tensor => {
    const a = x.f32(),
      M = x.size / w.K,
      b = bias.contiguous().f32();
    if (backend.linears) return new Tensor(backend.linears(a, M, [w], [b])[0], shape);
    const y = backend.matmul(a, M, w);
    addBias(y, b, w.N);
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
  /** TL's hook order: centre, hook_scale, divide, (w, b), hook_normalized; `firings` times on one value. */
  const layerNorm = (prefix: string, x: Tensor, params: LnParams | undefined, firings: number): Tensor => {
    const { centred, scale } = centreAndScale(x, cfg.eps);
    const s = fire(`${prefix}.hook_scale`, scale);
    // TL's LayerNorm applies w and b *inside* hook_normalized (the reference fixtures agree);
    // with LNPre there are no parameters, so the two readings coincide for processed models.
    const out = fire(
      `${prefix}.hook_normalized`,
      new Tensor(lnFinish(centred, s.contiguous().f32(), x.shape[x.ndim - 1], params), x.shape),
    );
    for (let i = 1; i < firings; i++) {
      fire(`${prefix}.hook_scale`, s);
      fire(`${prefix}.hook_normalized`, out);
    }
    return out;
  };
  return {
    fromHost: (t) => t,
    toHost: (t) => t,
    hook: fire,
    layerNorm: (prefix, x, params?: LnParams) => layerNorm(prefix, x, params, 1),
    layerNormOnce(prefix, x, params, firings) {
      // observers (the cache) see each firing's value, and one value serves them all; a hook that
      // may edit or replace needs TL's separate computations
      const only = ctx.observesOnly;
      if (!only || !only(`${prefix}.hook_scale`) || !only(`${prefix}.hook_normalized`)) return null;
      return layerNorm(prefix, x, params, firings);
    },
    linear: (name, x, w, bias, shape) => fire(name, linear(x, w, bias, shape)),
    linears(names, x, ws, biases, shape) {
      if (!backend.linears) return names.map((n, i) => fire(n, linear(x, ws[i], biases[i], shape)));
      const ys = backend.linears(
        x.f32(),
        x.size / ws[0].K,
        ws,
        biases.map((b) => b.contiguous().f32()),
      );
      return ys.map((y, i) => fire(names[i], new Tensor(y, shape)));
    },
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
