// `node dist/bench/device-check.js`: the CUDA checks without tap (GPU machines carry no dev
// dependencies), one line each, exit 1 on any failure.
import { cudaStatus } from '../src/kernels/index.js';
import { checks } from '../test/cuda-checks.js';

const { addon, reason } = cudaStatus();
console.log(`cuda: ${reason}`);
if (!addon) process.exit(1);
let failed = 0;
for (const c of checks) {
  const t0 = performance.now();
  try {
    console.log(`ok   ${c.name} (${await c.run()}; ${((performance.now() - t0) / 1000).toFixed(1)} s)`);
  } catch (e) {
    failed++;
    // the first lines carry fast-check's counterexample (shapes, seed) when a property fails
    console.log(
      `FAIL ${c.name}: ${(e as Error).message
        .split('\n')
        .filter((l) => l.trim())
        .slice(0, 4)
        .join(' | ')}`,
    );
  }
}
console.log(`${checks.length - failed} passed, ${failed} failed`);
process.exitCode = failed ? 1 : 0;
