/**
 * `typelens serve`: the static file server of the lens page. It is a security boundary, small on
 * purpose: the page computes everything in the browser, so the server only hands out files.
 *
 * Why hand-written on node:http rather than sirv or serve-static (both read, 2026-11):
 * - the whole job is an allowlist (the page's built assets and the files of one model folder)
 *   and five content types; what a library adds beyond that (ranges, ETags, precompressed
 *   variants, directory indexes, SPA fallbacks) is attack surface the page does not use;
 * - neither library keeps symlinks inside the root: sirv (production mode) walks the root at start
 *   with statSync, so a link to /etc/passwd inside the root is served and a link loop overflows the
 *   stack; serve-static/send follows links with no containment check. Both would need the same
 *   realpath check written here anyway;
 * - sirv 3.0.2 passes `Range: bytes=9-1` straight to fs.createReadStream, which throws inside the
 *   request listener (a one-request crash of the whole process); send answers `..` with 403 and
 *   decoding errors with 400 where this boundary wants one uniform 404 that reveals nothing.
 * So each request goes: method (GET/HEAD, else 405) → the raw path checked before and after one
 * decode (traversal, encoded or double-encoded dots and slashes, backslashes, NUL, dotfiles) → a
 * fixed mapping onto one of two roots → realpath inside that root's realpath, a regular file, a
 * known extension → streamed with the cross-origin isolation headers. Anything else is 404.
 */
import { createReadStream, existsSync, realpathSync, statSync } from 'node:fs';
import { realpath, stat } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { extname, join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TypelensError } from '../errors.js';
import { existingModelDir, int, parse, UsageError } from './args.js';

/** The URL prefix the model folder is served under (the page reads MODEL_PREFIX + 'config.json'). */
export const MODEL_PREFIX = '/model/';

/**
 * The page's settings file. The build writes it with `"model": null`; `serve` answers it itself,
 * naming MODEL_PREFIX when it was given a model. On a static host, edit the file to point at a
 * checkpoint folder (config.json + model.safetensors) that the host serves.
 */
export const PAGE_CONFIG = '/lens-config.json';

/** The content types served; a file with any other extension is not served at all. */
export const CONTENT_TYPES: Readonly<Record<string, string>> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.wasm': 'application/wasm',
  '.safetensors': 'application/octet-stream',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
  '.ico': 'image/x-icon',
};

/**
 * Headers that make the page cross-origin isolated (SharedArrayBuffer, so Web Workers can share one
 * WebAssembly.Memory) and keep its resources its own. CORP is set too so the page's own
 * subresources satisfy COEP require-corp under any embedding.
 */
export const ISOLATION_HEADERS: Readonly<Record<string, string>> = {
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
  'Cross-Origin-Resource-Policy': 'same-origin',
};

const COMMON_HEADERS: Readonly<Record<string, string>> = {
  'X-Content-Type-Options': 'nosniff',
  'Cache-Control': 'no-cache',
  'Referrer-Policy': 'no-referrer',
};

export interface ServeOptions {
  /** the built page (index.html and its assets); default dist/web/ next to this module */
  pageDir?: string;
  /** the checkpoint folder served under /model/ (config.json + model.safetensors); none: the page uses a random model */
  modelDir?: string;
  /** default 127.0.0.1: only this machine can connect */
  host?: string;
  /** default 8080; 0 picks a free port */
  port?: number;
  /** default true; false drops COOP/COEP/CORP (the page then runs on one thread) */
  isolate?: boolean;
  /** a note the page shows above everything about the model (e.g. what the embedded model is) */
  banner?: string;
}

export interface LensServer {
  server: Server;
  url: string;
  close(): Promise<void>;
}

/** dist/web/, where `npm run build` puts the page (this module is dist/src/cli/serve.js). */
export const defaultPageDir = (): string => fileURLToPath(new URL('../../web/', import.meta.url));

/**
 * The file a request path names, or undefined (→ 404). Pure string work, no file system: the
 * realpath containment check follows in `resolveFile`.
 */
