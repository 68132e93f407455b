import { platform } from '../platform/index.js';

let cached: string | undefined;

/** typelens's version from its package.json (read once; 'unknown' when it cannot be found). */
export function typelensVersion(): string {
  cached ??= platform.packageVersion() ?? 'unknown';
  return cached;
}
