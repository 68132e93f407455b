// Gradients through the model's own forward (phase 2 of issue 14): runWithCache({ inclBwd }),
// backward hooks, parameter gradients, attribution patching; fixtures from TL's float64 autograd
// and properties on random tiny models.
// Tolerances: fixtures as test/autograd-fixtures.test.ts (|got - want| <= 1e-5·max|want| +
// 1e-4·|want|); finite differences in f32 with h = 1e-2·max(|x|, 0.03) (LN over a few dims is
// strongly curved at the ~0.02 scale of these weights): |g - fd| <= 2e-3 + 2e-2·|fd| (truncation
// O(h²) ~1e-4 on these smooth losses, rounding ~1e-7/h = 1e-5); attribution vs activation patching
// for a linear metric: 1e-5·(1 + max|value|) (two f32 forwards vs one f32 backward).
import t from 'tap';
import fc from 'fast-check';
import { fileURLToPath } from 'node:url';
import {
  HookedTransformer,
  readSafetensors,
  tensorF64,
  Tensor,
  NO_PROCESSING,
  randomGPT2,
  hfConfig,
  getActName,
  ForwardPool,
} from '../src/index.js';
import type { ProcessingOptions } from '../src/index.js';
import { ag, withGrad } from '../src/autograd/index.js';
import { logitDiffMetric } from '../src/model/gpt2-grad.js';
import * as patching from '../src/patching/index.js';
import { invariants, maxAbsDiff } from './helpers.js';

const fx = (name: string) => fileURLToPath(new URL(`../../test/fixtures/${name}`, import.meta.url));
function close(got: ArrayLike<number>, want: ArrayLike<number>): boolean {
  if (got.length !== want.length) return false;
  let mw = 0;
  for (let i = 0; i < want.length; i++) mw = Math.max(mw, Math.abs(want[i]));
  for (let i = 0; i < want.length; i++)
    if (!(Math.abs(got[i] - want[i]) <= 1e-5 * mw + 1e-4 * Math.abs(want[i]))) return false;
  return true;
}
const maxAbs = (a: ArrayLike<number>) => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
};

// ------------------------------------------------------------------ fixtures through the model
for (const metricName of ['loss', 'logit_diff'] as const) {
  t.test(
    `fixture tiny, ${metricName}: runWithCache({ inclBwd }) _grad entries, per-firing backward hooks and parameterGrads match TL`,
    async (t) => {
      const st = readSafetensors(`${fx('tiny')}/grads.safetensors`);
      const model = HookedTransformer.fromDir(fx('tiny'), NO_PROCESSING);
      const tok = new Tensor(Float32Array.from(tensorF64(st, 'tokens')), st.entries.get('tokens')!.shape);
      const ans = Array.from(tensorF64(st, 'answer_tokens')) as [number, number];
      // the loss is runWithCache's default (TL's return_type='loss'); logit_diff is passed as the metric
      const metric = metricName === 'loss' ? undefined : logitDiffMetric(ans);
      const { cache, value } = model.runWithCache(tok, { inclBwd: true, metric });
      const wantValue = tensorF64(st, `metrics/${metricName}`)[0];
      t.ok(
        Math.abs(value! - wantValue) <= 1e-5 * Math.max(1, Math.abs(wantValue)),
        `runWithCache value ${value} vs ${wantValue}`,
      );
      // each ln1 firing gets its own backward call (torch's full backward hook per module call);
      // the backward reaches them in reverse firing order: v, k, q
      const ln1Calls = new Map<string, Tensor[]>();
      const rec = (g: Tensor, hp: { name: string }) => {
        const l = ln1Calls.get(hp.name) ?? [];
        l.push(g.clone());
        ln1Calls.set(hp.name, l);
      };
      const params = model.backward(tok, metric, { bwdHooks: [[(n) => n.includes('ln1.'), rec]] }).paramGrads;
      let nh = 0,
        nf = 0,
        np = 0;
      for (const key of st.entries.keys()) {
        if (!key.startsWith(metricName + '/')) continue;
        const want = tensorF64(st, key),
          rest = key.slice(metricName.length + 1);
        let got: Tensor | undefined;
        if (rest.startsWith('hooks/')) {
          const m = /^hooks\/(.*_grad)(\.([qkv]))?$/.exec(rest)!;
          if (m[3]) {
            const calls = ln1Calls.get(m[1].slice(0, -5));
            got = calls?.[2 - 'qkv'.indexOf(m[3])];
            nf++;
          } else {
            got = cache.get(m[1]);
            nh++;
          }
        } else {
          got = params.get(rest.slice('params/'.length));
          np++;
        }
        if (!got) {
          t.fail(`${key}: no gradient`);
          continue;
        }
        if (maxAbs(want) < 1e-12) {
          t.ok(maxAbs(got.f32()) < 1e-6, `${key} is zero up to f32 rounding`);
          continue;
        }
        t.ok(close(got.f32(), want), `${key} within tolerance`);
      }
      t.equal(
        nh,
        [...cache.keys()].filter((k) => k.endsWith('_grad')).length,
        `every cached _grad entry was compared with TL's (${nh})`,
      );
      t.equal(
        nf,
        3 * ln1Calls.size,
        `each ln1 hook point's three per-firing gradients were compared with TL's (${nf})`,
      );
      t.equal(np, params.size, `every parameter gradient was compared with TL's (${np})`);
      t.ok(
        [...ln1Calls.values()].every((l) => l.length === 3),
        'every ln1 hook point gets three backward calls per forward',
      );
      model.dispose();
    },
  );
}

