// headDetector (TL's head_detector.py): the detection patterns against their definitions, and
// detectHead on models whose attention is forced by hooks, where the scores must be exactly 1.0
// or 0.0 (or a known fraction); the demo's scores through detectHead equal the notebook's stripes.
import t from 'tap';
import fc from 'fast-check';
import { fileURLToPath } from 'node:url';
import { HookedTransformer, NO_PROCESSING, Tensor } from '../src/index.js';
import {
  computeHeadAttentionSimilarityScore,
  detectHead,
  getDuplicateTokenHeadDetectionPattern,
  getInductionHeadDetectionPattern,
  getPreviousTokenHeadDetectionPattern,
  getSupportedHeads,
  headDetector,
} from '../src/analysis/head-detector.js';
import { diagonalScore, headDetectorScores } from '../src/analysis/heads.js';
import type { FwdHook } from '../src/hooks/registry.js';

const fixture = fileURLToPath(new URL('../../test/fixtures/tiny', import.meta.url));
const model = HookedTransformer.fromDir(fixture, NO_PROCESSING);
t.teardown(() => model.dispose());
const { n_layers: L, n_heads: H } = model.cfg;

/** Hooks replacing every head's pattern in every layer by `target(i)` = the key query i attends to. */
function forced(target: (i: number) => number): FwdHook[] {
  return [
    [
      (n: string) => n.endsWith('attn.hook_pattern'),
      (p: Tensor) => {
        const [B, Hh, P] = p.shape;
        const d = new Float32Array(p.size);
        for (let b = 0; b < B; b++)
          for (let h = 0; h < Hh; h++) for (let i = 0; i < P; i++) d[((b * Hh + h) * P + i) * P + target(i)] = 1;
        return new Tensor(d, p.shape);
      },
    ],
  ];
}
const all = (s: Tensor, v: number) => s.f32().every((x) => x === v);

t.test("detection patterns are TL's definitions", async (t) => {
  fc.assert(
    fc.property(fc.array(fc.integer({ min: 0, max: 4 }), { minLength: 2, maxLength: 12 }), (toks) => {
      const P = toks.length;
      const prev = getPreviousTokenHeadDetectionPattern(toks),
        dup = getDuplicateTokenHeadDetectionPattern(toks),
        ind = getInductionHeadDetectionPattern(Tensor.from(toks, [1, P]));
      for (let i = 0; i < P; i++)
        for (let j = 0; j < P; j++) {
          if (prev.get(i, j) !== (j === i - 1 ? 1 : 0)) return false;
          if (dup.get(i, j) !== (j < i && toks[i] === toks[j] ? 1 : 0)) return false;
          // the token after an earlier copy of the current token; column 0 never
          if (ind.get(i, j) !== (j >= 1 && j <= i && j - 1 < i && toks[i] === toks[j - 1] && i !== j - 1 ? 1 : 0))
            return false;
        }
      return true;
    }),
    { numRuns: 200 },
  );
  t.pass(
    'previous: (i, i-1); duplicate: earlier equal tokens; induction: duplicate shifted one key right, column 0 empty, lower-triangular',
  );
  const lines: string[] = [];
  t.same(
    getSupportedHeads((l) => lines.push(l)),
    ['previous_token_head', 'duplicate_token_head', 'induction_head'],
    "getSupportedHeads lists TL's HEAD_NAMES",
  );
  t.same(lines, ["['previous_token_head', 'duplicate_token_head', 'induction_head']"], 'and prints them as TL does');
  t.equal(headDetector.detectHead, detectHead, 'headDetector namespace');
});

