// The browser build in a real browser: headless Chromium (./browser.ts) opens a test page
// (test/browser-page/) served by a small static server inside this test, once cross-origin
// isolated (COOP/COEP headers) and once not. The page loads dist/browser/index.js, a fixture
// checkpoint from bytes (and from its URL), and runs a forward with a hook and a cache; its logits and cached
// activation must equal this Node process's, bit for bit, for the same model and tokens. Isolated,
// the kernels must run on >= 2 threads (as the library reports), otherwise on 1, said once.
import t from 'tap';
import { createServer, type Server } from 'node:http';
import { existsSync, readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { extname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import { launchChromium } from './browser.js';
import { getBackend, HookedTransformer } from '../src/index.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const FIXTURE = 'tiny-odd';
// [2, 20] token ids inside tiny-odd's vocabulary of 777
const TOKENS = [0, 1].map((b) => Array.from({ length: 20 }, (_, i) => (b * 389 + i * 37 + 5) % 777));
const THREADS = 3;

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.json': 'application/json',
  '.wasm': 'application/wasm',
  '.safetensors': 'application/octet-stream',
  '.map': 'application/json',
};
// URL prefix -> folder under the package root: nothing else is served
const MOUNTS: [string, string][] = [
  ['/dist/browser/', 'dist/browser/'],
  ['/fixtures/', 'test/fixtures/'],
  ['/', 'test/browser-page/'],
];

/** A static server for the page; `isolated` adds the headers that allow shared-memory threads. */
function serve(isolated: boolean): Promise<Server> {
  const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    const mount = MOUNTS.find(([p]) => path.startsWith(p))!;
    const rel = normalize(path.slice(mount[0].length) || 'index.html');
    const file = join(root, mount[1], rel);
    if (rel.startsWith('..') || !existsSync(file)) {
      res.writeHead(404).end();
      return;
    }
    const headers: Record<string, string> = { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream' };
    if (isolated) {
      headers['cross-origin-opener-policy'] = 'same-origin';
      headers['cross-origin-embedder-policy'] = 'require-corp';
    }
    res.writeHead(200, headers).end(readFileSync(file));
  });
  return new Promise((ok) => server.listen(0, '127.0.0.1', () => ok(server)));
}

/** The Node run of the same model and tokens: logits and the cached residual, as float32 bits. */
function nodeRun(): { logits: number[]; resid: number[]; shape: readonly number[] } {
  const model = HookedTransformer.fromDir(join(root, 'test/fixtures', FIXTURE));
  const { logits, cache } = model.runWithCache(TOKENS, { namesFilter: ['blocks.0.hook_resid_post'] });
  const bits = (a: Float32Array) => Array.from(new Uint32Array(Float32Array.from(a).buffer));
  const r = {
    logits: bits(logits.f32()),
    resid: bits(cache.get('blocks.0.hook_resid_post').f32()),
    shape: logits.shape,
  };
  model.dispose();
  return r;
}

/** Entries that differ, and the first such index (-1 when none). */
function diff(a: number[], b: number[]): { count: number; first: number } {
  let count = Math.abs(a.length - b.length),
    first = a.length === b.length ? -1 : Math.min(a.length, b.length);
  for (let i = 0; i < Math.min(a.length, b.length); i++)
    if (a[i] !== b[i]) {
      count++;
      if (first < 0) first = i;
    }
  return { count, first };
}

