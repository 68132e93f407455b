// The layer operations recording on the gradient tape (src/autograd): the same LayerOps<Tensor>
// as host-ops.ts, each op the differentiable one (ag.*) with the host's arithmetic, so a recorded
// forward gives the same numbers bit for bit. HookedTransformer.forward picks these ops only
// while a tape records (withGrad / grad / tape.run); otherwise nothing here runs.
import * as ag from '../autograd/ops.js';
import type { LayerOps, PackedWeight } from '../kernels/index.js';
import type { LnParams } from '../kernels/layer-ops.js';
import { Tensor } from '../tensor/index.js';
import { attnMix, attnScores } from './attention.js';
import type { HostContext } from './host-ops.js';

export interface GradContext extends HostContext {
  /** The TL-layout leaf behind a packed weight (its gradient's owner, with the transposed packing for dX). */
  mat(w: PackedWeight): ag.MatWeight;
}

export function gradOps(ctx: GradContext): LayerOps<Tensor> {
  const { cfg, backend, fire } = ctx;
  return {
    fromHost: (t) => t,
    toHost: (t) => t,
    hook: fire,
    /** TL's hook order: centre, hook_scale, divide, (w, b), hook_normalized (ag.layerNorm). */
    layerNorm: (prefix, x, params?: LnParams) =>
      ag.layerNorm(x, cfg.eps, params?.w, params?.b, {
        scale: (s) => fire(`${prefix}.hook_scale`, s),
        normalized: (n) => fire(`${prefix}.hook_normalized`, n),
      }),
    linear: (name, x, w, bias, shape) => fire(name, ag.linear(x, ctx.mat(w), bias, backend, shape)),
    attention(prefix, q, k, v) {
      const [B, P, H, D] = q.shape,
        dims = { B, P, H, D };
      // values from the host's kernels (the same numbers as host-ops for any length), backward from ag
      const sc = fire(
        `${prefix}.hook_attn_scores`,
        ag.attnScores(
          q,
          k,
          cfg.attn_scale,
          attnScores(backend, q.f32(), k.f32(), dims, cfg.attn_scale, ctx.attnMatmulMinPos),
        ),
      );
      const pattern = fire(`${prefix}.hook_pattern`, ag.softmax(sc));
      return fire(
        `${prefix}.hook_z`,
        ag.attnMix(pattern, v, attnMix(backend, pattern.f32(), v.f32(), dims, ctx.attnMatmulMinPos)),
      );
    },
    act: (name, x) => fire(name, ag.activation(x, cfg.act_fn)),
    add: (name, a, b) => fire(name, ag.add(a, b)),
    lastPosition: (x) => ag.contiguous(ag.slice(x, 1, x.shape[1] - 1, x.shape[1])),
  };
}
