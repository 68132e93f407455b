/**
 * The circuit figures of the embedded IOI model (docs/embedded-model.md), read off the demo's own
 * results: how much of the logit difference the top direct-attribution heads carry, where the top
 * name mover attends, what ablating it does, whether head patching names the same heads, and the
 * best induction score.
 */
import type { HookedTransformer } from '../model/hooked-transformer.js';
import { getActName } from '../hooks/names.js';
import type { DemoResult } from './demo.js';
import type { IoiData } from './data.js';

export interface CircuitFigures {
  /** The top 3 heads by direct logit attribution, flat l * H + h, with their attribution. */
  topDlaHeads: { head: string; dla: number }[];
  /** Their summed attribution over the average logit difference. */
  top3DlaShare: number;
  /** The top name mover (argmax DLA): mean attention from the final position to the IO token, and to S1, S2. */
  nameMover: { head: string; attnToIO: number; attnToS1: number; attnToS2: number };
  /** Logit difference before and after zero-ablating the top name mover at the final position. */
  ablation: { head: string; before: number; after: number };
  /** The top 3 heads by |head-output patching| and how many of the top 3 DLA heads are among them. */
  topPatchedHeads: { head: string; restored: number }[];
  patchingAgreement: number;
  /** The highest induction score on the demo's repeated random tokens, and its head. */
  maxInduction: { head: string; score: number };
}

const label = (i: number, H: number) => `L${Math.floor(i / H)}H${i % H}`;

export function circuitFigures(model: HookedTransformer, data: IoiData, r: DemoResult): CircuitFigures {
  const { n_heads: H } = model.cfg;
  const per = r.perHead.reshape([r.perHead.size]).f32();
  const order = Array.from(per.keys()).sort((a, b) => per[b] - per[a]);
  const top3 = order.slice(0, 3);
  const share = top3.reduce((a, i) => a + per[i], 0) / r.originalAverageLogitDiff;
  // attention of the top name mover from the last position to each prompt's IO / S1 / S2
  const nm = order[0],
    layer = Math.floor(nm / H),
    h = nm % H;
  const { cache } = model.runWithCache(data.tokens, { namesFilter: [getActName('pattern', layer)] });
  const pat = cache.get(getActName('pattern', layer)); // [B, H, P, P]
  const [B, , P] = pat.shape;
  const tok = data.tokens.f32(),
    ans = data.answerTokens.f32();
  let io = 0,
    s1 = 0,
    s2 = 0;
  for (let b = 0; b < B; b++) {
    const ids = Array.from(tok.subarray(b * P, (b + 1) * P));
    const ioPos = ids.indexOf(ans[2 * b]);
    const sPos = ids.reduce<number[]>((acc, t, i) => (t === ans[2 * b + 1] ? [...acc, i] : acc), []);
    io += pat.get(b, h, P - 1, ioPos);
    s1 += pat.get(b, h, P - 1, sPos[0]);
    s2 += sPos.length > 1 ? pat.get(b, h, P - 1, sPos[1]) : 0;
  }
  const hz = r.patchedHeadZ.reshape([r.patchedHeadZ.size]).f32();
  const topP = Array.from(hz.keys())
    .sort((a, b) => Math.abs(hz[b]) - Math.abs(hz[a]))
    .slice(0, 3);
  const ind = r.headScores.induction.reshape([r.headScores.induction.size]).f32();
  const best = Array.from(ind.keys()).reduce((a, b) => (ind[b] > ind[a] ? b : a), 0);
  return {
    topDlaHeads: top3.map((i) => ({ head: label(i, H), dla: per[i] })),
    top3DlaShare: share,
    nameMover: { head: label(nm, H), attnToIO: io / B, attnToS1: s1 / B, attnToS2: s2 / B },
    ablation: { head: label(r.ablation.head, H), before: r.ablation.original, after: r.ablation.postAblation },
    topPatchedHeads: topP.map((i) => ({ head: label(i, H), restored: hz[i] })),
    patchingAgreement: top3.filter((i) => topP.includes(i)).length,
    maxInduction: { head: label(best, H), score: ind[best] },
  };
}
