/** Checks: the cache's residual decompositions sum to what they decompose. */
import { sum } from '../../tensor/index.js';
import type { Where } from './types.js';
import { absT, newTally, outcome, tally, whereAt } from './where.js';
import { fullDecomposition } from './decomposition.js';
import { headExplaining, neuronExplaining } from './explain.js';
import { hmTol, residTols } from './tolerance.js';
import { registerCheck } from './registry.js';

// ---------------------------------------------------------------- decomposition checks

registerCheck({
  id: 'decompose.decomposeResid',
  group: 'decomposition',
  title: 'Σ decomposeResid() = final residual stream',
  run(ctx) {
    const { cache } = ctx.cached();
    const L = ctx.model.cfg.n_layers;
    const [stack, labels] = cache.decomposeResid({ layer: -1, returnLabels: true }); // [C, B, P, M]
    const C = stack.shape[0];
    const got = sum(stack, 0).f32(),
      want = cache.get(`blocks.${L - 1}.hook_resid_post`);
    const t = newTally();
    tally(t, got, want.f32(), residTols(ctx).coarse); // k·u·√C·Σ|component|
    const where =
      t.worstI >= 0
        ? whereAt(t.worstI, want.shape, ['batch', 'pos', 'dim'], { hook: `blocks.${L - 1}.hook_resid_post` })
        : undefined;
    return outcome(t, where, C, `Σ of ${C} components (${labels[0]}…${labels[C - 1]})`);
  },
});

registerCheck({
  id: 'decompose.accumulatedResid',
  group: 'decomposition',
  title: 'accumulatedResid() last entry = final residual stream',
  run(ctx) {
    const { cache } = ctx.cached();
    const L = ctx.model.cfg.n_layers;
    const acc = cache.accumulatedResid({ layer: -1, inclMid: true });
    const last = acc.index(0, acc.shape[0] - 1).contiguous();
    const want = cache.get(`blocks.${L - 1}.hook_resid_post`);
    const t = newTally();
    tally(t, last.f32(), want.f32(), hmTol(ctx, absT(want).f32(), 1));
    const where =
      t.worstI >= 0
        ? whereAt(t.worstI, want.shape, ['batch', 'pos', 'dim'], { hook: `blocks.${L - 1}.hook_resid_post` })
        : undefined;
    return outcome(t, where, 1, `accumulatedResid's final_post entry (of ${acc.shape[0]})`);
  },
});

registerCheck({
  id: 'decompose.headResults',
  group: 'decomposition',
  title: 'Σ_h stackHeadResults() + b_O = hook_attn_out (per layer)',
  run(ctx) {
    const { cache } = ctx.cached();
    const { n_layers: L, n_heads: H, d_head: D, d_model: M } = ctx.model.cfg;
    cache.log = () => {};
    const heads = cache.stackHeadResults({ layer: -1 }); // [L*H, B, P, M]
    const tols = residTols(ctx);
    const t = newTally();
    const per = heads.size / (L * H);
    const hs = heads.f32();
    let worstLayer = -1,
      prevI = -1;
    for (let l = 0; l < L; l++) {
      const bO = ctx.model.weights.blocks[l].b_O.f32();
      const got = new Float32Array(per);
      for (let i = 0; i < per; i++) {
        let s = bO[i % M];
        for (let h = 0; h < H; h++) s += hs[(l * H + h) * per + i];
        got[i] = s;
      }
      tally(t, got, cache.get(`blocks.${l}.hook_attn_out`).f32(), tols.attn[l], l * per);
      if (t.worstI !== prevI) {
        worstLayer = l;
        prevI = t.worstI;
      }
    }
    let where: Where | undefined;
    if (t.worstI >= 0) {
      const shape = cache.get('blocks.0.hook_attn_out').shape;
      where = whereAt(t.worstI - worstLayer * per, shape, ['batch', 'pos', 'dim'], {
        hook: `blocks.${worstLayer}.hook_attn_out`,
        layer: worstLayer,
      });
      if (t.bad > 0) {
        // name the head whose output space the discrepancy lies in
        const row = Math.floor((t.worstI - worstLayer * per) / M);
        const want = cache.get(`blocks.${worstLayer}.hook_attn_out`).f32();
        const bO = ctx.model.weights.blocks[worstLayer].b_O.f32();
        const delta = new Float32Array(M);
        for (let m = 0; m < M; m++) {
          let s = bO[m];
          for (let h = 0; h < H; h++) s += hs[(worstLayer * H + h) * per + row * M + m];
          delta[m] = s - want[row * M + m];
        }
        const e = headExplaining(ctx.model, worstLayer, delta);
        if (e) {
          where.head = e.head;
        }
      }
    }
    return outcome(t, where, H * D + 1, 'head results + b_O');
  },
});

