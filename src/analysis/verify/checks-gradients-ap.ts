/** Check: attribution patching is exact for metrics linear in the patched activation. */
import { ag } from '../../autograd/index.js';
import { rng } from '../../model/make-weights.js';
import { matmul, Tensor } from '../../tensor/index.js';
import type { Where } from './types.js';
import { absT, fmt, formatWhere, newTally, outcome, plain, tally } from './where.js';
import { registerCheck } from './registry.js';

/**
 * Attribution patching's identity for metrics linear in the patched activation: with
 * metric = ⟨U, R⟩ for a readout R that is an affine function of the activation A (U fixed and
 * seeded), Σ (A_clean − A_corrupted) · ∂metric/∂A at the corrupted run equals
 * metric(A patched to clean) − metric(corrupted) exactly, up to rounding. Pairs, per layer:
 * hook_z → hook_attn_out (R = z·W_O + b_O) and mlp.hook_post → hook_mlp_out (R = post·W_out + b_out).
 * Implemented here with model.backward and hooks (analysis/ sits below patching/).
 */
registerCheck({
  id: 'gradients.attributionPatchingLinear',
  group: 'gradients',
  title: 'attribution patching = activation patching for metrics linear in the patched activation',
  needs: ['gradients'],
  run(ctx) {
    const m = ctx.model;
    const { n_layers: L, d_model: M, n_heads: H, d_head: D, d_mlp: F, d_vocab: V } = m.cfg;
    const [B, P] = ctx.tokens.shape;
    const r = rng(0xa77e);
    // corrupted input: the prompt's first token kept, the rest seeded random tokens
    const clean = ctx.tokens,
      ct = plain(clean);
    const corrupted = new Tensor(
      Float32Array.from(ct, (v, i) => (i % P === 0 ? v : Math.floor(r.uniform() * V) % V)),
      [B, P],
    );
    const layers =
      L <= 4
        ? Array.from({ length: L }, (_, l) => l)
        : [...new Set([0, L - 1, ...Array.from({ length: 2 }, () => Math.floor(r.uniform() * L))])].sort(
            (a, b) => a - b,
          );
    const pairs = layers.flatMap((l) => [
      {
        layer: l,
        patch: `blocks.${l}.attn.hook_z`,
        read: `blocks.${l}.hook_attn_out`,
        W: m.weights.blocks[l].W_O,
        b: m.weights.blocks[l].b_O,
        K: H * D,
        heads: true,
      },
      {
        layer: l,
        patch: `blocks.${l}.mlp.hook_post`,
        read: `blocks.${l}.hook_mlp_out`,
        W: m.weights.blocks[l].W_out,
        b: m.weights.blocks[l].b_out,
        K: F,
        heads: false,
      },
    ]);
    const { cache: cleanCache } = m.runWithCache(clean, {
      namesFilter: (n: string) => pairs.some((p) => p.patch === n),
    });
    const U = new Tensor(
      Float32Array.from({ length: B * P * M }, () => 2 * r.uniform() - 1),
      [B, P, M],
    );
    const uf = U.f32();
    const c = ctx.k * ctx.uCompute;
    const rows = B * P;
    const got: number[] = [],
      want: number[] = [],
      tols: number[] = [],
      labels: Where[] = [];
    const fails: { i: number; got: number; want: number; tol: number; what: string }[] = [];
    for (const pair of pairs) {
      const { layer: l, patch, read, K } = pair;
      let Rc!: Tensor, Ac!: Float32Array, grad!: Float32Array;
      m.backward(corrupted, () => ag.sum(ag.mul(Rc, U)), {
        params: false,
        stopAtLayer: l + 1,
        fwdHooks: [
          [
            patch,
            (a: Tensor) => {
              Ac = Float32Array.from(plain(a));
            },
          ],
          [
            read,
            (x: Tensor) => {
              Rc = x;
            },
          ],
        ],
        bwdHooks: [
          ...(ctx.gradHooks ?? []),
          [
            patch,
            (gr: Tensor) => {
              const f = plain(gr);
              if (grad) for (let i = 0; i < f.length; i++) grad[i] += f[i];
              else grad = Float32Array.from(f);
            },
          ],
        ],
      });
      const Rcf = Float32Array.from(plain(Rc));
      const Aclean = plain(cleanCache.get(patch));
      const Wabs = absT(pair.W).reshape([K, M]).contiguous(),
        bAbs = absT(pair.b).f32();
      const gmass = matmul(absT(U).reshape([rows, M]), Wabs.T.contiguous()).f32(); // [rows, K] = |U|·|W|ᵀ: the backward's M-term products
      const massOf = (A: ArrayLike<number>) => {
        const mm = matmul(new Tensor(Float32Array.from(A, Math.abs), [rows, K]), Wabs).f32();
        for (let i = 0; i < mm.length; i++) mm[i] += bAbs[i % M];
        return mm;
      };
      const massC = massOf(Ac);
      /** one comparison: patch the entries `sel` accepts, return got, want and the tolerance */
      const compare = (sel: (i: number) => boolean) => {
        let Rp!: Float32Array;
        const Ap = Float32Array.from(Ac, (v, i) => (sel(i) ? Aclean[i] : v));
        m.runWithHooks(corrupted, {
          stopAtLayer: l + 1,
          fwdHooks: [
            [patch, (a: Tensor) => new Tensor(Float32Array.from(Ap), a.shape)],
            [
              read,
              (x: Tensor) => {
                Rp = Float32Array.from(plain(x));
              },
            ],
          ],
        });
        const massP = massOf(Ap);
        // the backward's rounding: Σ_i Δ_i·err_i with |err_i| ≤ k·u·√M·(|U|·|W|ᵀ)_i, independent: in quadrature
        let gsum = 0,
          gq = 0,
          w = 0,
          wq = 0;
        for (let i = 0; i < Ap.length; i++) {
          const d = Ap[i] - Ac[i];
          if (d !== 0) {
            gsum += d * grad[i];
            gq += (d * gmass[i]) ** 2;
          }
        }
        // the two readouts' rounding, on the rows the patch changed (the others are computed identically)
        for (let row = 0; row < rows; row++) {
          let changed = false;
          for (let q = 0; q < K && !changed; q++) changed = Ap[row * K + q] !== Ac[row * K + q];
          if (!changed) continue;
          for (let j = 0; j < M; j++) {
            const e = row * M + j;
            w += uf[e] * (Rp[e] - Rcf[e]);
            wq += uf[e] ** 2 * (massP[e] ** 2 + massC[e] ** 2);
          }
        }
        return {
          got: gsum,
          want: w,
          tol: c * (Math.sqrt(K + 1) * Math.sqrt(wq) + Math.sqrt(M) * Math.sqrt(gq)) + 1e-12 * Math.abs(w),
        };
      };
      const all = compare(() => true);
      got.push(all.got);
      want.push(all.want);
      tols.push(all.tol);
      labels.push({ hook: patch, layer: l, variant: `metric ⟨U, ${read}⟩, all positions patched` });
      if (!(Math.abs(all.got - all.want) <= all.tol)) {
        // localise: patch one position (and head) at a time
        const perRow = pair.heads ? H : 1;
        let worst: { ratio: number; where: Where; got: number; want: number; tol: number } | undefined;
        for (let p = 0; p < P; p++)
          for (let hh = 0; hh < perRow; hh++) {
            const sel = (i: number) => Math.floor(i / K) % P === p && (!pair.heads || Math.floor((i % K) / D) === hh);
            const s = compare(sel);
            const err = Math.abs(s.got - s.want),
              ratio = err === 0 ? 0 : err / s.tol;
            if (!worst || ratio > worst.ratio)
              worst = {
                ratio,
                got: s.got,
                want: s.want,
                tol: s.tol,
                where: { hook: patch, layer: l, ...(pair.heads ? { head: hh } : {}), pos: p },
              };
          }
        const what = `one ${pair.heads ? 'head and position' : 'position'} patched`;
        if (worst && worst.ratio > 1) {
          labels[labels.length - 1] = { ...worst.where, variant: `metric ⟨U, ${read}⟩, ${what}` };
          fails.push({ i: got.length - 1, got: worst.got, want: worst.want, tol: worst.tol, what });
        } else
          fails.push({ i: got.length - 1, got: all.got, want: all.want, tol: all.tol, what: 'all positions patched' });
      }
    }
    const t = newTally();
    tally(t, got, want, tols);
    const r0 = outcome(
      t,
      t.worstI >= 0 ? labels[t.worstI] : undefined,
      undefined,
      'attribution vs activation patching',
      { pairs: pairs.length, layers: layers.join(',') },
    );
    if (r0.status === 'fail') {
      const f = fails[0];
      r0.where = labels[f.i];
      r0.message =
        `attribution ≠ activation patching at ${formatWhere(r0.where)}: Σ Δ·grad ${fmt(f.got)} vs patched change ${fmt(f.want)} ` +
        `(|err| ${fmt(Math.abs(f.got - f.want))} > tol ${fmt(f.tol)}); ${t.bad} of ${got.length} patched activations over tol`;
    }
    return r0;
  },
});
