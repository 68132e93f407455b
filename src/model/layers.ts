// GPT-2's layers as plain functions (llm.c style), written once against LayerOps: the host runs
// them on tensors with hooks, a backend's device path on device buffers. Shapes: B batch,
// P positions, M d_model, H heads, D d_head, F d_mlp, V d_vocab.
import type { LayerOps, PackedWeight } from '../kernels/index.js';
import type { AttnOptions, LnParams } from '../kernels/layer-ops.js';
import * as ag from '../autograd/ops.js';
import { embedding, Tensor } from '../tensor/index.js';
import type { ModelConfig } from './config.js';
import type { PackedBlock } from './packed.js';
import type { BlockWeights, Weights } from './weights.js';

/** w and b of a LayerNorm when the model has them (LN); none for LNPre (folded). */
const lnParams = (cfg: ModelConfig, w?: Tensor, b?: Tensor): LnParams | undefined =>
  cfg.normalization_type === 'LN' && w && b ? { w, b } : undefined;

/**
 * tokens [B, P] -> resid [B, P, M] = hook_embed(W_E[tokens]) + hook_pos_embed(W_pos[:P]). Host only.
 * `positions` (padding or a KV cache): row b's position ids [B * P] and, where `pad` is 0, a zero
 * positional embedding (TL's PosEmbed.forward with an attention mask). The ag.* ops are the tensor
 * core's unless a gradient tape records (then `lookup` is ag.embedding; gradient mode refuses masks).
 */
export function embed(
  fire: (name: string, t: Tensor) => Tensor,
  W: Weights,
  tokens: Tensor,
  positions?: { ids: Int32Array; pad?: Float32Array },
  lookup: (table: Tensor, ids: Tensor) => Tensor = embedding,
): Tensor {
  const [B, P] = tokens.shape,
    M = W.W_E.shape[1];
  const e = fire('hook_embed', lookup(W.W_E, tokens));
  let posEmbed: Tensor;
  if (!positions) posEmbed = ag.copy(ag.expand(ag.unsqueeze(ag.slice(W.W_pos, 0, 0, P), 0), [B, P, M]));
  else {
    const src = W.W_pos.contiguous().f32(),
      out = new Float32Array(B * P * M);
    for (let r = 0; r < B * P; r++)
      if (!positions.pad || positions.pad[r] !== 0)
        out.set(src.subarray(positions.ids[r] * M, (positions.ids[r] + 1) * M), r * M);
    posEmbed = new Tensor(out, [B, P, M]);
  }
  const pos = fire('hook_pos_embed', posEmbed);
  return ag.add(e, pos);
}

/**
 * TL's use_* switches (HookedTransformerConfig.use_attn_result, use_split_qkv_input, use_attn_in,
 * use_hook_mlp_in): each makes a dormant hook point fire. Host only: the model runs these on Tensors.
 */
export interface UseFlags {
  attnResult?: boolean;
  splitQkvInput?: boolean;
  attnIn?: boolean;
  hookMlpIn?: boolean;
}

/** x [B, P, H, M] per head @ W [H, M, D] + b [H, D] -> [B, P, H, D] (TL's einsum for per-head inputs). */
function perHeadLinear(x: Tensor, W: Tensor, b: Tensor): Tensor {
  const [B, P, H, M] = x.shape,
    D = W.shape[2],
    xs = x.contiguous().f32(),
    w = W.contiguous().f32(),
    bs = b.contiguous().f32();
  const out = new Float32Array(B * P * H * D);
  for (let r = 0; r < B * P; r++)
    for (let h = 0; h < H; h++) {
      const xo = (r * H + h) * M,
        oo = (r * H + h) * D,
        wo = h * M * D;
      for (let d = 0; d < D; d++) out[oo + d] = bs[h * D + d];
      for (let m = 0; m < M; m++) {
        const v = xs[xo + m];
        if (v === 0) continue;
        for (let d = 0; d < D; d++) out[oo + d] += v * w[wo + m * D + d];
      }
    }
  return new Tensor(out, [B, P, H, D]);
}

/** z [B, P, H, D] @ W_O [H, D, M] per head -> result [B, P, H, M] (TL's hook_result). */
function headResults(z: Tensor, WO: Tensor): Tensor {
  const [B, P, H, D] = z.shape,
    M = WO.shape[2],
    zs = z.contiguous().f32(),
    w = WO.contiguous().f32();
  const out = new Float32Array(B * P * H * M);
  for (let r = 0; r < B * P; r++)
    for (let h = 0; h < H; h++) {
      const zo = (r * H + h) * D,
        oo = (r * H + h) * M;
      for (let d = 0; d < D; d++) {
        const v = zs[zo + d];
        for (let m = 0; m < M; m++) out[oo + m] += v * w[(h * D + d) * M + m];
      }
    }
  return new Tensor(out, [B, P, H, M]);
}

