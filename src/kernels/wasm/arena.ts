import { TypelensError } from '../../errors.js';

const PAGE = 65536;
const ALIGN = 64;

/**
 * First-fit allocator over one shared WebAssembly.Memory. Weights live here for their model's
 * lifetime; freed blocks are coalesced so loading and disposing models does not leak.
 */
export class Arena {
  private top = ALIGN; // keep address 0 unused
  private free: { ptr: number; size: number }[] = [];
  private sizes = new Map<number, number>();

  constructor(readonly memory: WebAssembly.Memory) {}

  alloc(bytes: number): number {
    const size = Math.ceil(Math.max(bytes, 1) / ALIGN) * ALIGN;
    const i = this.free.findIndex((b) => b.size >= size);
    let ptr: number;
    if (i >= 0) {
      const b = this.free[i];
      ptr = b.ptr;
      if (b.size === size) this.free.splice(i, 1);
      else {
        b.ptr += size;
        b.size -= size;
      }
    } else {
      ptr = this.top;
      const need = ptr + size;
      const have = this.memory.buffer.byteLength;
      if (need > have) {
        try {
          this.memory.grow(Math.ceil((need - have) / PAGE));
        } catch {
          throw new TypelensError(
            `WebAssembly memory exhausted: cannot allocate ${(size / 2 ** 20).toFixed(1)} MiB ` +
              `(${(have / 2 ** 20).toFixed(0)} MiB in use of the 4 GiB a wasm32 memory can address)`,
            'ENOMEM',
          );
        }
      }
      this.top = need;
    }
    this.sizes.set(ptr, size);
    return ptr;
  }

  release(ptr: number): void {
    const size = this.sizes.get(ptr);
    if (size === undefined) return;
    this.sizes.delete(ptr);
    this.free.push({ ptr, size });
    this.free.sort((a, b) => a.ptr - b.ptr);
    const merged: { ptr: number; size: number }[] = [];
    for (const b of this.free) {
      const last = merged[merged.length - 1];
      if (last && last.ptr + last.size === b.ptr) last.size += b.size;
      else merged.push({ ...b });
    }
    // a free block at the top goes back to the bump pointer
    const last = merged[merged.length - 1];
    if (last && last.ptr + last.size === this.top) {
      this.top = last.ptr;
      merged.pop();
    }
    this.free = merged;
  }

  get bytesInUse(): number {
    let s = 0;
    for (const v of this.sizes.values()) s += v;
    return s;
  }
}
