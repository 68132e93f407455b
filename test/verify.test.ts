// `verify` (issue 18): the invariant checks pass on the fixtures and random models in every
// dtype, an injected fault fails the right check and names where, an ill-conditioned checkpoint
// passes with larger reported errors, and the command prints a table, writes JSON and gates on exit code.
import t, { Test } from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { HookedTransformer, randomGPT2, hfConfig, NO_PROCESSING, Tensor, makeWeights } from '../src/index.js';
import type { DType, StTensorOut } from '../src/index.js';
import {
  verify,
  loaderFromDir,
  loaderFromHF,
  listChecks,
  registerCheck,
  unregisterCheck,
  formatVerifyTable,
  formatWhere,
  unitRoundoff,
  FAULTS,
  GRADIENT_CHECK_IDS,
  VerifyReport,
} from '../src/analysis/verify.js';

const fixture = (name: string) => fileURLToPath(new URL(`../../test/fixtures/${name}`, import.meta.url));
const bin = fileURLToPath(new URL('../../bin/typelens.js', import.meta.url));
const DTYPES: DType[] = ['f32', 'f16', 'bf16'];
const gradientIds = new Set<string>(GRADIENT_CHECK_IDS);

/** One named assertion per check: every check passes (the gradient ones included). */
function allPass(t: Test, r: VerifyReport, label: string): void {
  for (const c of r.checks) t.equal(c.status, 'pass', `${label} ${c.id}: ${c.message}`);
  t.ok(
    r.checks.filter((c) => gradientIds.has(c.id)).length === GRADIENT_CHECK_IDS.length ||
      r.checks.length < listChecks().length,
    `${label}: the gradient checks ran`,
  );
  t.ok(r.ok, `${label}: report.ok`);
}
const byId = (r: VerifyReport, id: string) => r.checks.find((c) => c.id === id)!;
const tokensFor = (V: number, P: number, bos: number) => [
  [bos, ...Array.from({ length: P - 1 }, (_, i) => (i * 37 + 11) % V)],
];

t.test('unit roundoff per storage dtype', async (t) => {
  t.equal(unitRoundoff('f32'), 2 ** -24);
  t.equal(unitRoundoff('f16'), 2 ** -11);
  t.equal(unitRoundoff('bf16'), 2 ** -8);
});

t.test('the registry: every issue-18 invariant is a named check, the gradient checks included', async (t) => {
  const ids = listChecks().map((c) => c.id);
  for (const id of [
    'decompose.decomposeResid',
    'decompose.accumulatedResid',
    'decompose.headResults',
    'decompose.neuronResults',
    'decompose.fullResidDecomposition',
    'dla.logitAttrs',
    'dla.finalResid',
    'hooks.identity',
    'hooks.cacheVsHooks',
    'processing.foldLn',
    'processing.centerWritingWeights',
    'processing.centerUnembed',
    'processing.foldValueBiases',
    'processing.refactorFactoredAttnMatrices',
    'processing.all',
    ...GRADIENT_CHECK_IDS,
  ])
    t.ok(ids.includes(id), `registered: ${id}`);
});

for (const name of ['tiny', 'tiny-odd', 'tiny-hf']) {
  t.test(`verify passes on fixtures/${name} in f32, f16 and bf16`, async (t) => {
    for (const dtype of DTYPES) {
      const dir = fixture(name);
      const m = HookedTransformer.fromDir(dir, { dtype });
      try {
        const r = verify(m, tokensFor(m.cfg.d_vocab, 10, m.cfg.bos_token_id), { load: loaderFromDir(dir, { dtype }) });
        t.equal(r.dtype, dtype, `${name} ${dtype}: the report names the storage dtype`);
        allPass(t, r, `${name} ${dtype}`);
      } finally {
        m.dispose();
      }
    }
  });
}

const shape = { n_layer: 3, n_embd: 40, n_head: 5, n_positions: 16, vocab_size: 70 };
const hf = hfConfig(shape, shape.vocab_size - 1);
const randomTensors = randomGPT2(shape, 11);
const randomTokens = [
  [69, 4, 18, 33, 2, 51, 7, 64, 12],
  [69, 9, 9, 40, 27, 3, 60, 1, 38],
];

t.test('verify passes on a random model (batch of 2, refactored, given answers) in f32, f16 and bf16', async (t) => {
  for (const dtype of DTYPES) {
    const m = HookedTransformer.fromHFTensors(hf, randomTensors, { dtype, refactorFactoredAttnMatrices: true });
    try {
      const r = verify(m, randomTokens, { load: loaderFromHF(hf, randomTensors, { dtype }), answers: [5, 6] });
      t.same(
        r.answers,
        [
          [5, 6],
          [5, 6],
        ],
        `${dtype}: the answers apply to every prompt`,
      );
      allPass(t, r, `random ${dtype}`);
    } finally {
      m.dispose();
    }
  }
});

