/**
 * TransformerLens's head_detector.py: score every attention head by how closely its attention
 * pattern on a sequence follows a detection pattern (previous token, duplicate token, induction,
 * or any [pos, pos] pattern of your own).
 */
import { TypelensError } from '../errors.js';
import type { ActivationCache } from '../hooks/cache.js';
import { getActName } from '../hooks/names.js';
import type { HookedTransformer } from '../model/hooked-transformer.js';
import { Tensor } from '../tensor/index.js';

/** TL's HEAD_NAMES. */
export const HEAD_NAMES = ['previous_token_head', 'duplicate_token_head', 'induction_head'] as const;
export type HeadName = (typeof HEAD_NAMES)[number];
export type ErrorMeasure = 'abs' | 'mul';

/** Which heads to score: TL's list of (layer, head) pairs or its {layer: [heads]} dict. */
export type LayerHeads = readonly (readonly [number, number])[] | Readonly<Record<number, readonly number[]>>;

export interface DetectHeadOptions {
  /** Only these heads (the others score -1, as in TL); all heads by default. */
  heads?: LayerHeads;
  /** A cache of the sequence(s) holding every layer's hook_pattern; without it detectHead runs the model. */
  cache?: ActivationCache;
  /** Ignore attention to position 0 (BOS). */
  excludeBos?: boolean;
  /** Ignore attention to the current token (the diagonal). */
  excludeCurrentToken?: boolean;
  /** 'mul' (default): attention mass on the pattern / total mass; 'abs': 1 - mean |attention - pattern| x pos, rounded to 3 places. */
  errorMeasure?: ErrorMeasure;
  /** Where the warning about a non-0/1 pattern with 'mul' goes (TL's logging.warning); console.warn by default. */
  warn?: (line: string) => void;
}

/** Tokens of one sequence as a plain array (a [1, P] or [P] tensor, or ids). */
const ids = (tokens: Tensor | readonly number[]): number[] =>
  tokens instanceof Tensor ? tokens.reshape([tokens.size]).toArray() : [...tokens];

/** Lower-triangular copy (torch.tril) of a row-major P x P matrix. */
function tril(d: Float32Array, P: number): Float32Array {
  for (let i = 0; i < P; i++) for (let j = i + 1; j < P; j++) d[i * P + j] = 0;
  return d;
}

/** TL's get_previous_token_head_detection_pattern: 1 at (i, i-1). [pos, pos]. */
export function getPreviousTokenHeadDetectionPattern(tokens: Tensor | readonly number[]): Tensor {
  const P = ids(tokens).length;
  const d = new Float32Array(P * P);
  for (let i = 1; i < P; i++) d[i * P + i - 1] = 1;
  return new Tensor(d, [P, P]);
}

/** TL's get_duplicate_token_head_detection_pattern: 1 at (i, j), j < i, where token j = token i. [pos, pos]. */
export function getDuplicateTokenHeadDetectionPattern(tokens: Tensor | readonly number[]): Tensor {
  const t = ids(tokens),
    P = t.length;
  const d = new Float32Array(P * P);
  for (let i = 0; i < P; i++) for (let j = 0; j < P; j++) if (i !== j && t[i] === t[j]) d[i * P + j] = 1;
  return new Tensor(tril(d, P), [P, P]);
}

/**
 * TL's get_induction_head_detection_pattern: the duplicate-token pattern shifted one key to the
 * right (attend to the token after an earlier copy of the current token), first column 0. [pos, pos].
 */
export function getInductionHeadDetectionPattern(tokens: Tensor | readonly number[]): Tensor {
  const dup = getDuplicateTokenHeadDetectionPattern(tokens).f32(),
    P = Math.round(Math.sqrt(dup.length));
  const d = new Float32Array(P * P);
  // torch.roll(dup, 1, dims=1) then column 0 := 0: column j takes column j - 1
  for (let i = 0; i < P; i++) for (let j = 1; j < P; j++) d[i * P + j] = dup[i * P + j - 1];
  return new Tensor(tril(d, P), [P, P]);
}

/** TL's get_supported_heads: prints the named patterns (and here also returns them). */
export function getSupportedHeads(print: (line: string) => void = console.log): HeadName[] {
  print(`[${HEAD_NAMES.map((n) => `'${n}'`).join(', ')}]`);
  return [...HEAD_NAMES];
}

/** Python's round(x, 3) for x >= 0: the nearest multiple of 0.001 to the exact binary value, ties to even. */
function round3(x: number): number {
  const k = x * 1000;
  if (Number.isInteger(k * 2) && !Number.isInteger(k)) {
    // an exact tie: to even
    const lo = Math.floor(k);
    return (lo % 2 === 0 ? lo : lo + 1) / 1000;
  }
  return Number(x.toFixed(3));
}

