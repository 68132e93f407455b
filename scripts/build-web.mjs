// The lens page: dist/src/web/main.js (tsc's output) bundled by esbuild into dist/web/ with the same
// browser settings as the library's build (scripts/build-browser.mjs: the package.json "browser"
// field swaps src/platform/node for the browser platform), its three worker entries beside it (the
// bundle starts them as new URL('./worker.js' | './matmul-helper.js' | './refactor-helper.js',
// import.meta.url)), the
// kernels in wasm/, plotly.js (the report's copy), index.html and lens.css. Run after build:ts and
// build:wasm; `typelens serve` serves the folder.
import { copyFileSync, existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { browserOptions, copyKernels, loadEsbuild } from './esbuild-browser.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(root, 'dist');
const out = join(dist, 'web');
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));

if (!existsSync(join(dist, 'src', 'web', 'main.js'))) {
  console.error('build-web: dist/src/web/main.js missing: run `npm run build:ts` first');
  process.exit(1);
}
const esbuild = await loadEsbuild('build-web');

rmSync(out, { recursive: true, force: true });
await esbuild.build({
  entryPoints: {
    lens: 'dist/src/web/main.js',
    'matmul-helper': 'dist/src/kernels/wasm/matmul-helper.js',
    'refactor-helper': 'dist/src/model/refactor-helper.js',
    worker: 'dist/src/parallel/worker.js',
  },
  outdir: out,
  ...browserOptions(root, dist, pkg),
});

copyKernels(dist, out);
const require = createRequire(import.meta.url);
copyFileSync(require.resolve('plotly.js-dist-min'), join(out, 'plotly.min.js'));
// the page's settings: no model (`typelens serve --model DIR` answers this file itself)
writeFileSync(join(out, 'lens-config.json'), JSON.stringify({ model: null }) + '\n');
for (const f of ['index.html', 'lens.css']) copyFileSync(join(root, 'src', 'web', f), join(out, f));
console.log(`built dist/web/ (the lens page: npx typelens serve)`);
