import { check, TypelensError } from '../errors.js';
import { FactoredMatrix } from '../tensor/factored-matrix.js';
import { broadcastShapes, matmul, numel, Shape, Tensor } from '../tensor/index.js';

/** What the weight-space circuits read from a model: HookedTransformer's stacked weight getters. */
export interface AttnWeights {
  cfg: { n_layers: number; n_heads: number };
  /** [n_layers, n_heads, d_model, d_head] */
  readonly W_Q: Tensor;
  readonly W_K: Tensor;
  readonly W_V: Tensor;
  /** [n_layers, n_heads, d_head, d_model] */
  readonly W_O: Tensor;
}

/** TL's HookedTransformer.QK: W_Q W_K^T per head, [n_layers, n_heads, d_model, d_model], factored. */
export function qkCircuit(model: AttnWeights): FactoredMatrix {
  return new FactoredMatrix(model.W_Q, model.W_K.transpose(-2, -1));
}

/** TL's HookedTransformer.OV: W_V W_O per head, [n_layers, n_heads, d_model, d_model], factored. */
export function ovCircuit(model: AttnWeights): FactoredMatrix {
  return new FactoredMatrix(model.W_V, model.W_O);
}

/**
 * Composition score ||L R||_F / (||L||_F ||R||_F) of each pair of matrices, L = left.AB and
 * R = right.AB in TL's row-vector orientation (the left matrix acts first: x L R). TL's
 * utils.composition_scores: with `broadcastDims` (the default) the leading axes of left and
 * right are kept apart and the result is [...left leading, ...right leading]; without it they
 * broadcast against each other. Computed as TL does, from collapse_l(left) and collapse_r(right)
 * (the orthogonal outer factors do not change Frobenius norms), so no d_model x d_model product
 * is formed. A zero matrix gives NaN (0/0), as in TL.
 */
export function compositionScores(
  left: FactoredMatrix,
  right: FactoredMatrix,
  opts: { broadcastDims?: boolean } = {},
): Tensor {
  const { broadcastDims = true } = opts;
  if (left.rdim !== right.ldim) {
    throw new TypelensError(
      `compositionScores needs left.rdim == right.ldim, shapes were left: [${left.shape.join(', ')}], right: [${right.shape.join(', ')}]`,
      'ESHAPE',
    );
  }
  // Collapse first (one SVD per matrix), then insert the broadcast axes on the collapsed tensors:
  // TL unsqueezes the factored matrices before collapsing, which gives the same values.
  let cl = left.collapseL(); // [...bl, kl, R]
  let cr = right.collapseR(); // [...br, R, kr]
  if (broadcastDims) {
    const ll = left.ndim - 2,
      rl = right.ndim - 2;
    for (let i = 0; i < ll; i++) cr = cr.unsqueeze(i);
    for (let i = 0; i < rl; i++) cl = cl.unsqueeze(i + ll);
  }
  const bl = cl.shape.slice(0, -2),
    br = cr.shape.slice(0, -2);
  const batch = broadcastShapes(bl, br);
  const [kl, R] = cl.shape.slice(-2),
    kr = cr.shape[cr.ndim - 1];
  const li = flatIndexUnder(batch, bl),
    ri = flatIndexUnder(batch, br);
  const cld = cl.contiguous().f32(),
    crd = cr.contiguous().f32();
  const lNorm = blockNorms(cld, kl * R),
    rNorm = blockNorms(crd, R * kr);
  const out = new Float32Array(numel(batch));
  // Group the pairs by their right matrix: one [n*kl, R] @ [R, kr] product per right matrix.
  const byRight = new Map<number, number[]>();
  for (let b = 0; b < out.length; b++) {
    const g = byRight.get(ri[b]);
    if (g) g.push(b);
    else byRight.set(ri[b], [b]);
  }
  // With broadcastDims every right matrix meets the same list of left ones: stack them once.
  let rows: Tensor | undefined,
    rowsKey = '';
  for (const [r, pairs] of byRight) {
    const key = pairs.map((b) => li[b]).join(',');
    if (!rows || key !== rowsKey) {
      const d = new Float32Array(pairs.length * kl * R);
      pairs.forEach((b, p) => d.set(cld.subarray(li[b] * kl * R, (li[b] + 1) * kl * R), p * kl * R));
      rows = new Tensor(d, [pairs.length * kl, R]);
      rowsKey = key;
    }
    const right = new Tensor(crd.subarray(r * R * kr, (r + 1) * R * kr), [R, kr]);
    const prod = matmul(rows, right).f32();
    const comp = blockNorms(prod, kl * kr);
    pairs.forEach((b, p) => {
      out[b] = comp[p] / rNorm[r] / lNorm[li[b]];
    });
  }
  return new Tensor(out, batch);
}

/**
 * Composition scores between every pair of heads, [n_layers, n_heads, n_layers, n_heads]
 * (TL's HookedTransformer.all_composition_scores). The earlier head's OV circuit is the left
 * matrix; the later head's right matrix is its QK circuit ('Q'), QK^T ('K') or OV circuit ('V').
 * Pairs whose second head is in the same or an earlier layer than the first are set to 0.
 */
export function allCompositionScores(model: AttnWeights, mode: 'Q' | 'K' | 'V'): Tensor {
  const left = ovCircuit(model);
  let right: FactoredMatrix;
  if (mode === 'Q') right = qkCircuit(model);
  else if (mode === 'K') right = qkCircuit(model).T;
  else if (mode === 'V') right = left;
  else throw new TypelensError(`mode must be one of ['Q', 'K', 'V'] not ${JSON.stringify(mode)}`, 'EINVAL');
  const scores = compositionScores(left, right, { broadcastDims: true });
  const { n_layers: L, n_heads: H } = model.cfg;
  check(
    scores.ndim === 4 && scores.shape[0] === L && scores.shape[2] === L,
    () => `allCompositionScores: expected [${L}, ${H}, ${L}, ${H}] scores, got [${scores.shape.join(', ')}]`,
  );
  const d = scores.f32(); // fresh from compositionScores: safe to edit in place
  for (let l1 = 0; l1 < L; l1++)
    for (let h1 = 0; h1 < H; h1++)
      for (let l2 = 0; l2 <= l1; l2++) {
        d.fill(0, ((l1 * H + h1) * L + l2) * H, ((l1 * H + h1) * L + l2 + 1) * H);
      }
  return scores;
}

/** For each flat index of `batch`, the flat index into a (left-padded) shape that broadcasts to it. */
function flatIndexUnder(batch: Shape, sub: Shape): Int32Array {
  const pad = [...new Array<number>(batch.length - sub.length).fill(1), ...sub];
  const strides = new Array<number>(pad.length);
  for (let d = pad.length - 1, acc = 1; d >= 0; d--) {
    strides[d] = pad[d] === 1 ? 0 : acc;
    acc *= pad[d];
  }
  const n = numel(batch);
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    let o = 0;
    for (let d = batch.length - 1, r = i; d >= 0; d--) {
      o += (r % batch[d]) * strides[d];
      r = Math.floor(r / batch[d]);
    }
    out[i] = o;
  }
  return out;
}

/** Frobenius norm (accumulated in float64) of each consecutive block of `size` values. */
function blockNorms(data: Float32Array, size: number): Float64Array {
  const n = size === 0 ? 0 : data.length / size;
  const out = new Float64Array(n);
  for (let b = 0; b < n; b++) {
    let s = 0;
    for (let i = b * size; i < (b + 1) * size; i++) s += data[i] * data[i];
    out[b] = Math.sqrt(s);
  }
  return out;
}
