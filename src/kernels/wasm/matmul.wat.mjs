// WebAssembly SIMD128 matmul kernels, written as WAT text and assembled at install
// (scripts/build-wasm.mjs). Generated from this template so that the FMA and non-FMA
// variants share one source: only the multiply-add instruction differs.
//
// Layout contract (shared with src/kernels/wasm/index.ts):
//   A  packed by row blocks of MR rows: [Mpad/MR][K][MR] f32   (Mpad = M rounded up to MR)
//   B  packed by column panels of NR=8:   [Npad/8][K][8] f32, bf16 or f16 (Npad = N rounded up to 8)
//   C  row-major [Mpad][Npad] f32, written (not accumulated) by the kernel.
// Why this shape: 5 rows x 2 f32x4 = 10 accumulators + 2 B vectors + 1 A splat = 13 of the
// 15 XMM registers V8 gives us on x64; 6x8 spills without FMA. K is blocked at KC so that one
// B panel block (KC*8*4 = 16 KiB) stays in L1 while every row block streams past it.

import { elementwiseWat } from './elementwise.wat.mjs';

export const NR = 8;
export const KC = 512;
/** Row blocks up to which the kernel runs panel-outer (see the loop order note in matmul). */
const SMALL_NRB = 4;

function madd(fma, acc, a, b) {
  return fma
    ? `(f32x4.relaxed_madd (local.get ${a}) (local.get ${b}) (local.get ${acc}))`
    : `(f32x4.add (local.get ${acc}) (f32x4.mul (local.get ${a}) (local.get ${b})))`;
}

