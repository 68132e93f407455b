import { readFileSync } from 'node:fs';

let cached: string | undefined;

/** typelens's version from its package.json (read once; 'unknown' when it cannot be found). */
export function typelensVersion(): string {
  if (cached === undefined) {
    cached = 'unknown';
    // src/util/ and dist/src/util/ are two and three folders below the package root
    for (const up of ['../../package.json', '../../../package.json']) {
      try {
        const pkg = JSON.parse(readFileSync(new URL(up, import.meta.url), 'utf8')) as {
          name?: string;
          version?: string;
        };
        if (pkg.name === 'typelens' && typeof pkg.version === 'string') {
          cached = pkg.version;
          break;
        }
      } catch {
        /* not there */
      }
    }
  }
  return cached;
}
