// A fresh model from a config with TransformerLens's initialisation.
//
// TL (HookedTransformer.init_weights, init_mode "gpt2", the default): `_init_weights_gpt2` draws
// every parameter whose name contains "W_" from N(0, initializer_range) — W_E, W_pos, W_Q/K/V/O,
// W_in, W_out and W_U (untied from W_E) — and leaves the modules' own initial values elsewhere:
// biases 0, LayerNorm w = 1, b = 0. HookedTransformerConfig's default initializer_range is
// 0.8 / sqrt(d_model) (std² = 0.64 / d_model). TL seeds torch with cfg.seed; we draw from
// make-weights.ts's seeded mulberry32/Box-Muller RNG, parameter by parameter in TL's
// named_parameters order, so one seed gives one model everywhere (not torch's numbers).
import { TypelensError } from '../errors.js';
import { Tensor } from '../tensor/index.js';
import type { ActFn, ModelConfig } from './config.js';
import { rng } from './make-weights.js';
import type { Weights } from './weights.js';

export interface InitOptions {
  /** RNG seed (TL's cfg.seed); default 0. */
  seed?: number;
  /** Std of the W_* normals; default TL's 0.8 / sqrt(d_model). */
  initializerRange?: number;
}

type CfgIn = Partial<ModelConfig> & Pick<ModelConfig, 'n_layers' | 'd_model' | 'n_ctx' | 'd_vocab'>;

/** Complete a partial config the way HookedTransformerConfig's __post_init__ does for GPT-2-shaped models. */
export function completeConfig(c: CfgIn): ModelConfig {
  const int = (k: string, v: unknown) => {
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0)
      throw new TypelensError(`config: "${k}" must be a positive integer, got ${JSON.stringify(v)}`, 'ECONFIG');
    return v;
  };
  const n_layers = int('n_layers', c.n_layers),
    d_model = int('d_model', c.d_model),
    n_ctx = int('n_ctx', c.n_ctx),
    d_vocab = int('d_vocab', c.d_vocab);
  const n_heads = int('n_heads', c.n_heads ?? (c.d_head ? d_model / c.d_head : undefined));
  const d_head = int('d_head', c.d_head ?? d_model / n_heads);
  if (n_heads * d_head !== d_model)
    throw new TypelensError(
      `config: n_heads ${n_heads} × d_head ${d_head} must equal d_model ${d_model} (GPT-2 layout)`,
      'ECONFIG',
    );
  const act_fn: ActFn = c.act_fn ?? 'gelu_new';
  if (!['gelu_new', 'gelu', 'relu'].includes(act_fn))
    throw new TypelensError(`config: unsupported act_fn ${JSON.stringify(act_fn)}`, 'ECONFIG');
  if (c.normalization_type && c.normalization_type !== 'LN')
    throw new TypelensError('config: a fresh model has LayerNorm weights (normalization_type "LN")', 'ECONFIG');
  return {
    model_name: c.model_name ?? 'custom',
    n_layers,
    d_model,
    n_heads,
    d_head,
    d_mlp: int('d_mlp', c.d_mlp ?? 4 * d_model),
    n_ctx,
    d_vocab,
    eps: c.eps ?? 1e-5,
    act_fn,
    normalization_type: 'LN',
    bos_token_id: c.bos_token_id ?? d_vocab - 1,
    attn_scale: c.attn_scale ?? Math.sqrt(d_head),
  };
}

/** TL's init_weights (gpt2 mode) for a GPT-2-shaped config: see the comment at the top. */
export function initWeights(c: CfgIn, opts: InitOptions = {}): { cfg: ModelConfig; weights: Weights } {
  const cfg = completeConfig(c);
  const { d_model: M, n_heads: H, d_head: D, d_mlp: F, d_vocab: V, n_ctx: C } = cfg;
  const std = opts.initializerRange ?? 0.8 / Math.sqrt(M);
  if (!(std >= 0)) throw new TypelensError(`initializerRange must be >= 0, got ${std}`, 'EINPUT');
  const r = rng(opts.seed ?? 0);
  const W = (shape: number[]) => {
    const d = new Float32Array(shape.reduce((a, b) => a * b, 1));
    for (let i = 0; i < d.length; i++) d[i] = std * r.normal();
    return new Tensor(d, shape);
  };
  const Z = (shape: number[]) => Tensor.zeros(shape),
    ONE = () => Tensor.full([M], 1);
  // TL's named_parameters order: embed, pos_embed, blocks (ln1, ln2, attn W_Q W_K W_V W_O b_*, mlp W_in b_in W_out b_out), ln_final, unembed
  const W_E = W([V, M]),
    W_pos = W([C, M]);
  const blocks = Array.from({ length: cfg.n_layers }, () => {
    const W_Q = W([H, M, D]),
      W_K = W([H, M, D]),
      W_V = W([H, M, D]),
      W_O = W([H, D, M]);
    const W_in = W([M, F]),
      W_out = W([F, M]);
    return {
      ln1_w: ONE(),
      ln1_b: Z([M]),
      ln2_w: ONE(),
      ln2_b: Z([M]),
      W_Q,
      W_K,
      W_V,
      W_O,
      b_Q: Z([H, D]),
      b_K: Z([H, D]),
      b_V: Z([H, D]),
      b_O: Z([M]),
      W_in,
      b_in: Z([F]),
      W_out,
      b_out: Z([M]),
    };
  });
  const W_U = W([M, V]);
  return { cfg, weights: { W_E, W_pos, blocks, ln_final_w: ONE(), ln_final_b: Z([M]), W_U, b_U: Z([V]) } };
}
