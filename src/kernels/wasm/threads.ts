import { platform, type PlatformThread } from '../../platform/index.js';
import { evenCut } from '../../util/split.js';
import { CTRL, CtrlState } from './control.js';

/**
 * Helper threads that take a share of each large matmul's column panels. They are started once,
 * share the kernels' memory, and are driven with Atomics: the caller packs A, hands each helper a
 * panel range, computes its own range and waits. Splitting panels leaves each output element's
 * arithmetic unchanged, so results are bit-identical to one thread. The threads are the platform's
 * (worker_threads in Node, Web Workers in a cross-origin isolated page).
 */
export class MatmulHelpers {
  private helpers: { worker: PlatformThread; ctrl: Int32Array; tmp: number }[] = [];
  /** Matmuls that ran with at least one helper. */
  runs = 0;
  /** A browser page's main thread may not Atomics.wait: it spins until the helpers finish. */
  private readonly canBlock = platform.canBlock();

  /** `tmp` hands out and takes back each helper's widening buffer in the shared memory. */
  constructor(
    module: WebAssembly.Module,
    memory: WebAssembly.Memory,
    count: number,
    private tmp: { alloc: () => number; free: (ptr: number) => void },
  ) {
    for (let i = 0; i < count; i++) {
      const sab = new SharedArrayBuffer(CTRL.size * 4);
      // a dead helper is simply not ready: its share runs on the caller
      const worker = platform.startThread(
        new URL('./matmul-helper.js', import.meta.url),
        { module, memory, ctrl: sab },
        () => {},
      );
      this.helpers.push({ worker, ctrl: new Int32Array(sab), tmp: tmp.alloc() });
    }
  }

  /** Helpers that have started (a helper still booting is skipped, never waited for). */
  ready(): number {
    return this.helpers.filter((h) => Atomics.load(h.ctrl, CTRL.ready) === 1).length;
  }

  /**
   * Run kernel panels [0, np) split between the caller (`own`) and the ready helpers; a helper
   * that fails or dies has its range redone by the caller.
   */
  run(
    job: { a: number; b: number; c: number; nrb: number; K: number; npad: number; kind: number },
    np: number,
    own: (p0: number, p1: number) => void,
  ): void {
    const ready = this.helpers.filter(
      (h) => Atomics.load(h.ctrl, CTRL.ready) === 1 && Atomics.load(h.ctrl, CTRL.state) === CtrlState.idle,
    );
    const parts = ready.length + 1;
    if (ready.length) this.runs++;
    const cut = evenCut(np, parts);
    ready.forEach((h, i) => {
      const c = h.ctrl;
      c[CTRL.a] = job.a;
      c[CTRL.b] = job.b;
      c[CTRL.c] = job.c;
      c[CTRL.nrb] = job.nrb;
      c[CTRL.K] = job.K;
      c[CTRL.p0] = cut(i + 1);
      c[CTRL.p1] = cut(i + 2);
      c[CTRL.npad] = job.npad;
      c[CTRL.kind] = job.kind;
      c[CTRL.tmp] = h.tmp;
      Atomics.store(c, CTRL.state, CtrlState.job);
      Atomics.notify(c, CTRL.state);
    });
    own(0, cut(1));
    for (const h of ready) {
      // A helper that died mid-job never answers: after the deadline its range runs here and the
      // helper is retired. (Both writing the same values into C is harmless.)
      const deadline = Date.now() + 2000;
      let s: number,
        spins = 0;
      while ((s = Atomics.load(h.ctrl, CTRL.state)) === CtrlState.job && (++spins < 200_000 || Date.now() < deadline)) {
        if (spins >= 200_000 && this.canBlock) Atomics.wait(h.ctrl, CTRL.state, CtrlState.job, 20); // spin first: the helper is usually close behind
      }
      if (s === CtrlState.job) {
        this.retire(h);
        own(h.ctrl[CTRL.p0], h.ctrl[CTRL.p1]);
        continue;
      }
      Atomics.store(h.ctrl, CTRL.state, CtrlState.idle);
      if (s !== CtrlState.done) own(h.ctrl[CTRL.p0], h.ctrl[CTRL.p1]);
    }
  }

  private retire(h: { worker: PlatformThread; ctrl: Int32Array; tmp: number }): void {
    Atomics.store(h.ctrl, CTRL.ready, 0);
    this.helpers = this.helpers.filter((x) => x !== h);
    void h.worker.terminate();
    // a dead thread may still be unwinding inside the kernel: its buffer is not handed out again
  }

  get count(): number {
    return this.helpers.length;
  }

  /** End one helper thread abruptly, as a crash would (fault injection: src/testing.ts). */
  async killOne(): Promise<void> {
    await this.helpers[0]?.worker.terminate();
  }

  terminate(): void {
    for (const h of this.helpers) {
      Atomics.store(h.ctrl, CTRL.state, CtrlState.exit);
      Atomics.notify(h.ctrl, CTRL.state);
      void h.worker.terminate();
      this.tmp.free(h.tmp); // idle helpers are outside the kernel: their buffers are free again
    }
    this.helpers = [];
  }
}
