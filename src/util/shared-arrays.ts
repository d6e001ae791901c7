/*
 * Typed arrays carved out of ONE SharedArrayBuffer, so that a structure of them (a Tables
 * generation, a classifier table) crosses to worker threads by postMessage without being copied:
 * structured clone shares a SharedArrayBuffer instead of copying it (measured here: a 4 MB
 * Int32Array clones in ~18 ms, the same on shared memory in ~0.2 ms; but many small shared buffers
 * clone slower than small plain ones, hence one buffer per structure).
 *
 * `inSharedMemory(build)` runs `build` twice: once with an allocator that only counts bytes (and
 * hands out empty arrays), then with one that hands out views of a buffer of exactly that size.
 * `build` must request the same arrays in the same order both times and do nothing else with them
 * but `fill` (the caller fills them afterwards). Such memory is written once, before it is
 * published, and only read afterwards.
 */

export interface ArrayAllocator {
  i32(n: number): Int32Array;
  u32(n: number): Uint32Array;
  u16(n: number): Uint16Array;
  u8(n: number): Uint8Array;
  f64(n: number): Float64Array;
}

type View = Int32Array | Uint32Array | Uint16Array | Uint8Array | Float64Array;
type ViewOf = new (buffer: ArrayBufferLike, byteOffset: number, length: number) => View;

const EMPTY = new ArrayBuffer(0);

function allocator(buffer: SharedArrayBuffer | null): ArrayAllocator & { bytes: number } {
  const a = {
    bytes: 0,
    take<V extends View>(View: ViewOf, size: number, n: number): V {
      a.bytes = Math.ceil(a.bytes / size) * size;
      const at = a.bytes;
      a.bytes += n * size;
      return (buffer ? new View(buffer, at, n) : new View(EMPTY, 0, 0)) as V;
    },
    i32: (n: number) => a.take<Int32Array>(Int32Array, 4, n),
    u32: (n: number) => a.take<Uint32Array>(Uint32Array, 4, n),
    u16: (n: number) => a.take<Uint16Array>(Uint16Array, 2, n),
    u8: (n: number) => a.take<Uint8Array>(Uint8Array, 1, n),
    f64: (n: number) => a.take<Float64Array>(Float64Array, 8, n),
  };
  return a;
}

export function inSharedMemory<T>(build: (a: ArrayAllocator) => T): T {
  const count = allocator(null);
  build(count);
  return build(allocator(new SharedArrayBuffer(Math.max(8, count.bytes))));
}
