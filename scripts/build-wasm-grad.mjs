// Assembles the WAT kernels outside the matmul one into dist/wasm/: the weight-gradient kernel
// (src/autograd/outer.wat.mjs -> outer.wasm) and the float64 Jacobi/Gram kernels of the
// load-time refactor (src/tensor/linalg64.wat.mjs -> linalg64.wasm).
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import wabtInit from 'wabt';
import { outerWat } from '../src/autograd/outer.wat.mjs';
import { linalg64Wat } from '../src/tensor/linalg64.wat.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'dist', 'wasm');
mkdirSync(out, { recursive: true });
const wabt = await wabtInit();
for (const [name, wat] of [
  ['outer', outerWat()],
  ['linalg64', linalg64Wat()],
]) {
  writeFileSync(join(out, `${name}.wat`), wat);
  const mod = wabt.parseWat(`${name}.wat`, wat, { simd: true, threads: true });
  const { buffer } = mod.toBinary({});
  if (!WebAssembly.validate(buffer)) throw new Error(`${name}.wasm does not validate in this V8`);
  writeFileSync(join(out, `${name}.wasm`), buffer);
  mod.destroy();
  console.log(`built dist/wasm/${name}.wasm (${buffer.length} bytes)`);
}