export function mapPath(rawUrl: string, hasModel: boolean): { root: 'page' | 'model'; rel: string } | undefined {
  // origin-form only ("/x"); absolute-form ("http://h/x"), authority-form and "*" are not ours
  if (!rawUrl.startsWith('/') || rawUrl.startsWith('//')) return undefined;
  const raw = rawUrl.split(/[?#]/, 1)[0];
  // backslashes and NUL, literal or encoded, never name a file here
  if (/[\\\0]|%5c|%00/i.test(raw)) return undefined;
  let path: string;
  try {
    path = decodeURIComponent(raw);
  } catch {
    return undefined; // malformed escapes
  }
  // a '%' left after one decode is double encoding (%252e%252e): refused, not decoded again
  if (path.includes('%') || /[\\\0]/.test(path)) return undefined;
  if (path === '/') return { root: 'page', rel: 'index.html' };
  const segs = path.slice(1).split('/');
  // empty segments (a//b, trailing /), ".", ".." and dotfiles are all refused
  if (segs.some((s) => s === '' || s.startsWith('.'))) return undefined;
  if (path.startsWith(MODEL_PREFIX)) {
    // the model folder is flat: config.json, model.safetensors (and whatever else sits beside them)
    if (!hasModel || segs.length !== 2) return undefined;
    return { root: 'model', rel: segs[1] };
  }
  return { root: 'page', rel: segs.join('/') };
}

const inside = (root: string, p: string): boolean => p.startsWith(root.endsWith(sep) ? root : root + sep);

/** The real path of a servable regular file inside `root` (symlinks resolved and contained), or undefined. */
async function resolveFile(root: string, rel: string): Promise<{ path: string; size: number } | undefined> {
  if (!(extname(rel).toLowerCase() in CONTENT_TYPES)) return undefined;
  try {
    const real = await realpath(join(root, rel));
    if (!inside(root, real)) return undefined;
    const st = await stat(real);
    return st.isFile() ? { path: real, size: st.size } : undefined;
  } catch {
    return undefined;
  }
}

function answer(res: ServerResponse, code: number, headers: Record<string, string>, body: string): void {
  res.writeHead(code, {
    ...headers,
    'Content-Type': 'text/plain; charset=utf-8',
    'Content-Length': Buffer.byteLength(body),
  });
  res.end(res.req.method === 'HEAD' ? undefined : body);
}

/** Start the server; resolves once it listens. */
export async function startServer(o: ServeOptions = {}): Promise<LensServer> {
  const pageDir = resolve(o.pageDir ?? defaultPageDir());
  if (!existsSync(join(pageDir, 'index.html')))
    throw new TypelensError(
      `the lens page is not built (${pageDir}/index.html is missing): run npm run build`,
      'ENOENT',
    );
  const pageRoot = realpathSync(pageDir);
  const modelRoot = o.modelDir !== undefined ? realpathSync(resolve(o.modelDir)) : undefined;
  if (modelRoot !== undefined && !statSync(modelRoot).isDirectory())
    throw new TypelensError(`--model: ${o.modelDir} is not a folder`, 'ENOTDIR');
  const base = { ...COMMON_HEADERS, ...(o.isolate === false ? {} : ISOLATION_HEADERS) };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      answer(res, 405, { ...base, Allow: 'GET, HEAD' }, 'method not allowed\n');
      return;
    }
    if ((req.url ?? '').split(/[?#]/, 1)[0] === PAGE_CONFIG) {
      const body = JSON.stringify({
        model: modelRoot === undefined ? null : MODEL_PREFIX.slice(1),
        ...(o.banner ? { banner: o.banner } : {}),
      });
      res.writeHead(200, {
        ...base,
        'Content-Type': CONTENT_TYPES['.json'],
        'Content-Length': Buffer.byteLength(body),
      });
      res.end(req.method === 'HEAD' ? undefined : body);
      return;
    }
    const where = mapPath(req.url ?? '', modelRoot !== undefined);
    const file = where && (await resolveFile(where.root === 'model' ? modelRoot! : pageRoot, where.rel));
    if (!file) {
      answer(res, 404, base, 'not found\n');
      return;
    }
    res.writeHead(200, {
      ...base,
      'Content-Type': CONTENT_TYPES[extname(file.path).toLowerCase()],
      'Content-Length': file.size,
    });
    if (req.method === 'HEAD') {
      res.end();
      return;
    }
    const stream = createReadStream(file.path);
    // a client that goes away mid-file: stop reading; a read error mid-file: cut the connection
    res.on('close', () => stream.destroy());
    stream.on('error', () => res.destroy());
    stream.pipe(res);
  };

  const server = createServer({ requestTimeout: 60_000, headersTimeout: 20_000 }, (req, res) => {
    handle(req, res).catch(() => {
      if (!res.headersSent) answer(res, 500, base, 'internal error\n');
      else res.destroy();
    });
  });
  // unparsable requests (bad request lines, oversized headers, garbage): a 400 if the socket still
  // takes writes, then close it; never an exception on the server
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    if (err.code !== 'ECONNRESET' && socket.writable && !socket.writableEnded)
      socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
    else socket.destroy();
  });
  const sockets = new Set<Socket>();
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });

  await new Promise<void>((ok, fail) => {
    server.once('error', fail);
    server.listen(o.port ?? 8080, o.host ?? '127.0.0.1', () => {
      server.off('error', fail);
      ok();
    });
  });
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  return {
    server,
    url: `http://${host}:${addr.port}/`,
    close: () =>
      new Promise<void>((ok) => {
        server.close(() => ok());
        for (const s of sockets) s.destroy();
      }),
  };
}

