// FactoredMatrix against the dense product, computed in float64 by hand (test/weight-space-ref.ts),
// on random shapes: inner dimension below, equal to and above min(ldim, rdim), rank-deficient
// factors, broadcast leading axes, non-contiguous factors.
// Tolerances: f32 factors with N(0, 1) entries and dims <= 9. Products, SVD reconstructions,
// singular values and norms agree to 5e-6 * (1 + ||AB||_F): f32 rounding through two SVDs and
// three matmuls; the worst seen over 3000 random cases was 2.4e-7 of that scale, and 600 runs
// per invariant pass. Orthonormality and makeEven's evenness (Gram matrices) to 1e-4.
// Eigenvalues are compared through their power sums (sum λ^p = tr((AB)^p), p = 1..3, which
// are well conditioned where single eigenvalues of a non-normal matrix are not), to 1e-4 of
// (1 + ||AB||_F)^p. Set TYPELENS_FC_RUNS to run every property more times.
import t from 'tap';
import fc from 'fast-check';
import { Tensor } from '../src/tensor/index.js';
import { FactoredMatrix } from '../src/tensor/factored-matrix.js';
import { qr64, svd64, mat64 } from '../src/tensor/linalg64.js';
import { linalg64Kernel, setLinalg64Kernel } from '../src/tensor/linalg64-kernel.js';
import { balancedFactors } from '../src/tensor/factored-svd.js';
import { invariants } from './helpers.js';
import { bcast, frob, indices, item, M64, m64, maxDiff, mlSvd, mm, randn, tr, invariant } from './weight-space-ref.js';

const TOL = 5e-6;
const close = (got: M64, want: M64, scale = frob(want)) => maxDiff(got, want) <= TOL * (1 + scale);

interface Case {
  fm: FactoredMatrix;
  A: Tensor;
  B: Tensor;
  lead: number[];
  l: number;
  m: number;
  r: number;
  seed: number;
  refs: M64[];
}

/** Random factor pairs. `kind` places the inner dimension m against min(l, r). */
const arbCase = (opts: { square?: boolean } = {}) =>
  fc
    .record({
      lead: fc.array(fc.integer({ min: 1, max: 3 }), { maxLength: 2 }),
      oneA: fc.array(fc.boolean(), { minLength: 2, maxLength: 2 }),
      oneB: fc.array(fc.boolean(), { minLength: 2, maxLength: 2 }),
      dropB: fc.boolean(),
      l: fc.integer({ min: 1, max: 6 }),
      r: fc.integer({ min: 1, max: 6 }),
      kind: fc.constantFrom('m<min(l,r)', 'm=min(l,r)', 'm>min(l,r)'),
      extra: fc.integer({ min: 1, max: 3 }),
      degenerate: fc.boolean(),
      transposedA: fc.boolean(),
      seed: fc.nat({ max: 1e9 }),
    })
    .map((c): Case => {
      const l = c.l,
        r = opts.square ? c.l : c.r,
        mn = Math.min(l, r);
      const m = c.kind === 'm<min(l,r)' ? Math.max(1, mn - c.extra) : c.kind === 'm=min(l,r)' ? mn : mn + c.extra;
      const aLead = c.lead.map((d, i) => (c.oneA[i] ? 1 : d));
      let bLead = c.lead.map((d, i) => (c.oneB[i] ? 1 : d));
      if (c.dropB) bLead = bLead.slice(1);
      let A = randn([...aLead, l, m], c.seed);
      if (c.degenerate && m >= 2) {
        // column m-1 = 2 x column 0: rank(A) <= m - 1
        const d = A.f32();
        for (let row = 0; row < d.length / m; row++) d[row * m + m - 1] = 2 * d[row * m];
      }
      if (c.transposedA) A = A.transpose(-2, -1).contiguous().transpose(-2, -1);
      const B = randn([...bLead, m, r], c.seed + 1);
      const lead = bcast(aLead, bLead);
      const refs = indices(lead).map((idx) => mm(item(A, idx), item(B, idx)));
      return { fm: new FactoredMatrix(A, B), A, B, lead, l, m, r, seed: c.seed, refs };
    });

const each = (c: Case, f: (idx: number[], ref: M64, k: number) => boolean) =>
  indices(c.lead).every((idx, k) => f(idx, c.refs[k], k));
const sameShape = (a: readonly number[], b: readonly number[]) =>
  a.length === b.length && a.every((d, i) => d === b[i]);
