// WebAssembly SIMD128 kernel for weight gradients: dW (+)= Xᵀ·dY when X and dY have few rows
// (R = batch·positions, e.g. 15). The general matmul kernel handles that shape poorly: its
// C tiles are loaded and stored around an inner loop of only R steps, and the result is then
// copied out of scratch. This kernel writes each output element once, straight into the
// gradient buffer, in the leaf's own layout (segments: W_Q's [H, M, D] is written directly
// from the [M, H·D] product), optionally accumulating.
//
//   xT  [K][R] f32   (X transposed)        g  [R][N] f32 (dY)
//   out element (k, n) at  k·rs + (n / S)·ss + n % S   (elements), S % 8 == 0
//   rows k in [0, K4) with K4 % 4 == 0; columns n in [0, N8), N8 % 8 == 0 (the caller does tails).
// Loop order: column blocks of CB columns (CB·R·4 bytes of g stay in L1), then blocks of
// RB = 4 rows, then 8-column chunks: 4 rows x 2 f32x4 = 8 accumulators + 2 loads + 1 splat
// (11 of the 15 XMM registers V8 gives us): 8 multiply-adds per 2 loads and 4 splats.
export const CB = 256;
export const RB = 4;
export function outerWat() {
  const rows = [0, 1, 2, 3];
  const accs = rows.flatMap((r) => [`$a${r}0`, `$a${r}1`]);
  return `(module
  (import "env" "memory" (memory 1 65536 shared))
  (func (export "outer")
    (param $x i32) (param $g i32) (param $out i32) (param $K4 i32) (param $R i32) (param $N i32) (param $N8 i32)
    (param $S i32) (param $ss i32) (param $rs i32) (param $acc i32)
    (local $nb i32) (local $nbe i32) (local $k i32) (local $n i32) (local $r i32) (local $seg i32)
    (local $xp i32) (local $xstride i32) (local $gp i32) (local $op i32) (local $ostride i32) (local $gstride i32)
    ${accs.map((a) => `(local ${a} v128)`).join(' ')}
    (local $s v128) (local $g0 v128) (local $g1 v128)
    (local.set $gstride (i32.shl (local.get $N) (i32.const 2)))
    (local.set $xstride (i32.shl (local.get $R) (i32.const 2)))
    (local.set $ostride (i32.shl (local.get $rs) (i32.const 2)))
    (local.set $nb (i32.const 0))
    (block $nbdone (loop $nbloop
      (br_if $nbdone (i32.ge_u (local.get $nb) (local.get $N8)))
      (local.set $nbe (i32.add (local.get $nb) (i32.const ${CB})))
      (if (i32.gt_u (local.get $nbe) (local.get $N8)) (then (local.set $nbe (local.get $N8))))
      (local.set $k (i32.const 0))
      (block $kdone (loop $kloop
        (br_if $kdone (i32.ge_u (local.get $k) (local.get $K4)))
        (local.set $n (local.get $nb))
        (block $ndone (loop $nloop
          (br_if $ndone (i32.ge_u (local.get $n) (local.get $nbe)))
          (local.set $seg (i32.div_u (local.get $n) (local.get $S)))
          (local.set $op (i32.add (local.get $out) (i32.shl
            (i32.add (i32.add (i32.mul (local.get $k) (local.get $rs)) (i32.mul (local.get $seg) (local.get $ss)))
                     (i32.sub (local.get $n) (i32.mul (local.get $seg) (local.get $S)))) (i32.const 2))))
          (if (local.get $acc)
            (then
              ${rows
                .map(
                  (
                    r,
                  ) => `(local.set $a${r}0 (v128.load (i32.add (local.get $op) (i32.mul (local.get $ostride) (i32.const ${r})))))
              (local.set $a${r}1 (v128.load offset=16 (i32.add (local.get $op) (i32.mul (local.get $ostride) (i32.const ${r})))))`,
                )
                .join('\n              ')})
            (else
              ${accs.map((a) => `(local.set ${a} (v128.const i32x4 0 0 0 0))`).join(' ')}))
          (local.set $xp (i32.add (local.get $x) (i32.shl (i32.mul (local.get $k) (local.get $R)) (i32.const 2))))
          (local.set $gp (i32.add (local.get $g) (i32.shl (local.get $n) (i32.const 2))))
          (local.set $r (i32.const 0))
          (block $rdone (loop $rloop
            (br_if $rdone (i32.ge_u (local.get $r) (local.get $R)))
            (local.set $g0 (v128.load (local.get $gp)))
            (local.set $g1 (v128.load offset=16 (local.get $gp)))
            ${rows
              .map(
                (
                  r,
                ) => `(local.set $s (v128.load32_splat (i32.add (local.get $xp) (i32.mul (local.get $xstride) (i32.const ${r})))))
            (local.set $a${r}0 (f32x4.add (local.get $a${r}0) (f32x4.mul (local.get $s) (local.get $g0))))
            (local.set $a${r}1 (f32x4.add (local.get $a${r}1) (f32x4.mul (local.get $s) (local.get $g1))))`,
              )
              .join('\n            ')}
            (local.set $xp (i32.add (local.get $xp) (i32.const 4)))
            (local.set $gp (i32.add (local.get $gp) (local.get $gstride)))
            (local.set $r (i32.add (local.get $r) (i32.const 1)))
            (br $rloop)))
          ${rows
            .map(
              (
                r,
              ) => `(v128.store (i32.add (local.get $op) (i32.mul (local.get $ostride) (i32.const ${r}))) (local.get $a${r}0))
          (v128.store offset=16 (i32.add (local.get $op) (i32.mul (local.get $ostride) (i32.const ${r}))) (local.get $a${r}1))`,
            )
            .join('\n          ')}
          (local.set $n (i32.add (local.get $n) (i32.const 8)))
          (br $nloop)))
        (local.set $k (i32.add (local.get $k) (i32.const ${RB})))
        (br $kloop)))
      (local.set $nb (local.get $nbe))
      (br $nbloop)))))`;
}
