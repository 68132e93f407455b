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
  const before = await tl.init({ threads });
  const [config, bytes] = await Promise.all([
    fetch(`/fixtures/${fixture}/config.json`).then((r) => r.json()),
    fetch(`/fixtures/${fixture}/model.safetensors`).then((r) => r.arrayBuffer()),
  ]);
  const model = tl.HookedTransformer.fromHFTensors(
    config,
    tl.parseSafetensors(new Uint8Array(bytes), 'model.safetensors'),
  );
  let hookSeen = null;
  const { logits, cache } = model.hooks([['blocks.1.attn.hook_pattern', (p) => ((hookSeen = p.shape), p)]], () =>
    model.runWithCache(tokens, { namesFilter: ['blocks.0.hook_resid_post', 'blocks.1.attn.hook_pattern'] }),
  );
  const after = tl.runtimeInfo();
  // the same forward on a worker pool (Web Workers over the shared memory): refused, with a
  // reason, where the page is not isolated
  let pool = null;
  try {
    const p = await tl.ForwardPool.create(model, { threads: 2 });
    const r = await p.runBatch(new tl.Tensor(Float32Array.from(tokens.flat()), [tokens.length, tokens[0].length]));
    pool = { threads: p.threads, logits: bits(r.logits.f32()) };
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
  };
  document.getElementById('status').textContent = 'done';
}
main().catch((e) => {
  window.__typelens = { error: String(e?.stack ?? e) };
  document.getElementById('status').textContent = 'failed';
});
