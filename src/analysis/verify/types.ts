/** The types of `verify`: options, report, results, the context a check runs in, the check itself. */
import { HookedTransformer } from '../../model/hooked-transformer.js';
import type { BwdHook, FwdHook } from '../../model/hooked-transformer.js';
import type { ProcessingOptions } from '../../model/process.js';
import type { ActivationCache } from '../../hooks/cache.js';
import { Tensor } from '../../tensor/index.js';
import type { DType } from '../../tensor/dtype.js';

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
