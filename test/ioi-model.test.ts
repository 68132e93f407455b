// The committed embedded model (weights/typelens-ioi, issue 15), end to end with the demo's own
// processing and sections: checks that a random model could never pass. The committed model has
// learned to answer with a name from the prompt and to attend back by the repeat period, not yet
// to prefer the indirect object (docs/embedded-model.md): these tests assert what it does.
import t from 'tap';
import { existsSync } from 'node:fs';
import { HookedTransformer, argmax } from '../src/index.js';
import { testPrompt } from '../src/analysis/utils.js';
import { headDetectorScores } from '../src/analysis/heads.js';
import { ioiData } from '../src/demo/data.js';
import * as sections from '../src/demo/sections.js';
import { ioiEvalDataset } from '../src/train/index.js';
import { DEMO_FLAGS, embeddedModelDir } from '../src/cli/demo.js';

const dir = embeddedModelDir();
t.ok(dir !== undefined && existsSync(`${dir}/model.safetensors`), 'the embedded model is committed');
const model = HookedTransformer.fromDir(dir!, DEMO_FLAGS);
t.teardown(() => model.dispose());
const data = ioiData(model, 'classic');

/** The top-1 token at the last position of each prompt, and whether it is one of the prompt's two names. */
function answersWithAName(prompts: string[], names: [string, string][]): number {
  let hits = 0;
  prompts.forEach((p, i) => {
    const logits = model.forward(model.toTokens(p, { prependBos: true })); // [1, P, V]
    const top = argmax(logits.index(0, 0).index(0, logits.shape[1] - 1), 0).item();
    if (names[i].map((n) => model.toSingleToken(n)).includes(top)) hits++;
  });
  return hits / prompts.length;
}

t.test("test_prompt ranks ' Mary' first on the notebook's test prompt", async (t) => {
  const lines = testPrompt(data.testPrompt![0], data.testPrompt![1], model, { print: () => {} });
  t.match(lines[lines.length - 1], /\(' Mary', 0\)/, 'rank 0');
});

t.test("the top token after '... gave X to' is one of the prompt's two names (50257-way)", async (t) => {
  const classic = answersWithAName(data.prompts, data.answers);
  t.equal(classic, 1, `the notebook's 8 prompts: ${classic}`);
  const ds = ioiEvalDataset({ templates: 'heldout', combos: 'any', n: 100, seed: 4242 });
  const prompts = ds.samples.map((s) => s.text.slice(0, s.text.length - s.IO.length));
  const fresh = answersWithAName(
    prompts,
    ds.samples.map((s) => [s.IO, s.S]),
  );
  t.ok(fresh >= 0.8, `100 fresh prompts from the held-out templates: ${fresh} >= 0.8 (a random model: ~0)`);
});

t.test('direct logit attribution: the decomposed components sum to the logit difference', async (t) => {
  const { cache, original } = sections.logitDifference(model, data, false);
  const direct = sections.directLogitAttribution(model, data, cache);
  t.ok(Math.abs(direct.calculated - original) <= 1e-3, `final residual read out ${direct.calculated} = ${original}`);
  const comp = sections.componentAttribution(model, data, cache, direct.dirs);
  const sum = Array.from(comp.perLayer.f32()).reduce((a, b) => a + b, 0);
  t.ok(Math.abs(sum - original) <= 1e-3, `components sum ${sum} = ${original}`);
});

t.test("some head attends back one period on the demo's repeated random tokens (score >= 0.5)", async (t) => {
  const s = headDetectorScores(model, data.repeatedRandomTokens, data.seqLen);
  const best = Math.max(...Array.from(s.induction.f32()));
  t.ok(best >= 0.5, `max induction score ${best.toFixed(3)}`);
  const T = data.repeatedRandomTokens;
  // and it predicts the repeat: the second half's next-token accuracy
  const logits = model.forward(T); // [2, 64, V]
  const [B, P] = T.shape,
    half = P / 2;
  let hit = 0,
    n = 0;
  for (let b = 0; b < B; b++)
    for (let p = half; p < P - 1; p++) {
      n++;
      if (argmax(logits.index(0, b).index(0, p), 0).item() === T.get(b, p + 1)) hit++;
    }
  t.ok(hit / n >= 0.5, `second-half next-token accuracy ${(hit / n).toFixed(3)} >= 0.5`);
});
