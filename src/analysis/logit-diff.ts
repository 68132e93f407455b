import { TypelensError } from '../errors.js';
import type { ActivationCache } from '../hooks/cache.js';
import { Tensor } from '../tensor/index.js';

/**
 * The demo's metric: logits[:, -1] at the (correct, incorrect) answer columns, correct minus
 * incorrect, per prompt [B] or averaged.
 */
export function logitsToAveLogitDiff(logits: Tensor, answerTokens: Tensor, perPrompt: true): Tensor;
export function logitsToAveLogitDiff(logits: Tensor, answerTokens: Tensor, perPrompt?: false): number;
export function logitsToAveLogitDiff(logits: Tensor, answerTokens: Tensor, perPrompt = false): Tensor | number {
  const [B, P, V] = logits.shape;
  if (logits.ndim !== 3)
    throw new TypelensError(`logits must be [batch, pos, vocab], got [${logits.shape.join(', ')}]`, 'ESHAPE');
  if (answerTokens.ndim !== 2 || answerTokens.shape[0] !== B || answerTokens.shape[1] !== 2) {
    throw new TypelensError(
      `answer tokens must be [${B}, 2] (correct, incorrect), got [${answerTokens.shape.join(', ')}]`,
      'ESHAPE',
    );
  }
  const last = logits.index(1, P - 1); // [B, V] view
  const ans = answerTokens.f32();
  const out = new Float32Array(B);
  for (let b = 0; b < B; b++) {
    const [c, w] = [ans[2 * b], ans[2 * b + 1]];
    if (!(c >= 0 && c < V && w >= 0 && w < V))
      throw new TypelensError(`answer token ${c < 0 || c >= V ? c : w} is outside the vocabulary [0, ${V})`, 'ETOKEN');
    out[b] = last.get(b, c) - last.get(b, w);
  }
  if (perPrompt) return new Tensor(out, [B]);
  let s = 0;
  for (const v of out) s += v;
  return Math.fround(s / B);
}

/** W_U[:, correct] - W_U[:, incorrect] per prompt: [B, d_model]. */
export function logitDiffDirections(answerResidualDirections: Tensor): Tensor {
  const d = answerResidualDirections; // [B, 2, M]
  const [B, , M] = d.shape;
  const out = new Float32Array(B * M);
  for (let b = 0; b < B; b++) for (let m = 0; m < M; m++) out[b * M + m] = d.get(b, 0, m) - d.get(b, 1, m);
  return new Tensor(out, [B, M]);
}

/**
 * The notebook's residual_stack_to_logit_diff: final LN scale applied to a stack [..., B, M] of
 * final-position residual components, dotted with each prompt's logit-difference direction and
 * summed over the batch, then divided by `divisor`. The classic notebook divides by the number of
 * prompts; the seed variant by residual_stack.shape[0], a quirk of that version of the notebook kept
 * so that its numbers match: pass it explicitly.
 */
export function residualStackToLogitDiff(
  residualStack: Tensor,
  cache: ActivationCache,
  directions: Tensor,
  divisor: number,
): Tensor {
  const [B, M] = directions.shape;
  const scaled = cache.applyLnToStack(residualStack, { layer: -1, posSlice: -1 });
  const lead = scaled.shape.slice(0, -2);
  if (scaled.shape[scaled.ndim - 2] !== B || scaled.shape[scaled.ndim - 1] !== M) {
    throw new TypelensError(
      `residual stack [${residualStack.shape.join(', ')}] does not end in [batch ${B}, d_model ${M}]`,
      'ESHAPE',
    );
  }
  const s = scaled.f32(),
    d = directions.f32();
  const n = s.length / (B * M);
  const out = new Float32Array(n);
  for (let c = 0; c < n; c++) {
    let acc = 0;
    for (let i = 0; i < B * M; i++) acc += s[c * B * M + i] * d[i];
    out[c] = acc / divisor;
  }
  return new Tensor(out, lead);
}
