// Fault injection for tests of recovery: kept out of the production classes, reached only
// through this entry point.
export { killIntraOpHelper as killHelper } from './kernels/wasm/index.js';
import type { ForwardPool } from './parallel/pool.js';
import type { ForwardResult, ForwardTask } from './parallel/protocol.js';

/** Terminate one worker thread of a pool now, whatever it is doing. */
export function killWorker(pool: ForwardPool): void {
  (pool as unknown as { tasks: { killOne(): void } }).tasks.killOne();
}

/** Run a task that makes one worker die (`die`) or throw (`throw`); resolves or rejects as pool.run does. */
export function injectFault(pool: ForwardPool, kind: 'die' | 'throw'): Promise<ForwardResult> {
  return pool.run({ kind } as Omit<ForwardTask, 'kind'> & { kind: ForwardTask['kind'] });
}
