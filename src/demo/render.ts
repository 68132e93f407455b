/**
 * How the Exploratory Analysis Demo shows its sections: the lines the notebook prints (in TL's and
 * torch's formats) and the report's headings, prose and figures. Nothing here computes results.
 */
import type { ActivationCache } from '../hooks/cache.js';
import type { HookedTransformer } from '../model/hooked-transformer.js';
import type { HeadScores } from '../analysis/heads.js';
import { pyList, pyRepr, testPrompt } from '../analysis/utils.js';
import type { Report } from '../report/html.js';
import { pyRound, torchRepr, torchSize } from '../report/format.js';
import { Tensor } from '../tensor/index.js';
import type { IoiData } from './data.js';
import type { Ablation, ComponentAttribution, DirectAttribution, Patching } from './sections.js';

/** Where a section goes: printed lines, and the report (which also shows the lines printed since the last flush). */
export interface DemoOutput {
  report: Report;
  print(line: string): void;
  /** Put the lines printed since the last call into the report, as one block. */
  printed(): void;
}

const grid = (t: Tensor): number[][] => t.toNested() as number[][];
const headLabel = (i: number, H: number): string => `L${Math.floor(i / H)}H${i % H}`;
const fmt3 = (x: number): string => pyRound(x, 3).toFixed(3);
const fmt2 = (x: number): string => pyRound(x, 2).toFixed(2);

/** The notebook's visualize_attention_patterns: heads as flat indices, patterns of prompt 0. */
export function visualizeAttentionPatterns(
  report: Report,
  heads: number[],
  cache: ActivationCache,
  strTokens: string[],
  H: number,
  title: string,
): void {
  report.attention(
    heads.map((i) => {
      const l = Math.floor(i / H),
        h = i % H;
      return {
        name: `L${l}H${h}`,
        pattern: cache.get(['pattern', l]).index(0, 0).index(0, h).toNested() as number[][],
      };
    }),
    strTokens,
    title,
  );
}

export function renderIntroduction(out: DemoOutput, model: HookedTransformer, data: IoiData): void {
  out.report
    .heading('Introduction')
    .para(
      'Indirect object identification: in "When John and Mary went to the shops, John gave the bag to", GPT-2 should predict " Mary". ' +
        'The model was loaded with fold_ln, center_writing_weights, center_unembed and refactor_factored_attn_matrices, as in the notebook.',
    );
  if (data.testPrompt) {
    out.report
      .heading('test_prompt', 3)
      .para("The answer's rank, logit and probability, and the ten most likely next tokens.");
    testPrompt(data.testPrompt[0], data.testPrompt[1], model, { prependBos: true, print: out.print });
    out.printed();
  }
}

export function renderPrompts(out: DemoOutput, model: HookedTransformer, data: IoiData): void {
  out.report
    .heading('Prompts, answers and the logit difference')
    .para(
      'Each prompt is paired with its correct and incorrect name; the metric is the logit of the correct name minus that of the incorrect one, at the final position.',
    );
  out.print(pyList(data.prompts));
  out.print(`[${data.answers.map(([a, b]) => `(${pyRepr(a)}, ${pyRepr(b)})`).join(', ')}]`);
  for (let b = 0; b < data.tokens.shape[0]; b++) {
    const str = model.toStrTokens(data.tokens.index(0, b));
    out.print(`Prompt length: ${str.length}`);
    out.print(`Prompt as tokens: ${pyList(str)}`);
  }
}

export function renderLogitDifference(out: DemoOutput, perPrompt: Tensor, original: number): void {
  out.print(
    `Per prompt logit difference: ${torchRepr(
      Tensor.from(
        perPrompt.toArray().map((x) => pyRound(x, 3)),
        perPrompt.shape,
      ),
    )}`,
  );
  out.print(`Average logit difference: ${fmt3(original)}`);
  out.printed();
}

export function renderDirectAttribution(out: DemoOutput, r: DirectAttribution, original: number): void {
  out.report
    .heading('Direct logit attribution')
    .para(
      "The residual stream at the final position is a sum of components; scaling it by the final layer norm (frozen as a linear map) and projecting on W_U[:, correct] - W_U[:, incorrect] gives each component's direct contribution to the logit difference.",
    );
  out.print(`Answer residual directions shape: ${torchSize(r.answerDirs.shape)}`);
  out.print(`Logit difference directions shape: ${torchSize(r.dirs.shape)}`);
  out.print(`Final residual stream shape: ${torchSize(r.finalResid.shape)}`);
  out.print(`Calculated average logit diff: ${fmt3(r.calculated)}`);
  out.print(`Original logit difference: ${fmt3(original)}`);
  out.printed();
}