/**
 * TL's compute_head_attention_similarity_score for one head's pattern [P, P] (row-major) and a
 * detection pattern [P, P]. 'mul': sum(attention * pattern) / sum(attention), after zeroing the
 * BOS column and/or the diagonal of the attention (a copy: TL edits the cache in place). 'abs':
 * 1 - round(mean(|attention - pattern|) * P, 3), the exclusions zeroing the differences; a
 * pattern with mass above the diagonal is refused (TL asserts it).
 */
export function computeHeadAttentionSimilarityScore(
  attention: ArrayLike<number>,
  detection: ArrayLike<number>,
  P: number,
  opts: { excludeBos?: boolean; excludeCurrentToken?: boolean; errorMeasure?: ErrorMeasure } = {},
): number {
  const { excludeBos = false, excludeCurrentToken = false, errorMeasure = 'mul' } = opts;
  const keep = (i: number, j: number) => !(excludeBos && j === 0) && !(excludeCurrentToken && i === j);
  if (errorMeasure === 'mul') {
    let num = 0,
      den = 0;
    for (let i = 0; i < P; i++)
      for (let j = 0; j < P; j++) {
        if (!keep(i, j)) continue;
        const a = attention[i * P + j];
        num += a * detection[i * P + j];
        den += a;
      }
    return num / den;
  }
  let s = 0;
  for (let i = 0; i < P; i++)
    for (let j = 0; j < P; j++) {
      const d = Math.abs(attention[i * P + j] - detection[i * P + j]);
      if (j > i && d !== 0)
        throw new TypelensError(
          `errorMeasure 'abs': the attention and the detection pattern differ above the diagonal at (${i}, ${j}); a causal head's pattern is lower-triangular`,
          'EINPUT',
        );
      if (keep(i, j)) s += d;
    }
  return 1 - round3((s / (P * P)) * P);
}

/** The sequences as token rows: strings through the model's tokenizer (with BOS, as TL's to_tokens), tensors row by row. */
function sequences(
  model: HookedTransformer,
  seq: string | readonly string[] | Tensor | readonly number[] | readonly (readonly number[])[],
): number[][] {
  if (typeof seq === 'string') return [model.toTokens(seq).toArray()];
  if (seq instanceof Tensor) {
    if (seq.ndim === 1) return [seq.toArray()];
    if (seq.ndim === 2) return Array.from({ length: seq.shape[0] }, (_, b) => seq.index(0, b).toArray());
    throw new TypelensError(
      `detectHead: token tensors must be [pos] or [batch, pos], got [${seq.shape.join(', ')}]`,
      'ESHAPE',
    );
  }
  if (seq.length === 0) throw new TypelensError('detectHead: no sequences given', 'EINPUT');
  if (typeof seq[0] === 'string') return (seq as readonly string[]).map((s) => model.toTokens(s).toArray());
  if (typeof seq[0] === 'number') return [[...(seq as readonly number[])]];
  return (seq as readonly (readonly number[])[]).map((r) => [...r]);
}

function layerToHeads(heads: LayerHeads | undefined, L: number, H: number): Map<number, number[]> {
  const out = new Map<number, number[]>();
  if (heads === undefined) {
    for (let l = 0; l < L; l++) out.set(l, [...Array(H).keys()]);
    return out;
  }
  const pairs: [number, number][] = Array.isArray(heads)
    ? (heads as readonly (readonly [number, number])[]).map(([l, h]) => [l, h])
    : Object.entries(heads as Record<number, readonly number[]>).flatMap(([l, hs]) =>
        hs.map((h) => [Number(l), h] as [number, number]),
      );
  for (const [l, h] of pairs) {
    if (!(Number.isInteger(l) && l >= 0 && l < L && Number.isInteger(h) && h >= 0 && h < H))
      throw new TypelensError(`detectHead: head (${l}, ${h}) is not in a model of ${L} layers x ${H} heads`, 'EINPUT');
    const hs = out.get(l) ?? [];
    hs.push(h);
    out.set(l, hs);
  }
  return out;
}

/**
 * TL's head_detector.detect_head: a [n_layers, n_heads] table of how much each head's attention
 * on `seq` follows `detectionPattern` (a named pattern, computed from each sequence's tokens, or
 * a [pos, pos] tensor); heads left out of `heads` score -1. Several sequences (a list of strings,
 * or a [batch, pos] token tensor) give the mean of their scores, as TL does for a list; a
 * `cache` then must hold them as its batch. Strings are tokenized with BOS (TL's to_tokens).
 *
 * One deviation: TL asserts 1 < pos < n_ctx; a sequence of exactly n_ctx tokens is a valid model
 * input, so typelens accepts 1 < pos <= n_ctx.
 */
