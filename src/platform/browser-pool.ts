// A task pool over Web Workers (piscina's role in Node): each worker runs one task at a time
// from a shared queue; a worker that fails is replaced and its task rejected.
import type { TaskPool, TaskPoolOptions } from './types.js';

/** Thrown by exitThread() inside a task: the worker sends no reply (it is about to fail). */
export const EXIT = Symbol('typelens.exitThread');

interface Job {
  task: unknown;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
}
interface Slot {
  worker: Worker;
  id: number;
  started: boolean;
  job: Job | null;
}

export class BrowserTaskPool implements TaskPool {
  private slots: Slot[] = [];
  private queue: Job[] = [];
  private exitListeners: (() => void)[] = [];
  private nextId = 1;
  private closed = false;
  /** Replacements left: a worker whose start always fails must not respawn forever. */
  private restarts: number;

  constructor(private readonly opts: TaskPoolOptions) {
    this.restarts = opts.threads + 4;
    for (let i = 0; i < opts.threads; i++) this.spawn();
  }

  private spawn(): void {
    const worker = new Worker(this.opts.url, { type: 'module' });
    const slot: Slot = { worker, id: this.nextId++, started: false, job: null };
    worker.addEventListener('message', (e: MessageEvent) => {
      const m = e.data as { started?: boolean; ok?: boolean; value?: unknown; error?: string };
      if (m.started) {
        slot.started = true;
      } else {
        const job = slot.job;
        slot.job = null;
        if (m.ok) job?.resolve(m.value);
        else job?.reject(new Error(m.error ?? 'worker task failed'));
      }
      this.dispatch();
    });
    worker.addEventListener('error', (e: ErrorEvent) => {
      e.preventDefault(); // handled here: not an uncaught error of the page
      this.lose(slot, new Error(e.message || 'worker failed'));
    });
    worker.postMessage({ data: this.opts.data, id: slot.id });
    this.slots.push(slot);
  }

  /** A worker is gone: reject its task, replace it, tell the listeners. */
  private lose(slot: Slot, err: Error): void {
    if (!this.slots.includes(slot)) return;
    slot.worker.terminate();
    this.slots = this.slots.filter((s) => s !== slot);
    slot.job?.reject(err);
    if (!this.closed && this.restarts-- > 0) this.spawn();
    for (const cb of this.exitListeners) cb();
    if (this.slots.length === 0) for (const j of this.queue.splice(0)) j.reject(new Error('no worker could start'));
    this.dispatch();
  }

  private dispatch(): void {
    for (const s of this.slots) {
      if (!this.queue.length) return;
      if (!s.started || s.job) continue;
      s.job = this.queue.shift()!;
      s.worker.postMessage({ task: s.job.task });
    }
  }

  run(task: unknown): Promise<unknown> {
    if (this.closed) return Promise.reject(new Error('the pool was destroyed'));
    return new Promise((resolve, reject) => {
      this.queue.push({ task, resolve, reject });
      this.dispatch();
    });
  }

  threadIds(): number[] {
    return this.slots.map((s) => s.id);
  }

  onThreadExit(cb: () => void): void {
    this.exitListeners.push(cb);
  }

  killOne(): void {
    const s = this.slots[0];
    if (s) this.lose(s, new Error('worker terminated'));
  }

  async destroy(): Promise<void> {
    this.closed = true;
    for (const s of this.slots.splice(0)) {
      s.worker.terminate();
      s.job?.reject(new Error('the pool was destroyed'));
    }
    for (const j of this.queue.splice(0)) j.reject(new Error('the pool was destroyed'));
  }
}
