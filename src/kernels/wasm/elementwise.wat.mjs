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

// exp on f32x4 (Cephes expf: round to n = x log2 e, r = x - n ln 2 in two parts, a degree-5
// polynomial, times 2^n built in the exponent bits). Within ~2 ulp of exp on [-87.3, 88.3];
// inputs are clamped there (callers map what was below to 0 themselves).
/**
 * WAT that sets local `y` to exp(local `x`) lane-wise, using `n` and `r` (v128 locals) as scratch and
 * clobbering `x`. Spliced in place (V8 does not inline calls between wasm functions, and a call per
 * four elements was a tenth of softmax's time).
 */
const exp4 = (x, n, r, y) => `
    (local.set ${x} (f32x4.max (f32x4.min (local.get ${x}) (v128.const f32x4 88.3 88.3 88.3 88.3))
                             (v128.const f32x4 -87.3 -87.3 -87.3 -87.3)))
    (local.set ${n} (f32x4.nearest (f32x4.mul (local.get ${x}) (v128.const f32x4 1.44269504 1.44269504 1.44269504 1.44269504))))
    (local.set ${r} (f32x4.sub (f32x4.sub (local.get ${x})
                    (f32x4.mul (local.get ${n}) (v128.const f32x4 0.693359375 0.693359375 0.693359375 0.693359375)))
                    (f32x4.mul (local.get ${n}) (v128.const f32x4 -2.12194440e-4 -2.12194440e-4 -2.12194440e-4 -2.12194440e-4))))
    (local.set ${y} (v128.const f32x4 1.9875691500e-4 1.9875691500e-4 1.9875691500e-4 1.9875691500e-4))
    (local.set ${y} (f32x4.add (f32x4.mul (local.get ${y}) (local.get ${r})) (v128.const f32x4 1.3981999507e-3 1.3981999507e-3 1.3981999507e-3 1.3981999507e-3)))
    (local.set ${y} (f32x4.add (f32x4.mul (local.get ${y}) (local.get ${r})) (v128.const f32x4 8.3334519073e-3 8.3334519073e-3 8.3334519073e-3 8.3334519073e-3)))
    (local.set ${y} (f32x4.add (f32x4.mul (local.get ${y}) (local.get ${r})) (v128.const f32x4 4.1665795894e-2 4.1665795894e-2 4.1665795894e-2 4.1665795894e-2)))
    (local.set ${y} (f32x4.add (f32x4.mul (local.get ${y}) (local.get ${r})) (v128.const f32x4 1.6666665459e-1 1.6666665459e-1 1.6666665459e-1 1.6666665459e-1)))
    (local.set ${y} (f32x4.add (f32x4.mul (local.get ${y}) (local.get ${r})) (v128.const f32x4 5.0000001201e-1 5.0000001201e-1 5.0000001201e-1 5.0000001201e-1)))
    (local.set ${y} (f32x4.add (f32x4.add (f32x4.mul (f32x4.mul (local.get ${y}) (local.get ${r})) (local.get ${r})) (local.get ${r}))
                             (v128.const f32x4 1 1 1 1)))
    (local.set ${y} (f32x4.mul (local.get ${y})
      (i32x4.shl (i32x4.add (i32x4.trunc_sat_f32x4_s (local.get ${n})) (v128.const i32x4 127 127 127 127)) (i32.const 23))))`;

