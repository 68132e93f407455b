// Assembles the WAT kernels in src/kernels/wasm/ into dist/wasm/*.wasm with wabt.
// Runs at `npm install` (via `prepare`) so the binaries are always built from source.
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import wabtInit from 'wabt';
import { matmulWat } from '../src/kernels/wasm/matmul.wat.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'dist', 'wasm');
mkdirSync(out, { recursive: true });
const wabt = await wabtInit();
// relaxed SIMD is behind a flag on Node 20; the loader enables it the same way.
setFlagsFromString('--experimental-wasm-relaxed-simd');
const features = { simd: true, relaxed_simd: true, threads: true };

const MR_FMA = Number(process.env.MR_FMA ?? 6);
for (const [name, fma, MR] of [
  ['matmul', false, 5],
  ['matmul-relaxed', true, MR_FMA],
]) {
  const wat = matmulWat({ fma, MR });
  writeFileSync(join(out, `${name}.wat`), wat);
  const mod = wabt.parseWat(`${name}.wat`, wat, features);
  const { buffer } = mod.toBinary({});
  // wabt's own validator rejects shared memories; V8 is the validator that matters.
  if (!WebAssembly.validate(buffer)) throw new Error(`${name}.wasm does not validate in this V8`);
  writeFileSync(join(out, `${name}.wasm`), buffer);
  mod.destroy();
  console.log(`built dist/wasm/${name}.wasm (${buffer.length} bytes)`);
}
