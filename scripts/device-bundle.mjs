#!/usr/bin/env node
// `node scripts/device-bundle.mjs [OUT=.device]`: what a GPU machine with no Node and no registry
// needs to run native/device-check.sh, under the device tool's 64 MiB carry limit: the built dist/,
// the addon sources, the fixtures, the runtime node_modules (+ fast-check, benchmark, node-addon-api;
// unused tokenizer encodings dropped), the Node-API headers, and this Node binary xz-compressed.
// Then on the device: `bash OUT/app/native/device-check.sh` (it unpacks OUT/node.xz when node is missing).
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync, readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const out = resolve(root, process.argv[2] ?? '.device');
const app = join(out, 'app');
if (!existsSync(join(root, 'dist', 'bench', 'device-check.js'))) {
  console.error('device-bundle: build first (npm run build)');
  process.exit(1);
}
rmSync(out, { recursive: true, force: true });
mkdirSync(app, { recursive: true });

const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
writeFileSync(
  join(app, 'package.json'),
  JSON.stringify({ name: pkg.name, version: pkg.version, type: 'module', private: true }, null, 2),
);
cpSync(join(root, 'dist'), join(app, 'dist'), { recursive: true, filter: (p) => !p.endsWith('.map') });
cpSync(join(root, 'test', 'fixtures'), join(app, 'test', 'fixtures'), {
  recursive: true,
  filter: (src) => !src.endsWith('grads.safetensors'),
});
for (const f of ['src', 'build.mjs', 'binding.gyp', 'device-check.sh'])
  cpSync(join(root, 'native', f), join(app, 'native', f), { recursive: true });
// just the Node-API headers (the full include/node is 54 MB)
const inc = join(resolve(process.execPath, '..', '..'), 'include', 'node');
mkdirSync(join(app, 'native', 'node-headers'));
for (const h of ['node_api.h', 'node_api_types.h', 'js_native_api.h', 'js_native_api_types.h', 'node_version.h'])
  cpSync(join(inc, h), join(app, 'native', 'node-headers', h));

// runtime dependencies and what the device check uses, with their own dependencies
const want = new Set([...Object.keys(pkg.dependencies), 'fast-check', 'benchmark', 'node-addon-api']);
const seen = new Set();
const visit = (name) => {
  if (seen.has(name)) return;
  seen.add(name);
  const dir = join(root, 'node_modules', name);
  const p = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
  for (const d of Object.keys(p.dependencies ?? {})) visit(d);
};
for (const n of want) visit(n);
for (const n of seen)
  cpSync(join(root, 'node_modules', n), join(app, 'node_modules', n), {
    recursive: true,
    filter: (p) => !p.endsWith('.map'),
  });
const tok = join(app, 'node_modules', 'gpt-tokenizer');
for (const d of ['cjs', 'src', 'data']) rmSync(join(tok, d), { recursive: true, force: true });
for (const f of readdirSync(join(tok, 'esm', 'bpeRanks')))
  if (!f.startsWith('r50k_base')) rmSync(join(tok, 'esm', 'bpeRanks', f));

// check that the bundle imports and runs before carrying it anywhere
execFileSync(
  process.execPath,
  [
    '-e',
    `import('./dist/src/index.js').then(async (T) => { const m = T.HookedTransformer.fromDir('test/fixtures/tiny'); if (m.toTokens('Hello world').shape[1] !== 3) throw new Error('tokenizer'); m.forward([[1, 2, 3]]); m.dispose(); })`,
  ],
  { cwd: app, stdio: 'inherit' },
);

if (!process.argv.includes('--no-node')) {
  execFileSync('sh', ['-c', `xz -T0 -6 -c "${process.execPath}" > "${join(out, 'node.xz')}"`]);
}
const size = (p) => {
  const s = statSync(p);
  return s.isDirectory() ? readdirSync(p).reduce((a, f) => a + size(join(p, f)), 0) : s.size;
};
console.log(
  `device-bundle: ${out} is ${(size(out) / 2 ** 20).toFixed(1)} MiB (${[...seen].length} packages${existsSync(join(out, 'node.xz')) ? ', node.xz' : ''})`,
);
