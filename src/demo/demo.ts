/**
 * TransformerLens's Exploratory Analysis Demo (indirect object identification in GPT-2 small),
 * section by section as in the notebook (demos/Exploratory_Analysis_Demo.ipynb), as a function of
 * a loaded model and its inputs. It prints what the notebook prints and fills a Report with the
 * notebook's figures.
 */
import { TypelensError } from '../errors.js';
import type { HookedTransformer } from '../model/hooked-transformer.js';
import type { ForwardPool } from '../parallel/pool.js';
import type { HeadScores } from '../analysis/heads.js';
import { Report } from '../report/html.js';
import type { Tensor } from '../tensor/index.js';
import type { IoiData } from './data.js';
import { attributionPatchingSection, type AttributionComparison } from './attribution.js';
import * as render from './render.js';
import * as compute from './sections.js';
import { weightSpaceSection, type WeightSpace } from './weight-space.js';

export interface DemoOptions {
  print?: (line: string) => void;
  progress?: (label: string) => ((done: number, total: number) => void) | undefined;
  /** Shown at the top of the report (e.g. "these are random weights"). */
  banner?: string;
  modelName?: string;
  /** Run the patching sweeps on this worker pool. */
  pool?: ForwardPool;
  /**
   * Add the report's weight-space section after the notebook's last one (off by default: on
   * GPT-2 small its composition scores are ~65 GFLOP per mode plus 288 factored SVDs, minutes on a laptop).
   */
  weightSpace?: boolean;
}

/** Every number the demo computes, for tests and for callers who want data, not text. */
export interface DemoResult {
  lines: string[];
  report: Report;
  perPromptLogitDiff: Tensor;
  originalAverageLogitDiff: number;
  calculatedAverageLogitDiff: number;
  logitLens: Tensor; // [2L + 1]
  logitLensLabels: string[];
  perLayer: Tensor; // [2L + 2]
  perLayerLabels: string[];
  perHead: Tensor; // [L, H]
  topPositiveHeads: number[];
  topNegativeHeads: number[];
  corruptedAverageLogitDiff: number;
  patchedResidPre: Tensor; // [L, P]
  patchedAttnOut: Tensor;
  patchedMlpOut: Tensor;
  patchedHeadZ: Tensor; // [L, H]
  patchedHeadV: Tensor;
  patchedHeadPattern: Tensor;
  topPatchedHeads: number[];
  headScores: HeadScores;
  ablation: {
    head: number;
    original: number;
    postAblation: number;
    dla: number;
    naive: number;
    perHeadAblated: Tensor;
    lnScaleRatio: number;
  };
  /** After the notebook: attribution vs activation patching of head outputs. */
  attribution: AttributionComparison;
  /** The weight-space section's numbers (absent when opts.weightSpace is false). */
  weightSpace?: WeightSpace;
}

export async function exploratoryDemo(
  model: HookedTransformer,
  data: IoiData,
  opts: DemoOptions = {},
): Promise<DemoResult> {
  const { n_layers: L, n_heads: H } = model.cfg;
  const P = data.tokens.shape[1];
  if (data.corruptedTokens.shape[1] !== P)
    throw new TypelensError(
      `clean and corrupted prompts must have the same length, got ${P} and ${data.corruptedTokens.shape[1]} tokens`,
      'ESHAPE',
    );
  const lines: string[] = [];
  const report = new Report(`Exploratory Analysis Demo (typelens, ${data.variant} prompts)`);
  if (opts.banner) report.banner(opts.banner);
  // every section's printed lines go to the report too
  let mark = 0;
  const out: render.DemoOutput = {
    report,
    print: (l) => {
      for (const x of l.split('\n')) lines.push(x);
      (opts.print ?? console.log)(l);
    },
    printed: () => {
      report.pre(lines.slice(mark));
      mark = lines.length;
    },
  };

  // the model and test_prompt; prompts, tokens, the metric
  render.renderIntroduction(out, model, data);
  render.renderPrompts(out, model, data);
  const { cache, perPrompt, original } = compute.logitDifference(model, data, !!opts.pool);
  cache.log = out.print;
  render.renderLogitDifference(out, perPrompt, original);

  // direct logit attribution
  const direct = compute.directLogitAttribution(model, data, cache);
  render.renderDirectAttribution(out, direct, original);
  const components = compute.componentAttribution(model, data, cache, direct.dirs);
  render.renderComponentAttribution(out, components);

  // attention patterns of the top heads
  const top = compute.topHeads(components.perHead, Math.min(3, L * H));
  const strTokens0 = model.toStrTokens(data.tokens.index(0, 0));
  render.renderAttentionAnalysis(out, top, cache, strTokens0, H);

  // activation patching
  const corrupted = compute.corruptedLogitDiff(model, data);
  render.renderCorrupted(out, model, data, corrupted, original);
  const metric = compute.restoredFraction(data, original, corrupted);
  const patched = await compute.activationPatching(model, data, cache, metric, opts);
  render.renderPatching(out, patched, strTokens0, L, H);

  // consolidating: the heads whose output patching matters most
  const topPatched = compute.topPatchedHeads(patched.headZ);
  render.renderConsolidating(out, topPatched, cache, strTokens0, H);

  // bonus: induction heads; ablating the top name mover
  const { exampleCache, scores } = compute.inductionHeads(model, data);
  render.renderInductionHeads(out, model, data, exampleCache, scores);
  const ablation = compute.ablateTopNameMover(model, data, components.perHead, original);
  render.renderAblation(out, ablation);
  ablation.cache.log = out.print;
  const ablated = compute.ablatedAttribution(model, data, cache, ablation.cache, direct.dirs);
  render.renderAblatedAttribution(out, ablated, components.perHead, L, H);

  // after the notebook: attribution patching against activation patching (heads)
  const attribution = await attributionPatchingSection(out, model, data, cache, original, corrupted, opts);
  // after the notebook: the weight-space section, for the top direct-attribution heads
  const weightSpace = opts.weightSpace ? weightSpaceSection(out, model, top.topPos) : undefined;

  return {
    lines,
    report,
    perPromptLogitDiff: perPrompt,
    originalAverageLogitDiff: original,
    calculatedAverageLogitDiff: direct.calculated,
    logitLens: components.logitLens,
    logitLensLabels: components.logitLensLabels,
    perLayer: components.perLayer,
    perLayerLabels: components.perLayerLabels,
    perHead: components.perHead,
    topPositiveHeads: top.topPos,
    topNegativeHeads: top.topNeg,
    corruptedAverageLogitDiff: corrupted,
    patchedResidPre: patched.residPre,
    patchedAttnOut: patched.attnOut,
    patchedMlpOut: patched.mlpOut,
    patchedHeadZ: patched.headZ,
    patchedHeadV: patched.headV,
    patchedHeadPattern: patched.headPattern,
    topPatchedHeads: topPatched,
    headScores: scores,
    ablation: {
      head: ablation.head,
      original,
      postAblation: ablation.postAblation,
      dla: ablation.dla,
      naive: original - ablation.dla,
      perHeadAblated: ablated.perHeadAblated,
      lnScaleRatio: ablated.lnScaleRatio,
    },
    attribution,
    weightSpace,
  };
}
