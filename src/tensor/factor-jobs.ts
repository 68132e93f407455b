// Many balanced factorisations at once, shared between this thread and helper threads: the
// load-time refactor (refactorFactoredAttnMatrices) is two small SVDs per head, every one
// independent, ~35 % of a demo-processed GPT-2 load on one core. Each job runs the same code on
// whichever thread claims it, so the factors are bit-identical to a serial run; only the order in
// which heads finish changes. Jobs are claimed from one shared counter, so a helper that is still
// booting (or slow) simply takes fewer, and the caller never waits for a thread to start.
import { platform, type PlatformThread } from '../platform/index.js';
import { balancedFactors } from './factored-svd.js';
import type { MatmulKernel } from './linalg.js';
import { Tensor } from './tensor.js';

/**
 * A [n, m] and Bt [r, m] (m small: d_head) -> U [n, m], V [r, m] with A Bt^T = U V^T (see
 * balancedFactors). 'even': TL's FactoredMatrix.make_even, sqrt(S) on both sides; 'svd': U S and V,
 * as refactor_factored_attn_matrices does W_V/W_O.
 */
export interface FactorJob {
  A: Float32Array;
  n: number;
  Bt: Float32Array;
  r: number;
  m: number;
  kind: 'even' | 'svd';
}
export interface FactorResult {
  U: Float32Array;
  V: Float32Array;
}

const KINDS = ['even', 'svd'] as const;
const identity = (s: number) => s,
  one = () => 1;

/** A job of the given size with fixed pseudo-random entries, for warming up a thread. */
function warmupJob(n: number, m: number, kind: 'even' | 'svd'): FactorJob {
  let x = 12345;
  const next = () => (x = (Math.imul(x, 1103515245) + 12345) >>> 0) / 2 ** 32 - 0.5;
  return {
    A: Float32Array.from({ length: n * m }, next),
    n,
    Bt: Float32Array.from({ length: n * m }, next),
    r: n,
    m,
    kind,
  };
}

/**
 * One job on this thread. `kernel` runs its two f32 products (default: the process's backend);
 * threads that must agree bit for bit pass kernels that round alike (the WASM kernel and the JS
 * reference do: each product rounded, then added in k order).
 */
export function factorJob(j: FactorJob, kernel?: MatmulKernel): FactorResult {
  const [fu, fv] = j.kind === 'even' ? [Math.sqrt, Math.sqrt] : [identity, one];
  return balancedFactors(new Tensor(j.A, [j.n, j.m]), new Tensor(j.Bt, [j.r, j.m]), fu, fv, kernel);
}

// The shared block: an Int32 header, a job table, then the f32 data (each job's A, Bt, U, V).
// NEXT and NJOBS carry the batch's tag (its generation, 15 bits) above a 16-bit count, so a
// thread still holding an earlier batch's tag can never claim from, or size, a later one.
export const HDR = { gen: 0, next: 1, njobs: 2, done: 3, exit: 4, ready: 5, size: 8 } as const;
export const ROW = { a: 0, n: 1, b: 2, r: 3, m: 4, kind: 5, out: 6, status: 7, size: 8 } as const;
const MAX_JOBS = 0xffff;
const tagOf = (gen: number) => (gen & 0x7fff) << 16;

/** Claim the next job of batch `gen` (-1: none left, or the batch is no longer `gen`). */
export function claim(ctrl: Int32Array, gen: number): number {
  const t = tagOf(gen),
    nj = Atomics.load(ctrl, HDR.njobs);
  if ((nj & ~0xffff) !== t) return -1;
  for (;;) {
    const w = Atomics.load(ctrl, HDR.next);
    if ((w & ~0xffff) !== t || (w & 0xffff) >= (nj & 0xffff)) return -1;
    if (Atomics.compareExchange(ctrl, HDR.next, w, w + 1) === w) return w & 0xffff;
  }
}

