/**
 * The Exploratory Analysis Demo's inputs: the notebook's IOI prompts and answers, their corrupted
 * (names swapped) versions, the repeated texts of the induction bonus, all tokenized.
 */
import type { HookedTransformer } from '../model/hooked-transformer.js';
import { rng } from '../model/make-weights.js';
import { Tensor } from '../tensor/index.js';

/** classic: the notebook's 8 prompts; seed: its first prompt alone (a quick run on random weights). */
export type DemoVariant = 'classic' | 'seed';

/** The demo's inputs: prompts, (correct, incorrect) answers and their token ids. */
export interface IoiData {
  variant: DemoVariant;
  prompts: string[];
  answers: [string, string][];
  tokens: Tensor; // [B, P]
  answerTokens: Tensor; // [B, 2]
  corruptedPrompts: string[];
  corruptedTokens: Tensor; // [B, P]
  /** The prompt and answer of the notebook's utils.test_prompt cell, or null to leave that cell out. */
  testPrompt: [string, string] | null;
  /** "Research in mechanistic ..." twice with BOS (cell 94): [1, 43]. */
  exampleRepeatedTokens: Tensor;
  /** Random tokens repeated twice, no BOS (cell 98): [2, 2 * seqLen]. */
  repeatedRandomTokens: Tensor;
  seqLen: number;
}

const TEMPLATES = [
  'When John and Mary went to the shops,{} gave the bag to',
  'When Tom and James went to the park,{} gave the ball to',
  'When Dan and Sid went to the shops,{} gave an apple to',
  'After Martin and Amy went to the park,{} gave a drink to',
];
const NAMES: [string, string][] = [
  [' Mary', ' John'],
  [' Tom', ' James'],
  [' Dan', ' Sid'],
  [' Martin', ' Amy'],
];
export const EXAMPLE_TEXT =
  'Research in mechanistic interpretability seeks to explain behaviors of machine learning models in terms of their internal components.';

/** Cell 22 (classic: 4 templates x 2 orders) or the seed variant's single prompt. */
export function ioiPrompts(variant: DemoVariant): {
  prompts: string[];
  answers: [string, string][];
  corruptedPrompts: string[];
} {
  const prompts: string[] = [],
    answers: [string, string][] = [];
  TEMPLATES.forEach((t, i) => {
    for (const j of [0, 1]) {
      answers.push([NAMES[i][j], NAMES[i][1 - j]]);
      prompts.push(t.replace('{}', NAMES[i][1 - j]));
    }
  });
  // cell 59: each pair swapped, same answers
  const corrupted = prompts.map((_, i) => prompts[i ^ 1]);
  if (variant === 'seed')
    return { prompts: prompts.slice(0, 1), answers: answers.slice(0, 1), corruptedPrompts: corrupted.slice(0, 1) };
  return { prompts, answers, corruptedPrompts: corrupted };
}

/** Uniform integers in [lo, hi) from the project's seeded generator (torch's RNG is not portable). */
export function randint(lo: number, hi: number, n: number, seed: number): number[] {
  const r = rng(seed);
  return Array.from({ length: n }, () => lo + Math.floor(r.uniform() * (hi - lo)));
}

/** Tokenize everything the demo needs with the model's tokenizer. */
export function ioiData(model: HookedTransformer, variant: DemoVariant): IoiData {
  const { prompts, answers, corruptedPrompts } = ioiPrompts(variant);
  const tokens = model.toTokens(prompts, { prependBos: true });
  const corruptedTokens = model.toTokens(corruptedPrompts, { prependBos: true });
  const answerTokens = Tensor.from(
    answers.flatMap(([a, b]) => [model.toSingleToken(a), model.toSingleToken(b)]),
    [answers.length, 2],
  );
  const example = model.toTokens(EXAMPLE_TEXT + EXAMPLE_TEXT, { prependBos: true });
  const seqLen = Math.min(100, Math.floor(model.cfg.n_ctx / 2));
  const rand = randint(100, Math.min(20000, model.cfg.d_vocab), 2 * seqLen, 0);
  const rows = [0, 1].map((b) => rand.slice(b * seqLen, (b + 1) * seqLen));
  const repeatedRandomTokens = Tensor.from(
    rows.flatMap((r) => [...r, ...r]),
    [2, 2 * seqLen],
  );
  const testPromptText =
    variant === 'classic'
      ? 'After John and Mary went to the store, John gave a bottle of milk to'
      : 'After John and Mary went to the shops, John gave a bottle of milk to';
  return {
    variant,
    prompts,
    answers,
    tokens,
    answerTokens,
    corruptedPrompts,
    corruptedTokens,
    testPrompt: [testPromptText, ' Mary'],
    exampleRepeatedTokens: example,
    repeatedRandomTokens,
    seqLen,
  };
}
