// The WASM SIMD matmul against the plain-JS reference kernel. Without FMA both round each
// product to f32 and add in the same k order, so they must agree bit for bit; the FMA
// variant rounds once per multiply-add, so it is held to 1e-5 relative + 1e-5 absolute.
import t from 'tap';
import fc from 'fast-check';
import { jsBackend, WasmBackend } from '../src/kernels/index.js';
import { decode, encode, DType } from '../src/tensor/index.js';
import { allClose, maxAbsDiff } from './helpers.js';

const plain = new WasmBackend({ fma: false });
const relaxed = new WasmBackend({ fma: true });
const rand = (n: number, seed: number) => {
  let s = seed >>> 0 || 1;
  return Float32Array.from({ length: n }, () => { s = (s * 1664525 + 1013904223) >>> 0; return s / 2 ** 32 - 0.5; });
};

t.test('wasm matmul == js matmul over random shapes (odd M, N, K across the 512 K block)', async (t) => {
  fc.assert(fc.property(fc.integer({ min: 1, max: 23 }), fc.integer({ min: 1, max: 1100 }), fc.integer({ min: 1, max: 41 }), fc.nat(),
    (M, K, N, seed) => {
      const a = rand(M * K, seed), b = rand(K * N, seed + 1);
      const want = jsBackend.matmul(a, M, jsBackend.pack(b, K, N, 'f32'));
      const pw = plain.pack(b, K, N, 'f32');
      const got = plain.matmul(a, M, pw);
      pw.release();
      const pr = relaxed.pack(b, K, N, 'f32');
      const gotR = relaxed.matmul(a, M, pr);
      pr.release();
      return maxAbsDiff(got, want) === 0 && allClose(gotR, want, 1e-5, 1e-5);
    }), { numRuns: 40 });
  t.ok(plain.arena.bytesInUse <= 4 * 1024 * 1024 * 8, 'released weights are returned to the arena');
});

t.test('half-precision packed weights are widened exactly in the kernel', async (t) => {
  for (const dtype of ['bf16', 'f16'] as DType[]) {
    fc.assert(fc.property(fc.integer({ min: 1, max: 12 }), fc.integer({ min: 1, max: 700 }), fc.integer({ min: 1, max: 20 }), fc.nat(),
      (M, K, N, seed) => {
        const a = rand(M * K, seed);
        const bits = encode(rand(K * N, seed + 7), dtype) as Uint16Array;
        const widened = decode(bits, dtype, new Float32Array(K * N));
        const want = jsBackend.matmul(a, M, jsBackend.pack(widened, K, N, 'f32'));
        const pw = plain.pack(bits, K, N, dtype);
        const got = plain.matmul(a, M, pw);
        pw.release();
        return maxAbsDiff(got, want) === 0;
      }), { numRuns: 25 });
    t.pass(`${dtype} matches the f32 matmul of the widened weight`);
  }
});

t.test('released weights are refused, sizes are checked', async (t) => {
  const pw = plain.pack(new Float32Array(6), 2, 3, 'f32');
  pw.release();
  t.throws(() => plain.matmul(new Float32Array(2), 1, pw), /released/);
  t.throws(() => plain.pack(new Float32Array(5), 2, 3, 'f32'), /not \[2, 3\]/);
  t.throws(() => plain.matmul(new Float32Array(1), 1, plain.pack(new Float32Array(6), 2, 3, 'f32')), /needs 1x2/);
});
