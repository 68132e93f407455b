// Standalone SVG figures (a loss curve, head heatmaps) for files committed with the embedded model and its doc: no plotting library, no browser.

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

/** A [rows, cols] heatmap (layers x heads) on a diverging red-white-blue scale centred at 0, with each cell's value. */
export function heatmapSvg(
  values: Float32Array | number[],
  rows: number,
  cols: number,
  title: string,
  rowLabel = 'layer',
  colLabel = 'head',
): string {
  const cell = 56,
    L = 70,
    T = 40,
    W = L + cols * cell + 20,
    H = T + rows * cell + 50;
  const v = Array.from(values);
  const m = Math.max(1e-9, ...v.map(Math.abs));
  const color = (x: number) => {
    const a = Math.min(1, Math.abs(x) / m);
    const c = Math.round(255 * (1 - a));
    return x >= 0 ? `rgb(${c},${c},255)` : `rgb(255,${c},${c})`;
  };
  const cells: string[] = [];
  for (let r = 0; r < rows; r++)
    for (let c = 0; c < cols; c++) {
      const x = v[r * cols + c];
      cells.push(
        `<rect x="${L + c * cell}" y="${T + r * cell}" width="${cell}" height="${cell}" fill="${color(x)}" stroke="#ccc"/>` +
          `<text x="${L + c * cell + cell / 2}" y="${T + r * cell + cell / 2 + 4}" font-size="12" text-anchor="middle">${x.toFixed(2)}</text>`,
      );
    }
  const labels: string[] = [];
  for (let r = 0; r < rows; r++)
    labels.push(`<text x="${L - 8}" y="${T + r * cell + cell / 2 + 4}" font-size="12" text-anchor="end">${r}</text>`);
  for (let c = 0; c < cols; c++)
    labels.push(
      `<text x="${L + c * cell + cell / 2}" y="${T + rows * cell + 16}" font-size="12" text-anchor="middle">${c}</text>`,
    );
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="10" y="22" font-size="14">${title.replace(/&/g, '&amp;').replace(/</g, '&lt;')}</text>
${cells.join('\n')}
${labels.join('\n')}
<text x="${L + (cols * cell) / 2}" y="${T + rows * cell + 36}" font-size="12" text-anchor="middle">${colLabel}</text>
<text x="16" y="${T + (rows * cell) / 2}" font-size="12" transform="rotate(-90 16 ${T + (rows * cell) / 2})" text-anchor="middle">${rowLabel}</text>
</svg>
`;
}