/** Run job `j` of the table in place (inputs and outputs in the shared data) and mark it done. */
export function runSharedJob(ctrl: Int32Array, data: Float32Array, j: number, kernel?: MatmulKernel): void {
  const row = HDR.size + j * ROW.size,
    at = (k: number) => ctrl[row + k];
  const n = at(ROW.n),
    r = at(ROW.r),
    m = at(ROW.m),
    out = at(ROW.out);
  const { U, V } = factorJob(
    {
      A: data.subarray(at(ROW.a), at(ROW.a) + n * m),
      n,
      Bt: data.subarray(at(ROW.b), at(ROW.b) + r * m),
      r,
      m,
      kind: KINDS[at(ROW.kind)],
    },
    kernel,
  );
  data.set(U, out);
  data.set(V, out + n * m);
  Atomics.store(ctrl, row + ROW.status, 1);
  Atomics.add(ctrl, HDR.done, 1);
  Atomics.notify(ctrl, HDR.done);
}

/**
 * A helper thread's life (its module calls this from platform.threadMain with the data it was
 * started with): sleep on the generation word, claim jobs of each new batch until none are left,
 * exit when told to.
 */
export function serveFactorJobs(started: unknown, kernel?: MatmulKernel): void {
  const { sab, hdr, warm } = started as { sab: SharedArrayBuffer; hdr: number; warm?: { n: number; m: number } };
  const ctrl = new Int32Array(sab, 0, hdr / 4),
    data = new Float32Array(sab, hdr);
  // threads are started before the caller has work for them (while it reads the checkpoint): a few
  // jobs of the coming size compile the SVD code here, so the first real ones run at full speed
  if (warm)
    for (const kind of ['even', 'svd', 'even', 'svd'] as const) factorJob(warmupJob(warm.n, warm.m, kind), kernel);
  Atomics.add(ctrl, HDR.ready, 1);
  // a batch announced before this thread got here is joined at once (its generation is not 0)
  for (let seen = 0; ;) {
    Atomics.wait(ctrl, HDR.gen, seen);
    if (Atomics.load(ctrl, HDR.exit)) return;
    seen = Atomics.load(ctrl, HDR.gen);
    for (let j; (j = claim(ctrl, seen)) >= 0;) runSharedJob(ctrl, data, j, kernel);
  }
}

/**
 * Helper threads for batches of factor jobs (the refactor's: one layer's heads each). A batch
 * larger than the capacity, or any batch once the helpers are gone, runs on the caller alone.
 */
export class FactorThreads {
  private threads: PlatformThread[] = [];
  private ctrl: Int32Array | null = null;
  private data: Float32Array | null = null;
  private gen = 0;
  /** Jobs run so far, how many on a helper thread, and how many the caller redid after a stall. */
  readonly stats = { jobs: 0, onHelpers: 0, takenOver: 0 };
  private readonly canBlock = platform.canBlock();

  private readonly kernel?: MatmulKernel;
  private readonly stallMs: number;

  /**
   * `helpers` threads besides the caller, started now, each running `helperUrl` (a module whose top
   * level calls serveFactorJobs through platform.threadMain, with a kernel that rounds as `kernel`
   * does: the caller's jobs run on `kernel`). `capacity`: the largest batch (jobs, and floats of
   * their A, Bt, U and V); `warm`: the size of the coming jobs, for the threads to compile their
   * code on before the first batch. `stallMs`: a batch whose claimed jobs make no progress for this
   * long is finished on the caller and the helpers are retired (a crashed thread).
   */
  constructor(
    helpers: number,
    opts: {
      helperUrl: URL;
      capacity: { jobs: number; floats: number };
      kernel?: MatmulKernel;
      stallMs?: number;
      warm?: { n: number; m: number };
    },
  ) {
    this.kernel = opts.kernel;
    this.stallMs = opts.stallMs ?? 5000;
    const { jobs, floats } = opts.capacity;
    // threads need shared memory (a browser page only has it when cross-origin isolated)
    if (helpers < 1 || jobs < 2 || jobs > MAX_JOBS || !platform.sharedThreads().ok) return;
    const hdr = (HDR.size + jobs * ROW.size) * 4;
    const sab = new SharedArrayBuffer(hdr + floats * 4);
    this.ctrl = new Int32Array(sab, 0, hdr / 4);
    this.data = new Float32Array(sab, hdr, floats);
    for (let i = 0; i < helpers; i++)
      // a thread that fails to start never claims a job: the caller does them all
      this.threads.push(platform.startThread(opts.helperUrl, { sab, hdr, warm: opts.warm }, () => {}));
  }