// ------------------------------------------------------------------ random tiny models
const arbCfg = fc.record({
  n_layer: fc.integer({ min: 2, max: 3 }),
  n_head: fc.integer({ min: 1, max: 3 }),
  d_head: fc.integer({ min: 2, max: 5 }),
  vocab_size: fc.integer({ min: 5, max: 30 }),
  seed: fc.nat(),
  B: fc.integer({ min: 1, max: 2 }),
  P: fc.integer({ min: 2, max: 6 }),
});
type Cfg = { n_layer: number; n_head: number; d_head: number; vocab_size: number; seed: number; B: number; P: number };
const shapeOf = (c: Cfg) => ({
  n_layer: c.n_layer,
  n_embd: c.n_head * c.d_head,
  n_head: c.n_head,
  n_positions: 40,
  vocab_size: c.vocab_size,
});
const build = (c: Cfg, p: ProcessingOptions = NO_PROCESSING, hf = randomGPT2(shapeOf(c), c.seed)) =>
  HookedTransformer.fromHFTensors(hfConfig(shapeOf(c), c.vocab_size - 1), hf, p);
const tokensFor = (c: Cfg, salt = 0) =>
  Tensor.from(
    Array.from({ length: c.B * c.P }, (_, i) => (c.seed + salt + i * 7) % c.vocab_size),
    [c.B, c.P],
  );
const runs = { numRuns: 12 };
const layerOf = (n: string) =>
  n.startsWith('blocks.') ? Number(n.split('.')[1]) : n.startsWith('hook_') ? -1 : Infinity;

t.test(
  "a recorded forward gives the plain forward's logits bit for bit (processed and not, short and long prompts)",
  async (t) => {
    for (const [p, P] of [
      [NO_PROCESSING, 6],
      [{}, 6],
      [NO_PROCESSING, 35],
      [{}, 35],
    ] as const) {
      const c = { n_layer: 2, n_head: 2, d_head: 4, vocab_size: 20, seed: 3, B: 2, P };
      const model = build(c, p as ProcessingOptions),
        tok = tokensFor(c);
      const plain = model.forward(tok);
      const { out: rec, tape } = withGrad(() => model.forward(tok));
      t.ok(tape.size > 0, `P=${P}: the forward was recorded`);
      t.same(
        Array.from(rec.f32()),
        Array.from(plain.f32()),
        `P=${P}, ${p === NO_PROCESSING ? 'unprocessed' : 'processed'}: identical logits`,
      );
      model.dispose();
    }
  },
);

