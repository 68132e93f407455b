// The lens page: dist/src/web/main.js (tsc's output) bundled by esbuild into dist/web/ with the same
// browser settings as the library's build (scripts/build-browser.mjs: the package.json "browser"
// field swaps src/platform/node for the browser platform), its two worker entries beside it (the
// bundle starts them as new URL('./worker.js' | './matmul-helper.js', import.meta.url)), the
// kernels in wasm/, plotly.js (the report's copy), index.html and lens.css. Run after build:ts and
// build:wasm; `typelens serve` serves the folder.
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { builtinModules, createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(root, 'dist');
const out = join(dist, 'web');
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));

if (!existsSync(join(dist, 'src', 'web', 'main.js'))) {
  console.error('build-web: dist/src/web/main.js missing: run `npm run build:ts` first');
  process.exit(1);
}
let esbuild;
try {
  esbuild = await import('esbuild');
} catch {
  console.error('build-web: esbuild is not installed (a devDependency): run `npm install`');
  process.exit(1);
}

// As in the library's build, no Node built-in may reach the bundle (the package.json "browser" field
// swaps the platform's Node files for their browser twins); one that does fails the build by name.
const builtins = new Set([...builtinModules, ...builtinModules.map((m) => `node:${m}`)]);
/** @type {import('esbuild').Plugin} */
const nodeBuiltins = {
  name: 'node-builtins',
  setup(b) {
    b.onResolve({ filter: /.*/ }, (args) =>
      builtins.has(args.path)
        ? { errors: [{ text: `${args.importer} imports the Node built-in ${args.path}: use src/platform/ instead` }] }
        : undefined,
    );
  },
};

rmSync(out, { recursive: true, force: true });
await esbuild.build({
  absWorkingDir: root,
  entryPoints: {
    lens: 'dist/src/web/main.js',
    'matmul-helper': 'dist/src/kernels/wasm/matmul-helper.js',
    worker: 'dist/src/parallel/worker.js',
  },
  outdir: out,
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2022',
  minify: true,
  sourcemap: true,
  logLevel: 'warning',
  define: { __TYPELENS_VERSION__: JSON.stringify(pkg.version) },
  plugins: [nodeBuiltins],
});

mkdirSync(join(out, 'wasm'), { recursive: true });
for (const f of readdirSync(join(dist, 'wasm')).filter((f) => f.endsWith('.wasm')))
  copyFileSync(join(dist, 'wasm', f), join(out, 'wasm', f));
const require = createRequire(import.meta.url);
copyFileSync(require.resolve('plotly.js-dist-min'), join(out, 'plotly.min.js'));
// the page's settings: no model (`typelens serve --model DIR` answers this file itself)
writeFileSync(join(out, 'lens-config.json'), JSON.stringify({ model: null }) + '\n');
for (const f of ['index.html', 'lens.css']) copyFileSync(join(root, 'src', 'web', f), join(out, f));
console.log(`built dist/web/ (the lens page: npx typelens serve)`);
