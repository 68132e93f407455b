// The runtime typelens runs in. This re-exports the Node implementation; the browser build maps
// ./node.js to ./browser.js (package.json "browser" field, which esbuild and other bundlers honor).
export type { Platform, PlatformThread, TaskPool, TaskPoolOptions, TaskReply } from './types.js';
export { platform } from './node.js';
