import { TypelensError } from '../errors.js';
import type { HookedTransformer } from '../model/hooked-transformer.js';
import { Tensor } from '../tensor/index.js';

export interface HeadScores { previousToken: Tensor; duplicateToken: Tensor; induction: Tensor }

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
 * Run `repeatedTokens` ([B, 2*seqLen], a random sequence followed by itself) with hooks on every
 * hook_pattern and fill three [L, H] score tables (demo cell 98).
 */
export function headDetectorScores(model: HookedTransformer, repeatedTokens: Tensor, seqLen: number): HeadScores {
  const { n_layers: L, n_heads: H } = model.cfg;
  const prev = new Float32Array(L * H), dup = new Float32Array(L * H), ind = new Float32Array(L * H);
  const filter = (name: string) => name.endsWith('hook_pattern');
  const into = (dst: Float32Array, offset: number) => (pattern: Tensor, hook: { layer(): number }) => {
    dst.set(diagonalScore(pattern, offset), hook.layer() * H);
  };
  model.runWithHooks(repeatedTokens, { fwdHooks: [[filter, into(prev, 1)], [filter, into(dup, seqLen)], [filter, into(ind, seqLen - 1)]] });
  return { previousToken: new Tensor(prev, [L, H]), duplicateToken: new Tensor(dup, [L, H]), induction: new Tensor(ind, [L, H]) };
}
