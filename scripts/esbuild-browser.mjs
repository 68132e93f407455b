// What the two browser builds share (build-browser.mjs: the library; build-web.mjs: the lens page):
// esbuild itself, the plugin that fails the build on any Node built-in, the bundle settings and the
// kernels copied beside the bundle. The package.json "browser" field has already swapped the Node
// platform files (platform/node.js, platform/files.js) for their browser twins.
import { copyFileSync, mkdirSync, readdirSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { join, relative } from 'node:path';

/** esbuild (a devDependency), or exit with a line saying how to get it. */
export async function loadEsbuild(who) {
  try {
    return await import('esbuild');
  } catch {
    console.error(`${who}: esbuild is not installed (a devDependency): run \`npm install\``);
    process.exit(1);
  }
}

/** A plugin that makes any Node built-in reaching the bundle a build error naming its importer. */
export function nodeBuiltins(dist) {
  const builtins = new Set([...builtinModules, ...builtinModules.map((m) => `node:${m}`)]);
  return {
    name: 'node-builtins',
    setup(b) {
      b.onResolve({ filter: /.*/ }, (args) => {
        if (!builtins.has(args.path)) return undefined;
        const from = relative(dist, args.importer).replaceAll('\\', '/');
        return { errors: [{ text: `${from} imports the Node built-in ${args.path}: use src/platform/ instead` }] };
      });
    },
  };
}

/** esbuild options of both builds: ESM with shared chunks for browsers, minified, with source maps. */
export function browserOptions(root, dist, pkg) {
  return {
    absWorkingDir: root,
    bundle: true,
    splitting: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    minify: true,
    sourcemap: true,
    logLevel: 'warning',
    define: { __TYPELENS_VERSION__: JSON.stringify(pkg.version) },
    plugins: [nodeBuiltins(dist)],
  };
}

/** Copy dist/wasm/*.wasm to OUT/wasm/ (where src/platform/browser.ts fetches them); `check(f)` may veto one. */
export function copyKernels(dist, out, check = () => {}) {
  mkdirSync(join(out, 'wasm'), { recursive: true });
  for (const f of readdirSync(join(dist, 'wasm')).filter((f) => f.endsWith('.wasm'))) {
    check(f);
    copyFileSync(join(dist, 'wasm', f), join(out, 'wasm', f));
  }
}