/** [..., k] vector at a leading index as a k x 1 matrix. */
const vecAt = (v: Tensor, idx: number[]) => item(v.unsqueeze(-1), idx);
const diagMul = (u: M64, s: M64) => {
  const o = m64(u.r, u.c, Float64Array.from(u.d));
  for (let i = 0; i < u.r; i++) for (let j = 0; j < u.c; j++) o.d[i * u.c + j] *= s.d[j];
  return o;
};

t.test('FactoredMatrix vs the dense product', async (t) => {
  const runs = { numRuns: Number(process.env.TYPELENS_FC_RUNS ?? 40) };
  {
    const SHAPE = 'shape follows the broadcast factors';
    const DIMS = 'ldim, mdim, rdim and ndim follow the factors';
    const FACTORS = 'A and B are broadcast to the common leading axes';
    const inv = invariants(t, [SHAPE, DIMS, FACTORS]);
    await inv.run(() =>
      fc.assert(
        fc.property(arbCase(), (c) => {
          inv.check(SHAPE, sameShape(c.fm.shape, [...c.lead, c.l, c.r]), () => `[${c.fm.shape}]`);
          inv.check(
            DIMS,
            c.fm.ldim === c.l && c.fm.mdim === c.m && c.fm.rdim === c.r && c.fm.ndim === c.lead.length + 2,
            () => `${c.fm.ldim} ${c.fm.mdim} ${c.fm.rdim} ${c.fm.ndim}`,
          );
          inv.check(
            FACTORS,
            sameShape(c.fm.A.shape, [...c.lead, c.l, c.m]) && sameShape(c.fm.B.shape, [...c.lead, c.m, c.r]),
            () => `A [${c.fm.A.shape}], B [${c.fm.B.shape}]`,
          );
        }),
        runs,
      ),
    );
  }

  {
    const AB_SHAPE = 'AB is [...lead, l, r]';
    const AB = 'AB equals the dense product';
    const inv = invariants(t, [AB_SHAPE, AB]);
    await inv.run(() =>
      fc.assert(
        fc.property(arbCase(), (c) => {
          inv.check(AB_SHAPE, sameShape(c.fm.AB.shape, [...c.lead, c.l, c.r]), () => `[${c.fm.AB.shape}]`);
          inv.check(
            AB,
            each(c, (idx, ref) => close(item(c.fm.AB, idx), ref)),
          );
        }),
        runs,
      ),
    );
  }

  {
    const BA_SHAPE = 'BA is [...lead, m, m] (square)';
    const BA = 'BA equals B @ A (square)';
    const inv = invariants(t, [BA_SHAPE, BA]);
    await inv.run(() =>
      fc.assert(
        fc.property(arbCase({ square: true }), (c) => {
          inv.check(BA_SHAPE, sameShape(c.fm.BA.shape, [...c.lead, c.m, c.m]), () => `[${c.fm.BA.shape}]`);
          inv.check(
            BA,
            each(c, (idx) => close(item(c.fm.BA, idx), mm(item(c.B, idx), item(c.A, idx)))),
          );
        }),
        runs,
      ),
    );
  }

  invariant(
    t,
    'T is the transpose of AB',
    arbCase(),
    (c) =>
      sameShape(c.fm.T.shape, [...c.lead, c.r, c.l]) && each(c, (idx, ref) => close(item(c.fm.T.AB, idx), tr(ref))),
  );

  {
    const SVD_SHAPES = 'svd gives U [..., l, k], S [..., k], V [..., r, k] with k = min(l, m, r)';
    const VH = "Vh is TL's alias of V";
    const SVD = 'svd reconstructs AB: U diag(S) V^T';
    const inv = invariants(t, [SVD_SHAPES, VH, SVD]);
    await inv.run(() =>
      fc.assert(
        fc.property(arbCase(), (c) => {
          const [U, S, V] = c.fm.svd();
          const k = Math.min(c.l, c.m, c.r);
          inv.check(
            SVD_SHAPES,
            sameShape(U.shape, [...c.lead, c.l, k]) &&
              sameShape(S.shape, [...c.lead, k]) &&
              sameShape(V.shape, [...c.lead, c.r, k]),
            () => `U [${U.shape}], S [${S.shape}], V [${V.shape}]`,
          );
          inv.check(VH, c.fm.Vh === V);
          inv.check(
            SVD,
            each(c, (idx, ref) => close(mm(diagMul(item(U, idx), vecAt(S, idx)), tr(item(V, idx))), ref)),
          );
        }),
        runs,
      ),
    );
  }

  {
    const S_MATCH = "singular values equal the dense SVD's";
    const S_ORDER = 'singular values are non-negative and descending';
    const S_EXTRA = "the dense SVD's extra singular values are zero";
    const inv = invariants(t, [S_MATCH, S_ORDER, S_EXTRA]);
    await inv.run(() =>
      fc.assert(
        fc.property(arbCase(), (c) => {
          indices(c.lead).forEach((idx, k) => {
            const ref = c.refs[k],
              got = Array.from(vecAt(c.fm.S, idx).d),
              want = mlSvd(ref);
            const tol = TOL * (1 + frob(ref));
            inv.check(
              S_MATCH,
              got.every((s, i) => Math.abs(s - want[i]) <= tol),
              () => `[${got}] vs [${want}]`,
            );
            inv.check(
              S_ORDER,
              got.every((s, i) => (i === 0 || got[i - 1] >= s) && s >= 0),
              () => `[${got}]`,
            );
            inv.check(
              S_EXTRA,
              want.slice(got.length).every((s) => s <= tol),
              () => `[${want.slice(got.length)}]`,
            );
          });
        }),
        runs,
      ),
    );
  }

  invariant(t, 'U and V have orthonormal columns where S is non-zero', arbCase(), (c) =>
    each(c, (idx, ref) => {
      const s = vecAt(c.fm.S, idx).d,
        live = [...s.keys()].filter((i) => s[i] > 1e-3 * (1 + frob(ref)));
      return [c.fm.U, c.fm.V].every((X) => {
        const g = mm(tr(item(X, idx)), item(X, idx));
        return live.every((i) => live.every((j) => Math.abs(g.d[i * g.c + j] - (i === j ? 1 : 0)) <= 1e-4));
      });
    }),
  );

  invariant(t, "eigenvalues have the power sums of the dense AB's (square)", arbCase({ square: true }), (c) => {
    const { real, imag } = c.fm.eigenvalues;
    if (!sameShape(real.shape, [...c.lead, c.m]) || !sameShape(imag.shape, real.shape)) return false;
    return each(c, (idx, ref) => {
      const re = vecAt(real, idx).d,
        im = vecAt(imag, idx).d;
      let P = ref;
      for (let p = 1; p <= 3; p++) {
        if (p > 1) P = mm(P, ref);
        let sr = 0,
          si = 0;
        for (let i = 0; i < re.length; i++) {
          // (re + i im)^p
          let zr = 1,
            zi = 0;
          for (let q = 0; q < p; q++) [zr, zi] = [zr * re[i] - zi * im[i], zr * im[i] + zi * re[i]];
          sr += zr;
          si += zi;
        }
        let trace = 0;
        for (let i = 0; i < P.r; i++) trace += P.d[i * P.c + i];
        const tol = 1e-4 * (1 + frob(ref)) ** p;
        if (!(Math.abs(sr - trace) <= tol && Math.abs(si) <= tol)) return false;
      }
      return true;
    });
  });

  invariant(
    t,
    'norm() is the Frobenius norm of AB',
    arbCase(),
    (c) =>
      sameShape(c.fm.norm().shape, c.lead) &&
      each(c, (idx, ref, k) => Math.abs(c.fm.norm().f32()[k] - frob(ref)) <= TOL * (1 + frob(ref))),
  );

  {
    const EVEN_AB = 'makeEven preserves AB';
    const EVEN_A = "makeEven's A^T A = diag S";
    const EVEN_B = "makeEven's B B^T = diag S";
    const inv = invariants(t, [EVEN_AB, EVEN_A, EVEN_B]);
    await inv.run(() =>
      fc.assert(
        fc.property(arbCase(), (c) => {
          const e = c.fm.makeEven();
          indices(c.lead).forEach((idx, k) => {
            const ref = c.refs[k],
              a = item(e.A, idx),
              b = item(e.B, idx),
              s = vecAt(c.fm.S, idx);
            const D = m64(s.r, s.r);
            for (let i = 0; i < s.r; i++) D.d[i * s.r + i] = s.d[i];
            inv.check(EVEN_AB, close(mm(a, b), ref), () => `index [${idx}]`);
            inv.check(
              EVEN_A,
              maxDiff(mm(tr(a), a), D) <= 1e-4 * (1 + frob(ref)),
              () => `index [${idx}]: max |diff| ${maxDiff(mm(tr(a), a), D)}`,
            );
            inv.check(
              EVEN_B,
              maxDiff(mm(b, tr(b)), D) <= 1e-4 * (1 + frob(ref)),
              () => `index [${idx}]: max |diff| ${maxDiff(mm(b, tr(b)), D)}`,
            );
          });
        }),
        runs,
      ),
    );
  }

  {
    const COLLAPSE_SHAPES = 'collapseL is [..., k, r] and collapseR is [..., l, k]';
    const COLLAPSE_L = 'U @ collapseL = AB';
    const COLLAPSE_R = 'collapseR @ V^T = AB';
    const inv = invariants(t, [COLLAPSE_SHAPES, COLLAPSE_L, COLLAPSE_R]);
    await inv.run(() =>
      fc.assert(
        fc.property(arbCase(), (c) => {
          const L = c.fm.collapseL(),
            R = c.fm.collapseR(),
            k = Math.min(c.l, c.m, c.r);
          inv.check(
            COLLAPSE_SHAPES,
            sameShape(L.shape, [...c.lead, k, c.r]) && sameShape(R.shape, [...c.lead, c.l, k]),
            () => `L [${L.shape}], R [${R.shape}]`,
          );
          inv.check(
            COLLAPSE_L,
            each(c, (idx, ref) => close(mm(item(c.fm.U, idx), item(L, idx)), ref)),
          );
          inv.check(
            COLLAPSE_R,
            each(c, (idx, ref) => close(mm(item(R, idx), tr(item(c.fm.V, idx))), ref)),
          );
        }),
        runs,
      ),
    );
  }

  invariant(
    t,
    'getCorner(k) is the k-corner of AB on every axis',
    fc.tuple(arbCase(), fc.integer({ min: 1, max: 4 })),
    ([c, k]) => {
      const g = c.fm.getCorner(k);
      if (
        !sameShape(
          g.shape,
          c.fm.shape.map((d) => Math.min(d, k)),
        )
      )
        return false;
      const leadK = c.lead.map((d) => Math.min(d, k));
      return indices(leadK).every((idx) => {
        const ref = c.refs[indices(c.lead).findIndex((j) => j.every((v, i) => v === idx[i]))];
        const want = m64(Math.min(c.l, k), Math.min(c.r, k));
        for (let i = 0; i < want.r; i++) for (let j = 0; j < want.c; j++) want.d[i * want.c + j] = ref.d[i * ref.c + j];
        return close(item(g, idx), want, frob(ref));
      });
    },
  );

  {
    // one named assertion per indexing form (the lead-only forms need a leading axis, which nearly every run draws)
    const INT_SHAPE = 'get(ints) (negative ints too) gives an [l, r] matrix';
    const INT_AB = 'get(ints) (negative ints too) equals AB at that index';
    const FIRST_SHAPE = 'index(i) drops the first leading axis';
    const FIRST_AB = 'index(i) equals AB at [i, ...]';
    const NULL_SHAPE = 'get([null]) keeps the shape';
    const LIST_SHAPE = 'get([list]) has one entry per listed index';
    const LIST_AB = 'get([list]) equals AB at the listed indices';
    const SLICE_SHAPE = 'get([{ start: 1 }]) has n0 - 1 entries on the first axis';
    const SLICE_AB = 'get([{ start: 1 }]) equals AB from index 1 on';
    const inv = invariants(t, [
      INT_SHAPE,
      INT_AB,
      FIRST_SHAPE,
      FIRST_AB,
      NULL_SHAPE,
      LIST_SHAPE,
      LIST_AB,
      SLICE_SHAPE,
      SLICE_AB,
    ]);
    await inv.run(() =>
      fc.assert(
        fc.property(fc.tuple(arbCase(), fc.nat(), fc.boolean()), ([c, pick, neg]) => {
          const all = indices(c.lead);
          const k = pick % all.length,
            idx = all[k];
          const ints = idx.map((i, d) => (neg ? i - c.lead[d] : i));
          const one = c.fm.get(ints);
          inv.check(INT_SHAPE, sameShape(one.shape, [c.l, c.r]), () => `get([${ints}]): [${one.shape}]`);
          inv.check(INT_AB, close(item(one.AB, []), c.refs[k]), () => `get([${ints}])`);
          if (c.lead.length > 0) {
            const first = c.fm.index(idx[0]);
            inv.check(
              FIRST_SHAPE,
              sameShape(first.shape, [...c.lead.slice(1), c.l, c.r]),
              () => `index(${idx[0]}): [${first.shape}]`,
            );
            inv.check(
              FIRST_AB,
              all
                .filter((j) => j[0] === idx[0])
                .every((j) => close(item(first.AB, j.slice(1)), c.refs[all.indexOf(j)])),
              () => `index(${idx[0]})`,
            );
            inv.check(
              NULL_SHAPE,
              sameShape(c.fm.get([null]).shape, c.fm.shape),
              () => `[${c.fm.get([null]).shape}] vs [${c.fm.shape}]`,
            );
            const n0 = c.lead[0],
              list = [n0 - 1, 0];
            const g = c.fm.get([list]);
            inv.check(LIST_SHAPE, g.shape[0] === 2, () => `get([[${list}]]): [${g.shape}]`);
            inv.check(
              LIST_AB,
              all
                .filter((j) => j[0] === n0 - 1)
                .every((j) => close(item(g.AB, [0, ...j.slice(1)]), c.refs[all.indexOf(j)])),
              () => `get([[${list}]])`,
            );
            const s = c.fm.get([{ start: 1 }]);
            inv.check(SLICE_SHAPE, s.shape[0] === n0 - 1, () => `[${s.shape}], n0 = ${n0}`);
            inv.check(
              SLICE_AB,
              all
                .filter((j) => j[0] >= 1)
                .every((j) => close(item(s.AB, [j[0] - 1, ...j.slice(1)]), c.refs[all.indexOf(j)])),
            );
          }
        }),
        { numRuns: Number(process.env.TYPELENS_FC_RUNS ?? 40) },
      ),
    );
  }

  invariant(
    t,
    'indexing past the leading axes selects rows, then columns, keeping both axes',
    fc.tuple(arbCase(), fc.nat(), fc.nat(), fc.nat(), fc.boolean()),
    ([c, p, i0, j0, neg]) => {
      const all = indices(c.lead),
        k = p % all.length,
        ref = c.refs[k];
      const i = i0 % c.l,
        j = j0 % c.r;
      const row = c.fm.get([...all[k], neg ? i - c.l : i]);
      const cell = c.fm.get([...all[k], neg ? i - c.l : i, neg ? j - c.r : j]);
      const wantRow = m64(1, c.r, ref.d.slice(i * c.r, (i + 1) * c.r));
      return (
        sameShape(row.shape, [1, c.r]) &&
        close(item(row.AB, []), wantRow, frob(ref)) &&
        sameShape(cell.shape, [1, 1]) &&
        Math.abs(cell.AB.item() - ref.d[i * c.r + j]) <= TOL * (1 + frob(ref))
      );
    },
  );

  {
    const MM_TYPE = 'matmul with a matrix gives a FactoredMatrix of shape [...lead, l, n]';
    const MM_INNER = 'matmul with a matrix keeps the inner dim as TL picks it (m if r > m, else r)';
    const MM = 'matmul with a matrix equals AB @ X';
    const inv = invariants(t, [MM_TYPE, MM_INNER, MM]);
    await inv.run(() =>
      fc.assert(
        fc.property(fc.tuple(arbCase(), fc.integer({ min: 1, max: 5 }), fc.boolean()), ([c, n, batched]) => {
          const X = randn(batched ? [...c.lead, c.r, n] : [c.r, n], c.seed + 7);
          const p = c.fm.matmul(X);
          inv.check(
            MM_TYPE,
            p instanceof FactoredMatrix && sameShape(p.shape, [...c.lead, c.l, n]),
            () => `[${p.shape}]`,
          );
          if (!(p instanceof FactoredMatrix)) return;
          inv.check(MM_INNER, p.mdim === (c.r > c.m ? c.m : c.r), () => `mdim ${p.mdim}, m ${c.m}, r ${c.r}`);
          inv.check(
            MM,
            each(c, (idx, ref) =>
              close(
                item(p.AB, idx),
                mm(ref, item(X, batched ? idx : [])),
                frob(ref) * frob(item(X, batched ? idx : [])),
              ),
            ),
          );
        }),
        runs,
      ),
    );
  }

  {
    const RMM_TYPE = 'rmatmul with a matrix gives a FactoredMatrix of shape [...lead, n, r]';
    const RMM_INNER = 'rmatmul with a matrix keeps the inner dim as TL picks it (m if l > m, else l)';
    const RMM = 'rmatmul with a matrix equals X @ AB';
    const inv = invariants(t, [RMM_TYPE, RMM_INNER, RMM]);
    await inv.run(() =>
      fc.assert(
        fc.property(fc.tuple(arbCase(), fc.integer({ min: 1, max: 5 })), ([c, n]) => {
          const X = randn([n, c.l], c.seed + 8);
          const p = c.fm.rmatmul(X);
          inv.check(
            RMM_TYPE,
            p instanceof FactoredMatrix && sameShape(p.shape, [...c.lead, n, c.r]),
            () => `[${p.shape}]`,
          );
          if (!(p instanceof FactoredMatrix)) return;
          inv.check(RMM_INNER, p.mdim === (c.l > c.m ? c.m : c.l), () => `mdim ${p.mdim}, m ${c.m}, l ${c.l}`);
          inv.check(
            RMM,
            each(c, (idx, ref) => close(item(p.AB, idx), mm(item(X, []), ref), frob(ref) * frob(item(X, [])))),
          );
        }),
        runs,
      ),
    );
  }

  {
    const VEC_SHAPES = 'matmul / rmatmul with a vector give Tensors [...lead, l] and [...lead, r]';
    const AV = 'matmul with a vector v gives AB v';
    const WA = 'rmatmul with a vector w gives w AB';
    const inv = invariants(t, [VEC_SHAPES, AV, WA]);
    await inv.run(() =>
      fc.assert(
        fc.property(arbCase(), (c) => {
          const v = randn([c.r], c.seed + 9),
            w = randn([c.l], c.seed + 10);
          const Av = c.fm.matmul(v),
            wA = c.fm.rmatmul(w);
          inv.check(
            VEC_SHAPES,
            Av instanceof Tensor &&
              wA instanceof Tensor &&
              sameShape(Av.shape, [...c.lead, c.l]) &&
              sameShape(wA.shape, [...c.lead, c.r]),
            () => `[${Av.shape}], [${wA.shape}]`,
          );
          if (!(Av instanceof Tensor) || !(wA instanceof Tensor)) return;
          const vm = item(v.unsqueeze(-1), []),
            wm = item(w.unsqueeze(0), []);
          inv.check(
            AV,
            each(c, (idx, ref) => close(vecAt(Av, idx), mm(ref, vm), frob(ref) * frob(vm))),
          );
          inv.check(
            WA,
            each(c, (idx, ref) => close(tr(vecAt(wA, idx)), mm(wm, ref), frob(ref) * frob(wm))),
          );
        }),
        runs,
      ),
    );
  }

  {
    const FM_SHAPES =
      'products with FactoredMatrices are FactoredMatrices of shapes [...lead, l, n] and [...lead, n, r]';
    const FM_RIGHT = 'AB times a FactoredMatrix on the right equals AB @ (its AB)';
    const FM_LEFT = 'a FactoredMatrix on the left times AB equals (its AB) @ AB';
    const inv = invariants(t, [FM_SHAPES, FM_RIGHT, FM_LEFT]);
    await inv.run(() =>
      fc.assert(
        fc.property(
          fc.tuple(arbCase(), fc.integer({ min: 1, max: 5 }), fc.integer({ min: 1, max: 5 })),
          ([c, m2, n]) => {
            const right = new FactoredMatrix(randn([c.r, m2], c.seed + 11), randn([m2, n], c.seed + 12));
            const left = new FactoredMatrix(randn([n, m2], c.seed + 13), randn([m2, c.l], c.seed + 14));
            const rAB = mm(item(right.A, []), item(right.B, [])),
              lAB = mm(item(left.A, []), item(left.B, []));
            const p = c.fm.matmul(right),
              q = c.fm.rmatmul(left);
            inv.check(
              FM_SHAPES,
              p instanceof FactoredMatrix &&
                q instanceof FactoredMatrix &&
                sameShape(p.shape, [...c.lead, c.l, n]) &&
                sameShape(q.shape, [...c.lead, n, c.r]),
              () => `[${p.shape}], [${q.shape}]`,
            );
            inv.check(
              FM_RIGHT,
              each(c, (idx, ref) => close(item(p.AB, idx), mm(ref, rAB), frob(ref) * frob(rAB))),
            );
            inv.check(
              FM_LEFT,
              each(c, (idx, ref) => close(item(q.AB, idx), mm(lAB, ref), frob(ref) * frob(lAB))),
            );
          },
        ),
        runs,
      ),
    );
  }

  invariant(
    t,
    'mul by a scalar scales AB',
    fc.tuple(arbCase(), fc.double({ min: -3, max: 3, noNaN: true })),
    ([c, s]) => {
      const p = c.fm.mul(s);
      return each(c, (idx, ref) =>
        close(
          item(p.AB, idx),
          m64(
            ref.r,
            ref.c,
            ref.d.map((x) => x * s),
          ),
          Math.abs(s) * frob(ref),
        ),
      );
    },
  );

  invariant(t, 'unsqueeze adds a leading axis of 1 and keeps AB', arbCase(), (c) => {
    const u = c.fm.unsqueeze(0);
    return sameShape(u.shape, [1, ...c.fm.shape]) && each(c, (idx, ref) => close(item(u.AB, [0, ...idx]), ref));
  });
});

