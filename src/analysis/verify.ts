/**
 * `verify`: check, on one model and one input, the floating-point invariants that mechanistic
 * interpretability relies on (issue 18): weight processing preserves the outputs, the cache's
 * decompositions sum to what they decompose, direct logit attributions sum to the logit
 * difference, and hooks that return their input change nothing.
 *
 * Every check compares two computations of the same quantity and reports the largest absolute
 * and relative error, a tolerance derived from the precision and the magnitudes involved, and
 * pass/fail; a failure names where (layer, head or neuron, batch, position, component). The
 * checks live in a registry (`registerCheck`), so that later ones — gradients against finite
 * differences, attribution patching on linear metrics — plug in without touching this file's
 * callers. See docs/verify.md for the tolerance derivations.
 *
 * Tolerances (derivation in docs/verify.md):
 * - Same-model checks (decompositions, DLA): both sides evaluate the same sum of products from
 *   the same cached activations and stored weights; they differ only by f32 rounding, so
 *   tol_e = k · u32 · √n · Σ_i |t_i,e| per compared scalar e, the probabilistic bound of Higham &
 *   Mary (SIAM J. Sci. Comput. 41(5), 2019) with λ = k for any order of summation of n terms t_i.
 *   Activations are f32 in every storage dtype, so u = u32 = 2^-24 there whatever `dtype` is.
 * - Hook checks: exact (tolerance 0): an identity hook must not change a single bit.
 * - Processing checks: the unprocessed and processed models are two evaluations whose weights
 *   were rounded separately to the storage dtype and whose arithmetic rounds differently.
 *   Backward error analysis turns both into relative weight perturbations of size
 *   ε = u(dtype) + √K · u32 (K = longest inner product), and a statistical condition estimate
 *   (Kenney & Laub, SIAM J. Sci. Comput. 15(1), 1994) measures how much this model's centred
 *   logits move on this input under random relative weight perturbations of size δ:
 *   tol = k · √2 · (ε / δ) · max|Δlogits_probe|. Ill-conditioned checkpoints (huge weight
 *   scales, near-constant residual rows, saturated attention) get a larger tolerance because
 *   they really are more sensitive, and their errors are reported as they are.
 */
import { TypelensError } from '../errors.js';
import { HookedTransformer } from '../model/hooked-transformer.js';
import type { BwdHook, FwdHook, GradMetric, LoadOptions, TokensInput } from '../model/hooked-transformer.js';
import { ag } from '../autograd/index.js';
import { NO_PROCESSING } from '../model/process.js';
import type { ProcessingOptions } from '../model/process.js';
import { rng } from '../model/make-weights.js';
import type { StFile, StTensorOut } from '../model/safetensors.js';
import type { ActivationCache } from '../hooks/cache.js';
import type { Weights } from '../model/weights.js';
import { matmul, map, sum, Tensor } from '../tensor/index.js';
import type { DType } from '../tensor/dtype.js';

// ---------------------------------------------------------------- types

export type CheckStatus = 'pass' | 'fail' | 'skip';

/** Where a discrepancy is: any of these that apply, in this order when printed. */
export interface Where {
  hook?: string;
  component?: string;
  layer?: number;
  head?: number;
  neuron?: number;
  batch?: number;
  pos?: number;
  /** attention key position */
  key?: number;
  /** index along d_model / d_head */
  dim?: number;
  /** vocabulary index (logits) */
  token?: number;
  variant?: string;
}

export interface CheckResult {
  id: string;
  group: string;
  title: string;
  status: CheckStatus;
  /** max |a - b| over every compared scalar */
  maxAbsErr: number;
  /** max |a - b| / max |b|: norm-wise, so entries near zero do not make it meaningless */
  maxRelErr: number;
  /** the tolerance at the scalar with the worst error/tolerance ratio (0 for exact checks) */
  tol: number;
  /** max over compared scalars of |a - b| / tol (Infinity when an exact check differs) */
  ratio: number;
  /** terms per compared scalar that the tolerance accounts for */
  nTerms?: number;
  /** where the worst error/tolerance ratio is */
  where?: Where;
  /** one line: for failures, where and by how much; for skips, why */
  message: string;
  /** a pass that deserves a look (a tolerance so wide that the check is weak at this dtype) */
  warning?: string;
  /** extra numbers behind the tolerance (condition estimate, scales...) */
  detail?: Record<string, number | string>;
}

export type Capability = 'loader' | 'gradients' | 'foldedLn';

/** Everything a check may use; lazily computed pieces are shared between checks. */
export interface VerifyContext {
  model: HookedTransformer;
  tokens: Tensor;
  /** [B] pairs (correct, incorrect), one per batch row, scored at the last position */
  answers: [number, number][];
  dtype: DType;
  k: number;
  /** unit roundoff of the arithmetic (activations are always f32) */
  uCompute: number;
  /** unit roundoff of the weight storage dtype */
  uStorage: number;
  /** the run the decomposition checks analyse (runWithCache, with opts.cacheHooks if given) */
  cached(): { logits: Tensor; cache: ActivationCache };
  load?: (p: ProcessingOptions) => HookedTransformer;
  /** scratch space for checks that share work (the processing checks' baseline and probe) */
  memo: Map<string, unknown>;
  /** backward hooks active in the gradient checks' backward passes (a fault to inject in a test) */
  gradHooks?: BwdHook[];
  onCleanup(fn: () => void): void;
}

export type CheckOutcome = Omit<CheckResult, 'id' | 'group' | 'title'>;

export interface VerifyCheck {
  id: string;
  group: string;
  title: string;
  /** capabilities without which the check reports `skip` (with the reason) instead of running */
  needs?: Capability[];
  run(ctx: VerifyContext): CheckOutcome;
}

export interface VerifyOptions {
  /** (correct, incorrect) answer tokens, for every batch row, or one pair per row; default: the top-2 predictions at the last position */
  answers?: [number | string, number | string] | [number | string, number | string][];
  /**
   * Loads the same checkpoint with the given processing switches (everything not given off).
   * Needed for the processing checks; see loaderFromDir / loaderFromHF.
   */
  load?: (p: ProcessingOptions) => HookedTransformer;
  /** safety factor λ of the tolerances (default 4) */
  k?: number;
  /** run only checks whose id starts with one of these */
  only?: string[];
  /** hooks active in the cached run only (a setup to check, or a fault to inject in a test) */
  cacheHooks?: FwdHook[];
  /** backward hooks active in the gradient checks' backward passes only (a fault to inject in a test) */
  gradHooks?: BwdHook[];
  /** verify this run's cache instead of running runWithCache (it must be a full cache of `tokens`) */
  cache?: { logits: Tensor; cache: ActivationCache };
  prependBos?: boolean;
  onProgress?: (done: number, total: number, id: string) => void;
  /** extra checks for this call only, after the registered ones */
  extraChecks?: VerifyCheck[];
}

export interface VerifyReport {
  ok: boolean;
  passed: number;
  failed: number;
  skipped: number;
  model: {
    name: string;
    n_layers: number;
    d_model: number;
    n_heads: number;
    d_head: number;
    d_mlp: number;
    d_vocab: number;
    normalization: string;
  };
  dtype: DType;
  tokens: number[][];
  answers: [number, number][];
  tolerance: { k: number; uCompute: number; uStorage: number; probeDelta: number };
  checks: CheckResult[];
  seconds: number;
}

// ---------------------------------------------------------------- precision

/** Unit roundoff (half an ulp at 1) of a storage format: f32 2^-24, f16 2^-11, bf16 2^-8. */
export function unitRoundoff(dtype: DType): number {
  return dtype === 'f32' ? 2 ** -24 : dtype === 'f16' ? 2 ** -11 : 2 ** -8;
}
/** Relative size of the random weight perturbation used to estimate the condition of the logits. */
export const PROBE_DELTA = 2 ** -12;
export const DEFAULT_K = 4;

// ---------------------------------------------------------------- comparison helpers

const axesOf = (name: string): (keyof Where)[] => {
  if (/hook_(attn_scores|pattern)$/.test(name)) return ['batch', 'head', 'pos', 'key'];
  if (/hook_(q|k|v|z|result)$/.test(name)) return ['batch', 'pos', 'head', 'dim'];
  if (/mlp\.hook_(pre|post)$/.test(name)) return ['batch', 'pos', 'neuron'];
  if (/hook_scale$/.test(name)) return ['batch', 'pos', 'dim'];
  if (name === 'logits') return ['batch', 'pos', 'token'];
  return ['batch', 'pos', 'dim'];
};
function unravel(i: number, shape: readonly number[]): number[] {
  const out = new Array<number>(shape.length);
  for (let d = shape.length - 1; d >= 0; d--) {
    out[d] = i % shape[d];
    i = Math.floor(i / shape[d]);
  }
  return out;
}
function whereAt(i: number, shape: readonly number[], axes: (keyof Where)[], base: Where = {}): Where {
  const idx = unravel(i, shape);
  const w: Where = { ...base };
  axes.forEach((a, d) => {
    if (d < idx.length && !(a === 'dim' && shape[d] === 1)) (w as Record<string, number>)[a] = idx[d];
  });
  const layer = /^blocks\.(\d+)\./.exec(base.hook ?? '');
  if (layer && w.layer === undefined) w.layer = Number(layer[1]);
  return w;
}

/** "blocks.1.attn.hook_z: layer 1, head 2, batch 0, pos 3, dim 5". */
export function formatWhere(w?: Where): string {
  if (!w) return '';
  const order: (keyof Where)[] = [
    'variant',
    'component',
    'layer',
    'head',
    'neuron',
    'batch',
    'pos',
    'key',
    'dim',
    'token',
  ];
  const parts = order.filter((k) => w[k] !== undefined).map((k) => `${k} ${w[k]}`);
  return w.hook ? `${w.hook}${parts.length ? `: ${parts.join(', ')}` : ''}` : parts.join(', ');
}

const fmt = (x: number) => (x === 0 ? '0' : Number.isFinite(x) ? x.toExponential(2) : String(x));

