/**
 * TransformerLens's evals.py: quick checks that a model works (sanityCheck, inductionLoss), the
 * mean loss over token streams (evaluate), and the indirect-object-identification eval with its
 * dataset generator (IOIDataset, ioiEval).
 */
import { TypelensError } from '../errors.js';
import { rng } from '../model/make-weights.js';
import { encodeText, EOT } from '../model/tokenizer.js';
import { Tensor } from '../tensor/index.js';

/** What the evals need from a model: a forward to logits [B, P, V] and the sizes (HookedTransformer fits). */
export interface EvalModel {
  readonly cfg: { readonly n_ctx: number; readonly d_vocab: number; readonly bos_token_id: number };
  forward(tokens: Tensor): Tensor;
  toTokens(text: string, opts?: { prependBos?: boolean }): Tensor;
}

/**
 * Per-token next-token loss, -log softmax(logits[b, p])[tokens[b, p + 1]], [B, P - 1], in float64
 * (TL's utils.lm_cross_entropy_loss with per_token=True). A local helper: the model's own
 * lmCrossEntropyLoss may replace it.
 */
export function perTokenLoss(logits: Tensor, tokens: Tensor): Float64Array[] {
  const [B, P, V] = logits.shape;
  if (tokens.ndim !== 2 || tokens.shape[0] !== B || tokens.shape[1] !== P) {
    throw new TypelensError(
      `logits [${logits.shape.join(', ')}] and tokens [${tokens.shape.join(', ')}] do not match`,
      'ESHAPE',
    );
  }
  const lg = logits.f32(),
    tk = tokens.f32();
  const out: Float64Array[] = [];
  for (let b = 0; b < B; b++) {
    const row = new Float64Array(P - 1);
    for (let p = 0; p < P - 1; p++) {
      const o = (b * P + p) * V;
      let m = -Infinity;
      for (let v = 0; v < V; v++) if (lg[o + v] > m) m = lg[o + v];
      let s = 0;
      for (let v = 0; v < V; v++) s += Math.exp(lg[o + v] - m);
      row[p] = m + Math.log(s) - lg[o + tk[b * P + p + 1]];
    }
    out.push(row);
  }
  return out;
}

const mean = (rows: ArrayLike<number>[]): number => {
  let s = 0,
    n = 0;
  for (const r of rows)
    for (let i = 0; i < r.length; i++) {
      s += r[i];
      n++;
    }
  return s / n;
};

/** TL's model(tokens, return_type="loss"): the mean next-token loss over batch and positions. */
export function lossOf(model: EvalModel, tokens: Tensor): number {
  return mean(perTokenLoss(model.forward(tokens), tokens));
}

/** The first paragraph of "Zoom In: An Introduction to Circuits", TL's sanity_check text. */
export const SANITY_CHECK_TEXT =
  "Many important transition points in the history of science have been moments when science 'zoomed in.' At these points, we develop a visualization or tool that allows us to see the world in a new level of detail, and a new field of science develops to study the world through this lens.";

/**
 * TL's evals.sanity_check: the loss on one paragraph (with BOS). Below 5 the model is probably
 * fine; above 7 something is wrong. A rough check, not an evaluation.
 */
export function sanityCheck(model: EvalModel): number {
  return lossOf(model, model.toTokens(SANITY_CHECK_TEXT));
}

/**
 * TL's evals.induction_loss: random tokens in [100, 20000) (capped at d_vocab) repeated twice,
 * the first replaced by BOS when prependBos; the mean loss over the second half (TL's
 * per-token losses [:, subseqLen + 1:]). Low on a model with induction heads. Seeded (torch's
 * RNG is not portable).
 */
export function inductionLoss(
  model: EvalModel,
  opts: { batchSize?: number; subseqLen?: number; prependBos?: boolean; seed?: number } = {},
): number {
  const { batchSize = 4, subseqLen = 384, prependBos = true, seed = 0 } = opts;
  if (2 * subseqLen > model.cfg.n_ctx)
    throw new TypelensError(
      `inductionLoss: 2 x subseqLen = ${2 * subseqLen} tokens do not fit n_ctx = ${model.cfg.n_ctx}`,
      'EINPUT',
    );
  const r = rng(seed),
    hi = Math.min(20000, model.cfg.d_vocab),
    lo = Math.min(100, hi - 1);
  const data: number[] = [];
  for (let b = 0; b < batchSize; b++) {
    const half = Array.from({ length: subseqLen }, () => lo + Math.floor(r.uniform() * (hi - lo)));
    const row = [...half, ...half];
    if (prependBos) row[0] = model.cfg.bos_token_id;
    data.push(...row);
  }
  const tokens = Tensor.from(data, [batchSize, 2 * subseqLen]);
  return mean(perTokenLoss(model.forward(tokens), tokens).map((row) => row.subarray(subseqLen + 1)));
}

/**
 * Cut a token stream into rows of seqLen for evaluation, TL's tokenize_and_concatenate: rows of
 * seqLen - 1 stream tokens with BOS in front (addBosToken, the default) or of seqLen stream
 * tokens; the incomplete tail is dropped.
 */
