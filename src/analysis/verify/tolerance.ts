/** Precision and tolerances: unit roundoff per dtype, the condition probe's size, the residual-stream bounds. */
import { matmul } from '../../tensor/index.js';
import type { DType } from '../../tensor/dtype.js';
import type { VerifyContext } from './types.js';
import { absT } from './where.js';

// ---------------------------------------------------------------- precision

/** Unit roundoff (half an ulp at 1) of a storage format: f32 2^-24, f16 2^-11, bf16 2^-8. */
export function unitRoundoff(dtype: DType): number {
  return dtype === 'f32' ? 2 ** -24 : dtype === 'f16' ? 2 ** -11 : 2 ** -8;
}
/** Relative size of the random weight perturbation used to estimate the condition of the logits. */
export const PROBE_DELTA = 2 ** -12;
export const DEFAULT_K = 4;

// ---------------------------------------------------------------- shared pieces

/**
 * Per-element tolerances [B*P*M] of the residual-stream identities, composed from the three
 * ways the cache's decompositions and the forward pass round differently (docs/verify.md):
 * - attn[l]: the forward's attn_out is one (H·D)-term inner product z·W_O + b_O; the head
 *   results are D-term products summed over heads: k·u·√(H·D+1)·(|z|@|W_O| + |b_O|);
 * - mlp[l]: likewise post·W_out + b_out against F single products: k·u·√(F+1)·(|post|@|W_out| + |b_out|);
 * - coarse: the forward adds embed, pos, then each attn_out and mlp_out in f32 (C terms):
 *   k·u·√C·Σ|component|;
 * - full: the full decomposition (heads, neurons, embeds, summed biases) differs from the final
 *   residual by the sum of these independent errors (plus the bias sum's rounding), whose
 *   bounds add in quadrature: √(coarse² + Σ_l (attn[l]² + mlp[l]²) + bias²).
 */
interface Tols {
  attn: Float32Array[];
  mlp: Float32Array[];
  coarse: Float32Array;
  full: Float32Array;
  nCoarse: number;
}
export function residTols(ctx: VerifyContext): Tols {
  const hit = ctx.memo.get('residTols');
  if (hit) return hit as Tols;
  const { cache } = ctx.cached();
  const { n_layers: L, n_heads: H, d_head: D, d_model: M, d_mlp: F } = ctx.model.cfg;
  const W = ctx.model.weights;
  const c = ctx.k * ctx.uCompute;
  const n = cache.get('hook_embed').size;
  const attn: Float32Array[] = [],
    mlp: Float32Array[] = [];
  const coarseMass = new Float32Array(n);
  const addAbs = (x: Float32Array) => {
    for (let i = 0; i < n; i++) coarseMass[i] += Math.abs(x[i]);
  };
  addAbs(cache.get('hook_embed').f32());
  addAbs(cache.get('hook_pos_embed').f32());
  const biasMass = new Float64Array(M);
  for (let l = 0; l < L; l++) {
    const z = absT(cache.get(`blocks.${l}.attn.hook_z`)).reshape([n / M, H * D]);
    const a = matmul(z, absT(W.blocks[l].W_O).reshape([H * D, M])).f32();
    const bO = W.blocks[l].b_O.f32(),
      ca = c * Math.sqrt(H * D + 1);
    for (let i = 0; i < n; i++) a[i] = ca * (a[i] + Math.abs(bO[i % M]));
    const post = absT(cache.get(`blocks.${l}.mlp.hook_post`)).reshape([n / M, F]);
    const m = matmul(post, absT(W.blocks[l].W_out)).f32();
    const bOut = W.blocks[l].b_out.f32(),
      cm = c * Math.sqrt(F + 1);
    for (let i = 0; i < n; i++) m[i] = cm * (m[i] + Math.abs(bOut[i % M]));
    for (let j = 0; j < M; j++) biasMass[j] += Math.abs(bO[j]) + Math.abs(bOut[j]);
    attn.push(a);
    mlp.push(m);
    addAbs(cache.get(`blocks.${l}.hook_attn_out`).f32());
    addAbs(cache.get(`blocks.${l}.hook_mlp_out`).f32());
  }
  const nCoarse = 2 + 2 * L;
  const coarse = coarseMass.map((v) => c * Math.sqrt(nCoarse) * v);
  // The error sources are independent roundings, so (in the same probabilistic model) their
  // bounds combine in quadrature: λ·√(Σ σ_j²) = √(Σ (λσ_j)²).
  const full = new Float32Array(n);
  const cb = c * Math.sqrt(2 * L + 1);
  for (let i = 0; i < n; i++) {
    let s = coarse[i] ** 2 + (cb * biasMass[i % M]) ** 2;
    for (let l = 0; l < L; l++) s += attn[l][i] ** 2 + mlp[l][i] ** 2;
    full[i] = Math.sqrt(s);
  }
  const r = { attn, mlp, coarse, full, nCoarse };
  ctx.memo.set('residTols', r);
  return r;
}

/** k · u · √n · mass, elementwise (Higham & Mary's probabilistic bound for n-term sums). */
export const hmTol = (ctx: VerifyContext, mass: Float32Array, n: number): Float32Array => {
  const c = ctx.k * ctx.uCompute * Math.sqrt(n);
  return mass.map((m) => c * m);
};
