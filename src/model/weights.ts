import { TypelensError } from '../errors.js';
import { transposed } from '../tensor/factored-svd.js';
import { sameShape, Tensor } from '../tensor/index.js';
import type { ModelConfig } from './config.js';
import { StFile, tensorF32 } from './safetensors.js';

/** One block's parameters in TransformerLens layout. ln weights are absent after fold_ln. */
export interface BlockWeights {
  ln1_w?: Tensor;
  ln1_b?: Tensor;
  W_Q: Tensor;
  W_K: Tensor;
  W_V: Tensor; // [H, M, D]
  b_Q: Tensor;
  b_K: Tensor;
  b_V: Tensor; // [H, D]
  W_O: Tensor; // [H, D, M]
  b_O: Tensor; // [M]
  ln2_w?: Tensor;
  ln2_b?: Tensor;
  W_in: Tensor;
  b_in: Tensor; // [M, F], [F]
  W_out: Tensor;
  b_out: Tensor; // [F, M], [M]
}

export interface Weights {
  W_E: Tensor; // [V, M]
  W_pos: Tensor; // [n_ctx, M]
  blocks: BlockWeights[];
  ln_final_w?: Tensor;
  ln_final_b?: Tensor;
  W_U: Tensor; // [M, V]
  b_U: Tensor; // [V]
}

/** x * 0 is 0 for every finite x and NaN for NaN and +-Inf: one multiply-add per element, no calls. */
function allFinite(d: Float32Array): boolean {
  let s = 0;
  for (let i = 0; i < d.length; i++) s += d[i] * 0;
  return s === 0;
}

/**
 * HF GPT-2 (Conv1D weights stored [in, out], used as x @ W) -> TL layout (TL's convert_gpt2_weights). Names may
 * carry a `transformer.` prefix; attention mask buffers are ignored. Missing or misshapen
 * tensors are reported by name.
 */
export function convertGPT2(st: StFile, cfg: ModelConfig, opts: { allowNonFinite?: boolean } = {}): Weights {
  const { n_layers: L, d_model: M, n_heads: H, d_head: D, d_mlp: F, n_ctx: C, d_vocab: V } = cfg;
  const prefix = st.entries.has('wte.weight') ? '' : st.entries.has('transformer.wte.weight') ? 'transformer.' : null;
  if (prefix === null)
    throw new TypelensError(
      `${st.path}: no "wte.weight" (or "transformer.wte.weight"): not a GPT-2 checkpoint`,
      'EMISSING',
    );
  const get = (name: string, shape: number[]): Float32Array => {
    const full = name === 'lm_head.weight' ? name : prefix + name; // the head sits beside `transformer.`, never under it
    const e = st.entries.get(full);
    if (!e) throw new TypelensError(`${st.path}: missing tensor "${full}"`, 'EMISSING');
    const ok = sameShape(e.shape, shape);
    if (!ok && !(name === 'wpe.weight' && e.shape.length === 2 && e.shape[0] >= C && e.shape[1] === M)) {
      throw new TypelensError(
        `${st.path}: tensor "${full}" has shape [${e.shape.join(', ')}], expected [${shape.join(', ')}]`,
        'ESHAPE',
      );
    }
    const d = tensorF32(st, full);
    if (!opts.allowNonFinite && !allFinite(d)) {
      for (let i = 0; i < d.length; i++) {
        if (!Number.isFinite(d[i]))
          throw new TypelensError(
            `${st.path}: tensor "${full}" holds a non-finite value (${d[i]}) at flat index ${i}; pass allowNonFinite to load anyway`,
            'ENONFINITE',
          );
      }
    }
    return d;
  };
  const T = (d: Float32Array, shape: number[]) => new Tensor(d, shape);
  // HF GPT2LMHeadModel: lm_head.weight [V, M] (top level, no `transformer.` prefix) is wte unless
  // tie_word_embeddings is false; then the checkpoint's own lm_head is the unembedding.
  const unembedRows = (): Float32Array => {
    if (cfg.tie_word_embeddings !== false) return wte;
    const e = st.entries.get('lm_head.weight') ?? st.entries.get(prefix + 'lm_head.weight');
    if (!e)
      throw new TypelensError(`${st.path}: tie_word_embeddings is false but there is no "lm_head.weight"`, 'EMISSING');
    const name = st.entries.has('lm_head.weight') ? 'lm_head.weight' : prefix + 'lm_head.weight';
    if (!sameShape(e.shape, [V, M]))
      throw new TypelensError(
        `${st.path}: tensor "${name}" has shape [${e.shape.join(', ')}], expected [${V}, ${M}]`,
        'ESHAPE',
      );
    return tensorF32(st, name);
  };
  const wte = get('wte.weight', [V, M]);
  const wpe = get('wpe.weight', [C, M]).subarray(0, C * M);
  const blocks: BlockWeights[] = [];
  for (let l = 0; l < L; l++) {
    const p = `h.${l}.`;
    const cAttn = get(p + 'attn.c_attn.weight', [M, 3 * M]);
    const cAttnB = get(p + 'attn.c_attn.bias', [3 * M]);
    // [M, 3*H*D] columns [Q | K | V], each head-major -> three [H, M, D]
    const split = (j: number) => {
      const w = new Float32Array(H * M * D),
        b = new Float32Array(H * D);
      for (let h = 0; h < H; h++) {
        for (let m = 0; m < M; m++) {
          const src = m * 3 * M + j * M + h * D,
            dst = (h * M + m) * D;
          for (let d = 0; d < D; d++) w[dst + d] = cAttn[src + d];
        }
        for (let d = 0; d < D; d++) b[h * D + d] = cAttnB[j * M + h * D + d];
      }
      return [T(w, [H, M, D]), T(b, [H, D])];
    };
    const [W_Q, b_Q] = split(0),
      [W_K, b_K] = split(1),
      [W_V, b_V] = split(2);
    blocks.push({
      ln1_w: T(get(p + 'ln_1.weight', [M]), [M]),
      ln1_b: T(get(p + 'ln_1.bias', [M]), [M]),
      W_Q,
      W_K,
      W_V,
      b_Q,
      b_K,
      b_V,
      W_O: T(get(p + 'attn.c_proj.weight', [M, M]), [H, D, M]),
      b_O: T(get(p + 'attn.c_proj.bias', [M]), [M]),
      ln2_w: T(get(p + 'ln_2.weight', [M]), [M]),
      ln2_b: T(get(p + 'ln_2.bias', [M]), [M]),
      W_in: T(get(p + 'mlp.c_fc.weight', [M, F]), [M, F]),
      b_in: T(get(p + 'mlp.c_fc.bias', [F]), [F]),
      W_out: T(get(p + 'mlp.c_proj.weight', [F, M]), [F, M]),
      b_out: T(get(p + 'mlp.c_proj.bias', [M]), [M]),
    });
  }
  return {
    W_E: T(wte, [V, M]),
    W_pos: T(Float32Array.from(wpe), [C, M]),
    blocks,
    ln_final_w: T(get('ln_f.weight', [M]), [M]),
    ln_final_b: T(get('ln_f.bias', [M]), [M]),
    W_U: transposed(T(unembedRows(), [V, M])), // [M, V]
    b_U: Tensor.zeros([V]),
  };
}
