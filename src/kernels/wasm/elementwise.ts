// The WASM SIMD elementwise kernels (elementwise.wat.mjs) on JS arrays: an instance of the kernel
// module over a small memory of its own, the data copied in and out in chunks.
import type { FastElementwise } from '../../tensor/index.js';

/** Floats per chunk (4 MiB): large activations (1,024-token patterns) run in pieces of whole rows. */
const CHUNK = 1 << 20;
const PAGE = 65536;

export class WasmElementwise implements FastElementwise {
  private readonly memory: WebAssembly.Memory;
  private readonly gelu: (src: number, dst: number, n: number) => void;
  private readonly softmax: (src: number, dst: number, rows: number, n: number) => void;
  /** Data starts here (address 0 kept unused). */
  private readonly base = 64;

  constructor(module: WebAssembly.Module) {
    this.memory = new WebAssembly.Memory({ initial: 8, maximum: 65536, shared: true });
    const ex = new WebAssembly.Instance(module, { env: { memory: this.memory } }).exports;
    this.gelu = ex.gelu_new as (src: number, dst: number, n: number) => void;
    this.softmax = ex.softmax_rows as (src: number, dst: number, rows: number, n: number) => void;
  }

  /** Whether a module has these kernels (an older build may not). */
  static supports(module: WebAssembly.Module): boolean {
    const names = new Set(WebAssembly.Module.exports(module).map((e) => e.name));
    return names.has('gelu_new') && names.has('softmax_rows');
  }

  private view(floats: number): Float32Array {
    const need = this.base + floats * 4,
      have = this.memory.buffer.byteLength;
    if (need > have) this.memory.grow(Math.ceil((need - have) / PAGE));
    return new Float32Array(this.memory.buffer, this.base, floats);
  }

  /** gelu_new elementwise into a fresh array (within a few f32 ulp of the tanh formula). */
  geluNew(src: Float32Array): Float32Array {
    const out = new Float32Array(src.length);
    for (let o = 0; o < src.length; o += CHUNK) {
      const n = Math.min(CHUNK, src.length - o),
        v = this.view(n);
      v.set(src.subarray(o, o + n));
      this.gelu(this.base, this.base, n);
      out.set(v, o);
    }
    return out;
  }

  /** Softmax over rows of n into a fresh array (all -inf rows give 0). */
  softmaxRows(src: Float32Array, n: number): Float32Array {
    const out = new Float32Array(src.length);
    if (n === 0) return out;
    const rows = Math.max(1, Math.floor(CHUNK / n));
    for (let o = 0; o < src.length; o += rows * n) {
      const len = Math.min(rows * n, src.length - o),
        v = this.view(len);
      v.set(src.subarray(o, o + len));
      this.softmax(this.base, this.base, len / n, n);
      out.set(v, o);
    }
    return out;
  }
}
