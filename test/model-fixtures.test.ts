// Every hook of the unprocessed model against the float64 reference fixtures (an independent
// implementation). Tolerances: logits 1e-4 absolute (the fixture README's bug threshold);
// activations |got - want| <= 1e-5 + 1e-4 |want| (f32 accumulation over d_model <= 480).
import t from 'tap';
import { fileURLToPath } from 'node:url';
import { HookedTransformer, readSafetensors, tensorF64, Tensor, NO_PROCESSING } from '../src/index.js';
import { allClose } from './helpers.js';

const fx = (name: string) => fileURLToPath(new URL(`../../test/fixtures/${name}`, import.meta.url));

for (const name of ['tiny', 'tiny-odd', 'tiny-hf']) {
  t.test(`fixture ${name}: every hook and the logits match`, async (t) => {
    const exp = readSafetensors(`${fx(name)}/expected.safetensors`);
    const model = HookedTransformer.fromDir(fx(name), NO_PROCESSING);
    const tok = new Tensor(Float32Array.from(tensorF64(exp, 'tokens')), exp.entries.get('tokens')!.shape);
    const { logits, cache } = model.runWithCache(tok);
    let compared = 0;
    for (const key of exp.entries.keys()) {
      if (key === 'tokens') continue;
      const want = tensorF64(exp, key);
      const got = key === 'logits' ? logits : cache.get(key);
      t.same(got.shape, exp.entries.get(key)!.shape, `${key} shape`);
      const ok = key === 'logits' ? allClose(got.f32(), want, 0, 1e-4) : allClose(got.f32(), want, 1e-4, 1e-5);
      t.ok(ok, `${key} within tolerance`);
      compared++;
    }
    const L = model.cfg.n_layers;
    t.equal(cache.size, 2 + 17 * L + 2, 'TL cache size: 2 + 17 per layer + 2');
    t.equal(compared, exp.entries.size - 1);
    model.dispose();
  });
}

t.test('cache key order is the firing order (1-layer model, as TL pins it)', async (t) => {
  const model = HookedTransformer.fromDir(fx('tiny'), NO_PROCESSING);
  const { cache } = model.runWithCache([[1, 2, 3]]);
  t.same(cache.keys().slice(0, 21), [
    'hook_embed',
    'hook_pos_embed',
    'blocks.0.hook_resid_pre',
    'blocks.0.ln1.hook_scale',
    'blocks.0.ln1.hook_normalized',
    'blocks.0.attn.hook_q',
    'blocks.0.attn.hook_k',
    'blocks.0.attn.hook_v',
    'blocks.0.attn.hook_attn_scores',
    'blocks.0.attn.hook_pattern',
    'blocks.0.attn.hook_z',
    'blocks.0.hook_attn_out',
    'blocks.0.hook_resid_mid',
    'blocks.0.ln2.hook_scale',
    'blocks.0.ln2.hook_normalized',
    'blocks.0.mlp.hook_pre',
    'blocks.0.mlp.hook_post',
    'blocks.0.hook_mlp_out',
    'blocks.0.hook_resid_post',
    'blocks.1.hook_resid_pre',
    'blocks.1.ln1.hook_scale',
  ]);
  t.same(cache.keys().slice(-2), ['ln_final.hook_scale', 'ln_final.hook_normalized']);
  t.same(cache.get('blocks.0.ln1.hook_scale').shape, [1, 3, 1], 'hook_scale keeps a trailing 1');
  t.ok(cache.get('blocks.0.attn.hook_attn_scores').get(0, 0, 0, 2) === -Infinity, 'masked scores are -inf');
  model.dispose();
});
