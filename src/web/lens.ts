/**
 * What the lens page computes for one clean/corrupted prompt pair, as plain functions of a loaded
 * model: the demo's own sections (src/demo/sections.ts) and figures (src/demo/render.ts,
 * src/report/html.ts), each panel into its own Report so the page can redraw one without the rest.
 * No DOM here: the page (main.ts) draws the Reports, and Node can run the same code.
 */
import { TypelensError } from '../errors.js';
import type { ActivationCache } from '../hooks/cache.js';
import type { HookedTransformer } from '../model/hooked-transformer.js';
import { logitsToAveLogitDiff } from '../analysis/logit-diff.js';
import { serial } from '../patching/index.js';
import type { ForwardPool } from '../parallel/pool.js';
import { parallel } from '../parallel/sweep.js';
import { Report } from '../report/html.js';
import { Tensor } from '../tensor/index.js';
import { ioiPrompts, type IoiData } from '../demo/data.js';
import * as render from '../demo/render.js';
import * as compute from '../demo/sections.js';

/** What the user asks about: a prompt, its correct and incorrect next token, and the corrupted prompt. */
export interface LensInput {
  prompt: string;
  correct: string;
  incorrect: string;
  /** the same prompt with the names swapped (empty: swap `correct` and `incorrect` in `prompt`) */
  corrupted: string;
}

/** The notebook's 8 clean/corrupted pairs (TL's Exploratory Analysis Demo, cell 22 and 59). */
export function notebookPairs(): LensInput[] {
  const { prompts, answers, corruptedPrompts } = ioiPrompts('classic');
  return prompts.map((prompt, i) => ({
    prompt,
    correct: answers[i][0],
    incorrect: answers[i][1],
    corrupted: corruptedPrompts[i],
  }));
}

/** The page's first prompt: the notebook's first pair. */
export const DEFAULT_INPUT: LensInput = notebookPairs()[0];

/** `prompt` with the two answer words exchanged (whole words, either order). */
export function swapNames(prompt: string, a: string, b: string): string {
  const x = a.trim(),
    y = b.trim();
  if (!x || !y || x === y) return prompt;
  const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return prompt.replace(new RegExp(`\\b(${esc(x)}|${esc(y)})\\b`, 'g'), (m) => (m === x ? y : x));
}

/** Tokenise an input into the demo's IoiData (one prompt), with clear errors for what cannot be run. */
export function lensData(model: HookedTransformer, input: LensInput): IoiData {
  if (!input.prompt.trim()) throw new TypelensError('the prompt is empty', 'EINPUT');
  const corruptedPrompt = input.corrupted.trim()
    ? input.corrupted
    : swapNames(input.prompt, input.correct, input.incorrect);
  const tokens = model.toTokens([input.prompt], { prependBos: true });
  const corruptedTokens = model.toTokens([corruptedPrompt], { prependBos: true });
  const P = tokens.shape[1];
  if (P > model.cfg.n_ctx)
    throw new TypelensError(`the prompt is ${P} tokens; this model's context is ${model.cfg.n_ctx}`, 'EINPUT');
  if (corruptedTokens.shape[1] !== P)
    throw new TypelensError(
      `the corrupted prompt must have as many tokens as the clean one (${corruptedTokens.shape[1]} vs ${P})`,
      'ESHAPE',
    );
  // toSingleToken names the answer that is not one token
  const answerTokens = Tensor.from([model.toSingleToken(input.correct), model.toSingleToken(input.incorrect)], [1, 2]);
  return {
    variant: 'seed',
    prompts: [input.prompt],
    answers: [[input.correct, input.incorrect]],
    tokens,
    answerTokens,
    corruptedPrompts: [corruptedPrompt],
    corruptedTokens,
    testPrompt: [input.prompt, input.correct],
    // the induction bonus is not on the page
    exampleRepeatedTokens: tokens,
    repeatedRandomTokens: tokens,
    seqLen: 0,
  };
}

/** The demo's output for one panel: printed lines go into `lines` and, on printed(), into the report. */
const sink = (report: Report, lines: string[]): render.DemoOutput => {
  let mark = lines.length;
  return {
    report,
    print: (l) => lines.push(...l.split('\n')),
    printed: () => {
      report.pre(lines.slice(mark));
      mark = lines.length;
    },
  };
};