t.test(
  "fault: a hook that perturbs one head's output in the cached run only fails hooks.cacheVsHooks at that head",
  async (t) => {
    const m = HookedTransformer.fromHFTensors(hf, randomTensors);
    try {
      const r = verify(m, randomTokens, { ...FAULTS['head-output'](m), only: ['hooks', 'decompose'] });
      const c = byId(r, 'hooks.cacheVsHooks');
      t.equal(c.status, 'fail', 'hooks.cacheVsHooks fails');
      t.match(
        c.where,
        { hook: 'blocks.2.attn.hook_z', layer: 2, head: 4, pos: 8 },
        `it names layer 2, head 4, the last position: ${c.message}`,
      );
      t.ok(c.maxAbsErr > 0 && c.message.includes('head 4'), 'and says by how much and where');
      t.equal(byId(r, 'hooks.identity').status, 'pass', 'hooks.identity still passes (it does not use the cached run)');
      t.equal(
        byId(r, 'decompose.headResults').status,
        'pass',
        'the cached run is self-consistent, so its decompositions pass',
      );
      t.notOk(r.ok, 'report.ok is false');
    } finally {
      m.dispose();
    }
  },
);

t.test(
  "fault: one head's z edited in a cache makes decompose.headResults fail and name layer, head and position",
  async (t) => {
    const m = HookedTransformer.fromHFTensors(hf, randomTensors);
    try {
      const run = m.runWithCache(randomTokens);
      const z = run.cache.get('blocks.1.attn.hook_z'); // [B, P, H, D]
      const [, P, H, D] = z.shape;
      for (let d = 0; d < D; d++) z.set(z.get(1, 5, 3, d) + 0.05, 1, 5, 3, d);
      t.equal(H, 5);
      const r = verify(m, randomTokens, { cache: run, only: ['decompose'] });
      const c = byId(r, 'decompose.headResults');
      t.equal(c.status, 'fail', 'decompose.headResults fails');
      t.match(
        c.where,
        { hook: 'blocks.1.hook_attn_out', layer: 1, head: 3, batch: 1, pos: 5 },
        `it names layer 1, head 3, batch 1, pos 5: ${c.message}`,
      );
      t.ok(c.ratio > 100, `far over its tolerance (${c.ratio.toFixed(0)}x)`);
      t.equal(byId(r, 'decompose.decomposeResid').status, 'pass', 'decomposeResid does not read z: it passes');
      t.equal(byId(r, 'decompose.neuronResults').status, 'pass', 'neuron results pass');
      t.equal(
        byId(r, 'decompose.fullResidDecomposition').status,
        'fail',
        'the full decomposition (built on head results) fails too',
      );
      t.equal(P, 9);
    } finally {
      m.dispose();
    }
  },
);

t.test(
  "fault: one neuron's activation edited in a cache makes decompose.neuronResults fail and name the neuron",
  async (t) => {
    const m = HookedTransformer.fromHFTensors(hf, randomTensors);
    try {
      const run = m.runWithCache(randomTokens);
      const post = run.cache.get('blocks.0.mlp.hook_post'); // [B, P, F]
      post.set(post.get(0, 2, 77) + 0.5, 0, 2, 77);
      const r = verify(m, randomTokens, { cache: run, only: ['decompose.neuronResults', 'decompose.headResults'] });
      const c = byId(r, 'decompose.neuronResults');
      t.equal(c.status, 'fail', 'decompose.neuronResults fails');
      t.match(
        c.where,
        { hook: 'blocks.0.hook_mlp_out', layer: 0, neuron: 77, batch: 0, pos: 2 },
        `it names layer 0, neuron 77, pos 2: ${c.message}`,
      );
      t.equal(byId(r, 'decompose.headResults').status, 'pass', 'head results pass');
    } finally {
      m.dispose();
    }
  },
);

