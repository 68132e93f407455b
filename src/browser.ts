/**
 * typelens's browser entry (dist/browser/index.js, the `browser` condition of the package's
 * exports): the whole public API of src/index.ts, plus `init`, which fetches and compiles the
 * WASM kernels and starts the kernel threads. Await it once before anything else:
 *
 *   import { init, HookedTransformer, parseSafetensors } from 'typelens';
 *   const rt = await init();   // { backend: 'wasm-simd', threads: 4, isolated: true, ... }
 *
 * Threads share one WebAssembly.Memory only in a cross-origin isolated page (COOP/COEP headers);
 * elsewhere everything runs on the page's thread (said once in the console).
 */
import { TypelensError } from './errors.js';
import { getBackend, wasmBackend } from './kernels/index.js';
import { platform } from './platform/index.js';

export * from './index.js';

export interface InitOptions {
  /** The folder holding the .wasm files (default: dist/browser/wasm/, next to this file). */
  assets?: string | URL;
  /** Kernel threads, this one included (default: TYPELENS_THREADS, else navigator.hardwareConcurrency). */
  threads?: number;
}

/** What the library runs on in this page. */
export interface RuntimeInfo {
  /** The kernels' name, e.g. 'wasm-simd'. */
  backend: string;
  /** Kernel threads that have started and take work (this one included). */
  threads: number;
  /** Whether the page is cross-origin isolated (threads need it), and what that means here. */
  isolated: boolean;
  reason: string;
  /** Matmuls so far that ran split across threads. */
  parallelMatmuls: number;
}

/** Fetch and compile the kernels, start the kernel threads and wait until they are up. */
export async function init(opts: InitOptions = {}): Promise<RuntimeInfo> {
  await platform.prepare({ assets: opts.assets });
  const be = wasmBackend();
  if (!be) {
    const k = platform.kernelModule('matmul');
    throw new TypelensError(
      `typelens: the WASM kernels could not be loaded from ${k.where} (missing, or this browser lacks WebAssembly SIMD128)`,
      'ENOKERNEL',
    );
  }
  if (opts.threads !== undefined) be.setThreads(opts.threads);
  await be.whenReady();
  return runtimeInfo();
}

/** The backend in use and how many threads it runs on (after init()). */
export function runtimeInfo(): RuntimeInfo {
  const can = platform.sharedThreads();
  const be = getBackend();
  // backends with helper threads say how many run (the WASM one); others run on this thread
  const t = be as Partial<{ threadsReady: number; parallelMatmuls: number }>;
  return {
    backend: be.name,
    threads: t.threadsReady ?? 1,
    isolated: can.ok,
    reason: can.reason,
    parallelMatmuls: t.parallelMatmuls ?? 0,
  };
}
