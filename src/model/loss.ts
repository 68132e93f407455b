// TL's utils.lm_cross_entropy_loss and utils.lm_accuracy on plain tensors (the tape's
// differentiable loss is autograd's ag.lmCrossEntropyLoss).
import { TypelensError } from '../errors.js';
import { Tensor } from '../tensor/index.js';

function check(
  logits: Tensor,
  tokens: Tensor,
  what: string,
): { B: number; P: number; V: number; lg: Float32Array; ids: Float32Array } {
  if (logits.ndim !== 3)
    throw new TypelensError(
      `${what}: logits must be [batch, pos, d_vocab], got [${logits.shape.join(', ')}]`,
      'ESHAPE',
    );
  const [B, P, V] = logits.shape;
  const t = tokens.ndim === 1 ? tokens.unsqueeze(0) : tokens;
  if (t.ndim !== 2 || t.shape[0] !== B || t.shape[1] !== P)
    throw new TypelensError(
      `${what}: tokens must be [${B}, ${P}] like the logits, got [${tokens.shape.join(', ')}]`,
      'ESHAPE',
    );
  return { B, P, V, lg: logits.contiguous().f32(), ids: t.contiguous().f32() };
}

/**
 * TL's utils.lm_cross_entropy_loss: -log p(token[i+1] | logits[i]), averaged over the predicted
 * positions, or per token [B, P-1] with perToken. With an attention mask [B, P], a prediction
 * counts only when both its position and the next are real tokens (TL: `mask[:, :-1] & mask[:, 1:]`);
 * masked positions are 0 in the per-token loss and left out of the mean. Each row's log-softmax
 * is accumulated in float64 (max-shifted log-sum-exp), so a 50257-way loss is exact to f32 rounding.
 */
export function lmCrossEntropyLoss(
  logits: Tensor,
  tokens: Tensor,
  opts: { attentionMask?: Tensor | Float32Array; perToken?: boolean } = {},
): Tensor {
  const { B, P, V, lg, ids } = check(logits, tokens, 'lmCrossEntropyLoss');
  if (P < 2) throw new TypelensError('lmCrossEntropyLoss needs at least two positions (one prediction)', 'EINPUT');
  const m = opts.attentionMask instanceof Tensor ? opts.attentionMask.contiguous().f32() : opts.attentionMask;
  if (m && m.length !== B * P)
    throw new TypelensError(`lmCrossEntropyLoss: attentionMask must be [${B}, ${P}]`, 'ESHAPE');
  const out = new Float32Array(B * (P - 1));
  let total = 0,
    n = 0;
  for (let b = 0; b < B; b++)
    for (let p = 0; p < P - 1; p++) {
      if (m && !(m[b * P + p] && m[b * P + p + 1])) continue;
      const o = (b * P + p) * V;
      let mx = -Infinity;
      for (let v = 0; v < V; v++) if (lg[o + v] > mx) mx = lg[o + v];
      let s = 0;
      for (let v = 0; v < V; v++) s += Math.exp(lg[o + v] - mx);
      const nll = -(lg[o + ids[b * P + p + 1]] - mx - Math.log(s));
      out[b * (P - 1) + p] = nll;
      total += nll;
      n++;
    }
  if (opts.perToken) return new Tensor(out, [B, P - 1]);
  return new Tensor(Float32Array.of(n ? total / n : NaN), []);
}

/** TL's utils.lm_accuracy: whether argmax(logits[i]) == token[i+1]; the fraction, or per token [B, P-1] (1/0). */
export function lmAccuracy(logits: Tensor, tokens: Tensor, opts: { perToken?: boolean } = {}): Tensor {
  const { B, P, V, lg, ids } = check(logits, tokens, 'lmAccuracy');
  const out = new Float32Array(B * Math.max(0, P - 1));
  let hits = 0;
  for (let b = 0; b < B; b++)
    for (let p = 0; p < P - 1; p++) {
      const o = (b * P + p) * V;
      let best = 0;
      for (let v = 1; v < V; v++) if (lg[o + v] > lg[o + best]) best = v;
      const ok = best === ids[b * P + p + 1] ? 1 : 0;
      out[b * (P - 1) + p] = ok;
      hits += ok;
    }
  if (opts.perToken) return new Tensor(out, [B, P - 1]);
  return new Tensor(Float32Array.of(hits / out.length), []);
}
