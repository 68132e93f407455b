import { TypelensError } from '../errors.js';
import { softmax, Tensor } from '../tensor/index.js';
import { FactoredMatrix } from '../tensor/factored-matrix.js';
import type { HookedTransformer } from '../model/hooked-transformer.js';
import { getActName } from '../hooks/names.js';
import { getAttentionMask } from '../model/padding.js';
import { sampleLogits } from '../model/generate.js';
import { lmAccuracy, lmCrossEntropyLoss } from '../model/loss.js';

export { getAttentionMask, sampleLogits, lmAccuracy, lmCrossEntropyLoss };

/** TL's utils.transpose: swap the last two axes. */
export function transpose(t: Tensor): Tensor {
  if (t.ndim < 2) throw new TypelensError(`transpose needs at least 2 axes, got [${t.shape.join(', ')}]`, 'ESHAPE');
  return t.transpose(-2, -1);
}

/** TL's utils.get_corner: the first n entries along every axis (a FactoredMatrix's corner of AB). */
export function getCorner(t: Tensor | FactoredMatrix, n = 3): Tensor {
  if (t instanceof FactoredMatrix) return t.getCorner(n);
  let out = t;
  for (let a = 0; a < t.ndim; a++) out = out.slice(a, 0, Math.min(n, t.shape[a]));
  return out;
}

/** TL's utils.remove_batch_dim: drop a leading axis of size 1 (anything else is returned as is). */
export const removeBatchDim = (t: Tensor): Tensor => (t.ndim > 0 && t.shape[0] === 1 ? t.index(0, 0) : t);

/** TL's utils.to_numpy: the values as a flat array (tensor.toArray(); toNested() keeps the shape). */
export const toNumpy = (t: Tensor): number[] => t.toArray();

// Python's printing, for output that reads like TL's; not public API (src/index.ts lists what is).

/** Python's repr of a str: single quotes unless the string holds a ' and no ". */
export function pyRepr(s: string): string {
  const q = s.includes("'") && !s.includes('"') ? '"' : "'";
  const body = s
    .replace(/\\/g, '\\\\')
    .replace(/\n/g, '\\n')
    .replace(/\t/g, '\\t')
    .replace(q === "'" ? /'/g : /"/g, `\\${q}`);
  return q + body + q;
}
export const pyList = (xs: string[]): string => `[${xs.map(pyRepr).join(', ')}]`;
/** Python's `{x:5.2f}`. */
export const f52 = (x: number): string => x.toFixed(2).padStart(5);
/** Python's `{p:6.2%}`. */
export const pct = (p: number): string => `${(p * 100).toFixed(2)}%`.padStart(6);

/**
 * TL's utils.test_prompt: run prompt + answer once, print the answer's rank, logit
 * and probability at each answer position, the top k tokens, and the ranks. Returns the lines.
 */
export function testPrompt(
  prompt: string,
  answer: string,
  model: HookedTransformer,
  opts: {
    prependSpaceToAnswer?: boolean;
    printDetails?: boolean;
    prependBos?: boolean;
    topK?: number;
    print?: (line: string) => void;
  } = {},
): string[] {
  const { prependSpaceToAnswer = true, printDetails = true, prependBos = true, topK = 10 } = opts;
  const lines: string[] = [];
  const out = (l: string) => {
    lines.push(l);
    (opts.print ?? console.log)(l);
  };
  if (prependSpaceToAnswer && !answer.startsWith(' ')) answer = ' ' + answer;
  const promptTokens = model.toTokens(prompt, { prependBos }).toArray();
  const answerTokens = model.toTokens(answer, { prependBos: false }).toArray();
  const tokens = [...promptTokens, ...answerTokens];
  const promptStr = model.toStrTokens(prompt, { prependBos });
  const answerStr = model.toStrTokens(answer, { prependBos: false });
  const logits = model.forward(Tensor.from(tokens, [1, tokens.length]));
  const V = model.cfg.d_vocab;
  // TL's test_prompt prints the tokenized prompt and answer only under print_details
  if (printDetails) {
    out(`Tokenized prompt: ${pyList(promptStr)}`);
    out(`Tokenized answer: ${pyList(answerStr)}`);
  }
  const ranks: [string, number][] = [];
  for (let i = 0; i < answerTokens.length; i++) {
    const pos = promptTokens.length - 1 + i;
    const row = logits.index(0, 0).index(0, pos);
    const probs = softmax(row).f32();
    const lg = row.f32();
    const order = Array.from({ length: V }, (_, k) => k).sort((a, b) => probs[b] - probs[a] || a - b);
    const target = answerTokens[i];
    const rank = order.indexOf(target);
    ranks.push([answerStr[i], rank]);
    if (printDetails) {
      out('Performance on answer token:');
      out(
        `Rank: ${String(rank).padEnd(8)} Logit: ${f52(lg[target])} Prob: ${pct(probs[target])} Token: |${answerStr[i]}|`,
      );
      for (let k = 0; k < topK && k < V; k++) {
        const id = order[k];
        out(`Top ${k}th token. Logit: ${f52(lg[id])} Prob: ${pct(probs[id])} Token: |${model.toSingleStrToken(id)}|`);
      }
    }
  }
  out(`Ranks of the answer tokens: [${ranks.map(([s, r]) => `(${pyRepr(s)}, ${r})`).join(', ')}]`);
  return lines;
}

/** TL's transformer_lens.utils, the functions typelens has (camelCase). */
export const tlUtils = {
  getActName,
  testPrompt,
  getAttentionMask,
  sampleLogits,
  lmCrossEntropyLoss,
  lmAccuracy,
  transpose,
  getCorner,
  removeBatchDim,
  toNumpy,
};
