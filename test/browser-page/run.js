/* global window, document, location, self */
// The test page of test/browser-bundle.test.ts: loads typelens's browser bundle, a checkpoint
// from bytes, runs a forward with a cache and a hook, and leaves the results on window.__typelens.
import * as tl from '/dist/browser/index.js';

const params = new URLSearchParams(location.search);
const fixture = params.get('fixture');
const tokens = JSON.parse(params.get('tokens'));
const threads = Number(params.get('threads'));

/** The bits of a float32 array, as plain numbers (comparable exactly after JSON). */
const bits = (f32) => Array.from(new Uint32Array(Float32Array.from(f32).buffer));

async function main() {
  // before init() the kernels are not there: a model cannot be made (no silent plain-JS fallback)
  let early;
  try {
    tl.getBackend();
  } catch (e) {
    early = `${e.code}: ${e.message}`;
  }
  const before = await tl.init({ threads });
  // the checkpoint's files as bytes (what a page holds after a fetch, a drop or a file picker)
  const [config, bytes] = await Promise.all([
    fetch(`/fixtures/${fixture}/config.json`).then((r) => r.text()),
    fetch(`/fixtures/${fixture}/model.safetensors`).then((r) => r.arrayBuffer()),
  ]);
  const model = tl.HookedTransformer.fromSources({ 'config.json': config, 'model.safetensors': bytes });
  let hookSeen = null;
  const { logits, cache } = model.hooks([['blocks.1.attn.hook_pattern', (p) => ((hookSeen = p.shape), p)]], () =>
    model.runWithCache(tokens, { namesFilter: ['blocks.0.hook_resid_post', 'blocks.1.attn.hook_pattern'] }),
  );
  const after = tl.runtimeInfo();
  // the same checkpoint streamed from its URL
  const byUrl = await tl.HookedTransformer.fromUrl(`/fixtures/${fixture}/`);
  const urlLogits = bits(byUrl.forward(tokens).f32());
  byUrl.dispose();
  // the same forward on a worker pool (Web Workers over the shared memory): refused, with a
  // reason, where the page is not isolated
  let pool;
  try {
    const p = await tl.ForwardPool.create(model, { threads: 2 });
    const r = await p.runBatch(new tl.Tensor(Float32Array.from(tokens.flat()), [tokens.length, tokens[0].length]));
    // a patching sweep on the workers equals the serial one (the page's thread)
    const clean = [tokens[0]],
      corrupted = [tokens[1]];
    const { cache: cleanCache } = model.runWithCache(clean);
    const metric = (l) => l.f32()[l.size - 1] - l.f32()[l.size - 2];
    const serial = tl.patching.getActPatchResidPre(model, corrupted, cleanCache, metric);
    const onPool = await tl.patching.parallel.getActPatchResidPre(p, corrupted, cleanCache, metric);
    pool = {
      threads: p.threads,
      logits: bits(r.logits.f32()),
      sweepShape: onPool.shape,
      sweepSerial: bits(serial.f32()),
      sweepPool: bits(onPool.f32()),
    };
    await p.destroy();
  } catch (e) {
    pool = { error: `${e.code}: ${e.message}` };
  }
  window.__typelens = {
    before,
    after,
    isolated: self.crossOriginIsolated,
    shape: logits.shape,
    logits: bits(logits.f32()),
    resid: bits(cache.get('blocks.0.hook_resid_post').f32()),
    hookSeen,
    pool,
    urlLogits,
    early,
  };
  document.getElementById('status').textContent = 'done';
}
main().catch((e) => {
  window.__typelens = { error: String(e?.stack ?? e) };
  document.getElementById('status').textContent = 'failed';
});
