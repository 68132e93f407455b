// A piscina worker: a replica of the main thread's model over the same shared WebAssembly.Memory
// (no weight copies), running whole forward passes: plain, from a layer on, with a declarative
// patch, with or without a cache. Results go back as transferred buffers (moved, not copied).
import { threadId, workerData } from 'node:worker_threads';
import { Piscina } from 'piscina';
import { WasmBackend } from '../kernels/wasm/index.js';
import { HookedTransformer, SharedModel } from '../model/hooked-transformer.js';
import { setters } from '../patching/index.js';
import { cat, Tensor } from '../tensor/index.js';
import type { ForwardTask, ForwardResult, Arr } from './protocol.js';

const { model: desc, slots: slotBuf, scratch } = workerData as { model: SharedModel; slots: SharedArrayBuffer; scratch: { ptrs: number[]; bytes: number } };

// claim a scratch region of the shared memory for this thread's matmuls
const slots = new Int32Array(slotBuf);
let slot = -1;
// the slot holds our threadId, so that the pool can free it when this thread is gone
for (let i = 0; i < slots.length && slot < 0; i++) if (Atomics.compareExchange(slots, i, 0, threadId) === 0) slot = i;
if (slot < 0) throw new Error('typelens worker: no free scratch region (too many worker restarts)');
const backend = new WasmBackend({ memory: desc.memory, module: desc.module, fmaModule: desc.fma, scratch: { ptr: scratch.ptrs[slot], bytes: scratch.bytes } });
const model = HookedTransformer.fromShared(desc, backend);

const tensor = (a: Arr) => new Tensor(a.data, a.shape);
const out = (t: Tensor): Arr => { const c = t.contiguous(); return { data: c.f32() === c.data ? (c.data as Float32Array) : Float32Array.from(c.f32()), shape: [...c.shape] }; };

export default function run(task: ForwardTask): ForwardResult {
  if (task.kind === 'die') process.exit(1); // fault injection for tests: this thread ends abruptly
  if (task.kind === 'throw') throw new Error('injected failure');
  const hooks: [string, (a: Tensor) => Tensor | void][] = [];
  let input = task.resid ? tensor(task.resid) : tensor(task.tokens!);
  if (task.patch) {
    const { hook, setter, indices, clean } = task.patch;
    const fn = setters[setter], c = tensor(clean), k = indices.length, b = input.shape[0];
    if (k > 1) input = cat(Array.from({ length: k }, () => input), 0);
    hooks.push([hook, (act: Tensor) => { indices.forEach((idx, j) => fn(act.slice(0, j * b, (j + 1) * b), idx, c)); return act; }]);
  }
  const opts = { startAtLayer: task.startAtLayer, lastPositionLogits: task.lastPositionLogits };
  let logits: Tensor;
  const cache: Record<string, Arr> = {};
  if (task.cache) {
    // The cache goes back as transferred (moved) buffers. Writing it into SharedArrayBuffers
    // instead was measured: +200 MB peak RSS for a batch of 8 with the full cache, no faster.
    const r = model.hooks(hooks, () => model.runWithCache(input, { ...opts, namesFilter: task.cache === 'all' ? undefined : task.cache as string[] }));
    logits = r.logits;
    for (const k of r.cache.keys()) { const c = r.cache.get(k); cache[k] = { data: c.data as Float32Array, shape: [...c.shape] }; }
  } else logits = model.runWithHooks(input, { ...opts, fwdHooks: hooks });
  const value: ForwardResult = { logits: out(logits), cache: task.cache ? cache : undefined };
  const transferList = [value.logits.data.buffer as ArrayBuffer, ...Object.values(cache).map((a) => a.data.buffer as ArrayBuffer)];
  // moved, not copied, back to the caller
  return Piscina.move({ [Piscina.transferableSymbol]: transferList, [Piscina.valueSymbol]: value } as never) as unknown as ForwardResult;
}
