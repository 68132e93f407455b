import { TypelensError } from '../errors.js';
import { cat, div, matmul, mean, mul, sameShape, stack, sub, sum, Tensor } from '../tensor/index.js';
import type { MatmulKernel } from '../tensor/linalg.js';
import { Slice, SliceInput } from './slice.js';

// The ActivationCache's decomposition helpers (TL's accumulated_resid, decompose_resid,
// stack_head_results, ...) as functions over the cache; cache.ts keeps thin methods over them.

export type CacheKey = string | [string, (number | null)?, (string | null)?];
export type Labelled = [Tensor, string[]];

/**
 * What an ActivationCache needs from its model (TL's cache holds the model for the same few
 * things): sizes, the W_O / W_out it decomposes through, the biases and unembedding directions,
 * and the kernels to multiply with.
 */
export interface CacheModel {
  readonly cfg: { readonly n_layers: number; readonly n_heads: number; readonly d_mlp: number };
  readonly backend: MatmulKernel;
  readonly weights: { readonly blocks: readonly { readonly W_O: Tensor; readonly W_out: Tensor }[] };
  accumulatedBias(layer: number, mlpInput?: boolean, includeMlpBiases?: boolean): Tensor;
  tokensToResidualDirections(tokens: number | string | Tensor | number[]): Tensor;
}

export interface LnOpts {
  layer?: number | null;
  mlpInput?: boolean;
  posSlice?: SliceInput;
  batchSlice?: SliceInput;
  hasBatchDim?: boolean;
}

/** What the helpers read of an ActivationCache (cache.ts implements it; this module does not import it). */
export interface CacheLike {
  readonly cacheDict: Map<string, Tensor>;
  readonly model: CacheModel;
  readonly hasBatchDim: boolean;
  readonly hasEmbed: boolean;
  readonly hasPosEmbed: boolean;
  log: (line: string) => void;
  get(key: CacheKey): Tensor;
  /** Throw if the cache was loaded without its model (naming the method and what it needs). */
  requireModel(method: string, what: string): void;
}
/** null / -1 -> n_layers; other negatives are an error, as in TL. */
export function finalLayer(c: CacheLike, layer: number | null | undefined, what: string): number {
  const L = c.model.cfg.n_layers;
  if (layer == null || layer === -1) return L;
  if (!Number.isInteger(layer) || layer < 0 || layer > L)
    throw new TypelensError(`${what}: layer ${layer} out of range (use 0..${L}, -1 or null for the final LN)`, 'EKEY');
  return layer;
}

export function applyLnToStack(c: CacheLike, residualStack: Tensor, opts: LnOpts = {}): Tensor {
  const layer = finalLayer(c, opts.layer, 'applyLnToStack');
  const hasBatch = opts.hasBatchDim ?? true;
  let x = residualStack;
  if (hasBatch && opts.batchSlice != null) x = new Slice(opts.batchSlice).apply(x, 1);
  x = sub(x, mean(x, -1, true));
  const L = c.model.cfg.n_layers;
  let scale =
    layer === L ? c.get('ln_final.hook_scale') : c.get(`blocks.${layer}.${opts.mlpInput ? 'ln2' : 'ln1'}.hook_scale`);
  scale = new Slice(opts.posSlice).apply(scale, -2);
  if (c.hasBatchDim && opts.batchSlice != null) scale = new Slice(opts.batchSlice).apply(scale, 0);
  return div(x, scale);
}

/** Options of TL's ActivationCache.accumulated_resid (the cache's method takes the same). */
export interface AccumulatedResidOptions {
  layer?: number | null;
  inclMid?: boolean;
  applyLn?: boolean;
  posSlice?: SliceInput;
  mlpInput?: boolean;
  returnLabels?: boolean;
}