t.test(
  "fault: foldValueBiases without its bias fold fails processing.foldValueBiases (and .all) at layer 0's attn_out",
  async (t) => {
    const m = HookedTransformer.fromHFTensors(hf, randomTensors);
    try {
      const r = verify(m, randomTokens, {
        ...FAULTS['value-bias-fold'](m, loaderFromHF(hf, randomTensors)),
        only: ['processing'],
      });
      for (const id of ['processing.foldValueBiases', 'processing.all']) {
        const c = byId(r, id);
        t.equal(c.status, 'fail', `${id} fails`);
        t.match(
          c.where,
          { hook: 'blocks.0.hook_attn_out (centred)', layer: 0 },
          `${id} names the first activation that diverges: ${c.message}`,
        );
        t.match(c.message, /centred logits off by up to/, `${id} says by how much the logits are off`);
      }
      for (const id of [
        'processing.foldLn',
        'processing.centerWritingWeights',
        'processing.centerUnembed',
        'processing.refactorFactoredAttnMatrices',
      ]) {
        t.equal(byId(r, id).status, 'pass', `${id} (which does not fold b_V alone) passes`);
      }
    } finally {
      m.dispose();
    }
  },
);

t.test("fault: a backward hook that doubles one hook point's gradient fails both gradient checks there", async (t) => {
  const m = HookedTransformer.fromHFTensors(hf, randomTensors);
  try {
    const clean = verify(m, randomTokens, { only: ['gradients'], answers: [5, 6] });
    allPass(t, clean, 'random f32, gradients only');
    const r = verify(m, randomTokens, { only: ['gradients'], answers: [5, 6], ...FAULTS['gradient-scale'](m) });
    const fd = byId(r, 'gradients.finiteDifferences');
    t.equal(fd.status, 'fail', 'gradients.finiteDifferences fails');
    t.match(
      fd.where,
      { hook: 'blocks.2.attn.hook_z', layer: 2 },
      `the first coordinate off in backward order is at the faulty point: ${fd.message}`,
    );
    t.match(fd.message, /backward .* vs finite difference/, 'and it says by how much');
    const ap = byId(r, 'gradients.attributionPatchingLinear');
    t.equal(ap.status, 'fail', 'gradients.attributionPatchingLinear fails');
    t.match(ap.where, { hook: 'blocks.2.attn.hook_z', layer: 2 }, `at layer 2's hook_z: ${ap.message}`);
    t.ok(ap.where!.pos !== undefined && ap.where!.head !== undefined, 'localised to a head and position');
    t.ok(ap.ratio > 100, `far over tolerance (${ap.ratio.toFixed(0)}x)`);
    t.notOk(r.ok);
  } finally {
    m.dispose();
  }
});

t.test(
  'gradient checks: f16/bf16 storage passes (f32 gradients), a model gradient mode refuses is skipped with the EGRAD reason',
  async (t) => {
    for (const dtype of ['f16', 'bf16'] as DType[]) {
      const m = HookedTransformer.fromHFTensors(hf, randomTensors, { dtype });
      try {
        allPass(
          t,
          verify(m, randomTokens, { only: ['gradients'], answers: [5, 6] }),
          `random ${dtype}, gradients only`,
        );
      } finally {
        m.dispose();
      }
    }
    const m = HookedTransformer.fromHFTensors(hf, randomTensors);
    try {
      m.setUseAttnResult(true);
      const r = verify(m, randomTokens, { only: ['gradients'] });
      for (const id of GRADIENT_CHECK_IDS) {
        t.equal(byId(r, id).status, 'skip', `${id} is skipped`);
        t.match(
          byId(r, id).message,
          /gradient mode refuses this model: .*use_\* switches/,
          'with the refusal as the reason',
        );
      }
      t.ok(r.ok, 'skips do not fail the report');
    } finally {
      m.dispose();
    }
  },
);

/** Near-constant embedding rows (a large shared offset), MLP input weights x30, Q/K weights x8. */
function illConditioned(): Record<string, StTensorOut> {
  const s = { n_layer: 2, n_embd: 48, n_head: 3, n_positions: 16, vocab_size: 60 };
  const ts = randomGPT2(s, 7);
  const edit = (n: string, f: (x: number, i: number) => number) => {
    const d = ts[n].data as Float32Array;
    for (let i = 0; i < d.length; i++) d[i] = f(d[i], i);
  };
  edit('wte.weight', (x) => x + 30);
  for (let l = 0; l < 2; l++) {
    edit(`h.${l}.mlp.c_fc.weight`, (x) => x * 30);
    edit(`h.${l}.attn.c_attn.weight`, (x, i) => (i % 144 < 96 ? x * 8 : x));
  }
  return ts;
}

