/**
 * Whether a buffer is shared memory. A browser page that is not cross-origin isolated has no
 * SharedArrayBuffer global at all, where a bare `instanceof SharedArrayBuffer` would throw.
 */
export function isSharedBuffer(b: ArrayBufferLike): boolean {
  return typeof SharedArrayBuffer !== 'undefined' && b instanceof SharedArrayBuffer;
}
