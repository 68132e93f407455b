// The command-line contract: typelens run / test-prompt / make-weights, and one-line errors.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { HookedTransformer, readSafetensors, tensorF32, NO_PROCESSING } from '../src/index.js';
import { ActivationCache } from '../src/hooks/cache.js';
import { maxAbsDiff } from './helpers.js';

const bin = fileURLToPath(new URL('../../bin/typelens.js', import.meta.url));
const fixture = fileURLToPath(new URL('../../test/fixtures/tiny', import.meta.url));
const cli = (...args: string[]) => spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8' });
const tmp = mkdtempSync(join(tmpdir(), 'typelens-cli-'));

t.test('make-weights writes a loadable seeded checkpoint, the same for the same seed', async (t) => {
  const a = join(tmp, 'a'),
    b = join(tmp, 'b');
  for (const d of [a, b]) t.equal(cli('make-weights', '--preset', 'tiny', '--seed', '3', '--out', d).status, 0);
  const wa = tensorF32(readSafetensors(join(a, 'model.safetensors')), 'h.1.mlp.c_fc.weight');
  const wb = tensorF32(readSafetensors(join(b, 'model.safetensors')), 'h.1.mlp.c_fc.weight');
  t.equal(maxAbsDiff(wa, wb), 0, 'same seed, same weights');
  t.same(
    readdirSync(tmp).filter((n) => n.includes('.tmp')),
    [],
    'no temp folders left behind',
  );
});

t.test('run --tokens writes logits and the requested cache, equal to the library', async (t) => {
  const out = join(tmp, 'run.safetensors');
  const r = cli(
    'run',
    '--model',
    fixture,
    '--tokens',
    '1,2,3;4,5,6',
    '--no-processing',
    '--cache',
    'blocks.0.hook_resid_pre,blocks.1.attn.hook_pattern',
    '--out',
    out,
    '--repeat',
    '2',
  );
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /forward median: [\d.]+ ms/);
  const f = readSafetensors(out);
  t.same([...f.entries.keys()].sort(), ['blocks.0.hook_resid_pre', 'blocks.1.attn.hook_pattern', 'logits']);
  t.same(f.entries.get('logits')!.shape, [2, 3, 1000]);
  const m = HookedTransformer.fromDir(fixture, NO_PROCESSING);
  t.equal(
    maxAbsDiff(
      tensorF32(f, 'logits'),
      m
        .forward([
          [1, 2, 3],
          [4, 5, 6],
        ])
        .f32(),
    ),
    0,
    'same numbers as the library',
  );
  // the file is a saved cache: ActivationCache.load reads it back, with its tokens and the logits beside it
  const loaded = ActivationCache.load(out);
  t.same(loaded.keys().sort(), ['blocks.0.hook_resid_pre', 'blocks.1.attn.hook_pattern'], 'run --out loads as a cache');
  t.same(
    loaded.tokens?.toNested(),
    [
      [1, 2, 3],
      [4, 5, 6],
    ],
    'with its token ids',
  );
  t.equal(maxAbsDiff(loaded.extra.get('logits')!.f32(), tensorF32(f, 'logits')), 0, 'and its logits in extra');
  t.equal(
    maxAbsDiff(loaded.get('blocks.0.hook_resid_pre').f32(), tensorF32(f, 'blocks.0.hook_resid_pre')),
    0,
    'same activations',
  );
  m.dispose();
});

t.test('bad input: one-line errors, non-zero exit, no stack trace, no partial output', async (t) => {
  const out = join(tmp, 'bad.safetensors');
  const cases: [string[], RegExp, number][] = [
    [
      ['run', '--model', fixture, '--tokens', '1,2,1000', '--out', out],
      /token id 1000 at \[0, 2\] is outside the vocabulary \[0, 1000\)/,
      1,
    ],
    [
      ['run', '--model', fixture, '--tokens', Array(40).fill(1).join(','), '--out', out],
      /33 tokens|40 tokens, more than n_ctx = 32/,
      1,
    ],
    [['run', '--model', join(tmp, 'nope'), '--tokens', '1', '--out', out], /does not exist/, 1],
    [
      ['run', '--model', fixture, '--tokens', '1', '--cache', 'blocks.0.hook_nothing', '--out', out],
      /unknown hook name "blocks.0.hook_nothing"/,
      1,
    ],
    [['run', '--model', fixture, '--out', out], /exactly one of --tokens or --prompt/, 2],
    [['run', '--frobnicate'], /Unknown option '--frobnicate'/, 2],
    [['nonsense'], /unknown command "nonsense"/, 2],
    [['make-weights', '--preset', 'huge', '--out', out], /--preset must be one of/, 2],
  ];
  for (const [args, re, code] of cases) {
    const r = cli(...args);
    t.equal(r.status, code, `${args.join(' ')} exits ${code}`);
    t.match(r.stderr, re);
    t.notMatch(r.stderr, /\n\s+at /, 'no stack trace');
  }
  t.notOk(existsSync(out), 'no output file from failed runs');
});

t.test("test-prompt prints TL's format", async (t) => {
  const dir = join(tmp, 'a');
  const r = cli(
    'test-prompt',
    '--model',
    dir,
    'After John and Mary went to the store, John gave a bottle of milk to',
    ' Mary',
  );
  t.equal(r.status, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  t.equal(
    lines[0],
    "Tokenized prompt: ['<|endoftext|>', 'After', ' John', ' and', ' Mary', ' went', ' to', ' the', ' store', ',', ' John', ' gave', ' a', ' bottle', ' of', ' milk', ' to']",
  );
  t.equal(lines[1], "Tokenized answer: [' Mary']");
  t.equal(lines[2], 'Performance on answer token:');
  t.match(lines[3], /^Rank: \d+ +Logit: +-?\d+\.\d\d Prob: +\d+\.\d\d% Token: \| Mary\|$/);
  for (let k = 0; k < 10; k++)
    t.match(
      lines[4 + k],
      new RegExp(`^Top ${k}th token\\. Logit: +-?\\d+\\.\\d\\d Prob: +\\d+\\.\\d\\d% Token: \\|.*\\|$`),
    );
  t.match(lines[14], /^Ranks of the answer tokens: \[\(' Mary', \d+\)\]$/);
});
