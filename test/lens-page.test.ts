// The lens page in headless Chromium (./browser.ts, driven by playwright-core), served by the real
// `typelens serve` process: the first visit shows the default prompt's results with no console
// errors and no request leaving 127.0.0.1; a typed prompt redraws the figures; the page's logits
// equal Node's for the same model and tokens bit for bit; the head-patching sweep runs on >= 2 Web
// Workers when the page is cross-origin isolated and on 1 thread when not; a malformed checkpoint
// gives a one-line error and the page keeps working; a good one replaces the model.
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium as playwright, type Browser, type Page } from 'playwright-core';
import { findChromium } from './browser.js';
import { HookedTransformer, makeWeights, PRESETS } from '../src/index.js';
import { LENS_FLAGS, RANDOM_SEED, randomModel } from '../src/web/models.js';
import { analyse, DEFAULT_INPUT, headPatching, lensData, swapNames } from '../src/web/lens.js';
import type { LensHook } from '../src/web/main.js';

const bin = fileURLToPath(new URL('../../bin/typelens.js', import.meta.url));
const artifacts = fileURLToPath(new URL('../../artifacts/', import.meta.url));
const docsImg = fileURLToPath(new URL('../../docs/img/', import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), 'typelens-lens-'));
const modelA = join(tmp, 'a'),
  modelB = join(tmp, 'b');
makeWeights(modelA, PRESETS.tiny, 5);
makeWeights(modelB, PRESETS.tiny, 6);