interface Tally {
  maxAbs: number;
  maxRef: number;
  worstRatio: number;
  worstI: number;
  worstErr: number;
  worstTol: number;
  bad: number;
}
function newTally(): Tally {
  return { maxAbs: 0, maxRef: 0, worstRatio: 0, worstI: -1, worstErr: 0, worstTol: 0, bad: 0 };
}
/** Fold got vs want into the tally; tol is per element or one number. Returns the index offset's worst. */
function tally(
  t: Tally,
  got: ArrayLike<number>,
  want: ArrayLike<number>,
  tol: ArrayLike<number> | number,
  offset = 0,
): void {
  for (let i = 0; i < want.length; i++) {
    const g = got[i],
      w = want[i];
    const tl = typeof tol === 'number' ? tol : tol[i];
    const err = g === w ? 0 : Math.abs(g - w);
    const bad = !(err <= tl); // NaN counts as bad
    if (Math.abs(w) > t.maxRef) t.maxRef = Math.abs(w);
    if (Number.isNaN(err) || Number.isNaN(t.maxAbs)) t.maxAbs = NaN;
    else if (err > t.maxAbs) t.maxAbs = err;
    const ratio = Number.isNaN(err) ? Infinity : err === 0 ? 0 : tl > 0 ? err / tl : Infinity;
    if (bad) t.bad++;
    if (t.worstI < 0 || ratio > t.worstRatio) {
      t.worstRatio = ratio;
      t.worstI = offset + i;
      t.worstErr = err;
      t.worstTol = tl;
    }
  }
}
function outcome(
  t: Tally,
  where: Where | undefined,
  nTerms: number | undefined,
  what: string,
  detail?: Record<string, number | string>,
): CheckOutcome {
  const pass = t.bad === 0 && !Number.isNaN(t.maxAbs);
  const maxRelErr = t.maxRef > 0 ? t.maxAbs / t.maxRef : t.maxAbs === 0 ? 0 : Infinity;
  const loc = formatWhere(where);
  const message = pass
    ? `max |err| ${fmt(t.maxAbs)} ≤ tol; worst at ${loc || '-'} (${(t.worstRatio * 100).toFixed(t.worstRatio < 0.01 ? 3 : 1)}% of tol)`
    : `${what}: off at ${loc} by ${fmt(t.worstErr)} > tol ${fmt(t.worstTol)} (${t.bad} scalar${t.bad === 1 ? '' : 's'} over tol)`;
  return {
    status: pass ? 'pass' : 'fail',
    maxAbsErr: t.maxAbs,
    maxRelErr,
    tol: t.worstTol,
    ratio: t.worstRatio,
    nTerms,
    where,
    message,
    detail,
  };
}

const absT = (t: Tensor) => map(t, Math.abs);

// ---------------------------------------------------------------- the registry

const REGISTRY: VerifyCheck[] = [];

/** Add a check (or replace the one with the same id: the gradient checks replace their placeholders). */
export function registerCheck(c: VerifyCheck): void {
  const i = REGISTRY.findIndex((r) => r.id === c.id);
  if (i >= 0) REGISTRY[i] = c;
  else REGISTRY.push(c);
}
export function unregisterCheck(id: string): void {
  const i = REGISTRY.findIndex((r) => r.id === id);
  if (i >= 0) REGISTRY.splice(i, 1);
}
/** The registered checks, in the order they run. */
export function listChecks(): readonly VerifyCheck[] {
  return REGISTRY;
}

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
function residTols(ctx: VerifyContext): Tols {
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
const hmTol = (ctx: VerifyContext, mass: Float32Array, n: number): Float32Array => {
  const c = ctx.k * ctx.uCompute * Math.sqrt(n);
  return mass.map((m) => c * m);
};

/**
 * Which head's output space (the row space of W_O[h]) explains a residual-stream discrepancy
 * vector: the fraction of |Δ|² each head's least-squares projection captures.
 */
function headExplaining(
  model: HookedTransformer,
  layer: number,
  delta: Float32Array,
): { head: number; frac: number } | undefined {
  const { n_heads: H, d_head: D, d_model: M } = model.cfg;
  const WO = model.weights.blocks[layer].W_O.f32();
  let dd = 0;
  for (const v of delta) dd += v * v;
  if (!(dd > 0)) return undefined;
  const fracs: number[] = [];
  for (let h = 0; h < H; h++) {
    const A = WO.subarray(h * D * M, (h + 1) * D * M);
    const G = new Float64Array(D * D),
      r = new Float64Array(D);
    for (let i = 0; i < D; i++) {
      for (let m = 0; m < M; m++) r[i] += A[i * M + m] * delta[m];
      for (let j = 0; j <= i; j++) {
        let s = 0;
        for (let m = 0; m < M; m++) s += A[i * M + m] * A[j * M + m];
        G[i * D + j] = G[j * D + i] = s;
      }
    }
    const c = solveSpd(G, r, D);
    let e = 0;
    for (let i = 0; i < D; i++) e += c[i] * r[i];
    fracs.push(e / dd);
  }
  const best = fracs.indexOf(Math.max(...fracs));
  const second = Math.max(-Infinity, ...fracs.filter((_, h) => h !== best));
  return fracs[best] > 0.9 && (H === 1 || second < 0.9) ? { head: best, frac: fracs[best] } : undefined;
}
/** Cholesky solve with a small ridge (G is a Gram matrix, possibly rank-deficient). */
function solveSpd(G: Float64Array, b: Float64Array, n: number): Float64Array {
  let tr = 0;
  for (let i = 0; i < n; i++) tr += G[i * n + i];
  const ridge = 1e-10 * (tr / n || 1);
  const Lm = new Float64Array(n * n);
  for (let i = 0; i < n; i++)
    for (let j = 0; j <= i; j++) {
      let s = G[i * n + j] + (i === j ? ridge : 0);
      for (let q = 0; q < j; q++) s -= Lm[i * n + q] * Lm[j * n + q];
      Lm[i * n + j] = i === j ? Math.sqrt(Math.max(s, 1e-300)) : s / Lm[j * n + j];
    }
  const y = new Float64Array(n),
    x = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let s = b[i];
    for (let q = 0; q < i; q++) s -= Lm[i * n + q] * y[q];
    y[i] = s / Lm[i * n + i];
  }
  for (let i = n - 1; i >= 0; i--) {
    let s = y[i];
    for (let q = i + 1; q < n; q++) s -= Lm[q * n + i] * x[q];
    x[i] = s / Lm[i * n + i];
  }
  return x;
}
/** The neuron whose output direction W_out[n] a discrepancy vector points along (|cos| > 0.9). */
function neuronExplaining(
  model: HookedTransformer,
  layer: number,
  delta: Float32Array,
): { neuron: number; cos: number } | undefined {
  const { d_mlp: F, d_model: M } = model.cfg;
  const Wout = model.weights.blocks[layer].W_out.f32();
  let dd = 0;
  for (const v of delta) dd += v * v;
  let best = -1,
    bestCos = 0;
  for (let n = 0; n < F; n++) {
    let dot = 0,
      ww = 0;
    for (let m = 0; m < M; m++) {
      dot += Wout[n * M + m] * delta[m];
      ww += Wout[n * M + m] ** 2;
    }
    const c = ww > 0 && dd > 0 ? Math.abs(dot) / Math.sqrt(ww * dd) : 0;
    if (c > bestCos) {
      bestCos = c;
      best = n;
    }
  }
  return bestCos > 0.9 ? { neuron: best, cos: bestCos } : undefined;
}

// ---------------------------------------------------------------- decomposition checks

registerCheck({
  id: 'decompose.decomposeResid',
  group: 'decomposition',
  title: 'Σ decomposeResid() = final residual stream',
  run(ctx) {
    const { cache } = ctx.cached();
    const L = ctx.model.cfg.n_layers;
    const [stack, labels] = cache.decomposeResid({ layer: -1, returnLabels: true }); // [C, B, P, M]
    const C = stack.shape[0];
    const got = sum(stack, 0).f32(),
      want = cache.get(`blocks.${L - 1}.hook_resid_post`);
    const t = newTally();
    tally(t, got, want.f32(), residTols(ctx).coarse); // k·u·√C·Σ|component|
    const where =
      t.worstI >= 0
        ? whereAt(t.worstI, want.shape, ['batch', 'pos', 'dim'], { hook: `blocks.${L - 1}.hook_resid_post` })
        : undefined;
    return outcome(t, where, C, `Σ of ${C} components (${labels[0]}…${labels[C - 1]})`);
  },
});

registerCheck({
  id: 'decompose.accumulatedResid',
  group: 'decomposition',
  title: 'accumulatedResid() last entry = final residual stream',
  run(ctx) {
    const { cache } = ctx.cached();
    const L = ctx.model.cfg.n_layers;
    const acc = cache.accumulatedResid({ layer: -1, inclMid: true });
    const last = acc.index(0, acc.shape[0] - 1).contiguous();
    const want = cache.get(`blocks.${L - 1}.hook_resid_post`);
    const t = newTally();
    tally(t, last.f32(), want.f32(), hmTol(ctx, absT(want).f32(), 1));
    const where =
      t.worstI >= 0
        ? whereAt(t.worstI, want.shape, ['batch', 'pos', 'dim'], { hook: `blocks.${L - 1}.hook_resid_post` })
        : undefined;
    return outcome(t, where, 1, `accumulatedResid's final_post entry (of ${acc.shape[0]})`);
  },
});

