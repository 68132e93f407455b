import { currentTape } from '../autograd/tape.js';
import { TypelensError } from '../errors.js';
import { defaultThreads, SharedMemory } from '../kernels/index.js';
import { ActivationCache } from '../hooks/cache.js';
import { platform, type TaskPool } from '../platform/index.js';
import type { HookedTransformer } from '../model/hooked-transformer.js';
import { sharedDescriptor } from '../model/replica.js';
import { cat, Tensor } from '../tensor/index.js';
import { evenCut } from '../util/split.js';
import { fromArr, toArr, type ForwardResult, type ForwardTask } from './protocol.js';

/**
 * Worker threads (the platform's pool: piscina in Node, Web Workers in browsers) that each run whole forward passes of one model, reading its weights
 * in place from the shared WebAssembly.Memory: nothing is copied per worker but a few small bias
 * vectors. For many independent forwards (patching sweeps, batches split across workers).
 */
export class ForwardPool {
  private tasks: TaskPool;
  private scratch: number[];
  private closed = false;
  private slots: Int32Array;
  /** The model's weightsVersion the workers were built from. */
  private readonly weightsVersion: number;

  private constructor(
    readonly model: HookedTransformer,
    readonly threads: number,
    scratchBytes: number,
    private readonly shared: SharedMemory,
  ) {
    this.weightsVersion = model.weightsVersion;
    const nslots = threads + 4; // spare regions for workers that replace dead ones
    this.scratch = Array.from({ length: nslots }, () => shared.alloc(scratchBytes));
    const slots = new SharedArrayBuffer(4 * nslots);
    this.slots = new Int32Array(slots);
    this.tasks = platform.createTaskPool({
      url: new URL('./worker.js', import.meta.url),
      threads,
      idleTimeoutMs: 60_000,
      data: { model: sharedDescriptor(model), slots, scratch: { ptrs: this.scratch, bytes: scratchBytes } },
    });
    // a worker that is gone gives its scratch region back (slots hold the owner's thread id)
    this.tasks.onThreadExit(() => this.reclaim());
    model.onDispose.push(() => {
      void this.destroy();
    });
  }

  /** A pool of `threads` workers (default: every core) for this model; it closes with model.dispose(). */
  static async create(
    model: HookedTransformer,
    opts: { threads?: number; scratchBytes?: number } = {},
  ): Promise<ForwardPool> {
    const threads = opts.threads ?? defaultThreads();
    if (!Number.isInteger(threads) || threads < 1)
      throw new TypelensError(`threads must be a positive integer, got ${threads}`, 'EINPUT');
    sharedDescriptor(model); // throws a clear error for backends without shared memory
    const can = platform.sharedThreads();
    if (!can.ok)
      throw new TypelensError(
        `worker pools need threads sharing memory, and ${can.reason}: run on this thread`,
        'EWORKER',
      );
    const pool = new ForwardPool(model, threads, opts.scratchBytes ?? 32 * 2 ** 20, model.backend.sharedMemory!);
    // wait until every worker is up so that timings and failures are about work, not startup
    await Promise.all(
      Array.from({ length: threads }, () =>
        pool.tasks.run({
          kind: 'forward',
          tokens: { data: Float32Array.of(0), shape: [1, 1] },
          lastPositionLogits: true,
        } as ForwardTask),
      ),
    );
    return pool;
  }

  private reclaim(): void {
    const live = new Set(this.tasks.threadIds());
    for (let i = 0; i < this.slots.length; i++) {
      const owner = Atomics.load(this.slots, i);
      if (owner !== 0 && !live.has(owner)) Atomics.compareExchange(this.slots, i, owner, 0);
    }
  }

  /** One forward pass in a worker. Errors (a throwing or dying worker) come back as TypelensError. */
  async run(task: Omit<ForwardTask, 'kind'> & { kind?: ForwardTask['kind'] }): Promise<ForwardResult> {
    if (this.closed) throw new TypelensError('this worker pool was closed (model disposed?)', 'EDISPOSED');
    this.model.checkWeights();
    if (this.model.weightsVersion !== this.weightsVersion)
      throw new TypelensError(
        "the model's weights were changed (setWeight / loadStateDict / training) after this worker pool was made: its workers hold the old ones; destroy it and create a new pool",
        'ESTALE',
      );
    // a worker's forward cannot record on this thread's gradient tape
    if (currentTape())
      throw new TypelensError(
        'worker pools do not record gradients: inside withGrad, run the model on this thread (model.forward / runWithHooks)',
        'EGRAD',
      );
    // hooks are closures on this thread: a worker's forward cannot run them, and silently leaving
    // them out would give other numbers than model.forward
    if (this.model.hasHooks())
      throw new TypelensError(
        'the model has hooks attached (closures on the main thread), which worker forwards cannot run: remove them (resetHooks) or run on the main thread',
        'EHOOK',
      );
    this.reclaim();
    try {
      return (await this.tasks.run({ kind: 'forward', ...task } as ForwardTask)) as ForwardResult;
    } catch (e) {
      if (this.closed) throw new TypelensError('the worker pool was closed during the run', 'EDISPOSED');
      throw new TypelensError(`worker failed: ${(e as Error).message.split('\n')[0]}`, 'EWORKER');
    }
  }

  /** Logits (and, with `cache`, an ActivationCache) for tokens [B, P], one forward per worker on a slice of the batch. */
  async runBatch(
    tokens: Tensor,
    opts: { cache?: string[] | 'all'; lastPositionLogits?: boolean; attentionMask?: Tensor } = {},
  ): Promise<{ logits: Tensor; cache?: ActivationCache }> {
    const t = tokens.ndim === 1 ? tokens.unsqueeze(0) : tokens;
    const B = t.shape[0],
      parts = Math.min(this.threads, B);
    const cut = evenCut(B, parts);
    const results = await Promise.all(
      Array.from({ length: parts }, (_, i) =>
        this.run({
          tokens: toArr(t.slice(0, cut(i), cut(i + 1))),
          cache: opts.cache ?? null,
          lastPositionLogits: opts.lastPositionLogits,
          attentionMask: opts.attentionMask ? toArr(opts.attentionMask.slice(0, cut(i), cut(i + 1))) : undefined,
        }),
      ),
    );
    const logits =
      results.length === 1
        ? fromArr(results[0].logits)
        : cat(
            results.map((r) => fromArr(r.logits)),
            0,
          );
    if (!opts.cache) return { logits };
    const store = new Map<string, Tensor>();
    for (const k of Object.keys(results[0].cache!)) {
      const parts2 = results.map((r) => fromArr(r.cache![k]));
      store.set(k, parts2.length === 1 ? parts2[0] : cat(parts2, 0));
    }
    return { logits, cache: new ActivationCache(store, this.model, true) };
  }

  /** Scratch regions held by live workers (for tests: a dead worker's region is freed). */
  get slotsInUse(): number {
    return this.slots.filter((v) => v !== 0).length;
  }

  async destroy(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.tasks.destroy();
    for (const p of this.scratch) this.shared.release(p);
  }
}
