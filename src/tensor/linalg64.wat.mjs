// WebAssembly SIMD128 (f64x2) kernels for the float64 linear algebra of the load-time refactor
// (linalg64.ts, factored-svd.ts): one sweep of the one-sided Jacobi SVD, and the Gram matrix X^T X.
// Both work on float64 columns in the module's own memory (not the backend's shared one: these
// run once per head at load, on arrays of a few hundred KB). Column lengths are even (the caller
// pads with zeros, which no dot product or rotation changes), so every loop steps two rows at a time.
//
// sweep(w, v, nrm, m, n, vn, eps) -> rotations
//   w [n columns][m] f64, v [n columns][vn] f64, nrm [n] f64 (written: the squared column norms,
//   summed afresh, then carried through each rotation as linalg64.ts's JS loop does).
// gram(c, n, m, g)
//   c [m columns][n] f64; g [m][m] f64 gets the upper triangle of c^T c in 2 x 2 blocks (m even).
export function linalg64Wat() {
  // f64x2 dot product of two columns of `len` rows starting at byte addresses $a and $b
  const dot = (a, b, len, acc) => `
      (local.set ${acc} (v128.const f64x2 0 0))
      (local.set $i (i32.const 0))
      (block $dd (loop $dl
        (br_if $dd (i32.ge_u (local.get $i) (local.get ${len})))
        (local.set ${acc} (f64x2.add (local.get ${acc}) (f64x2.mul
          (v128.load (i32.add (local.get ${a}) (i32.shl (local.get $i) (i32.const 3))))
          (v128.load (i32.add (local.get ${b}) (i32.shl (local.get $i) (i32.const 3)))))))
        (local.set $i (i32.add (local.get $i) (i32.const 2)))
        (br $dl)))`;
  // columns at $a, $b of `len` rows: a' = c a - s b, b' = s a + c b
  const rotate = (a, b, len) => `
        (local.set $i (i32.const 0))
        (block $rd (loop $rl
          (br_if $rd (i32.ge_u (local.get $i) (local.get ${len})))
          (local.set $pa (i32.add (local.get ${a}) (i32.shl (local.get $i) (i32.const 3))))
          (local.set $pb (i32.add (local.get ${b}) (i32.shl (local.get $i) (i32.const 3))))
          (local.set $x (v128.load (local.get $pa)))
          (local.set $y (v128.load (local.get $pb)))
          (v128.store (local.get $pa) (f64x2.sub (f64x2.mul (local.get $cv) (local.get $x)) (f64x2.mul (local.get $sv) (local.get $y))))
          (v128.store (local.get $pb) (f64x2.add (f64x2.mul (local.get $sv) (local.get $x)) (f64x2.mul (local.get $cv) (local.get $y))))
          (local.set $i (i32.add (local.get $i) (i32.const 2)))
          (br $rl)))`;
  const sum2 = (v) => `(f64.add (f64x2.extract_lane 0 (local.get ${v})) (f64x2.extract_lane 1 (local.get ${v})))`;
  return `(module
  (memory (export "memory") 1)
  (func (export "sweep")
    (param $w i32) (param $v i32) (param $nrm i32) (param $m i32) (param $n i32) (param $vn i32) (param $eps f64)
    (result i32)
    (local $p i32) (local $q i32) (local $i i32) (local $wp i32) (local $wq i32) (local $vp i32) (local $vq i32)
    (local $pa i32) (local $pb i32) (local $rot i32)
    (local $alpha f64) (local $beta f64) (local $gamma f64) (local $zeta f64) (local $t f64) (local $c f64) (local $s f64)
    (local $acc v128) (local $x v128) (local $y v128) (local $cv v128) (local $sv v128)
    ;; squared column norms, summed afresh
    (local.set $p (i32.const 0))
    (block $nd (loop $nl
      (br_if $nd (i32.ge_u (local.get $p) (local.get $n)))
      (local.set $wp (i32.add (local.get $w) (i32.shl (i32.mul (local.get $p) (local.get $m)) (i32.const 3))))
      ${dot('$wp', '$wp', '$m', '$acc')}
      (f64.store (i32.add (local.get $nrm) (i32.shl (local.get $p) (i32.const 3))) ${sum2('$acc')})
      (local.set $p (i32.add (local.get $p) (i32.const 1)))
      (br $nl)))
    (local.set $p (i32.const 0))
    (block $pd (loop $pl
      (br_if $pd (i32.ge_u (i32.add (local.get $p) (i32.const 1)) (local.get $n)))
      (local.set $wp (i32.add (local.get $w) (i32.shl (i32.mul (local.get $p) (local.get $m)) (i32.const 3))))
      (local.set $vp (i32.add (local.get $v) (i32.shl (i32.mul (local.get $p) (local.get $vn)) (i32.const 3))))
      (local.set $q (i32.add (local.get $p) (i32.const 1)))
      (block $qd (loop $ql
        (br_if $qd (i32.ge_u (local.get $q) (local.get $n)))
        (local.set $wq (i32.add (local.get $w) (i32.shl (i32.mul (local.get $q) (local.get $m)) (i32.const 3))))
        (local.set $vq (i32.add (local.get $v) (i32.shl (i32.mul (local.get $q) (local.get $vn)) (i32.const 3))))
        ${dot('$wp', '$wq', '$m', '$acc')}
        (local.set $gamma ${sum2('$acc')})
        (local.set $alpha (f64.load (i32.add (local.get $nrm) (i32.shl (local.get $p) (i32.const 3)))))
        (local.set $beta (f64.load (i32.add (local.get $nrm) (i32.shl (local.get $q) (i32.const 3)))))
        (if (i32.and
              (f64.ne (local.get $gamma) (f64.const 0))
              (f64.gt (f64.abs (local.get $gamma)) (f64.mul (local.get $eps) (f64.sqrt (f64.mul (local.get $alpha) (local.get $beta))))))
          (then
            (local.set $rot (i32.add (local.get $rot) (i32.const 1)))
            (local.set $zeta (f64.div (f64.sub (local.get $beta) (local.get $alpha)) (f64.mul (f64.const 2) (local.get $gamma))))
            (local.set $t (f64.div
              (select (f64.const 1) (f64.const -1) (f64.ge (local.get $zeta) (f64.const 0)))
              (f64.add (f64.abs (local.get $zeta)) (f64.sqrt (f64.add (f64.const 1) (f64.mul (local.get $zeta) (local.get $zeta)))))))
            (local.set $c (f64.div (f64.const 1) (f64.sqrt (f64.add (f64.const 1) (f64.mul (local.get $t) (local.get $t))))))
            (local.set $s (f64.mul (local.get $c) (local.get $t)))
            (local.set $cv (f64x2.splat (local.get $c)))
            (local.set $sv (f64x2.splat (local.get $s)))
            ${rotate('$wp', '$wq', '$m')}
            ${rotate('$vp', '$vq', '$vn')}
            (f64.store (i32.add (local.get $nrm) (i32.shl (local.get $p) (i32.const 3)))
              (f64.sub (local.get $alpha) (f64.mul (local.get $t) (local.get $gamma))))
            (f64.store (i32.add (local.get $nrm) (i32.shl (local.get $q) (i32.const 3)))
              (f64.add (local.get $beta) (f64.mul (local.get $t) (local.get $gamma))))))
        (local.set $q (i32.add (local.get $q) (i32.const 1)))
        (br $ql)))
      (local.set $p (i32.add (local.get $p) (i32.const 1)))
      (br $pl)))
    (local.get $rot))
  (func (export "gram") (param $c i32) (param $n i32) (param $m i32) (param $g i32)
    (local $a i32) (local $b i32) (local $i i32) (local $ca i32) (local $ca1 i32) (local $cb i32) (local $cb1 i32)
    (local $o i32) (local $xa v128) (local $xa1 v128) (local $xb v128) (local $xb1 v128)
    (local $s00 v128) (local $s01 v128) (local $s10 v128) (local $s11 v128)
    (local.set $a (i32.const 0))
    (block $ad (loop $al
      (br_if $ad (i32.ge_u (local.get $a) (local.get $m)))
      (local.set $ca (i32.add (local.get $c) (i32.shl (i32.mul (local.get $a) (local.get $n)) (i32.const 3))))
      (local.set $ca1 (i32.add (local.get $ca) (i32.shl (local.get $n) (i32.const 3))))
      (local.set $b (local.get $a))
      (block $bd (loop $bl
        (br_if $bd (i32.ge_u (local.get $b) (local.get $m)))
        (local.set $cb (i32.add (local.get $c) (i32.shl (i32.mul (local.get $b) (local.get $n)) (i32.const 3))))
        (local.set $cb1 (i32.add (local.get $cb) (i32.shl (local.get $n) (i32.const 3))))
        (local.set $s00 (v128.const f64x2 0 0)) (local.set $s01 (v128.const f64x2 0 0))
        (local.set $s10 (v128.const f64x2 0 0)) (local.set $s11 (v128.const f64x2 0 0))
        (local.set $i (i32.const 0))
        (block $id (loop $il
          (br_if $id (i32.ge_u (local.get $i) (local.get $n)))
          (local.set $o (i32.shl (local.get $i) (i32.const 3)))
          (local.set $xa (v128.load (i32.add (local.get $ca) (local.get $o))))
          (local.set $xa1 (v128.load (i32.add (local.get $ca1) (local.get $o))))
          (local.set $xb (v128.load (i32.add (local.get $cb) (local.get $o))))
          (local.set $xb1 (v128.load (i32.add (local.get $cb1) (local.get $o))))
          (local.set $s00 (f64x2.add (local.get $s00) (f64x2.mul (local.get $xa) (local.get $xb))))
          (local.set $s01 (f64x2.add (local.get $s01) (f64x2.mul (local.get $xa) (local.get $xb1))))
          (local.set $s10 (f64x2.add (local.get $s10) (f64x2.mul (local.get $xa1) (local.get $xb))))
          (local.set $s11 (f64x2.add (local.get $s11) (f64x2.mul (local.get $xa1) (local.get $xb1))))
          (local.set $i (i32.add (local.get $i) (i32.const 2)))
          (br $il)))
        (local.set $o (i32.add (local.get $g) (i32.shl (i32.add (i32.mul (local.get $a) (local.get $m)) (local.get $b)) (i32.const 3))))
        (f64.store (local.get $o) ${sum2('$s00')})
        (f64.store offset=8 (local.get $o) ${sum2('$s01')})
        (local.set $o (i32.add (local.get $o) (i32.shl (local.get $m) (i32.const 3))))
        (f64.store (local.get $o) ${sum2('$s10')})
        (f64.store offset=8 (local.get $o) ${sum2('$s11')})
        (local.set $b (i32.add (local.get $b) (i32.const 2)))
        (br $bl)))
      (local.set $a (i32.add (local.get $a) (i32.const 2)))
      (br $al)))))`;
}
