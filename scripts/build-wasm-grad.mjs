// Assembles the weight-gradient kernel (src/autograd/outer.wat.mjs) into dist/wasm/outer.wasm.
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import wabtInit from 'wabt';
import { outerWat } from '../src/autograd/outer.wat.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'dist', 'wasm');
mkdirSync(out, { recursive: true });
const wabt = await wabtInit();
const wat = outerWat();
writeFileSync(join(out, 'outer.wat'), wat);
const mod = wabt.parseWat('outer.wat', wat, { simd: true, threads: true });
const { buffer } = mod.toBinary({});
if (!WebAssembly.validate(buffer)) throw new Error('outer.wasm does not validate in this V8');
writeFileSync(join(out, 'outer.wasm'), buffer);
mod.destroy();
console.log(`built dist/wasm/outer.wasm (${buffer.length} bytes)`);
