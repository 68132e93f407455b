// The CUDA backend's checks against the CPU path, as plain async functions that throw on failure:
// test/cuda.test.ts runs them under tap, bench/device-check.ts on a GPU machine without tap.
// Tolerances: matmul |d| <= 1e-4 (1 + |want|) (another summation order; K <= 300), fused ops 1e-5,
// logits 1e-4 absolute.
import fc from 'fast-check';
import { fileURLToPath } from 'node:url';
import { CudaBackend, jsBackend } from '../src/kernels/index.js';
import {
  HookedTransformer,
  readSafetensors,
  tensorF64,
  NO_PROCESSING,
  Tensor,
  layerNorm,
  softmax,
  maskCausal,
  geluNew,
  randomGPT2,
  hfConfig,
} from '../src/index.js';

const close = (a: ArrayLike<number>, b: ArrayLike<number>, rtol: number, atol: number) =>
  a.length === b.length && Array.from(a).every((x, i) => Math.abs(x - b[i]) <= atol + rtol * Math.abs(b[i]));
const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let m = a.length === b.length ? 0 : Infinity;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
};
function expect(ok: boolean, what: string): void {
  if (!ok) throw new Error(what);
}
const fixture = (name: string) => fileURLToPath(new URL(`../../test/fixtures/${name}`, import.meta.url));

