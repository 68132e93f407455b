// The committed embedded model (weights/typelens-ioi, issue 15), end to end with the demo's own
// processing and sections: checks that a random model could never pass (the notebook's prompts
// answered, the circuit the attribution names is the one patching restores, induction heads).
import t from 'tap';
import { existsSync } from 'node:fs';
import { HookedTransformer, Tensor } from '../src/index.js';
import { ioiEval } from '../src/analysis/evals.js';
import { testPrompt } from '../src/analysis/utils.js';
import { logitsToAveLogitDiff } from '../src/analysis/logit-diff.js';
import { headDetectorScores } from '../src/analysis/heads.js';
import { getActName } from '../src/hooks/names.js';
import { ioiData } from '../src/demo/data.js';
import * as sections from '../src/demo/sections.js';
import { ioiEvalDataset } from '../src/train/index.js';
import { DEMO_FLAGS, embeddedModelDir } from '../src/cli/demo.js';

const dir = embeddedModelDir();
t.ok(dir !== undefined && existsSync(`${dir}/model.safetensors`), 'the embedded model is committed');
const model = HookedTransformer.fromDir(dir!, DEMO_FLAGS);
t.teardown(() => model.dispose());
const data = ioiData(model, 'classic');
const { cache, perPrompt, original } = sections.logitDifference(model, data, false);

t.test(
  "the notebook's 8 prompts: every logit difference positive, mean >= 3; test_prompt ranks ' Mary' first",
  async (t) => {
    const d = Array.from(perPrompt.f32());
    d.forEach((x, i) => t.ok(x > 0, `prompt ${i} (${data.prompts[i]}): ${x.toFixed(2)} > 0`));
    t.ok(original >= 3, `mean ${original.toFixed(3)} >= 3`);
    const lines = testPrompt(data.testPrompt![0], data.testPrompt![1], model, { print: () => {} });
    t.match(lines[lines.length - 1], /\(' Mary', 0\)/, 'rank 0');
  },
);

t.test('fresh IOI prompts with held-out name/place/object combinations are answered', async (t) => {
  const r = ioiEval(model, {
    dataset: ioiEvalDataset({ templates: 'train', combos: 'heldout', n: 200, seed: 4242 }),
    batchSize: 50,
  });
  t.ok(r.Accuracy >= 0.9, `accuracy ${r.Accuracy} >= 0.9`);
  t.ok(r['Logit Difference'] >= 2, `logit difference ${r['Logit Difference'].toFixed(3)} >= 2`);
});

t.test(
  'direct logit attribution: the components sum to the logit difference; the top 3 heads carry most of it',
  async (t) => {
    const direct = sections.directLogitAttribution(model, data, cache);
    t.ok(
      Math.abs(direct.calculated - original) <= 1e-3 * Math.max(1, Math.abs(original)),
      'final residual read out = logits',
    );
    const comp = sections.componentAttribution(model, data, cache, direct.dirs);
    const perLayer = Array.from(comp.perLayer.f32());
    const sum = perLayer.reduce((a, b) => a + b, 0);
    t.ok(Math.abs(sum - original) <= 1e-3 * Math.max(1, Math.abs(original)), `components sum ${sum} = ${original}`);
    const per = Array.from(comp.perHead.f32()).sort((a, b) => b - a);
    t.ok(
      (per[0] + per[1] + per[2]) / original >= 0.5,
      `top-3 share ${((per[0] + per[1] + per[2]) / original).toFixed(3)}`,
    );
  },
);

t.test(
  'patching the heads DLA names restores the logit difference; patching the least attributed heads does not',
  async (t) => {
    const { n_heads: H } = model.cfg;
    const direct = sections.directLogitAttribution(model, data, cache);
    const comp = sections.componentAttribution(model, data, cache, direct.dirs);
    const per = Array.from(comp.perHead.f32());
    const order = per.map((_, i) => i).sort((a, b) => per[b] - per[a]);
    const corrupted = sections.corruptedLogitDiff(model, data);
    const patched = (heads: number[]): number => {
      const hooks = heads.map((i): [string, (z: Tensor) => Tensor] => {
        const [l, h] = [Math.floor(i / H), i % H];
        return [
          getActName('z', l),
          (z) => {
            const clean = cache.get(getActName('z', l)); // [B, P, H, D]
            z.slice(2, h, h + 1).assign(clean.slice(2, h, h + 1));
            return z;
          },
        ];
      });
      const logits = model.hooks(hooks, () => model.forward(data.corruptedTokens));
      return (logitsToAveLogitDiff(logits, data.answerTokens) - corrupted) / (original - corrupted);
    };
    t.ok(corrupted < 0, `the corrupted prompts flip the answer (${corrupted.toFixed(2)})`);
    const top = patched(order.slice(0, 3)),
      bottom = patched(order.slice(-3).filter((i) => Math.abs(per[i]) < Math.abs(per[order[0]])));
    t.ok(top >= 0.5, `top-3 DLA heads restore ${top.toFixed(3)} of the logit difference`);
    t.ok(bottom < top, `least attributed heads restore ${bottom.toFixed(3)}, less`);
  },
);

t.test('induction: some head scores >= 0.5 on the demo’s repeated random tokens', async (t) => {
  const s = headDetectorScores(model, data.repeatedRandomTokens, data.seqLen);
  const best = Math.max(...Array.from(s.induction.f32()));
  t.ok(best >= 0.5, `max induction score ${best.toFixed(3)}`);
});
