// Loading from byte sources (buffers, Blobs, URLs), sharded checkpoints and files over 2 GiB: the
// same bytes give the same model as fromDir, bit for bit; bad shards and indexes name the file.
import t from 'tap';
import {
  closeSync,
  ftruncateSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HookedTransformer, makeWeights, Tensor, serializeSafetensors } from '../src/index.js';
import { blobSource, memorySource } from '../src/platform/byte-source.js';
import * as browserFiles from '../src/platform/files-browser.js';
import { openSafetensors, readSafetensors, StTensorOut } from '../src/tensor/safetensors.js';
import { SHARD_INDEX } from '../src/tensor/safetensors-sharded.js';

const tmp = mkdtempSync(join(tmpdir(), 'typelens-sources-'));
const dir = join(tmp, 'single');
makeWeights(dir, { n_layer: 2, n_embd: 32, n_head: 4, n_positions: 16, vocab_size: 50 }, 3);
const configText = readFileSync(join(dir, 'config.json'), 'utf8');
const stBytes = new Uint8Array(readFileSync(join(dir, 'model.safetensors')));
const tokens = new Tensor(Float32Array.from([1, 7, 3, 49, 0, 12]), [1, 6]);
const opts = { refactorFactoredAttnMatrices: true } as const;
const reference = HookedTransformer.fromDir(dir, opts).forward(tokens).f32();

const same = (a: Float32Array, b: Float32Array) => a.length === b.length && a.every((x, i) => Object.is(x, b[i]));

const shardName = (i: number, n: number) =>
  `model-${String(i + 1).padStart(5, '0')}-of-${String(n).padStart(5, '0')}.safetensors`;

/** The single file's tensors split round-robin into n shards plus HF's index, in a new folder. */
function sharded(name: string, n: number, edit?: (index: { weight_map: Record<string, string> }) => void): string {
  const out = join(tmp, name);
  mkdirSync(out);
  const st = readSafetensors(join(dir, 'model.safetensors'));
  const parts: Record<string, StTensorOut>[] = Array.from({ length: n }, () => ({}));
  const index = { metadata: { total_size: stBytes.length }, weight_map: {} as Record<string, string> };
  [...st.entries.keys()].forEach((k, i) => {
    const e = st.entries.get(k)!;
    parts[i % n][k] = { dtype: e.dtype, shape: e.shape, data: new Float32Array(new Uint8Array(st.bytes(k)).buffer) };
    index.weight_map[k] = shardName(i % n, n);
  });
  writeFileSync(join(out, 'config.json'), configText);
  parts.forEach((p, i) => writeFileSync(join(out, shardName(i, n)), Buffer.concat(serializeSafetensors(p))));
  edit?.(index);
  writeFileSync(join(out, SHARD_INDEX), JSON.stringify(index));
  return out;
}

t.test('fromSources with ArrayBuffers gives fromDir logits bit for bit', async (t) => {
  const m = HookedTransformer.fromSources(
    { 'config.json': configText, 'model.safetensors': stBytes.slice().buffer },
    opts,
  );
  t.ok(same(m.forward(tokens).f32(), reference), 'logits equal');
});

