import { check, TypelensError } from '../errors.js';
import { FactoredMatrix } from '../tensor/factored-matrix.js';
import { matmul, mul, Tensor } from '../tensor/index.js';
import { mat64, svd64 } from '../tensor/linalg64.js';

export type SingularVectorType = 'OV' | 'w_in' | 'w_out';

/** What SVDInterpreter reads from a model (HookedTransformer's getters). */
export interface SVDModel {
  cfg: { n_layers: number; n_heads: number; d_vocab: number };
  /** [n_layers, n_heads, d_model, d_head] and [n_layers, n_heads, d_head, d_model] */
  readonly W_V: Tensor;
  readonly W_O: Tensor;
  /** [n_layers, d_model, d_mlp] and [n_layers, d_mlp, d_model] */
  readonly W_in: Tensor;
  readonly W_out: Tensor;
  /** [d_model, d_vocab] */
  readonly W_U: Tensor;
  /** ln2 gains, present while LayerNorm is not folded (TL reads `blocks.{l}.ln2.w`). */
  weights?: { blocks: { ln2_w?: Tensor }[] };
  toStrTokens(input: number[]): string[];
}

export interface SingularVectorOptions {
  layerIndex: number;
  /** How many singular vectors, largest singular value first (default 10). */
  numVectors?: number;
  /** Required for 'OV'; ignored by 'w_in'/'w_out'. */
  headIndex?: number;
}

/** One singular vector's strongest tokens through the unembedding. */
export interface SingularVectorTokens {
  /** Position of the singular vector (0 = largest singular value). */
  vector: number;
  /** -1 when the vector was flipped to point at its strongest token (see topTokens). */
  sign: 1 | -1;
  ids: number[];
  values: number[];
  tokens: string[];
}

/**
 * TransformerLens's SVDInterpreter (transformer_lens/SVDInterpreter.py): the right singular
 * vectors of a head's OV circuit, of an MLP layer's input weights (W_in^T, scaled by ln2's gain
 * when LayerNorm is not folded) or of its output weights W_out, each projected onto the
 * unembedding W_U, to read what a direction writes in token space.
 *
 * A singular vector's sign is arbitrary (TL's demo warns results differ across devices);
 * `getSingularVectors` keeps the solver's sign as TL does, `topTokens` fixes it (see there).
 */
export class SVDInterpreter {
  constructor(readonly model: SVDModel) {}

  /**
   * TL's get_singular_vectors: [d_vocab, 1, numVectors], column i = (i-th right singular
   * vector) @ W_U. For 'OV' the vectors are the right singular vectors of W_V W_O (the output
   * side, in the residual stream), as TL's FactoredMatrix V; for 'w_in'/'w_out' those of
   * W_in^T (x ln2.w) and W_out.
   */
  getSingularVectors(vectorType: SingularVectorType, opts: SingularVectorOptions): Tensor {
    const V = this.rightSingularVectors(vectorType, opts); // [d_model, k], columns
    const { numVectors = 10 } = opts;
    check(
      Number.isInteger(numVectors) && numVectors >= 1 && numVectors <= V.shape[1],
      () => `numVectors must be an integer in [1, ${V.shape[1]}] for ${vectorType} (its rank bound), got ${numVectors}`,
    );
    const WU = this.model.W_U;
    // TL's _get_singular_vectors_from_matrix: V[i, :] @ W_U for each i, stacked on a new axis 1, then unsqueeze(1).
    const rows = matmul(V.slice(1, 0, numVectors).transpose(0, 1).contiguous(), WU); // [n, d_vocab]
    const out = rows.transpose(0, 1).unsqueeze(1).contiguous();
    check(
      out.shape[0] === this.model.cfg.d_vocab,
      () => `W_U has ${out.shape[0]} columns, cfg.d_vocab is ${this.model.cfg.d_vocab}`,
    );
    return out;
  }

  /**
   * The k strongest tokens of each singular vector (a typelens helper; TL's demo reads these
   * off a TopKTable). Each vector is first oriented so that its largest-magnitude projection is
   * positive (`sign` says whether it was flipped): singular vectors are defined up to sign, and
   * this makes the answer independent of the solver. Token strings come from model.toStrTokens.
   */
  topTokens(vectorType: SingularVectorType, opts: SingularVectorOptions & { k?: number }): SingularVectorTokens[] {
    const vecs = this.getSingularVectors(vectorType, opts); // [V, 1, n]
    const [nVocab, , n] = vecs.shape;
    const { k = 10 } = opts;
    check(Number.isInteger(k) && k >= 1 && k <= nVocab, `k must be an integer in [1, ${nVocab}], got ${k}`);
    const d = vecs.f32();
    const out: SingularVectorTokens[] = [];
    for (let i = 0; i < n; i++) {
      const col = Array.from({ length: nVocab }, (_, t) => d[t * n + i]);
      let big = 0;
      for (let t = 1; t < nVocab; t++) if (Math.abs(col[t]) > Math.abs(col[big])) big = t;
      const sign: 1 | -1 = col[big] < 0 ? -1 : 1;
      const order = col
        .map((_, t) => t)
        .sort((a, b) => sign * (col[b] - col[a]) || a - b)
        .slice(0, k);
      out.push({
        vector: i,
        sign,
        ids: order,
        values: order.map((t) => sign * col[t]),
        tokens: order.map((t) => this.model.toStrTokens([t])[0]),
      });
    }
    return out;
  }

  /** Right singular vectors as columns [d_model, k], largest singular value first. */
  private rightSingularVectors(vectorType: SingularVectorType, opts: SingularVectorOptions): Tensor {
    const { layerIndex, headIndex } = opts;
    const { n_layers: L, n_heads: H } = this.model.cfg;
    check(
      Number.isInteger(layerIndex) && layerIndex >= 0 && layerIndex < L,
      `Layer index must be between 0 and ${L - 1} but got ${layerIndex}`,
    );
    if (headIndex === undefined && vectorType === 'OV')
      throw new TypelensError(`Head index optional only for w_in and w_out, got ${vectorType}`);
    switch (vectorType) {
      case 'OV': {
        check(
          Number.isInteger(headIndex) && headIndex! >= 0 && headIndex! < H,
          `Head index must be between 0 and ${H - 1} but got ${headIndex}`,
        );
        // TL's _get_OV_matrix: FactoredMatrix(W_V[head], W_O[head]), then its V.
        const fm = new FactoredMatrix(
          this.model.W_V.index(0, layerIndex).index(0, headIndex!),
          this.model.W_O.index(0, layerIndex).index(0, headIndex!),
        );
        return fm.V;
      }
      case 'w_in': {
        // TL's _get_w_in_matrix: W_in^T [d_mlp, d_model], times ln2.w (per d_model column) when not folded.
        let w = this.model.W_in.index(0, layerIndex).transpose(0, 1);
        const ln2 = this.model.weights?.blocks[layerIndex]?.ln2_w;
        if (ln2) w = mul(w, ln2);
        return rightVectors(w);
      }
      case 'w_out':
        return rightVectors(this.model.W_out.index(0, layerIndex));
      default:
        throw new TypelensError(
          `Vector type must be in ['OV', 'w_in', 'w_out'], instead got ${JSON.stringify(vectorType)}`,
        );
    }
  }
}

/** Right singular vectors of a 2-D tensor as columns [cols, k], in float64 (src/tensor/linalg64.ts). */
function rightVectors(w: Tensor): Tensor {
  const { V } = svd64(mat64(w.shape[0], w.shape[1], w.f32()));
  return new Tensor(Float32Array.from(V.data), [V.rows, V.cols]);
}
