// Gradients of the unprocessed fixture models against TransformerLens's float64 autograd
// (test/fixtures/*/grads.safetensors): every hook point's gradient (and each ln1 firing's),
// and every parameter's, for the `loss` and `logit_diff` metrics.
// Tolerance: |got - want| <= 1e-5·max|want| + 1e-4·|want| per tensor (f32 compute against
// an f64 reference; the reported max relative errors are measured against max|want|).
import t from 'tap';
import { fileURLToPath } from 'node:url';
import { HookedTransformer, readSafetensors, tensorF64, Tensor, NO_PROCESSING } from '../src/index.js';
import { gpt2Forward, gpt2Grad, logitDiffMetric } from '../src/model/gpt2-grad.js';
import { ag } from '../src/autograd/index.js';

const fx = (name: string) => fileURLToPath(new URL(`../../test/fixtures/${name}`, import.meta.url));

/** max |got - want| / max |want| */
function relErr(got: ArrayLike<number>, want: ArrayLike<number>): number {
  let md = 0,
    mw = 0;
  for (let i = 0; i < want.length; i++) {
    md = Math.max(md, Math.abs(got[i] - want[i]));
    mw = Math.max(mw, Math.abs(want[i]));
  }
  return mw === 0 ? md : md / mw;
}
function close(got: ArrayLike<number>, want: ArrayLike<number>): boolean {
  if (got.length !== want.length) return false;
  let mw = 0;
  for (let i = 0; i < want.length; i++) mw = Math.max(mw, Math.abs(want[i]));
  for (let i = 0; i < want.length; i++)
    if (!(Math.abs(got[i] - want[i]) <= 1e-5 * mw + 1e-4 * Math.abs(want[i]))) return false;
  return true;
}

const worst: Record<string, { hooks: number; params: number }> = {};
for (const name of ['tiny', 'tiny-odd', 'tiny-hf']) {
  for (const metricName of ['loss', 'logit_diff'] as const) {
    t.test(`fixture ${name}, ${metricName}: hook and parameter gradients match TL`, async (t) => {
      const st = readSafetensors(`${fx(name)}/grads.safetensors`);
      const model = HookedTransformer.fromDir(fx(name), NO_PROCESSING);
      const tok = new Tensor(Float32Array.from(tensorF64(st, 'tokens')), st.entries.get('tokens')!.shape);
      const ans = Array.from(tensorF64(st, 'answer_tokens')) as [number, number];
      const metric = metricName === 'loss' ? (lg: Tensor) => ag.lmCrossEntropyLoss(lg, tok) : logitDiffMetric(ans);
      const r = gpt2Grad(model, tok, metric);
      const wantValue = tensorF64(st, `metrics/${metricName}`)[0];
      t.ok(
        Math.abs(r.value - wantValue) <= 1e-5 * Math.max(1, Math.abs(wantValue)),
        `metric value ${r.value} vs ${wantValue}`,
      );
      const w = (worst[`${name}/${metricName}`] = { hooks: 0, params: 0 });
      let nh = 0,
        np = 0;
      for (const key of st.entries.keys()) {
        if (!key.startsWith(metricName + '/')) continue;
        const want = tensorF64(st, key),
          shape = st.entries.get(key)!.shape;
        let got: Tensor | undefined;
        const rest = key.slice(metricName.length + 1);
        if (rest.startsWith('hooks/')) {
          const m = /^hooks\/(.*)_grad(\.([qkv]))?$/.exec(rest)!;
          got = m[3] ? r.firings.get(m[1])?.['qkv'.indexOf(m[3])] : r.hooks.get(m[1]);
          nh++;
        } else {
          got = r.params.get(rest.slice('params/'.length));
          np++;
        }
        if (!got) {
          t.fail(`${key}: no gradient computed`);
          continue;
        }
        t.same(got.shape, shape, `${key} shape`);
        const mw = want.reduce((a, v) => Math.max(a, Math.abs(v)), 0);
        if (mw < 1e-12) {
          // analytically zero (b_K: softmax ignores a constant shift of a query's scores); TL's
          // f64 value is rounding noise, ours is f32 rounding noise
          t.ok(
            got.f32().every((v) => Math.abs(v) < 1e-6),
            `${key} is zero up to f32 rounding`,
          );
          continue;
        }
        const e = relErr(got.f32(), want);
        if (rest.startsWith('hooks/')) w.hooks = Math.max(w.hooks, e);
        else w.params = Math.max(w.params, e);
        t.ok(close(got.f32(), want), `${key} within tolerance (rel err ${e.toExponential(2)})`);
      }
      t.ok(nh > 0 && np > 0, `compared ${nh} hook gradients and ${np} parameter gradients`);
      model.dispose();
    });
  }
}
t.test("the tape forward gives the model forward's logits bit for bit", async (t) => {
  for (const name of ['tiny', 'tiny-odd']) {
    const model = HookedTransformer.fromDir(fx(name), NO_PROCESSING);
    const tok = Tensor.from([[1, 5, 9, 2, 7, 3]]);
    t.same(
      Array.from(gpt2Forward(model, tok).f32()),
      Array.from(model.forward(tok).f32()),
      `${name}: identical logits`,
    );
    model.dispose();
  }
});

t.teardown(() =>
  console.log('max relative error (max|got-want| / max|want|) per fixture/metric:', JSON.stringify(worst)),
);
