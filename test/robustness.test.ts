// Bad input, one case per row of docs/robustness.md: each must be a TypelensError (or CLI exit 2/1)
// with one line naming the problem, never a crash deep inside or a silent wrong answer.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  HookedTransformer,
  readSafetensors,
  writeSafetensors,
  tensorF32,
  Tensor,
  TypelensError,
  NO_PROCESSING,
  getActName,
} from '../src/index.js';

const fixture = fileURLToPath(new URL('../../test/fixtures/tiny', import.meta.url));
const bin = fileURLToPath(new URL('../../bin/typelens.js', import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), 'typelens-robust-'));
const config = JSON.parse(readFileSync(join(fixture, 'config.json'), 'utf8'));
const st = readSafetensors(join(fixture, 'model.safetensors'));

/** A copy of the tiny fixture with its config and tensors edited. */
function variant(
  name: string,
  edit: {
    config?: (c: Record<string, unknown>) => void;
    tensors?: (ts: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }>) => void;
  },
): string {
  const dir = join(tmp, name);
  mkdirSync(dir, { recursive: true });
  const c = structuredClone(config);
  edit.config?.(c);
  writeFileSync(join(dir, 'config.json'), JSON.stringify(c));
  const ts: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> = {};
  for (const k of st.entries.keys())
    ts[k] = { dtype: 'F32', shape: [...st.entries.get(k)!.shape], data: Float32Array.from(tensorF32(st, k)) };
  edit.tensors?.(ts);
  writeSafetensors(join(dir, 'model.safetensors'), ts);
  return dir;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
const oneLine = (t: any, fn: () => unknown, re: RegExp, what: string) => {
  try {
    fn();
    t.fail(`${what}: no error`);
  } catch (e) {
    t.ok(e instanceof TypelensError, `${what}: TypelensError`);
    t.match((e as Error).message, re, what);
    t.notOk((e as Error).message.includes('\n'), `${what}: one line`);
  }
};

t.test('GPT-2 checkpoints: missing or misshapen tensors, bad configs, non-finite weights', async (t) => {
  const key = [...st.entries.keys()].find((k) => k.endsWith('h.0.attn.c_attn.weight'))!;
  oneLine(
    t,
    () =>
      HookedTransformer.fromDir(
        variant('missing', {
          tensors: (ts) => {
            delete ts[key];
          },
        }),
      ),
    /missing tensor ".*h\.0\.attn\.c_attn\.weight"/,
    'missing tensor',
  );
  oneLine(
    t,
    () =>
      HookedTransformer.fromDir(
        variant('shape', {
          tensors: (ts) => {
            ts[key].shape = [ts[key].shape[1], ts[key].shape[0]];
          },
        }),
      ),
    /tensor ".*h\.0\.attn\.c_attn\.weight" has shape \[192, 64\], expected \[64, 192\]/,
    'c_attn transposed',
  );
  oneLine(
    t,
    () =>
      HookedTransformer.fromDir(
        variant('heads', {
          config: (c) => {
            c.n_head = 5;
          },
        }),
      ),
    /n_embd 64 is not divisible by n_head 5/,
    'n_embd % n_head',
  );
  oneLine(
    t,
    () =>
      HookedTransformer.fromDir(
        variant('nolayer', {
          config: (c) => {
            delete c.n_layer;
          },
        }),
      ),
    /"n_layer" must be a positive integer, got undefined/,
    'config key missing',
  );
  oneLine(
    t,
    () =>
      HookedTransformer.fromDir(
        variant('strlayer', {
          config: (c) => {
            c.n_layer = '2';
          },
        }),
      ),
    /"n_layer" must be a positive integer, got "2"/,
    'config key of the wrong type',
  );
  const nanDir = variant('nan', {
    tensors: (ts) => {
      ts[key].data[17] = NaN;
    },
  });
  oneLine(
    t,
    () => HookedTransformer.fromDir(nanDir),
    /tensor ".*c_attn\.weight" holds a non-finite value \(NaN\) at flat index 17; pass allowNonFinite/,
    'NaN weight',
  );
  t.ok(HookedTransformer.fromDir(nanDir, { ...NO_PROCESSING, allowNonFinite: true }), 'allowNonFinite loads it');
  const badJson = variant('badjson', {});
  writeFileSync(join(badJson, 'config.json'), '{ "n_layer": 2,');
  oneLine(t, () => HookedTransformer.fromDir(badJson), /config\.json/, 'config.json not JSON');
  oneLine(
    t,
    () => HookedTransformer.fromDir(join(tmp, 'nowhere')),
    /nowhere\/config\.json not found/,
    'missing folder',
  );
});

t.test('usage errors name the token, hook, layer or size', async (t) => {
  const m = HookedTransformer.fromDir(fixture, { ...NO_PROCESSING, cacheBudgetBytes: 64 * 1024 });
  const { n_ctx, d_vocab } = m.cfg;
  oneLine(
    t,
    () => m.forward(Tensor.from(Array(n_ctx + 1).fill(1), [1, n_ctx + 1])),
    new RegExp(`input has ${n_ctx + 1} tokens, more than n_ctx = ${n_ctx}`),
    'too long',
  );
  oneLine(t, () => m.forward(Tensor.zeros([1, 0])), /empty input: no tokens to run/, 'empty tokens');
  oneLine(
    t,
    () => m.forward('', { prependBos: false }),
    /the prompt is empty \(no tokens\)/,
    'empty prompt without BOS (with BOS it runs on BOS alone, as TL)',
  );
  oneLine(
    t,
    () => m.forward([[1, d_vocab]]),
    new RegExp(`token id ${d_vocab} at \\[0, 1\\] is outside the vocabulary \\[0, ${d_vocab}\\)`),
    'token out of vocab',
  );
  oneLine(t, () => m.forward([[1, -2]]), /token id -2 at \[0, 1\]/, 'negative token');
  oneLine(t, () => m.toSingleToken(' Mary went'), /" Mary went" is 2 tokens, not a single token/, 'toSingleToken');
  oneLine(
    t,
    () => m.runWithHooks([[1, 2]], { fwdHooks: [['blocks.7.hook_resid_pre', (x) => x]] }),
    /unknown hook name "blocks\.7\.hook_resid_pre"/,
    'layer out of range',
  );
  oneLine(
    t,
    () => m.runWithHooks([[1, 2]], { fwdHooks: [['blocks.0.attn.hook_z', () => Tensor.zeros([1, 2, 3])]] }),
    /blocks\.0\.attn\.hook_z.*returned shape \[1, 2, 3\]/,
    'hook returns wrong shape',
  );
  const { cache } = m.runWithCache([[1, 2, 3]], { namesFilter: ['blocks.0.hook_resid_pre'] });
  oneLine(t, () => cache.get('blocks.0.hook_resid_post'), /blocks\.0\.hook_resid_post/, 'not cached');
  oneLine(
    t,
    () => m.runWithCache([[1, 2, 3]], { posSlice: 7 }),
    /slice index 7 out of range for an axis of 3/,
    'posSlice out of range',
  );
  oneLine(
    t,
    () => m.runWithCache(Tensor.from(Array(8 * 32).fill(1), [8, 32])),
    /cache would need [\d.]+ MiB, over the 0 MiB budget: pass namesFilter or posSlice, or raise cacheBudgetBytes/,
    'cache over budget',
  );
  oneLine(
    t,
    () => m.forward(Tensor.zeros([1, 2, 3]), { startAtLayer: 9 }),
    /startAtLayer 9 is outside \[0, 2\]/,
    'startAtLayer',
  );
  t.equal(getActName('resid_pre', 1), 'blocks.1.hook_resid_pre');
  m.dispose();
  oneLine(t, () => m.forward([[1]]), /this model was disposed/, 'use after dispose');
});

t.test(
  'memory: the cache estimate is refused before allocating, and namesFilter keeps only what was asked',
  async (t) => {
    const m = HookedTransformer.fromDir(fixture, NO_PROCESSING);
    const toks = Tensor.from(Array(4 * 32).fill(3), [4, 32]);
    const names = ['blocks.0.attn.hook_pattern', 'blocks.1.mlp.hook_post'];
    const { cache } = m.runWithCache(toks, { namesFilter: names });
    t.same(cache.keys().sort(), names.sort(), 'only the requested activations');
    let bytes = 0;
    for (const k of cache.keys()) bytes += cache.get(k).size * 4;
    t.equal(bytes, m.estimateCacheBytes(4, 32, names), 'estimate = bytes actually held');
    const all = [...m.hookDict.values()].filter((h) => h.fires).map((h) => h.name);
    const full = m.runWithCache(toks).cache;
    let fullBytes = 0;
    for (const k of full.keys()) fullBytes += full.get(k).size * 4;
    t.equal(fullBytes, m.estimateCacheBytes(4, 32, all), 'full cache estimate is exact too');
    m.dispose();
  },
);

t.test('CLI: unknown flags, missing values, unreadable paths, unwritable outputs; nothing half-written', async (t) => {
  const cli = (...a: string[]) => spawnSync(process.execPath, [bin, ...a], { encoding: 'utf8' });
  const ro = join(tmp, 'readonly');
  mkdirSync(ro);
  chmodSync(ro, 0o500);
  const unreadable = join(tmp, 'unreadable');
  mkdirSync(unreadable);
  writeFileSync(join(unreadable, 'config.json'), '{}');
  writeFileSync(join(unreadable, 'model.safetensors'), 'x');
  chmodSync(join(unreadable, 'model.safetensors'), 0o000);
  const root = process.getuid?.() === 0; // root reads and writes through permissions
  const cases: [string[], RegExp, number][] = [
    [['demo', '--frobnicate'], /Unknown option '--frobnicate'/, 2],
    [['run', '--model'], /--model' argument missing|argument missing/, 2],
    [['test-prompt', '--model', fixture, 'only one'], /needs exactly two arguments/, 2],
    [
      ['make-weights', '--preset', 'tiny', '--seed', 'x', '--out', join(tmp, 'w')],
      /--seed must be a non-negative integer, got "x"/,
      2,
    ],
    [['fetch-weights', 'gpt2-small', '--dir'], /argument missing/, 2],
    [
      ['run', '--model', fixture, '--tokens', '1,2', '--out', join(ro, 'sub', 'x.safetensors')],
      /cannot write .*x\.safetensors/,
      1,
    ],
  ];
  // unreadable even for root: model.safetensors is a folder
  const dirModel = join(tmp, 'dirmodel');
  mkdirSync(join(dirModel, 'model.safetensors'), { recursive: true });
  writeFileSync(join(dirModel, 'config.json'), JSON.stringify(config));
  cases.push([
    ['run', '--model', dirModel, '--tokens', '1', '--out', join(tmp, 'd.safetensors')],
    /cannot read .*dirmodel\/model\.safetensors: EISDIR/,
    1,
  ]);
  if (!root)
    cases.push([
      ['run', '--model', unreadable, '--tokens', '1', '--out', join(tmp, 'u.safetensors')],
      /unreadable.*(EACCES|permission)/i,
      1,
    ]);
  for (const [args, re, code] of cases) {
    const r = cli(...args);
    t.equal(r.status, code, `${args.join(' ')} exits ${code}`);
    t.match(r.stderr + r.stdout, re, args.join(' '));
    t.notMatch(r.stderr, /\n\s+at /, 'no stack trace');
  }
  t.same(
    readdirSync(tmp).filter((n) => n.includes('.tmp')),
    [],
    'no temp files left',
  );
  chmodSync(ro, 0o700);
  t.ok(!existsSync(join(tmp, 'w', 'model.safetensors')), 'nothing written for a usage error');
});

t.test('loading reports progress, monotonic, ending at its total', async (t) => {
  const seen: [number, number][] = [];
  const m = HookedTransformer.fromDir(fixture, { onProgress: (d, n) => seen.push([d, n]) });
  const total = seen[0][1];
  t.equal(total, 2 * m.cfg.n_layers + 2);
  t.same(seen[0], [0, total]);
  t.same(seen[seen.length - 1], [total, total]);
  t.ok(
    seen.every(([d, n], i) => n === total && (i === 0 || d >= seen[i - 1][0])),
    'monotonic',
  );
  m.dispose();
});