t.test('a model forced to attend to the previous token', async (t) => {
  const seq = Tensor.from([[5, 9, 2, 7, 3, 8, 1, 4]]);
  const P = 8;
  model.hooks(
    forced((i) => Math.max(i - 1, 0)),
    () => {
      const mul = detectHead(model, seq, 'previous_token_head');
      t.ok(
        mul.f32().every((v) => Math.abs(v - (P - 1) / P) < 1e-7),
        "'mul': (P-1)/P (query 0 can only attend to itself)",
      );
      t.ok(
        all(detectHead(model, seq, 'previous_token_head', { excludeBos: true }), 1),
        "'mul' excluding BOS: exactly 1.0",
      );
      t.ok(
        all(detectHead(model, seq, 'previous_token_head', { errorMeasure: 'abs', excludeCurrentToken: true }), 1),
        "'abs' excluding the current token: exactly 1.0",
      );
      const abs = detectHead(model, seq, 'previous_token_head', { errorMeasure: 'abs' });
      t.ok(all(abs, 1 - 0.125), "'abs': 1 - round(1/P, 3) (the one miss at (0, 0))");
      t.ok(
        all(detectHead(model, seq, 'duplicate_token_head', { excludeBos: true }), 0),
        'no repeated tokens: duplicate-token score exactly 0.0',
      );
    },
  );
  model.hooks(
    forced((i) => i),
    () => {
      t.ok(
        all(detectHead(model, seq, 'previous_token_head'), 0),
        'a current-token head scores exactly 0.0 as a previous-token head',
      );
    },
  );
});

t.test('a model forced to do induction on a repeated random sequence', async (t) => {
  const half = [11, 23, 5, 42, 17, 8],
    n = half.length,
    P = 2 * n;
  const seqs = [
    [...half, ...half],
    [...half.map((x) => x + 100), ...half.map((x) => x + 100)],
  ];
  // second half: attend to the token after the earlier copy (i - n + 1); first half: to itself
  const induction = forced((i) => (i >= n ? i - n + 1 : i));
  model.hooks(induction, () => {
    t.ok(
      all(detectHead(model, seqs, 'induction_head', { excludeCurrentToken: true }), 1),
      'induction excluding the current token: exactly 1.0',
    );
    t.ok(
      detectHead(model, seqs, 'induction_head')
        .f32()
        .every((v) => Math.abs(v - n / P) < 1e-7),
      'induction: n / P (the first half attends to itself)',
    );
    t.ok(
      all(detectHead(model, seqs, 'duplicate_token_head', { excludeCurrentToken: true }), 0),
      'duplicate-token: exactly 0.0',
    );
    const { cache } = model.runWithCache(Tensor.from(seqs));
    const viaCache = detectHead(model, Tensor.from(seqs), 'induction_head', { cache, excludeCurrentToken: true });
    t.ok(all(viaCache, 1), 'from a cache of the batch: the same 1.0');
  });
});