registerCheck({
  id: 'decompose.headResults',
  group: 'decomposition',
  title: 'Σ_h stackHeadResults() + b_O = hook_attn_out (per layer)',
  run(ctx) {
    const { cache } = ctx.cached();
    const { n_layers: L, n_heads: H, d_head: D, d_model: M } = ctx.model.cfg;
    cache.log = () => {};
    const heads = cache.stackHeadResults({ layer: -1 }); // [L*H, B, P, M]
    const tols = residTols(ctx);
    const t = newTally();
    const per = heads.size / (L * H);
    const hs = heads.f32();
    let worstLayer = -1,
      prevI = -1;
    for (let l = 0; l < L; l++) {
      const bO = ctx.model.weights.blocks[l].b_O.f32();
      const got = new Float32Array(per);
      for (let i = 0; i < per; i++) {
        let s = bO[i % M];
        for (let h = 0; h < H; h++) s += hs[(l * H + h) * per + i];
        got[i] = s;
      }
      tally(t, got, cache.get(`blocks.${l}.hook_attn_out`).f32(), tols.attn[l], l * per);
      if (t.worstI !== prevI) {
        worstLayer = l;
        prevI = t.worstI;
      }
    }
    let where: Where | undefined;
    if (t.worstI >= 0) {
      const shape = cache.get('blocks.0.hook_attn_out').shape;
      where = whereAt(t.worstI - worstLayer * per, shape, ['batch', 'pos', 'dim'], {
        hook: `blocks.${worstLayer}.hook_attn_out`,
        layer: worstLayer,
      });
      if (t.bad > 0) {
        // name the head whose output space the discrepancy lies in
        const row = Math.floor((t.worstI - worstLayer * per) / M);
        const want = cache.get(`blocks.${worstLayer}.hook_attn_out`).f32();
        const bO = ctx.model.weights.blocks[worstLayer].b_O.f32();
        const delta = new Float32Array(M);
        for (let m = 0; m < M; m++) {
          let s = bO[m];
          for (let h = 0; h < H; h++) s += hs[(worstLayer * H + h) * per + row * M + m];
          delta[m] = s - want[row * M + m];
        }
        const e = headExplaining(ctx.model, worstLayer, delta);
        if (e) {
          where.head = e.head;
        }
      }
    }
    return outcome(t, where, H * D + 1, 'head results + b_O');
  },
});

registerCheck({
  id: 'decompose.neuronResults',
  group: 'decomposition',
  title: 'Σ_n neuron results + b_out = hook_mlp_out (per layer)',
  run(ctx) {
    const { cache } = ctx.cached();
    const { n_layers: L, d_mlp: F, d_model: M } = ctx.model.cfg;
    const tols = residTols(ctx);
    const shape = cache.get('blocks.0.hook_mlp_out').shape; // [B, P, M]
    const [B, P] = shape;
    const per = B * P * M;
    const t = newTally();
    let worstLayer = -1,
      prevI = -1,
      worstDelta: Float32Array | undefined;
    for (let l = 0; l < L; l++) {
      const bOut = ctx.model.weights.blocks[l].b_out.f32();
      const want = cache.get(`blocks.${l}.hook_mlp_out`).f32();
      const got = new Float32Array(per);
      for (let p = 0; p < P; p++) {
        const r = sum(cache.getNeuronResults(l, undefined, p), -2).f32(); // [B, M]
        for (let b = 0; b < B; b++) for (let m = 0; m < M; m++) got[(b * P + p) * M + m] = r[b * M + m] + bOut[m];
      }
      tally(t, got, want, tols.mlp[l], l * per);
      if (t.worstI !== prevI) {
        worstLayer = l;
        prevI = t.worstI;
        const row = Math.floor((t.worstI - l * per) / M);
        worstDelta = got.slice(row * M, (row + 1) * M).map((g, m) => g - want[row * M + m]);
      }
    }
    let where: Where | undefined;
    if (t.worstI >= 0) {
      where = whereAt(t.worstI - worstLayer * per, shape, ['batch', 'pos', 'dim'], {
        hook: `blocks.${worstLayer}.hook_mlp_out`,
        layer: worstLayer,
      });
      if (t.bad > 0 && worstDelta) {
        const e = neuronExplaining(ctx.model, worstLayer, worstDelta);
        if (e) where.neuron = e.neuron;
      }
    }
    return outcome(t, where, F + 1, 'neuron results + b_out');
  },
});

/** getFullResidDecomposition at one position ([C, B, M]); neurons expanded or not. */
function fullDecomposition(
  ctx: VerifyContext,
  pos: number,
  expandNeurons: boolean,
): { stack: Tensor; labels: string[] } {
  const key = `full:${pos}:${expandNeurons}`;
  const hit = ctx.memo.get(key);
  if (hit) return hit as { stack: Tensor; labels: string[] };
  const { cache } = ctx.cached();
  cache.log = () => {};
  const [stack, labels] = cache.getFullResidDecomposition({
    layer: -1,
    expandNeurons,
    posSlice: pos,
    returnLabels: true,
  }) as [Tensor, string[]];
  const r = { stack, labels };
  if (pos === -1 && expandNeurons) ctx.memo.set(key, r); // dla.logitAttrs reuses it
  return r;
}

registerCheck({
  id: 'decompose.fullResidDecomposition',
  group: 'decomposition',
  title: 'Σ getFullResidDecomposition() (heads, neurons, embeds, biases) = final residual',
  run(ctx) {
    const { cache } = ctx.cached();
    const { n_layers: L, d_model: M } = ctx.model.cfg;
    const want = cache.get(`blocks.${L - 1}.hook_resid_post`); // [B, P, M]
    const [B, P] = want.shape;
    const tols = residTols(ctx);
    const wf = want.f32();
    const t = newTally();
    let worst = { p: 0, variant: '' };
    let prevI = -1;
    const counts: Record<string, number> = {};
    // every position with the MLPs as whole layers; the neuron-expanded form (tens of thousands
    // of components for gpt2-small) at the last position, the one logit attribution reads
    const runs: [number, boolean][] = [
      ...Array.from({ length: P }, (_, p) => [p, false] as [number, boolean]),
      [P - 1, true],
    ];
    runs.forEach(([p, expand], r) => {
      const { stack, labels } = fullDecomposition(ctx, p === P - 1 && expand ? -1 : p, expand);
      counts[expand ? 'componentsWithNeurons' : 'components'] = labels.length;
      const got = sum(stack, 0).f32();
      const w = new Float32Array(B * M),
        tl = new Float32Array(B * M);
      for (let b = 0; b < B; b++)
        for (let d = 0; d < M; d++) {
          w[b * M + d] = wf[(b * P + p) * M + d];
          tl[b * M + d] = tols.full[(b * P + p) * M + d];
        }
      tally(t, got, w, tl, r * B * M);
      if (t.worstI !== prevI) {
        prevI = t.worstI;
        worst = { p: r, variant: expand ? 'neurons expanded' : 'MLP layers whole' };
      }
    });
    let where: Where | undefined;
    if (t.worstI >= 0) {
      const i = t.worstI - worst.p * B * M;
      where = {
        hook: `blocks.${L - 1}.hook_resid_post`,
        variant: worst.variant,
        batch: Math.floor(i / M),
        pos: runs[worst.p][0],
        dim: i % M,
      };
    }
    return outcome(t, where, undefined, `Σ of the full decomposition`, counts);
  },
});

// ---------------------------------------------------------------- direct logit attribution

/** Per batch row: logit diff at the last position, b_U diff, DLA direction d = W_U[:, a] - W_U[:, w]. */
function answerParts(ctx: VerifyContext) {
  const { logits, cache } = ctx.cached();
  const { d_model: M, n_layers: L } = ctx.model.cfg;
  const [, P] = ctx.tokens.shape;
  const WU = ctx.model.W_U.f32(),
    V = ctx.model.cfg.d_vocab,
    bU = ctx.model.b_U.f32();
  const lg = logits.f32();
  const scale = cache.get('ln_final.hook_scale').f32(); // [B, P, 1]
  const resid = cache.get(`blocks.${L - 1}.hook_resid_post`).f32();
  return ctx.answers.map(([a, w], b) => {
    const o = (b * P + P - 1) * V;
    const absD = new Float32Array(M);
    for (let m = 0; m < M; m++) absD[m] = Math.abs(WU[m * V + a]) + Math.abs(WU[m * V + w]);
    const s = scale[b * P + P - 1];
    const r0 = (b * P + P - 1) * M;
    let mu = 0;
    for (let m = 0; m < M; m++) mu += resid[r0 + m];
    mu /= M;
    // the forward's LN and unembedding: Σ_m |x̂_m| (|W_U[m,a]| + |W_U[m,w]|) over M-term inner
    // products, and the LN's elementwise roundings, ‖(|resid_m| / s)(|W_U[m,a]| + |W_U[m,w]|)‖₂
    let unembedMass = 0,
      lnL2 = 0;
    for (let m = 0; m < M; m++) {
      unembedMass += (Math.abs(resid[r0 + m] - mu) / s) * absD[m];
      lnL2 += ((Math.abs(resid[r0 + m]) / s) * absD[m]) ** 2;
    }
    return {
      b,
      a,
      w,
      diff: lg[o + a] - lg[o + w],
      bUdiff: bU[a] - bU[w],
      s,
      absD,
      unembedMass,
      lnL2: Math.sqrt(lnL2),
      row: r0,
    };
  });
}

const needsFoldedLn =
  "the model was loaded without foldLn: TL's applyLnToStack (and so logitAttrs) divides by the LN scale only, so DLA sums hold for folded models";

