// `typelens serve` as a security boundary: only GET/HEAD, only the page's assets and the model folder,
// every traversal spelling a 404, the isolation headers on every answer, the right content types,
// and a process that survives a burst of malformed requests and abrupt disconnects.
// Requests go over raw sockets: fetch and http.request would normalise the very paths under test.
import t from 'tap';
import fc from 'fast-check';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join, normalize, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { mapPath, startServer, type LensServer } from '../src/cli/serve.js';

const SECRET = 'SECRET-DO-NOT-SERVE';
const tmp = mkdtempSync(join(tmpdir(), 'typelens-serve-'));
const page = join(tmp, 'page');
const model = join(tmp, 'model');
mkdirSync(join(page, 'assets'), { recursive: true });
mkdirSync(model);
writeFileSync(join(tmp, 'secret.json'), JSON.stringify({ s: SECRET }));
writeFileSync(join(tmp, 'secret.js'), `// ${SECRET}`);
writeFileSync(join(page, 'index.html'), '<!doctype html><title>lens</title>');
writeFileSync(join(page, 'app.js'), 'console.log(1)');
writeFileSync(join(page, 'assets', 'kernels.wasm'), Buffer.from([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0]));
writeFileSync(join(page, 'assets', 'data.json'), '{"ok":true}');
writeFileSync(join(page, 'notes.txt'), 'an extension the page does not use');
writeFileSync(join(page, '.hidden.json'), JSON.stringify({ s: SECRET }));
symlinkSync(join(tmp, 'secret.json'), join(page, 'link.json')); // a file link out of the root
symlinkSync(tmp, join(page, 'up')); // a folder link out of the root
symlinkSync(join(page, 'app.js'), join(page, 'alias.js')); // a link that stays inside: served
writeFileSync(join(model, 'config.json'), '{"n_layer":1}');
// big enough that a reader who disconnects mid-body leaves the server mid-stream
const big = Buffer.alloc(8 * 2 ** 20, 7);
writeFileSync(join(model, 'model.safetensors'), big);
symlinkSync(join(tmp, 'secret.json'), join(model, 'escape.json'));

