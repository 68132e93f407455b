// The Node implementation of the platform (./types.ts): fs for the kernel binaries and package
// files, worker_threads and piscina for threads, v8 flags for the compiler tier. The browser build
// replaces this file with ./browser.ts (package.json "browser" field).
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { threadId, Worker, workerData } from 'node:worker_threads';
import { Piscina } from 'piscina';
import type { Platform, PlatformThread, TaskPool, TaskPoolOptions, TaskReply } from './types.js';

/** dist/src/platform/ is three folders below the package root, src/platform/ two. */
const fromRoot = (rel: string): string[] =>
  ['../../../', '../../'].map((up) => fileURLToPath(new URL(up + rel, import.meta.url)));

/** Compile with the optimizing compiler straight away: the baseline tier is ~5x slower and
 * the kernels are tiny, so there is nothing to gain from lazy tier-up. */
function compile(bytes: Uint8Array<ArrayBuffer>): WebAssembly.Module | null {
  if (!WebAssembly.validate(bytes)) return null;
  setFlagsFromString('--no-liftoff');
  try {
    return new WebAssembly.Module(bytes);
  } finally {
    setFlagsFromString('--liftoff');
  }
}

class PiscinaPool implements TaskPool {
  private readonly piscina: Piscina;
  constructor(opts: TaskPoolOptions) {
    this.piscina = new Piscina({
      filename: opts.url.href,
      minThreads: opts.threads,
      maxThreads: opts.threads,
      idleTimeout: opts.idleTimeoutMs ?? 60_000,
      workerData: opts.data,
    });
  }
  run(task: unknown): Promise<unknown> {
    return this.piscina.run(task);
  }
  // an exited worker is no longer among the live threads, or reads threadId -1
  threadIds(): number[] {
    return this.piscina.threads.map((w) => w.threadId).filter((id) => id > 0);
  }
  onThreadExit(cb: () => void): void {
    this.piscina.on('workerDestroy', cb);
  }
  killOne(): void {
    void this.piscina.threads[0]?.terminate();
  }
  async destroy(): Promise<void> {
    await this.piscina.destroy();
  }
}

export const platform: Platform = {
  name: 'node',
  env: (name) => process.env[name],
  cores: () => availableParallelism(),
  sharedThreads: () => ({ ok: true, reason: 'worker_threads' }),
  canBlock: () => true,
  prepare: async () => {},
  kernelsReady: () => true,
  kernelModule(name, opts = {}) {
    const where = fileURLToPath(new URL(`../../wasm/${name}.wasm`, import.meta.url));
    if (opts.relaxed) {
      // Relaxed SIMD (a real FMA) is off by default on Node 20; this flag turns it on.
      try {
        setFlagsFromString('--experimental-wasm-relaxed-simd');
      } catch {
        /* not fatal */
      }
    }
    if (!existsSync(where)) return { module: null, where };
    try {
      return { module: compile(readFileSync(where)), where };
    } catch {
      return { module: null, where };
    }
  },
  startThread(url, data, onError): PlatformThread {
    const worker = new Worker(url, { workerData: data });
    worker.unref(); // never keeps the process alive
    worker.on('error', onError);
    return { terminate: async () => void (await worker.terminate()) };
  },
  threadMain: (fn) => fn(workerData),
  createTaskPool: (opts) => new PiscinaPool(opts),
  serveTasks<T>(init: (data: unknown, id: number) => void, handle: (task: T) => TaskReply) {
    init(workerData, threadId);
    // piscina moves (not copies) the listed buffers back to the caller
    return (task: T) => {
      const r = handle(task);
      return Piscina.move({ [Piscina.transferableSymbol]: r.transfer, [Piscina.valueSymbol]: r.value } as never);
    };
  },
  exitThread: () => process.exit(1),
  nativeAddon(path) {
    const where = path ?? fromRoot('native/build/Release/typelens_cuda.node')[0];
    if (!existsSync(where))
      return { addon: null, reason: `CUDA addon not built (${where} is missing; run npm run build:cuda)`, where };
    try {
      return { addon: createRequire(import.meta.url)(where), reason: 'loaded', where };
    } catch (e) {
      return { addon: null, reason: `CUDA addon failed to load: ${(e as Error).message.split('\n')[0]}`, where };
    }
  },
  notice: (msg) => void process.stderr.write(`${msg}\n`),
  packageVersion() {
    for (const p of fromRoot('package.json')) {
      try {
        const pkg = JSON.parse(readFileSync(p, 'utf8')) as { name?: string; version?: string };
        if (pkg.name === 'typelens' && typeof pkg.version === 'string') return pkg.version;
      } catch {
        /* not there */
      }
    }
    return undefined;
  },
  plotlySource() {
    const require = createRequire(import.meta.url);
    return readFileSync(require.resolve('plotly.js-dist-min'), 'utf8');
  },
};
