import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { TypelensError } from '../errors.js';
import { HookedTransformer } from '../model/hooked-transformer.js';
import { DEFAULT_PROCESSING, NO_PROCESSING } from '../model/process.js';
import { Tensor } from '../tensor/index.js';
import type { DType } from '../tensor/dtype.js';
import { wasmBackend } from '../kernels/index.js';
import { writeFileAtomic } from '../util/fs.js';
import { FAULTS, FaultName, formatVerifyTable, loaderFromDir, verify, VerifyOptions } from '../analysis/verify.js';
import { progress } from './progress.js';
import { need, parse, parseTokens, threads, UsageError } from './args.js';

export const VERIFY_USAGE = `  verify --model DIR [--prompt TEXT | --tokens "1,2,3[;4,5,6]"] [--answers " A"," B"] [--dtype f32|f16|bf16]
      [--json FILE] [--no-processing] [--only ID,ID] [--k N] [--inject-fault head-output|value-bias-fold|gradient-scale] [--threads N]`;

/** The prompt used when neither --prompt nor --tokens is given (GPT-2-vocabulary models). */
export const DEFAULT_VERIFY_PROMPT = 'When John and Mary went to the shops, John gave the bag to';

/** `--answers " A"," B"` (the shell hands over ` A, B`) or `--answers 123,456` (token ids). */
function parseAnswers(s: string): [number | string, number | string] {
  const parts = s.split(',');
  if (parts.length !== 2 || parts.some((p) => p === ''))
    throw new UsageError(
      `--answers needs exactly two answers, correct then incorrect (" A"," B" or 123,456), got "${s}"`,
    );
  const ids = parts.every((p) => /^\s*\d+\s*$/.test(p));
  return ids ? [Number(parts[0]), Number(parts[1])] : [parts[0], parts[1]];
}

/** JSON with non-finite numbers kept readable ("Infinity", "NaN") rather than null. */
const jsonReplacer = (_k: string, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? String(v) : v);

/**
 * `typelens verify`: the invariant checks of analysis/verify.ts on one checkpoint and input.
 * Prints the table (a progress bar on a terminal while it runs), writes the report as JSON
 * with --json, and returns 1 if any check failed (0 otherwise), so it can gate a CI pipeline.
 */
export async function runVerify(argv: string[]): Promise<number> {
  const { values: v } = parse(argv, {
    model: { type: 'string' },
    prompt: { type: 'string' },
    tokens: { type: 'string' },
    answers: { type: 'string' },
    dtype: { type: 'string' },
    json: { type: 'string' },
    'no-processing': { type: 'boolean' },
    only: { type: 'string' },
    k: { type: 'string' },
    'inject-fault': { type: 'string' },
    threads: { type: 'string' },
  });
  if (v.threads !== undefined) wasmBackend()?.setThreads(threads(v.threads));
  const dir = need(v.model, '--model DIR');
  if (v.tokens !== undefined && v.prompt !== undefined)
    throw new UsageError('give at most one of --tokens or --prompt');
  const dtype = (v.dtype ?? 'f32') as DType;
  if (!['f32', 'f16', 'bf16'].includes(dtype))
    throw new UsageError(`--dtype must be f32, f16 or bf16, got "${v.dtype}"`);
  let k: number | undefined;
  if (v.k !== undefined) {
    k = Number(v.k);
    if (!(k > 0) || !Number.isFinite(k)) throw new UsageError(`--k must be a positive number, got "${v.k}"`);
  }
  const fault = v['inject-fault'] as FaultName | undefined;
  if (fault !== undefined && !(fault in FAULTS))
    throw new UsageError(`--inject-fault must be one of ${Object.keys(FAULTS).join(', ')}, got "${fault}"`);
  const answers = v.answers !== undefined ? parseAnswers(v.answers as string) : undefined;
  const tokenRows = v.tokens !== undefined ? parseTokens(v.tokens as string) : undefined;
  if (!existsSync(dir)) throw new TypelensError(`--model: ${dir} does not exist`, 'ENOENT');

  const model = HookedTransformer.fromDir(dir, {
    ...(v['no-processing'] ? NO_PROCESSING : DEFAULT_PROCESSING),
    dtype,
    onProgress: progress('loading the model'),
  });
  try {
    let input: Tensor | string;
    if (tokenRows) input = tokenRows;
    else if (v.prompt !== undefined) input = v.prompt as string;
    else if (model.cfg.d_vocab >= 50257) input = DEFAULT_VERIFY_PROMPT;
    else {
      // a small vocabulary (test checkpoints): BOS then a fixed spread of ids
      const V = model.cfg.d_vocab,
        n = Math.min(model.cfg.n_ctx, 12);
      input = Tensor.from(
        [model.cfg.bos_token_id, ...Array.from({ length: n - 1 }, (_, i) => (i * 37 + 11) % V)],
        [1, n],
      );
    }
    const load = loaderFromDir(dir, { dtype });
    let opts: VerifyOptions = {
      load,
      answers,
      k,
      only:
        v.only !== undefined
          ? (v.only as string)
              .split(',')
              .map((s) => s.trim())
              .filter(Boolean)
          : undefined,
    };
    if (fault) opts = { ...opts, ...FAULTS[fault](model, load) };
    const bar = progress('verifying');
    const report = verify(model, input, { ...opts, onProgress: bar && ((done, total) => bar(done, total)) });
    console.log(formatVerifyTable(report));
    if (v.json !== undefined) {
      const path = resolve(v.json as string);
      writeFileAtomic(
        path,
        JSON.stringify({ checkpoint: dir, injectedFault: fault ?? null, ...report }, jsonReplacer, 2) + '\n',
      );
      console.log(`wrote ${v.json}`);
    }
    return report.ok ? 0 : 1;
  } finally {
    model.dispose();
  }
}