/** resid [B, P, M] repeated along a new head axis -> [B, P, H, M] (TL's utils.repeat_along_head_dimension, a copy). */
const repeatHeads = (x: Tensor, H: number): Tensor =>
  x.unsqueeze(2).expand([x.shape[0], x.shape[1], H, x.shape[2]]).clone();

/**
 * resid_pre [B, P, M] -> q, k, v [B, P, H, D]. TL's TransformerBlock runs ln1 once per q/k/v input
 * (its hooks fire three times); when those hooks only observe, one ln1 serves all three (fired
 * three times on the one value) and the three products run as one pass over it.
 */
function qkv<X>(
  ops: LayerOps<X>,
  pre: string,
  residPre: X,
  ln: LnParams | undefined,
  blk: BlockWeights,
  pk: PackedBlock,
  shape: number[],
): [X, X, X] {
  const names = [pre + 'attn.hook_q', pre + 'attn.hook_k', pre + 'attn.hook_v'];
  const x = ops.layerNormOnce?.(pre + 'ln1', residPre, ln, 3);
  if (x != null && ops.linears) {
    const [q, k, v] = ops.linears(names, x, [pk.WQ, pk.WK, pk.WV], [blk.b_Q, blk.b_K, blk.b_V], shape);
    return [q, k, v];
  }
  const xq = x ?? ops.layerNorm(pre + 'ln1', residPre, ln);
  const xk = x ?? ops.layerNorm(pre + 'ln1', residPre, ln);
  const xv = x ?? ops.layerNorm(pre + 'ln1', residPre, ln);
  return [
    ops.linear(names[0], xq, pk.WQ, blk.b_Q, shape),
    ops.linear(names[1], xk, pk.WK, blk.b_K, shape),
    ops.linear(names[2], xv, pk.WV, blk.b_V, shape),
  ];
}

/** resid_pre [B, P, M] -> attn_out [B, P, M]: ln1, q/k/v [B, P, H, D], causal attention, W_O. */
export function attention<X>(
  ops: LayerOps<X>,
  cfg: ModelConfig,
  l: number,
  blk: BlockWeights,
  pk: PackedBlock,
  residPre: X,
  B: number,
  P: number,
  attnOpts?: AttnOptions,
  flags?: UseFlags,
): X {
  const { d_model: M, n_heads: H, d_head: D } = cfg,
    pre = `blocks.${l}.`,
    ln = lnParams(cfg, blk.ln1_w, blk.ln1_b);
  if (flags && (flags.attnIn || flags.splitQkvInput || flags.attnResult)) {
    return attentionFlagged(
      ops as unknown as LayerOps<Tensor>,
      cfg,
      l,
      blk,
      pk,
      residPre as unknown as Tensor,
      B,
      P,
      attnOpts,
      flags,
    ) as unknown as X;
  }
  const [q, k, v] = qkv(ops, pre, residPre, ln, blk, pk, [B, P, H, D]);
  const z = attnOpts ? ops.attention(pre + 'attn', q, k, v, attnOpts) : ops.attention(pre + 'attn', q, k, v);
  return ops.linear(pre + 'hook_attn_out', z, pk.WO, blk.b_O, [B, P, M]);
}

/**
 * attention() with TL's use_* switches on (host only). TL's TransformerBlock.forward: with
 * use_attn_in or use_split_qkv_input the residual is repeated per head ([B, P, H, M]);
 * hook_attn_in sees that copy, hook_q/k/v_input each their own copy; ln1 runs per head and q/k/v
 * are per-head products. AbstractAttention.forward with use_attn_result: hook_result [B, P, H, M]
 * = z @ W_O per head, and attn_out = its sum over heads + b_O.
 */