t.test('outside gradient mode the forward records nothing and bwd hooks never run', async (t) => {
  const c = { n_layer: 2, n_head: 2, d_head: 4, vocab_size: 20, seed: 5, B: 1, P: 4 };
  const model = build(c);
  let calls = 0;
  model.addHook(
    'blocks.0.hook_resid_post',
    () => {
      calls++;
    },
    { dir: 'bwd' },
  );
  model.forward(tokensFor(c));
  t.equal(calls, 0, 'a backward hook does not run without a tape');
  t.notOk(model.hasHooks(), 'a backward hook alone leaves the forward free to take the device path');
  t.ok(model.hasHooks('bwd'), 'hasHooks("bwd") sees it');
  t.throws(
    () => model.runWithHooks(tokensFor(c), { bwdHooks: [['blocks.0.hook_resid_post', () => undefined]] }),
    /backward hooks need a recorded forward/,
    'runWithHooks with bwdHooks outside withGrad is a clear error',
  );
  model.dispose();
});

t.test('a backward hook scaling a gradient scales every upstream gradient and no downstream one', async (t) => {
  const UP = 'upstream gradients (layer 0, embeddings, the hooked point) are scaled by k';
  const DOWN = 'downstream gradients (layer 1 on, ln_final) are unchanged';
  const inv = invariants(t, [UP, DOWN]);
  await inv.run(() =>
    fc.assert(
      fc.property(arbCfg, fc.constantFrom(2, -0.5, 3), (c, k) => {
        const model = build(c),
          tok = tokensFor(c);
        const base = model.runWithCache(tok, { inclBwd: true }).cache;
        const at = 'blocks.1.hook_resid_pre';
        const scaled = model.hooks(
          [],
          [[at, (g: Tensor) => ag.mul(g, k)]],
          () => model.runWithCache(tok, { inclBwd: true }).cache,
        );
        try {
          for (const name of base.keys()) {
            if (!name.endsWith('_grad')) continue;
            const hook = name.slice(0, -5),
              a = base.get(name).f32(),
              b = scaled.get(name).f32();
            const upstream = layerOf(hook) < 1 || hook === at;
            const want = upstream ? Array.from(a, (v) => v * k) : Array.from(a);
            const tol = 1e-5 * (1 + maxAbs(want));
            inv.check(
              upstream ? UP : DOWN,
              maxAbsDiff(b, want) <= tol,
              () => `${name}, k = ${k}: max |diff| ${maxAbsDiff(b, want)} > ${tol}`,
            );
          }
        } finally {
          model.dispose();
        }
      }),
      runs,
    ),
  );
});

t.test(
  'a backward hook replacing a gradient: upstream gradients are those of a metric seeded with the replacement',
  async (t) => {
    const SEEDED = 'replacing with G gives the gradients of the backward seeded with G (bit for bit)';
    const ZEROED = 'replacing with zeros zeroes every upstream parameter gradient';
    const inv = invariants(t, [SEEDED, ZEROED]);
    await inv.run(() =>
      fc.assert(
        fc.property(arbCfg, (c) => {
          const model = build(c),
            tok = tokensFor(c),
            L = c.n_layer,
            M = c.n_head * c.d_head;
          const G = Tensor.from(
            Array.from({ length: c.B * c.P * M }, (_, i) => Math.sin(i + c.seed)),
            [c.B, c.P, M],
          );
          const at = `blocks.${L - 2}.hook_resid_post`;
          const replaced = model.hooks([], [[at, () => G]], () => model.runWithCache(tok, { inclBwd: true }).cache);
          const zeroed = model.backward(tok, undefined, { bwdHooks: [[at, (g) => ag.mul(g, 0)]] }).paramGrads;
          // d(sum(resid_post · G))/d upstream = the backward seeded with G at resid_post
          const seeded = model.runWithCache(tok, {
            inclBwd: true,
            stopAtLayer: L - 1,
            metric: (r) => ag.sum(ag.mul(r, G)),
          }).cache;
          try {
            for (const name of seeded.keys()) {
              if (!name.endsWith('_grad')) continue;
              const d = maxAbsDiff(replaced.get(name).f32(), seeded.get(name).f32());
              inv.check(SEEDED, d === 0, () => `${name}: max |diff| ${d}`);
            }
            for (const [n, g] of zeroed) {
              const upstream = layerOf(n.replace(/^(embed|pos_embed)\./, 'hook_')) <= L - 2;
              if (upstream) inv.check(ZEROED, maxAbs(g.f32()) === 0, () => `${n}: max |g| ${maxAbs(g.f32())}`);
            }
          } finally {
            model.dispose();
          }
        }),
        runs,
      ),
    );
  },
);

