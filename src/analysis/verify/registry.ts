/** The check registry: `verify` runs the registered checks in registration order. */
import type { VerifyCheck } from './types.js';

// ---------------------------------------------------------------- the registry

export const REGISTRY: VerifyCheck[] = [];

/** Add a check (or replace the one with the same id: the gradient checks replace their placeholders). */
export function registerCheck(c: VerifyCheck): void {
  const i = REGISTRY.findIndex((r) => r.id === c.id);
  if (i >= 0) REGISTRY[i] = c;
  else REGISTRY.push(c);
}
export function unregisterCheck(id: string): void {
  const i = REGISTRY.findIndex((r) => r.id === id);
  if (i >= 0) REGISTRY.splice(i, 1);
}
/** The registered checks, in the order they run. */
export function listChecks(): readonly VerifyCheck[] {
  return REGISTRY;
}
