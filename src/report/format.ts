import type { Tensor } from '../tensor/index.js';

/** `torch.Size([8, 15, 768])` */
export const torchSize = (shape: readonly number[]): string => `torch.Size([${shape.join(', ')}])`;

/** Python's round(x, n) for printing: round half to even on the exact binary value. */
export function pyRound(x: number, n: number): number {
  const f = 10 ** n,
    y = x * f,
    r = Math.round(y);
  // Math.round rounds .5 up; Python rounds to even
  return (Math.abs(y - Math.trunc(y)) === 0.5 ? 2 * Math.round(y / 2) : r) / f;
}

/**
 * torch's default tensor repr (precision 4, linewidth 80): fixed point unless the values span
 * more than 1e3 or leave [1e-4, 1e8), then scientific; integral values print as `3.`.
 */
export function torchRepr(t: Tensor): string {
  const vals = Array.from(t.f32());
  const finite = vals.filter((v) => Number.isFinite(v));
  const nz = finite.filter((v) => v !== 0).map(Math.abs);
  let fmt: (v: number) => string;
  if (finite.every((v) => Number.isInteger(v)))
    fmt = (v) => (Number.isFinite(v) ? `${v}.` : String(v).replace('Infinity', 'inf'));
  else {
    const mx = nz.length ? Math.max(...nz) : 0,
      mn = nz.length ? Math.min(...nz) : 0;
    const sci = nz.length > 0 && (mx / mn > 1000 || mx > 1e8 || mn < 1e-4);
    fmt = (v) => {
      if (!Number.isFinite(v)) return Number.isNaN(v) ? 'nan' : v > 0 ? 'inf' : '-inf';
      if (!sci) return v.toFixed(4);
      const [m, e] = v.toExponential(4).split('e');
      const ex = Number(e);
      return `${m}e${ex < 0 ? '-' : '+'}${String(Math.abs(ex)).padStart(2, '0')}`;
    };
  }
  const strs = vals.map(fmt);
  const w = Math.max(...strs.map((s) => s.length), 0);
  const cells = strs.map((s) => s.padStart(w));
  const shape = t.shape;
  if (shape.length === 0) return `tensor(${cells[0]})`;
  const perLine = Math.max(1, Math.floor((80 - 8 + 2) / (w + 2)));
  const render = (dim: number, off: number, indent: number): string => {
    const n = shape[dim];
    const step = shape.slice(dim + 1).reduce((a, b) => a * b, 1);
    if (dim === shape.length - 1) {
      const row = cells.slice(off, off + n);
      const lines: string[] = [];
      for (let i = 0; i < row.length; i += perLine) lines.push(row.slice(i, i + perLine).join(', '));
      return `[${lines.join(',\n' + ' '.repeat(indent + 1))}]`;
    }
    const parts = Array.from({ length: n }, (_, i) => render(dim + 1, off + i * step, indent + 1));
    const sep = ',' + '\n'.repeat(shape.length - dim - 1) + ' '.repeat(indent + 1);
    return `[${parts.join(sep)}]`;
  };
  return `tensor(${render(0, 0, 7)})`;
}
