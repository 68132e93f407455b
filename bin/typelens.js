#!/usr/bin/env node
// Thin launcher: the CLI lives in src/cli (compiled to dist/src/cli).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
const main = fileURLToPath(new URL('../dist/src/cli/main.js', import.meta.url));
if (!existsSync(main)) {
  console.error('typelens is not built yet: run `npm install` (or `npm run build`) first');
  process.exit(2);
}
const { run } = await import(main);
process.exitCode = await run(process.argv.slice(2));
