// The cache you can keep: Map views, applySliceToBatchDim, the summary, half-precision caches
// (estimate = bytes held), save / load bit for bit, a loaded cache's methods against the
// in-memory ones, and bad files.
import t from 'tap';
import fc from 'fast-check';
import { mkdtempSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { HookedTransformer, NO_PROCESSING, Tensor, TypelensError, writeSafetensors } from '../src/index.js';
import { ActivationCache } from '../src/hooks/cache.js';
import { LazyTensorMap } from '../src/hooks/cache-file.js';
import type { DType } from '../src/tensor/dtype.js';

const fixture = fileURLToPath(new URL('../../test/fixtures/tiny', import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), 'typelens-cache-'));
const model = HookedTransformer.fromDir(fixture, NO_PROCESSING);
t.teardown(() => model.dispose());
const toks = Tensor.from([
  [1, 2, 3, 4, 5, 6],
  [7, 8, 9, 10, 11, 12],
  [3, 1, 4, 1, 5, 9],
]);
const B = 3,
  P = 6;

/** Same storage dtype, shape and stored bits (f32 values by Object.is, half-precision bits as integers). */
function bitsEqual(a: Tensor, b: Tensor): boolean {
  if (a.dtype !== b.dtype || a.ndim !== b.ndim || a.shape.some((d, i) => d !== b.shape[i])) return false;
  if (a.dtype === 'f32') {
    const x = a.f32(),
      y = b.f32();
    return x.every((v, i) => Object.is(v, y[i]));
  }
  const raw = (t: Tensor) => {
    const c = t.permute(...t.shape.map((_, i) => i));
    return rawBits(c);
  };
  const x = raw(a),
    y = raw(b);
  return x.every((v, i) => v === y[i]);
}
function rawBits(t: Tensor): Uint16Array {
  const out = new Uint16Array(t.size);
  const src = t.data as Uint16Array;
  // contiguous caches only here (what runWithCache stores)
  out.set(src.subarray(t.offset, t.offset + t.size));
  return out;
}
const sameF32 = (a: Tensor, b: Tensor) =>
  a.shape.length === b.shape.length &&
  a.shape.every((d, i) => d === b.shape[i]) &&
  a.f32().every((v, i) => Object.is(v, b.f32()[i]));

t.test('Map views: values, items and iteration agree with keys and get, in firing order', async (t) => {
  const { cache } = model.runWithCache(toks);
  const keys = cache.keys();
  t.same(
    cache.items().map(([k]) => k),
    keys,
    'items() names = keys()',
  );
  t.ok(
    cache.items().every(([k, v]) => v === cache.get(k)),
    'items() tensors = get(name)',
  );
  t.ok(
    cache.values().every((v, i) => v === cache.get(keys[i])),
    'values() = get(keys()[i])',
  );
  t.same(
    [...cache].map(([k]) => k),
    keys,
    'iteration yields [name, tensor] in firing order',
  );
});