export function detectHead(
  model: HookedTransformer,
  seq: string | readonly string[] | Tensor | readonly number[] | readonly (readonly number[])[],
  detectionPattern: HeadName | Tensor,
  opts: DetectHeadOptions = {},
): Tensor {
  const { n_layers: L, n_heads: H, n_ctx } = model.cfg;
  const errorMeasure = opts.errorMeasure ?? 'mul';
  if (errorMeasure !== 'mul' && errorMeasure !== 'abs')
    throw new TypelensError(`errorMeasure must be 'abs' or 'mul', got ${JSON.stringify(errorMeasure)}`, 'EINVAL');
  if (typeof detectionPattern === 'string' && !(HEAD_NAMES as readonly string[]).includes(detectionPattern)) {
    throw new TypelensError(
      `detection pattern must be one of ${HEAD_NAMES.join(', ')} or a [pos, pos] tensor, got "${detectionPattern}"`,
      'EINVAL',
    );
  }
  const rows = sequences(model, seq);
  for (const r of rows) {
    if (!(r.length > 1 && r.length <= n_ctx))
      throw new TypelensError(
        `The sequence must be non-empty and must fit within the model's context window (got ${r.length} tokens, n_ctx = ${n_ctx})`,
        'EINPUT',
      );
  }
  const patterns = rows.map((r) => {
    const p =
      typeof detectionPattern === 'string'
        ? {
            previous_token_head: getPreviousTokenHeadDetectionPattern,
            duplicate_token_head: getDuplicateTokenHeadDetectionPattern,
            induction_head: getInductionHeadDetectionPattern,
          }[detectionPattern](r)
        : detectionPattern;
    if (p.ndim !== 2 || p.shape[0] !== r.length || p.shape[1] !== r.length) {
      throw new TypelensError(
        `The detection pattern must be a lower triangular matrix of shape (sequence_length, sequence_length) = (${r.length}, ${r.length}), got [${p.shape.join(', ')}]`,
        'ESHAPE',
      );
    }
    return p.f32();
  });
  if (errorMeasure === 'mul' && patterns.some((p) => p.some((v) => v !== 0 && v !== 1))) {
    (opts.warn ?? console.warn)("Using detection pattern with values other than 0 or 1 with error_measure 'mul'");
  }
  const layers = layerToHeads(opts.heads, L, H);
  // one pattern [H, P, P] per (sequence, layer): from the cache, or one cached run per sequence length
  const patternOf = patternSource(model, rows, opts.cache, [...layers.keys()]);
  const sum = new Float64Array(L * H);
  rows.forEach((r, b) => {
    const P = r.length;
    for (const [l, hs] of layers) {
      const pat = patternOf(b, l);
      for (const h of hs)
        sum[l * H + h] += computeHeadAttentionSimilarityScore(
          pat.subarray(h * P * P, (h + 1) * P * P),
          patterns[b],
          P,
          { ...opts, errorMeasure },
        );
    }
  });
  const out = new Float32Array(L * H).fill(-1);
  for (const [l, hs] of layers) for (const h of hs) out[l * H + h] = sum[l * H + h] / rows.length;
  return new Tensor(out, [L, H]);
}

/** (sequence b, layer l) -> that sequence's attention patterns [H, P, P] as contiguous f32. */
function patternSource(
  model: HookedTransformer,
  rows: number[][],
  cache: ActivationCache | undefined,
  layers: number[],
): (b: number, l: number) => Float32Array {
  if (cache) {
    return (b, l) => {
      const p = cache.get(getActName('pattern', l));
      const P = rows[b].length;
      const one = cache.hasBatchDim
        ? p.shape[0] === rows.length
          ? p.index(0, b)
          : null
        : rows.length === 1
          ? p
          : null;
      if (!one || one.ndim !== 3 || one.shape[1] !== P || one.shape[2] !== P) {
        throw new TypelensError(
          `detectHead: the cache's ${getActName('pattern', l)} [${p.shape.join(', ')}] does not hold ${rows.length} sequence(s) of ${P} tokens`,
          'ESHAPE',
        );
      }
      return one.f32();
    };
  }
  // rows of one length run together as a batch
  const names = layers.map((l) => getActName('pattern', l));
  const byLen = new Map<number, number[]>();
  rows.forEach((r, b) => byLen.set(r.length, [...(byLen.get(r.length) ?? []), b]));
  const got = new Map<number, { cache: ActivationCache; index: number }>();
  for (const [P, bs] of byLen) {
    const { cache: c } = model.runWithCache(
      Tensor.from(
        bs.flatMap((b) => rows[b]),
        [bs.length, P],
      ),
      { namesFilter: names },
    );
    bs.forEach((b, i) => got.set(b, { cache: c, index: i }));
  }
  return (b, l) => {
    const g = got.get(b)!;
    return g.cache.get(getActName('pattern', l)).index(0, g.index).f32();
  };
}

/** TL's transformer_lens.head_detector module. */
export const headDetector = {
  detectHead,
  computeHeadAttentionSimilarityScore,
  getSupportedHeads,
  getPreviousTokenHeadDetectionPattern,
  getDuplicateTokenHeadDetectionPattern,
  getInductionHeadDetectionPattern,
  HEAD_NAMES,
};