t.test(
  'an ill-conditioned checkpoint passes, reporting its larger errors (and a weak-tolerance warning where the dtype cannot resolve it)',
  async (t) => {
    const s = { n_layer: 2, n_embd: 48, n_head: 3, n_positions: 16, vocab_size: 60 };
    const h = hfConfig(s, 59);
    const tok = [[59, 3, 17, 25, 42, 7, 9, 5, 11, 30]];
    const well = randomGPT2(s, 7),
      ill = illConditioned();
    const run = (ts: Record<string, StTensorOut>, dtype: DType) => {
      const m = HookedTransformer.fromHFTensors(h, ts, { dtype });
      try {
        return verify(m, tok, { load: loaderFromHF(h, ts, { dtype }) });
      } finally {
        m.dispose();
      }
    };
    const a = run(well, 'f32'),
      b = run(ill, 'f32');
    allPass(t, a, 'well-conditioned f32');
    allPass(t, b, 'ill-conditioned f32');
    const ea = byId(a, 'processing.all'),
      eb = byId(b, 'processing.all');
    t.ok(
      eb.maxAbsErr > 10 * ea.maxAbsErr,
      `processing.all reports a larger error (${eb.maxAbsErr.toExponential(2)} vs ${ea.maxAbsErr.toExponential(2)})`,
    );
    t.ok(
      eb.tol > 10 * ea.tol,
      `and derives a larger tolerance from the measured condition (${eb.tol.toExponential(2)} vs ${ea.tol.toExponential(2)})`,
    );
    t.ok(
      (eb.detail!.condition as number) > 10 * (ea.detail!.condition as number),
      'the condition estimate is in the report',
    );
    t.ok(
      byId(b, 'decompose.neuronResults').maxAbsErr > byId(a, 'decompose.neuronResults').maxAbsErr,
      'x30 MLP weights: larger neuron-sum errors, still within tolerance',
    );
    const c = run(ill, 'bf16');
    allPass(t, c, 'ill-conditioned bf16');
    const w = byId(c, 'processing.foldLn');
    t.ok(
      w.maxRelErr > 0.1,
      `bf16 cannot store the offset embeddings: a large relative error is reported (${w.maxRelErr.toFixed(2)})`,
    );
    t.match(
      w.warning ?? '',
      /weak: tol is \d+% of max \|centred logit\|/,
      'and the pass carries a weak-tolerance warning',
    );
    t.match(formatVerifyTable(c), /! weak:/, 'which the table prints');
  },
);

t.test(
  'an unprocessed model: decompositions and gradients pass, DLA checks are skipped with the reason, processing without a loader is skipped',
  async (t) => {
    const m = HookedTransformer.fromHFTensors(hf, randomTensors, NO_PROCESSING);
    try {
      const r = verify(m, randomTokens);
      for (const c of r.checks) {
        if (c.group === 'decomposition' || c.group === 'hooks' || c.group === 'gradients')
          t.equal(c.status, 'pass', `${c.id} passes unprocessed: ${c.message}`);
        else t.equal(c.status, 'skip', `${c.id} is skipped: ${c.message}`);
      }
      t.match(byId(r, 'dla.logitAttrs').message, /without foldLn/);
      t.match(byId(r, 'processing.all').message, /needs a loader/);
      t.ok(r.ok, 'skips do not fail the report');
    } finally {
      m.dispose();
    }
  },
);

t.test(
  'extension point: a registered check runs, reports, and can be removed; `only` filters; a throwing check fails with its message',
  async (t) => {
    const m = HookedTransformer.fromHFTensors(hf, randomTensors);
    try {
      registerCheck({
        id: 'custom.alwaysOff',
        group: 'custom',
        title: 'a check that fails',
        run: () => ({
          status: 'fail',
          maxAbsErr: 1,
          maxRelErr: 1,
          tol: 0.5,
          ratio: 2,
          where: { layer: 1, head: 2, pos: 3 },
          message: 'off by 1 at layer 1, head 2, pos 3',
        }),
      });
      const r = verify(m, randomTokens, {
        only: ['custom', 'hooks.identity'],
        extraChecks: [
          {
            id: 'custom.throws',
            group: 'custom',
            title: 'throws',
            run: () => {
              throw new Error('boom');
            },
          },
        ],
      });
      t.same(
        r.checks.map((c) => c.id),
        ['hooks.identity', 'custom.alwaysOff', 'custom.throws'],
        'only the chosen checks ran, in registry order',
      );
      t.equal(byId(r, 'custom.alwaysOff').status, 'fail');
      t.equal(formatWhere(byId(r, 'custom.alwaysOff').where), 'layer 1, head 2, pos 3');
      t.match(byId(r, 'custom.throws').message, /the check threw: boom/);
      t.equal(r.failed, 2);
      unregisterCheck('custom.alwaysOff');
      t.notOk(
        listChecks().some((c) => c.id === 'custom.alwaysOff'),
        'unregistered',
      );
      const progress: string[] = [];
      verify(m, randomTokens, { only: ['hooks'], onProgress: (_d, _n, id) => progress.push(id) });
      t.same(progress, ['hooks.identity', 'hooks.cacheVsHooks', 'done'], 'progress reports each check');
    } finally {
      m.dispose();
    }
  },
);

