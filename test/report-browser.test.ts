// The demo's HTML report in a real browser: headless Chromium (found by ./browser.ts: CHROMIUM_PATH,
// a system chromium, else the one the npm dev dependency @sparticuz/chromium ships; driven by
// playwright-core) opens it from disk with the network blocked, every figure must render an SVG,
// there must be no console or page errors, and a screenshot is kept in artifacts/.
import t from 'tap';
import { existsSync, mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { launchChromium } from './browser.js';
import { HookedTransformer, randomGPT2, hfConfig, PRESETS } from '../src/index.js';
import { exploratoryDemo, ioiData } from '../src/demo/index.js';

const artifacts = fileURLToPath(new URL('../../artifacts/', import.meta.url));

t.test('the report renders every figure in headless Chromium, offline, without errors', async (t) => {
  const model = HookedTransformer.fromHFTensors(hfConfig(PRESETS.tiny), randomGPT2(PRESETS.tiny, 2), {
    foldLn: true,
    centerWritingWeights: true,
    centerUnembed: true,
    refactorFactoredAttnMatrices: true,
  });
  const { report } = await exploratoryDemo(model, ioiData(model, 'seed'), {
    print: () => {},
    banner: 'random weights (test)',
  });
  model.dispose();
  const dir = mkdtempSync(join(tmpdir(), 'typelens-report-'));
  const path = join(dir, 'index.html');
  report.write(path);

  const { browser, choice } = await launchChromium();
  t.comment(`browser: ${choice.source} (${choice.executablePath}, ${browser.version()})`);
  try {
    const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
    const errors: string[] = [];
    page.on('console', (m) => {
      if (m.type() === 'error') errors.push(m.text());
    });
    page.on('pageerror', (e) => errors.push(String(e)));
    // offline: anything but the file itself is refused
    await page.route('**/*', (route) => (route.request().url().startsWith('file:') ? route.continue() : route.abort()));
    await page.goto(pathToFileURL(path).href, { waitUntil: 'load' });
    await page.waitForFunction(
      (n) => document.querySelectorAll('.figure svg.main-svg').length >= n,
      report.figures.length,
      { timeout: 60_000 },
    );
    const perFigure = await page.$$eval('.figure', (divs) =>
      divs.map((d) => ({
        id: d.id,
        kind: d.getAttribute('data-kind'),
        svgs: d.querySelectorAll('svg.main-svg').length,
        title: d.querySelector('.gtitle')?.textContent ?? '',
      })),
    );
    t.equal(perFigure.length, report.figures.length, 'one element per figure');
    for (const [i, f] of perFigure.entries()) {
      t.ok(f.svgs > 0, `${f.id} (${f.kind}) rendered an SVG`);
      const want = report.figures[i];
      if (want.kind !== 'attention' && want.title) t.equal(f.title, want.title, `${f.id} title`);
    }
    // hover: plotly answers a hover on the first heatmap with a label
    const heat = report.figures.find((f) => f.kind === 'heatmap')!;
    const drag = page.locator(`#${heat.id} .nsewdrag`).first();
    await drag.scrollIntoViewIfNeeded();
    await drag.hover();
    await page.waitForSelector(`#${heat.id} .hoverlayer .hovertext`, { timeout: 10_000 });
    t.match(
      await page.locator(`#${heat.id} .hoverlayer .hovertext`).first().textContent(),
      /value: -?\d/,
      'hover label shows the value',
    );
    mkdirSync(artifacts, { recursive: true });
    await page.locator(`#${heat.id}`).screenshot({ path: join(artifacts, 'demo-report-heatmap.png') });
    await page.evaluate(() => window.scrollTo(0, 0));
    t.same(errors, [], 'no console or page errors');
    mkdirSync(artifacts, { recursive: true });
    await page.screenshot({ path: join(artifacts, 'demo-report.png'), fullPage: false });
    t.ok(existsSync(join(artifacts, 'demo-report.png')), 'screenshot saved to artifacts/demo-report.png');
  } finally {
    await browser.close();
  }
});
