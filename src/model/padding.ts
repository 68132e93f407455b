// Attention masks and position ids for padded batches, as TransformerLens v2 builds them.
import { TypelensError } from '../errors.js';
import { Tensor } from '../tensor/index.js';

export type PaddingSide = 'left' | 'right';

/**
 * TL's utils.get_attention_mask: 1 for real tokens, 0 for padding ([B, P], f32). Right padding:
 * the trailing pad ids of each row are masked; left padding: the leading ones, except that when a
 * BOS was prepended and BOS is the pad id, the last leading pad is that row's BOS and stays 1.
 */
export function getAttentionMask(
  tokens: Tensor,
  opts: { padTokenId: number; paddingSide?: PaddingSide; prependBos?: boolean },
): Tensor {
  const t = tokens.ndim === 1 ? tokens.unsqueeze(0) : tokens;
  if (t.ndim !== 2)
    throw new TypelensError(
      `getAttentionMask: tokens must be [batch, pos], got [${tokens.shape.join(', ')}]`,
      'ESHAPE',
    );
  const [B, P] = t.shape,
    ids = t.contiguous().f32(),
    pad = opts.padTokenId;
  const side = opts.paddingSide ?? 'right',
    prependBos = opts.prependBos ?? true;
  const mask = new Float32Array(B * P).fill(1);
  for (let b = 0; b < B; b++) {
    const o = b * P;
    if (side === 'right') {
      for (let p = P - 1; p >= 0 && ids[o + p] === pad; p--) mask[o + p] = 0;
    } else {
      let n = 0;
      while (n < P && ids[o + n] === pad) mask[o + n++] = 0;
      // TL: `attention_mask[arange(B), is_leading_pad.sum(-1) - 1] = 1` (index -1 when there is no pad: already 1)
      if (prependBos && n > 0) mask[o + n - 1] = 1;
    }
  }
  return new Tensor(mask, tokens.ndim === 1 ? [P] : [B, P]);
}

/** A mask given as a tensor or nested array, checked against [B, P] and returned as f32 0/1 data. */
export function maskData(
  mask: Tensor | number[][] | number[],
  B: number,
  P: number,
  what = 'attentionMask',
): Float32Array {
  const t = mask instanceof Tensor ? mask : Tensor.from(mask as number[][]);
  const m = t.ndim === 1 ? t.unsqueeze(0) : t;
  if (m.ndim !== 2 || m.shape[0] !== B || m.shape[1] !== P) {
    throw new TypelensError(`${what} must be [${B}, ${P}] like the tokens, got [${t.shape.join(', ')}]`, 'ESHAPE');
  }
  const d = Float32Array.from(m.contiguous().f32());
  for (let i = 0; i < d.length; i++)
    if (d[i] !== 0 && d[i] !== 1) throw new TypelensError(`${what} holds ${d[i]}: only 0 and 1 are allowed`, 'EINPUT');
  return d;
}

/**
 * Position ids of the last P of Pk positions from a full mask [B, Pk] (TL's PosEmbed.forward:
 * `cumsum(mask) - 1`, clamped at 0, offset by the cached length), with the pad flags of those positions.
 */
export function positionIds(
  mask: Float32Array,
  B: number,
  Pk: number,
  P: number,
): { ids: Int32Array; pad: Float32Array } {
  const ids = new Int32Array(B * P),
    pad = new Float32Array(B * P);
  for (let b = 0; b < B; b++) {
    let c = 0;
    for (let j = 0; j < Pk; j++) {
      c += mask[b * Pk + j];
      const p = j - (Pk - P);
      if (p >= 0) {
        ids[b * P + p] = Math.max(0, c - 1);
        pad[b * P + p] = mask[b * Pk + j];
      }
    }
  }
  return { ids, pad };
}
