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
  attn_scale: number;
}

const ACT: Record<string, ActFn> = { gelu_new: 'gelu_new', gelu_fast: 'gelu_new', gelu_pytorch_tanh: 'gelu_new', gelu: 'gelu', relu: 'relu' };

/** Build the TL config from a HuggingFace GPT-2 config.json, checking every key we use. */
export function configFromHF(hf: Record<string, unknown>, source = 'config.json', name = 'gpt2'): ModelConfig {
  const int = (key: string, alt?: string): number => {
    const v = hf[key] ?? (alt ? hf[alt] : undefined);
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) {
      throw new TypelensError(`${source}: "${key}" must be a positive integer, got ${JSON.stringify(v)}`, 'ECONFIG');
    }
    return v;
  };
  const n_layers = int('n_layer'), d_model = int('n_embd'), n_heads = int('n_head');
  const n_ctx = int('n_positions', 'n_ctx'), d_vocab = int('vocab_size');
  if (d_model % n_heads !== 0) throw new TypelensError(`${source}: n_embd ${d_model} is not divisible by n_head ${n_heads}`, 'ECONFIG');
  const inner = hf.n_inner;
  if (inner !== undefined && inner !== null && !(typeof inner === 'number' && Number.isInteger(inner) && inner > 0)) {
    throw new TypelensError(`${source}: "n_inner" must be null or a positive integer, got ${JSON.stringify(inner)}`, 'ECONFIG');
  }
  const eps = hf.layer_norm_epsilon ?? 1e-5;
  if (typeof eps !== 'number' || !(eps > 0)) throw new TypelensError(`${source}: "layer_norm_epsilon" must be a positive number`, 'ECONFIG');
  const actName = (hf.activation_function ?? 'gelu_new') as string;
  const act_fn = ACT[actName];
  if (!act_fn) throw new TypelensError(`${source}: unsupported activation_function ${JSON.stringify(actName)}`, 'ECONFIG');
  const bos = typeof hf.bos_token_id === 'number' && hf.bos_token_id < d_vocab ? hf.bos_token_id : 50256;
  const d_head = d_model / n_heads;
  return {
    model_name: name, n_layers, d_model, n_heads, d_head, d_mlp: (inner as number | null) ?? 4 * d_model,
    n_ctx, d_vocab, eps, act_fn, normalization_type: 'LN', bos_token_id: bos, attn_scale: Math.sqrt(d_head),
  };
}
