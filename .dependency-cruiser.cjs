// Import-graph rules for src/ (run by `npm run lint:deps`, part of `npm run lint`).
// 1. No cycles, file level and folder level (type-only imports count: they are architecture too).
// 2. Layers, lowest first; a folder may import only from its own layer and lower ones.
// 3. src/index.ts (the public API) and src/browser.ts (the same for the browser build) may import
//    every layer but the applications (report, demo, cli); src/testing.ts (the explicit testing
//    entry point) may import anything; nothing inside src/ imports any of them.
// 4. The library runs in browsers: Node built-ins and Node-only packages (piscina) are imported
//    only by src/platform/node*.ts and src/platform/files.ts (the Node platform) and src/cli/.

/** @type {{ name: string, paths: string[] }[]} the layers, lowest first: path prefixes under src/ */
const LAYERS = [
  { name: 'base', paths: ['errors\\.ts$', 'util/', 'platform/'] },
  { name: 'tensor', paths: ['tensor/'] },
  { name: 'kernels', paths: ['kernels/'] },
  { name: 'autograd', paths: ['autograd/'] },
  { name: 'hooks', paths: ['hooks/'] },
  { name: 'model', paths: ['model/'] },
  { name: 'analysis', paths: ['analysis/'] },
  { name: 'patching', paths: ['patching/'] },
  { name: 'train', paths: ['train/'] },
  { name: 'parallel', paths: ['parallel/'] },
  { name: 'report', paths: ['report/'] },
  { name: 'demo', paths: ['demo/'] },
  // The lens page (browser only): above the demo whose sections it reuses, below the CLI that serves it.
  { name: 'web', paths: ['web/'] },
  { name: 'cli', paths: ['cli/'] },
];
const re = (prefixes) => `^src/(${prefixes.join('|')})`;
const ORDER = LAYERS.map((l) => l.name).join(' < ');

const layerRules = LAYERS.slice(0, -1).map((layer, i) => ({
  name: `layer-${layer.name}-imports-upward`,
  comment:
    `${layer.name} (src/${layer.paths.join(', src/').replace('\\.ts$', '.ts')}) is layer ${i} of ${ORDER}; ` +
    'it may import only from its own layer and lower ones (move the shared piece down, or pass it in)',
  severity: 'error',
  from: { path: re(layer.paths) },
  to: { path: re(LAYERS.slice(i + 1).flatMap((l) => l.paths)) },
}));

const KNOWN = `${re(LAYERS.flatMap((l) => l.paths))}|^src/(index|testing|browser)\\.ts$`;
// the Node platform (its browser twins: platform/browser.ts, platform/files-browser.ts) and the CLI
const NODE_ALLOWED = ['^src/platform/node[^/]*\\.ts$', '^src/platform/files\\.ts$', '^src/cli/'];
// the layers src/index.ts re-exports (all but report, demo, cli)
const LIBRARY = LAYERS.slice(
  0,
  LAYERS.findIndex((l) => l.name === 'report'),
).flatMap((l) => l.paths);

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      comment: 'a file-level import cycle: break it (an interface in the lower module, or a new module both import)',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
    {
      name: 'no-folder-cycle',
      comment: 'a folder-level import cycle: two folders import each other (through any files)',
      severity: 'error',
      scope: 'folder',
      from: {},
      to: { circular: true },
    },
    ...layerRules,
    {
      name: 'index-imports-an-application',
      comment: 'src/index.ts is the library API: report, demo and cli are a subpath (typelens/demo), not re-exported',
      severity: 'error',
      from: { path: '^src/(index|browser)\\.ts$' },
      to: { path: re(['report/', 'demo/', 'cli/']) },
    },
    {
      name: 'library-imports-the-barrel',
      comment:
        'inside the library import the module itself, not src/index.ts or src/browser.ts (that makes a cycle through the barrel)',
      severity: 'error',
      from: { path: re(LIBRARY) },
      to: { path: '^src/(index|browser)\\.ts$' },
    },
    {
      name: 'production-imports-testing',
      comment: 'src/testing.ts is the test-only entry point: production code never imports it',
      severity: 'error',
      from: { path: '^src/', pathNot: '^src/testing\\.ts$' },
      to: { path: '^src/testing\\.ts$' },
    },
    {
      name: 'src-imports-tests',
      comment: 'src/ never imports from test/ or bench/',
      severity: 'error',
      from: { path: '^src/' },
      to: { path: '^(test|bench)/' },
    },
    {
      name: 'not-in-a-layer',
      comment: `every source file belongs to a layer (${ORDER}) or is src/index.ts / src/testing.ts: add its folder to LAYERS in .dependency-cruiser.cjs`,
      severity: 'warn',
      from: { path: '^src/', pathNot: KNOWN },
      to: {},
    },
    {
      name: 'node-builtin-outside-platform',
      comment:
        'the library runs in browsers: Node built-ins (fs, path, os, url, worker_threads, crypto, ...) are imported only ' +
        'by src/platform/node*.ts, src/platform/files.ts and src/cli/; ask src/platform/ for what they gave',
      severity: 'error',
      from: { path: '^src/', pathNot: NODE_ALLOWED },
      to: { dependencyTypes: ['core'] },
    },
    {
      name: 'node-only-package-outside-platform',
      comment:
        "piscina runs only in Node: the worker pool is the platform's (src/platform/node.ts; Web Workers in browsers)",
      severity: 'error',
      from: { path: '^src/', pathNot: NODE_ALLOWED },
      to: { path: 'node_modules/piscina/' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(dist|node_modules|native/build)/' },
    // see `import type` too: a type-only import is still an architectural dependency
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: {
      exportsFields: ['exports'],
      conditionNames: ['import', 'require', 'node', 'default', 'types'],
      extensions: ['.ts', '.mjs', '.js', '.cjs', '.d.ts'],
    },
    reporterOptions: {
      text: { highlightFocused: true },
    },
  },
};
