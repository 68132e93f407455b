import { check, TypelensError } from '../../errors.js';
import { platform } from '../../platform/index.js';
import { bytesPerElement, DType } from '../../tensor/dtype.js';
import type { Backend, PackedDesc, PackedWeight, SharedMemory } from '../backend.js';
import { setFastElementwise, fastElementwise } from '../../tensor/ops.js';
import { Arena } from './arena.js';
import { WasmElementwise } from './elementwise.js';
import type { MatmulFn } from './control.js';
import { MatmulHelpers } from './threads.js';

let threadsNoticed = false;

class WasmWeight implements PackedWeight {
  private live = true;
  readonly npad: number;
  constructor(
    private readonly owner: WasmBackend,
    readonly ptr: number,
    readonly bytes: number,
    readonly K: number,
    readonly N: number,
    readonly dtype: DType,
  ) {
    this.npad = Math.ceil(N / owner.nr) * owner.nr;
  }
  get backend(): string {
    return this.owner.name;
  }
  assertLive(): void {
    check(this.live, 'this packed weight was released (model disposed?)');
  }
  release(): void {
    if (this.live) {
      this.live = false;
      this.owner.arena.release(this.ptr);
    }
  }
}

/**
 * WebAssembly SIMD128 backend. One shared WebAssembly.Memory holds the packed weights (so
 * worker threads can later read them without copies) and a scratch area for A and C.
 */
export class WasmBackend implements Backend {
  readonly name: string;
  readonly memory: WebAssembly.Memory;
  readonly arena: Arena;
  readonly fma: boolean;
  private readonly kernel: MatmulFn;
  private readonly biasRows: (c: number, ld: number, M: number, N: number, bias: number) => void;
  private readonly packAKernel?: (src: number, dst: number, M: number, K: number) => void;
  /** pack_b32 / pack_b16: rows [k0, k0 + rows) of a staged B into its panels (see pack). */
  private readonly packBKernel: Record<'f32' | 'half', PackBFn>;
  /** Rows per micro-kernel block (5 without FMA, 6 with: FMA frees the temporary register). */
  readonly mr: number;
  private scratch = { ptr: 0, bytes: 0 };
  readonly module: WebAssembly.Module;
  private helpers: MatmulHelpers | null = null;
  /** Matmuls smaller than this many multiply-adds stay on one thread (waking a helper costs ~20 us). */
  readonly parallelMinMacs: number;
  /** Column-panel width and K block of the kernel (from matmul.wat.mjs, via the module's exports). */
  readonly nr: number;
  readonly kc: number;

  /** A fixed scratch region (worker replicas: the memory's allocator belongs to the main thread). */
  private fixedScratch: { ptr: number; bytes: number } | null = null;

  constructor(
    opts: {
      fma?: boolean;
      memory?: WebAssembly.Memory;
      module?: WebAssembly.Module;
      fmaModule?: boolean;
      scratch?: { ptr: number; bytes: number };
      parallelMinMacs?: number;
    } = {},
  ) {
    this.parallelMinMacs = opts.parallelMinMacs ?? 1 << 20;
    this.memory = opts.memory ?? new WebAssembly.Memory({ initial: 64, maximum: 65536, shared: true });
    this.arena = new Arena(this.memory);
    let mod: WebAssembly.Module | null = opts.module ?? null;
    let fma = opts.module ? !!opts.fmaModule : false;
    if (!mod && opts.fma !== false) {
      // the platform reads and compiles dist/wasm/<name>.wasm (fs in Node, fetched by init() in browsers)
      mod = platform.kernelModule('matmul-relaxed', { relaxed: true }).module;
      fma = mod !== null;
    }
    if (!mod) {
      const k = platform.kernelModule('matmul');
      if (!k.module)
        throw new TypelensError(
          `WASM kernels not built, not fetched or not supported (${k.where}): run \`npm run build:wasm\`` +
            (platform.name === 'browser' ? ', and await init() before using the library' : '') +
            '; this runtime needs WebAssembly SIMD128',
          'ENOKERNEL',
        );
      mod = k.module;
    }
    this.fma = fma;
    this.module = mod;
    if (opts.scratch) this.fixedScratch = opts.scratch;
    this.name = fma ? 'wasm-simd-fma' : 'wasm-simd';
    const inst = new WebAssembly.Instance(mod, { env: { memory: this.memory } });
    // every thread with a WASM backend (worker replicas too) computes softmax and gelu_new with
    // the SIMD kernels, so that all of them give the same numbers
    if (!fastElementwise() && WasmElementwise.supports(mod)) setFastElementwise(new WasmElementwise(mod));
    this.kernel = inst.exports.matmul as MatmulFn;
    this.biasRows = inst.exports.bias_rows as (c: number, ld: number, M: number, N: number, bias: number) => void;
    this.packAKernel = inst.exports.pack_a as ((src: number, dst: number, M: number, K: number) => void) | undefined;
    check(
      typeof inst.exports.pack_b32 === 'function' && typeof inst.exports.pack_b16 === 'function',
      'the matmul module lacks pack_b32/pack_b16 (built from an older matmul.wat.mjs? run npm run build:wasm)',
    );
    this.packBKernel = { f32: inst.exports.pack_b32 as PackBFn, half: inst.exports.pack_b16 as PackBFn };
    this.mr = (inst.exports.mr as () => number)();
    this.nr = (inst.exports.nr as () => number)();
    this.kc = (inst.exports.kc as () => number)();
  }

