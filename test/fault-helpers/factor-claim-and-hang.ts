// A FactorThreads helper that claims one job of the first batch and never finishes it, as a
// thread that crashed mid-job would look (test/factor-jobs.test.ts: the caller must take over).
// It spins rather than sleeps, so it claims within microseconds of the batch's announcement.
import { platform } from '../../src/platform/index.js';
import { claim, HDR } from '../../src/tensor/factor-jobs.js';

platform.threadMain((d) => {
  const { sab, hdr } = d as { sab: SharedArrayBuffer; hdr: number };
  const ctrl = new Int32Array(sab, 0, hdr / 4);
  Atomics.add(ctrl, HDR.ready, 1);
  for (let g; (g = Atomics.load(ctrl, HDR.gen)) === 0 || claim(ctrl, g) < 0;);
  Atomics.wait(ctrl, HDR.exit, 0); // hangs until told to exit
});
