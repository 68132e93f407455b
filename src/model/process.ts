import { transposed } from '../tensor/factored-svd.js';
import { FactorThreads, type FactorJob } from '../tensor/factor-jobs.js';
import { runtimeConfig } from '../platform/env.js';
import { threadMatmulKernel } from '../kernels/index.js';
import { Tensor } from '../tensor/index.js';
import type { ModelConfig } from './config.js';
import type { BlockWeights, Weights } from './weights.js';

/** TransformerLens's load-time weight processing, each step switchable (spec section 4). */
export interface ProcessingOptions {
  foldLn?: boolean;
  centerWritingWeights?: boolean;
  centerUnembed?: boolean;
  foldValueBiases?: boolean;
  refactorFactoredAttnMatrices?: boolean;
}
/** from_pretrained's defaults (refactor is off there; the demo turns it on). */
export const DEFAULT_PROCESSING: Required<ProcessingOptions> = {
  foldLn: true,
  centerWritingWeights: true,
  centerUnembed: true,
  foldValueBiases: true,
  refactorFactoredAttnMatrices: false,
};
export const NO_PROCESSING: Required<ProcessingOptions> = {
  foldLn: false,
  centerWritingWeights: false,
  centerUnembed: false,
  foldValueBiases: false,
  refactorFactoredAttnMatrices: false,
};

// Plain loops over row-major data. Each helper works on `n` consecutive [rows, cols] matrices.
const f32 = (t: Tensor) => t.f32();

/** x[r, c] -= mean over c (each row centred). */
function centerRows(x: Float32Array, rows: number, cols: number): void {
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let c = 0; c < cols; c++) s += x[r * cols + c];
    const mu = s / cols;
    for (let c = 0; c < cols; c++) x[r * cols + c] -= mu;
  }
}
/**
 * Fold an LN (w, beta) into the n stacked [rows=M, cols] matrices that read its output, and their
 * biases [n, cols], then centre each matrix's columns (the folded LN's output has mean zero).
 * One pass over W does the bias sums (with the unscaled weights), the scaling and the column sums
 * of the scaled weights; a second subtracts the column means. Each sum runs over m in order, so
 * this is bit for bit the separate bias / scale / centerCols loops, with half the passes over W
 * (W_U's [768, 50257] is 154 MB).
 */
function foldInto(
  W: Float32Array,
  b: Float32Array,
  w: Float32Array,
  beta: Float32Array,
  n: number,
  M: number,
  cols: number,
): void {
  const acc = new Float64Array(cols),
    mu = new Float64Array(cols);
  for (let k = 0; k < n; k++) {
    const o = k * M * cols;
    acc.fill(0);
    mu.fill(0);
    for (let m = 0; m < M; m++) {
      const bm = beta[m],
        wm = w[m],
        row = o + m * cols;
      for (let c = 0; c < cols; c++) {
        const x = W[row + c];
        acc[c] += bm * x;
        const y = Math.fround(x * wm);
        W[row + c] = y;
        mu[c] += y;
      }
    }
    for (let c = 0; c < cols; c++) b[k * cols + c] += acc[c];
    for (let c = 0; c < cols; c++) mu[c] /= M;
    for (let m = 0; m < M; m++) {
      const row = o + m * cols;
      for (let c = 0; c < cols; c++) W[row + c] -= mu[c];
    }
  }
}

function foldLayerNorm(W: Weights, cfg: ModelConfig): void {
  const { d_model: M, n_heads: H, d_head: D, d_mlp: F, d_vocab: V } = cfg;
  for (const blk of W.blocks) {
    for (const [Wm, bm] of [
      [blk.W_Q, blk.b_Q],
      [blk.W_K, blk.b_K],
      [blk.W_V, blk.b_V],
    ] as const) {
      foldInto(f32(Wm), f32(bm), f32(blk.ln1_w!), f32(blk.ln1_b!), H, M, D);
    }
    foldInto(f32(blk.W_in), f32(blk.b_in), f32(blk.ln2_w!), f32(blk.ln2_b!), 1, M, F);
    delete blk.ln1_w;
    delete blk.ln1_b;
    delete blk.ln2_w;
    delete blk.ln2_b;
  }
  foldInto(f32(W.W_U), f32(W.b_U), f32(W.ln_final_w!), f32(W.ln_final_b!), 1, M, V);
  delete W.ln_final_w;
  delete W.ln_final_b;
  cfg.normalization_type = 'LNPre';
}

function centerWritingWeights(W: Weights, cfg: ModelConfig): void {
  const { d_model: M, n_heads: H, d_head: D, d_mlp: F, d_vocab: V, n_ctx: C } = cfg;
  centerRows(f32(W.W_E), V, M);
  centerRows(f32(W.W_pos), C, M);
  for (const blk of W.blocks) {
    centerRows(f32(blk.W_O), H * D, M);
    centerRows(f32(blk.b_O), 1, M);
    centerRows(f32(blk.W_out), F, M);
    centerRows(f32(blk.b_out), 1, M);
  }
}

function centerUnembed(W: Weights, cfg: ModelConfig): void {
  centerRows(f32(W.W_U), cfg.d_model, cfg.d_vocab);
  centerRows(f32(W.b_U), 1, cfg.d_vocab);
}

/** b_O += sum_h b_V[h] @ W_O[h]; b_V = 0 (pattern rows sum to 1, so b_V is a constant). */
function foldValueBias(blk: BlockWeights, cfg: ModelConfig): void {
  const { d_model: M, n_heads: H, d_head: D } = cfg;
  const bV = f32(blk.b_V),
    WO = f32(blk.W_O),
    bO = f32(blk.b_O);
  const add = new Float64Array(M);
  for (let hd = 0; hd < H * D; hd++) for (let m = 0; m < M; m++) add[m] += bV[hd] * WO[hd * M + m];
  for (let m = 0; m < M; m++) bO[m] += add[m];
  bV.fill(0);
}