registerCheck({
  id: 'dla.logitAttrs',
  group: 'logit attribution',
  title: 'Σ logitAttrs(full decomposition) = logit diff − b_U diff',
  needs: ['foldedLn'],
  run(ctx) {
    const { cache } = ctx.cached();
    const { d_model: M } = ctx.model.cfg;
    const [B, P] = ctx.tokens.shape;
    const parts = answerParts(ctx);
    const { stack, labels } = fullDecomposition(ctx, -1, true); // [C, B, M]
    const C = labels.length;
    const attrs = cache.logitAttrs(
      stack,
      parts.map((x) => x.a),
      { incorrectTokens: parts.map((x) => x.w), posSlice: -1 },
    ); // [C, B]
    const total = sum(attrs, 0).f32(),
      af = attrs.f32(),
      sf = stack.f32();
    const tols = residTols(ctx);
    const c = ctx.k * ctx.uCompute;
    const got = new Float32Array(B),
      want = new Float32Array(B),
      tol = new Float32Array(B);
    for (const x of parts) {
      got[x.b] = total[x.b];
      want[x.b] = x.diff - x.bUdiff;
      // (1) the forward's residual differs from Σ components by at most tols.full, carried through the LN and the direction
      let carried = 0;
      for (let m = 0; m < M; m++) carried += ((tols.full[x.row + m] / x.s) * x.absD[m]) ** 2;
      carried = Math.sqrt(carried); // independent per d_model index: in quadrature
      // (2) applyLnToStack's and logitAttrs' elementwise roundings (independent, so their ℓ2 norm)
      let stackL2 = 0,
        attrL2 = 0;
      for (let k = 0; k < C; k++) {
        attrL2 += af[k * B + x.b] ** 2;
        for (let m = 0; m < M; m++) stackL2 += ((Math.abs(sf[(k * B + x.b) * M + m]) / x.s) * x.absD[m]) ** 2;
      }
      // (3) the forward's LN and its two M-term unembedding inner products
      tol[x.b] =
        carried +
        c * (Math.sqrt(stackL2) + Math.sqrt(attrL2) + x.lnL2 + Math.sqrt(M) * x.unembedMass + Math.abs(x.bUdiff));
    }
    const t = newTally();
    tally(t, got, want, tol);
    const where: Where | undefined =
      t.worstI >= 0
        ? { batch: t.worstI, pos: P - 1, component: `answer ${parts[t.worstI].a} vs ${parts[t.worstI].w}` }
        : undefined;
    return outcome(t, where, undefined, `Σ of ${C} attributions`, { components: C });
  },
});

registerCheck({
  id: 'dla.finalResid',
  group: 'logit attribution',
  title: 'DLA of the final residual + b_U diff = logit diff',
  needs: ['foldedLn'],
  run(ctx) {
    const { cache } = ctx.cached();
    const { n_layers: L, d_model: M } = ctx.model.cfg;
    const [B, P] = ctx.tokens.shape;
    const parts = answerParts(ctx);
    const final = cache
      .get(`blocks.${L - 1}.hook_resid_post`)
      .index(1, P - 1)
      .unsqueeze(0)
      .contiguous(); // [1, B, M]
    const attrs = cache
      .logitAttrs(
        final,
        parts.map((x) => x.a),
        { incorrectTokens: parts.map((x) => x.w), posSlice: -1 },
      )
      .f32(); // [1, B]
    const c = ctx.k * ctx.uCompute;
    const got = new Float32Array(B),
      want = new Float32Array(B),
      tol = new Float32Array(B);
    for (const x of parts) {
      got[x.b] = attrs[x.b] + x.bUdiff;
      want[x.b] = x.diff;
      // both sides normalise the same residual (elementwise roundings, twice) and the forward
      // takes two M-term inner products with W_U
      tol[x.b] = c * (2 * x.lnL2 + Math.sqrt(M) * x.unembedMass + 2 * Math.abs(x.bUdiff) + Math.abs(x.diff));
    }
    const t = newTally();
    tally(t, got, want, tol);
    const where: Where | undefined =
      t.worstI >= 0
        ? { batch: t.worstI, pos: P - 1, component: `answer ${parts[t.worstI].a} vs ${parts[t.worstI].w}` }
        : undefined;
    return outcome(t, where, 2 * M + 1, 'DLA of the final residual', {
      maxAbsBUdiff: Math.max(...parts.map((x) => Math.abs(x.bUdiff))),
    });
  },
});

// ---------------------------------------------------------------- hooks

/** Bit-exact comparison: counts differing entries (NaN equals NaN with the same bits). */
function bitDiff(a: Float32Array, b: Float32Array): { n: number; first: number; maxAbs: number; maxRef: number } {
  if (a.length !== b.length) return { n: Math.max(a.length, b.length), first: 0, maxAbs: Infinity, maxRef: 0 };
  const ia = new Uint32Array(a.buffer, a.byteOffset, a.length),
    ib = new Uint32Array(b.buffer, b.byteOffset, b.length);
  let n = 0,
    first = -1,
    maxAbs = 0,
    maxRef = 0;
  for (let i = 0; i < a.length; i++) {
    if (Math.abs(b[i]) > maxRef && Number.isFinite(b[i])) maxRef = Math.abs(b[i]);
    if (ia[i] !== ib[i]) {
      n++;
      const d = Math.abs(a[i] - b[i]);
      if (first < 0 || d > maxAbs || Number.isNaN(d)) {
        if (first < 0 || !(d <= maxAbs)) first = i;
        maxAbs = Number.isNaN(d) ? NaN : Math.max(maxAbs, d);
      }
    }
  }
  return { n, first, maxAbs, maxRef };
}
const plain = (t: Tensor) => {
  const c = t.contiguous();
  const f = c.f32();
  return f.length === c.size ? f : f.slice(0, c.size);
};

registerCheck({
  id: 'hooks.identity',
  group: 'hooks',
  title: 'identity hooks on every hook point leave the logits bit-identical',
  run(ctx): CheckOutcome {
    const m = ctx.model;
    const base = plain(m.forward(ctx.tokens));
    const variants: [string, (x: Tensor) => Tensor | void][] = [
      ['returns its input', (x) => x],
      ['returns nothing', () => undefined],
      ['returns a copy', (x) => x.clone()],
    ];
    const n = m.hookDict.size;
    let worst: { v: string; d: ReturnType<typeof bitDiff>; shape: readonly number[] } | undefined;
    for (const [v, fn] of variants) {
      const out = m.runWithHooks(ctx.tokens, { fwdHooks: [[() => true, fn]] });
      const d = bitDiff(plain(out), base);
      if (d.n > 0 && (!worst || !(d.maxAbs <= worst.d.maxAbs))) worst = { v, d, shape: out.shape };
    }
    if (!worst)
      return {
        status: 'pass',
        maxAbsErr: 0,
        maxRelErr: 0,
        tol: 0,
        ratio: 0,
        message: `bit-identical for ${variants.length} identity hooks on all ${n} hook points`,
        detail: { hookPoints: n },
      };
    const where = whereAt(worst.d.first, worst.shape, ['batch', 'pos', 'token'], {
      hook: 'logits',
      variant: `hook ${worst.v}`,
    });
    return {
      status: 'fail',
      maxAbsErr: worst.d.maxAbs,
      maxRelErr: worst.d.maxRef > 0 ? worst.d.maxAbs / worst.d.maxRef : Infinity,
      tol: 0,
      ratio: Infinity,
      where,
      message: `logits change with an identity hook that ${worst.v} at ${formatWhere(where)}: ${worst.d.n} entries differ, max |err| ${fmt(worst.d.maxAbs)}`,
      detail: { hookPoints: n },
    };
  },
});

registerCheck({
  id: 'hooks.cacheVsHooks',
  group: 'hooks',
  title: 'runWithCache activations = runWithHooks reads (bit-identical)',
  run(ctx): CheckOutcome {
    const m = ctx.model;
    const { logits, cache } = ctx.cached();
    const reads = new Map<string, Tensor>();
    const hooks: FwdHook[] = [...m.hookDict.values()]
      .filter((hp) => hp.fires)
      .map((hp) => [
        hp.name,
        (x: Tensor) => {
          reads.set(hp.name, x.clone());
        },
      ]);
    const hooked = m.runWithHooks(ctx.tokens, { fwdHooks: hooks });
    const pairs: [string, Tensor, Tensor][] = [];
    for (const [name, t] of reads) if (cache.cacheDict.has(name)) pairs.push([name, cache.get(name), t]);
    const missing = [...reads.keys()].filter((k) => !cache.cacheDict.has(k));
    pairs.push(['logits', logits, hooked]);
    let maxAbs = 0,
      maxRef = 0,
      differ = 0;
    let worst: { name: string; d: ReturnType<typeof bitDiff>; shape: readonly number[] } | undefined;
    for (const [name, c, r] of pairs) {
      const d = bitDiff(plain(c), plain(r));
      maxRef = Math.max(maxRef, d.maxRef);
      if (d.n > 0) {
        differ++;
        maxAbs = Number.isNaN(d.maxAbs) ? NaN : Math.max(maxAbs, d.maxAbs);
        if (!worst) worst = { name, d, shape: r.shape }; // the first to differ in firing order is where it starts
      }
    }
    if (!worst && missing.length === 0) {
      return {
        status: 'pass',
        maxAbsErr: 0,
        maxRelErr: 0,
        tol: 0,
        ratio: 0,
        message: `${pairs.length - 1} cached activations and the logits are bit-identical to hook reads`,
        detail: { compared: pairs.length },
      };
    }
    if (!worst)
      return {
        status: 'fail',
        maxAbsErr: 0,
        maxRelErr: 0,
        tol: 0,
        ratio: Infinity,
        where: { hook: missing[0] },
        message: `${missing.length} hook points fired but are not in the cache (first: ${missing[0]})`,
      };
    const where = whereAt(worst.d.first, worst.shape, axesOf(worst.name), { hook: worst.name });
    return {
      status: 'fail',
      maxAbsErr: maxAbs,
      maxRelErr: maxRef > 0 ? maxAbs / maxRef : Infinity,
      tol: 0,
      ratio: Infinity,
      where,
      message: `cache and hook reads first differ at ${formatWhere(where)}: ${worst.d.n} entries, max |err| ${fmt(worst.d.maxAbs)} (${differ} of ${pairs.length} tensors differ)`,
      detail: { compared: pairs.length, differing: differ },
    };
  },
});

// ---------------------------------------------------------------- processing

export const PROCESSING_STEPS = [
  'foldLn',
  'centerWritingWeights',
  'centerUnembed',
  'foldValueBiases',
  'refactorFactoredAttnMatrices',
] as const;
export type ProcessingStep = (typeof PROCESSING_STEPS)[number];

const INVARIANT_HOOK = (n: string) => /(attn\.hook_pattern|hook_attn_out|hook_mlp_out)$/.test(n);
/** Logits (or any [..., X] activation) minus their mean over the last axis, in f64 then f32. */
function centredLast(t: Tensor): Float32Array {
  const x = plain(t),
    d = t.shape[t.ndim - 1],
    out = new Float32Array(x.length);
  for (let o = 0; o < x.length; o += d) {
    let s = 0;
    for (let i = 0; i < d; i++) s += x[o + i];
    const mu = s / d;
    for (let i = 0; i < d; i++) out[o + i] = x[o + i] - mu;
  }
  return out;
}
const isResidShaped = (n: string) => /hook_(attn_out|mlp_out)$/.test(n);
const invariantOf = (n: string, t: Tensor) => (isResidShaped(n) ? centredLast(t) : plain(t));

