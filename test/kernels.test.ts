// The WASM SIMD matmul against the plain-JS reference kernel. Without FMA both round each
// product to f32 and add in the same k order, so they must agree bit for bit; the FMA
// variant rounds once per multiply-add, so it is held to 1e-5 relative + 1e-5 absolute.
import t from 'tap';
import { invariants } from './helpers.js';
import fc from 'fast-check';
import { jsBackend, WasmBackend } from '../src/kernels/index.js';
import { decode, encode, DType } from '../src/tensor/index.js';
import { allClose, maxAbsDiff } from './helpers.js';

const plain = new WasmBackend({ fma: false });
const relaxed = new WasmBackend({ fma: true });
const rand = (n: number, seed: number) => {
  let s = seed >>> 0 || 1;
  return Float32Array.from({ length: n }, () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32 - 0.5;
  });
};

t.test('wasm matmul == js matmul over random shapes (odd M, N, K across the 512 K block)', async (t) => {
  const EXACT = 'the wasm kernel without FMA = the js kernel, bit for bit',
    FMA = 'the FMA kernel = the js kernel (1e-5)';
  const TAKES = 'pack takes the packed bytes from the arena (rounded up to its 64-byte alignment)';
  const GIVES_BACK = 'release gives the arena back exactly what pack took';
  const inv = invariants(t, [EXACT, FMA, TAKES, GIVES_BACK]);
  const MAX_M = 23,
    MAX_K = 1100,
    MAX_N = 41;
  // pack, multiply, release on one backend, checking the arena's accounting around it
  const run = (be: WasmBackend, a: Float32Array, M: number, b: Float32Array, K: number, N: number) => {
    const before = be.arena.bytesInUse;
    const pw = be.pack(b, K, N, 'f32');
    const taken = be.arena.bytesInUse - before;
    inv.check(TAKES, taken === Math.ceil(pw.bytes / 64) * 64, () => `took ${taken} for ${pw.bytes} bytes`);
    const got = be.matmul(a, M, pw); // may grow the matmul scratch, never shrink it
    const held = be.arena.bytesInUse;
    pw.release();
    inv.check(
      GIVES_BACK,
      held - be.arena.bytesInUse === taken,
      () => `gave back ${held - be.arena.bytesInUse} of ${taken}`,
    );
    return got;
  };
  await inv.run(() =>
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: MAX_M }),
        fc.integer({ min: 1, max: MAX_K }),
        fc.integer({ min: 1, max: MAX_N }),
        fc.nat(),
        (M, K, N, seed) => {
          const a = rand(M * K, seed),
            b = rand(K * N, seed + 1);
          const want = jsBackend.matmul(a, M, jsBackend.pack(b, K, N, 'f32'));
          const got = run(plain, a, M, b, K, N);
          inv.check(EXACT, maxAbsDiff(got, want) === 0, () => `max |diff| ${maxAbsDiff(got, want)}`);
          const gotR = run(relaxed, a, M, b, K, N);
          inv.check(FMA, allClose(gotR, want, 1e-5, 1e-5), () => `max |diff| ${maxAbsDiff(gotR, want)}`);
        },
      ),
      { numRuns: 40 },
    ),
  );
  // Once every weight is released, the arena holds only the matmul scratch: packed A [mpad, K],
  // C [mpad, npad] and one KC x NR block of B, in f32 (KC = 512, NR = 8 in the kernel). It grows to
  // max(need, 2 x its old size), so it stays under twice the largest need of the shapes drawn above:
  // about 250 KB here, where one forgotten 1100 x 41 weight alone is 180 KB and the 40 weights of a
  // run several MB (the old allowance, 32 MiB, let all of them leak).
  for (const [name, be] of [
    ['plain', plain],
    ['FMA', relaxed],
  ] as const) {
    const mpad = Math.ceil(MAX_M / be.mr) * be.mr,
      npad = Math.ceil(MAX_N / 8) * 8;
    const bound = 2 * (mpad * MAX_K + mpad * npad + 512 * 8) * 4;
    t.ok(
      be.arena.bytesInUse <= bound,
      `${name}: released weights are back in the arena (${be.arena.bytesInUse} bytes held <= ${bound} of scratch)`,
    );
  }
});

t.test('half-precision packed weights are widened exactly in the kernel', async (t) => {
  for (const dtype of ['bf16', 'f16'] as DType[]) {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 12 }),
        fc.integer({ min: 1, max: 700 }),
        fc.integer({ min: 1, max: 20 }),
        fc.nat(),
        (M, K, N, seed) => {
          const a = rand(M * K, seed);
          const bits = encode(rand(K * N, seed + 7), dtype) as Uint16Array;
          const widened = decode(bits, dtype, new Float32Array(K * N));
          const want = jsBackend.matmul(a, M, jsBackend.pack(widened, K, N, 'f32'));
          const pw = plain.pack(bits, K, N, dtype);
          const got = plain.matmul(a, M, pw);
          pw.release();
          return maxAbsDiff(got, want) === 0;
        },
      ),
      { numRuns: 25 },
    );
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

t.test(
  'packing in WASM (staged rows, v128 moves) = the JS packer, across staging chunks and a ragged last panel',
  async (t) => {
    // N large enough that the ~4 MiB staging holds only a few rows at a time; N % 8 != 0 for the padded panel
    for (const [dtype, K, N] of [
      ['f32', 70, 50_001],
      ['bf16', 45, 100_003],
      ['f16', 9, 33],
    ] as [DType, number, number][]) {
      const M = 3,
        a = rand(M * K, K),
        w32 = rand(K * N, N);
      const data = dtype === 'f32' ? w32 : (encode(w32, dtype) as Uint16Array);
      const widened = dtype === 'f32' ? w32 : decode(data as Uint16Array, dtype, new Float32Array(K * N));
      const want = jsBackend.matmul(a, M, jsBackend.pack(widened, K, N, 'f32'));
      const pw = plain.pack(data, K, N, dtype);
      const got = plain.matmul(a, M, pw);
      pw.release();
      t.equal(
        maxAbsDiff(got, want),
        0,
        `${dtype} [${K}, ${N}]: the WASM-packed weight multiplies bit for bit as the JS one`,
      );
    }
  },
);