export function streamToRows(
  stream: ArrayLike<number> | Tensor,
  seqLen: number,
  opts: { addBosToken?: boolean; bos?: number } = {},
): number[][] {
  const { addBosToken = true, bos = EOT } = opts;
  const ids = stream instanceof Tensor ? stream.reshape([stream.size]).toArray() : Array.from(stream);
  const per = addBosToken ? seqLen - 1 : seqLen;
  if (per < 1) throw new TypelensError(`seqLen ${seqLen} leaves no room for tokens`, 'EINPUT');
  const rows: number[][] = [];
  for (let i = 0; i + per <= ids.length; i += per)
    rows.push(addBosToken ? [bos, ...ids.slice(i, i + per)] : ids.slice(i, i + per));
  return rows;
}

/**
 * TL's evals.evaluate_on_dataset: the mean over batches of each batch's mean loss. As in TL, it
 * stops after the batch that takes the count past `truncate` (truncate + 1 batches).
 */
export function evaluateOnDataset(
  model: EvalModel,
  batches: Iterable<Tensor>,
  opts: { truncate?: number } = {},
): number {
  const { truncate = 100 } = opts;
  let running = 0,
    total = 0;
  for (const batch of batches) {
    running += lossOf(model, batch);
    total += 1;
    if (total > truncate) break;
  }
  if (total === 0)
    throw new TypelensError('evaluateOnDataset: no batches (is the token stream shorter than one row?)', 'EINPUT');
  return running / total;
}

/**
 * TL's evals.evaluate over token streams instead of its four downloaded datasets: each named
 * stream is cut into rows of seqLen (BOS first, default min(n_ctx, 1024) as TL's
 * tokenize_and_concatenate), batched by batchSize, and evaluated; prints `name: loss` and returns
 * `{ name_loss }` as TL does.
 */
export function evaluate(
  model: EvalModel,
  streams: Record<string, ArrayLike<number> | Tensor>,
  opts: {
    truncate?: number;
    batchSize?: number;
    seqLen?: number;
    addBosToken?: boolean;
    print?: (line: string) => void;
  } = {},
): Record<string, number> {
  const { truncate = 100, batchSize = 8, seqLen = Math.min(model.cfg.n_ctx, 1024), addBosToken = true } = opts;
  const losses: Record<string, number> = {};
  for (const [name, stream] of Object.entries(streams)) {
    const rows = streamToRows(stream, seqLen, { addBosToken, bos: model.cfg.bos_token_id });
    function* batches(): Generator<Tensor> {
      for (let i = 0; i < rows.length; i += batchSize) {
        const b = rows.slice(i, i + batchSize);
        yield Tensor.from(b.flat(), [b.length, seqLen]);
      }
    }
    const loss = evaluateOnDataset(model, batches(), { truncate });
    (opts.print ?? console.log)(`${name}: ${loss}`);
    losses[`${name}_loss`] = loss;
  }
  return losses;
}

/** One IOI sentence: the text, and the indirect object (the answer) and subject, each with its leading space. */
export interface IOISample {
  text: string;
  IO: string;
  S: string;
}
/** An IOI sample as tokens (TL's __getitem__): the prompt with BOS and the two answers' ids. */
export interface IOIItem {
  prompt: number[];
  IO: number[];
  S: number[];
}

export interface IOIDatasetOptions {
  /** Text -> GPT-2 token ids (the default tokenizer). */
  tokenizer?: (text: string) => number[];
  bosTokenId?: number;
  templates?: string[];
  names?: string[];
  /** Placeholder -> choices, e.g. { LOCATION: [...], OBJECT: [...] }. */
  nouns?: Record<string, string[]>;
  numSamples?: number;
  /** Each draw gives both orders of the two names (numSamples / 2 draws). */
  symmetric?: boolean;
  prependBos?: boolean;
  seed?: number;
}

/**
 * TL's evals.IOIDataset: sentences from templates in which [A] is the indirect object and [B]
 * the subject, names drawn two at a time without replacement, [LOCATION] / [OBJECT] filled from
 * `nouns`. TL's default templates have both orders: "[A] and [B] ... [B] handed ... to [A]"
 * (ABBA) and "Then, [B] and [A] ... [B] gave ... to [A]" (BABA). Defaults are TL's (names John
 * and Mary, places store and market, objects milk, eggs and bread: each a single GPT-2 token after
 * a space). Seeded; unlike TL, which re-seeds Python's random with 42 before every sample (so all
 * of its samples are the same sentence), one generator runs through the whole dataset.
 */
export class IOIDataset {
  readonly samples: IOISample[] = [];
  readonly templates: string[];
  readonly names: string[];
  readonly nouns: Record<string, string[]>;
  readonly prependBos: boolean;
  private readonly tokenizer: (text: string) => number[];
  private readonly bos: number;

  static getDefaultNames(): string[] {
    return ['John', 'Mary'];
  }
  static getDefaultTemplates(): string[] {
    return [
      '[A] and [B] went to the [LOCATION] to buy [OBJECT]. [B] handed the [OBJECT] to [A]',
      'Then, [B] and [A] went to the [LOCATION]. [B] gave the [OBJECT] to [A]',
    ];
  }
  static getDefaultNouns(): Record<string, string[]> {
    return { LOCATION: ['store', 'market'], OBJECT: ['milk', 'eggs', 'bread'] };
  }