/** An f32 copy of the model's weights, each multiplied by (1 + δ·r), r uniform in [-1, 1] (seeded). */
function perturbedCopy(model: HookedTransformer, delta: number, seed: number): HookedTransformer {
  const r = rng(seed);
  const jig = (t?: Tensor): Tensor | undefined =>
    t
      ? new Tensor(
          plain(t).map((v) => v * (1 + delta * (2 * r.uniform() - 1))),
          t.shape,
        )
      : undefined;
  const W = model.weights;
  const w: Weights = {
    W_E: jig(W.W_E)!,
    W_pos: jig(W.W_pos)!,
    W_U: jig(W.W_U)!,
    b_U: jig(W.b_U)!,
    ln_final_w: jig(W.ln_final_w),
    ln_final_b: jig(W.ln_final_b),
    blocks: W.blocks.map((b) => ({
      W_Q: jig(b.W_Q)!,
      W_K: jig(b.W_K)!,
      W_V: jig(b.W_V)!,
      W_O: jig(b.W_O)!,
      b_Q: jig(b.b_Q)!,
      b_K: jig(b.b_K)!,
      b_V: jig(b.b_V)!,
      b_O: jig(b.b_O)!,
      W_in: jig(b.W_in)!,
      b_in: jig(b.b_in)!,
      W_out: jig(b.W_out)!,
      b_out: jig(b.b_out)!,
      ln1_w: jig(b.ln1_w),
      ln1_b: jig(b.ln1_b),
      ln2_w: jig(b.ln2_w),
      ln2_b: jig(b.ln2_b),
    })),
  };
  return new HookedTransformer({ ...model.cfg }, w, { dtype: 'f32', backend: model.backend });
}

interface Baseline {
  logits: Float32Array;
  shape: readonly number[];
  acts: Map<string, Float32Array>;
  /** tolerance on centred logits and on each invariant activation */
  tol: number;
  actTol: Map<string, number>;
  eps: number;
  kappa: number;
  probeMax: number;
}

/** The unprocessed model's run and the condition probe, shared by every processing check. */
function baseline(ctx: VerifyContext): Baseline {
  const hit = ctx.memo.get('processingBaseline');
  if (hit) return hit as Baseline;
  const raw = ctx.load!({ ...NO_PROCESSING });
  try {
    const { logits, cache } = raw.runWithCache(ctx.tokens, { namesFilter: INVARIANT_HOOK });
    const probe = perturbedCopy(raw, PROBE_DELTA, 0x5eed);
    let pr;
    try {
      pr = probe.runWithCache(ctx.tokens, { namesFilter: INVARIANT_HOOK });
    } finally {
      probe.dispose();
    }
    const { d_mlp: F, d_model: M } = raw.cfg;
    const K = Math.max(F, M, ctx.tokens.shape[1]);
    // relative weight perturbation equivalent to one evaluation's rounding (storage + arithmetic)
    const eps = ctx.uStorage + Math.sqrt(K) * ctx.uCompute;
    const scaleTol = (a: Float32Array, b: Float32Array) => {
      let mx = 0;
      for (let i = 0; i < a.length; i++) mx = Math.max(mx, Math.abs(a[i] - b[i]));
      return { tol: ctx.k * Math.SQRT2 * (eps / PROBE_DELTA) * mx, mx };
    };
    const base = centredLast(logits);
    const { tol, mx } = scaleTol(base, centredLast(pr.logits));
    let ref = 0;
    for (const v of base) ref = Math.max(ref, Math.abs(v));
    const acts = new Map<string, Float32Array>(),
      actTol = new Map<string, number>();
    for (const k of cache.keys()) {
      const a = invariantOf(k, cache.get(k));
      acts.set(k, a);
      actTol.set(k, scaleTol(a, invariantOf(k, pr.cache.get(k))).tol);
    }
    const b: Baseline = {
      logits: base,
      shape: logits.shape,
      acts,
      actTol,
      tol,
      eps,
      kappa: ref > 0 ? mx / (PROBE_DELTA * ref) : 0,
      probeMax: mx,
    };
    ctx.memo.set('processingBaseline', b);
    return b;
  } finally {
    raw.dispose();
  }
}

function processingCheck(id: string, title: string, opts: ProcessingOptions): VerifyCheck {
  return {
    id,
    group: 'processing',
    title,
    needs: ['loader'],
    run(ctx) {
      const base = baseline(ctx);
      const proc = ctx.load!({ ...NO_PROCESSING, ...opts });
      try {
        const logits = proc.forward(ctx.tokens);
        const t = newTally();
        tally(t, centredLast(logits), base.logits, base.tol);
        const detail = { eps: base.eps, condition: base.kappa, probeDelta: PROBE_DELTA, probeMaxAbs: base.probeMax };
        const where =
          t.worstI >= 0
            ? whereAt(t.worstI, base.shape, ['batch', 'pos', 'token'], { hook: 'logits (centred)' })
            : undefined;
        const r = outcome(t, where, undefined, 'centred logits, processed vs unprocessed', detail);
        let ref = 0;
        for (const x of base.logits) ref = Math.max(ref, Math.abs(x));
        const weak = ref > 0 ? base.tol / ref : 0;
        if (r.status === 'pass' && weak > 0.25) {
          r.warning =
            `weak: tol is ${(100 * weak).toFixed(0)}% of max |centred logit| (condition ≈ ${base.kappa.toExponential(1)}): ` +
            `in ${ctx.dtype} this checkpoint cannot show smaller faults`;
        }
        if (t.bad > 0) {
          // localise: the first invariant activation (pattern, centred attn/mlp out) that moved beyond its own tolerance
          const { cache } = proc.runWithCache(ctx.tokens, { namesFilter: INVARIANT_HOOK });
          for (const k of cache.keys()) {
            const want = base.acts.get(k);
            if (!want) continue;
            const at = newTally();
            tally(at, invariantOf(k, cache.get(k)), want, base.actTol.get(k)!);
            if (at.bad > 0) {
              r.where = whereAt(at.worstI, cache.get(k).shape, axesOf(k), {
                hook: isResidShaped(k) ? `${k} (centred)` : k,
              });
              r.message =
                `first diverges at ${formatWhere(r.where)} by ${fmt(at.worstErr)} (tol ${fmt(at.worstTol)}); ` +
                `centred logits off by up to ${fmt(t.maxAbs)} > tol ${fmt(t.worstTol)} (${t.bad} scalars over tol)`;
              break;
            }
          }
        }
        return r;
      } finally {
        proc.dispose();
      }
    },
  };
}
for (const s of PROCESSING_STEPS)
  registerCheck(processingCheck(`processing.${s}`, `${s} alone preserves the centred logits`, { [s]: true }));
registerCheck(
  processingCheck(
    'processing.all',
    'all five steps together preserve the centred logits',
    Object.fromEntries(PROCESSING_STEPS.map((s) => [s, true])),
  ),
);

// ---------------------------------------------------------------- gradients

/**
 * The two gradient checks (ids in GRADIENT_CHECK_IDS). Both need `model.backward` (gradient
 * mode); a model that gradient mode refuses (attention masks, KV caches, use_* switches,
 * scale_attn_by_inverse_layer_idx: EGRAD) is skipped with the refusal as the reason. Gradients
 * are f32 in every storage dtype (weights are decoded to f32), so u = u32 in their roundings;
 * the storage dtype only limits which weight perturbations can be represented.
 */
export const GRADIENT_CHECK_IDS = ['gradients.finiteDifferences', 'gradients.attributionPatchingLinear'] as const;

/** Whether the model has a backward pass (gradient mode: model.backward). */
export function hasGradients(model: HookedTransformer): boolean {
  return typeof (model as unknown as { backward?: unknown }).backward === 'function';
}

/** Σ_b (logit[b, -1, correct_b] − logit[b, -1, incorrect_b]) as a differentiable metric. */
function logitDiffMetric(answers: [number, number][]): GradMetric {
  return (logits) => {
    const last = ag.index(logits, 1, logits.shape[1] - 1); // [B, V]
    const idx = new Tensor(Float32Array.from(answers.flat()), [answers.length, 2]);
    const picked = ag.gather(last, idx); // [B, 2]
    return ag.sum(ag.sub(ag.index(picked, 1, 0), ag.index(picked, 1, 1)));
  };
}
/** The same metric in f64 from f32 logits (no tape). */
function logitDiffValue(answers: [number, number][], logits: Tensor): number {
  const lg = plain(logits),
    [B, P, V] = logits.shape;
  let s = 0;
  for (let b = 0; b < B; b++) {
    const o = (b * P + P - 1) * V;
    s += lg[o + answers[b][0]] - lg[o + answers[b][1]];
  }
  return s;
}

interface GradRun {
  value: number;
  acts: Map<string, Float32Array>;
  shapes: Map<string, readonly number[]>;
  order: string[];
  params: Map<string, Float32Array>;
}

/** One recorded forward and backward of the logit difference: every hook point's gradient (summed over firings, in backward order) and every parameter's. */
function gradRun(ctx: VerifyContext): GradRun {
  const hit = ctx.memo.get('gradRun');
  if (hit) return hit as GradRun;
  const acts = new Map<string, Float32Array>(),
    shapes = new Map<string, readonly number[]>(),
    order: string[] = [];
  const capture: BwdHook = [
    () => true,
    (g: Tensor, hp: { name: string }) => {
      const f = plain(g),
        prev = acts.get(hp.name);
      if (prev) for (let i = 0; i < f.length; i++) prev[i] += f[i];
      else {
        acts.set(hp.name, Float32Array.from(f));
        shapes.set(hp.name, g.shape);
        order.push(hp.name);
      }
    },
  ];
  const r = ctx.model.backward(ctx.tokens, logitDiffMetric(ctx.answers), {
    params: true,
    lastPositionLogits: true,
    bwdHooks: [...(ctx.gradHooks ?? []), capture],
  });
  const params = new Map<string, Float32Array>();
  for (const [n, t] of r.paramGrads) params.set(n, Float32Array.from(plain(t)));
  const run = { value: r.value, acts, shapes, order, params };
  ctx.memo.set('gradRun', run);
  return run;
}