export const checks: { name: string; run: () => Promise<string> }[] = [
  {
    name: 'cuda matmul equals the JS reference on random shapes',
    run: async () => {
      const cu = new CudaBackend();
      let worst = 0; // max |got - want| / (1 + |want|) over all shapes
      fc.assert(
        fc.property(
          fc.integer({ min: 1, max: 130 }),
          fc.integer({ min: 1, max: 300 }),
          fc.integer({ min: 1, max: 200 }),
          fc.nat(),
          (M, K, N, seed) => {
            const a = Float32Array.from({ length: M * K }, (_, i) => Math.sin(i * 0.37 + seed));
            const b = Float32Array.from({ length: K * N }, (_, i) => Math.cos(i * 0.11 + seed));
            const want = jsBackend.matmul(a, M, jsBackend.pack(b, K, N, 'f32'));
            const w = cu.pack(b, K, N, 'f32');
            const got = cu.matmul(a, M, w);
            w.release();
            for (let i = 0; i < want.length; i++)
              worst = Math.max(worst, Math.abs(got[i] - want[i]) / (1 + Math.abs(want[i])));
            return close(got, want, 1e-4, 1e-4);
          },
        ),
        { numRuns: 40 },
      );
      return `40 random shapes, max |d|/(1+|want|) ${worst.toExponential(1)}`;
    },
  },
  {
    name: 'fused layer norm, causal attention and gelu_new equal the tensor ops',
    run: async () => {
      const cu = new CudaBackend();
      const [B, P, H, D] = [2, 7, 3, 5];
      const x = Tensor.from(
        Float32Array.from({ length: B * P * 12 }, (_, i) => Math.sin(i)),
        [B, P, 12],
      );
      const w = Tensor.from(
          Float32Array.from({ length: 12 }, (_, i) => 1 + i / 10),
          [12],
        ),
        b = Tensor.from(
          Float32Array.from({ length: 12 }, (_, i) => i / 7),
          [12],
        );
      const ref = layerNorm(x, 1e-5, w, b);
      const got = cu.layerNorm(x.f32(), 12, 1e-5, w.f32(), b.f32());
      const dLn = maxDiff(got.out, ref.out.f32()),
        dScale = maxDiff(got.scale, ref.scale.f32());
      expect(close(got.out, ref.out.f32(), 1e-5, 1e-5), `layer norm (max |diff| ${dLn})`);
      expect(close(got.scale, ref.scale.f32(), 1e-5, 1e-6), `layer norm scale (max |diff| ${dScale})`);
      // P = 5, 6, 7: every P % 4 the kernel's loops tail differently on (run under memcheck too)
      let dPat = 0,
        dZ = 0;
      for (const P of [5, 6, 7]) {
        const mk = (s: number) => Float32Array.from({ length: B * P * H * D }, (_, i) => Math.sin(i * s));
        const [q, k, v] = [mk(0.3), mk(0.7), mk(1.1)];
        const qT = new Tensor(q, [B, P, H, D]).permute(0, 2, 1, 3),
          kT = new Tensor(k, [B, P, H, D]).permute(0, 2, 3, 1);
        const scores = new Float32Array(B * H * P * P);
        for (let bb = 0; bb < B; bb++)
          for (let h = 0; h < H; h++)
            for (let i = 0; i < P; i++)
              for (let j = 0; j < P; j++) {
                let s = 0;
                for (let d = 0; d < D; d++) s += qT.get(bb, h, i, d) * kT.get(bb, h, d, j);
                scores[((bb * H + h) * P + i) * P + j] = s / Math.sqrt(D);
              }
        const pattern = softmax(maskCausal(new Tensor(scores, [B, H, P, P])));
        const att = cu.attention(q, k, v, B, P, H, D, Math.sqrt(D));
        dPat = Math.max(dPat, maxDiff(att.pattern, pattern.f32()));
        expect(close(att.pattern, pattern.f32(), 1e-5, 1e-6), `attention pattern, P = ${P} (max |diff| ${dPat})`);
        // z = pattern @ v, from the reference pattern on the host
        const zRef = new Float32Array(B * P * H * D);
        const pr = pattern.f32();
        for (let bb = 0; bb < B; bb++)
          for (let h = 0; h < H; h++)
            for (let i = 0; i < P; i++)
              for (let d = 0; d < D; d++) {
                let s = 0;
                for (let j = 0; j <= i; j++)
                  s += pr[((bb * H + h) * P + i) * P + j] * v[((bb * P + j) * H + h) * D + d];
                zRef[((bb * P + i) * H + h) * D + d] = s;
              }
        dZ = Math.max(dZ, maxDiff(att.z, zRef));
        expect(dZ < 1e-5, `attention z, P = ${P} (max |diff| ${dZ})`);
      }
      const dGelu = maxDiff(cu.gelu(x.f32()), geluNew(x).f32());
      expect(dGelu < 1e-5, `gelu_new (max |diff| ${dGelu})`);
      const e = (v: number) => v.toExponential(1);
      return `max |diff|: layer norm ${e(dLn)}, scale ${e(dScale)}, pattern ${e(dPat)}, z ${e(dZ)} (P = 5, 6, 7), gelu ${e(dGelu)}`;
    },
  },
  {
    name: 'the fixture models on the CUDA backend match the reference logits',
    run: async () => {
      const out: string[] = [];
      for (const name of ['tiny', 'tiny-odd', 'tiny-hf']) {
        const exp = readSafetensors(`${fixture(name)}/expected.safetensors`);
        const model = HookedTransformer.fromDir(fixture(name), { ...NO_PROCESSING, backend: 'cuda' });
        const tok = new Tensor(Float32Array.from(tensorF64(exp, 'tokens')), exp.entries.get('tokens')!.shape);
        const d = maxDiff(model.forward(tok).f32(), tensorF64(exp, 'logits'));
        model.dispose();
        expect(d <= 1e-4, `${name}: logits differ by ${d}`);
        out.push(`${name} ${d.toExponential(1)}`);
      }
      return `max |diff|: ${out.join(', ')}`;
    },
  },
  {
    name: 'random models: CUDA logits equal WASM logits',
    run: async () => {
      let worst = 0;
      fc.assert(
        fc.property(
          fc.integer({ min: 1, max: 3 }),
          fc.integer({ min: 1, max: 4 }),
          fc.nat(),
          (n_layer, n_head, seed) => {
            const shape = { n_layer, n_embd: 8 * n_head, n_head, n_positions: 16, vocab_size: 50 };
            const hf = hfConfig(shape, 49),
              w = randomGPT2(shape, seed);
            const a = HookedTransformer.fromHFTensors(hf, w, { backend: 'cuda' }),
              b = HookedTransformer.fromHFTensors(hf, w, { backend: 'wasm' });
            const tok = Tensor.from([1, 5, 9, 13, 2, 7], [2, 3]);
            const d = maxDiff(a.forward(tok).f32(), b.forward(tok).f32());
            worst = Math.max(worst, d);
            a.dispose();
            b.dispose();
            return d <= 1e-4;
          },
        ),
        { numRuns: 15 },
      );
      return `15 random models, max |diff| ${worst.toExponential(1)}`;
    },
  },
  {
    name: 'the device-resident forward (no hooks) equals the host path (identity hook) and WASM',
    run: async () => {
      let dHost = 0,
        dWasm = 0,
        dStop = 0;
      for (const name of ['tiny', 'tiny-hf']) {
        for (const opts of [NO_PROCESSING, {}]) {
          const cuda = HookedTransformer.fromDir(fixture(name), { ...opts, backend: 'cuda' });
          const wasm = HookedTransformer.fromDir(fixture(name), { ...opts, backend: 'wasm' });
          const tok = Tensor.from([1, 2, 3, 4, 5, 6, 7, 8], [2, 4]);
          const device = cuda.forward(tok);
          const host = cuda.runWithHooks(tok, { fwdHooks: [['blocks.0.hook_resid_pre', (x) => x]] });
          const h = maxDiff(device.f32(), host.f32()),
            w = maxDiff(device.f32(), wasm.forward(tok).f32());
          expect(h <= 1e-4, `${name}: device path vs host path (max |diff| ${h})`);
          expect(w <= 1e-4, `${name}: device path vs WASM (max |diff| ${w})`);
          expect(
            cuda.forward(tok, { lastPositionLogits: true }).shape.join() === [2, 1, cuda.cfg.d_vocab].join(),
            `${name}: lastPositionLogits shape`,
          );
          const s = maxDiff(cuda.forward(tok, { stopAtLayer: 1 }).f32(), wasm.forward(tok, { stopAtLayer: 1 }).f32());
          expect(s <= 1e-4, `${name}: stopAtLayer (max |diff| ${s})`);
          [dHost, dWasm, dStop] = [Math.max(dHost, h), Math.max(dWasm, w), Math.max(dStop, s)];
          cuda.dispose();
          wasm.dispose();
        }
      }
      const e = (v: number) => v.toExponential(1);
      return `tiny, tiny-hf; processed and not; max |diff| device vs host ${e(dHost)}, vs WASM ${e(dWasm)}, stopAtLayer ${e(dStop)}`;
    },
  },
  {
    name: "gradient mode on the CUDA backend skips the device path: recorded logits equal the host path, gradients equal WASM's",
    run: async () => {
      const { withGrad } = await import('../src/autograd/index.js');
      let worst = 0;
      for (const opts of [NO_PROCESSING, {}]) {
        const cuda = HookedTransformer.fromDir(fixture('tiny'), { ...opts, backend: 'cuda' });
        const wasm = HookedTransformer.fromDir(fixture('tiny'), { ...opts, backend: 'wasm' });
        const tok = Tensor.from([1, 2, 3, 4, 5, 6, 7, 8], [2, 4]);
        const host = cuda.runWithHooks(tok, { fwdHooks: [['blocks.0.hook_resid_pre', (x) => x]] });
        const { out: rec } = withGrad(() => cuda.forward(tok));
        expect(
          maxDiff(rec.f32(), host.f32()) === 0,
          'a recorded forward on the CUDA backend is the host path, bit for bit',
        );
        const gc = cuda.parameterGrads(tok),
          gw = wasm.parameterGrads(tok);
        for (const [n, g] of gc) worst = Math.max(worst, maxDiff(g.f32(), gw.get(n)!.f32()));
        expect(worst <= 1e-4, `parameter gradients CUDA vs WASM (max |diff| ${worst})`);
        cuda.dispose();
        wasm.dispose();
      }
      return `tiny, processed and not; parameter gradients max |diff| vs WASM ${worst.toExponential(1)}`;
    },
  },
];