t.test(
  'typelens verify: table, JSON, exit 0; an injected fault exits 1 and names where; bad flags exit 2',
  async (t) => {
    const tmp = mkdtempSync(join(tmpdir(), 'typelens-verify-'));
    const dir = join(tmp, 'ckpt');
    makeWeights(dir, { n_layer: 2, n_embd: 32, n_head: 4, n_positions: 16, vocab_size: 50 }, 5);
    const cli = (...args: string[]) =>
      spawnSync(process.execPath, [bin, 'verify', ...args], {
        encoding: 'utf8',
        env: { ...process.env, TYPELENS_BACKEND: 'wasm' },
      });
    const json = join(tmp, 'out', 'report.json');
    const ok = cli('--model', dir, '--tokens', '49,1,2,3,4,5;49,6,7,8,9,10', '--answers', '3,4', '--json', json);
    t.equal(ok.status, 0, `exit 0 when every check passes ${ok.stderr}`);
    for (const c of listChecks())
      t.match(
        ok.stdout,
        new RegExp(`^${c.id.replace('.', '\\.')} +(PASS|skip)`, 'm'),
        `the table has a row for ${c.id}`,
      );
    t.match(ok.stdout, /17 passed, 0 failed, 0 skipped/);
    const rep = JSON.parse(readFileSync(json, 'utf8'));
    t.equal(rep.ok, true, 'the JSON report says ok');
    t.same(rep.answers, [
      [3, 4],
      [3, 4],
    ]);
    t.equal(rep.checks.length, listChecks().length, 'one JSON entry per check');
    t.ok(
      rep.checks.every((c: { tol: unknown; maxAbsErr: unknown }) => c.tol !== undefined && c.maxAbsErr !== undefined),
      'each with its errors and tolerance',
    );
    t.same(readdirSync(join(tmp, 'out')), ['report.json'], 'written atomically (no temp file left)');

    const bad = cli('--model', dir, '--dtype', 'bf16', '--inject-fault', 'head-output', '--only', 'hooks');
    t.equal(bad.status, 1, 'exit 1 when a check fails');
    t.match(bad.stdout, /hooks\.cacheVsHooks +FAIL/);
    t.match(
      bad.stdout,
      /blocks\.1\.attn\.hook_z: layer 1, head 3, batch 0, pos \d+/,
      'the failure names layer, head and position',
    );

    const fold = cli('--model', dir, '--inject-fault', 'value-bias-fold', '--only', 'processing.foldValueBiases');
    t.equal(fold.status, 1);
    t.match(fold.stdout, /first diverges at blocks\.0\.hook_attn_out \(centred\): layer 0/);

    for (const [args, re] of [
      [['--model', dir, '--dtype', 'f64'], /--dtype must be f32, f16 or bf16/],
      [['--model', dir, '--answers', ' A'], /exactly two answers/],
      [['--model', dir, '--inject-fault', 'nope'], /--inject-fault must be one of/],
      [['--tokens', '1'], /missing --model/],
    ] as [string[], RegExp][]) {
      const r = cli(...args);
      t.equal(r.status, 2, `${args.join(' ')} is a usage error`);
      t.match(r.stderr, re);
    }
    const gone = cli('--model', join(tmp, 'nope'));
    t.equal(gone.status, 1);
    t.match(gone.stderr, /does not exist/);
  },
);

t.test('the GPT-2 vocabulary: a text prompt and string answers (the tiny preset)', async (t) => {
  const s = { n_layer: 2, n_embd: 64, n_head: 4, n_positions: 32, vocab_size: 50257 };
  const ts = randomGPT2(s, 0);
  const m = HookedTransformer.fromHFTensors(hfConfig(s), ts);
  try {
    const r = verify(m, 'When John and Mary went to the shops, John gave the bag to', {
      answers: [' Mary', ' John'],
      only: ['decompose', 'dla'],
    });
    allPass(t, r, 'tiny preset, GPT-2 vocabulary');
    t.same(r.answers, [[m.toSingleToken(' Mary'), m.toSingleToken(' John')]], 'string answers are single tokens');
    t.equal(Tensor.from(r.tokens).shape[1], 15, 'the prompt was tokenised with BOS');
  } finally {
    m.dispose();
  }
});
