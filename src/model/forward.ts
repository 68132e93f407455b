import * as ag from '../autograd/ops.js';
import { currentTape } from '../autograd/tape.js';
import { TypelensError } from '../errors.js';
import type { AttnOptions, Backend, LayerOps } from '../kernels/index.js';
import { Tensor } from '../tensor/index.js';
import { attnScaleOf, type ModelConfig } from './config.js';
import { embed, transformerBlock, unembed, type UseFlags } from './layers.js';
import { lmCrossEntropyLoss } from './loss.js';
import type { PackedModel } from './packed.js';
import { getAttentionMask, maskData, positionIds } from './padding.js';
import type { RunOptions } from './run-options.js';
import { tokensOf, TokensInput } from './tokens-input.js';
import type { Weights } from './weights.js';

// HookedTransformer's forward pass (input preparation, masks, the choice of layer ops, the
// return value), as functions over the few model parts it reads; hooked-transformer.ts keeps
// the thin forward method. This module does not import hooked-transformer.ts.

/** What the forward reads of the model. */
export interface ForwardModel {
  readonly cfg: ModelConfig;
  readonly weights: Weights;
  readonly packed: PackedModel;
  readonly backend: Backend;
  readonly gradPackCache: ag.PackCache;
}

/** The model's runtime pieces the forward uses: its hook firing, host ops, recording ops, hook and use_* state. */
export interface ForwardContext {
  fire: (name: string, t: Tensor) => Tensor;
  host: LayerOps<Tensor>;
  gradOps: () => LayerOps<Tensor>;
  hasHooks: () => boolean;
  flags: UseFlags | undefined;
}

/** The model's logits (or the residual at stopAtLayer, or the loss / both / null per returnType); see HookedTransformer.forward. */
export function forwardPass(
  m: ForwardModel,
  ctx: ForwardContext,
  input: TokensInput,
  opts: RunOptions,
): Tensor | { logits: Tensor; loss: Tensor } | null {
  const { d_model: M, n_layers: L } = m.cfg;
  const rt = opts.returnType === undefined ? 'logits' : opts.returnType;
  if (rt !== null && !['logits', 'loss', 'both'].includes(rt))
    throw new TypelensError(`returnType must be 'logits', 'loss', 'both' or null, got ${JSON.stringify(rt)}`, 'EINPUT');
  const tape = currentTape();
  let resid: Tensor,
    start = 0,
    tokens: Tensor | null = null;
  /** Key mask over past + new positions [B, Pk], and the new positions' part [B, P]. */
  let keyMask: Float32Array | undefined, newMask: Float32Array | undefined;
  const kv = opts.pastKvCache;
  if (opts.startAtLayer == null) {
    tokens = tokensOf(input, m.cfg, opts.prependBos, opts.paddingSide);
    const [B, P] = tokens.shape,
      past = kv ? kv.length : 0;
    if (kv && kv.batchSize !== B)
      throw new TypelensError(`pastKvCache holds a batch of ${kv.batchSize}, the tokens are a batch of ${B}`, 'ESHAPE');
    if (past + P > m.cfg.n_ctx)
      throw new TypelensError(`${past} cached + ${P} new tokens is more than n_ctx = ${m.cfg.n_ctx}`, 'ETOKEN');
    // TL's HookedTransformer.input_to_embed: an explicit mask; else one from the pad ids when
    // padding is on the left or a KV cache is used (later cached steps: the new tokens are real)
    if (opts.attentionMask != null) newMask = maskData(opts.attentionMask, B, P);
    else if (opts.paddingSide === 'left' || kv) {
      newMask =
        kv && past > 0
          ? new Float32Array(B * P).fill(1)
          : getAttentionMask(tokens, {
              padTokenId: m.cfg.bos_token_id,
              paddingSide: opts.paddingSide ?? 'right',
              prependBos: opts.prependBos ?? true,
            }).f32();
    }
    if (newMask)
      keyMask = kv
        ? kv
            .appendAttentionMask(new Tensor(newMask, [B, P]))
            .contiguous()
            .f32()
        : newMask;
    const positions = keyMask ? positionIds(keyMask, B, past + P, P) : undefined;
    if (!tape) resid = embed(ctx.fire, m.weights, tokens, positions);
    else {
      // gradient mode: the embeddings are the graph's roots (watched unless W_E / W_pos already
      // are), so that every hook point has a gradient whatever the caller watched
      const cache = m.gradPackCache;
      resid = embed(
        (n, t) => ctx.fire(n, tape.isTracked(t) ? t : tape.watch(t)),
        m.weights,
        tokens,
        positions,
        (W, ids) => ag.embedding(W, ids, cache),
      );
    }
  } else {
    if (kv) throw new TypelensError('pastKvCache cannot be combined with startAtLayer', 'EINPUT');
    start = opts.startAtLayer < 0 ? opts.startAtLayer + L : opts.startAtLayer;
    if (!Number.isInteger(start) || start < 0 || start > L)
      throw new TypelensError(`startAtLayer ${opts.startAtLayer} is outside [0, ${L}]`, 'EINPUT');
    if (!(input instanceof Tensor) || input.ndim !== 3 || input.shape[2] !== M || input.shape[1] > m.cfg.n_ctx) {
      const got = input instanceof Tensor ? `[${input.shape.join(', ')}]` : typeof input;
      throw new TypelensError(
        `with startAtLayer the input must be the residual stream [batch, pos <= ${m.cfg.n_ctx}, ${M}], got ${got}`,
        'ESHAPE',
      );
    }
    resid = ag.copy(input); // hooks may edit the residual in place: never the caller's tensor
    if (tape && !tape.isTracked(resid)) tape.watch(resid);
    if (opts.attentionMask != null) keyMask = newMask = maskData(opts.attentionMask, input.shape[0], input.shape[1]);
  }
  if (rt === 'loss' || rt === 'both') {
    if (!tokens)
      throw new TypelensError(`returnType '${rt}' needs tokens: it cannot be combined with startAtLayer`, 'EINPUT');
    if (opts.stopAtLayer != null || opts.lastPositionLogits)
      throw new TypelensError(
        `returnType '${rt}' needs the logits of every position (no stopAtLayer, no lastPositionLogits)`,
        'EINPUT',
      );
  }
  let stop = opts.stopAtLayer ?? L;
  if (stop < 0) stop += L;
  // With nothing asking for an activation, a backend with a device path keeps the whole pass
  // there. Masks, KV caches and per-layer score scaling run on the host only.
  const flags = ctx.flags;
  if (tape && (keyMask || kv || m.cfg.scale_attn_by_inverse_layer_idx || flags)) {
    // the recording ops (grad-ops.ts) implement plain causal attention only: refuse rather than differentiate the wrong forward
    throw new TypelensError(
      'gradient mode does not support attention masks, KV caches, use_* switches or scale_attn_by_inverse_layer_idx yet: run unpadded prompts without them',
      'EGRAD',
    );
  }
  if (tape) return finishForward(rt, runLayers(m, ctx.gradOps(), resid, start, stop, opts), tokens, newMask, opts);
  const hostOnly = ctx.hasHooks() || keyMask || kv || m.cfg.scale_attn_by_inverse_layer_idx || flags;
  const device = hostOnly
    ? undefined
    : m.backend.deviceOps?.({
        eps: m.cfg.eps,
        attnScale: m.cfg.attn_scale,
        nHeads: m.cfg.n_heads,
        dHead: m.cfg.d_head,
        actFn: m.cfg.act_fn,
      });
  const attnOpts = hostOnly
    ? (l: number): AttnOptions => ({ scale: attnScaleOf(m.cfg, l), keyMask, cache: kv?.entries[l] })
    : undefined;
  const out = device
    ? runLayers(m, device, resid, start, stop, opts)
    : runLayers(m, ctx.host, resid, start, stop, opts, attnOpts, flags);
  return finishForward(rt, out, tokens, newMask, opts);
}

