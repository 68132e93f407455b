// fetch-weights against a local HTTP server (there is no internet here): pinned revision in the
// URL, size and sha256 verified, resume after an interruption, restart when the server ignores
// Range, and never a file under its final name unless it checked out.
import t from 'tap';
import { createHash } from 'node:crypto';
import { createServer, IncomingMessage, ServerResponse } from 'node:http';
import { AddressInfo } from 'node:net';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fetchWeights, CHECKPOINTS, PinnedCheckpoint, HookedTransformer } from '../src/index.js';

const fixture = fileURLToPath(new URL('../../test/fixtures/tiny', import.meta.url));
const files: Record<string, Buffer> = {
  'config.json': readFileSync(join(fixture, 'config.json')),
  'model.safetensors': readFileSync(join(fixture, 'model.safetensors')),
};
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const ckpt: PinnedCheckpoint = {
  repo: 'test-org/tiny',
  revision: 'abc123',
  files: [
    { name: 'config.json', sha256: sha(files['config.json']) },
    { name: 'model.safetensors', size: files['model.safetensors'].length, sha256: sha(files['model.safetensors']) },
  ],
};

type Mode = 'ok' | 'broken' | 'truncate' | 'stall' | 'corrupt' | 'no-range' | 'redirect';
interface Server {
  url: string;
  mode: Mode;
  requests: { path: string; range?: string }[];
  close(): Promise<void>;
}