t.test('FactoredMatrix errors and small cases', async (t) => {
  t.throws(
    () => new FactoredMatrix(Tensor.zeros([3, 2]), Tensor.zeros([3, 2])),
    { code: 'ESHAPE' },
    'inner dimensions must match',
  );
  t.throws(
    () => new FactoredMatrix(Tensor.zeros([2, 3, 2]), Tensor.zeros([3, 2, 2])),
    { code: 'ESHAPE' },
    'leading axes must broadcast',
  );
  t.throws(
    () => new FactoredMatrix(Tensor.zeros([3]), Tensor.zeros([3, 2])),
    { code: 'ESHAPE' },
    'factors are at least 2-D',
  );
  const fm = new FactoredMatrix(randn([2, 3, 4, 2], 1), randn([2, 3, 2, 5], 2));
  t.throws(() => fm.get([0, 0, 0, 0, 0]), { code: 'EINDEX' }, 'an index longer than the shape is refused');
  t.throws(() => fm.get([2]), { code: 'EINDEX' }, 'an out-of-range leading index is refused');
  t.throws(() => fm.BA, { code: 'ESHAPE' }, 'BA needs a square product');
  t.throws(() => fm.matmul(Tensor.zeros([4, 2])), { code: 'ESHAPE' }, 'matmul checks the inner dimension');
  t.equal(fm.toString(), 'FactoredMatrix: Shape([2, 3, 4, 5]), Hidden Dim(2)', "toString as TL's repr");
  t.equal(fm.pair[0], fm.A, 'pair is [A, B]');
  t.equal(fm.svd(), fm.svd(), 'the SVD is computed once per instance');
  // A hand-checked 2x2: AB = [[2, 0], [0, 3]] -> S = [3, 2], eigenvalues {2, 3}, norm sqrt(13).
  const d = new FactoredMatrix(
    Tensor.from([
      [1, 0],
      [0, 3],
    ]),
    Tensor.from([
      [2, 0],
      [0, 1],
    ]),
  );
  t.same(d.S.toArray(), [3, 2], 'singular values of diag(2, 3)');
  t.same(d.eigenvalues.real.toArray().sort(), [2, 3], 'eigenvalues of diag(2, 3)');
  t.ok(Math.abs(d.norm().item() - Math.sqrt(13)) < 1e-6, 'norm of diag(2, 3)');
});

