// Checkpoints in HuggingFace GPT-2's layout (model.safetensors + config.json): the inverse of
// model/weights.ts's convertGPT2 (TL's convert_gpt2_weights), so that HookedTransformer.fromDir
// and transformers' GPT2LMHeadModel.from_pretrained both load them.
import { TypelensError } from '../errors.js';
import type { HookedTransformer } from '../model/hooked-transformer.js';
import type { StTensorOut } from '../model/safetensors.js';
import { writeSafetensors } from '../model/safetensors.js';
import { Tensor } from '../tensor/index.js';
import { joinPath as join, writeDirAtomic, writeFileAtomic } from '../platform/files.js';
import { f32ToBf16, f32ToF16 } from '../tensor/dtype.js';

/**
 * TL-layout parameters -> HF GPT-2 tensors (names without the `transformer.` prefix, as HF's
 * own GPT-2 checkpoints store them). c_attn [M, 3M] holds [Q | K | V] column blocks, each
 * head-major; Conv1D weights are [in, out]. LN weights of a folded model are written as 1 / 0
 * (LNPre is LN with w = 1, b = 0). W_U equal to W_E^T bit for bit is written tied (no
 * lm_head.weight); otherwise as lm_head.weight [V, M] with tie_word_embeddings: false. GPT-2's
 * head has no bias: a non-zero b_U is refused.
 */
export function toHFTensors(model: HookedTransformer): { tensors: Record<string, StTensorOut>; tied: boolean } {
  const { d_model: M, n_heads: H, d_head: D, d_mlp: F, d_vocab: V, n_ctx: C, n_layers: L } = model.cfg;
  const sd = model.stateDict(); // f32 copies
  const g = (k: string) => sd[k]?.f32();
  const out: Record<string, StTensorOut> = {};
  const put = (name: string, shape: number[], data: Float32Array) => {
    out[name] = { dtype: 'F32', shape, data };
  };
  const ones = () => new Float32Array(M).fill(1),
    zeros = () => new Float32Array(M);
  const bU = g('unembed.b_U')!;
  const nz = bU.findIndex((v) => v !== 0);
  if (nz >= 0)
    throw new TypelensError(
      `cannot save in GPT-2's layout: unembed.b_U is non-zero (b_U[${nz}] = ${bU[nz]}) and GPT-2's lm_head has no bias (a processed model folds ln_final's bias there: save an unprocessed model)`,
      'ECHECKPOINT',
    );
  put('wte.weight', [V, M], g('embed.W_E')!);
  put('wpe.weight', [C, M], g('pos_embed.W_pos')!);
  for (let l = 0; l < L; l++) {
    const p = `h.${l}.`,
      b = (n: string) => g(`blocks.${l}.${n}`);
    put(p + 'ln_1.weight', [M], b('ln1.w') ?? ones());
    put(p + 'ln_1.bias', [M], b('ln1.b') ?? zeros());
    const w = new Float32Array(M * 3 * M),
      bias = new Float32Array(3 * M);
    (['Q', 'K', 'V'] as const).forEach((x, j) => {
      const W = b(`attn.W_${x}`)!,
        bb = b(`attn.b_${x}`)!;
      for (let h = 0; h < H; h++) {
        for (let m = 0; m < M; m++)
          for (let d = 0; d < D; d++) w[m * 3 * M + j * M + h * D + d] = W[(h * M + m) * D + d];
        for (let d = 0; d < D; d++) bias[j * M + h * D + d] = bb[h * D + d];
      }
    });
    put(p + 'attn.c_attn.weight', [M, 3 * M], w);
    put(p + 'attn.c_attn.bias', [3 * M], bias);
    put(p + 'attn.c_proj.weight', [M, M], b('attn.W_O')!);
    put(p + 'attn.c_proj.bias', [M], b('attn.b_O')!);
    put(p + 'ln_2.weight', [M], b('ln2.w') ?? ones());
    put(p + 'ln_2.bias', [M], b('ln2.b') ?? zeros());
    put(p + 'mlp.c_fc.weight', [M, F], b('mlp.W_in')!);
    put(p + 'mlp.c_fc.bias', [F], b('mlp.b_in')!);
    put(p + 'mlp.c_proj.weight', [F, M], b('mlp.W_out')!);
    put(p + 'mlp.c_proj.bias', [M], b('mlp.b_out')!);
  }
  put('ln_f.weight', [M], g('ln_final.w') ?? ones());
  put('ln_f.bias', [M], g('ln_final.b') ?? zeros());
  const head = new Tensor(g('unembed.W_U')!, [M, V]).T.contiguous().f32(); // [V, M]
  const wte = out['wte.weight'].data as Float32Array;
  let tied = true;
  for (let i = 0; tied && i < head.length; i++) tied = Object.is(head[i], wte[i]);
  if (!tied) put('lm_head.weight', [V, M], head);
  return { tensors: out, tied };
}

/** HF GPT2Config for the model (keys configFromHF reads, plus what transformers needs). */
export function hfConfigOf(model: HookedTransformer, tied: boolean): Record<string, unknown> {
  const c = model.cfg;
  if (Math.abs(c.attn_scale - Math.sqrt(c.d_head)) > 1e-6 * c.attn_scale)
    throw new TypelensError(
      `cannot save in GPT-2's layout: attn_scale ${c.attn_scale} is not sqrt(d_head)`,
      'ECHECKPOINT',
    );
  return {
    activation_function: c.act_fn,
    architectures: ['GPT2LMHeadModel'],
    model_type: 'gpt2',
    bos_token_id: c.bos_token_id,
    eos_token_id: c.bos_token_id,
    layer_norm_epsilon: c.eps,
    n_ctx: c.n_ctx,
    n_positions: c.n_ctx,
    n_embd: c.d_model,
    n_head: c.n_heads,
    n_layer: c.n_layers,
    n_inner: c.d_mlp === 4 * c.d_model ? null : c.d_mlp,
    vocab_size: c.d_vocab,
    resid_pdrop: 0,
    embd_pdrop: 0,
    attn_pdrop: 0,
    scale_attn_weights: true,
    tie_word_embeddings: tied,
  };
}

/**
 * Write `model` to `dir` as config.json + model.safetensors (f32, or f16 / bf16 with opts.dtype), atomically: the folder is built
 * beside `dir` and renamed into place, so `dir` is complete or absent (an older checkpoint there
 * is replaced only once the new one is whole).
 */
export function saveCheckpoint(
  model: HookedTransformer,
  dir: string,
  metadata: Record<string, string> = {},
  opts: { dtype?: 'F32' | 'F16' | 'BF16' } = {},
): void {
  const { tensors, tied } = toHFTensors(model);
  // half-precision storage (HF checkpoints are often f16): the loader widens to f32
  const dt = opts.dtype ?? 'F32';
  if (dt !== 'F32')
    for (const t of Object.values(tensors))
      t.data = dt === 'F16' ? f32ToF16(t.data as Float32Array) : f32ToBf16(t.data as Float32Array);
  for (const t of Object.values(tensors)) t.dtype = dt;
  const cfg = hfConfigOf(model, tied);
  try {
    writeDirAtomic(dir, (tmp) => {
      writeFileAtomic(join(tmp, 'config.json'), JSON.stringify({ ...cfg, typelens_trained: metadata }, null, 2));
      writeSafetensors(join(tmp, 'model.safetensors'), tensors, {
        format: 'pt',
        generator: 'typelens train',
        ...metadata,
      });
    });
  } catch (e) {
    throw e instanceof TypelensError
      ? e
      : new TypelensError(`cannot write checkpoint ${dir}: ${(e as Error).message}`, 'EIO');
  }
}