export function matmulWat({ fma, MR }) {
  const accs = [];
  for (let r = 0; r < MR; r++) for (let h = 0; h < 2; h++) accs.push(`$c${r}${h}`);
  const decl = accs.map((c) => `(local ${c} v128)`).join(' ');
  // load C (continuing a K block) or start at zero (first K block)
  const init = accs
    .map((c, i) => {
      const r = Math.floor(i / 2),
        h = i % 2;
      return `(local.set ${c} (select (v128.const i32x4 0 0 0 0) (v128.load offset=${h * 16} (i32.add (local.get $cp) (i32.mul (local.get $crow) (i32.const ${r})))) (i32.eqz (local.get $kb))))`;
    })
    .join('\n          ');
  const store = accs
    .map((c, i) => {
      const r = Math.floor(i / 2),
        h = i % 2;
      return `(v128.store offset=${h * 16} (i32.add (local.get $cp) (i32.mul (local.get $crow) (i32.const ${r}))) (local.get ${c}))`;
    })
    .join('\n          ');
  const body = [];
  for (let r = 0; r < MR; r++) {
    body.push(`(local.set $av (v128.load32_splat offset=${r * 4} (local.get $ap)))`);
    body.push(`(local.set $c${r}0 ${madd(fma, `$c${r}0`, '$av', '$b0')})`);
    body.push(`(local.set $c${r}1 ${madd(fma, `$c${r}1`, '$av', '$b1')})`);
  }
  // One K block of one column panel against every row block: the same text in both loop orders below
  // (panels outermost for small M, K blocks outermost otherwise), so each output element sees the same
  // arithmetic in the same order.
  const panel = `
        (if (i32.eqz (local.get $kind))
          (then
            (local.set $bpanel (i32.add (local.get $b)
              (i32.shl (i32.add (i32.mul (local.get $p) (local.get $K)) (local.get $kb)) (i32.const 5)))))
          (else
            (call $widen_bf16_or_f16 (local.get $kind)
              (i32.add (local.get $b) (i32.shl (i32.add (i32.mul (local.get $p) (local.get $K)) (local.get $kb)) (i32.const 4)))
              (local.get $tmp) (i32.shl (local.get $kc) (i32.const 3)))
            (local.set $bpanel (local.get $tmp))))
        (local.set $rb (i32.const 0))
        (block $rdone (loop $rloop
          (br_if $rdone (i32.ge_u (local.get $rb) (local.get $nrb)))
          (local.set $ap (i32.add (local.get $a)
            (i32.mul (i32.add (i32.mul (local.get $rb) (local.get $K)) (local.get $kb)) (i32.const ${MR * 4}))))
          (local.set $aend (i32.add (local.get $ap) (i32.mul (local.get $kc) (i32.const ${MR * 4}))))
          (local.set $cp (i32.add (local.get $c)
            (i32.shl (i32.add (i32.mul (i32.mul (local.get $rb) (i32.const ${MR})) (local.get $npad))
                              (i32.shl (local.get $p) (i32.const 3))) (i32.const 2))))
          ${init}
          (local.set $bp (local.get $bpanel))
          (loop $k
            (local.set $b0 (v128.load offset=0 (local.get $bp)))
            (local.set $b1 (v128.load offset=16 (local.get $bp)))
            ${body.join('\n            ')}
            (local.set $bp (i32.add (local.get $bp) (i32.const 32)))
            (local.set $ap (i32.add (local.get $ap) (i32.const ${MR * 4})))
            (br_if $k (i32.lt_u (local.get $ap) (local.get $aend))))
          ${store}
          (local.set $rb (i32.add (local.get $rb) (i32.const 1)))
          (br $rloop)))`;
  return `(module
  (import "env" "memory" (memory 1 65536 shared))

  ;; Widen one packed bf16 panel block (n values) into f32 at dst: bf16 is the top half of an f32.
  (func $widen_bf16 (param $src i32) (param $dst i32) (param $n i32)
    (local $end i32) (local $v v128)
    (local.set $end (i32.add (local.get $src) (i32.shl (local.get $n) (i32.const 1))))
    (loop $l
      (local.set $v (v128.load (local.get $src)))
      (v128.store offset=0 (local.get $dst) (i32x4.shl (i32x4.extend_low_i16x8_u (local.get $v)) (i32.const 16)))
      (v128.store offset=16 (local.get $dst) (i32x4.shl (i32x4.extend_high_i16x8_u (local.get $v)) (i32.const 16)))
      (local.set $src (i32.add (local.get $src) (i32.const 16)))
      (local.set $dst (i32.add (local.get $dst) (i32.const 32)))
      (br_if $l (i32.lt_u (local.get $src) (local.get $end)))))

  ;; f16 -> f32 for finite values (weights are checked finite at load): shift exponent and
  ;; mantissa into place and multiply by 2^112 to re-bias the exponent; this also turns
  ;; f16 subnormals into the right f32 normals. The sign bit is or-ed back afterwards.
  (func $widen_f16_half (param $x v128) (result v128)
    (v128.or
      (f32x4.mul
        (i32x4.shl (v128.and (local.get $x) (v128.const i32x4 0x7fff 0x7fff 0x7fff 0x7fff)) (i32.const 13))
        (v128.const f32x4 0x1p112 0x1p112 0x1p112 0x1p112))
      (i32x4.shl (v128.and (local.get $x) (v128.const i32x4 0x8000 0x8000 0x8000 0x8000)) (i32.const 16))))
  (func $widen_f16 (param $src i32) (param $dst i32) (param $n i32)
    (local $end i32) (local $v v128)
    (local.set $end (i32.add (local.get $src) (i32.shl (local.get $n) (i32.const 1))))
    (loop $l
      (local.set $v (v128.load (local.get $src)))
      (v128.store offset=0 (local.get $dst) (call $widen_f16_half (i32x4.extend_low_i16x8_u (local.get $v))))
      (v128.store offset=16 (local.get $dst) (call $widen_f16_half (i32x4.extend_high_i16x8_u (local.get $v))))
      (local.set $src (i32.add (local.get $src) (i32.const 16)))
      (local.set $dst (i32.add (local.get $dst) (i32.const 32)))
      (br_if $l (i32.lt_u (local.get $src) (local.get $end)))))
  (func (export "widen") (param $kind i32) (param $src i32) (param $dst i32) (param $n i32)
    (if (i32.eq (local.get $kind) (i32.const 1))
      (then (call $widen_bf16 (local.get $src) (local.get $dst) (local.get $n)))
      (else (call $widen_f16 (local.get $src) (local.get $dst) (local.get $n)))))

  ;; C[rows of nrb row blocks, panels p0..p1) = A @ B.
  ;; kind: 0 = f32 panels (read in place), 1 = bf16, 2 = f16 (each panel block is widened into
  ;; tmp first, once, then reused by every row block).
  ;; rows per micro-kernel block, read by the loader to pack A
  (func (export "mr") (result i32) (i32.const ${MR}))
  ;; the layout constants, so that the loader and helper threads read them from this one source
  (func (export "nr") (result i32) (i32.const ${NR}))
  (func (export "kc") (result i32) (i32.const ${KC}))

  (func (export "matmul")
    (param $a i32) (param $b i32) (param $c i32) (param $nrb i32) (param $K i32)
    (param $p0 i32) (param $p1 i32) (param $npad i32) (param $kind i32) (param $tmp i32)
    (local $kb i32) (local $kc i32) (local $p i32) (local $rb i32)
    (local $bpanel i32) (local $bp i32) (local $ap i32) (local $aend i32) (local $cp i32) (local $crow i32)
    (local $av v128) (local $b0 v128) (local $b1 v128)
    ${decl}
    (local.set $crow (i32.shl (local.get $npad) (i32.const 2)))
    ;; Loop order: with few row blocks (small M: the unembedding at 15 tokens), each panel is
    ;; finished across its K blocks before the next (B streams once, front to back, and the C tile
    ;; stays in cache); otherwise K blocks outermost, so that one K block of A is reused by every
    ;; panel. Each output element sees the same K blocks in the same order either way.
    (if (i32.le_u (local.get $nrb) (i32.const ${SMALL_NRB}))
      (then
        (local.set $p (local.get $p0))
        (block $pdone (loop $ploop
          (br_if $pdone (i32.ge_u (local.get $p) (local.get $p1)))
          (local.set $kb (i32.const 0))
          (block $kdone (loop $kloop
            (br_if $kdone (i32.ge_u (local.get $kb) (local.get $K)))
      (local.set $kc (i32.sub (local.get $K) (local.get $kb)))
      (if (i32.gt_u (local.get $kc) (i32.const ${KC})) (then (local.set $kc (i32.const ${KC}))))
${panel}
            (local.set $kb (i32.add (local.get $kb) (i32.const ${KC})))
            (br $kloop)))
          (local.set $p (i32.add (local.get $p) (i32.const 1)))
          (br $ploop)))
        (return)))
    (local.set $kb (i32.const 0))
    (block $kdone (loop $kloop
      (br_if $kdone (i32.ge_u (local.get $kb) (local.get $K)))
      (local.set $kc (i32.sub (local.get $K) (local.get $kb)))
      (if (i32.gt_u (local.get $kc) (i32.const ${KC})) (then (local.set $kc (i32.const ${KC}))))
      (local.set $p (local.get $p0))
      (block $pdone (loop $ploop
        (br_if $pdone (i32.ge_u (local.get $p) (local.get $p1)))
${panel}
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $ploop)))
      (local.set $kb (i32.add (local.get $kb) (i32.const ${KC})))
      (br $kloop))))

${elementwiseWat}

  ;; A [M, K] row-major at src -> row blocks [M/MR][K][MR] at dst, zero rows past M (the layout
  ;; the kernel reads; a plain copy of each value).
  (func (export "pack_a") (param $src i32) (param $dst i32) (param $M i32) (param $K i32)
    (local $r0 i32) (local $rows i32) (local $r i32) (local $k i32) (local $s i32) (local $rowb i32)
    (local.set $rowb (i32.shl (local.get $K) (i32.const 2)))
    (block $done (loop $blocks
      (br_if $done (i32.ge_u (local.get $r0) (local.get $M)))
      (local.set $rows (i32.sub (local.get $M) (local.get $r0)))
      (if (i32.gt_u (local.get $rows) (i32.const ${MR})) (then (local.set $rows (i32.const ${MR}))))
      (if (i32.lt_u (local.get $rows) (i32.const ${MR}))
        (then (memory.fill (local.get $dst) (i32.const 0) (i32.mul (local.get $K) (i32.const ${MR * 4})))))
      (local.set $r (i32.const 0))
      (block $rd (loop $rl
        (br_if $rd (i32.ge_u (local.get $r) (local.get $rows)))
        (local.set $s (i32.add (local.get $src) (i32.mul (i32.add (local.get $r0) (local.get $r)) (local.get $rowb))))
        (local.set $k (i32.const 0))
        (block $kd (loop $kl
          (br_if $kd (i32.ge_u (local.get $k) (local.get $K)))
          (f32.store (i32.add (local.get $dst) (i32.shl (i32.add (i32.mul (local.get $k) (i32.const ${MR})) (local.get $r)) (i32.const 2)))
            (f32.load (i32.add (local.get $s) (i32.shl (local.get $k) (i32.const 2)))))
          (local.set $k (i32.add (local.get $k) (i32.const 1)))
          (br $kl)))
        (local.set $r (i32.add (local.get $r) (i32.const 1)))
        (br $rl)))
      (local.set $dst (i32.add (local.get $dst) (i32.mul (local.get $K) (i32.const ${MR * 4}))))
      (local.set $r0 (i32.add (local.get $r0) (i32.const ${MR})))
      (br $blocks))))

  ;; Rows [k0, k0 + rows) of B [K, N] row-major at src (those rows only) -> their rows of the
  ;; panels [ceil(N/NR)][K][NR] at dst, the last panel zero padded. Loading rows in chunks keeps the
  ;; staging copy small; each (row, panel) is one or two v128 moves, panel by panel so that the
  ;; writes are sequential (the staged rows are read with a stride of N but sit in cache).
  ;; eb: element bytes (4 or 2).
${[4, 2]
  .map(
    (
      eb,
    ) => `  (func (export "pack_b${eb * 8}") (param $src i32) (param $dst i32) (param $K i32) (param $N i32) (param $k0 i32) (param $rows i32)
    (local $r i32) (local $p i32) (local $s i32) (local $d i32) (local $np i32) (local $rem i32) (local $j i32) (local $last i32)
    (local.set $np (i32.shr_u (i32.add (local.get $N) (i32.const 7)) (i32.const 3)))
    (local.set $rem (i32.and (local.get $N) (i32.const 7)))
    (block $pd (loop $pl
      (br_if $pd (i32.ge_u (local.get $p) (local.get $np)))
      (local.set $last (i32.and (i32.ne (local.get $rem) (i32.const 0)) (i32.eq (local.get $p) (i32.sub (local.get $np) (i32.const 1)))))
      (local.set $s (i32.add (local.get $src) (i32.mul (local.get $p) (i32.const ${NR * eb}))))
      (local.set $d (i32.add (local.get $dst) (i32.mul (i32.add (i32.mul (local.get $p) (local.get $K)) (local.get $k0)) (i32.const ${NR * eb}))))
      (local.set $r (i32.const 0))
      (block $rd (loop $rl
        (br_if $rd (i32.ge_u (local.get $r) (local.get $rows)))
        (if (local.get $last)
          (then
            (v128.store (local.get $d) (v128.const i32x4 0 0 0 0))${
              eb === 4
                ? `
            (v128.store offset=16 (local.get $d) (v128.const i32x4 0 0 0 0))`
                : ''
            }
            (local.set $j (i32.const 0))
            (block $jd (loop $jl
              (br_if $jd (i32.ge_u (local.get $j) (local.get $rem)))
              ${eb === 4 ? '(f32.store (i32.add (local.get $d) (i32.shl (local.get $j) (i32.const 2))) (f32.load (i32.add (local.get $s) (i32.shl (local.get $j) (i32.const 2)))))' : '(i32.store16 (i32.add (local.get $d) (i32.shl (local.get $j) (i32.const 1))) (i32.load16_u (i32.add (local.get $s) (i32.shl (local.get $j) (i32.const 1)))))'}
              (local.set $j (i32.add (local.get $j) (i32.const 1)))
              (br $jl))))
          (else
            (v128.store (local.get $d) (v128.load (local.get $s)))${
              eb === 4
                ? `
            (v128.store offset=16 (local.get $d) (v128.load offset=16 (local.get $s)))`
                : ''
            }))
        (local.set $s (i32.add (local.get $s) (i32.mul (local.get $N) (i32.const ${eb}))))
        (local.set $d (i32.add (local.get $d) (i32.const ${NR * eb})))
        (local.set $r (i32.add (local.get $r) (i32.const 1)))
        (br $rl)))
      (local.set $p (i32.add (local.get $p) (i32.const 1)))
      (br $pl))))
`,
  )
  .join('\n')}
  (func $widen_bf16_or_f16 (param $kind i32) (param $src i32) (param $dst i32) (param $n i32)
    (if (i32.eq (local.get $kind) (i32.const 1))
      (then (call $widen_bf16 (local.get $src) (local.get $dst) (local.get $n)))
      (else (call $widen_f16 (local.get $src) (local.get $dst) (local.get $n)))))
)
`;
}
