// TL's HookedTransformer.generate and utils.sample_logits.
import { TypelensError } from '../errors.js';
import { Tensor } from '../tensor/index.js';
import type { ModelConfig } from './config.js';
import { HookedTransformerKeyValueCache } from './kv-cache.js';
import { rng } from './make-weights.js';
import type { PaddingSide } from './padding.js';
import { decodeTokens } from './tokenizer.js';

export interface SampleOptions {
  topK?: number | null;
  topP?: number | null;
  /** 0 = greedy (argmax). Default 1. */
  temperature?: number;
  /** Subtracted from a logit once per occurrence of its token in `tokens` (the row's context). */
  freqPenalty?: number;
  /** [B, P] context the frequency penalty counts. */
  tokens?: Tensor;
  /** Uniform [0, 1) source (default Math.random): a seeded one makes sampling reproducible. */
  random?: () => number;
}

/**
 * TL's utils.sample_logits: final logits [B, V] -> one token id per row. temperature 0 is argmax;
 * otherwise logits / temperature, minus freqPenalty x count of each token in the row's context,
 * then top-k (keep logits >= the k-th largest) or else top-p (keep the smallest prefix of the
 * sorted distribution whose mass exceeds p; the first token always stays), then one categorical draw.
 */
export function sampleLogits(finalLogits: Tensor, opts: SampleOptions = {}): number[] {
  const { topK = null, topP = null, temperature = 1, freqPenalty = 0 } = opts;
  const random = opts.random ?? Math.random;
  const f = finalLogits.ndim === 1 ? finalLogits.unsqueeze(0) : finalLogits;
  if (f.ndim !== 2)
    throw new TypelensError(
      `sampleLogits: logits must be [batch, d_vocab], got [${finalLogits.shape.join(', ')}]`,
      'ESHAPE',
    );
  if (topK != null && !(Number.isInteger(topK) && topK > 0))
    throw new TypelensError(`topK must be a positive integer, got ${topK}`, 'EINPUT');
  if (topP != null && !(topP > 0 && topP <= 1))
    throw new TypelensError(`topP must be in (0, 1], got ${topP}`, 'EINPUT');
  if (!(temperature >= 0)) throw new TypelensError(`temperature must be >= 0, got ${temperature}`, 'EINPUT');
  const [B, V] = f.shape,
    all = f.contiguous().f32();
  const ctx = opts.tokens ? (opts.tokens.ndim === 1 ? opts.tokens.unsqueeze(0) : opts.tokens).contiguous() : null;
  const out: number[] = [];
  for (let b = 0; b < B; b++) {
    const row = Float64Array.from(all.subarray(b * V, (b + 1) * V));
    if (temperature === 0) {
      let best = 0;
      for (let v = 1; v < V; v++) if (row[v] > row[best]) best = v;
      out.push(best);
      continue;
    }
    for (let v = 0; v < V; v++) row[v] /= temperature;
    if (freqPenalty > 0 && ctx) {
      const P = ctx.shape[1],
        ids = ctx.f32();
      for (let p = 0; p < P; p++) row[ids[b * P + p]] -= freqPenalty;
    }
    if (topK != null) {
      const kth = Float64Array.from(row).sort().reverse()[Math.min(topK, V) - 1];
      for (let v = 0; v < V; v++) if (row[v] < kth) row[v] = -Infinity;
    } else if (topP != null) {
      const order = Array.from({ length: V }, (_, i) => i).sort((x, y) => row[y] - row[x] || x - y);
      const mx = row[order[0]];
      let z = 0;
      for (const i of order) z += Math.exp(row[i] - mx);
      let cum = 0,
        prevOver = false;
      for (let r = 0; r < V; r++) {
        const i = order[r];
        // TL shifts the "cumulative > p" flags right by one, so the token that crosses p is kept
        const remove = r > 0 && prevOver;
        cum += Math.exp(row[i] - mx) / z;
        prevOver = cum > topP;
        if (remove) row[i] = -Infinity;
      }
    }
    let mx = -Infinity;
    for (let v = 0; v < V; v++) if (row[v] > mx) mx = row[v];
    let z = 0;
    for (let v = 0; v < V; v++) z += Math.exp(row[v] - mx);
    let u = random() * z,
      pick = -1;
    for (let v = 0; v < V; v++) {
      const w = Math.exp(row[v] - mx);
      if (w > 0) {
        pick = v;
        u -= w;
        if (u < 0) break;
      }
    }
    out.push(pick);
  }
  return out;
}

