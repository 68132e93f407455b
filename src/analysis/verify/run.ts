/** `verify()` itself, and the loaders the processing checks need. */
import './checks.js'; // registers the built-in checks, in the order they run
import { TypelensError } from '../../errors.js';
import { HookedTransformer } from '../../model/hooked-transformer.js';
import type { LoadOptions, TokensInput } from '../../model/hooked-transformer.js';
import { NO_PROCESSING } from '../../model/process.js';
import type { ProcessingOptions } from '../../model/process.js';
import type { StFile, StTensorOut } from '../../model/safetensors.js';
import { Tensor } from '../../tensor/index.js';
import type { DType } from '../../tensor/dtype.js';
import type { Capability, CheckOutcome, CheckResult, VerifyContext, VerifyOptions, VerifyReport } from './types.js';
import { DEFAULT_K, PROBE_DELTA, unitRoundoff } from './tolerance.js';
import { REGISTRY } from './registry.js';
import { gradRefusal } from './gradients.js';
import { needsFoldedLn } from './checks-dla.js';
import { plain } from './where.js';

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