export function renderComponentAttribution(out: DemoOutput, r: ComponentAttribution): void {
  const { report } = out;
  report
    .heading('Logit lens', 3)
    .para(
      'The accumulated residual stream after each half-layer, read out through the final layer norm and the logit-difference direction.',
    );
  report.line(r.logitLens.toArray(), {
    x: r.logitLensLabels.map((_, i) => i / 2),
    hover: r.logitLensLabels,
    title: 'Logit Difference From Accumulate Residual Stream',
  });
  report
    .heading('Layer attribution', 3)
    .para("The same read-out for each layer's attention and MLP output separately.");
  report.line(r.perLayer.toArray(), { hover: r.perLayerLabels, title: 'Logit Difference From Each Layer' });
  report.heading('Head attribution', 3).para('Split the attention outputs by head (without b_O).');
  out.printed();
  report.imshow(grid(r.perHead), { xTitle: 'Head', yTitle: 'Layer', title: 'Logit Difference From Each Head' });
}

export function renderAttentionAnalysis(
  out: DemoOutput,
  top: { topPos: number[]; topNeg: number[] },
  cache: ActivationCache,
  strTokens: string[],
  H: number,
): void {
  out.report
    .heading('Attention analysis')
    .para('Where the heads with the largest direct effect look from each token, on the first prompt.');
  visualizeAttentionPatterns(out.report, top.topPos, cache, strTokens, H, 'Top 3 Positive Logit Attribution Heads');
  visualizeAttentionPatterns(out.report, top.topNeg, cache, strTokens, H, 'Top 3 Negative Logit Attribution Heads');
}

export function renderCorrupted(
  out: DemoOutput,
  model: HookedTransformer,
  data: IoiData,
  corrupted: number,
  original: number,
): void {
  out.report
    .heading('Activation patching')
    .para(
      'Run the corrupted prompts (names swapped), patch in one clean activation, and measure how much of the clean logit difference comes back: 0 = no effect, 1 = full recovery.',
    );
  out.print(`Corrupted Average Logit Diff ${fmt2(corrupted)}`);
  out.print(`Clean Average Logit Diff ${fmt2(original)}`);
  out.print(pyList(model.toString(data.corruptedTokens) as string[]));
  out.printed();
}

export function renderPatching(out: DemoOutput, p: Patching, strTokens: string[], L: number, H: number): void {
  const { report } = out;
  const positionLabels = strTokens.map((t, i) => `${t}_${i}`);
  report.heading('Residual stream', 3).imshow(grid(p.residPre), {
    x: positionLabels,
    xTitle: 'Position',
    yTitle: 'Layer',
    title: 'Logit Difference From Patched Residual Stream',
  });
  report.heading('Attention and MLP layers', 3).imshow(grid(p.attnOut), {
    x: positionLabels,
    xTitle: 'Position',
    yTitle: 'Layer',
    title: 'Logit Difference From Patched Attention Layer',
  });
  report.imshow(grid(p.mlpOut), {
    x: positionLabels,
    xTitle: 'Position',
    yTitle: 'Layer',
    title: 'Logit Difference From Patched MLP Layer',
  });
  report
    .heading('Heads', 3)
    .imshow(grid(p.headZ), { xTitle: 'Head', yTitle: 'Layer', title: 'Logit Difference From Patched Head Output' });
  report.imshow(grid(p.headV), { xTitle: 'Head', yTitle: 'Layer', title: 'Logit Difference From Patched Head Value' });
  const headLabels = Array.from({ length: L * H }, (_, i) => headLabel(i, H));
  const layerOfHead = Array.from({ length: L * H }, (_, i) => Math.floor(i / H));
  report.scatter({
    x: p.headV.toArray(),
    y: p.headZ.toArray(),
    xTitle: 'Value Patch',
    yTitle: 'Output Patch',
    color: layerOfHead,
    colorTitle: 'Layer',
    hover: headLabels,
    rangeX: [-0.5, 0.5],
    rangeY: [-0.5, 0.5],
    title: 'Scatter plot of output patching vs value patching',
  });
  report.imshow(grid(p.headPattern), {
    xTitle: 'Head',
    yTitle: 'Layer',
    title: 'Logit Difference From Patched Head Pattern',
  });
  report.scatter({
    x: p.headPattern.toArray(),
    y: p.headZ.toArray(),
    xTitle: 'Attention Patch',
    yTitle: 'Output Patch',
    hover: headLabels,
    title: 'Scatter plot of output patching vs attention patching',
  });
}