t.test('resetHooks direction, hooks(fwd, bwd, body) and addHook dir', async (t) => {
  const c = { n_layer: 2, n_head: 1, d_head: 4, vocab_size: 10, seed: 1, B: 1, P: 3 };
  const model = build(c),
    n = 'blocks.0.hook_resid_post';
  const count = (m: HookedTransformer) => [m.hookDict.get(n)!.hooks.length, m.hookDict.get(n)!.bwdHooks.length];
  const add = () => {
    model.addHook(n, () => undefined);
    model.addHook(n, () => undefined, { dir: 'bwd' });
  };
  add();
  model.resetHooks({ direction: 'bwd' });
  t.same(count(model), [1, 0], 'direction "bwd" removes only backward hooks');
  model.resetHooks();
  add();
  model.resetHooks({ direction: 'fwd' });
  t.same(count(model), [0, 1], 'direction "fwd" removes only forward hooks');
  model.resetHooks();
  t.same(count(model), [0, 0], 'the default direction is "both" (TL)');
  let inside: number[] = [];
  model.hooks([[n, () => undefined]], [[n, () => undefined]], () => {
    inside = count(model);
  });
  t.same(inside, [1, 1], 'hooks(fwdHooks, bwdHooks, body) adds both');
  t.same(count(model), [0, 0], '... and removes both at the end');
  t.throws(
    () => model.addHook(n, () => undefined, { dir: 'up' as 'fwd' }),
    /invalid hook direction/,
    'an unknown direction is an error',
  );
  model.dispose();
});

t.test(
  'TL style: withGrad(() => metric(model.runWithHooks(x, { bwdHooks }))) then backward runs the hooks',
  async (t) => {
    const c = { n_layer: 2, n_head: 2, d_head: 3, vocab_size: 12, seed: 9, B: 1, P: 5 };
    const model = build(c),
      tok = tokensFor(c);
    const seen: string[] = [];
    const { out: m, tape } = withGrad(() =>
      ag.lmCrossEntropyLoss(
        model.runWithHooks(tok, {
          bwdHooks: [
            [
              (n: string) => n.endsWith('hook_resid_pre'),
              (g: Tensor, hp: { name: string }) => {
                seen.push(hp.name);
              },
            ],
          ],
        }),
        tok,
      ),
    );
    t.same(seen, [], 'nothing runs before the backward');
    tape.backward(m);
    t.same(
      seen,
      ['blocks.1.hook_resid_pre', 'blocks.0.hook_resid_pre'],
      'the backward runs them, last layer first, though runWithHooks removed them at its end',
    );
    const pool = await ForwardPool.create(model, { threads: 1 });
    try {
      await t.rejects(
        withGrad(() => pool.runBatch(tok)).out,
        /worker pools do not record gradients/,
        'a worker pool refuses gradient mode',
      );
    } finally {
      await pool.destroy();
    }
    model.dispose();
  },
);