  /** Capability: the memory and kernel module worker replicas share (see src/model/replica.ts). */
  get sharedMemory(): SharedMemory {
    return {
      memory: this.memory,
      module: this.module,
      fma: this.fma,
      alloc: (bytes) => this.arena.alloc(bytes),
      release: (ptr) => this.arena.release(ptr),
      describe: (w) => {
        check(w instanceof WasmWeight, 'weight was packed for another backend');
        return { ptr: w.ptr, bytes: w.bytes, K: w.K, N: w.N, dtype: w.dtype };
      },
      adopt: (d) => this.adopt(d),
    };
  }

  /**
   * Threads for one matmul: n - 1 helper threads share this memory and take column panels.
   * Results are bit-identical for any n (each output element's arithmetic is unchanged).
   */
  setThreads(n: number): void {
    check(Number.isInteger(n) && n >= 1, `threads must be a positive integer, got ${n}`);
    const can = platform.sharedThreads();
    if (n > 1 && !can.ok) {
      // said once: the kernels run on this thread only
      if (!threadsNoticed) platform.notice(`typelens: one thread (${can.reason})`);
      threadsNoticed = true;
      n = 1;
    }
    this.helpers?.terminate();
    this.helpers =
      n > 1
        ? new MatmulHelpers(this.module, this.memory, n - 1, {
            alloc: () => this.arena.alloc(this.kc * this.nr * 4),
            free: (p) => this.arena.release(p),
          })
        : null;
  }
  get threads(): number {
    return (this.helpers?.count ?? 0) + 1;
  }
  /** Threads that have started and take work now (this one included). */
  get threadsReady(): number {
    return (this.helpers?.ready() ?? 0) + 1;
  }
  /** Matmuls so far that ran split across helper threads (how a page or test sees the threads work). */
  get parallelMatmuls(): number {
    return this.helpers?.runs ?? 0;
  }
  /** Block until the helper threads have started (they otherwise join as they become ready). */
  async whenReady(timeoutMs = 5000): Promise<void> {
    const t0 = Date.now();
    while (this.helpers && this.helpers.ready() < this.helpers.count && Date.now() - t0 < timeoutMs)
      await new Promise((r) => setTimeout(r, 5));
  }

  private f32view(): Float32Array {
    return new Float32Array(this.memory.buffer);
  }

  pack(data: Float32Array | Uint16Array, K: number, N: number, dtype: DType): PackedWeight {
    check(data.length === K * N, `weight of ${data.length} elements is not [${K}, ${N}]`);
    check((dtype === 'f32') === data instanceof Float32Array, `weight storage does not match dtype ${dtype}`);
    const NR = this.nr;
    const npanels = Math.ceil(N / NR);
    const bytes = npanels * K * NR * bytesPerElement(dtype);
    const ptr = this.arena.alloc(bytes);
    // [K, N] row-major -> [N/NR panels][K][NR], zero padded on the right (memory starts zeroed only
    // once: freed blocks are reused), in WASM: a few MiB of rows at a time are staged into the
    // memory and moved with v128 loads/stores (the JS loops this replaced read B with a stride of
    // N per panel and took ~3 s for GPT-2 small's 124M weights).
    if (K * N > 0) this.packStaged(data, K, N, ptr, dtype === 'f32' ? 'f32' : 'half');
    return new WasmWeight(this, ptr, bytes, K, N, dtype);
  }