function attentionFlagged(
  ops: LayerOps<Tensor>,
  cfg: ModelConfig,
  l: number,
  blk: BlockWeights,
  pk: PackedBlock,
  residPre: Tensor,
  B: number,
  P: number,
  attnOpts: AttnOptions | undefined,
  flags: UseFlags,
): Tensor {
  const { d_model: M, n_heads: H, d_head: D } = cfg,
    pre = `blocks.${l}.`,
    ln = lnParams(cfg, blk.ln1_w, blk.ln1_b);
  let q: Tensor, k: Tensor, v: Tensor;
  if (flags.attnIn || flags.splitQkvInput) {
    let attnIn = repeatHeads(residPre, H);
    if (flags.attnIn) attnIn = ops.hook(pre + 'hook_attn_in', attnIn);
    const input = (name: string) => (flags.splitQkvInput ? ops.hook(pre + name, attnIn.clone()) : attnIn);
    const qIn = input('hook_q_input'),
      kIn = input('hook_k_input'),
      vIn = input('hook_v_input');
    q = ops.hook(pre + 'attn.hook_q', perHeadLinear(ops.layerNorm(pre + 'ln1', qIn, ln), blk.W_Q, blk.b_Q));
    k = ops.hook(pre + 'attn.hook_k', perHeadLinear(ops.layerNorm(pre + 'ln1', kIn, ln), blk.W_K, blk.b_K));
    v = ops.hook(pre + 'attn.hook_v', perHeadLinear(ops.layerNorm(pre + 'ln1', vIn, ln), blk.W_V, blk.b_V));
  } else {
    const xq = ops.layerNorm(pre + 'ln1', residPre, ln),
      xk = ops.layerNorm(pre + 'ln1', residPre, ln),
      xv = ops.layerNorm(pre + 'ln1', residPre, ln);
    q = ops.linear(pre + 'attn.hook_q', xq, pk.WQ, blk.b_Q, [B, P, H, D]);
    k = ops.linear(pre + 'attn.hook_k', xk, pk.WK, blk.b_K, [B, P, H, D]);
    v = ops.linear(pre + 'attn.hook_v', xv, pk.WV, blk.b_V, [B, P, H, D]);
  }
  const z = attnOpts ? ops.attention(pre + 'attn', q, k, v, attnOpts) : ops.attention(pre + 'attn', q, k, v);
  if (!flags.attnResult) return ops.linear(pre + 'hook_attn_out', z, pk.WO, blk.b_O, [B, P, M]);
  const result = ops
    .hook(pre + 'attn.hook_result', headResults(z, blk.W_O))
    .contiguous()
    .f32();
  const out = new Float32Array(B * P * M),
    bO = blk.b_O.contiguous().f32();
  for (let r = 0; r < B * P; r++)
    for (let m = 0; m < M; m++) {
      let s = 0;
      for (let h = 0; h < H; h++) s += result[(r * H + h) * M + m];
      out[r * M + m] = s + bO[m];
    }
  return ops.hook(pre + 'hook_attn_out', new Tensor(out, [B, P, M]));
}

/** resid_mid [B, P, M] -> mlp_out [B, P, M]: ln2, W_in [B, P, F], activation, W_out. */
export function mlp<X>(
  ops: LayerOps<X>,
  cfg: ModelConfig,
  l: number,
  blk: BlockWeights,
  pk: PackedBlock,
  residMid: X,
  B: number,
  P: number,
  flags?: UseFlags,
): X {
  const { d_model: M, d_mlp: F } = cfg,
    pre = `blocks.${l}.`;
  // TL's TransformerBlock: mlp_in = hook_mlp_in(resid_mid.clone()) with use_hook_mlp_in (host only)
  const mlpIn = flags?.hookMlpIn
    ? ops.hook(pre + 'hook_mlp_in', (residMid as unknown as Tensor).clone() as unknown as X)
    : residMid;
  const x = ops.layerNorm(pre + 'ln2', mlpIn, lnParams(cfg, blk.ln2_w, blk.ln2_b));
  const hPre = ops.linear(pre + 'mlp.hook_pre', x, pk.Win, blk.b_in, [B, P, F]);
  const hPost = ops.act(pre + 'mlp.hook_post', hPre);
  return ops.linear(pre + 'hook_mlp_out', hPost, pk.Wout, blk.b_out, [B, P, M]);
}

/** resid [B, P, M] -> resid [B, P, M]: one transformer block (TL's TransformerBlock). */
export function transformerBlock<X>(
  ops: LayerOps<X>,
  cfg: ModelConfig,
  l: number,
  blk: BlockWeights,
  pk: PackedBlock,
  resid: X,
  B: number,
  P: number,
  attnOpts?: AttnOptions,
  flags?: UseFlags,
): X {
  const pre = `blocks.${l}.`;
  const residPre = ops.hook(pre + 'hook_resid_pre', resid);
  const residMid = ops.add(
    pre + 'hook_resid_mid',
    residPre,
    attention(ops, cfg, l, blk, pk, residPre, B, P, attnOpts, flags),
  );
  return ops.add(pre + 'hook_resid_post', residMid, mlp(ops, cfg, l, blk, pk, residMid, B, P, flags));
}

/** resid [B, P, M] -> logits [B, P, V] (or [B, 1, V] for the last position only): ln_final, W_U. */
export function unembed<X>(
  ops: LayerOps<X>,
  cfg: ModelConfig,
  W: Weights,
  WU: PackedWeight,
  resid: X,
  B: number,
  P: number,
  lastPosition = false,
): X {
  const x = ops.layerNorm('ln_final', resid, lnParams(cfg, W.ln_final_w, W.ln_final_b));
  if (lastPosition) return ops.linear('logits', ops.lastPosition(x), WU, W.b_U, [B, 1, cfg.d_vocab]);
  return ops.linear('logits', x, WU, W.b_U, [B, P, cfg.d_vocab]);
}
