import { existsSync } from 'node:fs';
import { parseArgs, ParseArgsConfig } from 'node:util';
import { TypelensError } from '../errors.js';
import { Tensor } from '../tensor/index.js';
import { defaultThreads } from '../kernels/index.js';

/** A usage mistake: exit code 2 with the usage text. */
export class UsageError extends TypelensError {
  constructor(m: string) {
    super(m, 'EUSAGE');
  }
}

export type Flags = Record<string, string | boolean | undefined>;

/** Strict flag parsing: unknown flags and missing values are usage errors. */
export function parse(argv: string[], options: ParseArgsConfig['options']): { values: Flags; positionals: string[] } {
  try {
    const r = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
    return { values: r.values as Flags, positionals: r.positionals };
  } catch (e) {
    throw new UsageError((e as Error).message.split('\n')[0]);
  }
}

export const need = (v: unknown, flag: string): string => {
  if (typeof v !== 'string' || v === '') throw new UsageError(`missing ${flag}`);
  return v;
};

export const int = (v: string | boolean | undefined, flag: string, dflt: number): number => {
  if (v === undefined) return dflt;
  const n = typeof v === 'string' ? Number(v) : NaN;
  if (!Number.isInteger(n) || n < 0) throw new UsageError(`${flag} must be a non-negative integer, got "${v}"`);
  return n;
};

/** --threads N (default: every core). */
export const threads = (v: string | boolean | undefined): number => {
  if (v === undefined) return defaultThreads();
  const n = typeof v === 'string' ? Number(v) : NaN;
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`--threads must be a positive integer, got "${v}"`);
  return n;
};

/** A --model DIR that must exist (a clear error before loading tries to read it). */
export const existingModelDir = (dir: string): string => {
  if (!existsSync(dir)) throw new TypelensError(`--model: ${dir} does not exist`, 'ENOENT');
  return dir;
};

/** --tokens "1,2,3;4,5,6": rows of token ids, all the same length. */
export function parseTokens(s: string): Tensor {
  const rows = s.split(';').map((r) =>
    r
      .split(',')
      .map((x) => x.trim())
      .filter((x) => x !== '')
      .map((x) => {
        const n = Number(x);
        if (!Number.isInteger(n)) throw new UsageError(`--tokens: "${x}" is not an integer token id`);
        return n;
      }),
  );
  if (rows.some((r) => r.length !== rows[0].length))
    throw new UsageError('--tokens: every row must have the same length');
  if (rows[0].length === 0) throw new UsageError('--tokens: no token ids given');
  return Tensor.from(rows.flat(), [rows.length, rows[0].length]);
}

/**
 * Runs a standalone script's main (npm run train:ioi / eval:ioi) as `typelens` runs its commands:
 * --help prints the usage, a usage mistake prints it with the message (exit 2), a TypelensError
 * just its message (exit 1); anything else is a bug and keeps its stack (exit 70).
 */
export async function runScript(
  name: string,
  usage: string,
  main: (argv: string[]) => Promise<number>,
  argv: string[],
): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(usage);
    return 0;
  }
  try {
    return await main(argv);
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(`${name}: ${e.message}\n\n${usage}`);
      return 2;
    }
    if (e instanceof TypelensError) {
      console.error(`${name}: ${e.message}`);
      return 1;
    }
    console.error(`${name}: internal error: ${(e as Error).stack ?? e}`);
    return 70;
  }
}
