// GPT-2's layers as plain functions (llm.c style), written once against LayerOps: the host runs
// them on tensors with hooks, a backend's device path on device buffers. Shapes: B batch,
// P positions, M d_model, H heads, D d_head, F d_mlp, V d_vocab.
import type { LayerOps, PackedWeight } from '../kernels/index.js';
import type { LnParams } from '../kernels/layer-ops.js';
import * as ag from '../autograd/ops.js';
import { embedding, Tensor } from '../tensor/index.js';
import type { ModelConfig } from './config.js';
import type { PackedBlock } from './packed.js';
import type { BlockWeights, Weights } from './weights.js';

/** w and b of a LayerNorm when the model has them (LN); none for LNPre (folded). */
const lnParams = (cfg: ModelConfig, w?: Tensor, b?: Tensor): LnParams | undefined =>
  (cfg.normalization_type === 'LN' && w && b ? { w, b } : undefined);

/**
 * tokens [B, P] -> resid [B, P, M] = hook_embed(W_E[tokens]) + hook_pos_embed(W_pos[:P]). Host only.
 * The ag.* ops are the tensor core's unless a gradient tape records (then `lookup` is ag.embedding).
 */
export function embed(fire: (name: string, t: Tensor) => Tensor, W: Weights, tokens: Tensor,
  lookup: (table: Tensor, ids: Tensor) => Tensor = embedding): Tensor {
  const [B, P] = tokens.shape, M = W.W_E.shape[1];
  const e = fire('hook_embed', lookup(W.W_E, tokens));
  const pos = fire('hook_pos_embed', ag.copy(ag.expand(ag.unsqueeze(ag.slice(W.W_pos, 0, 0, P), 0), [B, P, M])));
  return ag.add(e, pos);
}

/** resid_pre [B, P, M] -> attn_out [B, P, M]: ln1, q/k/v [B, P, H, D], causal attention, W_O. */
export function attention<X>(ops: LayerOps<X>, cfg: ModelConfig, l: number, blk: BlockWeights, pk: PackedBlock, residPre: X, B: number, P: number): X {
  const { d_model: M, n_heads: H, d_head: D } = cfg, pre = `blocks.${l}.`, ln = lnParams(cfg, blk.ln1_w, blk.ln1_b);
  // ln1 runs once per q/k/v input, as in TL (its hooks fire three times)
  const xq = ops.layerNorm(pre + 'ln1', residPre, ln);
  const xk = ops.layerNorm(pre + 'ln1', residPre, ln);
  const xv = ops.layerNorm(pre + 'ln1', residPre, ln);
  const q = ops.linear(pre + 'attn.hook_q', xq, pk.WQ, blk.b_Q, [B, P, H, D]);
  const k = ops.linear(pre + 'attn.hook_k', xk, pk.WK, blk.b_K, [B, P, H, D]);
  const v = ops.linear(pre + 'attn.hook_v', xv, pk.WV, blk.b_V, [B, P, H, D]);
  const z = ops.attention(pre + 'attn', q, k, v);
  return ops.linear(pre + 'hook_attn_out', z, pk.WO, blk.b_O, [B, P, M]);
}

/** resid_mid [B, P, M] -> mlp_out [B, P, M]: ln2, W_in [B, P, F], activation, W_out. */
export function mlp<X>(ops: LayerOps<X>, cfg: ModelConfig, l: number, blk: BlockWeights, pk: PackedBlock, residMid: X, B: number, P: number): X {
  const { d_model: M, d_mlp: F } = cfg, pre = `blocks.${l}.`;
  const x = ops.layerNorm(pre + 'ln2', residMid, lnParams(cfg, blk.ln2_w, blk.ln2_b));
  const hPre = ops.linear(pre + 'mlp.hook_pre', x, pk.Win, blk.b_in, [B, P, F]);
  const hPost = ops.act(pre + 'mlp.hook_post', hPre);
  return ops.linear(pre + 'hook_mlp_out', hPost, pk.Wout, blk.b_out, [B, P, M]);
}

/** resid [B, P, M] -> resid [B, P, M]: one transformer block (TL's TransformerBlock). */
export function transformerBlock<X>(ops: LayerOps<X>, cfg: ModelConfig, l: number, blk: BlockWeights, pk: PackedBlock, resid: X, B: number, P: number): X {
  const pre = `blocks.${l}.`;
  const residPre = ops.hook(pre + 'hook_resid_pre', resid);
  const residMid = ops.add(pre + 'hook_resid_mid', residPre, attention(ops, cfg, l, blk, pk, residPre, B, P));
  return ops.add(pre + 'hook_resid_post', residMid, mlp(ops, cfg, l, blk, pk, residMid, B, P));
}

/** resid [B, P, M] -> logits [B, P, V] (or [B, 1, V] for the last position only): ln_final, W_U. */
export function unembed<X>(ops: LayerOps<X>, cfg: ModelConfig, W: Weights, WU: PackedWeight, resid: X, B: number, P: number, lastPosition = false): X {
  const x = ops.layerNorm('ln_final', resid, lnParams(cfg, W.ln_final_w, W.ln_final_b));
  if (lastPosition) return ops.linear('logits', ops.lastPosition(x), WU, W.b_U, [B, 1, cfg.d_vocab]);
  return ops.linear('logits', x, WU, W.b_U, [B, P, cfg.d_vocab]);
}
