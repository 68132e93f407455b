// The memory plan: the packed size predicted from the config alone matches what the backend
// allocates, and a model too large for one wasm32 memory is refused before its checkpoint is read.
import t from 'tap';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HookedTransformer, hfConfig, PRESETS, randomGPT2, getBackend } from '../src/index.js';
import { packedModelBytes, WASM32_BYTES } from '../src/model/memory-plan.js';

const wasm = getBackend('wasm');
const shared = wasm.sharedMemory;

t.test('packedModelBytes equals the bytes the wasm backend allocates for a model', async (t) => {
  t.ok(shared, 'the wasm backend shares its memory');
  for (const dtype of ['f32', 'bf16'] as const) {
    const s = { n_layer: 2, n_embd: 36, n_head: 3, n_positions: 16, vocab_size: 61 }; // N not a multiple of 8
    const m = HookedTransformer.fromHFTensors(hfConfig(s), randomGPT2(s, 1), { backend: wasm, dtype });
    try {
      const ws = [...m.packed.blocks.flatMap((b) => Object.values(b)), m.packed.WU];
      const bytes = ws.reduce((a, w) => a + shared!.describe(w).bytes, 0);
      const embeds = 4 * (s.vocab_size + s.n_positions) * s.n_embd;
      t.equal(packedModelBytes(m.cfg, dtype), bytes + embeds, `${dtype}: predicted = allocated`);
    } finally {
      m.dispose();
    }
  }
});

t.test('a GPT-2 XL-shaped f32 checkpoint is refused before anything is read, with the size it needs', async (t) => {
  const dir = join(mkdtempSync(join(tmpdir(), 'typelens-plan-')), 'xl');
  mkdirSync(dir);
  writeFileSync(join(dir, 'config.json'), JSON.stringify(hfConfig(PRESETS['gpt2-xl'])));
  // not a safetensors file at all: reading it would fail with EFORMAT, so ENOMEM proves no read
  writeFileSync(join(dir, 'model.safetensors'), 'not read');
  const rss0 = process.memoryUsage().rss;
  t.throws(
    () => HookedTransformer.fromDir(dir, { backend: 'wasm', dtype: 'f32' }),
    {
      code: 'ENOMEM',
      message: /needs 6\.\d\d GiB of WebAssembly memory .* more than the 4\.00 GiB .*nothing was loaded/,
    },
    'refused with the size needed',
  );
  t.ok(process.memoryUsage().rss - rss0 < 256 * 2 ** 20, 'no large allocation happened');
  const cfg = { d_model: 1600, n_heads: 25, d_head: 64, d_mlp: 6400, d_vocab: 50257, n_ctx: 1024, n_layers: 48 };
  t.ok(packedModelBytes(cfg as never, 'bf16') < WASM32_BYTES, 'the same model in bf16 is within one memory');
  t.throws(
    () => HookedTransformer.fromDir(dir, { backend: 'wasm', dtype: 'bf16' }),
    { code: 'EFORMAT' },
    'in bf16 it passes the plan and goes on to read the (bad) file',
  );
});
