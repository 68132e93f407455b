/** Check: gradients agree with finite differences. */
import type { FwdHook } from '../../model/hooked-transformer.js';
import { rng } from '../../model/make-weights.js';
import { Tensor } from '../../tensor/index.js';
import {
  FD_MAX_HOOK_POINTS,
  FD_MAX_PARAMS,
  FD_MAX_PARAM_SIZE,
  gradRun,
  logitDiffValue,
  maxAbsOf,
  rms,
  validEntry,
} from './gradients.js';
import type { FdSample } from './gradients.js';
import type { Where } from './types.js';
import { axesOf, fmt, formatWhere, newTally, outcome, plain, tally, unravel, whereAt } from './where.js';
import { registerCheck } from './registry.js';

registerCheck({
  id: 'gradients.finiteDifferences',
  group: 'gradients',
  title: 'gradients of the logit diff vs central finite differences (sampled hook points and weights)',
  needs: ['gradients'],
  run(ctx) {
    const m = ctx.model,
      g = gradRun(ctx);
    const { n_layers: L, d_model: M, d_mlp: F, n_heads: H, d_head: D } = m.cfg;
    const [, P] = ctx.tokens.shape;
    const r = rng(0x9d5eed);
    const u = ctx.uCompute,
      k = ctx.k;
    // rounding of one evaluation of the metric (a floor under the measured Richardson term, which
    // carries the real noise): each of the 2L+1 stages rounds the residual stream by a relative ~u,
    // independently, carried to the logit difference by its unembedding mass
    const K = Math.max(M, F, P, H * D),
      stages = 2 * L + 1;
    const { cache } = m.runWithCache(ctx.tokens, {
      namesFilter: (n: string) => n === 'ln_final.hook_normalized' || g.acts.has(n),
    });
    cache.log = () => {};
    const xh = plain(cache.get('ln_final.hook_normalized')),
      WU = m.W_U.f32(),
      V = m.cfg.d_vocab;
    const lnw = m.weights.ln_final_w?.f32(),
      bU = m.b_U.f32();
    let fMass = 0;
    ctx.answers.forEach(([a, w], b) => {
      const o = (b * P + P - 1) * M;
      for (let j = 0; j < M; j++)
        fMass += Math.abs(xh[o + j] * (lnw ? lnw[j] : 1)) * (Math.abs(WU[j * V + a]) + Math.abs(WU[j * V + w]));
      fMass += Math.abs(bU[a]) + Math.abs(bU[w]);
    });
    const epsF = k * u * Math.sqrt(stages) * fMass;
    const gRound = k * u * Math.sqrt(K * stages);
    const evalHooks = (hooks: FwdHook[]) =>
      logitDiffValue(ctx.answers, m.runWithHooks(ctx.tokens, { fwdHooks: hooks, lastPositionLogits: true }));
    /** central differences at steps h and 2h around x (realised steps: the perturbed values as stored) and the tolerance. */
    const fdAt = (got: number, gScale: number, evalAt: (mult: number) => { f: number; x: number }) => {
      const p1 = evalAt(1),
        m1 = evalAt(-1),
        p2 = evalAt(2),
        m2 = evalAt(-2);
      const d1 = p1.x - m1.x,
        d2 = p2.x - m2.x;
      const D1 = (p1.f - m1.f) / d1,
        D2 = (p2.f - m2.f) / d2;
      const trunc = Math.abs(D2 - D1) / 3; // Richardson: D(2h) − D(h) ≈ 3·c·h², so |c·h²| (plus the noise of both)
      const tol = k * trunc + (2 * epsF) / d1 + gRound * gScale;
      return { fd: D1, tol, step: d1 / 2, trunc, got };
    };
    const samples: FdSample[] = [];
    // hook points: a seeded subset (all on small models), each at its largest-|gradient| entry and one seeded entry
    let names = g.order.filter((n) => cache.cacheDict.has(n));
    if (names.length > FD_MAX_HOOK_POINTS) {
      const keep = new Set<string>();
      while (keep.size < FD_MAX_HOOK_POINTS) keep.add(names[Math.floor(r.uniform() * names.length)]);
      names = names.filter((n) => keep.has(n));
    }
    const h0 = Math.cbrt(u); // 2^-8: balances the h² truncation against the u/h rounding
    for (const name of names) {
      const grad = g.acts.get(name)!,
        shape = g.shapes.get(name)!,
        act = plain(cache.get(name));
      let best = -1;
      for (let i = 0; i < grad.length; i++)
        if (validEntry(name, shape, i) && (best < 0 || Math.abs(grad[i]) > Math.abs(grad[best]))) best = i;
      if (best < 0) continue;
      let other = -1;
      for (let tries = 0; tries < 20 && (other < 0 || other === best || !validEntry(name, shape, other)); tries++)
        other = Math.floor(r.uniform() * grad.length);
      const scale = rms(act),
        gScale = maxAbsOf(grad);
      for (const i of other >= 0 && other !== best && validEntry(name, shape, other) ? [best, other] : [best]) {
        const x = act[i],
          h = h0 * Math.max(Math.abs(x), scale || 1);
        const res = fdAt(grad[i], gScale, (mult) => {
          const xv = Math.fround(x + mult * h);
          const f = evalHooks([
            [
              name,
              (a: Tensor) => {
                const c = a.clone();
                c.f32()[i] = xv;
                return c;
              },
            ],
          ]);
          return { f, x: xv };
        });
        samples.push({ kind: 'hook', name, i, shape, ...res });
      }
    }
    // weights: a seeded subset of the parameters (not the largest tables), at the largest-|gradient| entry
    const params = [...m.namedParameters()].filter(([, t]) => t.size <= FD_MAX_PARAM_SIZE);
    const chosen = new Set<number>();
    while (chosen.size < Math.min(FD_MAX_PARAMS, params.length)) chosen.add(Math.floor(r.uniform() * params.length));
    const hp = Math.max(h0, 4 * ctx.uStorage); // a step the storage dtype can represent
    for (const pi of [...chosen].sort((a, b) => a - b)) {
      const [name, t] = params[pi];
      const grad = g.params.get(name)!;
      const orig = Float32Array.from(plain(t));
      let i = 0;
      for (let j = 1; j < grad.length; j++) if (Math.abs(grad[j]) > Math.abs(grad[i])) i = j;
      const x = orig[i],
        h = hp * Math.max(Math.abs(x), rms(orig) || 1);
      try {
        const res = fdAt(grad[i], maxAbsOf(grad), (mult) => {
          const data = Float32Array.from(orig);
          data[i] = x + mult * h;
          m.setWeight(name, new Tensor(data, t.shape));
          const xv = plain(m.namedParameters().get(name)!)[i]; // as stored (f16 / bf16 round it)
          return { f: evalHooks([]), x: xv };
        });
        samples.push({ kind: 'param', name, i, shape: t.shape, ...res });
      } finally {
        m.setWeight(name, new Tensor(orig, t.shape));
      }
    }
    const t = newTally();
    tally(
      t,
      samples.map((s) => s.got),
      samples.map((s) => s.fd),
      samples.map((s) => s.tol),
    );
    const whereOf = (s: FdSample): Where =>
      s.kind === 'hook'
        ? whereAt(s.i, s.shape, axesOf(s.name), { hook: s.name })
        : {
            hook: s.name,
            component: `parameter entry [${unravel(s.i, s.shape).join(', ')}]`,
            ...(/^blocks\.(\d+)\./.test(s.name) ? { layer: Number(/^blocks\.(\d+)\./.exec(s.name)![1]) } : {}),
          };
    const worst = t.worstI >= 0 ? samples[t.worstI] : undefined;
    const detail = {
      hookPoints: names.length,
      coordinates: samples.length,
      step: h0,
      metric: g.value,
      metricRounding: epsF,
    };
    const r0 = outcome(t, worst && whereOf(worst), undefined, 'd logit diff', detail);
    if (r0.status === 'fail') {
      // the first coordinate over tolerance in backward order is where the backward first goes wrong (upstream ones inherit it)
      const first = samples.find((s) => !(Math.abs(s.got - s.fd) <= s.tol))!;
      r0.where = whereOf(first);
      r0.message =
        `gradient first off (in backward order) at ${formatWhere(r0.where)}: backward ${fmt(first.got)} vs finite difference ${fmt(first.fd)} ` +
        `(|err| ${fmt(Math.abs(first.got - first.fd))} > tol ${fmt(first.tol)}); ${t.bad} of ${samples.length} coordinates over tol, worst ${t.worstRatio.toFixed(1)}× at ${formatWhere(worst && whereOf(worst))}`;
    }
    return r0;
  },
});
