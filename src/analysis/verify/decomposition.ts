/** The full residual decomposition at one position, shared by the decomposition and DLA checks. */
import { Tensor } from '../../tensor/index.js';
import type { VerifyContext } from './types.js';

/** getFullResidDecomposition at one position ([C, B, M]); neurons expanded or not. */
export function fullDecomposition(
  ctx: VerifyContext,
  pos: number,
  expandNeurons: boolean,
): { stack: Tensor; labels: string[] } {
  const key = `full:${pos}:${expandNeurons}`;
  const hit = ctx.memo.get(key);
  if (hit) return hit as { stack: Tensor; labels: string[] };
  const { cache } = ctx.cached();
  cache.log = () => {};
  const [stack, labels] = cache.getFullResidDecomposition({
    layer: -1,
    expandNeurons,
    posSlice: pos,
    returnLabels: true,
  }) as [Tensor, string[]];
  const r = { stack, labels };
  if (pos === -1 && expandNeurons) ctx.memo.set(key, r); // dla.logitAttrs reuses it
  return r;
}