/** The clean run and everything drawn from it without patching. */
export interface LensRun {
  data: IoiData;
  strTokens: string[];
  /** the clean run's logits [1, P, d_vocab] (the page's test hook reads them) */
  logits: Tensor;
  cache: ActivationCache;
  original: number;
  perHead: Tensor; // [L, H]
  /** flat head indices, largest direct logit attribution first */
  topHeads: number[];
  /** test_prompt's table and the logit difference */
  summary: Report;
  /** logit lens, layer and head attribution */
  attribution: Report;
  lines: string[];
}

/**
 * The clean run with its cache (shared: the pool's workers read it in place), test_prompt, the
 * logit difference, and direct logit attribution: the demo's sections on one prompt.
 */
export function analyse(model: HookedTransformer, input: LensInput, shared: boolean): LensRun {
  const data = lensData(model, input);
  const lines: string[] = [];
  const summary = new Report('summary');
  const out = sink(summary, lines);
  render.renderIntroduction(out, model, data);
  // compute.logitDifference, keeping the logits for the page's test hook
  const { logits, cache } = model.runWithCache(data.tokens, { shared });
  const perPrompt = logitsToAveLogitDiff(logits, data.answerTokens, true);
  const original = logitsToAveLogitDiff(logits, data.answerTokens);
  cache.log = out.print;
  render.renderLogitDifference(out, perPrompt, original);

  const attribution = new Report('attribution');
  const aout = sink(attribution, lines);
  const direct = compute.directLogitAttribution(model, data, cache);
  const components = compute.componentAttribution(model, data, cache, direct.dirs);
  render.renderComponentAttribution(aout, components);
  const { n_layers: L, n_heads: H } = model.cfg;
  const topHeads = compute.topHeads(components.perHead, L * H).topPos;
  return {
    data,
    strTokens: model.toStrTokens(data.tokens.index(0, 0)),
    logits,
    cache,
    original,
    perHead: components.perHead,
    topHeads,
    summary,
    attribution,
    lines,
  };
}

/** One head's attention pattern on the clean prompt (the report's circuitsvis-style view). */
export function attentionReport(model: HookedTransformer, run: LensRun, layer: number, head: number): Report {
  const { n_layers: L, n_heads: H } = model.cfg;
  if (!(layer >= 0 && layer < L && head >= 0 && head < H))
    throw new TypelensError(`no head L${layer}H${head} in a ${L}-layer, ${H}-head model`, 'EINPUT');
  const report = new Report('attention');
  render.visualizeAttentionPatterns(
    report,
    [layer * H + head],
    run.cache,
    run.strTokens,
    H,
    `Attention pattern of L${layer}H${head}`,
  );
  return report;
}

/** The head-output patching sweep: [L, H], 0 = the corrupted run's logit difference, 1 = the clean run's. */
export async function headPatching(
  model: HookedTransformer,
  run: LensRun,
  opts: { pool?: ForwardPool; onProgress?: (done: number, total: number) => void },
): Promise<{ headZ: Tensor; corrupted: number; report: Report }> {
  const corrupted = compute.corruptedLogitDiff(model, run.data);
  const metric = compute.restoredFraction(run.data, run.original, corrupted);
  const o = { onProgress: opts.onProgress, lastPositionLogits: true };
  // the same sweep the demo runs (sections.ts activationPatching), on the workers when there are any
  const headZ = opts.pool
    ? await parallel.getActPatchAttnHeadOutAllPos(opts.pool, run.data.corruptedTokens, run.cache, metric, o)
    : serial.getActPatchAttnHeadOutAllPos(model, run.data.corruptedTokens, run.cache, metric, o);
  const report = new Report('patching');
  render.renderCorrupted(sink(report, []), model, run.data, corrupted, run.original);
  // render.renderPatching's head-output figure
  report.imshow(headZ.toNested() as number[][], {
    xTitle: 'Head',
    yTitle: 'Layer',
    title: 'Logit Difference From Patched Head Output',
  });
  return { headZ, corrupted, report };
}
