// A loss curve as a standalone SVG line plot (no plotting library: the figure must be a plain file in the repo).

/** Points (step, loss) by series -> an SVG of each series' running mean (window 20) over the raw points. */
export function lossCurveSvg(log: { step: number; loss: number; kind: string }[], title: string): string {
  const W = 720,
    H = 360,
    L = 60,
    R = 140,
    T = 34,
    B = 44;
  const maxStep = Math.max(1, ...log.map((p) => p.step));
  const maxLoss = Math.max(1e-6, ...log.map((p) => p.loss));
  const x = (s: number) => L + ((W - L - R) * s) / maxStep;
  const y = (l: number) => T + (H - T - B) * (1 - l / maxLoss);
  const kinds = [...new Set(log.map((p) => p.kind))];
  const colors = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd'];
  const parts: string[] = [];
  kinds.forEach((k, i) => {
    const pts = log.filter((p) => p.kind === k);
    const c = colors[i % colors.length];
    parts.push(
      `<path d="${pts.map((p, j) => `${j ? 'L' : 'M'}${x(p.step).toFixed(1)},${y(p.loss).toFixed(1)}`).join('')}" stroke="${c}" stroke-opacity="0.2" fill="none"/>`,
    );
    const sm = pts.map((_, j) => {
      const w = pts.slice(Math.max(0, j - 19), j + 1);
      return w.reduce((a, p) => a + p.loss, 0) / w.length;
    });
    parts.push(
      `<path d="${pts.map((p, j) => `${j ? 'L' : 'M'}${x(p.step).toFixed(1)},${y(sm[j]).toFixed(1)}`).join('')}" stroke="${c}" stroke-width="2" fill="none"/>`,
    );
    parts.push(`<text x="${W - R + 10}" y="${T + 20 + 20 * i}" fill="${c}" font-size="13">${k} loss</text>`);
  });
  const ticks: string[] = [];
  for (let i = 0; i <= 5; i++) {
    const l = (maxLoss * i) / 5,
      s = Math.round((maxStep * i) / 5);
    ticks.push(`<text x="${L - 6}" y="${y(l) + 4}" font-size="11" text-anchor="end">${l.toFixed(1)}</text>`);
    ticks.push(`<line x1="${L}" x2="${W - R}" y1="${y(l)}" y2="${y(l)}" stroke="#eee"/>`);
    ticks.push(`<text x="${x(s)}" y="${H - B + 16}" font-size="11" text-anchor="middle">${s}</text>`);
  }
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="${L}" y="20" font-size="14">${title.replace(/&/g, '&amp;').replace(/</g, '&lt;')}</text>
${ticks.join('\n')}
<line x1="${L}" x2="${L}" y1="${T}" y2="${H - B}" stroke="black"/><line x1="${L}" x2="${W - R}" y1="${H - B}" y2="${H - B}" stroke="black"/>
<text x="${(L + W - R) / 2}" y="${H - 8}" font-size="12" text-anchor="middle">step</text>
<text x="14" y="${(T + H - B) / 2}" font-size="12" transform="rotate(-90 14 ${(T + H - B) / 2})" text-anchor="middle">cross-entropy</text>
${parts.join('\n')}
</svg>
`;
}
