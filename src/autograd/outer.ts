/**
 * dW (+)= Xᵀ·dY for few-row X (the weight gradients of a short prompt) in a WASM SIMD kernel
 * (outer.wat.mjs) that writes each element once, straight into a gradient buffer living in
 * the backend's shared memory, in the weight's own (TL) layout. Used by `linear`'s backward
 * when the backend is the WASM one and dist/wasm/outer.wasm is built; otherwise `linear`
 * falls back to the backend's general matmul.
 */
import { platform } from '../platform/index.js';
import type { Backend } from '../kernels/backend.js';
import { WasmBackend } from '../kernels/index.js';

/** Where element (k, n) of the logical [K, N] gradient lives: k·rs + ⌊n/S⌋·ss + n mod S. */
export interface GradLayout {
  S: number;
  ss: number;
  rs: number;
}

type OuterFn = (
  x: number,
  g: number,
  out: number,
  K4: number,
  R: number,
  N: number,
  N8: number,
  S: number,
  ss: number,
  rs: number,
  acc: number,
) => void;

let module: WebAssembly.Module | null | undefined;
const instances = new WeakMap<WasmBackend, OuterFn>();

function kernelFor(be: Backend): OuterFn | null {
  if (!(be instanceof WasmBackend)) return null;
  // dist/wasm/outer.wasm, read by the platform (fs in Node, fetched by init() in browsers)
  if (module === undefined) module = platform.kernelModule('outer').module;
  if (!module) return null;
  let fn = instances.get(be);
  if (!fn) {
    fn = new WebAssembly.Instance(module, { env: { memory: be.memory } }).exports.outer as OuterFn;
    instances.set(be, fn);
  }
  return fn;
}

/** Whether the kernel can serve this backend and layout. */
export function outerAvailable(be: Backend, layout: GradLayout, N: number): boolean {
  return kernelFor(be) !== null && (layout.S === N || layout.S % 8 === 0);
}

/** Scratch for the operands, per backend, grown as needed. */
const scratch = new WeakMap<WasmBackend, { ptr: number; bytes: number }>();
function scratchFor(be: WasmBackend, bytes: number): number {
  let s = scratch.get(be);
  if (!s || s.bytes < bytes) {
    if (s) be.arena.release(s.ptr);
    const size = Math.max(bytes, (s?.bytes ?? 0) * 2);
    s = { ptr: be.arena.alloc(size), bytes: size };
    scratch.set(be, s);
  }
  return s.ptr;
}

/**
 * out (a Float32Array view of `be`'s memory, the weight's layout) (+)= xᵀ·g, with x [R, K]
 * and g [R, N] row-major. Call only when outerAvailable().
 */
export function outerInto(
  be: Backend,
  x: Float32Array,
  g: Float32Array,
  R: number,
  K: number,
  N: number,
  layout: GradLayout,
  out: Float32Array,
  accumulate: boolean,
): void {
  const fn = kernelFor(be)!,
    w = be as WasmBackend;
  const xBytes = K * R * 4,
    gBytes = R * N * 4;
  const base = scratchFor(w, xBytes + gBytes);
  const mem = new Float32Array(w.memory.buffer);
  const xp = base >>> 2,
    gp = (base + xBytes) >>> 2;
  for (let r = 0; r < R; r++) for (let k = 0; k < K; k++) mem[xp + k * R + r] = x[r * K + k];
  mem.set(g.subarray(0, R * N), gp);
  const K4 = K & ~3,
    N8 = N & ~7;
  const { S, ss, rs } = layout;
  fn(base, base + xBytes, out.byteOffset, K4, R, N, N8, S, ss, rs, accumulate ? 1 : 0);
  // tails: the last K mod 4 rows, the last N mod 8 columns (only when S = N)
  const at = (k: number, n: number) => k * rs + Math.floor(n / S) * ss + (n % S);
  const one = (k: number, n: number) => {
    let s = 0;
    for (let r = 0; r < R; r++) s += mem[xp + k * R + r] * mem[gp + r * N + n];
    const i = at(k, n);
    out[i] = accumulate ? out[i] + s : s;
  };
  for (let k = K4; k < K; k++) for (let n = 0; n < N; n++) one(k, n);
  if (N8 < N) for (let k = 0; k < K4; k++) for (let n = N8; n < N; n++) one(k, n);
}
