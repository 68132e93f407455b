// The browser build's size budget and shape: the core JS of dist/browser/ must stay within 300 KB
// gzipped (level 9; plotly, weights and the tokenizer's BPE table, shipped as a file of its own,
// are counted apart); the figure is printed. A bundler must be able to take it as it is: no
// top-level await (esbuild refuses it for a CommonJS target), no Node built-in left in it.
import t from 'tap';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

const root = fileURLToPath(new URL('../../', import.meta.url));
const out = join(root, 'dist/browser');
const BUDGET = 300_000;

t.test('the core JS is within 300 KB gzipped', (t) => {
  t.ok(existsSync(join(out, 'meta.json')), 'dist/browser/ is built (npm run build:browser)');
  const files = readdirSync(out).filter((f) => f.endsWith('.js'));
  t.ok(files.includes('index.js'), 'the entry dist/browser/index.js is there');
  const meta = JSON.parse(readFileSync(join(out, 'meta.json'), 'utf8')) as {
    outputs: Record<string, { inputs: Record<string, unknown> }>;
  };
  let core = 0,
    table = 0;
  for (const f of files) {
    const inputs = Object.keys(meta.outputs[`dist/browser/${f}`]?.inputs ?? {});
    const gz = gzipSync(readFileSync(join(out, f)), { level: 9 }).length;
    // (an output without inputs only re-exports a chunk: code, tiny)
    if (inputs.length > 0 && inputs.every((i) => i.includes('gpt-tokenizer/esm/bpeRanks/'))) table += gz;
    else core += gz;
  }
  t.comment(`browser core JS: ${core} bytes gzipped (${(core / 1000).toFixed(1)} KB); tokenizer table: ${table} bytes`);
  t.ok(core <= BUDGET, `core JS ${(core / 1000).toFixed(1)} KB gzipped <= ${BUDGET / 1000} KB`);
  t.ok(table > 0, 'the tokenizer table is a file of its own');
  t.end();
});

t.test('a bundler can take the bundle as it is', async (t) => {
  const esbuild = await import('esbuild');
  const entries = ['index.js', 'worker.js', 'matmul-helper.js', 'refactor-helper.js'];
  for (const e of entries) {
    const src = readFileSync(join(out, e), 'utf8');
    t.notMatch(src, /from\s*"node:|require\("node:/, `${e} imports no Node built-in`);
  }
  // a top-level await anywhere in the graph is an error for a CommonJS target
  let error = '';
  try {
    await esbuild.build({
      entryPoints: entries.map((e) => join(out, e)),
      bundle: true,
      write: false,
      format: 'cjs',
      platform: 'browser',
      outdir: '/nonexistent',
      logLevel: 'silent',
    });
  } catch (e) {
    error = (e as Error).message;
  }
  t.equal(error, '', 'rebundled as CommonJS: no top-level await');
  for (const w of ['matmul.wasm', 'outer.wasm'])
    t.ok(existsSync(join(out, 'wasm', w)), `wasm/${w} ships next to the code`);
});