  /** pack() through the module's pack_b: rows staged in chunks of ~4 MiB (never a whole second copy of B). */
  private packStaged(data: Float32Array | Uint16Array, K: number, N: number, dst: number, kind: 'f32' | 'half'): void {
    const eb = kind === 'f32' ? 4 : 2;
    const rows = Math.max(1, Math.min(K, Math.floor((4 << 20) / (N * eb))));
    const stage = this.arena.alloc(rows * N * eb);
    try {
      for (let k0 = 0; k0 < K; k0 += rows) {
        const n = Math.min(rows, K - k0);
        // a fresh view each chunk: an alloc elsewhere may have grown (replaced) the buffer
        const view =
          kind === 'f32'
            ? new Float32Array(this.memory.buffer, stage, n * N)
            : new Uint16Array(this.memory.buffer, stage, n * N);
        view.set(data.subarray(k0 * N, (k0 + n) * N) as never);
        this.packBKernel[kind](stage, dst, K, N, k0, n);
      }
    } finally {
      this.arena.release(stage);
    }
  }

  /** Wrap an existing packed weight living in this (shared) memory: worker replicas use this. */
  adopt(w: PackedDesc): PackedWeight {
    return new WasmWeight(this, w.ptr, w.bytes, w.K, w.N, w.dtype);
  }

  private scratchFor(bytes: number): number {
    if (this.fixedScratch) {
      check(
        bytes <= this.fixedScratch.bytes,
        `matmul needs ${bytes} bytes of scratch, the fixed region has ${this.fixedScratch.bytes}`,
      );
      return this.fixedScratch.ptr;
    }
    if (this.scratch.bytes < bytes) {
      if (this.scratch.ptr) this.arena.release(this.scratch.ptr);
      const size = Math.max(bytes, this.scratch.bytes * 2);
      this.scratch = { ptr: this.arena.alloc(size), bytes: size };
    }
    return this.scratch.ptr;
  }

  /**
   * x @ w_i + bias_i for each weight: A is packed once for all of them and each bias is added in
   * WASM on the kernel's output before it is copied out (one f32 add per element, as a JS loop).
   */
  linears(a: Float32Array, M: number, ws: PackedWeight[], biases: Float32Array[]): Float32Array[] {
    check(ws.length === biases.length, `linears: ${ws.length} weights, ${biases.length} biases`);
    const w = ws.map((b) => {
      check(b instanceof WasmWeight, 'weight was packed for another backend');
      (b as WasmWeight).assertLive();
      return b as WasmWeight;
    });
    const K = w[0]?.K ?? 0;
    const MR = this.mr,
      NR = this.nr,
      nrb = Math.ceil(M / MR),
      mpad = nrb * MR;
    const aBytes = mpad * K * 4,
      cBytes = Math.max(0, ...w.map((x) => mpad * x.npad * 4 + x.npad * 4)),
      tBytes = this.kc * NR * 4;
    const plain = () =>
      w.map((x, i) => {
        const y = this.matmul(a, M, x);
        addRows(y, biases[i], x.N);
        return y;
      });
    if (M === 0 || K === 0 || w.some((x) => x.K !== K || x.N === 0 || biases[ws.indexOf(x)].length < x.N))
      return plain();
    if (this.fixedScratch && aBytes + cBytes + tBytes > this.fixedScratch.bytes) return plain();
    check(a.length >= M * K, `linears: A has ${a.length} elements, needs ${M}x${K}`);
    const base = this.scratchFor(aBytes + cBytes + tBytes);
    const aPtr = base,
      tPtr = base + aBytes,
      cPtr = tPtr + tBytes;
    this.packA(a, M, K, aPtr);
    return w.map((x, i) => {
      const npad = x.npad,
        biasPtr = cPtr + mpad * npad * 4;
      const mem = this.f32view();
      mem.set(biases[i].subarray(0, x.N), biasPtr >>> 2);
      this.runKernel(x, aPtr, cPtr, tPtr, nrb, M);
      this.biasRows(cPtr, npad, M, x.N, biasPtr);
      return this.copyOut(cPtr, M, x.N, npad, new Float32Array(M * x.N));
    });
  }