// gelu_new(v) = 0.5 v (1 + tanh(u)), u = sqrt(2/pi) (v + 0.044715 v^3), computed as v / (1 + exp(-2u))
// (the same function: 0.5 (1 + tanh u) is the logistic of 2u), which keeps its relative accuracy
// where 1 + tanh(u) cancels. n elements from src to dst (may be the same), any n.
const geluWat = `
  (func $gelu4 (param $v v128) (result v128)
    (local $u v128) (local $n v128) (local $r v128) (local $y v128)
    (local.set $u (f32x4.mul (v128.const f32x4 -1.5957691216 -1.5957691216 -1.5957691216 -1.5957691216)
      (f32x4.add (local.get $v)
        (f32x4.mul (v128.const f32x4 0.044715 0.044715 0.044715 0.044715)
          (f32x4.mul (local.get $v) (f32x4.mul (local.get $v) (local.get $v)))))))
    ${exp4('$u', '$n', '$r', '$y')}
    (f32x4.div (local.get $v) (f32x4.add (v128.const f32x4 1 1 1 1) (local.get $y))))
  (func (export "gelu_new") (param $src i32) (param $dst i32) (param $n i32)
    (local $end i32) (local $end4 i32) (local $v v128) (local $u v128) (local $e v128) (local $r v128) (local $y v128)
    (local.set $end (i32.add (local.get $src) (i32.shl (local.get $n) (i32.const 2))))
    (local.set $end4 (i32.add (local.get $src) (i32.shl (i32.and (local.get $n) (i32.const -4)) (i32.const 2))))
    (block $vd (loop $v
      (br_if $vd (i32.ge_u (local.get $src) (local.get $end4)))
      (local.set $v (v128.load (local.get $src)))
      (local.set $u (f32x4.mul (v128.const f32x4 -1.5957691216 -1.5957691216 -1.5957691216 -1.5957691216)
        (f32x4.add (local.get $v)
          (f32x4.mul (v128.const f32x4 0.044715 0.044715 0.044715 0.044715)
            (f32x4.mul (local.get $v) (f32x4.mul (local.get $v) (local.get $v)))))))
      ${exp4('$u', '$e', '$r', '$y')}
      (v128.store (local.get $dst) (f32x4.div (local.get $v) (f32x4.add (v128.const f32x4 1 1 1 1) (local.get $y))))
      (local.set $src (i32.add (local.get $src) (i32.const 16)))
      (local.set $dst (i32.add (local.get $dst) (i32.const 16)))
      (br $v)))
    (block $sd (loop $s
      (br_if $sd (i32.ge_u (local.get $src) (local.get $end)))
      (f32.store (local.get $dst) (f32x4.extract_lane 0 (call $gelu4 (f32x4.splat (f32.load (local.get $src))))))
      (local.set $src (i32.add (local.get $src) (i32.const 4)))
      (local.set $dst (i32.add (local.get $dst) (i32.const 4)))
      (br $s))))`;

