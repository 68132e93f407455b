// `typelens generate`: TL's model.generate from the command line, printing tokens as they come.
import { HookedTransformer } from '../model/hooked-transformer.js';
import { decodeTokens } from '../model/tokenizer.js';
import { existingModelDir, int, need, parse, UsageError } from './args.js';

const num = (
  v: string | boolean | undefined,
  flag: string,
  ok: (n: number) => boolean,
  what: string,
): number | undefined => {
  if (v === undefined) return undefined;
  const n = typeof v === 'string' ? Number(v) : NaN;
  if (!Number.isFinite(n) || !ok(n)) throw new UsageError(`${flag} must be ${what}, got "${v}"`);
  return n;
};

export async function cmdGenerate(
  argv: string[],
  write: (s: string) => void = (s) => process.stdout.write(s),
): Promise<number> {
  const { values: v } = parse(argv, {
    model: { type: 'string' },
    prompt: { type: 'string' },
    'max-new-tokens': { type: 'string' },
    temperature: { type: 'string' },
    seed: { type: 'string' },
    'top-k': { type: 'string' },
    'top-p': { type: 'string' },
    'no-kv-cache': { type: 'boolean' },
    'no-stop-at-eos': { type: 'boolean' },
  });
  const dir = need(v.model, '--model DIR');
  const prompt = need(v.prompt, '--prompt TEXT');
  const maxNewTokens = int(v['max-new-tokens'], '--max-new-tokens', 20);
  const temperature = num(v.temperature, '--temperature', (n) => n >= 0, 'a number >= 0 (0 = greedy)') ?? 1;
  const seed = v.seed === undefined ? undefined : int(v.seed, '--seed', 0);
  const topK = num(v['top-k'], '--top-k', (n) => Number.isInteger(n) && n > 0, 'a positive integer');
  const topP = num(v['top-p'], '--top-p', (n) => n > 0 && n <= 1, 'in (0, 1]');
  existingModelDir(dir);
  const model = HookedTransformer.fromDir(dir);
  try {
    write(prompt);
    // decode everything generated so far and print what is new; a token ending inside a UTF-8
    // character decodes to U+FFFD, so that tail waits for the next token
    const ids: number[] = [];
    let shown = '';
    const flush = (final: boolean) => {
      const text = decodeTokens(ids);
      const ready = final ? text : text.replace(/\uFFFD+$/, '');
      if (ready.length > shown.length && ready.startsWith(shown)) {
        write(ready.slice(shown.length));
        shown = ready;
      }
    };
    model.generate(prompt, {
      maxNewTokens,
      temperature,
      doSample: temperature > 0,
      seed,
      topK,
      topP,
      usePastKvCache: !v['no-kv-cache'],
      stopAtEos: !v['no-stop-at-eos'],
      onToken: ([id]) => {
        ids.push(id);
        flush(false);
      },
    });
    flush(true);
    write('\n');
  } finally {
    model.dispose();
  }
  return 0;
}