t.test('gradients match central finite differences on random tiny models (hook points and parameters)', async (t) => {
  const HOOKS = 'hook-point gradients within 2e-3 + 2e-2·|fd| of central differences';
  const PARAMS = 'parameter gradients within 2e-3 + 2e-2·|fd| of central differences';
  const inv = invariants(t, [HOOKS, PARAMS]);
  await inv.run(() =>
    fc.assert(
      fc.property(arbCfg, fc.nat(), (c, pick) => {
        const hf = randomGPT2(shapeOf(c), c.seed),
          tok = tokensFor(c);
        const model = build(c, NO_PROCESSING, hf);
        const loss = (m: HookedTransformer, hooks: [string, (a: Tensor) => Tensor][] = []) =>
          ag.lmCrossEntropyLoss(m.runWithHooks(tok, { fwdHooks: hooks }), tok).item();
        const { cache } = model.runWithCache(tok, { inclBwd: true });
        const grads = model.parameterGrads(tok);
        const ok = (g: number, fd: number) => Math.abs(g - fd) <= 2e-3 + 2e-2 * Math.abs(fd);
        // hook points: perturb one entry through a forward hook
        for (const name of [
          'hook_embed',
          'blocks.0.attn.hook_v',
          `blocks.${c.n_layer - 1}.mlp.hook_pre`,
          'blocks.1.attn.hook_pattern',
          'ln_final.hook_scale',
        ]) {
          const g = cache.get(name + '_grad'),
            i = pick % g.size;
          // a step relative to the entry (ln scales are ~0.03 here), never under 3e-4 (f32 rounding of the loss)
          const hi = 1e-2 * Math.max(Math.abs(cache.get(name).f32()[i]), 0.03);
          const bump = (d: number) => (a: Tensor) => {
            const x = a.clone();
            x.f32()[i] += d;
            return x;
          };
          const fd = (loss(model, [[name, bump(hi)]]) - loss(model, [[name, bump(-hi)]])) / (2 * hi);
          inv.check(HOOKS, ok(g.f32()[i], fd), () => `${name}[${i}]: tape ${g.f32()[i]}, fd ${fd}`);
        }
        model.dispose();
        // parameters: perturb the HF tensor and rebuild (W_in, b_in, W_out, W_pos, ln_final.w map one to one)
        for (const [hfName, tl] of [
          ['h.0.mlp.c_fc.weight', 'blocks.0.mlp.W_in'],
          ['h.1.mlp.c_fc.bias', 'blocks.1.mlp.b_in'],
          ['h.0.mlp.c_proj.weight', 'blocks.0.mlp.W_out'],
          ['wpe.weight', 'pos_embed.W_pos'],
          ['ln_f.weight', 'ln_final.w'],
        ] as const) {
          const src = hf[hfName].data as Float32Array,
            i = (pick * 31 + 7) % (tl === 'pos_embed.W_pos' ? c.P * c.n_head * c.d_head : src.length);
          const hi = 1e-2 * Math.max(Math.abs(src[i]), 0.03);
          const at = (d: number) => {
            const data = Float32Array.from(src);
            data[i] += d;
            const m = build(c, NO_PROCESSING, { ...hf, [hfName]: { ...hf[hfName], data } });
            const v = loss(m);
            m.dispose();
            return v;
          };
          const fd = (at(hi) - at(-hi)) / (2 * hi);
          inv.check(
            PARAMS,
            ok(grads.get(tl)!.f32()[i], fd),
            () => `${tl}[${i}]: tape ${grads.get(tl)!.f32()[i]}, fd ${fd}`,
          );
        }
      }),
      { numRuns: 6 },
    ),
  );
});