registerCheck({
  id: 'decompose.neuronResults',
  group: 'decomposition',
  title: 'Σ_n neuron results + b_out = hook_mlp_out (per layer)',
  run(ctx) {
    const { cache } = ctx.cached();
    const { n_layers: L, d_mlp: F, d_model: M } = ctx.model.cfg;
    const tols = residTols(ctx);
    const shape = cache.get('blocks.0.hook_mlp_out').shape; // [B, P, M]
    const [B, P] = shape;
    const per = B * P * M;
    const t = newTally();
    let worstLayer = -1,
      prevI = -1,
      worstDelta: Float32Array | undefined;
    for (let l = 0; l < L; l++) {
      const bOut = ctx.model.weights.blocks[l].b_out.f32();
      const want = cache.get(`blocks.${l}.hook_mlp_out`).f32();
      const got = new Float32Array(per);
      for (let p = 0; p < P; p++) {
        const r = sum(cache.getNeuronResults(l, undefined, p), -2).f32(); // [B, M]
        for (let b = 0; b < B; b++) for (let m = 0; m < M; m++) got[(b * P + p) * M + m] = r[b * M + m] + bOut[m];
      }
      tally(t, got, want, tols.mlp[l], l * per);
      if (t.worstI !== prevI) {
        worstLayer = l;
        prevI = t.worstI;
        const row = Math.floor((t.worstI - l * per) / M);
        worstDelta = got.slice(row * M, (row + 1) * M).map((g, m) => g - want[row * M + m]);
      }
    }
    let where: Where | undefined;
    if (t.worstI >= 0) {
      where = whereAt(t.worstI - worstLayer * per, shape, ['batch', 'pos', 'dim'], {
        hook: `blocks.${worstLayer}.hook_mlp_out`,
        layer: worstLayer,
      });
      if (t.bad > 0 && worstDelta) {
        const e = neuronExplaining(ctx.model, worstLayer, worstDelta);
        if (e) where.neuron = e.neuron;
      }
    }
    return outcome(t, where, F + 1, 'neuron results + b_out');
  },
});

registerCheck({
  id: 'decompose.fullResidDecomposition',
  group: 'decomposition',
  title: 'Σ getFullResidDecomposition() (heads, neurons, embeds, biases) = final residual',
  run(ctx) {
    const { cache } = ctx.cached();
    const { n_layers: L, d_model: M } = ctx.model.cfg;
    const want = cache.get(`blocks.${L - 1}.hook_resid_post`); // [B, P, M]
    const [B, P] = want.shape;
    const tols = residTols(ctx);
    const wf = want.f32();
    const t = newTally();
    let worst = { p: 0, variant: '' };
    let prevI = -1;
    const counts: Record<string, number> = {};
    // every position with the MLPs as whole layers; the neuron-expanded form (tens of thousands
    // of components for gpt2-small) at the last position, the one logit attribution reads
    const runs: [number, boolean][] = [
      ...Array.from({ length: P }, (_, p) => [p, false] as [number, boolean]),
      [P - 1, true],
    ];
    runs.forEach(([p, expand], r) => {
      const { stack, labels } = fullDecomposition(ctx, p === P - 1 && expand ? -1 : p, expand);
      counts[expand ? 'componentsWithNeurons' : 'components'] = labels.length;
      const got = sum(stack, 0).f32();
      const w = new Float32Array(B * M),
        tl = new Float32Array(B * M);
      for (let b = 0; b < B; b++)
        for (let d = 0; d < M; d++) {
          w[b * M + d] = wf[(b * P + p) * M + d];
          tl[b * M + d] = tols.full[(b * P + p) * M + d];
        }
      tally(t, got, w, tl, r * B * M);
      if (t.worstI !== prevI) {
        prevI = t.worstI;
        worst = { p: r, variant: expand ? 'neurons expanded' : 'MLP layers whole' };
      }
    });
    let where: Where | undefined;
    if (t.worstI >= 0) {
      const i = t.worstI - worst.p * B * M;
      where = {
        hook: `blocks.${L - 1}.hook_resid_post`,
        variant: worst.variant,
        batch: Math.floor(i / M),
        pos: runs[worst.p][0],
        dim: i % M,
      };
    }
    return outcome(t, where, undefined, `Σ of the full decomposition`, counts);
  },
});