/** A random float64 matrix, some columns zero or repeated (rank deficiency). */
const arbMat = fc
  .record({
    r: fc.integer({ min: 1, max: 12 }),
    c: fc.integer({ min: 1, max: 12 }),
    seed: fc.nat({ max: 1e9 }),
    zero: fc.nat(),
    dup: fc.nat(),
  })
  .map(({ r, c, seed, zero, dup }) => {
    const d = Float64Array.from(randn([r, c], seed).f32());
    if (zero % 3 === 0) for (let i = 0; i < r; i++) d[i * c + (zero % c)] = 0;
    if (dup % 3 === 0 && c > 1) for (let i = 0; i < r; i++) d[i * c + c - 1] = -3 * d[i * c];
    return mat64(r, c, d);
  });
const asM = (x: { rows: number; cols: number; data: Float64Array }): M64 =>
  m64(x.rows, x.cols, Float64Array.from(x.data)); // a copy
const isOrthonormal = (q: M64) => {
  const g = mm(tr(q), q);
  return g.d.every((x, i) => Math.abs(x - (Math.floor(i / g.c) === i % g.c ? 1 : 0)) <= 1e-12);
};

t.test('float64 QR and Jacobi SVD (src/tensor/linalg64.ts)', async (t) => {
  invariant(
    t,
    'qr64: Q R = A, Q orthonormal, R upper triangular (tall)',
    arbMat,
    (a0) => {
      const a = a0.rows >= a0.cols ? a0 : mat64(a0.cols, a0.rows, a0.data);
      const { Q, R } = qr64(a);
      const upper = Array.from(R.data).every((x, i) => Math.floor(i / R.cols) <= i % R.cols || x === 0);
      return maxDiff(mm(asM(Q), asM(R)), asM(a)) <= 1e-12 * (1 + frob(asM(a))) && isOrthonormal(asM(Q)) && upper;
    },
    100,
  );
  invariant(
    t,
    "svd64: U S V^T = A, U and V orthonormal (zero singular values too), S descending = ml-matrix's",
    arbMat,
    (a) => {
      const { U, S, V } = svd64(a);
      const k = Math.min(a.rows, a.cols);
      if (U.cols !== k || V.cols !== k || S.length !== k) return false;
      const us = asM(U);
      for (let i = 0; i < us.r; i++) for (let j = 0; j < k; j++) us.d[i * k + j] *= S[j];
      const want = mlSvd(asM(a));
      return (
        maxDiff(mm(us, tr(asM(V))), asM(a)) <= 1e-12 * (1 + frob(asM(a))) &&
        isOrthonormal(asM(U)) &&
        isOrthonormal(asM(V)) &&
        Array.from(S).every((s, i) => (i === 0 || S[i - 1] >= s) && Math.abs(s - want[i]) <= 1e-12 * (1 + want[0]))
      );
    },
    100,
  );
});