t.test('the browser bundle gives the Node numbers, on threads when isolated', async (t) => {
  t.ok(existsSync(join(root, 'dist/browser/index.js')), 'dist/browser/index.js is built (npm run build:browser)');
  const want = nodeRun();
  t.comment(`node backend: ${getBackend().name}`);
  const { browser, choice } = await launchChromium({ isolation: true });
  t.comment(`browser: ${choice.source} (${browser.version()})`);
  t.teardown(() => browser.close());

  for (const isolated of [true, false]) {
    await t.test(isolated ? 'cross-origin isolated (COOP/COEP)' : 'not isolated', async (t) => {
      const server = await serve(isolated);
      t.teardown(() => new Promise<void>((ok) => server.close(() => ok())));
      const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const page = await browser.newPage();
      const errors: string[] = [];
      const infos: string[] = [];
      page.on('console', (m) => {
        if (m.type() === 'error') errors.push(m.text());
        if (m.type() === 'info') infos.push(m.text());
      });
      page.on('pageerror', (e) => errors.push(String(e)));
      const q = new URLSearchParams({ fixture: FIXTURE, tokens: JSON.stringify(TOKENS), threads: String(THREADS) });
      await page.goto(`${origin}/index.html?${q}`);
      await page.waitForFunction(() => (window as { __typelens?: unknown }).__typelens !== undefined, null, {
        timeout: 120_000,
      });
      const got = (await page.evaluate(() => (window as { __typelens?: unknown }).__typelens)) as {
        error?: string;
        isolated: boolean;
        before: { threads: number; backend: string };
        after: { threads: number; parallelMatmuls: number; backend: string };
        shape: number[];
        logits: number[];
        resid: number[];
        hookSeen: number[] | null;
        pool: {
          threads?: number;
          logits?: number[];
          error?: string;
          sweepShape?: number[];
          sweepSerial?: number[];
          sweepPool?: number[];
        };
        urlLogits: number[];
        early?: string;
      };
      await page.close();
      t.equal(got.error, undefined, 'the page ran without throwing');
      if (got.error) return;
      t.match(
        got.early ?? '',
        /^ENOKERNEL: .*await init\(\)/,
        'before init(), asking for a backend says to await init()',
      );
      t.equal(got.isolated, isolated, `the page is ${isolated ? '' : 'not '}cross-origin isolated`);
      t.match(got.after.backend, /^wasm-simd/, 'the page runs the WASM SIMD kernels');
      t.same(got.shape, want.shape, 'logits shape as in Node');
      const dl = diff(got.logits, want.logits);
      t.equal(dl.count, 0, `logits equal Node's bit for bit (first difference at ${dl.first})`);
      const dr = diff(got.resid, want.resid);
      t.equal(
        dr.count,
        0,
        `cached blocks.0.hook_resid_post equals Node's bit for bit (first difference at ${dr.first})`,
      );
      const du = diff(got.urlLogits, want.logits);
      t.equal(du.count, 0, `loaded by fromUrl: logits equal Node's bit for bit (first difference at ${du.first})`);
      t.same(got.hookSeen, [2, 6, 20, 20], 'the hook on blocks.1.attn.hook_pattern saw [batch, head, q, k]');
      if (isolated) {
        t.ok(got.before.threads >= 2, `kernels on ${got.before.threads} threads (asked for ${THREADS})`);
        t.ok(got.after.parallelMatmuls > 0, `${got.after.parallelMatmuls} matmuls ran split across threads`);
        t.equal(got.pool.error, undefined, 'a ForwardPool of Web Workers starts');
        t.equal(got.pool.threads, 2, 'the pool has the 2 workers asked for');
        const dp = diff(got.pool.logits ?? [], want.logits);
        t.equal(dp.count, 0, `the pool's logits equal Node's bit for bit (first difference at ${dp.first})`);
        t.same(got.pool.sweepShape, [3, 20], 'the resid_pre patching sweep is [layer + 1, pos]');
        const ds = diff(got.pool.sweepPool ?? [], got.pool.sweepSerial ?? [1]);
        t.equal(
          ds.count,
          0,
          `the sweep on the workers equals the serial one bit for bit (first difference at ${ds.first})`,
        );
      } else {
        t.equal(got.before.threads, 1, 'kernels on one thread');
        t.equal(got.after.parallelMatmuls, 0, 'no matmul ran on helper threads');
        const said = infos.filter((m) => m.startsWith('typelens: one thread'));
        t.equal(said.length, 1, `said once in the console: ${said[0]}`);
        t.match(
          got.pool.error ?? '',
          /^EWORKER: worker pools need threads sharing memory/,
          'a worker pool is refused, saying why',
        );
      }
      t.same(errors, [], 'no console errors');
    });
  }
});
