// A helper thread of refactorFactoredAttnMatrices (process.ts): it takes heads' factorisations from
// the shared job table (tensor/factor-jobs.ts) and runs their products on a WASM instance of its
// own, one thread, which rounds as the caller's kernel does, so every factor is the serial one.
import { threadMatmulKernel } from '../kernels/index.js';
import { platform } from '../platform/index.js';
import { serveFactorJobs } from '../tensor/factor-jobs.js';

platform.threadMain((started) => serveFactorJobs(started, threadMatmulKernel()));