/** Why gradient mode cannot run on this model and input (its EGRAD refusal), or undefined. */
function gradRefusal(ctx: VerifyContext): string | undefined {
  if (!hasGradients(ctx.model)) return 'needs gradients (model.backward), which this model does not have';
  try {
    gradRun(ctx);
  } catch (e) {
    if (e instanceof TypelensError && e.code === 'EGRAD') return `gradient mode refuses this model: ${e.message}`;
    throw e;
  }
  return undefined;
}

/** Entries of an activation a finite difference may perturb: attention scores/patterns only at key ≤ query (masked entries are −inf / 0). */
function validEntry(name: string, shape: readonly number[], i: number): boolean {
  if (!/hook_(attn_scores|pattern)$/.test(name)) return true;
  const k = i % shape[3],
    q = Math.floor(i / shape[3]) % shape[2];
  return k <= q;
}
/** RMS over the finite entries (masked attention scores are −inf). */
const rms = (x: ArrayLike<number>) => {
  let s = 0,
    n = 0;
  for (let i = 0; i < x.length; i++)
    if (Number.isFinite(x[i])) {
      s += x[i] * x[i];
      n++;
    }
  return Math.sqrt(s / Math.max(1, n));
};
const maxAbsOf = (x: ArrayLike<number>) => {
  let m = 0;
  for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i]));
  return m;
};

/** FD sample sizes: hook points (all when there are at most this many), coordinates per point, parameters. */
export const FD_MAX_HOOK_POINTS = 48;
export const FD_MAX_PARAMS = 8;
/** Parameters larger than this are not perturbed (each perturbation rewrites and repacks the whole tensor). */
const FD_MAX_PARAM_SIZE = 1 << 22;

interface FdSample {
  kind: 'hook' | 'param';
  name: string;
  i: number;
  shape: readonly number[];
  got: number;
  fd: number;
  tol: number;
  step: number;
  trunc: number;
}

registerCheck({
  id: 'gradients.finiteDifferences',
  group: 'gradients',
  title: 'gradients of the logit diff vs central finite differences (sampled hook points and weights)',
  needs: ['gradients'],
  run(ctx) {
    const m = ctx.model,
      g = gradRun(ctx);
    const { n_layers: L, d_model: M, d_mlp: F, n_heads: H, d_head: D } = m.cfg;
    const [, P] = ctx.tokens.shape;
    const r = rng(0x9d5eed);
    const u = ctx.uCompute,
      k = ctx.k;
    // rounding of one evaluation of the metric (a floor under the measured Richardson term, which
    // carries the real noise): each of the 2L+1 stages rounds the residual stream by a relative ~u,
    // independently, carried to the logit difference by its unembedding mass
    const K = Math.max(M, F, P, H * D),
      stages = 2 * L + 1;
    const { cache } = m.runWithCache(ctx.tokens, {
      namesFilter: (n: string) => n === 'ln_final.hook_normalized' || g.acts.has(n),
    });
    cache.log = () => {};
    const xh = plain(cache.get('ln_final.hook_normalized')),
      WU = m.W_U.f32(),
      V = m.cfg.d_vocab;
    const lnw = m.weights.ln_final_w?.f32(),
      bU = m.b_U.f32();
    let fMass = 0;
    ctx.answers.forEach(([a, w], b) => {
      const o = (b * P + P - 1) * M;
      for (let j = 0; j < M; j++)
        fMass += Math.abs(xh[o + j] * (lnw ? lnw[j] : 1)) * (Math.abs(WU[j * V + a]) + Math.abs(WU[j * V + w]));
      fMass += Math.abs(bU[a]) + Math.abs(bU[w]);
    });
    const epsF = k * u * Math.sqrt(stages) * fMass;
    const gRound = k * u * Math.sqrt(K * stages);
    const evalHooks = (hooks: FwdHook[]) =>
      logitDiffValue(ctx.answers, m.runWithHooks(ctx.tokens, { fwdHooks: hooks, lastPositionLogits: true }));
    /** central differences at steps h and 2h around x (realised steps: the perturbed values as stored) and the tolerance. */
    const fdAt = (got: number, gScale: number, evalAt: (mult: number) => { f: number; x: number }) => {
      const p1 = evalAt(1),
        m1 = evalAt(-1),
        p2 = evalAt(2),
        m2 = evalAt(-2);
      const d1 = p1.x - m1.x,
        d2 = p2.x - m2.x;
      const D1 = (p1.f - m1.f) / d1,
        D2 = (p2.f - m2.f) / d2;
      const trunc = Math.abs(D2 - D1) / 3; // Richardson: D(2h) − D(h) ≈ 3·c·h², so |c·h²| (plus the noise of both)
      const tol = k * trunc + (2 * epsF) / d1 + gRound * gScale;
      return { fd: D1, tol, step: d1 / 2, trunc, got };
    };
    const samples: FdSample[] = [];
    // hook points: a seeded subset (all on small models), each at its largest-|gradient| entry and one seeded entry
    let names = g.order.filter((n) => cache.cacheDict.has(n));
    if (names.length > FD_MAX_HOOK_POINTS) {
      const keep = new Set<string>();
      while (keep.size < FD_MAX_HOOK_POINTS) keep.add(names[Math.floor(r.uniform() * names.length)]);
      names = names.filter((n) => keep.has(n));
    }
    const h0 = Math.cbrt(u); // 2^-8: balances the h² truncation against the u/h rounding
    for (const name of names) {
      const grad = g.acts.get(name)!,
        shape = g.shapes.get(name)!,
        act = plain(cache.get(name));
      let best = -1;
      for (let i = 0; i < grad.length; i++)
        if (validEntry(name, shape, i) && (best < 0 || Math.abs(grad[i]) > Math.abs(grad[best]))) best = i;
      if (best < 0) continue;
      let other = -1;
      for (let tries = 0; tries < 20 && (other < 0 || other === best || !validEntry(name, shape, other)); tries++)
        other = Math.floor(r.uniform() * grad.length);
      const scale = rms(act),
        gScale = maxAbsOf(grad);
      for (const i of other >= 0 && other !== best && validEntry(name, shape, other) ? [best, other] : [best]) {
        const x = act[i],
          h = h0 * Math.max(Math.abs(x), scale || 1);
        const res = fdAt(grad[i], gScale, (mult) => {
          const xv = Math.fround(x + mult * h);
          const f = evalHooks([
            [
              name,
              (a: Tensor) => {
                const c = a.clone();
                c.f32()[i] = xv;
                return c;
              },
            ],
          ]);
          return { f, x: xv };
        });
        samples.push({ kind: 'hook', name, i, shape, ...res });
      }
    }
    // weights: a seeded subset of the parameters (not the largest tables), at the largest-|gradient| entry
    const params = [...m.namedParameters()].filter(([, t]) => t.size <= FD_MAX_PARAM_SIZE);
    const chosen = new Set<number>();
    while (chosen.size < Math.min(FD_MAX_PARAMS, params.length)) chosen.add(Math.floor(r.uniform() * params.length));
    const hp = Math.max(h0, 4 * ctx.uStorage); // a step the storage dtype can represent
    for (const pi of [...chosen].sort((a, b) => a - b)) {
      const [name, t] = params[pi];
      const grad = g.params.get(name)!;
      const orig = Float32Array.from(plain(t));
      let i = 0;
      for (let j = 1; j < grad.length; j++) if (Math.abs(grad[j]) > Math.abs(grad[i])) i = j;
      const x = orig[i],
        h = hp * Math.max(Math.abs(x), rms(orig) || 1);
      try {
        const res = fdAt(grad[i], maxAbsOf(grad), (mult) => {
          const data = Float32Array.from(orig);
          data[i] = x + mult * h;
          m.setWeight(name, new Tensor(data, t.shape));
          const xv = plain(m.namedParameters().get(name)!)[i]; // as stored (f16 / bf16 round it)
          return { f: evalHooks([]), x: xv };
        });
        samples.push({ kind: 'param', name, i, shape: t.shape, ...res });
      } finally {
        m.setWeight(name, new Tensor(orig, t.shape));
      }
    }
    const t = newTally();
    tally(
      t,
      samples.map((s) => s.got),
      samples.map((s) => s.fd),
      samples.map((s) => s.tol),
    );
    const whereOf = (s: FdSample): Where =>
      s.kind === 'hook'
        ? whereAt(s.i, s.shape, axesOf(s.name), { hook: s.name })
        : {
            hook: s.name,
            component: `parameter entry [${unravel(s.i, s.shape).join(', ')}]`,
            ...(/^blocks\.(\d+)\./.test(s.name) ? { layer: Number(/^blocks\.(\d+)\./.exec(s.name)![1]) } : {}),
          };
    const worst = t.worstI >= 0 ? samples[t.worstI] : undefined;
    const detail = {
      hookPoints: names.length,
      coordinates: samples.length,
      step: h0,
      metric: g.value,
      metricRounding: epsF,
    };
    const r0 = outcome(t, worst && whereOf(worst), undefined, 'd logit diff', detail);
    if (r0.status === 'fail') {
      // the first coordinate over tolerance in backward order is where the backward first goes wrong (upstream ones inherit it)
      const first = samples.find((s) => !(Math.abs(s.got - s.fd) <= s.tol))!;
      r0.where = whereOf(first);
      r0.message =
        `gradient first off (in backward order) at ${formatWhere(r0.where)}: backward ${fmt(first.got)} vs finite difference ${fmt(first.fd)} ` +
        `(|err| ${fmt(Math.abs(first.got - first.fd))} > tol ${fmt(first.tol)}); ${t.bad} of ${samples.length} coordinates over tol, worst ${t.worstRatio.toFixed(1)}× at ${formatWhere(worst && whereOf(worst))}`;
    }
    return r0;
  },
});