export function renderConsolidating(
  out: DemoOutput,
  topPatched: number[],
  cache: ActivationCache,
  strTokens: string[],
  H: number,
): void {
  out.report
    .heading('Consolidating understanding')
    .para(
      'The ten heads whose output patching matters most, split into early, middle and late layers (7 and 9 as boundaries, as in the notebook).',
    );
  const firstMid = 7 * H,
    firstLate = 9 * H;
  visualizeAttentionPatterns(
    out.report,
    topPatched.filter((i) => i < firstMid),
    cache,
    strTokens,
    H,
    'Top Early Heads',
  );
  visualizeAttentionPatterns(
    out.report,
    topPatched.filter((i) => i >= firstMid && i < firstLate),
    cache,
    strTokens,
    H,
    'Top Middle Heads',
  );
  visualizeAttentionPatterns(
    out.report,
    topPatched.filter((i) => i >= firstLate),
    cache,
    strTokens,
    H,
    'Top Late Heads',
  );
}

export function renderInductionHeads(
  out: DemoOutput,
  model: HookedTransformer,
  data: IoiData,
  exampleCache: ActivationCache,
  scores: HeadScores,
): void {
  const { report } = out;
  const { n_layers: L, n_heads: H } = model.cfg;
  report
    .heading('Bonus: induction, previous-token and duplicate-token heads')
    .para(
      'On text repeated twice, induction heads attend from each token of the second copy to the token after its first occurrence.',
    );
  const exHeads = [81, 65].filter((i) => i < L * H);
  visualizeAttentionPatterns(
    report,
    exHeads,
    exampleCache,
    model.toStrTokens(data.exampleRepeatedTokens.index(0, 0)),
    H,
    'Induction Heads',
  );
  const corner = (t: Tensor) =>
    torchRepr(
      Tensor.from(
        grid(t)
          .slice(0, 3)
          .flatMap((r) => r.slice(0, 3).map((x) => pyRound(x, 3))),
        [Math.min(3, L), Math.min(3, H)],
      ),
    );
  out.print(corner(scores.previousToken));
  out.print(corner(scores.duplicateToken));
  out.print(corner(scores.induction));
  out.printed();
  report.para(`Random tokens (seeded, ${data.seqLen} of them, repeated once; not torch's draw).`);
  report.imshow(grid(scores.previousToken), { xTitle: 'Head', yTitle: 'Layer', title: 'Previous Token Scores' });
  report.imshow(grid(scores.duplicateToken), { xTitle: 'Head', yTitle: 'Layer', title: 'Duplicate Token Scores' });
  report.imshow(grid(scores.induction), { xTitle: 'Head', yTitle: 'Layer', title: 'Induction Head Scores' });
}

export function renderAblation(out: DemoOutput, a: Ablation): void {
  out.report
    .heading('Bonus: ablating the top name mover')
    .para(
      'Zero the top direct-attribution head at the final position and compare the new logit difference with the naive prediction (original minus its direct effect).',
    );
  out.print(`Top Name Mover to ablate: L${a.layer}H${a.headIndex}`);
  out.print(`Original logit diff: ${fmt2(a.original)}`);
  out.print(`Post ablation logit diff: ${fmt2(a.postAblation)}`);
  out.print(`Direct Logit Attribution of top name mover head: ${fmt2(a.dla)}`);
  out.print(`Naive prediction of post ablation logit diff: ${fmt2(a.original - a.dla)}`);
}

export function renderAblatedAttribution(
  out: DemoOutput,
  r: { perHeadAblated: Tensor; lnScaleRatio: number; scaleOriginal: Float32Array; scaleAblated: Float32Array },
  perHead: Tensor,
  L: number,
  H: number,
): void {
  const { report } = out;
  const B = r.scaleOriginal.length;
  const headLabels = Array.from({ length: L * H }, (_, i) => headLabel(i, H));
  report.imshow(grid(r.perHeadAblated), { xTitle: 'Head', yTitle: 'Layer' });
  report.scatter({
    x: r.perHeadAblated.toArray(),
    y: perHead.toArray(),
    xTitle: 'Ablated',
    yTitle: 'Original',
    hover: headLabels,
    rangeX: [-3, 3],
    rangeY: [-3, 3],
    title: 'Original vs Post-Ablation Direct Logit Attribution of Heads',
  });
  out.print(`Average LN scaling ratio: ${fmt3(r.lnScaleRatio)}`);
  out.print(
    `Ablation LN scale ${torchRepr(
      Tensor.from(
        Array.from(r.scaleAblated, (x) => pyRound(x, 2)),
        [B, 1],
      ),
    )}`,
  );
  out.print(
    `Original LN scale ${torchRepr(
      Tensor.from(
        Array.from(r.scaleOriginal, (x) => pyRound(x, 2)),
        [B, 1],
      ),
    )}`,
  );
  out.printed();
}
