/** Checks: hooks that return their input change nothing, bit for bit. */
import type { FwdHook } from '../../model/hooked-transformer.js';
import { Tensor } from '../../tensor/index.js';
import type { CheckOutcome } from './types.js';
import { axesOf, fmt, formatWhere, plain, whereAt } from './where.js';
import { registerCheck } from './registry.js';

// ---------------------------------------------------------------- hooks

/** Bit-exact comparison: counts differing entries (NaN equals NaN with the same bits). */
function bitDiff(a: Float32Array, b: Float32Array): { n: number; first: number; maxAbs: number; maxRef: number } {
  if (a.length !== b.length) return { n: Math.max(a.length, b.length), first: 0, maxAbs: Infinity, maxRef: 0 };
  const ia = new Uint32Array(a.buffer, a.byteOffset, a.length),
    ib = new Uint32Array(b.buffer, b.byteOffset, b.length);
  let n = 0,
    first = -1,
    maxAbs = 0,
    maxRef = 0;
  for (let i = 0; i < a.length; i++) {
    if (Math.abs(b[i]) > maxRef && Number.isFinite(b[i])) maxRef = Math.abs(b[i]);
    if (ia[i] !== ib[i]) {
      n++;
      const d = Math.abs(a[i] - b[i]);
      if (first < 0 || d > maxAbs || Number.isNaN(d)) {
        if (first < 0 || !(d <= maxAbs)) first = i;
        maxAbs = Number.isNaN(d) ? NaN : Math.max(maxAbs, d);
      }
    }
  }
  return { n, first, maxAbs, maxRef };
}

registerCheck({
  id: 'hooks.identity',
  group: 'hooks',
  title: 'identity hooks on every hook point leave the logits bit-identical',
  run(ctx): CheckOutcome {
    const m = ctx.model;
    const base = plain(m.forward(ctx.tokens));
    const variants: [string, (x: Tensor) => Tensor | void][] = [
      ['returns its input', (x) => x],
      ['returns nothing', () => undefined],
      ['returns a copy', (x) => x.clone()],
    ];
    const n = m.hookDict.size;
    let worst: { v: string; d: ReturnType<typeof bitDiff>; shape: readonly number[] } | undefined;
    for (const [v, fn] of variants) {
      const out = m.runWithHooks(ctx.tokens, { fwdHooks: [[() => true, fn]] });
      const d = bitDiff(plain(out), base);
      if (d.n > 0 && (!worst || !(d.maxAbs <= worst.d.maxAbs))) worst = { v, d, shape: out.shape };
    }
    if (!worst)
      return {
        status: 'pass',
        maxAbsErr: 0,
        maxRelErr: 0,
        tol: 0,
        ratio: 0,
        message: `bit-identical for ${variants.length} identity hooks on all ${n} hook points`,
        detail: { hookPoints: n },
      };
    const where = whereAt(worst.d.first, worst.shape, ['batch', 'pos', 'token'], {
      hook: 'logits',
      variant: `hook ${worst.v}`,
    });
    return {
      status: 'fail',
      maxAbsErr: worst.d.maxAbs,
      maxRelErr: worst.d.maxRef > 0 ? worst.d.maxAbs / worst.d.maxRef : Infinity,
      tol: 0,
      ratio: Infinity,
      where,
      message: `logits change with an identity hook that ${worst.v} at ${formatWhere(where)}: ${worst.d.n} entries differ, max |err| ${fmt(worst.d.maxAbs)}`,
      detail: { hookPoints: n },
    };
  },
});

registerCheck({
  id: 'hooks.cacheVsHooks',
  group: 'hooks',
  title: 'runWithCache activations = runWithHooks reads (bit-identical)',
  run(ctx): CheckOutcome {
    const m = ctx.model;
    const { logits, cache } = ctx.cached();
    const reads = new Map<string, Tensor>();
    const hooks: FwdHook[] = [...m.hookDict.values()]
      .filter((hp) => hp.fires)
      .map((hp) => [
        hp.name,
        (x: Tensor) => {
          reads.set(hp.name, x.clone());
        },
      ]);
    const hooked = m.runWithHooks(ctx.tokens, { fwdHooks: hooks });
    const pairs: [string, Tensor, Tensor][] = [];
    for (const [name, t] of reads) if (cache.cacheDict.has(name)) pairs.push([name, cache.get(name), t]);
    const missing = [...reads.keys()].filter((k) => !cache.cacheDict.has(k));
    pairs.push(['logits', logits, hooked]);
    let maxAbs = 0,
      maxRef = 0,
      differ = 0;
    let worst: { name: string; d: ReturnType<typeof bitDiff>; shape: readonly number[] } | undefined;
    for (const [name, c, r] of pairs) {
      const d = bitDiff(plain(c), plain(r));
      maxRef = Math.max(maxRef, d.maxRef);
      if (d.n > 0) {
        differ++;
        maxAbs = Number.isNaN(d.maxAbs) ? NaN : Math.max(maxAbs, d.maxAbs);
        if (!worst) worst = { name, d, shape: r.shape }; // the first to differ in firing order is where it starts
      }
    }
    if (!worst && missing.length === 0) {
      return {
        status: 'pass',
        maxAbsErr: 0,
        maxRelErr: 0,
        tol: 0,
        ratio: 0,
        message: `${pairs.length - 1} cached activations and the logits are bit-identical to hook reads`,
        detail: { compared: pairs.length },
      };
    }
    if (!worst)
      return {
        status: 'fail',
        maxAbsErr: 0,
        maxRelErr: 0,
        tol: 0,
        ratio: Infinity,
        where: { hook: missing[0] },
        message: `${missing.length} hook points fired but are not in the cache (first: ${missing[0]})`,
      };
    const where = whereAt(worst.d.first, worst.shape, axesOf(worst.name), { hook: worst.name });
    return {
      status: 'fail',
      maxAbsErr: maxAbs,
      maxRelErr: maxRef > 0 ? maxAbs / maxRef : Infinity,
      tol: 0,
      ratio: Infinity,
      where,
      message: `cache and hook reads first differ at ${formatWhere(where)}: ${worst.d.n} entries, max |err| ${fmt(worst.d.maxAbs)} (${differ} of ${pairs.length} tensors differ)`,
      detail: { compared: pairs.length, differing: differ },
    };
  },
});