t.test(
  'applySliceToBatchDim: every activation sliced on axis 0; an int removes the batch dim (TL semantics)',
  async (t) => {
    const { cache } = model.runWithCache(toks);
    fc.assert(
      fc.property(
        fc.oneof(
          fc.integer({ min: -B, max: B - 1 }),
          fc.array(fc.integer({ min: 0, max: B - 1 }), { minLength: 1, maxLength: 4 }),
          fc.record({ start: fc.integer({ min: 0, max: B }), stop: fc.integer({ min: 0, max: B }) }),
        ),
        (s) => {
          const sub = cache.applySliceToBatchDim(s);
          const isInt = typeof s === 'number';
          if (sub.hasBatchDim === isInt) return false;
          return sub.keys().every((k) => {
            const full = cache.get(k);
            const want = isInt
              ? full.index(0, s)
              : Array.isArray(s)
                ? Tensor.from(s.map((b) => full.index(0, b).toNested()) as number[][])
                : full.slice(0, s.start, s.stop);
            return sameF32(sub.get(k).contiguous(), want.contiguous().reshape(want.shape.length ? want.shape : []));
          });
        },
      ),
      { numRuns: 20 },
    );
    t.pass('applySliceToBatchDim matches slicing each activation');
    t.equal(cache.applySliceToBatchDim(null), cache, 'the identity slice returns the cache itself');
    const one = cache.applySliceToBatchDim(1);
    t.throws(() => one.applySliceToBatchDim(0), { code: 'ESHAPE' }, 'no batch dim left to index');
    t.same(one.tokens?.toNested(), [[7, 8, 9, 10, 11, 12]], 'the tokens follow the slice');
    // methods work on the sliced cache as on a batch-1 cache
    const single = model.runWithCache(toks.slice(0, 1, 2)).cache;
    const a = cache.applySliceToBatchDim([1]).accumulatedResid({ layer: -1, inclMid: true });
    const b = model.runWithCache(toks.slice(0, 1, 2)).cache.accumulatedResid({ layer: -1, inclMid: true });
    t.ok(
      a.f32().every((v, i) => Math.abs(v - b.f32()[i]) < 1e-5),
      'sliced cache methods = a run on that prompt',
    );
    void single;
  },
);

t.test('toString: one line per activation with shape, dtype and bytes, and the total', async (t) => {
  const { cache } = model.runWithCache(toks, {
    namesFilter: ['hook_embed', 'blocks.0.attn.hook_pattern'],
    cacheDtype: 'f16',
  });
  const s = cache.toString();
  t.match(s, /^ActivationCache with 2 activations, /);
  t.match(s, /hook_embed \[3, 6, 64\] f16 2\.3 KiB/);
  t.match(s, /blocks\.0\.attn\.hook_pattern \[3, 4, 6, 6\] f16 864 B/);
  t.equal(cache.nbytes, (3 * 6 * 64 + 3 * 4 * 6 * 6) * 2, 'nbytes = elements x 2 for f16');
});

t.test('cacheDtype: the estimate equals the bytes held, the budget follows, methods compute in f32', async (t) => {
  const all = [...model.hookDict.values()].filter((h) => h.fires).map((h) => h.name);
  const byDtype: Record<string, ActivationCache> = {};
  for (const dtype of ['f32', 'f16', 'bf16'] as DType[]) {
    const { cache } = model.runWithCache(toks, { cacheDtype: dtype });
    byDtype[dtype] = cache;
    t.ok(
      cache.values().every((v) => v.dtype === dtype),
      `${dtype}: every activation is stored as ${dtype}`,
    );
    t.equal(cache.nbytes, model.estimateCacheBytes(B, P, all, dtype), `${dtype}: estimate = bytes held`);
  }
  t.equal(byDtype.f16.nbytes * 2, byDtype.f32.nbytes, 'f16 halves the cache');
  // the budget: between the half and the full size, a half cache fits and a full one is refused
  const saved = model.cacheBudgetBytes;
  model.cacheBudgetBytes = model.estimateCacheBytes(B, P, all, 'f16');
  try {
    t.throws(() => model.runWithCache(toks), { code: 'ENOMEM' }, 'the f32 cache is over the budget');
    t.doesNotThrow(() => model.runWithCache(toks, { cacheDtype: 'bf16' }), 'the bf16 cache fits the same budget');
  } finally {
    model.cacheBudgetBytes = saved;
  }
  t.throws(
    () => model.runWithCache(toks, { cacheDtype: 'f8' as DType }),
    { code: 'EINVAL' },
    'an unknown cacheDtype is refused',
  );
  // the stored values are the f32 values rounded once; the methods' results are f32
  for (const dtype of ['f16', 'bf16'] as DType[]) {
    const half = byDtype[dtype],
      full = byDtype.f32;
    const x = full.get('blocks.1.hook_resid_post');
    t.ok(
      sameF32(half.get('blocks.1.hook_resid_post').contiguous(), Tensor.encode(x.f32(), x.shape, dtype).contiguous()),
      `${dtype}: stored = round(f32 activation)`,
    );
    const r = half.decomposeResid({ layer: -1, posSlice: -1 });
    t.equal(r.dtype, 'f32', `${dtype}: decomposeResid computes in f32`);
    const tol = dtype === 'f16' ? 2e-2 : 1e-1;
    const ref = full.decomposeResid({ layer: -1, posSlice: -1 }).f32();
    t.ok(
      r.f32().every((v, i) => Math.abs(v - ref[i]) <= tol * (1 + Math.abs(ref[i]))),
      `${dtype}: decomposeResid within half precision of the f32 cache`,
    );
    t.ok(half.stackHeadResults({ layer: -1 }).dtype === 'f32', `${dtype}: stackHeadResults works (f32 result)`);
  }
  // shared caches keep their dtype too
  const shared = model
    .runWithCache(toks, { cacheDtype: 'f16', shared: true, namesFilter: ['hook_embed'] })
    .cache.get('hook_embed');
  t.ok(
    shared.dtype === 'f16' && shared.data.buffer instanceof SharedArrayBuffer,
    'shared f16 cache: f16 in a SharedArrayBuffer',
  );
});