/** `typelens serve` on a free port; resolves with its URL once it listens. */
async function serve(args: string[], cwd = tmp): Promise<{ url: string; child: ChildProcess }> {
  const child = spawn(process.execPath, [bin, 'serve', '--port', '0', ...args], {
    cwd,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '',
    err = '';
  child.stderr!.on('data', (c) => (err += c));
  const url = await new Promise<string>((ok, fail) => {
    child.stdout!.on('data', (c) => {
      out += c;
      const m = /http:\/\/127\.0\.0\.1:\d+\//.exec(out);
      if (m) ok(m[0]);
    });
    child.on('exit', (code) => fail(new Error(`serve exited ${code}: ${err}`)));
  });
  return { url, child };
}

const hookOf = (page: Page) => page.evaluate(() => window.typelensLens) as Promise<LensHook>;

/** Wait until the page has finished `runs` analyses and their sweep. */
const settled = (page: Page, runs: number, sweeps: number) =>
  page.waitForFunction(
    ([r, s]) => {
      const h = window.typelensLens;
      return h && (h.status === 'done' || h.status === 'error') && h.runs >= r && (h.sweep?.runs ?? 0) >= s;
    },
    [runs, sweeps],
    { timeout: 120_000 },
  );

/** Node's logits for the same model and tokens, as the page encodes them. */
function nodeLogits(model: HookedTransformer, tokens: number[]): string {
  const logits = model.forward([tokens]);
  const a = Float32Array.from(logits.toArray());
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('base64');
}

interface Visit {
  page: Page;
  errors: string[];
  requests: string[];
  outside: string[];
}

async function visit(browser: Browser, url: string): Promise<Visit> {
  const context = await browser.newContext({ viewport: { width: 1200, height: 1000 } });
  const page = await context.newPage();
  const v: Visit = { page, errors: [], requests: [], outside: [] };
  page.on('console', (m) => {
    if (m.type() === 'error') v.errors.push(m.text());
  });
  page.on('pageerror', (e) => v.errors.push(String(e)));
  const origin = new URL(url).origin;
  // nothing may leave the server's origin (data: and blob: stay in the tab)
  await context.route('**/*', (route) => {
    const u = route.request().url();
    v.requests.push(u);
    if (u.startsWith(origin + '/') || u.startsWith('data:') || u.startsWith('blob:')) return route.continue();
    v.outside.push(u);
    return route.abort();
  });
  context.on('request', (r) => {
    const u = r.url();
    if (!(u.startsWith(origin + '/') || u.startsWith('data:') || u.startsWith('blob:')) && !v.outside.includes(u))
      v.outside.push(u);
  });
  await page.goto(url, { waitUntil: 'load' });
  return v;
}

const figures = (page: Page, sel: string) =>
  page.$$eval(`${sel} .figure`, (ds) => ds.map((d) => d.querySelectorAll('svg.main-svg').length));

t.test("the page's inputs: names swapped for the corrupted prompt, clear errors for what cannot run", async (t) => {
  const swapped = swapNames(DEFAULT_INPUT.prompt, ' Mary', ' John');
  t.equal(swapped, 'When Mary and John went to the shops, Mary gave the bag to', 'both names swapped, whole words');
  t.equal(swapNames(swapped, ' Mary', ' John'), DEFAULT_INPUT.prompt, 'swapping twice gives the prompt back');
  t.equal(swapNames('Johnny and John', 'John', 'Mary'), 'Johnny and Mary', 'only whole words');
  const m = HookedTransformer.fromDir(modelA, LENS_FLAGS);
  const data = lensData(m, { ...DEFAULT_INPUT, corrupted: '' });
  t.equal(data.corruptedPrompts[0], swapped, 'an empty corrupted prompt is the swapped one');
  t.throws(
    () => lensData(m, { ...DEFAULT_INPUT, correct: ' Maryland Mary' }),
    /token/,
    'a multi-token answer is named',
  );
  t.throws(
    () => lensData(m, { ...DEFAULT_INPUT, corrupted: 'When John went' }),
    /as many tokens/,
    'a corrupted prompt of another length is refused',
  );
  t.throws(() => lensData(m, { ...DEFAULT_INPUT, prompt: '  ' }), /empty/, 'an empty prompt is refused');
  m.dispose();
});

let browser: Browser;
const children: ChildProcess[] = [];
// The npm Chromium's flags are made for serverless sandboxes: one process, site isolation and web
// security off. A page cannot be cross-origin isolated in that mode (and closing a context can end
// the browser), so the flags that turn process isolation off are left out here.
const NOT_ISOLATING =
  /^--(single-process|no-zygote|disable-site-isolation-trials|disable-web-security)$|IsolateOrigins|site-per-process/;
t.before(async () => {
  const choice = await findChromium();
  browser = await playwright.launch({
    executablePath: choice.executablePath,
    headless: true,
    args: choice.args.filter((a) => !NOT_ISOLATING.test(a)),
  });
  t.comment(`browser: ${choice.source} (${browser.version()})`);
});
t.teardown(async () => {
  await browser?.close();
  for (const c of children) c.kill('SIGTERM');
});

t.test('isolated: default results on first visit, new prompts, workers, bit-exact logits, checkpoints', async (t) => {
  const { url, child } = await serve(['--model', modelA]);
  children.push(child);
  const { page, errors, requests, outside } = await visit(browser, url);
  await settled(page, 1, 1);
  let h = await hookOf(page);
  t.equal(h.status, 'done', 'the first visit finishes without a click');
  t.equal(h.crossOriginIsolated, true, 'the page is cross-origin isolated');
  t.match(h.modelName, /served from model\//, 'it opened the served model');
  t.equal(await page.locator('#banner').isHidden(), true, 'no random-model banner for a served model');
  t.match(await page.locator('#summary pre').first().textContent(), /Top 0th token/, "test_prompt's table is shown");
  const attr = await figures(page, '#attribution');
  t.equal(attr.length, 3, 'logit lens, layer and head attribution figures');
  t.ok(
    attr.every((n) => n > 0),
    'each attribution figure drew an SVG',
  );
  const att = await figures(page, '#attention');
  t.ok(att.length === 1 && att[0] > 0, 'one attention pattern drawn');
  t.equal((await figures(page, '#patching')).length, 1, 'the head-patching heatmap drawn');
  t.ok(h.sweep!.workers >= 2, `the sweep ran on ${h.sweep!.workers} Web Workers (>= 2)`);
  t.equal(h.sweep!.headZ.length, 2 * 4, 'one patching result per head');

  const nodeA = HookedTransformer.fromDir(modelA, LENS_FLAGS);
  t.equal(h.logitsBase64, nodeLogits(nodeA, h.tokens), 'page logits == Node logits, bit for bit (default prompt)');
  // the sweep on the page's Web Workers == the serial sweep in Node
  const nodeSweep = await headPatching(nodeA, analyse(nodeA, h.input!, false), {});
  t.same(h.sweep!.headZ, Array.from(nodeSweep.headZ.toArray()), "the page's worker sweep == Node's serial sweep");
  t.same(h.tokens, nodeA.toTokens([h.input!.prompt], { prependBos: true }).toArray(), 'same tokens as Node');

  // hover on the attention pattern names the two tokens and the weight
  const cell = page.locator('#attention .nsewdrag').first();
  await cell.hover();
  await page.waitForSelector('#attention .hoverlayer .hovertext', { timeout: 10_000 });
  t.match(
    await page.locator('#attention .hoverlayer .hovertext').first().textContent(),
    /→.*weight \d/,
    'hover: tokens and weight',
  );

  // another head
  await page.selectOption('#layer', '1');
  await page.selectOption('#head', '2');
  await page.waitForFunction(() => document.querySelector('#attention .gtitle')?.textContent?.includes('L1H2'));
  t.pass('picking layer 1 head 2 draws L1H2');

  // a typed prompt redraws the figures
  const zBefore = await page.$eval('#attribution .figure:last-of-type', (d) =>
    JSON.stringify((d as unknown as { data: { z: unknown }[] }).data[0].z),
  );
  await page.fill('#prompt', 'When Alice and Bob went to the park, Bob gave a ball to');
  await page.fill('#correct', ' Alice');
  await page.fill('#incorrect', ' Bob');
  await page.fill('#corrupted', '');
  await page.click('#run');
  await settled(page, 2, 2);
  h = await hookOf(page);
  t.equal(h.status, 'done', 'the typed prompt ran');
  t.match(await page.locator('#summary').textContent(), /Alice/, 'the table is about the new prompt');
  const zAfter = await page.$eval('#attribution .figure:last-of-type', (d) =>
    JSON.stringify((d as unknown as { data: { z: unknown }[] }).data[0].z),
  );
  t.not(zAfter, zBefore, 'the head attribution figure changed');
  t.equal(h.logitsBase64, nodeLogits(nodeA, h.tokens), 'page logits == Node logits, bit for bit (typed prompt)');
  nodeA.dispose();

  // a notebook pair from the list
  await page.selectOption('#pairs', '3');
  await settled(page, 3, 3);
  t.match((await hookOf(page)).input!.prompt, /Tom and James/, 'a picked pair runs');

  // a malformed checkpoint, dropped: one line on the page, the model stays
  await page.evaluate(() => {
    const dt = new DataTransfer();
    dt.items.add(new File(['{"n_layer": 2}'], 'config.json', { type: 'application/json' }));
    dt.items.add(new File([new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9])], 'model.safetensors'));
    window.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
  });
  await page.waitForFunction(() => window.typelensLens.errors.length > 0, undefined, { timeout: 30_000 });
  const err = await page.locator('#error').textContent();
  t.ok(await page.locator('#error').isVisible(), `the error is shown: ${err}`);
  t.notMatch(err ?? '', /\n/, 'in one line');
  t.match(err ?? '', /safetensors|config/, 'naming the file at fault');
  t.match((await hookOf(page)).modelName, /served from model\//, 'the old model stays');
  await page.fill('#prompt', 'When Mary and John went to the store, John gave a drink to');
  await page.fill('#correct', ' Mary');
  await page.fill('#incorrect', ' John');
  await page.click('#run');
  await settled(page, 4, 4);
  t.equal((await hookOf(page)).status, 'done', 'and the page still works after the error');
  t.ok(await page.locator('#error').isHidden(), 'the error clears on the next run');

  // a good checkpoint, picked: replaces the model, same numbers as Node
  await page.setInputFiles('#files', [join(modelB, 'config.json'), join(modelB, 'model.safetensors')]);
  await page.waitForFunction(() => /config\.json/.test(window.typelensLens.modelName), undefined, { timeout: 60_000 });
  await settled(page, 5, 5);
  h = await hookOf(page);
  const nodeB = HookedTransformer.fromDir(modelB, LENS_FLAGS);
  t.equal(
    h.logitsBase64,
    nodeLogits(nodeB, h.tokens),
    'the picked checkpoint: page logits == Node logits, bit for bit',
  );
  nodeB.dispose();

  t.same(errors, [], 'no console or page errors');
  t.same(outside, [], 'no request left the server');
  t.ok(
    requests.some((u) => u.endsWith('.wasm')),
    'the kernels came from the server',
  );
  mkdirSync(artifacts, { recursive: true });
  await page.screenshot({ path: join(artifacts, 'lens-page.png'), fullPage: true });
  await page.context().close();
});

t.test('not isolated, no model: one thread, the random model with its banner, Node-equal logits', async (t) => {
  const { url, child } = await serve(['--no-isolation', '--no-model']);
  children.push(child);
  const { page, errors, outside } = await visit(browser, url);
  await settled(page, 1, 1);
  const h = await hookOf(page);
  t.equal(h.status, 'done', 'the first visit finishes');
  t.equal(h.crossOriginIsolated, false, 'not cross-origin isolated');
  t.equal(h.sweep!.workers, 1, 'the sweep ran on one thread');
  t.match(await page.locator('#banner').textContent(), /RANDOM/, 'the random-model banner is shown');
  const r = randomModel();
  t.equal(
    h.logitsBase64,
    nodeLogits(r.model, h.tokens),
    `random tiny (seed ${RANDOM_SEED}): page logits == Node, bit for bit`,
  );
  r.model.dispose();
  t.same(errors, [], 'no console or page errors');
  t.same(outside, [], 'no request left the server');
  await page.context().close();
});

t.test('a served checkpoint that does not load: its one-line error, and the page runs the random model', async (t) => {
  const broken = join(tmp, 'broken');
  mkdirSync(broken, { recursive: true });
  writeFileSync(join(broken, 'config.json'), readFileSync(join(modelA, 'config.json')));
  writeFileSync(join(broken, 'model.safetensors'), Buffer.from([200, 0, 0, 0, 0, 0, 0, 0, 123]));
  const { url, child } = await serve(['--model', broken]);
  children.push(child);
  const { page, outside } = await visit(browser, url);
  await settled(page, 1, 1);
  const h = await hookOf(page);
  t.equal(h.status, 'done', 'the page still finishes a run');
  t.equal(h.errors.length, 1, 'one error');
  t.match(h.errors[0], /model\.safetensors/, `naming the file: ${h.errors[0]}`);
  t.ok(await page.locator('#error').isVisible(), 'shown on the page');
  t.match(await page.locator('#banner').textContent(), /RANDOM/, 'on the random model, with its banner');
  t.same(outside, [], 'no request left the server');
  await page.context().close();
});

t.test(
  'the README screenshot (TYPELENS_DOCS_SCREENSHOT=1, with the model in TYPELENS_DOCS_MODEL or weights/typelens-ioi)',
  async (t) => {
    if (process.env.TYPELENS_DOCS_SCREENSHOT !== '1') {
      t.pass('not asked for');
      return;
    }
    const dir = process.env.TYPELENS_DOCS_MODEL;
    const { url, child } = await serve(dir ? ['--model', dir] : [], fileURLToPath(new URL('../../', import.meta.url)));
    children.push(child);
    const { page } = await visit(browser, url);
    await settled(page, 1, 1);
    await page.evaluate(() => window.scrollTo(0, 0));
    mkdirSync(docsImg, { recursive: true });
    await page.screenshot({ path: join(docsImg, 'lens-page.png'), fullPage: true });
    writeFileSync(join(artifacts, 'lens-page-model.txt'), (await hookOf(page)).modelName);
    t.pass('docs/img/lens-page.png written');
    await page.context().close();
  },
);
