/** The report as a fixed-width table. */
import type { VerifyReport } from './types.js';
import { fmt } from './where.js';

// ---------------------------------------------------------------- table

/** The report as a fixed-width table (what `typelens verify` prints). */
export function formatVerifyTable(r: VerifyReport): string {
  const head = ['check', 'status', 'max abs err', 'max rel err', 'tolerance', 'err/tol'];
  const rows = r.checks.map((c) => [
    c.id,
    c.status === 'pass' ? 'PASS' : c.status === 'fail' ? 'FAIL' : 'skip',
    c.status === 'skip' ? '-' : fmt(c.maxAbsErr),
    c.status === 'skip' ? '-' : fmt(c.maxRelErr),
    c.status === 'skip' ? '-' : fmt(c.tol),
    c.status === 'skip' ? '-' : c.ratio === Infinity ? 'inf' : c.ratio.toFixed(3),
  ]);
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((x) => x[i].length)));
  const line = (x: string[]) =>
    x
      .map((s, i) => (i === 0 ? s.padEnd(w[i]) : s.padStart(w[i])))
      .join('  ')
      .trimEnd();
  const out = [line(head), w.map((n) => '-'.repeat(n)).join('  ')];
  r.checks.forEach((c, i) => {
    out.push(line(rows[i]));
    if (c.status !== 'pass') out.push(`    ${c.status === 'fail' ? '↳' : '·'} ${c.message}`);
    if (c.warning) out.push(`    ! ${c.warning}`);
  });
  const m = r.model;
  out.push('');
  out.push(
    `${r.passed} passed, ${r.failed} failed, ${r.skipped} skipped — ${m.name} (${m.n_layers} layers, d_model ${m.d_model}, ${m.normalization}), ` +
      `weights ${r.dtype}, tokens [${r.tokens.length}, ${r.tokens[0]?.length ?? 0}], answers ${r.answers.map(([a, b]) => `${a}/${b}`).join(' ')}, k ${r.tolerance.k}, ${r.seconds.toFixed(1)} s`,
  );
  return out.join('\n');
}