/** Options of TL's ActivationCache.decompose_resid (the cache's method takes the same). */
export interface DecomposeResidOptions {
  layer?: number | null;
  mlpInput?: boolean;
  mode?: 'all' | 'attn' | 'mlp';
  applyLn?: boolean;
  posSlice?: SliceInput;
  inclEmbeds?: boolean;
  returnLabels?: boolean;
}

export function accumulatedResid(c: CacheLike, opts: AccumulatedResidOptions = {}): Tensor | Labelled {
  const layer = finalLayer(c, opts.layer, 'accumulatedResid');
  const L = c.model.cfg.n_layers;
  const parts: Tensor[] = [],
    labels: string[] = [];
  const ps = new Slice(opts.posSlice);
  for (let l = 0; l <= layer; l++) {
    if (l === L) {
      parts.push(c.get(`blocks.${L - 1}.hook_resid_post`));
      labels.push('final_post');
      continue;
    }
    parts.push(c.get(`blocks.${l}.hook_resid_pre`));
    labels.push(`${l}_pre`);
    if ((opts.inclMid && l < layer) || (opts.mlpInput && l === layer)) {
      parts.push(c.get(`blocks.${l}.hook_resid_mid`));
      labels.push(`${l}_mid`);
    }
  }
  let st = stack(parts.map((p) => ps.apply(p, -2)));
  if (opts.applyLn) st = applyLnToStack(c, st, { layer, posSlice: opts.posSlice, mlpInput: opts.mlpInput });
  return opts.returnLabels ? [st, labels] : st;
}

export function decomposeResid(c: CacheLike, opts: DecomposeResidOptions = {}): Tensor | Labelled {
  const layer = finalLayer(c, opts.layer, 'decomposeResid');
  const mode = opts.mode ?? 'all';
  const ps = new Slice(opts.posSlice);
  const parts: Tensor[] = [],
    labels: string[] = [];
  if (opts.inclEmbeds ?? true) {
    if (c.hasEmbed) {
      parts.push(c.get('hook_embed'));
      labels.push('embed');
    }
    if (c.hasPosEmbed) {
      parts.push(c.get('hook_pos_embed'));
      labels.push('pos_embed');
    }
  }
  for (let l = 0; l < layer; l++) {
    if (mode !== 'mlp') {
      parts.push(c.get(`blocks.${l}.hook_attn_out`));
      labels.push(`${l}_attn_out`);
    }
    if (mode !== 'attn') {
      parts.push(c.get(`blocks.${l}.hook_mlp_out`));
      labels.push(`${l}_mlp_out`);
    }
  }
  if (opts.mlpInput && mode !== 'mlp') {
    parts.push(c.get(`blocks.${layer}.hook_attn_out`));
    labels.push(`${layer}_attn_out`);
  }
  let st = parts.length ? stack(parts.map((p) => ps.apply(p, -2))) : emptyLike(c, ps);
  if (opts.applyLn) st = applyLnToStack(c, st, { layer, posSlice: opts.posSlice, mlpInput: opts.mlpInput });
  return opts.returnLabels ? [st, labels] : st;
}

/** Append resid_post(layer - 1) minus the summed components (TL's "remainder" row, -1 wrapping included). */
export function withRemainder(c: CacheLike, st: Tensor, layer: number, ps: Slice, labels: string[]): Tensor {
  const resid = ps.apply(c.get(['resid_post', layer - 1]), -2);
  labels.push('remainder');
  return cat([st, sub(resid, sum(st, 0)).unsqueeze(0)], 0);
}

export function emptyLike(c: CacheLike, ps: Slice): Tensor {
  const e = ps.apply(c.get('hook_embed'), -2);
  return Tensor.zeros([0, ...e.shape]);
}

