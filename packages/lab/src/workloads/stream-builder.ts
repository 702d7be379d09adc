/**
 * `StreamBuilder`: grows one warp's access stream in typed arrays (address, size, flags) without
 * one object per access, coalescing a repeat of the previous access to the same line, as a warp's
 * memory coalescer merges its threads' accesses to one segment.
 *
 * @see device-emu compute.ts (AccessStream), UVMSmart's access trace (one line per coalesced access)
 */
import { ACCESS_READ, ACCESS_WRITE, type AccessStream } from "@hmmkit/device-emu";

/** Page size accesses must not cross. */
const PAGE = 4096;

/**
 * A growable access stream.
 *
 * Context: synchronous; not shared between warps.
 */
export class StreamBuilder {
  private addrs: Float64Array;
  private sizes: Uint16Array;
  private fl: Uint8Array;
  private n = 0;
  private lastLine = -1;
  private lastFlags = 0;
  private lastSize = 0;

  /**
   * @param capacity - initial capacity (grows by doubling).
   */
  constructor(capacity = 1024) {
    const c = Math.max(16, capacity);
    this.addrs = new Float64Array(c);
    this.sizes = new Uint16Array(c);
    this.fl = new Uint8Array(c);
  }

  /** Accesses pushed so far. */
  get length(): number {
    return this.n;
  }

  /**
   * Append one access; an access that crosses a 4 KiB page is split in two, and a repeat of the
   * previous access (same line, size and flags) is dropped.
   * @param addr - virtual address (integer).
   * @param size - bytes (1..4096).
   * @param flags - ACCESS_* flags.
   */
  push(addr: number, size: number, flags: number): void {
    const off = addr % PAGE;
    if (off + size > PAGE) {
      const first = PAGE - off;
      this.push(addr, first, flags);
      this.push(addr + first, size - first, flags);
      return;
    }
    const line = Math.floor(addr / size);
    if (line === this.lastLine && flags === this.lastFlags && size === this.lastSize) return;
    this.lastLine = line;
    this.lastFlags = flags;
    this.lastSize = size;
    if (this.n === this.addrs.length) this.grow();
    this.addrs[this.n] = addr;
    this.sizes[this.n] = size;
    this.fl[this.n] = flags;
    this.n++;
  }

  /**
   * Append a read of `size` bytes at `addr`.
   * @param addr - address. @param size - bytes.
   */
  read(addr: number, size: number): void {
    this.push(addr, size, ACCESS_READ);
  }

  /**
   * Append a write of `size` bytes at `addr`.
   * @param addr - address. @param size - bytes.
   */
  write(addr: number, size: number): void {
    this.push(addr, size, ACCESS_WRITE);
  }

  /**
   * The stream built so far (views over the builder's arrays, trimmed to its length).
   * @returns an AccessStream for the compute engine or the CPU replayer.
   */
  build(): AccessStream {
    return {
      addr: this.addrs.subarray(0, this.n),
      size: this.sizes.subarray(0, this.n),
      flags: this.fl.subarray(0, this.n),
      count: this.n,
    };
  }

  private grow(): void {
    const c = this.addrs.length * 2;
    const a = new Float64Array(c);
    a.set(this.addrs);
    const s = new Uint16Array(c);
    s.set(this.sizes);
    const f = new Uint8Array(c);
    f.set(this.fl);
    this.addrs = a;
    this.sizes = s;
    this.fl = f;
  }
}

/**
 * Concatenate streams in order (a CPU task runs what the warps ran, one after the other).
 * @param streams - the streams.
 * @returns one stream.
 */
export function concatStreams(streams: readonly AccessStream[]): AccessStream {
  let n = 0;
  for (const s of streams) n += s.count ?? s.addr.length;
  const addr = new Float64Array(n);
  const size = new Uint16Array(n);
  const flags = new Uint8Array(n);
  let o = 0;
  for (const s of streams) {
    const c = s.count ?? s.addr.length;
    addr.set(s.addr.subarray(0, c), o);
    size.set(s.size.subarray(0, c), o);
    flags.set(s.flags.subarray(0, c), o);
    o += c;
  }
  return { addr, size, flags, count: n };
}
