// A helper thread of FactorThreads (factor-jobs.ts): it sleeps on the shared generation word,
// claims jobs of each new batch until none are left, and exits when told to.
import { platform } from '../platform/index.js';
import { claim, HDR, runSharedJob } from './factor-jobs.js';

platform.threadMain((d) => {
  const { sab, hdr } = d as { sab: SharedArrayBuffer; hdr: number };
  const ctrl = new Int32Array(sab, 0, hdr / 4),
    data = new Float32Array(sab, hdr);
  Atomics.add(ctrl, HDR.ready, 1);
  // a batch announced before this thread got here is joined at once (its generation is not 0)
  for (let seen = 0; ;) {
    Atomics.wait(ctrl, HDR.gen, seen);
    if (Atomics.load(ctrl, HDR.exit)) return;
    seen = Atomics.load(ctrl, HDR.gen);
    for (let j; (j = claim(ctrl, seen)) >= 0;) runSharedJob(ctrl, data, j);
  }
});