/** result[..., h, :] = z[..., h, :] @ W_O[h] for every layer (no b_O), stored as attn.hook_result. */
export function computeHeadResults(c: CacheLike): void {
  const { n_layers: L, n_heads: H } = c.model.cfg;
  if (c.cacheDict.has('blocks.0.attn.hook_result')) {
    console.warn('Tried to compute head results when they were already cached');
    return;
  }
  c.requireModel('computeHeadResults', 'W_O');
  for (let l = 0; l < L; l++) {
    const z = c.get(`blocks.${l}.attn.hook_z`);
    const WO = c.model.weights.blocks[l].W_O;
    const heads = Array.from({ length: H }, (_, h) => matmul(z.index(-2, h), WO.index(0, h), c.model.backend));
    c.cacheDict.set(`blocks.${l}.attn.hook_result`, stack(heads, -2));
  }
}

export function stackHeadResults(
  c: CacheLike,
  opts: {
    layer?: number | null;
    returnLabels?: boolean;
    inclRemainder?: boolean;
    posSlice?: SliceInput;
    applyLn?: boolean;
  } = {},
): Tensor | Labelled {
  const layer = finalLayer(c, opts.layer, 'stackHeadResults');
  const H = c.model.cfg.n_heads;
  if (!c.cacheDict.has('blocks.0.attn.hook_result')) {
    c.requireModel('stackHeadResults', 'W_O (to compute the head results, which are not cached)');
    c.log("Tried to stack head results when they weren't cached. Computing head results now");
    computeHeadResults(c);
  }
  const ps = new Slice(opts.posSlice);
  const labels: string[] = [];
  const per: Tensor[] = [];
  for (let l = 0; l < layer; l++) {
    per.push(ps.apply(c.get(`blocks.${l}.attn.hook_result`), -3));
    for (let h = 0; h < H; h++) labels.push(`L${l}H${h}`);
  }
  let st: Tensor;
  if (per.length) {
    st = toFront(cat(per, -2), -2).contiguous(); // [..., layer*H, M] -> [layer*H, ..., M]
  } else st = emptyLike(c, ps);
  if (opts.inclRemainder) st = withRemainder(c, st, layer, ps, labels);
  if (opts.applyLn) st = applyLnToStack(c, st, { layer, posSlice: opts.posSlice });
  return opts.returnLabels ? [st, labels] : st;
}

/** post[..., n] * W_out[n, :] -> [B, (P), F', M] (no b_out). */
export function getNeuronResults(c: CacheLike, layer: number, neuronSlice?: SliceInput, posSlice?: SliceInput): Tensor {
  c.requireModel('getNeuronResults', 'W_out');
  const post = new Slice(neuronSlice).apply(new Slice(posSlice).apply(c.get(`blocks.${layer}.mlp.hook_post`), -2), -1);
  const Wout = new Slice(neuronSlice).apply(c.model.weights.blocks[layer].W_out, 0);
  return mul(post.unsqueeze(-1), Wout);
}

export function stackNeuronResults(
  c: CacheLike,
  layer: number,
  opts: {
    posSlice?: SliceInput;
    neuronSlice?: SliceInput;
    returnLabels?: boolean;
    inclRemainder?: boolean;
    applyLn?: boolean;
  } = {},
): Tensor | Labelled {
  const lyr = finalLayer(c, layer, 'stackNeuronResults');
  const ps = new Slice(opts.posSlice);
  const per: Tensor[] = [],
    labels: string[] = [];
  const idx = new Slice(opts.neuronSlice).indices(c.model.cfg.d_mlp);
  for (let l = 0; l < lyr; l++) {
    const r = getNeuronResults(c, l, opts.neuronSlice, opts.posSlice);
    per.push(toFront(r, -2));
    for (const n of idx) labels.push(`L${l}N${n}`);
  }
  let st = per.length ? cat(per, 0) : emptyLike(c, ps);
  if (opts.inclRemainder) st = withRemainder(c, st, lyr, ps, labels);
  if (opts.applyLn) st = applyLnToStack(c, st, { layer: lyr, posSlice: opts.posSlice });
  return opts.returnLabels ? [st, labels] : st;
}

