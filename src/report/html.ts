import { TypelensError } from '../errors.js';
import { platform } from '../platform/index.js';
import { writeFileAtomic } from '../util/fs.js';

/** What a figure is, for readers of the report (and its tests): kind, titles, data shape. */
export interface FigureInfo {
  id: string;
  kind: 'heatmap' | 'line' | 'scatter' | 'attention';
  title: string;
  xTitle: string;
  yTitle: string;
  shape: number[];
}

interface PlotSpec {
  data: unknown[];
  layout: Record<string, unknown>;
}

// plotly express's diverging RdBu (red for negative, blue for positive), white at the midpoint.
const RDBU = [
  'rgb(103,0,31)',
  'rgb(178,24,43)',
  'rgb(214,96,77)',
  'rgb(244,165,130)',
  'rgb(253,219,199)',
  'rgb(247,247,247)',
  'rgb(209,229,240)',
  'rgb(146,197,222)',
  'rgb(67,147,195)',
  'rgb(33,102,172)',
  'rgb(5,48,97)',
];
const RDBU_SCALE = RDBU.map((c, i) => [i / (RDBU.length - 1), c]);

const esc = (s: string): string => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
/** Tokens as tick labels: spaces made visible, as circuitsvis and TL users are used to. */
const tokLabel = (t: string): string => t.replace(/ /g, '\u00a0').replace(/\n/g, '\\n');

/**
 * A one-page HTML report: headings, prose, printed output and interactive plotly figures,
 * with plotly.js inlined so that the file works offline.
 */
export class Report {
  private parts: string[] = [];
  private specs: Record<string, PlotSpec> = {};
  readonly figures: FigureInfo[] = [];

  constructor(readonly title: string) {}

  heading(text: string, level = 2): this {
    this.parts.push(`<h${level}>${esc(text)}</h${level}>`);
    return this;
  }
  para(text: string): this {
    this.parts.push(`<p>${esc(text)}</p>`);
    return this;
  }
  banner(text: string): this {
    this.parts.push(`<div class="banner">${esc(text)}</div>`);
    return this;
  }
  pre(lines: string[]): this {
    if (lines.length) this.parts.push(`<pre>${esc(lines.join('\n'))}</pre>`);
    return this;
  }

  private figure(info: Omit<FigureInfo, 'id'>, spec: PlotSpec, width = 720, height = 480): string {
    const id = `fig${this.figures.length}`;
    this.figures.push({ id, ...info });
    this.specs[id] = spec;
    this.parts.push(
      `<div class="figure" id="${id}" data-kind="${info.kind}" style="width:${width}px;height:${height}px"></div>`,
    );
    return id;
  }

  /** The notebook's imshow: RdBu centred on 0, row 0 at the top, square cells. */
  imshow(
    z: number[][],
    o: { title?: string; xTitle?: string; yTitle?: string; x?: string[]; zmin?: number; zmax?: number },
  ): string {
    const rows = z.length,
      cols = z[0]?.length ?? 0;
    const xs = Array.from({ length: cols }, (_, i) => i);
    const trace: Record<string, unknown> = {
      type: 'heatmap',
      z,
      x: xs,
      y: Array.from({ length: rows }, (_, i) => i),
      colorscale: RDBU_SCALE,
      zmid: 0,
      hovertemplate: `${o.xTitle ?? 'x'}: %{x}<br>${o.yTitle ?? 'y'}: %{y}<br>value: %{z:.4f}<extra></extra>`,
    };
    if (o.zmin !== undefined) Object.assign(trace, { zmin: o.zmin, zmax: o.zmax, zmid: undefined });
    if (o.x) {
      trace.customdata = z.map(() => o.x);
      trace.hovertemplate = `${o.xTitle ?? 'x'}: %{customdata}<br>${o.yTitle ?? 'y'}: %{y}<br>value: %{z:.4f}<extra></extra>`;
    }
    const layout = {
      title: { text: o.title ?? '' },
      // integer ticks: rows and columns are layers, heads or positions
      xaxis: {
        title: { text: o.xTitle ?? '' },
        constrain: 'domain',
        scaleanchor: 'y',
        dtick: 1,
        ...(o.x ? { tickmode: 'array', tickvals: xs, ticktext: o.x.map(tokLabel), tickangle: -45 } : {}),
      },
      yaxis: { title: { text: o.yTitle ?? '' }, autorange: 'reversed', constrain: 'domain', dtick: 1 },
      margin: { t: 60, b: o.x ? 120 : 60 },
    };
    return this.figure(
      { kind: 'heatmap', title: o.title ?? '', xTitle: o.xTitle ?? '', yTitle: o.yTitle ?? '', shape: [rows, cols] },
      { data: [trace], layout },
    );
  }