t.test('attribution patching equals activation patching for a metric linear in the patched activation', async (t) => {
  const SHAPE = 'getAttrPatchMlpOut is [n_layers, pos]';
  const EQUAL = 'getAttrPatchMlpOut at layer L-2 = metric(patched) - metric(corrupted) at every position';
  const inv = invariants(t, [SHAPE, EQUAL]);
  await inv.run(() =>
    fc.assert(
      fc.property(arbCfg, (c) => {
        const model = build(c, {}),
          L = c.n_layer,
          M = c.n_head * c.d_head;
        const clean = tokensFor(c),
          corrupted = tokensFor(c, 3);
        // metric = <resid_post[L-2], V> (stopAtLayer L-1): linear in mlp_out[L-2] (resid_post = resid_mid + mlp_out)
        const V = Tensor.from(
          Array.from({ length: c.B * c.P * M }, (_, i) => Math.cos(3 * i + c.seed)),
          [c.B, c.P, M],
        );
        const metric = (r: Tensor) => ag.sum(ag.mul(r, V));
        const value = (r: Tensor) => metric(r).item();
        const { cache: cleanCache } = model.runWithCache(clean);
        const attr = patching.getAttrPatchMlpOut(model, corrupted, cleanCache, metric, { stopAtLayer: L - 1 });
        const base = value(model.forward(corrupted, { stopAtLayer: L - 1 }));
        const name = getActName('mlp_out', L - 2);
        try {
          inv.check(SHAPE, attr.shape.join() === [L, c.P].join(), () => `[${attr.shape}], want [${L}, ${c.P}]`);
          for (let p = 0; p < c.P; p++) {
            const patched = value(
              model.runWithHooks(corrupted, {
                stopAtLayer: L - 1,
                fwdHooks: [[name, (a: Tensor) => patching.setters.layerPos(a, [L - 2, p], cleanCache.get(name))]],
              }),
            );
            const want = patched - base,
              got = attr.get(L - 2, p);
            inv.check(
              EQUAL,
              Math.abs(got - want) <= 1e-5 * (1 + Math.abs(base) + Math.abs(patched)),
              () => `position ${p}: attribution ${got}, patching ${want}`,
            );
          }
        } finally {
          model.dispose();
        }
      }),
      runs,
    ),
  );
});

t.test(
  'attribution functions return the activation-patching shapes and share one backward in the Every forms',
  async (t) => {
    const c = { n_layer: 2, n_head: 2, d_head: 3, vocab_size: 15, seed: 4, B: 2, P: 4 };
    const model = build(c, {}),
      clean = tokensFor(c),
      corrupted = tokensFor(c, 5);
    const { cache } = model.runWithCache(clean);
    const lastTok = (lg: Tensor) => ag.mean(ag.index(ag.index(lg, 1, -1), 1, 0));
    const num = (lg: Tensor) => lastTok(lg).item();
    for (const name of Object.keys(patching.serial) as patching.ReadyMadeName[]) {
      const act = patching.serial[name](model, corrupted, cache, num);
      const attr = patching.attribution[name.replace('getActPatch', 'getAttrPatch') as patching.AttributionName](
        model,
        corrupted,
        cache,
        lastTok,
      );
      t.same(attr.shape, act.shape, `${name.replace('getActPatch', 'getAttrPatch')}: shape [${act.shape.join(', ')}]`);
    }
    t.same(
      patching.getAttrPatchAttnHeadAllPosEvery(model, corrupted, cache, lastTok).shape,
      patching.getActPatchAttnHeadAllPosEvery(model, corrupted, cache, num).shape,
      'AllPosEvery shape',
    );
    t.same(
      patching.getAttrPatchAttnHeadByPosEvery(model, corrupted, cache, lastTok).shape,
      patching.getActPatchAttnHeadByPosEvery(model, corrupted, cache, num).shape,
      'ByPosEvery shape',
    );
    t.same(
      patching.getAttrPatchBlockEvery(model, corrupted, cache, lastTok).shape,
      patching.getActPatchBlockEvery(model, corrupted, cache, num).shape,
      'BlockEvery shape',
    );
    // patching a point with its own clean value changes nothing: clean = corrupted gives zeros
    t.equal(
      maxAbs(patching.getAttrPatchResidPre(model, clean, cache, lastTok).f32()),
      0,
      'clean = corrupted gives zero attribution',
    );
    model.dispose();
  },
);