export function stackActivation(c: CacheLike, name: string, layer: number | null = -1, sublayerType?: string): Tensor {
  const lyr = finalLayer(c, layer, 'stackActivation');
  return stack(Array.from({ length: lyr }, (_, l) => c.get([name, l, sublayerType ?? null])));
}

export function getFullResidDecomposition(
  c: CacheLike,
  opts: {
    layer?: number | null;
    mlpInput?: boolean;
    expandNeurons?: boolean;
    applyLn?: boolean;
    posSlice?: SliceInput;
    returnLabels?: boolean;
  } = {},
): Tensor | Labelled {
  const layer = finalLayer(c, opts.layer, 'getFullResidDecomposition');
  c.requireModel('getFullResidDecomposition', 'W_O, W_out and biases');
  const ps = new Slice(opts.posSlice);
  const expand = opts.expandNeurons ?? true;
  const [heads, hl] = stackHeadResults(c, {
    layer: layer + (opts.mlpInput ? 1 : 0),
    posSlice: opts.posSlice,
    returnLabels: true,
  }) as Labelled;
  const parts = [heads],
    labels = [...hl];
  if (layer > 0) {
    const [mlp, ml] = expand
      ? (stackNeuronResults(c, layer, { posSlice: opts.posSlice, returnLabels: true }) as Labelled)
      : (decomposeResid(c, {
          layer,
          mode: 'mlp',
          inclEmbeds: false,
          posSlice: opts.posSlice,
          returnLabels: true,
        }) as Labelled);
    parts.push(mlp);
    labels.push(...ml);
  }
  const embed = ps.apply(c.get('hook_embed'), -2),
    pos = ps.apply(c.get('hook_pos_embed'), -2);
  parts.push(embed.unsqueeze(0), pos.unsqueeze(0));
  labels.push('embed', 'pos_embed');
  const bias = c.model.accumulatedBias(layer, opts.mlpInput, expand).expand(embed.shape).unsqueeze(0);
  parts.push(bias);
  labels.push('bias');
  let st = cat(
    parts.map((p) => p.contiguous()),
    0,
  );
  if (opts.applyLn) st = applyLnToStack(c, st, { layer, posSlice: opts.posSlice, mlpInput: opts.mlpInput });
  return opts.returnLabels ? [st, labels] : st;
}

/** Direct logit attribution of each component: (LN-scaled stack) . (W_U[:, tok] - W_U[:, wrong]). No b_U. */
export function logitAttrs(
  c: CacheLike,
  residualStack: Tensor,
  tokens: number | string | Tensor | number[],
  opts: {
    incorrectTokens?: number | string | Tensor | number[];
    posSlice?: SliceInput;
    batchSlice?: SliceInput;
    hasBatchDim?: boolean;
  } = {},
): Tensor {
  c.requireModel('logitAttrs', 'unembedding W_U');
  let dirs = c.model.tokensToResidualDirections(tokens);
  if (opts.incorrectTokens !== undefined) {
    const wrong = c.model.tokensToResidualDirections(opts.incorrectTokens);
    if (!sameShape(wrong.shape, dirs.shape)) {
      throw new TypelensError(
        `tokens and incorrectTokens have different shapes ([${dirs.shape.slice(0, -1).join(', ')}] vs [${wrong.shape.slice(0, -1).join(', ')}])`,
        'ESHAPE',
      );
    }
    dirs = sub(dirs, wrong);
  }
  const scaled = applyLnToStack(c, residualStack, {
    layer: -1,
    posSlice: opts.posSlice,
    batchSlice: opts.batchSlice,
    hasBatchDim: opts.hasBatchDim,
  });
  return sum(mul(scaled, dirs), -1);
}
/** Move one axis to the front (a view). */
function toFront(t: Tensor, axis: number): Tensor {
  const a = axis < 0 ? axis + t.ndim : axis;
  return t.permute(a, ...[...Array(t.ndim).keys()].filter((d) => d !== a));
}
