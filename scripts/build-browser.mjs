// The browser build: dist/src (tsc's output) bundled by esbuild into dist/browser/ — index.js (the
// entry: src/browser.ts), the three worker entries (matmul and refactor helper threads, pool workers), shared
// chunks, and wasm/ with the kernel binaries. The package.json "browser" field swaps the Node
// platform (src/platform/node.ts) for the browser one. Run after `npm run build:ts`.
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { browserOptions, copyKernels, loadEsbuild } from './esbuild-browser.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(root, 'dist');
const out = join(dist, 'browser');
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));

if (!existsSync(join(dist, 'src', 'browser.js'))) {
  console.error('build-browser: dist/src/browser.js missing: run `npm run build:ts` first');
  process.exit(1);
}
const esbuild = await loadEsbuild('build-browser');

// The tokenizer's BPE rank table (GPT-2's 50k-token vocabulary, ~475 KB) is data, like weights:
// as an entry of its own it lands in a file of its own, which the size budget counts apart.
export const RANKS = 'node_modules/gpt-tokenizer/esm/bpeRanks/r50k_base.js';
if (!existsSync(join(root, RANKS))) {
  console.error(`build-browser: ${RANKS} missing (gpt-tokenizer changed its layout?)`);
  process.exit(1);
}

rmSync(out, { recursive: true, force: true });
const result = await esbuild.build({
  entryPoints: {
    index: 'dist/src/browser.js',
    'matmul-helper': 'dist/src/kernels/wasm/matmul-helper.js',
    'refactor-helper': 'dist/src/model/refactor-helper.js',
    worker: 'dist/src/parallel/worker.js',
    'tokenizer-ranks': RANKS,
  },
  outdir: out,
  metafile: true,
  ...browserOptions(root, dist, pkg),
});

// the kernels, where src/platform/browser.ts looks for them; every built kernel must be listed there
const browserPlatform = readFileSync(join(root, 'src', 'platform', 'browser.ts'), 'utf8');
copyKernels(dist, out, (f) => {
  if (!browserPlatform.includes(`'./wasm/${f}'`)) {
    console.error(`build-browser: dist/wasm/${f} is not fetched by src/platform/browser.ts: add it to KERNELS there`);
    process.exit(1);
  }
});

writeFileSync(join(out, 'meta.json'), JSON.stringify(result.metafile));
const { core, data } = bundleSize(out);
console.log(
  `built dist/browser/: core JS ${(core / 1000).toFixed(1)} KB gzipped, tokenizer table ${(data / 1000).toFixed(1)} KB`,
);

/** Gzipped (level 9) bytes of the bundle's JS: the core, and the files holding only the tokenizer table. */
export function bundleSize(dir) {
  const meta = JSON.parse(readFileSync(join(dir, 'meta.json'), 'utf8'));
  let core = 0,
    data = 0;
  for (const f of readdirSync(dir).filter((f) => f.endsWith('.js'))) {
    const inputs = Object.keys(meta.outputs[relative(root, join(dir, f)).replaceAll('\\', '/')]?.inputs ?? {});
    const gz = gzipSync(readFileSync(join(dir, f)), { level: 9 }).length;
    if (inputs.length > 0 && inputs.every((i) => i.includes('gpt-tokenizer/esm/bpeRanks/'))) data += gz;
    else core += gz;
  }
  return { core, data };
}