interface Raw {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** Send bytes on a fresh socket, read until the server closes it. */
function raw(port: number, bytes: string | Buffer, timeoutMs = 5000): Promise<Raw> {
  return new Promise((ok, fail) => {
    const s = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    s.setTimeout(timeoutMs, () => {
      s.destroy();
      fail(new Error(`no answer to ${JSON.stringify(String(bytes).slice(0, 80))}`));
    });
    s.on('data', (c) => chunks.push(c));
    s.on('error', fail);
    s.on('close', () => {
      const text = Buffer.concat(chunks).toString('latin1');
      const [head, ...rest] = text.split('\r\n\r\n');
      const [line, ...hs] = head.split('\r\n');
      const headers: Record<string, string> = {};
      for (const h of hs) {
        const i = h.indexOf(':');
        if (i > 0) headers[h.slice(0, i).toLowerCase()] = h.slice(i + 1).trim();
      }
      ok({ status: Number(line.split(' ')[1]), headers, body: rest.join('\r\n\r\n') });
    });
    s.write(bytes);
  });
}

const get = (port: number, path: string, method = 'GET') =>
  raw(port, `${method} ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`);

let srv: LensServer;
let port: number;
t.before(async () => {
  srv = await startServer({ pageDir: page, modelDir: model, port: 0 });
  port = Number(new URL(srv.url).port);
});
t.teardown(() => srv.close());

t.test('binds 127.0.0.1 by default and prints a URL there', async (t) => {
  t.match(srv.url, /^http:\/\/127\.0\.0\.1:\d+\/$/, 'URL on the loopback address');
  t.equal((srv.server.address() as { address: string }).address, '127.0.0.1', 'listening on 127.0.0.1 only');
});

t.test('every traversal spelling is a 404 that reveals nothing', async (t) => {
  const cases = [
    '/../secret.json',
    '/assets/../../secret.json',
    '/..%2fsecret.json',
    '/%2e%2e/secret.json',
    '/%2E%2E%2Fsecret.json',
    '/.%2e/secret.json',
    '/%252e%252e/secret.json', // double-encoded
    '/%252e%252e%252fsecret.json',
    '/..\\secret.json',
    '/..%5csecret.json',
    '/%2e%2e%5csecret.json',
    '/assets%2f..%2f..%2fsecret.json',
    '/%c0%ae%c0%ae/secret.json', // overlong UTF-8 dots
    `/${join(tmp, 'secret.json')}`, // absolute path as a relative one
    `//${join(tmp, 'secret.json').slice(1)}`, // absolute path with a leading //
    `/${encodeURIComponent(join(tmp, 'secret.json'))}`, // absolute path, slashes encoded
    '/index.html%00.json', // NUL
    '/app.js%00',
    '/link.json', // symlinked file out of the root
    '/up/secret.json', // symlinked folder out of the root
    '/up/secret.js',
    '/model/escape.json', // symlink out of the model folder
    '/model/../secret.json',
    '/model/%2e%2e/secret.json',
    '/model/..%2fsecret.json',
    '/.hidden.json', // dotfile
    '/notes.txt', // not a type the page serves
    '/assets', // a folder
    '/assets/',
    '/nothing.js',
  ];
  for (const p of cases) {
    const r = await get(port, p);
    t.equal(r.status, 404, `GET ${p} → 404`);
    t.notMatch(r.body, SECRET, `GET ${p} reveals nothing`);
  }
  // the absolute-form request target (a proxy request) is not a path of ours
  const abs = await raw(
    port,
    `GET http://127.0.0.1:${port}/../secret.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
  );
  t.equal(abs.status, 404, 'absolute-form request target → 404');
  // a raw NUL byte in the request line never reaches the handler: the parser refuses it
  const nul = await raw(port, `GET /app.js\0 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
  t.ok(nul.status >= 400 && nul.status < 500 && !nul.body.includes(SECRET), `raw NUL → ${nul.status}`);
});

t.test('what is served: the page, its assets, a link that stays inside, the model folder', async (t) => {
  for (const [p, status] of [
    ['/', 200],
    ['/index.html', 200],
    ['/app.js?v=1', 200],
    ['/alias.js', 200],
    ['/assets/kernels.wasm', 200],
    ['/model/config.json', 200],
  ] as const)
    t.equal((await get(port, p)).status, status, `GET ${p} → ${status}`);
  t.equal((await get(port, '/app.js')).body, 'console.log(1)', 'the file itself');
  t.same(
    JSON.parse((await get(port, '/lens-config.json')).body),
    { model: 'model/' },
    'the page is told where the model is',
  );
});

t.test('only GET and HEAD: everything else is 405 with Allow', async (t) => {
  for (const m of ['POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'TRACE', 'PROPFIND']) {
    const r = await get(port, '/index.html', m);
    t.equal(r.status, 405, `${m} → 405`);
    t.equal(r.headers.allow, 'GET, HEAD', `${m}: Allow names GET and HEAD`);
  }
  const head = await get(port, '/app.js', 'HEAD');
  t.equal(head.status, 200, 'HEAD → 200');
  t.equal(head.headers['content-length'], '14', 'HEAD gives the length');
  t.equal(head.body, '', 'HEAD has no body');
});

t.test('content types and the isolation headers on every answer', async (t) => {
  const types: [string, RegExp][] = [
    ['/', /^text\/html/],
    ['/app.js', /^text\/javascript/],
    ['/assets/kernels.wasm', /^application\/wasm$/],
    ['/assets/data.json', /^application\/json/],
    ['/model/config.json', /^application\/json/],
    ['/model/model.safetensors', /^application\/octet-stream$/],
  ];
  for (const [p, re] of types) t.match((await get(port, p, 'HEAD')).headers['content-type'], re, `${p}: content type`);
  for (const [p, m] of [
    ['/', 'GET'],
    ['/nothing.js', 'GET'],
    ['/', 'POST'],
  ]) {
    const h = (await get(port, p, m)).headers;
    t.equal(h['cross-origin-opener-policy'], 'same-origin', `${m} ${p}: COOP`);
    t.equal(h['cross-origin-embedder-policy'], 'require-corp', `${m} ${p}: COEP`);
    t.equal(h['cross-origin-resource-policy'], 'same-origin', `${m} ${p}: CORP`);
    t.equal(h['x-content-type-options'], 'nosniff', `${m} ${p}: nosniff`);
  }
  const plain = await startServer({ pageDir: page, port: 0, isolate: false });
  try {
    const h = (await get(Number(new URL(plain.url).port), '/')).headers;
    t.equal(h['cross-origin-opener-policy'], undefined, 'isolate: false drops COOP');
    t.equal(h['cross-origin-embedder-policy'], undefined, 'isolate: false drops COEP');
    // with no model folder, /model/ serves nothing
    t.equal((await get(Number(new URL(plain.url).port), '/model/config.json')).status, 404, 'no model → 404');
    const cfg = await get(Number(new URL(plain.url).port), '/lens-config.json');
    t.same(JSON.parse(cfg.body), { model: null }, 'and the page is told there is none');
  } finally {
    await plain.close();
  }
});

t.test('mapPath never names a path outside its root (property)', async (t) => {
  const piece = fc.constantFrom(
    '..',
    '.',
    '%2e',
    '%2E',
    '%252e',
    '/',
    '%2f',
    '%2F',
    '%252f',
    '\\',
    '%5c',
    '%00',
    '\0',
    'a',
    'b.js',
    'model',
    '%',
    '%c0%ae',
    '//',
    '?',
    '#',
  );
  fc.assert(
    fc.property(fc.array(piece, { maxLength: 12 }), (parts) => {
      const m = mapPath('/' + parts.join(''), true);
      if (!m) return true;
      const root = sep + 'root';
      const full = normalize(join(root, m.rel));
      return full.startsWith(root + sep) && !m.rel.includes('\0') && !m.rel.includes('\\');
    }),
    { numRuns: 5000 },
  );
  t.pass('no mapped path leaves its root in 5000 random paths');
});

const bin = fileURLToPath(new URL('../../bin/typelens.js', import.meta.url));

t.test('the serve process survives malformed requests and abrupt disconnects', async (t) => {
  // the real CLI in its own process, so a crash would show as an exit, not a test error
  const child = spawn(process.execPath, [bin, 'serve', '--port', '0', '--model', model], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stderr.on('data', (c) => (err += c));
  const url = await new Promise<string>((ok, fail) => {
    child.stdout.on('data', (c) => {
      out += c;
      const m = /http:\/\/127\.0\.0\.1:\d+\//.exec(out);
      if (m) ok(m[0]);
    });
    child.on('exit', (code) => fail(new Error(`serve exited ${code}: ${err}`)));
  });
  let exited: number | null | undefined;
  child.on('exit', (code) => (exited = code));
  const p = Number(new URL(url).port);
  t.match(out, /model: .*served under \/model\//, 'says which model it serves');

  const garbage = [
    'GARBAGE\r\n\r\n',
    '\x00\x01\x02\x03\xff\xfe\r\n\r\n',
    'GET\r\n\r\n',
    'GET / HTTP/9.9\r\n\r\n',
    'GET / HTTP/1.1\r\nHost: x\r\nBad Header Name: y\r\n\r\n',
    'GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n',
    'GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
    'POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n',
    `GET /${'a'.repeat(20000)} HTTP/1.1\r\nHost: x\r\n\r\n`,
    `GET / HTTP/1.1\r\nHost: x\r\nX: ${'b'.repeat(20000)}\r\n\r\n`,
    'GET /%%%% HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
    'GET /\u2028 HTTP/1.1\r\nHost: x\r\n\r\n',
  ];
  const bad = garbage.map((g) =>
    raw(p, Buffer.from(g, 'latin1')).then(
      (r) => r.status,
      () => -1,
    ),
  );
  // abrupt disconnects: mid request line, mid headers, and mid body of the 8 MB checkpoint
  const abrupt = [
    'GE',
    'GET /model/model.safetensors HTTP/1.1\r\nHost',
    'GET /model/model.safetensors HTTP/1.1\r\nHost: x\r\n\r\n',
  ].flatMap((g) =>
    Array.from(
      { length: 10 },
      (_, i) =>
        new Promise<void>((ok) => {
          const s = connect(p, '127.0.0.1', () => {
            s.write(g);
            setTimeout(() => {
              s.resetAndDestroy();
              ok();
            }, i * 3);
          });
          s.on('error', () => ok());
        }),
    ),
  );
  const statuses = await Promise.all(bad);
  await Promise.all(abrupt);
  t.ok(
    statuses.every((s) => s === -1 || (s >= 400 && s < 500)),
    `malformed requests get 4xx or a closed socket (${statuses.join(' ')})`,
  );
  t.equal(exited, undefined, 'the process is still running');
  const good = await get(p, '/model/config.json');
  t.equal(good.status, 200, 'the next good request answers 200');
  t.equal(good.body, '{"n_layer":1}', 'with the file');
  const whole = await new Promise<number>((ok) => {
    const s = connect(p, '127.0.0.1');
    let n = 0;
    s.on('data', (c) => (n += c.length));
    s.on('close', () => ok(n));
    s.write('GET /model/model.safetensors HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  });
  t.ok(whole > big.length, 'and streams the whole checkpoint after the disconnects');
  child.kill('SIGTERM');
  const code = await new Promise<number | null>((ok) =>
    exited !== undefined ? ok(exited) : child.on('exit', (c) => ok(c)),
  );
  t.equal(code, 0, 'SIGTERM stops it cleanly');
  t.equal(err, '', 'nothing on stderr');
});

t.test('serve: usage errors are one line', async (t) => {
  const { spawnSync } = await import('node:child_process');
  const r = spawnSync(process.execPath, [bin, 'serve', '--port', 'x'], { encoding: 'utf8' });
  t.equal(r.status, 2, 'bad --port is a usage error');
  t.match(r.stderr, /--port must be a non-negative integer/);
  const m = spawnSync(process.execPath, [bin, 'serve', '--model', join(tmp, 'nope')], { encoding: 'utf8' });
  t.equal(m.status, 1, 'a missing --model folder is an error');
  t.match(m.stderr, /does not exist/);
  const both = spawnSync(process.execPath, [bin, 'serve', '--model', model, '--no-model'], { encoding: 'utf8' });
  t.equal(both.status, 2, '--model with --no-model is a usage error');
});