async function serve(): Promise<Server> {
  const state: Server = { url: '', mode: 'ok', requests: [], close: async () => {} };
  const srv = createServer((req: IncomingMessage, res: ServerResponse) => {
    state.requests.push({ path: req.url ?? '', range: req.headers.range });
    // HuggingFace answers /resolve/ with a redirect to its CDN: do the same in 'redirect' mode
    if (state.mode === 'redirect' && req.url?.startsWith('/test-org/')) {
      res.writeHead(302, { location: req.url.replace('/test-org/tiny/resolve/abc123/', '/cdn/') }).end();
      return;
    }
    const cdn = req.url?.match(/^\/cdn\/(.+)$/);
    const m = cdn ?? req.url?.match(/^\/test-org\/tiny\/resolve\/abc123\/(.+)$/);
    const body = m ? files[m[1]] : undefined;
    if (!body) {
      res.writeHead(404).end('not found');
      return;
    }
    if (state.mode === 'broken') {
      res.writeHead(500).end('server error');
      return;
    }
    let data = state.mode === 'corrupt' && m![1] === 'model.safetensors' ? Buffer.from(body).fill(7, 100, 200) : body;
    let status = 200;
    const headers: Record<string, string | number> = { 'content-type': 'application/octet-stream' };
    const r = req.headers.range?.match(/^bytes=(\d+)-$/);
    if (r && state.mode !== 'no-range') {
      const from = Number(r[1]);
      if (from >= data.length) {
        res.writeHead(416).end();
        return;
      }
      data = data.subarray(from);
      status = 206;
      headers['content-range'] = `bytes ${from}-${body.length - 1}/${body.length}`;
    }
    headers['content-length'] = data.length;
    res.writeHead(status, headers);
    if ((state.mode === 'truncate' || state.mode === 'stall') && m![1] === 'model.safetensors' && !r) {
      res.write(data.subarray(0, data.length >> 1));
      if (state.mode === 'truncate') setTimeout(() => res.destroy(), 20);
      return; // stall: never finish
    }
    res.end(data);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  state.url = `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
  state.close = () =>
    new Promise<void>((r) => {
      srv.closeAllConnections();
      srv.close(() => r());
    });
  return state;
}

const fresh = () => mkdtempSync(join(tmpdir(), 'typelens-fetch-'));
const finalNames = (dir: string) =>
  readdirSync(dir)
    .filter((n) => !n.endsWith('.partial'))
    .sort();

t.test('downloads the pinned revision, verifies it, and the result loads', async (t) => {
  const s = await serve();
  const dir = fresh();
  const seen: number[] = [];
  await fetchWeights(ckpt, {
    dir,
    baseUrl: s.url + '/',
    onProgress: (f, done) => {
      if (f === 'model.safetensors') seen.push(done);
    },
  });
  t.same(finalNames(dir), ['config.json', 'model.safetensors', 'typelens-source.json']);
  t.ok(
    s.requests.every((r) => r.path.includes('/resolve/abc123/')),
    'URLs pin the revision',
  );
  t.equal(seen.at(-1), files['model.safetensors'].length, 'progress reaches the full size');
  t.ok(HookedTransformer.fromDir(dir).cfg.n_layers > 0, 'the checkpoint loads');
  // a second run finds the verified files and downloads nothing
  s.requests.length = 0;
  await fetchWeights(ckpt, { dir, baseUrl: s.url });
  t.same(s.requests, [], 'already complete: no requests');
  await s.close();
});

t.test('redirects (as HuggingFace sends to its CDN) are followed, resume included', async (t) => {
  const s = await serve();
  const dir = fresh();
  s.mode = 'truncate';
  await t.rejects(fetchWeights(ckpt, { dir, baseUrl: s.url }));
  s.mode = 'redirect';
  s.requests.length = 0;
  await fetchWeights(ckpt, { dir, baseUrl: s.url });
  t.same(
    readFileSync(join(dir, 'model.safetensors')),
    files['model.safetensors'],
    'byte-identical after a redirected resume',
  );
  t.ok(
    s.requests.some((r) => r.path.startsWith('/cdn/') && /^bytes=\d+-$/.test(r.range ?? '')),
    'the Range header survived the redirect',
  );
  await s.close();
});

t.test('a truncated download fails clearly, keeps only the partial file, and resumes with Range', async (t) => {
  const s = await serve();
  const dir = fresh();
  s.mode = 'truncate';
  await t.rejects(
    fetchWeights(ckpt, { dir, baseUrl: s.url }),
    /model\.safetensors: got \d+ bytes, expected \d+ \(truncated; run again to resume\)|interrupted after \d+ bytes/,
  );
  t.notOk(existsSync(join(dir, 'model.safetensors')), 'no file under the final name');
  t.ok(existsSync(join(dir, 'model.safetensors.partial')), 'partial kept for resuming');
  s.mode = 'ok';
  s.requests.length = 0;
  await fetchWeights(ckpt, { dir, baseUrl: s.url });
  const r = s.requests.find((q) => q.path.endsWith('model.safetensors'));
  t.match(r?.range, /^bytes=\d+-$/, 'resumed with a Range request');
  t.same(readFileSync(join(dir, 'model.safetensors')), files['model.safetensors'], 'resumed file is byte-identical');
  t.notOk(existsSync(join(dir, 'model.safetensors.partial')));
  await s.close();
});

t.test('a stalled server times out; a server that ignores Range makes the download restart cleanly', async (t) => {
  const s = await serve();
  const dir = fresh();
  s.mode = 'stall';
  await t.rejects(
    fetchWeights(ckpt, { dir, baseUrl: s.url, idleTimeoutMs: 300 }),
    /interrupted after \d+ bytes \(no data for 300 ms\); run the same command again to resume/,
  );
  t.notOk(existsSync(join(dir, 'model.safetensors')));
  s.mode = 'no-range';
  await fetchWeights(ckpt, { dir, baseUrl: s.url });
  t.same(
    readFileSync(join(dir, 'model.safetensors')),
    files['model.safetensors'],
    'whole file rewritten, not appended',
  );
  await s.close();
});

t.test('HTTP errors and hash mismatches are clear errors and leave no checkpoint behind', async (t) => {
  const s = await serve();
  const dir = fresh();
  s.mode = 'broken';
  await t.rejects(
    fetchWeights(ckpt, { dir, baseUrl: s.url }),
    /cannot download http:\/\/127\.0\.0\.1:\d+\/test-org\/tiny\/resolve\/abc123\/config\.json: HTTP 500/,
  );
  s.mode = 'corrupt';
  await t.rejects(
    fetchWeights(ckpt, { dir, baseUrl: s.url }),
    /model\.safetensors: sha256 [0-9a-f]{64} does not match the pinned [0-9a-f]{64}; the download was discarded/,
  );
  t.same(finalNames(dir), ['config.json'], 'only the verified config.json; no model, no partial');
  t.same(
    readdirSync(dir).filter((n) => n.endsWith('.partial')),
    [],
  );
  // a wrong file already in place is replaced, not trusted
  writeFileSync(join(dir, 'model.safetensors'), 'garbage');
  s.mode = 'ok';
  await fetchWeights(ckpt, { dir, baseUrl: s.url });
  t.same(readFileSync(join(dir, 'model.safetensors')), files['model.safetensors']);
  await t.rejects(
    fetchWeights(ckpt, { dir: fresh(), baseUrl: 'http://127.0.0.1:1' }),
    /cannot download http:\/\/127\.0\.0\.1:1\//,
  );
  await s.close();
});

t.test('typelens fetch-weights gpt2-small: pinned URL, size check, usage errors', async (t) => {
  t.equal(CHECKPOINTS['gpt2-small'].revision, '607a30d783dfa663caf39e06633721c8d4cfcd7e');
  t.equal(CHECKPOINTS['gpt2-small'].files[1].size, 548105171);
  const s = await serve();
  const bin = fileURLToPath(new URL('../../bin/typelens.js', import.meta.url));
  const run = (...a: string[]) =>
    new Promise<{ status: number | null; stderr: string }>((resolve) => {
      // async spawn: the server lives in this process
      import('node:child_process').then(({ spawn }) => {
        const p = spawn(process.execPath, [bin, ...a]);
        let stderr = '';
        p.stderr.on('data', (d) => {
          stderr += d;
        });
        p.on('close', (status) => resolve({ status, stderr }));
      });
    });
  const dir = fresh();
  const r = await run('fetch-weights', 'gpt2-small', '--dir', dir, '--base-url', s.url);
  t.equal(r.status, 1);
  t.match(
    r.stderr,
    /cannot download http:\/\/127\.0\.0\.1:\d+\/openai-community\/gpt2\/resolve\/607a30d783dfa663caf39e06633721c8d4cfcd7e\/config\.json: HTTP 404/,
  );
  t.same(readdirSync(dir), [], 'nothing written');
  t.equal(spawnSync(process.execPath, [bin, 'fetch-weights', 'gpt9']).status, 2);
  t.equal(spawnSync(process.execPath, [bin, 'fetch-weights']).status, 2);
  await s.close();
});
