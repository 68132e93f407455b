// The browser implementation of the platform (./types.ts): kernel binaries fetched once by
// prepare() and compiled asynchronously (a page's main thread may not compile large modules
// synchronously), Web Workers for threads sharing the one WebAssembly.Memory when the page is
// cross-origin isolated, one thread otherwise. The browser build puts this file where ./node.ts is.
import { BrowserTaskPool, EXIT } from './browser-pool.js';
import type { Platform, TaskReply } from './types.js';

// Set by the browser build (esbuild `define`) from package.json.
declare const __TYPELENS_VERSION__: string | undefined;

// Literal `new URL('./x.wasm', import.meta.url)`: bundlers (vite, webpack, parcel) see these and
// copy the files. In dist/browser/ the library's chunks and wasm/ sit side by side.
const KERNELS: Record<string, URL> = {
  matmul: new URL('./wasm/matmul.wasm', import.meta.url),
  'matmul-relaxed': new URL('./wasm/matmul-relaxed.wasm', import.meta.url),
  outer: new URL('./wasm/outer.wasm', import.meta.url),
  linalg64: new URL('./wasm/linalg64.wasm', import.meta.url),
};
/** The kernel files the browser build must ship (scripts/build-browser.mjs checks dist/wasm/ against it). */
export const KERNEL_NAMES = Object.keys(KERNELS);

const modules = new Map<string, { module: WebAssembly.Module | null; where: string }>();
let prepared: Promise<void> | null = null;
let ready = false;

async function fetchKernel(name: string, url: URL): Promise<void> {
  let module: WebAssembly.Module | null = null;
  try {
    const res = await fetch(url);
    if (res.ok) module = await WebAssembly.compile(await res.arrayBuffer());
  } catch {
    /* absent, or this browser cannot compile it (relaxed SIMD): the caller falls back */
  }
  modules.set(name, { module, where: url.href });
}

// a Web Worker may block in Atomics.wait; a page's main thread may not
const isWorker = (): boolean => {
  const WGS = (globalThis as { WorkerGlobalScope?: abstract new () => unknown }).WorkerGlobalScope;
  return WGS !== undefined && globalThis instanceof WGS;
};

type Scope = {
  postMessage(m: unknown, t?: Transferable[]): void;
  addEventListener(k: 'message', f: (e: MessageEvent) => void, o?: { once: boolean }): void;
};
const scope = (): Scope => globalThis as unknown as Scope;

export const platform: Platform = {
  name: 'browser',
  // a page may set globalThis.TYPELENS_ENV = { TYPELENS_THREADS: '2', ... } before loading typelens
  env: (name) => (globalThis as { TYPELENS_ENV?: Record<string, string> }).TYPELENS_ENV?.[name],
  cores: () => (typeof navigator !== 'undefined' && navigator.hardwareConcurrency) || 1,
  sharedThreads() {
    if (typeof Worker === 'undefined') return { ok: false, reason: 'this context cannot start Web Workers' };
    if (!(globalThis as { crossOriginIsolated?: boolean }).crossOriginIsolated)
      return {
        ok: false,
        reason:
          "the page is not cross-origin isolated, so workers cannot share the kernels' memory (serve it with " +
          'Cross-Origin-Opener-Policy: same-origin and Cross-Origin-Embedder-Policy: require-corp)',
      };
    return { ok: true, reason: 'Web Workers sharing one WebAssembly.Memory' };
  },
  canBlock: isWorker,
  prepare(opts = {}) {
    // once per page (a second call with other assets is ignored: the modules are already compiled)
    prepared ??= Promise.all(
      Object.entries(KERNELS).map(([name, url]) =>
        fetchKernel(name, opts.assets ? new URL(`${name}.wasm`, new URL(String(opts.assets), location.href)) : url),
      ),
    ).then(() => {
      ready = true;
    });
    return prepared;
  },
  // pool workers get their kernel module from the page (sharedBackend), never fetch: for them
  // getBackend() keeps its old meaning (WASM if it loads, else plain JS)
  kernelsReady: () => ready || isWorker(),
  kernelModule(name) {
    return (
      modules.get(name) ?? {
        module: null,
        where: `${KERNELS[name]?.href ?? `wasm/${name}.wasm`} (not fetched yet: await init() from typelens's browser entry first)`,
      }
    );
  },
  startThread(url, data, onError) {
    const w = new Worker(url, { type: 'module' });
    w.addEventListener('error', (e) => {
      e.preventDefault();
      onError(e);
    });
    w.postMessage(data);
    return { terminate: async () => w.terminate() };
  },
  threadMain: (fn) => scope().addEventListener('message', (e) => fn(e.data), { once: true }),
  createTaskPool: (opts) => new BrowserTaskPool(opts),
  serveTasks<T>(init: (data: unknown, id: number) => void, handle: (task: T) => TaskReply) {
    let started = false;
    scope().addEventListener('message', (e: MessageEvent) => {
      const m = e.data as { data?: unknown; id?: number; task?: T };
      if (!started) {
        started = true;
        init(m.data, m.id!); // a throw here is an uncaught error: the pool sees the thread fail
        scope().postMessage({ started: true });
        return;
      }
      let r: TaskReply;
      try {
        r = handle(m.task as T);
      } catch (err) {
        if (err === EXIT) return;
        scope().postMessage({ ok: false, error: (err as Error)?.message ?? String(err) });
        return;
      }
      scope().postMessage({ ok: true, value: r.value }, r.transfer);
    });
    return (task: T) => handle(task).value;
  },
  exitThread(): never {
    // an uncaught error ends the task's thread for the pool (a Worker cannot exit with a code)
    setTimeout(() => {
      throw new Error('typelens: pool thread ended');
    });
    throw EXIT;
  },
  nativeAddon: () => ({ addon: null, reason: 'no native addons in a browser', where: '-' }),
  notice: (msg) => console.info(msg),
  packageVersion: () => (typeof __TYPELENS_VERSION__ === 'string' ? __TYPELENS_VERSION__ : undefined),
  plotlySource: () => null,
};