t.test('save / load: bit for bit for f32, f16 and bf16 caches, with config, tokens, names and version', async (t) => {
  const pkg = JSON.parse(readFileSync(fileURLToPath(new URL('../../package.json', import.meta.url)), 'utf8')) as {
    version: string;
  };
  for (const dtype of ['f32', 'f16', 'bf16'] as DType[]) {
    const { cache, logits } = model.runWithCache(toks, { cacheDtype: dtype });
    const path = join(tmp, `cache-${dtype}.safetensors`);
    cache.save(path, { logits });
    const loaded = ActivationCache.load(path);
    t.same(loaded.keys(), cache.keys(), `${dtype}: same names in the same order`);
    t.ok(
      (loaded.cacheDict as LazyTensorMap).isLoaded(cache.keys()[0]) === false,
      `${dtype}: nothing read before it is asked for`,
    );
    t.ok(
      cache.keys().every((k) => bitsEqual(loaded.get(k), cache.get(k))),
      `${dtype}: every activation bit for bit`,
    );
    t.ok(bitsEqual(loaded.extra.get('logits')!, logits), `${dtype}: extra tensors (logits) bit for bit`);
    t.same(loaded.tokens?.toNested(), toks.toNested(), `${dtype}: token ids`);
    t.equal(loaded.nbytes, cache.nbytes, `${dtype}: same bytes`);
    const raw = readFileSync(path);
    const md = JSON.parse(raw.subarray(8, 8 + Number(raw.readBigUInt64LE(0))).toString()).__metadata__;
    t.same(
      JSON.parse(md.model_config),
      JSON.parse(JSON.stringify(model.cfg)),
      `${dtype}: metadata holds the model config`,
    );
    t.same(JSON.parse(md.hook_names), cache.keys(), `${dtype}: metadata holds the hook names`);
    t.equal(md.typelens_version, pkg.version, `${dtype}: metadata holds the typelens version`);
  }
  // removeBatchDim and sliced caches round-trip too
  const one = model.runWithCache(toks.slice(0, 0, 1), { removeBatchDim: true, cacheDtype: 'bf16' }).cache;
  one.save(join(tmp, 'one.safetensors'));
  const back = ActivationCache.load(join(tmp, 'one.safetensors'));
  t.equal(back.hasBatchDim, false, 'hasBatchDim is kept');
  t.ok(
    one.keys().every((k) => bitsEqual(back.get(k), one.get(k))),
    'batch-less bf16 cache bit for bit',
  );
});

