// A pool worker: a replica of the main thread's model over the same shared WebAssembly.Memory
// (no weight copies), running whole forward passes: plain, from a layer on, with a declarative
// patch, with or without a cache. Results go back as transferred buffers (moved, not copied).
// The platform runs it: a piscina worker in Node, a Web Worker in browsers.
import { sharedBackend } from '../kernels/index.js';
import type { HookedTransformer } from '../model/hooked-transformer.js';
import { fromShared, SharedModel } from '../model/replica.js';
import { batchedPatch, repeatMask, setters } from '../patching/index.js';
import { platform, type TaskReply } from '../platform/index.js';
import type { Tensor } from '../tensor/index.js';
import { isSharedBuffer } from '../util/shared.js';
import { fromArr, toArr, type ForwardTask, type ForwardResult, type Arr } from './protocol.js';

interface PoolData {
  model: SharedModel;
  slots: SharedArrayBuffer;
  scratch: { ptrs: number[]; bytes: number };
}

let model: HookedTransformer;

function init(data: unknown, threadId: number): void {
  const { model: desc, slots: slotBuf, scratch } = data as PoolData;
  // claim a scratch region of the shared memory for this thread's matmuls; the slot holds our
  // thread id, so that the pool can free it when this thread is gone
  const slots = new Int32Array(slotBuf);
  let slot = -1;
  for (let i = 0; i < slots.length && slot < 0; i++) if (Atomics.compareExchange(slots, i, 0, threadId) === 0) slot = i;
  if (slot < 0) throw new Error('typelens worker: no free scratch region (too many worker restarts)');
  model = fromShared(desc, sharedBackend(desc, { ptr: scratch.ptrs[slot], bytes: scratch.bytes }));
}

function run(task: ForwardTask): TaskReply {
  if (task.kind === 'die') platform.exitThread(); // fault injection (src/testing.ts): this thread ends abruptly
  if (task.kind === 'throw') throw new Error('injected failure');
  const hooks: [string, (a: Tensor) => Tensor][] = [];
  let input = fromArr(task.resid ?? task.tokens!);
  let mask = task.attentionMask ? fromArr(task.attentionMask) : undefined;
  if (task.patch) {
    const { hook: name, setter, indices, clean } = task.patch;
    const p = batchedPatch(input, setters[setter], indices, fromArr(clean), name);
    input = p.input;
    mask = repeatMask(mask, indices.length);
    hooks.push([name, p.hook]);
  }
  const opts = { startAtLayer: task.startAtLayer, lastPositionLogits: task.lastPositionLogits, attentionMask: mask };
  let logits: Tensor;
  const cache: Record<string, Arr> = {};
  if (task.cache) {
    // The cache goes back as transferred (moved) buffers. Writing it into SharedArrayBuffers
    // instead was measured: +200 MB peak RSS for a batch of 8 with the full cache, no faster.
    const r = model.hooks(hooks, () =>
      model.runWithCache(input, { ...opts, namesFilter: task.cache === 'all' ? undefined : (task.cache as string[]) }),
    );
    logits = r.logits;
    for (const k of r.cache.keys()) cache[k] = toArr(r.cache.get(k));
  } else logits = model.runWithHooks(input, { ...opts, fwdHooks: hooks });
  const value: ForwardResult = { logits: toArr(logits), cache: task.cache ? cache : undefined };
  // each plain buffer once (shared memory is shared, not moved)
  const buffers = [value.logits, ...Object.values(cache)].map((a) => a.data.buffer);
  const transfer = [...new Set(buffers)].filter((b) => !isSharedBuffer(b)) as ArrayBuffer[];
  return { value, transfer };
}

export default platform.serveTasks(init, run);