/**
 * Attribution patching's identity for metrics linear in the patched activation: with
 * metric = ⟨U, R⟩ for a readout R that is an affine function of the activation A (U fixed and
 * seeded), Σ (A_clean − A_corrupted) · ∂metric/∂A at the corrupted run equals
 * metric(A patched to clean) − metric(corrupted) exactly, up to rounding. Pairs, per layer:
 * hook_z → hook_attn_out (R = z·W_O + b_O) and mlp.hook_post → hook_mlp_out (R = post·W_out + b_out).
 * Implemented here with model.backward and hooks (analysis/ sits below patching/).
 */
registerCheck({
  id: 'gradients.attributionPatchingLinear',
  group: 'gradients',
  title: 'attribution patching = activation patching for metrics linear in the patched activation',
  needs: ['gradients'],
  run(ctx) {
    const m = ctx.model;
    const { n_layers: L, d_model: M, n_heads: H, d_head: D, d_mlp: F, d_vocab: V } = m.cfg;
    const [B, P] = ctx.tokens.shape;
    const r = rng(0xa77e);
    // corrupted input: the prompt's first token kept, the rest seeded random tokens
    const clean = ctx.tokens,
      ct = plain(clean);
    const corrupted = new Tensor(
      Float32Array.from(ct, (v, i) => (i % P === 0 ? v : Math.floor(r.uniform() * V) % V)),
      [B, P],
    );
    const layers =
      L <= 4
        ? Array.from({ length: L }, (_, l) => l)
        : [...new Set([0, L - 1, ...Array.from({ length: 2 }, () => Math.floor(r.uniform() * L))])].sort(
            (a, b) => a - b,
          );
    const pairs = layers.flatMap((l) => [
      {
        layer: l,
        patch: `blocks.${l}.attn.hook_z`,
        read: `blocks.${l}.hook_attn_out`,
        W: m.weights.blocks[l].W_O,
        b: m.weights.blocks[l].b_O,
        K: H * D,
        heads: true,
      },
      {
        layer: l,
        patch: `blocks.${l}.mlp.hook_post`,
        read: `blocks.${l}.hook_mlp_out`,
        W: m.weights.blocks[l].W_out,
        b: m.weights.blocks[l].b_out,
        K: F,
        heads: false,
      },
    ]);
    const { cache: cleanCache } = m.runWithCache(clean, {
      namesFilter: (n: string) => pairs.some((p) => p.patch === n),
    });
    const U = new Tensor(
      Float32Array.from({ length: B * P * M }, () => 2 * r.uniform() - 1),
      [B, P, M],
    );
    const uf = U.f32();
    const c = ctx.k * ctx.uCompute;
    const rows = B * P;
    const got: number[] = [],
      want: number[] = [],
      tols: number[] = [],
      labels: Where[] = [];
    const fails: { i: number; got: number; want: number; tol: number; what: string }[] = [];
    for (const pair of pairs) {
      const { layer: l, patch, read, K } = pair;
      let Rc!: Tensor, Ac!: Float32Array, grad!: Float32Array;
      m.backward(corrupted, () => ag.sum(ag.mul(Rc, U)), {
        params: false,
        stopAtLayer: l + 1,
        fwdHooks: [
          [
            patch,
            (a: Tensor) => {
              Ac = Float32Array.from(plain(a));
            },
          ],
          [
            read,
            (x: Tensor) => {
              Rc = x;
            },
          ],
        ],
        bwdHooks: [
          ...(ctx.gradHooks ?? []),
          [
            patch,
            (gr: Tensor) => {
              const f = plain(gr);
              if (grad) for (let i = 0; i < f.length; i++) grad[i] += f[i];
              else grad = Float32Array.from(f);
            },
          ],
        ],
      });
      const Rcf = Float32Array.from(plain(Rc));
      const Aclean = plain(cleanCache.get(patch));
      const Wabs = absT(pair.W).reshape([K, M]).contiguous(),
        bAbs = absT(pair.b).f32();
      const gmass = matmul(absT(U).reshape([rows, M]), Wabs.T.contiguous()).f32(); // [rows, K] = |U|·|W|ᵀ: the backward's M-term products
      const massOf = (A: ArrayLike<number>) => {
        const mm = matmul(new Tensor(Float32Array.from(A, Math.abs), [rows, K]), Wabs).f32();
        for (let i = 0; i < mm.length; i++) mm[i] += bAbs[i % M];
        return mm;
      };
      const massC = massOf(Ac);
      /** one comparison: patch the entries `sel` accepts, return got, want and the tolerance */
      const compare = (sel: (i: number) => boolean) => {
        let Rp!: Float32Array;
        const Ap = Float32Array.from(Ac, (v, i) => (sel(i) ? Aclean[i] : v));
        m.runWithHooks(corrupted, {
          stopAtLayer: l + 1,
          fwdHooks: [
            [patch, (a: Tensor) => new Tensor(Float32Array.from(Ap), a.shape)],
            [
              read,
              (x: Tensor) => {
                Rp = Float32Array.from(plain(x));
              },
            ],
          ],
        });
        const massP = massOf(Ap);
        // the backward's rounding: Σ_i Δ_i·err_i with |err_i| ≤ k·u·√M·(|U|·|W|ᵀ)_i, independent: in quadrature
        let gsum = 0,
          gq = 0,
          w = 0,
          wq = 0;
        for (let i = 0; i < Ap.length; i++) {
          const d = Ap[i] - Ac[i];
          if (d !== 0) {
            gsum += d * grad[i];
            gq += (d * gmass[i]) ** 2;
          }
        }
        // the two readouts' rounding, on the rows the patch changed (the others are computed identically)
        for (let row = 0; row < rows; row++) {
          let changed = false;
          for (let q = 0; q < K && !changed; q++) changed = Ap[row * K + q] !== Ac[row * K + q];
          if (!changed) continue;
          for (let j = 0; j < M; j++) {
            const e = row * M + j;
            w += uf[e] * (Rp[e] - Rcf[e]);
            wq += uf[e] ** 2 * (massP[e] ** 2 + massC[e] ** 2);
          }
        }
        return {
          got: gsum,
          want: w,
          tol: c * (Math.sqrt(K + 1) * Math.sqrt(wq) + Math.sqrt(M) * Math.sqrt(gq)) + 1e-12 * Math.abs(w),
        };
      };
      const all = compare(() => true);
      got.push(all.got);
      want.push(all.want);
      tols.push(all.tol);
      labels.push({ hook: patch, layer: l, variant: `metric ⟨U, ${read}⟩, all positions patched` });
      if (!(Math.abs(all.got - all.want) <= all.tol)) {
        // localise: patch one position (and head) at a time
        const perRow = pair.heads ? H : 1;
        let worst: { ratio: number; where: Where; got: number; want: number; tol: number } | undefined;
        for (let p = 0; p < P; p++)
          for (let hh = 0; hh < perRow; hh++) {
            const sel = (i: number) => Math.floor(i / K) % P === p && (!pair.heads || Math.floor((i % K) / D) === hh);
            const s = compare(sel);
            const err = Math.abs(s.got - s.want),
              ratio = err === 0 ? 0 : err / s.tol;
            if (!worst || ratio > worst.ratio)
              worst = {
                ratio,
                got: s.got,
                want: s.want,
                tol: s.tol,
                where: { hook: patch, layer: l, ...(pair.heads ? { head: hh } : {}), pos: p },
              };
          }
        const what = `one ${pair.heads ? 'head and position' : 'position'} patched`;
        if (worst && worst.ratio > 1) {
          labels[labels.length - 1] = { ...worst.where, variant: `metric ⟨U, ${read}⟩, ${what}` };
          fails.push({ i: got.length - 1, got: worst.got, want: worst.want, tol: worst.tol, what });
        } else
          fails.push({ i: got.length - 1, got: all.got, want: all.want, tol: all.tol, what: 'all positions patched' });
      }
    }
    const t = newTally();
    tally(t, got, want, tols);
    const r0 = outcome(
      t,
      t.worstI >= 0 ? labels[t.worstI] : undefined,
      undefined,
      'attribution vs activation patching',
      { pairs: pairs.length, layers: layers.join(',') },
    );
    if (r0.status === 'fail') {
      const f = fails[0];
      r0.where = labels[f.i];
      r0.message =
        `attribution ≠ activation patching at ${formatWhere(r0.where)}: Σ Δ·grad ${fmt(f.got)} vs patched change ${fmt(f.want)} ` +
        `(|err| ${fmt(Math.abs(f.got - f.want))} > tol ${fmt(f.tol)}); ${t.bad} of ${got.length} patched activations over tol`;
    }
    return r0;
  },
});

// ---------------------------------------------------------------- loaders

/** The loader the processing checks need, for a checkpoint folder. */
export function loaderFromDir(dir: string, opts: LoadOptions = {}): (p: ProcessingOptions) => HookedTransformer {
  return (p) => HookedTransformer.fromDir(dir, { ...opts, ...NO_PROCESSING, ...p, onProgress: undefined });
}
/** The loader the processing checks need, for HF-layout tensors in memory. */
export function loaderFromHF(
  hf: Record<string, unknown>,
  tensors: Record<string, StTensorOut> | StFile,
  opts: LoadOptions = {},
): (p: ProcessingOptions) => HookedTransformer {
  return (p) => HookedTransformer.fromHFTensors(hf, tensors, { ...opts, ...NO_PROCESSING, ...p });
}

// ---------------------------------------------------------------- verify

function asTokens(model: HookedTransformer, input: TokensInput, prependBos?: boolean): Tensor {
  let t: Tensor;
  if (typeof input === 'string' || (Array.isArray(input) && typeof input[0] === 'string'))
    t = model.toTokens(input as string | string[], { prependBos });
  else if (input instanceof Tensor) t = input;
  else t = Tensor.from(input as number[] | number[][]);
  if (t.ndim === 1) t = t.unsqueeze(0);
  if (t.ndim !== 2) throw new TypelensError(`tokens must be [batch, pos], got [${t.shape.join(', ')}]`, 'ESHAPE');
  return t.contiguous();
}