  /** The floats a batch of these jobs needs in the shared block (see capacity). */
  static floatsOf(jobs: readonly Pick<FactorJob, 'n' | 'r' | 'm'>[]): number {
    return jobs.reduce((s, j) => s + 2 * (j.n + j.r) * j.m, 0);
  }

  /** Helpers that have started and are serving. */
  ready(): number {
    return this.ctrl ? Atomics.load(this.ctrl, HDR.ready) : 0;
  }

  /** The jobs' results, in order; a batch larger than the capacity runs on the caller alone. */
  run(jobs: FactorJob[]): FactorResult[] {
    const floats = FactorThreads.floatsOf(jobs);
    const ctrl = this.ctrl,
      data = this.data;
    if (
      !ctrl ||
      !data ||
      this.threads.length === 0 ||
      jobs.length > (ctrl.length - HDR.size) / ROW.size ||
      floats > data.length
    ) {
      this.stats.jobs += jobs.length;
      return jobs.map((j) => factorJob(j, this.kernel));
    }
    // the table and inputs first, then DONE, NJOBS and NEXT, then the generation that announces them
    const gen = ++this.gen;
    let off = 0;
    jobs.forEach((j, i) => {
      const row = HDR.size + i * ROW.size;
      ctrl.set([off, j.n, off + j.n * j.m, j.r, j.m, KINDS.indexOf(j.kind), off + (j.n + j.r) * j.m, 0], row);
      data.set(j.A.subarray(0, j.n * j.m), off);
      data.set(j.Bt.subarray(0, j.r * j.m), off + j.n * j.m);
      off += 2 * (j.n + j.r) * j.m;
    });
    Atomics.store(ctrl, HDR.done, 0);
    Atomics.store(ctrl, HDR.njobs, tagOf(gen) | jobs.length);
    Atomics.store(ctrl, HDR.next, tagOf(gen));
    Atomics.store(ctrl, HDR.gen, gen);
    Atomics.notify(ctrl, HDR.gen);
    let own = 0;
    for (let j; (j = claim(ctrl, gen)) >= 0; own++) runSharedJob(ctrl, data, j, this.kernel);
    own += this.waitForHelpers(ctrl, data, jobs.length);
    this.stats.jobs += jobs.length;
    this.stats.onHelpers += jobs.length - own;
    return jobs.map((j, i) => {
      const out = ctrl[HDR.size + i * ROW.size + ROW.out];
      return {
        U: data.slice(out, out + j.n * j.m),
        V: data.slice(out + j.n * j.m, out + (j.n + j.r) * j.m),
      };
    });
  }

  /** Stop the helpers (idempotent). */
  close(): void {
    const ctrl = this.ctrl;
    if (ctrl) {
      Atomics.store(ctrl, HDR.exit, 1);
      Atomics.add(ctrl, HDR.gen, 1);
      Atomics.notify(ctrl, HDR.gen);
    }
    for (const t of this.threads) void t.terminate();
    this.threads = [];
  }

  /**
   * Until every job is done; a batch stalled for stallMs is finished here and the helpers retired.
   * Returns how many jobs that took over.
   */
  private waitForHelpers(ctrl: Int32Array, data: Float32Array, n: number): number {
    let done: number,
      last = -1,
      since = Date.now();
    while ((done = Atomics.load(ctrl, HDR.done)) < n) {
      if (done !== last) [last, since] = [done, Date.now()];
      else if (Date.now() - since > this.stallMs) {
        let redone = 0;
        for (let j = 0; j < n; j++)
          if (Atomics.load(ctrl, HDR.size + j * ROW.size + ROW.status) === 0) {
            runSharedJob(ctrl, data, j, this.kernel);
            redone++;
          }
        this.close();
        this.stats.takenOver += redone;
        return redone;
      }
      if (this.canBlock) Atomics.wait(ctrl, HDR.done, done, 20);
    }
    return 0;
  }
}