t.test(
  'a loaded cache: activation-only methods equal the in-memory ones; model-needing ones ask for the model',
  async (t) => {
    const { cache } = model.runWithCache(toks);
    const path = join(tmp, 'methods.safetensors');
    cache.save(path);
    const bare = ActivationCache.load(path);
    const withModel = ActivationCache.load(path, model);
    const eq = (name: string, f: (c: ActivationCache) => Tensor | [Tensor, string[]], caches: ActivationCache[]) => {
      const want = f(cache);
      for (const c of caches) {
        const got = f(c);
        const [a, b] = Array.isArray(want) ? [want[0], (got as [Tensor, string[]])[0]] : [want, got as Tensor];
        t.ok(
          sameF32(b, a) &&
            (!Array.isArray(want) || JSON.stringify(want[1]) === JSON.stringify((got as [Tensor, string[]])[1])),
          `${name}: loaded${c === withModel ? ' (with model)' : ''} = in memory`,
        );
      }
    };
    eq('get([resid_post, -1])', (c) => c.get(['resid_post', -1]), [bare, withModel]);
    eq(
      'accumulatedResid',
      (c) => c.accumulatedResid({ layer: -1, inclMid: true, applyLn: true, posSlice: -1, returnLabels: true }),
      [bare, withModel],
    );
    eq('decomposeResid', (c) => c.decomposeResid({ layer: 1, mode: 'attn', returnLabels: true }), [bare, withModel]);
    eq('stackActivation', (c) => c.stackActivation('pattern'), [bare, withModel]);
    eq('applyLnToStack', (c) => c.applyLnToStack(c.get('blocks.0.hook_attn_out').unsqueeze(0), { layer: 1 }), [
      bare,
      withModel,
    ]);
    eq('applySliceToBatchDim', (c) => c.applySliceToBatchDim(2).get('blocks.1.mlp.hook_post'), [bare, withModel]);
    eq('stackHeadResults', (c) => c.stackHeadResults({ layer: -1, returnLabels: true }), [withModel]);
    eq('getFullResidDecomposition', (c) => c.getFullResidDecomposition({ layer: -1, expandNeurons: false }) as Tensor, [
      withModel,
    ]);
    eq(
      'logitAttrs',
      (c) =>
        c.logitAttrs(c.decomposeResid({ layer: -1, posSlice: -1 }), [5, 6, 7], {
          incorrectTokens: [8, 9, 10],
          posSlice: -1,
        }),
      [withModel],
    );
    const fresh = ActivationCache.load(path);
    for (const [name, f] of [
      ['computeHeadResults', (c: ActivationCache) => c.computeHeadResults()],
      ['stackHeadResults', (c: ActivationCache) => c.stackHeadResults({ layer: -1 })],
      ['getNeuronResults', (c: ActivationCache) => c.getNeuronResults(0)],
      ['getFullResidDecomposition', (c: ActivationCache) => c.getFullResidDecomposition({ layer: -1 })],
      ['logitAttrs', (c: ActivationCache) => c.logitAttrs(c.decomposeResid({ layer: -1 }), [1, 2, 3])],
    ] as const) {
      fresh.log = () => {};
      t.throws(
        () => f(fresh),
        {
          name: 'TypelensError',
          code: 'ENOMODEL',
          message: new RegExp(`${name}.*${path.replace(/[.]/g, '\\.')}.*ActivationCache\\.load\\(path, model\\)`),
        },
        `${name} without the model names what to pass`,
      );
    }
    const other = HookedTransformer.fromDir(
      fileURLToPath(new URL('../../test/fixtures/tiny-odd', import.meta.url)),
      NO_PROCESSING,
    );
    t.throws(
      () => ActivationCache.load(path, other),
      { code: 'ECONFIG', message: /saved from a model with/ },
      'a model of another shape is refused',
    );
    other.dispose();
  },
);

