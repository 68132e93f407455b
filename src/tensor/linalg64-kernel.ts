// The f64x2 WebAssembly kernels of linalg64.wat.mjs (one Jacobi sweep, the Gram matrix), when
// dist/wasm/linalg64.wasm is there: Node reads it at first use, browsers fetch it in init(). Where
// it is not, linalg64.ts and factored-svd.ts run their own JS loops (same algorithm, same
// stopping rule; the sums differ in the last bits because the kernel adds two rows at a time).
import { platform } from '../platform/index.js';

export interface Linalg64Kernel {
  /** One sweep over the n columns (see linalg64.wat.mjs); returns how many pairs it rotated. */
  sweep(w: number, v: number, nrm: number, m: number, n: number, vn: number, eps: number): number;
  /** The upper 2 x 2 blocks of c^T c for c [m columns][n rows], n and m even. */
  gram(c: number, n: number, m: number, g: number): void;
  /** Float64 views of the kernel's memory, grown to at least `elements` f64s (views die when it grows). */
  f64(elements: number): Float64Array;
}

let kernel: Linalg64Kernel | null | undefined;

export function linalg64Kernel(): Linalg64Kernel | null {
  if (kernel !== undefined) return kernel;
  if (!platform.kernelsReady()) return null; // a browser before init(): the JS loops, this once
  const { module } = platform.kernelModule('linalg64');
  if (!module) return (kernel = null);
  const ex = new WebAssembly.Instance(module).exports as unknown as {
    memory: WebAssembly.Memory;
    sweep: Linalg64Kernel['sweep'];
    gram: Linalg64Kernel['gram'];
  };
  kernel = {
    sweep: ex.sweep,
    gram: ex.gram,
    f64(elements) {
      const need = Math.ceil((elements * 8 - ex.memory.buffer.byteLength) / 65536);
      if (need > 0) ex.memory.grow(need);
      return new Float64Array(ex.memory.buffer);
    },
  };
  return kernel;
}

/** For tests: run the JS loops even where the kernel is built (null), or back to the default (undefined). */
export function setLinalg64Kernel(k: Linalg64Kernel | null | undefined): void {
  kernel = k;
}