  constructor(opts: IOIDatasetOptions = {}) {
    this.tokenizer = opts.tokenizer ?? encodeText;
    this.bos = opts.bosTokenId ?? EOT;
    this.prependBos = opts.prependBos ?? true;
    this.templates = opts.templates ?? IOIDataset.getDefaultTemplates();
    this.names = opts.names ?? IOIDataset.getDefaultNames();
    this.nouns = opts.nouns ?? IOIDataset.getDefaultNouns();
    if (this.names.length < 2) throw new TypelensError('IOIDataset needs at least two names', 'EINPUT');
    if (this.templates.length === 0) throw new TypelensError('IOIDataset needs at least one template', 'EINPUT');
    const numSamples = opts.numSamples ?? 1000,
      symmetric = opts.symmetric ?? false;
    const r = rng(opts.seed ?? 42);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r.uniform() * xs.length)];
    for (let n = 0; n < (symmetric ? Math.floor(numSamples / 2) : numSamples); n++) {
      let template = pick(this.templates);
      for (const [type, list] of Object.entries(this.nouns)) template = template.split(`[${type}]`).join(pick(list));
      const a = Math.floor(r.uniform() * this.names.length);
      let b = Math.floor(r.uniform() * (this.names.length - 1));
      if (b >= a) b++;
      const [A, B] = [this.names[a], this.names[b]];
      const fill = (x: string, y: string) => template.split('[A]').join(x).split('[B]').join(y);
      this.samples.push({ text: fill(A, B), IO: ' ' + A, S: ' ' + B });
      if (symmetric) this.samples.push({ text: fill(B, A), IO: ' ' + B, S: ' ' + A });
    }
  }

  get length(): number {
    return this.samples.length;
  }

  /** TL's __getitem__: the prompt's ids (BOS first when prependBos) and the IO and S ids. */
  get(idx: number): IOIItem {
    const s = this.samples[idx];
    if (!s) throw new TypelensError(`IOIDataset index ${idx} is outside [0, ${this.samples.length})`, 'EINPUT');
    const prompt = this.tokenizer(s.text);
    return {
      prompt: this.prependBos ? [this.bos, ...prompt] : prompt,
      IO: this.tokenizer(s.IO),
      S: this.tokenizer(s.S),
    };
  }
}

/** TL's ioi_eval result (its keys). */
export interface IOIEvalResult {
  'Logit Difference': number;
  Accuracy: number;
}

/**
 * TL's evals.ioi_eval: for each sample, the logit of the indirect object minus that of the
 * subject at the position before the first token where they differ (the prompt ends with the
 * IO), averaged; the accuracy is the fraction with a positive difference. Prompts are batched,
 * right-padded with 0 as TL's pad_sequence (causal attention: padding does not change the logits
 * read). The default dataset is IOIDataset({ numSamples, symmetric }) with the model's BOS.
 */
export function ioiEval(
  model: EvalModel,
  opts: { dataset?: IOIDataset; batchSize?: number; numSamples?: number; symmetric?: boolean } = {},
): IOIEvalResult {
  const { batchSize = 8, numSamples = 1000, symmetric = false } = opts;
  const dataset = opts.dataset ?? new IOIDataset({ numSamples, symmetric, bosTokenId: model.cfg.bos_token_id });
  const n = dataset.length;
  if (n === 0) throw new TypelensError('ioiEval: the dataset is empty', 'EINPUT');
  let totalCorrect = 0,
    totalDiff = 0;
  for (let i = 0; i < n; i += batchSize) {
    const items = Array.from({ length: Math.min(batchSize, n - i) }, (_, k) => dataset.get(i + k));
    const P = Math.max(...items.map((it) => it.prompt.length));
    const tokens = Tensor.from(
      items.flatMap((it) => [...it.prompt, ...new Array<number>(P - it.prompt.length).fill(0)]),
      [items.length, P],
    );
    const logits = model.forward(tokens);
    const V = logits.shape[2],
      lg = logits.f32();
    items.forEach((it, b) => {
      const prefix = it.prompt.length - it.IO.length;
      const m = Math.min(it.IO.length, it.S.length);
      const start = it.IO.slice(0, m).findIndex((id, k) => id !== it.S[k]);
      if (start < 0) throw new TypelensError(`ioiEval: sample ${i + b}'s IO and S tokens do not differ`, 'EINPUT');
      const at = (b * P + prefix + start - 1) * V;
      const diff = lg[at + it.IO[start]] - lg[at + it.S[start]];
      totalDiff += diff;
      if (diff > 0) totalCorrect += 1;
    });
  }
  return { 'Logit Difference': totalDiff / n, Accuracy: totalCorrect / n };
}

/** TL's transformer_lens.evals module. */
export const evals = { sanityCheck, inductionLoss, evaluate, evaluateOnDataset, ioiEval, IOIDataset };
