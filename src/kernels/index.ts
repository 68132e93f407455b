import { TypelensError } from '../errors.js';
import { runtimeConfig } from '../platform/env.js';
import { platform } from '../platform/index.js';
import { setDefaultMatmulKernel } from '../tensor/linalg.js';
import type { Backend } from './backend.js';
import { jsBackend } from './js/index.js';
import { WasmBackend } from './wasm/index.js';
import { CudaBackend, cudaStatus } from './cuda/index.js';

export type { Backend, PackedWeight, PackedDesc, SharedMemory, DeviceParams } from './backend.js';
export type { LayerOps, LnParams, AttnOptions } from './layer-ops.js';
export { jsBackend } from './js/index.js';
export { WasmBackend } from './wasm/index.js';

export { CudaBackend, cudaStatus } from './cuda/index.js';

export type BackendName = 'auto' | 'wasm' | 'js' | 'cuda';

let cudaDefault: CudaBackend | null | undefined;
/** The process's CUDA backend, or null (with cudaStatus().reason saying why). */
export function cudaBackend(): CudaBackend | null {
  if (cudaDefault === undefined) cudaDefault = cudaStatus().addon ? new CudaBackend() : null;
  return cudaDefault;
}

let wasmDefault: WasmBackend | null | undefined;

/** TYPELENS_THREADS, else the machine's available parallelism. */
export function defaultThreads(): number {
  return runtimeConfig().threads;
}

/** The WASM backend shared by the whole process (one Memory), or null when unavailable. */
export function wasmBackend(): WasmBackend | null {
  if (wasmDefault === undefined) {
    // FMA (relaxed SIMD) is opt-in: on the 2-core EPYC we measure, V8 11.3's relaxed_madd
    // kernel is slower than the plain mul+add one (bench/results/matmul.json has both).
    try {
      wasmDefault = new WasmBackend({ fma: runtimeConfig().fma });
    } catch {
      wasmDefault = null;
    }
    // intra-op threads: TYPELENS_THREADS, else every core
    if (wasmDefault) wasmDefault.setThreads(defaultThreads());
  }
  return wasmDefault;
}

/**
 * A CPU matmul that runs on the calling thread only, for work split across threads of its own
 * (the load-time refactor's products): a fresh single-threaded WASM instance, else plain JS, which
 * round alike (each product rounded, then added in k order), so the bits depend neither on the
 * device nor on the thread. The process's backend would hand its panels to matmul helper threads
 * that compete with the caller's own helpers for the same cores.
 */
export function threadMatmulKernel(): Backend {
  try {
    return new WasmBackend({ fma: runtimeConfig().fma });
  } catch {
    return jsBackend;
  }
}

let announced = false;

/**
 * Pick a backend: `auto` = CUDA when the addon is built and a device is present (said once on
 * stderr), else WASM SIMD when it loads, else plain JS. TYPELENS_BACKEND overrides auto.
 */
export function getBackend(name: BackendName = 'auto'): Backend {
  const want = name === 'auto' ? ((runtimeConfig().backend as BackendName | undefined) ?? 'auto') : name;
  if (want === 'js') return jsBackend;
  // a browser fetches the kernels asynchronously: silently running on plain JS until then would
  // give other numbers, slowly
  if (!platform.kernelsReady())
    throw new TypelensError(
      "typelens: the WASM kernels are not loaded yet: await init() (typelens's browser entry) first",
      'ENOKERNEL',
    );
  if (want === 'cuda') {
    const c = cudaBackend();
    if (!c) throw new TypelensError(`CUDA backend unavailable: ${cudaStatus().reason}`, 'ENOKERNEL');
    return c;
  }
  if (want === 'auto') {
    const c = cudaBackend();
    if (c) {
      if (!announced) {
        announced = true;
        platform.notice(`typelens: backend auto chose cuda (${cudaStatus().reason})`);
      }
      return c;
    }
  }
  const w = wasmBackend();
  if (w) return w;
  if (want === 'wasm')
    throw new TypelensError('WASM backend unavailable (kernels not built or no SIMD support)', 'ENOKERNEL');
  return jsBackend;
}

/**
 * A backend over memory shared with the main thread (a worker's replica of a model): the kernel
 * module and memory come from the main thread's `sharedMemory`, and this thread's matmuls use the
 * fixed `scratch` region (the memory's allocator belongs to the main thread).
 */
export function sharedBackend(
  shared: { memory: WebAssembly.Memory; module: WebAssembly.Module; fma: boolean },
  scratch: { ptr: number; bytes: number },
): Backend {
  return new WasmBackend({ memory: shared.memory, module: shared.module, fmaModule: shared.fma, scratch });
}

// tensor/'s matmul dispatches to the process's backend without importing it
setDefaultMatmulKernel(() => getBackend());
