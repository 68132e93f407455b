// The CUDA backend against the CPU path (checks in test/cuda-checks.ts). Runs when the addon is
// built and a GPU is present; otherwise each check is reported as skipped with the reason.
import t from 'tap';
import { cudaStatus, CudaBackend } from '../src/kernels/index.js';
import { checks } from './cuda-checks.js';

const { addon, reason } = cudaStatus();
const skip = addon ? false : reason;

t.test('the backend choice explains itself', async (t) => {
  t.type(reason, 'string');
  t.ok(reason.length > 10, `status: ${reason}`);
  if (!addon) t.throws(() => new CudaBackend(), /CUDA backend unavailable: /);
});

for (const c of checks) {
  t.test(c.name, { skip }, async (t) => { t.pass(await c.run()); });
}