/**
 * Re-base each head so W_Q/W_K (with biases) and W_V/W_O are balanced SVD factors (TL's
 * HookedTransformer.refactor_factored_attn_matrices): QK from FactoredMatrix([W_Q; b_Q],
 * [W_K; b_K]^T).make_even(), OV from FactoredMatrix(W_V, W_O).svd() after folding b_V into b_O.
 * The SVDs are TL's FactoredMatrix.svd done on the factors (R factors of the [M+1, D] factors and
 * the SVD of a [D, D] core, balancedFactors), never on the [M, M] products; float64 throughout,
 * stored back as f32.
 */
function refactorFactoredAttnMatrices(
  W: Weights,
  cfg: ModelConfig,
  onLayer?: (l: number) => void,
  threads?: FactorThreads,
): void {
  const { d_model: M, n_heads: H, d_head: D } = cfg;
  const pool = threads ?? refactorThreads(cfg);
  try {
    for (const [l, blk] of W.blocks.entries()) {
      onLayer?.(l);
      // b_V into b_O first: it reads the original W_O, and the QK refactor touches neither
      foldValueBias(blk, cfg);
      const WQ = f32(blk.W_Q),
        WK = f32(blk.W_K),
        bQ = f32(blk.b_Q),
        bK = f32(blk.b_K),
        WV = f32(blk.W_V),
        WO = f32(blk.W_O);
      // [W; b] for head h: [M+1, D], the bias as the row a constant-1 input coordinate reads
      const aug = (Wm: Float32Array, b: Float32Array, h: number): Float32Array => {
        const x = new Float32Array((M + 1) * D);
        x.set(Wm.subarray(h * M * D, (h + 1) * M * D));
        x.set(b.subarray(h * D, (h + 1) * D), M * D);
        return x;
      };
      const heads = Array.from({ length: H }, (_, h) => h);
      const jobs: FactorJob[] = [
        // make_even: W_Q' = U sqrt(S), W_K' = V sqrt(S); the last row is the bias
        ...heads.map((h) => ({
          A: aug(WQ, bQ, h),
          n: M + 1,
          Bt: aug(WK, bK, h),
          r: M + 1,
          m: D,
          kind: 'even' as const,
        })),
        // W_V' = U diag(S) [M, D]; W_O' = V^T [D, M]
        ...heads.map((h) => ({
          A: WV.subarray(h * M * D, (h + 1) * M * D),
          n: M,
          Bt: transposed(new Tensor(WO.slice(h * D * M, (h + 1) * D * M), [D, M])).f32(),
          r: M,
          m: D,
          kind: 'svd' as const,
        })),
      ];
      const res = pool.run(jobs);
      for (const h of heads) {
        const { U, V } = res[h];
        WQ.set(U.subarray(0, M * D), h * M * D);
        bQ.set(U.subarray(M * D), h * D);
        WK.set(V.subarray(0, M * D), h * M * D);
        bK.set(V.subarray(M * D), h * D);
        const ov = res[H + h];
        WV.set(ov.U, h * M * D);
        for (let d = 0; d < D; d++) for (let m = 0; m < M; m++) WO[h * D * M + d * M + m] = ov.V[m * D + d];
      }
    }
  } finally {
    if (!threads) pool.close();
  }
}

/**
 * The helper threads refactorFactoredAttnMatrices splits its SVDs across (TYPELENS_THREADS - 1),
 * started now, so that a loader can start them before it reads the checkpoint (they boot and
 * compile while it reads). None for small models: below L * H * d_model * d_head = 2^20 the SVDs
 * cost less than starting a thread (gpt2-small is 7e6, the embedded model 3e4). Close it after.
 */
export function refactorThreads(cfg: ModelConfig): FactorThreads {
  const { n_layers: L, d_model: M, n_heads: H, d_head: D } = cfg;
  const job = { n: M + 1, r: M + 1, m: D }; // the QK jobs; the OV ones are a row smaller
  return new FactorThreads(L * H * M * D >= refactorThreadsMinWork ? runtimeConfig().threads - 1 : 0, {
    helperUrl: new URL('./refactor-helper.js', import.meta.url),
    kernel: threadMatmulKernel(),
    capacity: { jobs: 2 * H, floats: FactorThreads.floatsOf(Array(2 * H).fill(job)) },
    warm: { n: M + 1, m: D },
  });
}

/** L * H * d_model * d_head from which the refactor splits its SVDs across threads. */
let refactorThreadsMinWork = 1 << 20;
/** For tests: force the threaded path on small models (0) or restore the default (undefined). */
export function setRefactorThreadsMinWork(n?: number): void {
  refactorThreadsMinWork = n ?? 1 << 20;
}

/**
 * Apply the switched-on steps in TL's order. Mutates `W` and `cfg`. `threads`: the refactor's
 * helper threads, started early by the caller (refactorThreads); the caller closes them.
 */
export function processWeights(
  W: Weights,
  cfg: ModelConfig,
  opts: ProcessingOptions = {},
  onLayer?: (l: number) => void,
  threads?: FactorThreads,
): void {
  const o = { ...DEFAULT_PROCESSING, ...opts };
  if (o.foldLn) foldLayerNorm(W, cfg);
  // TL skips centring for models whose residual stream is not read through an LN
  if (o.centerWritingWeights) centerWritingWeights(W, cfg);
  if (o.centerUnembed) centerUnembed(W, cfg);
  if (o.foldValueBiases) for (const blk of W.blocks) foldValueBias(blk, cfg);
  if (o.refactorFactoredAttnMatrices) refactorFactoredAttnMatrices(W, cfg, onLayer, threads);
}