t.test('fromSourcesAsync with a Blob and fromUrl over HTTP give the same logits', async (t) => {
  const blob = new Blob([stBytes]);
  const seen: number[] = [];
  const m = await HookedTransformer.fromSourcesAsync(
    { 'config.json': new Blob([configText]), 'model.safetensors': blob },
    { ...opts, onDownload: (f, d) => f === 'model.safetensors' && seen.push(d) },
  );
  t.ok(same(m.forward(tokens).f32(), reference), 'Blob: logits equal');
  t.equal(seen.at(-1), stBytes.length, 'progress reaches the file size');
  const direct = await blobSource(blob, 'x').read(8, 4);
  t.same(Array.from(direct), Array.from(stBytes.subarray(8, 12)), 'blobSource reads the range asked for');

  const shardDir = sharded('http-sharded', 3);
  const server = createServer((req, res) => {
    const name = decodeURIComponent(req.url!.split('/').pop()!);
    const base = req.url!.startsWith('/sharded/') ? shardDir : req.url!.startsWith('/single/') ? dir : null;
    try {
      const body = readFileSync(join(base ?? '/nonexistent', name));
      res.writeHead(200, { 'content-length': body.length }).end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  try {
    const u = await HookedTransformer.fromUrl(`http://127.0.0.1:${port}/single/`, opts);
    t.ok(same(u.forward(tokens).f32(), reference), 'URL: logits equal');
    const s = await HookedTransformer.fromUrl(`http://127.0.0.1:${port}/sharded`, opts);
    t.ok(same(s.forward(tokens).f32(), reference), 'URL, sharded: logits equal');
    await t.rejects(
      HookedTransformer.fromUrl(`http://127.0.0.1:${port}/nowhere`),
      { code: 'EFETCH', message: /nowhere\/config\.json: HTTP 404/ },
      'a missing URL names it',
    );
  } finally {
    server.close();
  }
});

t.test('sharded checkpoints (model.safetensors.index.json) load like the single file', async (t) => {
  const d = sharded('sharded', 3);
  t.ok(same(HookedTransformer.fromDir(d, opts).forward(tokens).f32(), reference), 'logits equal');
});

t.test('a bad shard or index is a TypelensError naming the file', async (t) => {
  const missing = sharded('missing-shard', 2);
  rmSync(join(missing, 'model-00002-of-00002.safetensors'));
  t.throws(() => HookedTransformer.fromDir(missing), /model-00002-of-00002\.safetensors/, 'missing shard named');

  const wrong = sharded('wrong-place', 2, (ix) => {
    ix.weight_map['wte.weight'] = 'model-00002-of-00002.safetensors';
    ix.weight_map['wpe.weight'] = 'model-00001-of-00002.safetensors';
  });
  t.throws(
    () => HookedTransformer.fromDir(wrong),
    /index\.json: lists tensor "(wte|wpe)\.weight" in .*model-0000[12]-of-00002\.safetensors, which does not hold it/,
    'a tensor the index misplaces is named with its shard',
  );

  const escape = sharded('escape', 2, (ix) => {
    ix.weight_map['wte.weight'] = '../single/model.safetensors';
  });
  t.throws(() => HookedTransformer.fromDir(escape), /is not a file name beside the index/, 'no path out of the folder');

  const badHeader = sharded('bad-header', 2);
  writeFileSync(join(badHeader, 'model-00001-of-00002.safetensors'), Buffer.from([255, 0, 0, 0, 0, 0, 0, 0, 1]));
  t.throws(
    () => HookedTransformer.fromDir(badHeader),
    { name: 'TypelensError', message: /model-00001-of-00002\.safetensors: header length 255 is larger/ },
    'a bad shard header names the shard',
  );

  const noTensor = sharded('no-tensor', 2, (ix) => {
    delete ix.weight_map['ln_f.bias'];
  });
  // the tensor is still in its shard's header: only the index is silent about it, so it loads
  t.ok(HookedTransformer.fromDir(noTensor), 'a tensor the index omits is still found in its shard');

  const badJson = sharded('bad-json', 2);
  writeFileSync(join(badJson, SHARD_INDEX), '{"weight_map": ');
  t.throws(() => HookedTransformer.fromDir(badJson), /index\.json: not valid JSON/, 'bad index JSON named');
});

t.test('a file over 2 GiB is read by ranges (sparse file: header, then one tensor at the end)', async (t) => {
  const path = join(tmp, 'big.safetensors');
  const pad = 2 ** 31; // one 2 GiB tensor first: the file is past readFileSync's limit
  let h = JSON.stringify({
    pad: { dtype: 'F32', shape: [pad / 4], data_offsets: [0, pad] },
    tail: { dtype: 'F32', shape: [4], data_offsets: [pad, pad + 16] },
  });
  h += ' '.repeat((8 - ((8 + h.length) % 8)) % 8);
  const fd = openSync(path, 'w');
  try {
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(h.length));
    writeSync(fd, len, 0, 8, 0);
    writeSync(fd, Buffer.from(h), 0, h.length, 8);
    ftruncateSync(fd, 8 + h.length + pad); // the pad tensor stays a hole: no 2 GiB written
    writeSync(fd, Buffer.from(new Float32Array([1, 2, 3, 4]).buffer), 0, 16, 8 + h.length + pad);
  } finally {
    closeSync(fd);
  }
  t.throws(() => readFileSync(path), /2 GiB|greater than|too large/i, 'readFileSync cannot read it');
  const f = openSafetensors(path);
  try {
    t.equal(f.entries.get('pad')!.end, pad, 'header parsed (2 GiB tensor listed)');
    t.same(Array.from(new Float32Array(f.bytes('tail').buffer)), [1, 2, 3, 4], 'tensor past 2 GiB read');
  } finally {
    f.close();
  }
});

t.test('the browser file module refuses paths with one line pointing at byte sources', async (t) => {
  t.throws(() => browserFiles.fileSource('/x/model.safetensors'), { code: 'EPLATFORM' }, 'fileSource refused');
  t.throws(() => browserFiles.readTextFile('/x/config.json'), /fromSources/, 'message names the way out');
  const src = memorySource(new Uint8Array([1, 2, 3]), 'm');
  t.throws(() => src.read(2, 5), /m: read of 5 bytes at 2 runs past the end/, 'a read past the end names the source');
});
