/** Every error typelens throws on purpose is a TypelensError: callers can tell our clear
 * messages about bad input apart from bugs. `code` is a stable machine-readable tag. */
export class TypelensError extends Error {
  constructor(
    message: string,
    readonly code: string = 'EINVAL',
  ) {
    super(message);
    this.name = 'TypelensError';
  }
}

export function check(cond: unknown, message: string | (() => string), code = 'EINVAL'): asserts cond {
  if (!cond) throw new TypelensError(typeof message === 'function' ? message() : message, code);
}
