import { TypelensError } from '../errors.js';
import type { HookedTransformer } from '../model/hooked-transformer.js';
import { map, Tensor } from '../tensor/index.js';
import { detectHead } from './head-detector.js';

export interface HeadScores {
  previousToken: Tensor;
  duplicateToken: Tensor;
  induction: Tensor;
}

/**
 * Mean attention along a diagonal query = key + offset, over batch and queries, per head:
 * the demo's previous-token (offset 1), duplicate-token (offset seqLen) and induction
 * (offset seqLen - 1) scores, each [H] for one layer's pattern [B, H, P, P].
 */
export function diagonalScore(pattern: Tensor, offset: number): Float32Array {
  const [B, H, P] = pattern.shape;
  if (offset < 0 || offset >= P) throw new TypelensError(`diagonal offset ${offset} is outside [0, ${P})`, 'EINPUT');
  const p = pattern.f32();
  const out = new Float32Array(H);
  for (let h = 0; h < H; h++) {
    let s = 0;
    for (let b = 0; b < B; b++) for (let i = offset; i < P; i++) s += p[((b * H + h) * P + i) * P + i - offset];
    out[h] = s / (B * (P - offset));
  }
  return out;
}

/**
 * The demo's three score tables (cell 98 of the Exploratory Analysis Demo) for `repeatedTokens`
 * ([B, 2*seqLen], a random sequence followed by itself), computed through detectHead from one
 * cached run of every hook_pattern.
 *
 * The notebook's score is the mean of the attention stripe query = key + offset (offset 1 for
 * previous-token, seqLen for duplicate-token, seqLen - 1 for induction) over the batch and the
 * stripe's P - offset entries. detectHead's 'mul' score with that stripe as the detection pattern
 * is the stripe's mass over the total attention mass, i.e. over P (every row sums to 1). So the
 * demo scales it by P / (P - offset): the notebook's numbers (equal to diagonalScore up to f32
 * rounding of the row sums). TL's named patterns differ from the notebook's stripes: they
 * skip the stripe's first entry (the induction pattern starts at query seqLen, not seqLen - 1)
 * and, for the duplicate/induction patterns, add any repeats within the random half.
 */
export function headDetectorScores(model: HookedTransformer, repeatedTokens: Tensor, seqLen: number): HeadScores {
  const P = repeatedTokens.shape[1];
  const { cache } = model.runWithCache(repeatedTokens, { namesFilter: (n) => n.endsWith('hook_pattern') });
  const stripe = (offset: number): Tensor => {
    if (offset < 0 || offset >= P) throw new TypelensError(`diagonal offset ${offset} is outside [0, ${P})`, 'EINPUT');
    const d = new Float32Array(P * P);
    for (let i = offset; i < P; i++) d[i * P + i - offset] = 1;
    const score = detectHead(model, repeatedTokens, new Tensor(d, [P, P]), { cache, errorMeasure: 'mul' });
    return map(score, (v) => (v * P) / (P - offset));
  };
  return { previousToken: stripe(1), duplicateToken: stripe(seqLen), induction: stripe(seqLen - 1) };
}
