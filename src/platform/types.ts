// What typelens needs from the runtime it runs in: environment, kernel binaries, threads, the few
// files of its own package. src/platform/node.ts and src/platform/browser.ts implement it; the
// rest of src/ reaches the runtime only through `platform` (./index.ts), never through built-ins.

/** A thread the platform started (a Node worker_thread or a Web Worker). */
export interface PlatformThread {
  /** End it now, whatever it is doing. */
  terminate(): Promise<void>;
}

/** A result of a pool task and the buffers to move (not copy) back with it. */
export interface TaskReply {
  value: unknown;
  transfer: ArrayBuffer[];
}

/** Threads that each run one task at a time from a queue (piscina in Node, Web Workers in browsers). */
export interface TaskPool {
  run(task: unknown): Promise<unknown>;
  /** Ids of the live threads (the ids the worker side's `serveTasks` init was given). */
  threadIds(): number[];
  /** Called after a thread is gone (it failed, or was ended). */
  onThreadExit(cb: () => void): void;
  /** End one thread abruptly, as a crash would (fault injection: src/testing.ts). */
  killOne(): void;
  destroy(): Promise<void>;
}

export interface TaskPoolOptions {
  /** The worker module: its top level calls `platform.serveTasks`. */
  url: URL;
  threads: number;
  /** Handed to every thread's init (structured clone; shared memory is shared). */
  data: unknown;
  idleTimeoutMs?: number;
}

export interface Platform {
  readonly name: 'node' | 'browser';
  /** An environment setting (TYPELENS_*), or undefined. */
  env(name: string): string | undefined;
  /** Logical cores this runtime offers. */
  cores(): number;
  /** Whether threads sharing one WebAssembly.Memory can start here, and if not, why. */
  sharedThreads(): { ok: boolean; reason: string };
  /** Whether this thread may block in Atomics.wait (a browser's main thread may not). */
  canBlock(): boolean;
  /**
   * Whatever must be fetched before the synchronous API works (browsers: the kernel binaries).
   * `assets` is the folder holding the .wasm files (default: next to the library's code).
   */
  prepare(opts?: { assets?: string | URL }): Promise<void>;
  /** Whether kernelModule() can answer now (Node: always; browsers: once prepare() has finished). */
  kernelsReady(): boolean;
  /**
   * The compiled kernel `dist/wasm/<name>.wasm`: null when it is absent or this runtime cannot
   * compile it; `where` names the file either way (for messages). `relaxed` enables relaxed SIMD first.
   */
  kernelModule(name: string, opts?: { relaxed?: boolean }): { module: WebAssembly.Module | null; where: string };
  /** Start a thread running module `url`; its top level calls `threadMain`. */
  startThread(url: URL, data: unknown, onError: (e: unknown) => void): PlatformThread;
  /** In a thread started by startThread: call `fn` with the data it was started with. */
  threadMain(fn: (data: unknown) => void): void;
  createTaskPool(opts: TaskPoolOptions): TaskPool;
  /**
   * In a pool thread: `init` runs once with the pool's data and this thread's id, then every task
   * goes to `handle`. Returns what the module must `export default` (piscina calls it in Node).
   */
  serveTasks<T>(init: (data: unknown, threadId: number) => void, handle: (task: T) => TaskReply): (task: T) => unknown;
  /** End this pool thread abruptly, as a crash would (fault injection). */
  exitThread(): never;
  /** The CUDA addon, or null with the reason (browsers have none). */
  nativeAddon(path: string | undefined): { addon: unknown; reason: string; where: string };
  /** A one-line notice for the user (stderr in Node, the console in browsers). */
  notice(msg: string): void;
  /** typelens's version from its package.json, or undefined. */
  packageVersion(): string | undefined;
  /** plotly.js's source, to inline in reports; null where it cannot be read synchronously. */
  plotlySource(): string | null;
}