  /**
   * A [M, K] -> row blocks [M/MR][K][MR] at aPtr, zero rows past M. Large A (long prompts) is
   * copied into scratch and laid out by the kernel module's pack_a; small A by a JS loop.
   */
  private packA(a: Float32Array, M: number, K: number, aPtr: number): void {
    if (this.packAKernel && M * K >= 1 << 16 && !this.fixedScratch) {
      const raw = this.arena.alloc(M * K * 4);
      try {
        new Float32Array(this.memory.buffer, raw, M * K).set(a.subarray(0, M * K));
        this.packAKernel(raw, aPtr, M, K);
      } finally {
        this.arena.release(raw);
      }
      return;
    }
    const MR = this.mr,
      nrb = Math.ceil(M / MR),
      mem = this.f32view();
    let d = aPtr >>> 2;
    for (let rb = 0; rb < nrb; rb++) {
      const r0 = rb * MR;
      const rows = Math.min(MR, M - r0);
      for (let k = 0; k < K; k++, d += MR) {
        for (let r = 0; r < rows; r++) mem[d + r] = a[(r0 + r) * K + k];
        for (let r = rows; r < MR; r++) mem[d + r] = 0;
      }
    }
  }

  /** C (padded rows of npad) = packed A @ w, split over the helper threads when it pays. */
  private runKernel(w: WasmWeight, aPtr: number, cPtr: number, tPtr: number, nrb: number, M: number): void {
    const { K, N, npad } = w;
    const kind = w.dtype === 'f32' ? 0 : w.dtype === 'bf16' ? 1 : 2;
    const np = npad / this.nr;
    if (this.helpers && np >= 2 && M * K * N >= this.parallelMinMacs && this.helpers.ready() > 0) {
      this.helpers.run({ a: aPtr, b: w.ptr, c: cPtr, nrb, K, npad, kind }, np, (p0, p1) =>
        this.kernel(aPtr, w.ptr, cPtr, nrb, K, p0, p1, npad, kind, tPtr),
      );
    } else this.kernel(aPtr, w.ptr, cPtr, nrb, K, 0, np, npad, kind, tPtr);
  }

  private copyOut(cPtr: number, M: number, N: number, npad: number, c: Float32Array): Float32Array {
    const mem = this.f32view(),
      c0 = cPtr >>> 2;
    if (npad === N) c.set(mem.subarray(c0, c0 + M * N));
    else for (let i = 0; i < M; i++) c.set(mem.subarray(c0 + i * npad, c0 + i * npad + N), i * N);
    return c;
  }

  matmul(a: Float32Array, M: number, b: PackedWeight, out?: Float32Array): Float32Array {
    check(b instanceof WasmWeight, 'weight was packed for another backend');
    const w = b as WasmWeight;
    w.assertLive();
    const { K, N } = w;
    check(a.length >= M * K, `matmul: A has ${a.length} elements, needs ${M}x${K}`);
    const c = out ?? new Float32Array(M * N);
    if (M === 0 || N === 0) return c;
    if (K === 0) {
      c.fill(0, 0, M * N);
      return c;
    }
    const MR = this.mr;
    const nrb = Math.ceil(M / MR),
      mpad = nrb * MR,
      npad = w.npad;
    const NR = this.nr;
    const aBytes = mpad * K * 4,
      cBytes = mpad * npad * 4,
      tBytes = this.kc * NR * 4;
    if (this.fixedScratch && aBytes + cBytes + tBytes > this.fixedScratch.bytes) {
      // a fixed scratch region: run the rows in chunks that fit (rows are independent)
      const rows = Math.floor((this.fixedScratch.bytes - tBytes) / ((K + npad) * 4) / MR) * MR;
      check(rows >= MR, `scratch region too small for a ${K}x${N} matmul`);
      for (let r = 0; r < M; r += rows) {
        const m = Math.min(rows, M - r);
        this.matmul(a.subarray(r * K, (r + m) * K), m, b, c.subarray(r * N, (r + m) * N));
      }
      return c;
    }
    const base = this.scratchFor(aBytes + cBytes + tBytes);
    const aPtr = base,
      cPtr = base + aBytes,
      tPtr = cPtr + cBytes;
    this.packA(a, M, K, aPtr);
    this.runKernel(w, aPtr, cPtr, tPtr, nrb, M);
    this.copyOut(cPtr, M, N, npad, c);
    return c;
  }
}

type PackBFn = (src: number, dst: number, K: number, N: number, k0: number, rows: number) => void;

/** y[i, j] += bias[j] over rows of n (the JS twin of the kernel's bias_rows, for the fallback path). */
function addRows(y: Float32Array, bias: Float32Array, n: number): void {
  for (let o = 0; o < y.length; o += n) for (let j = 0; j < n; j++) y[o + j] += bias[j];
}

/** End one intra-op helper thread abruptly, as a crash would (fault injection: src/testing.ts). */
export async function killIntraOpHelper(be: Backend): Promise<void> {
  if (be instanceof WasmBackend) await be['helpers']?.killOne();
}
