// Elementwise WebAssembly SIMD128 kernels spliced into the matmul module (scripts/build-wasm.mjs
// assembles one module, so helper threads and worker replicas get them with the matmul).
// Each op here is one IEEE f32 operation per element (add), so the results equal the JS loops'
// (a double-precision add of two f32 values rounded once to f32 is the f32 add) bit for bit.

/** C[i, j] += bias[j] for i < M, j < N, rows of `ld` floats (the kernel's padded C). Addresses in bytes. */
export const biasRowsWat = `
  (func (export "bias_rows") (param $c i32) (param $ld i32) (param $M i32) (param $N i32) (param $bias i32)
    (local $i i32) (local $row i32) (local $j i32) (local $n4 i32)
    (local.set $n4 (i32.and (local.get $N) (i32.const -4)))
    (block $done (loop $rows
      (br_if $done (i32.ge_u (local.get $i) (local.get $M)))
      (local.set $row (i32.add (local.get $c) (i32.shl (i32.mul (local.get $i) (local.get $ld)) (i32.const 2))))
      (local.set $j (i32.const 0))
      (block $vdone (loop $v
        (br_if $vdone (i32.ge_u (local.get $j) (local.get $n4)))
        (v128.store (i32.add (local.get $row) (i32.shl (local.get $j) (i32.const 2)))
          (f32x4.add (v128.load (i32.add (local.get $row) (i32.shl (local.get $j) (i32.const 2))))
                     (v128.load (i32.add (local.get $bias) (i32.shl (local.get $j) (i32.const 2))))))
        (local.set $j (i32.add (local.get $j) (i32.const 4)))
        (br $v)))
      (block $sdone (loop $s
        (br_if $sdone (i32.ge_u (local.get $j) (local.get $N)))
        (f32.store (i32.add (local.get $row) (i32.shl (local.get $j) (i32.const 2)))
          (f32.add (f32.load (i32.add (local.get $row) (i32.shl (local.get $j) (i32.const 2))))
                   (f32.load (i32.add (local.get $bias) (i32.shl (local.get $j) (i32.const 2))))))
        (local.set $j (i32.add (local.get $j) (i32.const 1)))
        (br $s)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $rows)))
  )`;
