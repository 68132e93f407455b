import { TypelensError } from '../errors.js';

export type ActFn = 'gelu_new' | 'gelu' | 'relu';

/** TransformerLens's HookedTransformerConfig, the fields GPT-2-shaped models use. */
export interface ModelConfig {
  model_name: string;
  n_layers: number;
  d_model: number;
  n_heads: number;
  d_head: number;
  d_mlp: number;
  n_ctx: number;
  d_vocab: number;
  eps: number;
  act_fn: ActFn;
  /** 'LN' as loaded; 'LNPre' once fold_ln has folded the LN weights away. */
  normalization_type: 'LN' | 'LNPre';
  /** The BOS/pad id to prepend: GPT-2's <|endoftext|> (50256), or the config's own for small vocabularies. */
  bos_token_id: number;
  /** sqrt(d_head), or 1 when the HF config has scale_attn_weights: false (TL's use_attn_scale). */
  attn_scale: number;
  /** Block l divides its scores by attn_scale * (l + 1) (TL's scale_attn_by_inverse_layer_idx; the Stanford CRFM GPT-2s). */
  scale_attn_by_inverse_layer_idx?: boolean;
  /** False when the checkpoint has its own lm_head.weight (HF tie_word_embeddings: false). */
  tie_word_embeddings?: boolean;
}

/** The divisor of block l's attention scores (TL's AbstractAttention.attn_scale). */
export const attnScaleOf = (cfg: ModelConfig, l: number): number =>
  cfg.attn_scale * (cfg.scale_attn_by_inverse_layer_idx ? l + 1 : 1);

/** HF keys that change GPT-2's computation and that typelens refuses when set to anything but their default. */
const REFUSED: [key: string, ok: (v: unknown) => boolean, why: string][] = [
  ['add_cross_attention', (v) => !v, 'cross-attention (encoder-decoder) blocks are not supported'],
  ['model_type', (v) => v == null || v === 'gpt2', 'only GPT-2 checkpoints are supported'],
];
const bool = (hf: Record<string, unknown>, key: string, dflt: boolean, source: string): boolean => {
  const v = hf[key];
  if (v === undefined || v === null) return dflt;
  if (typeof v !== 'boolean')
    throw new TypelensError(`${source}: "${key}" must be true or false, got ${JSON.stringify(v)}`, 'ECONFIG');
  return v;
};

// gelu_fast and gelu_pytorch_tanh are the tanh approximation, the same function as gelu_new (TL maps them so too)
const ACT: Record<string, ActFn> = {
  gelu_new: 'gelu_new',
  gelu_fast: 'gelu_new',
  gelu_pytorch_tanh: 'gelu_new',
  gelu: 'gelu',
  relu: 'relu',
};

/** Build the TL config from a HuggingFace GPT-2 config.json, checking every key we use. */
export function configFromHF(hf: Record<string, unknown>, source = 'config.json', name = 'gpt2'): ModelConfig {
  const int = (key: string, alt?: string): number => {
    const v = hf[key] ?? (alt ? hf[alt] : undefined);
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) {
      throw new TypelensError(`${source}: "${key}" must be a positive integer, got ${JSON.stringify(v)}`, 'ECONFIG');
    }
    return v;
  };
  const n_layers = int('n_layer'),
    d_model = int('n_embd'),
    n_heads = int('n_head');
  const n_ctx = int('n_positions', 'n_ctx'),
    d_vocab = int('vocab_size');
  if (d_model % n_heads !== 0)
    throw new TypelensError(`${source}: n_embd ${d_model} is not divisible by n_head ${n_heads}`, 'ECONFIG');
  const inner = hf.n_inner;
  if (inner !== undefined && inner !== null && !(typeof inner === 'number' && Number.isInteger(inner) && inner > 0)) {
    throw new TypelensError(
      `${source}: "n_inner" must be null or a positive integer, got ${JSON.stringify(inner)}`,
      'ECONFIG',
    );
  }
  const eps = hf.layer_norm_epsilon ?? 1e-5;
  if (typeof eps !== 'number' || !(eps > 0))
    throw new TypelensError(`${source}: "layer_norm_epsilon" must be a positive number`, 'ECONFIG');
  const actName = (hf.activation_function ?? 'gelu_new') as string;
  const act_fn = ACT[actName];
  if (!act_fn)
    throw new TypelensError(`${source}: unsupported activation_function ${JSON.stringify(actName)}`, 'ECONFIG');
  for (const [key, ok, why] of REFUSED) {
    if (!ok(hf[key]))
      throw new TypelensError(`${source}: "${key}": ${JSON.stringify(hf[key])} is not supported (${why})`, 'ECONFIG');
  }
  // Flags of HF's GPT2Attention, honoured as TL does (HookedTransformerConfig.use_attn_scale,
  // scale_attn_by_inverse_layer_idx). reorder_and_upcast_attn only changes the precision the
  // scores are computed in (fp32 with the scaling folded in): typelens computes them in f32 anyway.
  const scaleWeights = bool(hf, 'scale_attn_weights', true, source);
  const inverseLayer = bool(hf, 'scale_attn_by_inverse_layer_idx', false, source);
  bool(hf, 'reorder_and_upcast_attn', false, source);
  const tied = bool(hf, 'tie_word_embeddings', true, source);
  const bos = typeof hf.bos_token_id === 'number' && hf.bos_token_id < d_vocab ? hf.bos_token_id : 50256;
  const d_head = d_model / n_heads;
  return {
    model_name: name,
    n_layers,
    d_model,
    n_heads,
    d_head,
    d_mlp: (inner as number | null) ?? 4 * d_model,
    n_ctx,
    d_vocab,
    eps,
    act_fn,
    normalization_type: 'LN',
    bos_token_id: bos,
    attn_scale: scaleWeights ? Math.sqrt(d_head) : 1,
    ...(inverseLayer ? { scale_attn_by_inverse_layer_idx: true } : {}),
    ...(tied ? {} : { tie_word_embeddings: false }),
  };
}