t.test('files without typelens metadata load too (sizes inferred from names and shapes)', async (t) => {
  const { cache, logits } = model.runWithCache(toks, {
    namesFilter: (n) => n.endsWith('hook_pattern') || n.endsWith('resid_post') || n.endsWith('mlp.hook_post'),
  });
  const path = join(tmp, 'plain.safetensors');
  writeSafetensors(
    path,
    Object.fromEntries(
      [['logits', logits] as [string, Tensor], ...cache.items()].map(([k, v]) => [
        k,
        { dtype: 'F32', shape: v.shape, data: v.f32() },
      ]),
    ),
  );
  const back = ActivationCache.load(path);
  t.same(back.keys(), cache.keys(), 'every tensor but logits is an activation');
  t.same(back.model.cfg, { n_layers: 2, n_heads: 4, d_mlp: 256 }, 'n_layers, n_heads and d_mlp inferred');
  t.ok(
    sameF32(back.get(['resid_post', -1]), cache.get('blocks.1.hook_resid_post')),
    'negative layers resolve with the inferred n_layers',
  );
});

t.test(
  'bad files: truncated, corrupt, listed-but-missing, missing, truncated after opening: a TypelensError naming the file',
  async (t) => {
    const { cache } = model.runWithCache(toks, { namesFilter: ['hook_embed', 'blocks.0.hook_resid_post'] });
    const good = join(tmp, 'good.safetensors');
    cache.save(good);
    const bytes = readFileSync(good);
    const cut = join(tmp, 'truncated.safetensors');
    writeFileSync(cut, bytes.subarray(0, bytes.length - 100));
    t.throws(
      () => ActivationCache.load(cut),
      { name: 'TypelensError', message: /truncated\.safetensors.*run past the data area/ },
      'truncated: named, data runs past the end',
    );
    writeFileSync(cut, bytes.subarray(0, 5));
    t.throws(
      () => ActivationCache.load(cut),
      { name: 'TypelensError', message: /truncated\.safetensors.*shorter than the 8-byte header/ },
      'a few bytes: named',
    );
    const corrupt = join(tmp, 'corrupt.safetensors');
    const c = Buffer.from(bytes);
    c[8] = 0x7d; // the header JSON starts with '}'
    writeFileSync(corrupt, c);
    t.throws(
      () => ActivationCache.load(corrupt),
      { name: 'TypelensError', message: /corrupt\.safetensors.*header is not valid/ },
      'corrupt header: named',
    );
    const lying = join(tmp, 'lying.safetensors');
    writeSafetensors(
      lying,
      { hook_embed: { dtype: 'F32', shape: [1], data: new Float32Array(1) } },
      { hook_names: JSON.stringify(['hook_embed', 'hook_pos_embed']) },
    );
    t.throws(
      () => ActivationCache.load(lying),
      { name: 'TypelensError', message: /lying\.safetensors.*"hook_pos_embed" is listed/ },
      'a listed hook without a tensor: named',
    );
    writeSafetensors(
      lying,
      { hook_embed: { dtype: 'F32', shape: [1], data: new Float32Array(1) } },
      { model_config: '{nope' },
    );
    t.throws(
      () => ActivationCache.load(lying),
      { name: 'TypelensError', message: /lying\.safetensors.*model_config/ },
      'bad metadata JSON: named',
    );
    t.throws(
      () => ActivationCache.load(join(tmp, 'nope.safetensors')),
      { name: 'TypelensError', message: /nope\.safetensors/ },
      'a missing file: named',
    );
    const later = join(tmp, 'later.safetensors');
    writeFileSync(later, bytes);
    const lazy = ActivationCache.load(later);
    truncateSync(later, 200);
    t.throws(
      () => lazy.get('blocks.0.hook_resid_post'),
      { name: 'TypelensError', message: /later\.safetensors.*truncated/ },
      'truncated after load: the lazy read names the file',
    );
    const closed = ActivationCache.load(good);
    closed.get('hook_embed');
    closed.close();
    t.ok(closed.get('hook_embed'), 'after close(): what was read stays');
    t.throws(
      () => closed.get('blocks.0.hook_resid_post'),
      { name: 'TypelensError', code: 'EIO', message: /good\.safetensors.*closed/ },
      'after close(): an unread activation says the file was closed',
    );
    t.ok(TypelensError);
  },
);
