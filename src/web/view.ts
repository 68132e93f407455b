/**
 * Draw a Report (src/report/html.ts) into an element of the live page: the same HTML parts and
 * plotly specs report.html() writes to a file, with figure ids made unique across the page's
 * several Reports. Plotly is the page's global (dist/web/plotly.min.js, the report's own copy).
 */
import type { Report } from '../report/html.js';

interface PlotSpec {
  data: unknown[];
  layout: Record<string, unknown>;
}

declare const Plotly: {
  newPlot(
    el: HTMLElement,
    data: unknown[],
    layout: Record<string, unknown>,
    config: Record<string, unknown>,
  ): Promise<unknown>;
  purge(el: HTMLElement): void;
};

/**
 * The Report's parts and specs. They are private in Report (it writes whole files); reading them
 * here keeps one copy of the figure code. If Report grows a public accessor, use that instead.
 */
const internals = (r: Report): { parts: string[]; specs: Record<string, PlotSpec> } =>
  r as unknown as { parts: string[]; specs: Record<string, PlotSpec> };

let drawn = 0;

/** Replace `el`'s content with the report; resolves when every figure is drawn. */
export async function drawReport(el: HTMLElement, report: Report): Promise<void> {
  for (const old of el.querySelectorAll<HTMLElement>('.figure')) Plotly.purge(old);
  const { parts, specs } = internals(report);
  const prefix = `r${drawn++}-`;
  // report.ts writes each figure as <div class="figure" id="figN" ...>
  el.innerHTML = parts
    .map((p) => p.replace(/^<div class="figure" id="(fig\d+)"/, `<div class="figure" id="${prefix}$1"`))
    .join('\n');
  await Promise.all(
    Object.entries(specs).map(([id, s]) => {
      const div = el.querySelector<HTMLElement>(`#${prefix}${id}`);
      if (!div) throw new Error(`figure ${id} has no element`);
      return Plotly.newPlot(div, s.data, s.layout, { responsive: false, displaylogo: false });
    }),
  );
}