export interface GenerateOptions extends Omit<SampleOptions, 'tokens' | 'random'> {
  maxNewTokens?: number;
  /** Sample (default) or take the argmax. */
  doSample?: boolean;
  /** Stop a row once it produced eosTokenId (later positions are filled with it); stop when all rows have. */
  stopAtEos?: boolean;
  eosTokenId?: number | number[];
  /** Run only the new token through the model each step, with keys and values cached (default true). */
  usePastKvCache?: boolean;
  /** Seed for sampling: the same seed gives the same tokens. */
  seed?: number;
  prependBos?: boolean;
  /** Default 'left' for a batch of prompts (TL uses the tokenizer's side; right padding cannot be continued). */
  paddingSide?: PaddingSide;
  /** 'input' (default: the input's kind), 'str' or 'tokens'. */
  returnType?: 'input' | 'str' | 'tokens';
  /** Called after each step with the new token of every row (streaming). */
  onToken?: (ids: number[], step: number) => void;
}

/** What generation needs of a HookedTransformer (an interface, so that the model's module and this one form no cycle). */
export interface GenerativeModel {
  readonly cfg: ModelConfig;
  toTokens(input: string | string[], opts: { prependBos?: boolean; paddingSide?: PaddingSide }): Tensor;
  forward(
    input: Tensor,
    opts: {
      pastKvCache?: HookedTransformerKeyValueCache;
      paddingSide?: PaddingSide;
      prependBos?: boolean;
      lastPositionLogits?: boolean;
    },
  ): Tensor;
}

/** TL's HookedTransformer.generate. */
export function generate(
  model: GenerativeModel,
  input: string | string[] | Tensor | number[] | number[][],
  opts: GenerateOptions = {},
): string | string[] | Tensor {
  const {
    maxNewTokens = 10,
    doSample = true,
    stopAtEos = true,
    usePastKvCache = true,
    prependBos = true,
    returnType = 'input',
  } = opts;
  if (!(Number.isInteger(maxNewTokens) && maxNewTokens >= 0))
    throw new TypelensError(`maxNewTokens must be a non-negative integer, got ${maxNewTokens}`, 'EINPUT');
  const isStr = typeof input === 'string' || (Array.isArray(input) && typeof input[0] === 'string');
  const paddingSide = opts.paddingSide ?? (Array.isArray(input) && isStr && input.length > 1 ? 'left' : 'right');
  let tokens = isStr
    ? model.toTokens(input as string | string[], { prependBos, paddingSide })
    : input instanceof Tensor
      ? input
      : Tensor.from(input as number[][]);
  if (tokens.ndim === 1) tokens = tokens.unsqueeze(0);
  const [B, P0] = tokens.shape;
  if (P0 + maxNewTokens > model.cfg.n_ctx)
    throw new TypelensError(
      `${P0} prompt tokens + ${maxNewTokens} new ones is more than n_ctx = ${model.cfg.n_ctx}`,
      'ETOKEN',
    );
  const eos = opts.eosTokenId ?? model.cfg.bos_token_id;
  const stops = Array.isArray(eos) ? eos : [eos];
  const random = opts.seed != null ? rng(opts.seed).uniform : Math.random;
  const sample = {
    topK: opts.topK,
    topP: opts.topP,
    temperature: doSample ? (opts.temperature ?? 1) : 0,
    freqPenalty: opts.freqPenalty,
    random,
  };
  const kv = usePastKvCache ? HookedTransformerKeyValueCache.initCache(model.cfg, B) : undefined;
  const rows: number[][] = Array.from({ length: B }, (_, b) => tokens.index(0, b).toArray());
  const finished = new Array<boolean>(B).fill(false);
  for (let step = 0; step < maxNewTokens; step++) {
    const full = Tensor.from(rows);
    const run = kv && step > 0 ? full.slice(1, full.shape[1] - 1).contiguous() : full;
    const logits = model.forward(run, { pastKvCache: kv, paddingSide, prependBos, lastPositionLogits: true });
    const last = logits.slice(1, logits.shape[1] - 1).reshape([B, logits.shape[2]]);
    const next = sampleLogits(last, { ...sample, tokens: full });
    for (let b = 0; b < B; b++) {
      if (stopAtEos && finished[b]) next[b] = stops[0];
      if (stops.includes(next[b])) finished[b] = finished[b] || stopAtEos;
      rows[b].push(next[b]);
    }
    opts.onToken?.(next, step);
    if (stopAtEos && finished.every(Boolean)) break;
  }
  const out = Tensor.from(rows);
  const want = returnType === 'input' ? (isStr ? 'str' : 'tokens') : returnType;
  if (want === 'tokens') return out;
  // as TL: a prepended BOS is not part of the text (and neither are left pads)
  const text = rows.map((r) => {
    let i = 0;
    if (paddingSide === 'left')
      while (i < r.length - 1 && r[i] === model.cfg.bos_token_id && r[i + 1] === model.cfg.bos_token_id) i++;
    if (isStr && prependBos && r[i] === model.cfg.bos_token_id) i++;
    return decodeTokens(r.slice(i));
  });
  return typeof input === 'string' ? text[0] : text;
}
