// The CUDA backend against the CPU path (checks in test/cuda-checks.ts). Runs when the addon is
// built and a GPU is present; otherwise each check is reported as skipped with the reason.
import t from 'tap';
import { cudaStatus, CudaBackend } from '../src/kernels/index.js';
import { checks } from './cuda-checks.js';

const { addon, reason } = cudaStatus();
const skip = addon ? false : reason;

t.test('the backend choice explains itself', async (t) => {
  t.type(reason, 'string');
  // one of cudaStatus()'s four answers, with its detail filled in
  if (addon) t.match(reason, /^CUDA device: \S/, `status: ${reason}`);
  else {
    t.match(
      reason,
      /^CUDA addon (not built \(.+ is missing; run npm run build:cuda\)|failed to load: \S|built, but no CUDA device \(or driver\) is present)/,
      `status: ${reason}`,
    );
  }
  if (!addon) t.throws(() => new CudaBackend(), /CUDA backend unavailable: /);
});

for (const c of checks) {
  t.test(c.name, { skip }, async (t) => {
    t.pass(await c.run());
  });
}