t.test('heads, several sequences, a cache, custom patterns, errors', async (t) => {
  const a = [3, 1, 4, 1, 5, 9, 2, 6],
    b = [2, 7, 1, 8, 2, 8, 1, 8];
  const some = detectHead(model, [a], 'duplicate_token_head', {
    heads: [
      [0, 1],
      [1, 3],
    ],
  });
  const asDict = detectHead(model, [a], 'duplicate_token_head', { heads: { 0: [1], 1: [3] } });
  const full = detectHead(model, [a], 'duplicate_token_head');
  t.ok(
    some.f32().every((v, i) => (i === 1 || i === H + 3 ? v === full.f32()[i] : v === -1)),
    'heads left out score -1, the others as in the full table',
  );
  t.same(asDict.toArray(), some.toArray(), "TL's {layer: [heads]} form = the list of pairs");
  const both = detectHead(model, [a, b], 'induction_head');
  const one = (s: number[]) => detectHead(model, s, 'induction_head').f32();
  t.ok(
    both.f32().every((v, i) => Math.abs(v - (one(a)[i] + one(b)[i]) / 2) < 1e-7),
    'several sequences: the mean of their scores (TL on a list)',
  );
  const { cache } = model.runWithCache(Tensor.from([a, b]));
  t.same(
    detectHead(model, Tensor.from([a, b]), 'induction_head', { cache }).toArray(),
    both.toArray(),
    'with a cache: the same scores, no run',
  );
  // 'a b c a b c' is GPT-2 tokens inside the tiny vocabulary
  const ids = [model.cfg.bos_token_id, 64, 275, 269, 257, 275, 269];
  const text = detectHead(model, 'a b c a b c', 'induction_head');
  t.same(model.toTokens('a b c a b c').toArray(), ids, "the test string's tokens");
  t.same(
    text.toArray(),
    detectHead(model, ids, 'induction_head').toArray(),
    "a string is tokenized with BOS (TL's to_tokens)",
  );
  const custom = getDuplicateTokenHeadDetectionPattern(a);
  t.same(detectHead(model, a, custom).toArray(), full.toArray(), 'a custom pattern tensor = the named one it equals');
  t.throws(() => detectHead(model, a, Tensor.zeros([3, 3])), { code: 'ESHAPE' }, 'a pattern of the wrong size');
  t.throws(
    () => detectHead(model, a, 'bogus_head' as 'induction_head'),
    { code: 'EINVAL' },
    'an unknown named pattern',
  );
  t.throws(
    () => detectHead(model, a, 'induction_head', { errorMeasure: 'sq' as 'abs' }),
    { code: 'EINVAL' },
    'an unknown error measure',
  );
  t.throws(() => detectHead(model, [1], 'induction_head'), { code: 'EINPUT' }, 'a one-token sequence');
  t.throws(
    () => detectHead(model, a, 'induction_head', { heads: [[L, 0]] }),
    { code: 'EINPUT' },
    'a head outside the model',
  );
  t.throws(
    () => detectHead(model, a, Tensor.full([8, 8], 1), { errorMeasure: 'abs' }),
    { code: 'EINPUT' },
    "'abs' refuses a pattern above the diagonal (TL's assert)",
  );
  const warned: string[] = [];
  detectHead(model, a, Tensor.full([8, 8], 0.5), { warn: (l) => warned.push(l) });
  t.match(warned, [/values other than 0 or 1/], "'mul' with a non-0/1 pattern warns as TL does");
  t.throws(
    () => detectHead(model, [a, b], 'induction_head', { cache: model.runWithCache(Tensor.from([a])).cache }),
    { code: 'ESHAPE' },
    'a cache of another batch',
  );
  // the similarity score by hand
  t.equal(computeHeadAttentionSimilarityScore([1, 0, 0.5, 0.5], [0, 0, 1, 0], 2), 0.25, "'mul' = 0.5 / 2");
  t.equal(
    computeHeadAttentionSimilarityScore([1, 0, 0.5, 0.5], [0, 0, 1, 0], 2, { errorMeasure: 'abs' }),
    1 - 1,
    "'abs' = 1 - round((1 + 0.5 + 0.5) / 4 x 2, 3)",
  );
});

t.test(
  "the demo's previous / duplicate / induction scores run through detectHead and equal the notebook's stripes",
  async (t) => {
    const seqLen = 10,
      half = [
        [5, 17, 3, 99, 42, 7, 61, 28, 13, 80],
        [6, 18, 4, 98, 41, 8, 60, 27, 14, 81],
      ];
    const toks = Tensor.from(half.map((r) => [...r, ...r]));
    const s = headDetectorScores(model, toks, seqLen);
    const { cache } = model.runWithCache(toks);
    for (const [name, got, offset] of [
      ['previous', s.previousToken, 1],
      ['duplicate', s.duplicateToken, seqLen],
      ['induction', s.induction, seqLen - 1],
    ] as const) {
      const want = new Float32Array(L * H);
      for (let l = 0; l < L; l++) want.set(diagonalScore(cache.get(`blocks.${l}.attn.hook_pattern`), offset), l * H);
      t.ok(
        got.f32().every((v, i) => Math.abs(v - want[i]) <= 1e-6 * (1 + Math.abs(want[i]))),
        `${name}: detectHead x P/(P - offset) = the mean of the stripe`,
      );
    }
  },
);