// Softmax over rows of n (src -> dst, may be the same): max, exp(x - max) with entries far below
// the max (masked -inf among them) exactly 0, their sum, and a division by it; a row that is all
// -inf gives zeros (TL zeroes softmax's NaNs there).
const softmaxWat = `
  (func $softmax_row (param $src i32) (param $dst i32) (param $n i32)
    (local $i i32) (local $n4 i32) (local $mx v128) (local $m f32) (local $sum v128) (local $s f32)
    (local $d v128) (local $e v128) (local $x v128) (local $n2 v128) (local $r v128)
    (local.set $n4 (i32.and (local.get $n) (i32.const -4)))
    (local.set $mx (v128.const f32x4 -inf -inf -inf -inf))
    (local.set $i (i32.const 0))
    (block $a (loop $l
      (br_if $a (i32.ge_u (local.get $i) (local.get $n4)))
      (local.set $mx (f32x4.max (local.get $mx) (v128.load (i32.add (local.get $src) (i32.shl (local.get $i) (i32.const 2))))))
      (local.set $i (i32.add (local.get $i) (i32.const 4)))
      (br $l)))
    (local.set $m (f32.max (f32.max (f32x4.extract_lane 0 (local.get $mx)) (f32x4.extract_lane 1 (local.get $mx)))
                           (f32.max (f32x4.extract_lane 2 (local.get $mx)) (f32x4.extract_lane 3 (local.get $mx)))))
    (block $b (loop $l
      (br_if $b (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $m (f32.max (local.get $m) (f32.load (i32.add (local.get $src) (i32.shl (local.get $i) (i32.const 2))))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l)))
    (if (f32.eq (local.get $m) (f32.const -inf))
      (then (memory.fill (local.get $dst) (i32.const 0) (i32.shl (local.get $n) (i32.const 2))) (return)))
    (local.set $mx (f32x4.splat (local.get $m)))
    (local.set $sum (v128.const f32x4 0 0 0 0))
    (local.set $i (i32.const 0))
    (block $c (loop $l
      (br_if $c (i32.ge_u (local.get $i) (local.get $n4)))
      (local.set $d (f32x4.sub (v128.load (i32.add (local.get $src) (i32.shl (local.get $i) (i32.const 2)))) (local.get $mx)))
      (local.set $x (local.get $d))
      ${exp4('$x', '$n2', '$r', '$e')}
      (local.set $e (v128.and (local.get $e) (f32x4.ge (local.get $d) (v128.const f32x4 -87.3 -87.3 -87.3 -87.3))))
      (v128.store (i32.add (local.get $dst) (i32.shl (local.get $i) (i32.const 2))) (local.get $e))
      (local.set $sum (f32x4.add (local.get $sum) (local.get $e)))
      (local.set $i (i32.add (local.get $i) (i32.const 4)))
      (br $l)))
    (local.set $s (f32.add (f32.add (f32x4.extract_lane 0 (local.get $sum)) (f32x4.extract_lane 1 (local.get $sum)))
                           (f32.add (f32x4.extract_lane 2 (local.get $sum)) (f32x4.extract_lane 3 (local.get $sum)))))
    (block $d (loop $l
      (br_if $d (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $d (f32x4.splat (f32.sub (f32.load (i32.add (local.get $src) (i32.shl (local.get $i) (i32.const 2)))) (local.get $m))))
      (local.set $x (local.get $d))
      ${exp4('$x', '$n2', '$r', '$e')}
      (local.set $e (v128.and (local.get $e) (f32x4.ge (local.get $d) (v128.const f32x4 -87.3 -87.3 -87.3 -87.3))))
      (f32.store (i32.add (local.get $dst) (i32.shl (local.get $i) (i32.const 2))) (f32x4.extract_lane 0 (local.get $e)))
      (local.set $s (f32.add (local.get $s) (f32x4.extract_lane 0 (local.get $e))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l)))
    (local.set $sum (f32x4.splat (local.get $s)))
    (local.set $i (i32.const 0))
    (block $f (loop $l
      (br_if $f (i32.ge_u (local.get $i) (local.get $n4)))
      (v128.store (i32.add (local.get $dst) (i32.shl (local.get $i) (i32.const 2)))
        (f32x4.div (v128.load (i32.add (local.get $dst) (i32.shl (local.get $i) (i32.const 2)))) (local.get $sum)))
      (local.set $i (i32.add (local.get $i) (i32.const 4)))
      (br $l)))
    (block $g (loop $l
      (br_if $g (i32.ge_u (local.get $i) (local.get $n)))
      (f32.store (i32.add (local.get $dst) (i32.shl (local.get $i) (i32.const 2)))
        (f32.div (f32.load (i32.add (local.get $dst) (i32.shl (local.get $i) (i32.const 2)))) (local.get $s)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l))))
  (func (export "softmax_rows") (param $src i32) (param $dst i32) (param $rows i32) (param $n i32)
    (local $r i32) (local $row i32)
    (local.set $row (i32.shl (local.get $n) (i32.const 2)))
    (block $done (loop $l
      (br_if $done (i32.ge_u (local.get $r) (local.get $rows)))
      (call $softmax_row (local.get $src) (local.get $dst) (local.get $n))
      (local.set $src (i32.add (local.get $src) (local.get $row)))
      (local.set $dst (i32.add (local.get $dst) (local.get $row)))
      (local.set $r (i32.add (local.get $r) (i32.const 1)))
      (br $l))))`;

/** Every elementwise kernel, as module fields to splice into the kernel module. */
export const elementwiseWat = [biasRowsWat, geluWat, softmaxWat].join('\n');