/** The forward's return value for returnType (TL's forward: loss_fn(logits, tokens, attention_mask, per_token)). */
export function finishForward(
  rt: 'logits' | 'loss' | 'both' | null,
  out: Tensor,
  tokens: Tensor | null,
  newMask: Float32Array | undefined,
  opts: RunOptions,
): Tensor | { logits: Tensor; loss: Tensor } | null {
  if (rt === 'logits') return out;
  if (rt === null) return null;
  const loss = lmCrossEntropyLoss(out, tokens!, { attentionMask: newMask, perToken: opts.lossPerToken });
  return rt === 'loss' ? loss : { logits: out, loss };
}

/** GPT-2's layer sequence over `ops` (host tensors or device buffers), blocks [start, stop). */
export function runLayers<X>(
  m: ForwardModel,
  ops: LayerOps<X>,
  resid: Tensor,
  start: number,
  stop: number,
  opts: RunOptions,
  attnOpts?: (l: number) => AttnOptions,
  flags?: UseFlags,
): Tensor {
  const L = m.cfg.n_layers,
    [B, P] = resid.shape;
  let x = ops.fromHost(resid);
  for (let l = start; l < Math.min(stop, L); l++)
    x = transformerBlock(ops, m.cfg, l, m.weights.blocks[l], m.packed.blocks[l], x, B, P, attnOpts?.(l), flags);
  // TL's forward: `if stop_at_layer is not None: return residual` (whatever its value)
  if (opts.stopAtLayer != null) return ops.toHost(x);
  return ops.toHost(unembed(ops, m.cfg, m.weights, m.packed.WU, x, B, P, opts.lastPositionLogits));
}