/**
 * The checkpoint `serve` offers when --model is not given: the embedded model typelens trained
 * (docs/embedded-model.md), in ./weights/typelens-ioi or beside this package, as `typelens demo` finds it.
 */
export function defaultModelDir(): string | undefined {
  const pkg = fileURLToPath(new URL('../../../', import.meta.url));
  return [resolve('weights', 'typelens-ioi'), join(pkg, 'weights', 'typelens-ioi')].find((d) =>
    existsSync(join(d, 'model.safetensors')),
  );
}

const EMBEDDED_BANNER =
  'This is typelens-ioi, the small GPT-2-layout model typelens trained itself on synthetic IOI sentences and ' +
  'repeated random tokens (recipe and evaluation: docs/embedded-model.md). It is NOT GPT-2. ' +
  'Drop another checkpoint on the page, or run `npx typelens serve --model DIR`.';

export const SERVE_USAGE = `  serve [--port 8080] [--model DIR | --no-model] [--host 127.0.0.1] [--no-isolation]
      the lens page: the demo's analysis computed in the browser (default model: weights/typelens-ioi if present, else a random one)`;

/** `typelens serve`: runs until SIGINT/SIGTERM. */
export async function runServe(argv: string[]): Promise<number> {
  const { values: v, positionals } = parse(argv, {
    port: { type: 'string' },
    model: { type: 'string' },
    host: { type: 'string' },
    'no-isolation': { type: 'boolean' },
    'no-model': { type: 'boolean' },
  });
  if (positionals.length) throw new UsageError(`serve takes no arguments, got "${positionals[0]}"`);
  const port = int(v.port, '--port', 8080);
  if (port > 65535) throw new UsageError(`--port must be at most 65535, got ${port}`);
  let modelDir = v.model as string | undefined;
  let banner: string | undefined;
  if (modelDir !== undefined && v['no-model']) throw new UsageError('give --model DIR or --no-model, not both');
  if (modelDir !== undefined) existingModelDir(modelDir);
  else if (!v['no-model'] && (modelDir = defaultModelDir())) banner = EMBEDDED_BANNER;
  const host = (v.host as string | undefined) ?? '127.0.0.1';
  const isolate = !v['no-isolation'];
  const s = await startServer({ port, host, modelDir, isolate, banner }).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'EADDRINUSE') throw new TypelensError(`--port ${port}: already in use on ${host}`, 'EADDRINUSE');
    if (e.code === 'EADDRNOTAVAIL' || e.code === 'ENOTFOUND')
      throw new TypelensError(`--host ${host}: not an address of this machine`, e.code);
    throw e;
  });
  // one write, so a reader that waits for the URL also has the rest
  const lines = [
    `typelens lens page: ${s.url}`,
    `  model: ${modelDir ? `${resolve(modelDir)} (served under ${MODEL_PREFIX})` : 'none given: the page uses a random one'}`,
    isolate
      ? '  cross-origin isolated (COOP/COEP): patching sweeps run on Web Workers'
      : '  not isolated (--no-isolation): the page runs on one thread',
  ];
  if (!['127.0.0.1', '::1', 'localhost'].includes(host))
    lines.push(`  note: bound to ${host}, so other machines can reach it; the default is 127.0.0.1`);
  console.log(lines.join('\n'));
  await new Promise<void>((ok) => {
    const stop = () => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      void s.close().then(ok);
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
  return 0;
}
