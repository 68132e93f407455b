/**
 * A section after the notebook's last: attribution patching against activation patching for head
 * outputs, as in Neel Nanda's "Attribution Patching: Activation Patching At Industrial Scale"
 * (scatter of one against the other, with the time each takes). The metric is the patching
 * section's restored fraction (0 on the corrupted run, 1 on the clean one), written with ag.* ops so
 * that it can be differentiated; attribution's values are then directly comparable.
 */
import { ag } from '../autograd/index.js';
import type { ActivationCache } from '../hooks/cache.js';
import type { HookedTransformer } from '../model/hooked-transformer.js';
import type { ForwardPool } from '../parallel/pool.js';
import { parallel } from '../parallel/sweep.js';
import { getActPatchAttnHeadOutAllPos, getAttrPatchAttnHeadOutAllPos } from '../patching/index.js';
import type { Tensor } from '../tensor/index.js';
import type { IoiData } from './data.js';
import type { DemoOutput } from './render.js';
import { restoredFraction } from './sections.js';

export interface AttributionComparison {
  /** [L, H] activation patching of each head's output (all positions), restored fraction. */
  activation: Tensor;
  /** [L, H] its linear approximation from one corrupted forward + backward. */
  attribution: Tensor;
  activationMs: number;
  attributionMs: number;
  /** Pearson correlation of the two over heads. */
  correlation: number;
}

/** The restored fraction as a differentiable metric: (mean logit diff at the last position − corrupted) / (clean − corrupted). */
export function restoredFractionGrad(data: IoiData, original: number, corrupted: number): (logits: Tensor) => Tensor {
  return (logits) => {
    const picked = ag.gather(ag.index(logits, 1, -1), data.answerTokens); // [B, 2]
    const diff = ag.mean(ag.sub(ag.index(picked, 1, 0), ag.index(picked, 1, 1)));
    return ag.div(ag.sub(diff, corrupted), original - corrupted);
  };
}

function pearson(a: Float32Array, b: Float32Array): number {
  const n = a.length;
  let ma = 0,
    mb = 0;
  for (let i = 0; i < n; i++) {
    ma += a[i] / n;
    mb += b[i] / n;
  }
  let sab = 0,
    saa = 0,
    sbb = 0;
  for (let i = 0; i < n; i++) {
    const x = a[i] - ma,
      y = b[i] - mb;
    sab += x * y;
    saa += x * x;
    sbb += y * y;
  }
  return saa > 0 && sbb > 0 ? sab / Math.sqrt(saa * sbb) : NaN;
}

/** Compute, print and plot the comparison (activation patching on the pool when there is one). */
export async function attributionPatchingSection(
  out: DemoOutput,
  model: HookedTransformer,
  data: IoiData,
  cache: ActivationCache,
  original: number,
  corrupted: number,
  opts: { pool?: ForwardPool; progress?: (label: string) => ((done: number, total: number) => void) | undefined } = {},
): Promise<AttributionComparison> {
  const { n_layers: L, n_heads: H } = model.cfg;
  const metric = restoredFraction(data, original, corrupted);
  const o = { onProgress: opts.progress?.('activation patching (timed)'), lastPositionLogits: true };
  let t0 = performance.now();
  const activation = opts.pool
    ? await parallel.getActPatchAttnHeadOutAllPos(opts.pool, data.corruptedTokens, cache, metric, o)
    : getActPatchAttnHeadOutAllPos(model, data.corruptedTokens, cache, metric, o);
  const activationMs = performance.now() - t0;
  t0 = performance.now();
  const attribution = getAttrPatchAttnHeadOutAllPos(
    model,
    data.corruptedTokens,
    cache,
    restoredFractionGrad(data, original, corrupted),
    { lastPositionLogits: true },
  );
  const attributionMs = performance.now() - t0;
  const correlation = pearson(activation.f32(), attribution.f32());

  const { report } = out;
  report
    .heading('Attribution patching')
    .para(
      'Attribution patching approximates activation patching to first order: (clean − corrupted activation) · ∂metric/∂activation ' +
        'at the corrupted run, for every head at once from one forward and one backward pass (Neel Nanda, "Attribution Patching: Activation Patching At Industrial Scale"). ' +
        `Activation patching needs one forward per head (${L * H} here). Points near the diagonal are heads where the linear approximation holds.`,
    );
  out.print(
    `Activation patching, ${L * H} heads: ${(activationMs / 1000).toFixed(2)} s${opts.pool ? ' (worker pool)' : ''}`,
  );
  out.print(
    `Attribution patching, ${L * H} heads: ${(attributionMs / 1000).toFixed(2)} s (one forward + one backward)`,
  );
  out.print(`Correlation between the two: ${correlation.toFixed(3)}`);
  out.printed();
  const grid = (t: Tensor) => t.toNested() as number[][];
  report.imshow(grid(attribution), { xTitle: 'Head', yTitle: 'Layer', title: 'Attribution Patching of Head Outputs' });
  const labels = Array.from({ length: L * H }, (_, i) => `L${Math.floor(i / H)}H${i % H}`);
  report.scatter({
    x: activation.toArray(),
    y: attribution.toArray(),
    xTitle: 'Activation Patch',
    yTitle: 'Attribution Patch',
    hover: labels,
    color: labels.map((_, i) => Math.floor(i / H)),
    colorTitle: 'Layer',
    title: 'Attribution vs Activation Patching of Head Outputs',
  });
  return { activation, attribution, activationMs, attributionMs, correlation };
}