function answerIds(
  model: HookedTransformer,
  logits: Tensor,
  B: number,
  given: VerifyOptions['answers'],
): [number, number][] {
  const V = model.cfg.d_vocab;
  const id = (x: number | string): number => {
    const n = typeof x === 'number' ? x : model.toSingleToken(x);
    if (!Number.isInteger(n) || n < 0 || n >= V)
      throw new TypelensError(`answer token ${x} is outside the vocabulary [0, ${V})`, 'ETOKEN');
    return n;
  };
  if (given) {
    const rows = Array.isArray(given[0])
      ? (given as [number | string, number | string][])
      : Array.from({ length: B }, () => given as [number | string, number | string]);
    if (rows.length !== B) throw new TypelensError(`answers: ${rows.length} pairs for ${B} prompts`, 'EINPUT');
    return rows.map(([a, w]) => [id(a), id(w)]);
  }
  // default: the model's two most likely next tokens at the last position
  const [, P] = logits.shape;
  const lg = logits.f32();
  return Array.from({ length: B }, (_, b) => {
    const o = (b * P + P - 1) * V;
    let i1 = 0,
      i2 = -1;
    for (let v = 1; v < V; v++) {
      if (lg[o + v] > lg[o + i1]) {
        i2 = i1;
        i1 = v;
      } else if (i2 < 0 || lg[o + v] > lg[o + i2]) i2 = v;
    }
    return [i1, Math.max(i2, 0)] as [number, number];
  });
}

/**
 * Run the registered checks on `model` and `tokens`. Never throws for a failing check: read
 * `report.ok` (and each `checks[i].status / message / where`).
 */
export function verify(model: HookedTransformer, tokens: TokensInput, opts: VerifyOptions = {}): VerifyReport {
  const t0 = performance.now();
  const tok = asTokens(model, tokens, opts.prependBos);
  const dtype = (model.weights.blocks[0]?.W_in.dtype ?? 'f32') as DType;
  const cleanups: (() => void)[] = [];
  let cachedRun = opts.cache;
  if (opts.cache) {
    const c = opts.cache.cache,
      log = c.log;
    cleanups.push(() => {
      c.log = log;
    });
  } // checks silence TL's info lines
  const cached = () => {
    if (!cachedRun) {
      const hooks = opts.cacheHooks ?? [];
      cachedRun = model.hooks(hooks, () => model.runWithCache(tok));
    }
    return cachedRun;
  };
  const ctx: VerifyContext = {
    model,
    tokens: tok,
    answers: [],
    dtype,
    k: opts.k ?? DEFAULT_K,
    uCompute: unitRoundoff('f32'),
    uStorage: unitRoundoff(dtype),
    cached,
    load: opts.load,
    memo: new Map(),
    onCleanup: (f) => cleanups.push(f),
    gradHooks: opts.gradHooks,
  };
  ctx.answers = answerIds(model, cached().logits, tok.shape[0], opts.answers);
  const all = [...REGISTRY, ...(opts.extraChecks ?? [])];
  const chosen = opts.only ? all.filter((c) => opts.only!.some((p) => c.id.startsWith(p))) : all; // ids or prefixes ("hooks", "processing.fold")
  const has: Record<Capability, () => string | undefined> = {
    loader: () =>
      ctx.load ? undefined : 'needs a loader (opts.load / loaderFromDir) to load the checkpoint unprocessed',
    gradients: () => gradRefusal(ctx),
    foldedLn: () => (model.cfg.normalization_type === 'LNPre' ? undefined : needsFoldedLn),
  };
  const results: CheckResult[] = [];
  try {
    chosen.forEach((c, i) => {
      opts.onProgress?.(i, chosen.length, c.id);
      const missing = (c.needs ?? []).map((n) => has[n]()).find((r) => r !== undefined);
      let r: CheckOutcome;
      if (missing) r = { status: 'skip', maxAbsErr: NaN, maxRelErr: NaN, tol: NaN, ratio: NaN, message: missing };
      else {
        try {
          r = c.run(ctx);
        } catch (e) {
          r = {
            status: 'fail',
            maxAbsErr: NaN,
            maxRelErr: NaN,
            tol: NaN,
            ratio: NaN,
            message: `the check threw: ${(e as Error).message}`,
          };
        }
      }
      results.push({ id: c.id, group: c.group, title: c.title, ...r });
    });
    opts.onProgress?.(chosen.length, chosen.length, 'done');
  } finally {
    for (const f of cleanups) f();
  }
  const cfg = model.cfg;
  const failed = results.filter((r) => r.status === 'fail').length,
    skipped = results.filter((r) => r.status === 'skip').length;
  return {
    ok: failed === 0,
    passed: results.length - failed - skipped,
    failed,
    skipped,
    model: {
      name: cfg.model_name,
      n_layers: cfg.n_layers,
      d_model: cfg.d_model,
      n_heads: cfg.n_heads,
      d_head: cfg.d_head,
      d_mlp: cfg.d_mlp,
      d_vocab: cfg.d_vocab,
      normalization: cfg.normalization_type,
    },
    dtype,
    tokens: Array.from({ length: tok.shape[0] }, (_, b) =>
      Array.from(plain(tok).subarray(b * tok.shape[1], (b + 1) * tok.shape[1])),
    ),
    answers: ctx.answers,
    tolerance: { k: ctx.k, uCompute: ctx.uCompute, uStorage: ctx.uStorage, probeDelta: PROBE_DELTA },
    checks: results,
    seconds: (performance.now() - t0) / 1000,
  };
}

// ---------------------------------------------------------------- faults (for testing a CI gate)

/**
 * Faults the command can inject (`--inject-fault`), so a pipeline can check that its gate
 * really fails: each breaks exactly one invariant and names a known place.
 */
export const FAULTS = {
  /** Adds 0.1·max|z| to one head's z (last layer, last head, last position) in the cached run only: hooks.cacheVsHooks fails there. */
  'head-output': (model: HookedTransformer): Pick<VerifyOptions, 'cacheHooks'> => {
    const { n_layers: L, n_heads: H } = model.cfg;
    return {
      cacheHooks: [
        [
          `blocks.${L - 1}.attn.hook_z`,
          (z: Tensor) => {
            const out = z.clone(),
              d = out.f32();
            const [B, P, , D] = out.shape;
            let mx = 0;
            for (const v of d) mx = Math.max(mx, Math.abs(v));
            for (let b = 0; b < B; b++)
              for (let i = 0; i < D; i++) d[((b * P + P - 1) * H + H - 1) * D + i] += 0.1 * (mx || 1);
            return out;
          },
        ],
      ],
    };
  },
  /** foldValueBiases zeroes b_V without adding b_V·W_O to b_O: processing.foldValueBiases (and .all) fail at layer 0's attn_out. */
  'value-bias-fold': (
    _model: HookedTransformer,
    load?: (p: ProcessingOptions) => HookedTransformer,
  ): Pick<VerifyOptions, 'load'> => {
    if (!load) return {};
    return {
      load: (p) => {
        const m = load(p);
        if (!p.foldValueBiases) return m;
        const raw = load({ ...p, foldValueBiases: false, refactorFactoredAttnMatrices: false }); // refactor folds b_V too
        try {
          raw.weights.blocks.forEach((b, l) =>
            m.setWeight(`blocks.${l}.attn.b_O`, new Tensor(Float32Array.from(b.b_O.f32()), b.b_O.shape)),
          );
        } finally {
          raw.dispose();
        }
        return m;
      },
    };
  },
  /**
   * Doubles d metric / d blocks.{L-1}.attn.hook_z in the gradient checks' backward passes (a
   * backward hook): gradients.finiteDifferences fails first there (upstream points inherit it) and
   * gradients.attributionPatchingLinear fails at that layer's hook_z.
   */
  'gradient-scale': (model: HookedTransformer): Pick<VerifyOptions, 'gradHooks'> => ({
    gradHooks: [[`blocks.${model.cfg.n_layers - 1}.attn.hook_z`, (g: Tensor) => map(g, (x) => 2 * x)]],
  }),
} as const;
export type FaultName = keyof typeof FAULTS;

// ---------------------------------------------------------------- table

/** The report as a fixed-width table (what `typelens verify` prints). */
export function formatVerifyTable(r: VerifyReport): string {
  const head = ['check', 'status', 'max abs err', 'max rel err', 'tolerance', 'err/tol'];
  const rows = r.checks.map((c) => [
    c.id,
    c.status === 'pass' ? 'PASS' : c.status === 'fail' ? 'FAIL' : 'skip',
    c.status === 'skip' ? '-' : fmt(c.maxAbsErr),
    c.status === 'skip' ? '-' : fmt(c.maxRelErr),
    c.status === 'skip' ? '-' : fmt(c.tol),
    c.status === 'skip' ? '-' : c.ratio === Infinity ? 'inf' : c.ratio.toFixed(3),
  ]);
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((x) => x[i].length)));
  const line = (x: string[]) =>
    x
      .map((s, i) => (i === 0 ? s.padEnd(w[i]) : s.padStart(w[i])))
      .join('  ')
      .trimEnd();
  const out = [line(head), w.map((n) => '-'.repeat(n)).join('  ')];
  r.checks.forEach((c, i) => {
    out.push(line(rows[i]));
    if (c.status !== 'pass') out.push(`    ${c.status === 'fail' ? '↳' : '·'} ${c.message}`);
    if (c.warning) out.push(`    ! ${c.warning}`);
  });
  const m = r.model;
  out.push('');
  out.push(
    `${r.passed} passed, ${r.failed} failed, ${r.skipped} skipped — ${m.name} (${m.n_layers} layers, d_model ${m.d_model}, ${m.normalization}), ` +
      `weights ${r.dtype}, tokens [${r.tokens.length}, ${r.tokens[0]?.length ?? 0}], answers ${r.answers.map(([a, b]) => `${a}/${b}`).join(' ')}, k ${r.tolerance.k}, ${r.seconds.toFixed(1)} s`,
  );
  return out.join('\n');
}
