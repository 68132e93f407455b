// The CUDA backend against the CPU path. Runs when the addon is built and a GPU is present;
// otherwise every test is reported as skipped with the reason. Tolerances: matmul |d| <= 1e-4 *
// (1 + |want|) (different summation order; K <= 3072), fused ops 1e-5, logits 1e-4 absolute.
import t from 'tap';
import fc from 'fast-check';
import { fileURLToPath } from 'node:url';
import { cudaStatus, CudaBackend, jsBackend } from '../src/kernels/index.js';
import { HookedTransformer, readSafetensors, tensorF64, NO_PROCESSING, Tensor, layerNorm, softmax, maskCausal, geluNew, randomGPT2, hfConfig } from '../src/index.js';
import { maxAbsDiff } from './helpers.js';

const { addon, reason } = cudaStatus();
const skip = addon ? false : reason;
const close = (a: ArrayLike<number>, b: ArrayLike<number>, rtol: number, atol: number) => a.length === b.length && Array.from(a).every((x, i) => Math.abs(x - b[i]) <= atol + rtol * Math.abs(b[i]));

t.test('the backend choice explains itself', async (t) => {
  t.type(reason, 'string');
  t.ok(reason.length > 10, `status: ${reason}`);
  if (!addon) t.throws(() => new CudaBackend(), /CUDA backend unavailable: /);
});

t.test('cuda matmul equals the JS reference on random shapes', { skip }, async (t) => {
  const cu = new CudaBackend();
  fc.assert(fc.property(fc.integer({ min: 1, max: 130 }), fc.integer({ min: 1, max: 300 }), fc.integer({ min: 1, max: 200 }), fc.nat(), (M, K, N, seed) => {
    const a = Float32Array.from({ length: M * K }, (_, i) => Math.sin(i * 0.37 + seed));
    const b = Float32Array.from({ length: K * N }, (_, i) => Math.cos(i * 0.11 + seed));
    const want = jsBackend.matmul(a, M, jsBackend.pack(b, K, N, 'f32'));
    const w = cu.pack(b, K, N, 'f32');
    const got = cu.matmul(a, M, w);
    w.release();
    return close(got, want, 1e-4, 1e-4);
  }), { numRuns: 40 });
  t.pass();
});

t.test('fused layer norm, causal attention and gelu_new equal the tensor ops', { skip }, async (t) => {
  const cu = new CudaBackend();
  const [B, P, H, D] = [2, 7, 3, 5];
  const x = Tensor.from(Float32Array.from({ length: B * P * 12 }, (_, i) => Math.sin(i)), [B, P, 12]);
  const w = Tensor.from(Float32Array.from({ length: 12 }, (_, i) => 1 + i / 10), [12]), b = Tensor.from(Float32Array.from({ length: 12 }, (_, i) => i / 7), [12]);
  const ref = layerNorm(x, 1e-5, w, b);
  const got = cu.layerNorm(x.f32(), 12, 1e-5, w.f32(), b.f32());
  t.ok(close(got.out, ref.out.f32(), 1e-5, 1e-5), 'layer norm');
  t.ok(close(got.scale, ref.scale.f32(), 1e-5, 1e-6), 'scale');
  const mk = (s: number) => Float32Array.from({ length: B * P * H * D }, (_, i) => Math.sin(i * s));
  const [q, k, v] = [mk(0.3), mk(0.7), mk(1.1)];
  const qT = new Tensor(q, [B, P, H, D]).permute(0, 2, 1, 3), kT = new Tensor(k, [B, P, H, D]).permute(0, 2, 3, 1);
  const scores = new Float32Array(B * H * P * P);
  for (let bb = 0; bb < B; bb++) for (let h = 0; h < H; h++) for (let i = 0; i < P; i++) for (let j = 0; j < P; j++) {
    let s = 0; for (let d = 0; d < D; d++) s += qT.get(bb, h, i, d) * kT.get(bb, h, d, j);
    scores[((bb * H + h) * P + i) * P + j] = s / Math.sqrt(D);
  }
  const pattern = softmax(maskCausal(new Tensor(scores, [B, H, P, P])));
  const att = cu.attention(q, k, v, B, P, H, D, Math.sqrt(D));
  t.ok(close(att.pattern, pattern.f32(), 1e-5, 1e-6), 'pattern');
  t.ok(maxAbsDiff(cu.gelu(x.f32()), geluNew(x).f32()) < 1e-5, 'gelu_new');
});

t.test('the fixture model on the CUDA backend matches the reference logits', { skip }, async (t) => {
  for (const name of ['tiny', 'tiny-odd', 'tiny-hf']) {
    const dir = fileURLToPath(new URL(`../../test/fixtures/${name}`, import.meta.url));
    const exp = readSafetensors(`${dir}/expected.safetensors`);
    const model = HookedTransformer.fromDir(dir, { ...NO_PROCESSING, backend: 'cuda' });
    const tok = new Tensor(Float32Array.from(tensorF64(exp, 'tokens')), exp.entries.get('tokens')!.shape);
    const logits = model.forward(tok);
    t.ok(maxAbsDiff(logits.f32(), tensorF64(exp, 'logits')) <= 1e-4, `${name} logits within 1e-4`);
    model.dispose();
  }
});

t.test('random models: CUDA logits equal WASM logits', { skip }, async (t) => {
  fc.assert(fc.property(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 4 }), fc.nat(), (n_layer, n_head, seed) => {
    const shape = { n_layer, n_embd: 8 * n_head, n_head, n_positions: 16, vocab_size: 50 };
    const hf = hfConfig(shape, 49), w = randomGPT2(shape, seed);
    const a = HookedTransformer.fromHFTensors(hf, w, { backend: 'cuda' }), b = HookedTransformer.fromHFTensors(hf, w, { backend: 'wasm' });
    const tok = Tensor.from([1, 5, 9, 13, 2, 7], [2, 3]);
    const ok = maxAbsDiff(a.forward(tok).f32(), b.forward(tok).f32()) <= 1e-4;
    a.dispose(); b.dispose();
    return ok;
  }), { numRuns: 15 });
  t.pass();
});

t.test('the device-resident forward (no hooks) equals the host path (identity hook) and WASM', { skip }, async (t) => {
  for (const name of ['tiny', 'tiny-hf']) {
    const dir = fileURLToPath(new URL(`../../test/fixtures/${name}`, import.meta.url));
    for (const opts of [NO_PROCESSING, {}]) {
      const cuda = HookedTransformer.fromDir(dir, { ...opts, backend: 'cuda' });
      const wasm = HookedTransformer.fromDir(dir, { ...opts, backend: 'wasm' });
      const tok = Tensor.from([1, 2, 3, 4, 5, 6, 7, 8], [2, 4]);
      const device = cuda.forward(tok);
      const host = cuda.runWithHooks(tok, { fwdHooks: [['blocks.0.hook_resid_pre', (x) => x]] });
      t.ok(maxAbsDiff(device.f32(), host.f32()) <= 1e-4, `${name}: device path = host path`);
      t.ok(maxAbsDiff(device.f32(), wasm.forward(tok).f32()) <= 1e-4, `${name}: device path = WASM`);
      const last = cuda.forward(tok, { lastPositionLogits: true });
      t.same(last.shape, [2, 1, cuda.cfg.d_vocab]);
      const resid = cuda.forward(tok, { stopAtLayer: 1 });
      t.ok(maxAbsDiff(resid.f32(), wasm.forward(tok, { stopAtLayer: 1 }).f32()) <= 1e-4, `${name}: stopAtLayer`);
      cuda.dispose(); wasm.dispose();
    }
  }
});
