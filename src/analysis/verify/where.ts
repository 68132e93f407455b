/** Where a discrepancy is (layer, head, batch, position, ...), its formatting, and the got-vs-want tally. */
import { map, Tensor } from '../../tensor/index.js';
import type { CheckOutcome, Where } from './types.js';

// ---------------------------------------------------------------- comparison helpers

export const axesOf = (name: string): (keyof Where)[] => {
  if (/hook_(attn_scores|pattern)$/.test(name)) return ['batch', 'head', 'pos', 'key'];
  if (/hook_(q|k|v|z|result)$/.test(name)) return ['batch', 'pos', 'head', 'dim'];
  if (/mlp\.hook_(pre|post)$/.test(name)) return ['batch', 'pos', 'neuron'];
  if (/hook_scale$/.test(name)) return ['batch', 'pos', 'dim'];
  if (name === 'logits') return ['batch', 'pos', 'token'];
  return ['batch', 'pos', 'dim'];
};
export function unravel(i: number, shape: readonly number[]): number[] {
  const out = new Array<number>(shape.length);
  for (let d = shape.length - 1; d >= 0; d--) {
    out[d] = i % shape[d];
    i = Math.floor(i / shape[d]);
  }
  return out;
}
export function whereAt(i: number, shape: readonly number[], axes: (keyof Where)[], base: Where = {}): Where {
  const idx = unravel(i, shape);
  const w: Where = { ...base };
  axes.forEach((a, d) => {
    if (d < idx.length && !(a === 'dim' && shape[d] === 1)) (w as Record<string, number>)[a] = idx[d];
  });
  const layer = /^blocks\.(\d+)\./.exec(base.hook ?? '');
  if (layer && w.layer === undefined) w.layer = Number(layer[1]);
  return w;
}

/** "blocks.1.attn.hook_z: layer 1, head 2, batch 0, pos 3, dim 5". */
export function formatWhere(w?: Where): string {
  if (!w) return '';
  const order: (keyof Where)[] = [
    'variant',
    'component',
    'layer',
    'head',
    'neuron',
    'batch',
    'pos',
    'key',
    'dim',
    'token',
  ];
  const parts = order.filter((k) => w[k] !== undefined).map((k) => `${k} ${w[k]}`);
  return w.hook ? `${w.hook}${parts.length ? `: ${parts.join(', ')}` : ''}` : parts.join(', ');
}

export const fmt = (x: number) => (x === 0 ? '0' : Number.isFinite(x) ? x.toExponential(2) : String(x));

interface Tally {
  maxAbs: number;
  maxRef: number;
  worstRatio: number;
  worstI: number;
  worstErr: number;
  worstTol: number;
  bad: number;
}
export function newTally(): Tally {
  return { maxAbs: 0, maxRef: 0, worstRatio: 0, worstI: -1, worstErr: 0, worstTol: 0, bad: 0 };
}
/** Fold got vs want into the tally; tol is per element or one number. Returns the index offset's worst. */
export function tally(
  t: Tally,
  got: ArrayLike<number>,
  want: ArrayLike<number>,
  tol: ArrayLike<number> | number,
  offset = 0,
): void {
  for (let i = 0; i < want.length; i++) {
    const g = got[i],
      w = want[i];
    const tl = typeof tol === 'number' ? tol : tol[i];
    const err = g === w ? 0 : Math.abs(g - w);
    const bad = !(err <= tl); // NaN counts as bad
    if (Math.abs(w) > t.maxRef) t.maxRef = Math.abs(w);
    if (Number.isNaN(err) || Number.isNaN(t.maxAbs)) t.maxAbs = NaN;
    else if (err > t.maxAbs) t.maxAbs = err;
    const ratio = Number.isNaN(err) ? Infinity : err === 0 ? 0 : tl > 0 ? err / tl : Infinity;
    if (bad) t.bad++;
    if (t.worstI < 0 || ratio > t.worstRatio) {
      t.worstRatio = ratio;
      t.worstI = offset + i;
      t.worstErr = err;
      t.worstTol = tl;
    }
  }
}
export function outcome(
  t: Tally,
  where: Where | undefined,
  nTerms: number | undefined,
  what: string,
  detail?: Record<string, number | string>,
): CheckOutcome {
  const pass = t.bad === 0 && !Number.isNaN(t.maxAbs);
  const maxRelErr = t.maxRef > 0 ? t.maxAbs / t.maxRef : t.maxAbs === 0 ? 0 : Infinity;
  const loc = formatWhere(where);
  const message = pass
    ? `max |err| ${fmt(t.maxAbs)} ≤ tol; worst at ${loc || '-'} (${(t.worstRatio * 100).toFixed(t.worstRatio < 0.01 ? 3 : 1)}% of tol)`
    : `${what}: off at ${loc} by ${fmt(t.worstErr)} > tol ${fmt(t.worstTol)} (${t.bad} scalar${t.bad === 1 ? '' : 's'} over tol)`;
  return {
    status: pass ? 'pass' : 'fail',
    maxAbsErr: t.maxAbs,
    maxRelErr,
    tol: t.worstTol,
    ratio: t.worstRatio,
    nTerms,
    where,
    message,
    detail,
  };
}

export const absT = (t: Tensor) => map(t, Math.abs);

export const plain = (t: Tensor) => {
  const c = t.contiguous();
  const f = c.f32();
  return f.length === c.size ? f : f.slice(0, c.size);
};