t.test("the f64x2 Jacobi / Gram kernel (linalg64.wat.mjs) gives the JS loops' SVDs and factors", async (t) => {
  const k = linalg64Kernel();
  t.ok(k, 'dist/wasm/linalg64.wasm is built and loads in Node');
  const bigMat = fc
    .record({ r: fc.integer({ min: 8, max: 70 }), c: fc.integer({ min: 1, max: 40 }), seed: fc.nat({ max: 1e9 }) })
    .map(({ r, c, seed }) => mat64(r, c, Float64Array.from(randn([r, c], seed).f32())));
  const svdWith = (kern: typeof k, a: ReturnType<typeof mat64>) => {
    setLinalg64Kernel(kern);
    try {
      return svd64(a);
    } finally {
      setLinalg64Kernel(undefined);
    }
  };
  invariant(
    t,
    "svd64 with the kernel: U S V^T = A, U and V orthonormal, S = the JS loops' S to 1e-12 (odd sizes too)",
    bigMat,
    (a) => {
      const w = svdWith(k, a),
        j = svdWith(null, a);
      const us = asM(w.U),
        kk = w.S.length;
      for (let i = 0; i < us.r; i++) for (let c = 0; c < kk; c++) us.d[i * kk + c] *= w.S[c];
      return (
        maxDiff(mm(us, tr(asM(w.V))), asM(a)) <= 1e-12 * (1 + frob(asM(a))) &&
        isOrthonormal(asM(w.U)) &&
        isOrthonormal(asM(w.V)) &&
        Array.from(w.S).every((s, i) => Math.abs(s - j.S[i]) <= 1e-12 * (1 + j.S[0]))
      );
    },
    60,
  );
  invariant(
    t,
    "balancedFactors with the kernel: U V^T = A B^T, and the same singular values (U's column norms^2) as the JS loops",
    fc.record({ n: fc.integer({ min: 9, max: 80 }), m: fc.integer({ min: 1, max: 9 }), seed: fc.nat({ max: 1e9 }) }),
    ({ n, m, seed }) => {
      const A = randn([n, m], seed),
        Bt = randn([n + 3, m], seed + 1);
      const run = (kern: typeof k) => {
        setLinalg64Kernel(kern);
        try {
          return balancedFactors(A, Bt, Math.sqrt, Math.sqrt);
        } finally {
          setLinalg64Kernel(undefined);
        }
      };
      const w = run(k),
        j = run(null);
      const a = A.f32(),
        b = Bt.f32(),
        r = n + 3;
      let err = 0,
        big = 0;
      for (let i = 0; i < n; i++)
        for (let c = 0; c < r; c++) {
          let want = 0,
            got = 0;
          for (let x = 0; x < m; x++) {
            want += a[i * m + x] * b[c * m + x];
            got += w.U[i * m + x] * w.V[c * m + x];
          }
          err = Math.max(err, Math.abs(got - want));
          big = Math.max(big, Math.abs(want));
        }
      const sv = (U: Float32Array) =>
        Array.from({ length: m }, (_, x) => {
          let s2 = 0;
          for (let i = 0; i < n; i++) s2 += U[i * m + x] ** 2;
          return s2;
        });
      const sw = sv(w.U),
        sj = sv(j.U);
      return err <= 1e-4 * (1 + big) && sw.every((x, i) => Math.abs(x - sj[i]) <= 1e-4 * (1 + sj[0]));
    },
    60,
  );
});
