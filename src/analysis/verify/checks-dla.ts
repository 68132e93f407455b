/** Checks: direct logit attributions sum to the logit difference. */
import { sum } from '../../tensor/index.js';
import type { VerifyContext, Where } from './types.js';
import { fullDecomposition } from './decomposition.js';
import { newTally, outcome, tally } from './where.js';
import { registerCheck } from './registry.js';
import { residTols } from './tolerance.js';

// ---------------------------------------------------------------- direct logit attribution

/** Per batch row: logit diff at the last position, b_U diff, DLA direction d = W_U[:, a] - W_U[:, w]. */
function answerParts(ctx: VerifyContext) {
  const { logits, cache } = ctx.cached();
  const { d_model: M, n_layers: L } = ctx.model.cfg;
  const [, P] = ctx.tokens.shape;
  const WU = ctx.model.W_U.f32(),
    V = ctx.model.cfg.d_vocab,
    bU = ctx.model.b_U.f32();
  const lg = logits.f32();
  const scale = cache.get('ln_final.hook_scale').f32(); // [B, P, 1]
  const resid = cache.get(`blocks.${L - 1}.hook_resid_post`).f32();
  return ctx.answers.map(([a, w], b) => {
    const o = (b * P + P - 1) * V;
    const absD = new Float32Array(M);
    for (let m = 0; m < M; m++) absD[m] = Math.abs(WU[m * V + a]) + Math.abs(WU[m * V + w]);
    const s = scale[b * P + P - 1];
    const r0 = (b * P + P - 1) * M;
    let mu = 0;
    for (let m = 0; m < M; m++) mu += resid[r0 + m];
    mu /= M;
    // the forward's LN and unembedding: Σ_m |x̂_m| (|W_U[m,a]| + |W_U[m,w]|) over M-term inner
    // products, and the LN's elementwise roundings, ‖(|resid_m| / s)(|W_U[m,a]| + |W_U[m,w]|)‖₂
    let unembedMass = 0,
      lnL2 = 0;
    for (let m = 0; m < M; m++) {
      unembedMass += (Math.abs(resid[r0 + m] - mu) / s) * absD[m];
      lnL2 += ((Math.abs(resid[r0 + m]) / s) * absD[m]) ** 2;
    }
    return {
      b,
      a,
      w,
      diff: lg[o + a] - lg[o + w],
      bUdiff: bU[a] - bU[w],
      s,
      absD,
      unembedMass,
      lnL2: Math.sqrt(lnL2),
      row: r0,
    };
  });
}

export const needsFoldedLn =
  "the model was loaded without foldLn: TL's applyLnToStack (and so logitAttrs) divides by the LN scale only, so DLA sums hold for folded models";

registerCheck({
  id: 'dla.logitAttrs',
  group: 'logit attribution',
  title: 'Σ logitAttrs(full decomposition) = logit diff − b_U diff',
  needs: ['foldedLn'],
  run(ctx) {
    const { cache } = ctx.cached();
    const { d_model: M } = ctx.model.cfg;
    const [B, P] = ctx.tokens.shape;
    const parts = answerParts(ctx);
    const { stack, labels } = fullDecomposition(ctx, -1, true); // [C, B, M]
    const C = labels.length;
    const attrs = cache.logitAttrs(
      stack,
      parts.map((x) => x.a),
      { incorrectTokens: parts.map((x) => x.w), posSlice: -1 },
    ); // [C, B]
    const total = sum(attrs, 0).f32(),
      af = attrs.f32(),
      sf = stack.f32();
    const tols = residTols(ctx);
    const c = ctx.k * ctx.uCompute;
    const got = new Float32Array(B),
      want = new Float32Array(B),
      tol = new Float32Array(B);
    for (const x of parts) {
      got[x.b] = total[x.b];
      want[x.b] = x.diff - x.bUdiff;
      // (1) the forward's residual differs from Σ components by at most tols.full, carried through the LN and the direction
      let carried = 0;
      for (let m = 0; m < M; m++) carried += ((tols.full[x.row + m] / x.s) * x.absD[m]) ** 2;
      carried = Math.sqrt(carried); // independent per d_model index: in quadrature
      // (2) applyLnToStack's and logitAttrs' elementwise roundings (independent, so their ℓ2 norm)
      let stackL2 = 0,
        attrL2 = 0;
      for (let k = 0; k < C; k++) {
        attrL2 += af[k * B + x.b] ** 2;
        for (let m = 0; m < M; m++) stackL2 += ((Math.abs(sf[(k * B + x.b) * M + m]) / x.s) * x.absD[m]) ** 2;
      }
      // (3) the forward's LN and its two M-term unembedding inner products
      tol[x.b] =
        carried +
        c * (Math.sqrt(stackL2) + Math.sqrt(attrL2) + x.lnL2 + Math.sqrt(M) * x.unembedMass + Math.abs(x.bUdiff));
    }
    const t = newTally();
    tally(t, got, want, tol);
    const where: Where | undefined =
      t.worstI >= 0
        ? { batch: t.worstI, pos: P - 1, component: `answer ${parts[t.worstI].a} vs ${parts[t.worstI].w}` }
        : undefined;
    return outcome(t, where, undefined, `Σ of ${C} attributions`, { components: C });
  },
});

registerCheck({
  id: 'dla.finalResid',
  group: 'logit attribution',
  title: 'DLA of the final residual + b_U diff = logit diff',
  needs: ['foldedLn'],
  run(ctx) {
    const { cache } = ctx.cached();
    const { n_layers: L, d_model: M } = ctx.model.cfg;
    const [B, P] = ctx.tokens.shape;
    const parts = answerParts(ctx);
    const final = cache
      .get(`blocks.${L - 1}.hook_resid_post`)
      .index(1, P - 1)
      .unsqueeze(0)
      .contiguous(); // [1, B, M]
    const attrs = cache
      .logitAttrs(
        final,
        parts.map((x) => x.a),
        { incorrectTokens: parts.map((x) => x.w), posSlice: -1 },
      )
      .f32(); // [1, B]
    const c = ctx.k * ctx.uCompute;
    const got = new Float32Array(B),
      want = new Float32Array(B),
      tol = new Float32Array(B);
    for (const x of parts) {
      got[x.b] = attrs[x.b] + x.bUdiff;
      want[x.b] = x.diff;
      // both sides normalise the same residual (elementwise roundings, twice) and the forward
      // takes two M-term inner products with W_U
      tol[x.b] = c * (2 * x.lnL2 + Math.sqrt(M) * x.unembedMass + 2 * Math.abs(x.bUdiff) + Math.abs(x.diff));
    }
    const t = newTally();
    tally(t, got, want, tol);
    const where: Where | undefined =
      t.worstI >= 0
        ? { batch: t.worstI, pos: P - 1, component: `answer ${parts[t.worstI].a} vs ${parts[t.worstI].w}` }
        : undefined;
    return outcome(t, where, 2 * M + 1, 'DLA of the final residual', {
      maxAbsBUdiff: Math.max(...parts.map((x) => Math.abs(x.bUdiff))),
    });
  },
});