  /** The notebook's line: axis titles default to "x" and "y". */
  line(y: number[], o: { title?: string; x?: number[]; hover?: string[]; xTitle?: string; yTitle?: string }): string {
    const x = o.x ?? y.map((_, i) => i);
    const trace = {
      type: 'scatter',
      mode: 'lines',
      x,
      y,
      text: o.hover,
      hovertemplate: `${o.hover ? '<b>%{text}</b><br>' : ''}x=%{x}<br>y=%{y:.4f}<extra></extra>`,
    };
    const layout = {
      title: { text: o.title ?? '' },
      xaxis: { title: { text: o.xTitle ?? 'x' } },
      yaxis: { title: { text: o.yTitle ?? 'y' } },
    };
    return this.figure(
      { kind: 'line', title: o.title ?? '', xTitle: o.xTitle ?? 'x', yTitle: o.yTitle ?? 'y', shape: [y.length] },
      { data: [trace], layout },
    );
  }

  /** The notebook's scatter: optional continuous colour with a titled colour bar. */
  scatter(o: {
    x: number[];
    y: number[];
    xTitle: string;
    yTitle: string;
    title?: string;
    hover?: string[];
    color?: number[];
    colorTitle?: string;
    rangeX?: [number, number];
    rangeY?: [number, number];
  }): string {
    const marker: Record<string, unknown> = o.color
      ? { color: o.color, colorscale: 'Viridis', showscale: true, colorbar: { title: { text: o.colorTitle ?? '' } } }
      : {};
    const trace = {
      type: 'scatter',
      mode: 'markers',
      x: o.x,
      y: o.y,
      text: o.hover,
      marker,
      hovertemplate: `${o.hover ? '<b>%{text}</b><br>' : ''}${o.xTitle}=%{x:.4f}<br>${o.yTitle}=%{y:.4f}<extra></extra>`,
    };
    const layout = {
      title: { text: o.title ?? '' },
      xaxis: { title: { text: o.xTitle }, range: o.rangeX },
      yaxis: { title: { text: o.yTitle }, range: o.rangeY },
    };
    return this.figure(
      { kind: 'scatter', title: o.title ?? '', xTitle: o.xTitle, yTitle: o.yTitle, shape: [o.x.length] },
      { data: [trace], layout },
      640,
      520,
    );
  }

  /**
   * Attention patterns of some heads on one prompt, circuitsvis-style: one heatmap per head,
   * destination (query) token down, source (key) token across; hover shows the weight.
   */
  attention(heads: { name: string; pattern: number[][] }[], tokens: string[], title: string): string[] {
    this.parts.push(`<h3>${esc(title)}</h3>`);
    if (!heads.length) {
      this.parts.push('<p>No heads in this group</p>');
      return [];
    }
    const n = tokens.length,
      ticks = Array.from({ length: n }, (_, i) => i),
      labels = tokens.map(tokLabel);
    const side = Math.min(560, 140 + 22 * n);
    return heads.map(({ name, pattern }) => {
      const hover = pattern.map((row, i) => row.map((_, j) => `${esc(labels[i])} \u2192 ${esc(labels[j])}`));
      const trace = {
        type: 'heatmap',
        z: pattern,
        x: ticks,
        y: ticks,
        zmin: 0,
        zmax: 1,
        colorscale: 'Blues',
        reversescale: true,
        text: hover,
        hovertemplate: '%{text}<br>weight %{z:.3f}<extra></extra>',
      };
      const axis = (t: string) => ({
        title: { text: t },
        tickmode: 'array',
        tickvals: ticks,
        ticktext: labels,
        tickfont: { size: 10 },
      });
      const layout = {
        title: { text: `${name}` },
        xaxis: { ...axis('Source token'), tickangle: -60 },
        yaxis: { ...axis('Destination token'), autorange: 'reversed' },
        margin: { l: 120, b: 120, t: 40 },
      };
      return this.figure(
        {
          kind: 'attention',
          title: `${title}: ${name}`,
          xTitle: 'Source token',
          yTitle: 'Destination token',
          shape: [n, n],
        },
        { data: [trace], layout },
        side + 80,
        side,
      );
    });
  }

  /** The page, plotly.js inlined: read from its package in Node; in a browser pass its source as `plotly`. */
  html(opts: { plotly?: string } = {}): string {
    const plotly = opts.plotly ?? platform.plotlySource();
    if (plotly === null)
      throw new TypelensError(
        'Report.html() inlines plotly.js, which this runtime cannot read by itself: pass its source, html({ plotly })',
        'EINPUT',
      );
    // </script> inside JSON would end the element early
    const json = (v: unknown) => JSON.stringify(v).replace(/</g, '\\u003c');
    return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(this.title)}</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 1000px; margin: 2em auto; padding: 0 1em; color: #222; }
pre { background: #f6f6f6; padding: .8em; overflow-x: auto; font-size: 12px; }
.banner { background: #fff3cd; border: 1px solid #e0c060; padding: .8em; margin: 1em 0; }
.figure { margin: 1em 0; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
</style>
<script>${plotly}</script>
</head><body>
<h1>${esc(this.title)}</h1>
${this.parts.join('\n')}
<script type="application/json" id="typelens-figures">${json(this.figures)}</script>
<script>
const specs = ${json(this.specs)};
for (const [id, s] of Object.entries(specs)) Plotly.newPlot(id, s.data, s.layout, { responsive: false, displaylogo: false });
</script>
</body></html>
`;
  }

  /** Write OUT/index.html atomically (temp file + rename). */
  write(path: string): void {
    writeFileAtomic(path, this.html());
  }
}
