/**
 * Page contents: real bytes, allocated lazily in 1 MiB slabs.
 *
 * Each run of 256 pfns shares one slab, allocated the first time any page in it is written; a page
 * whose slab does not exist reads as zeros, so a machine with 16 GiB of emulated RAM costs no
 * memory for contents until pages are written. Copies between pages are `TypedArray.set` over
 * slab views: real bytes move, one call per contiguous run.
 *
 * Two access paths exist. The unchecked one (`read`, `write`, `copyPages`, `clearPages`) is the
 * hardware's and the core's own (DMA engines, migration copies by a driver). The checked one
 * (`cpuRead`, `cpuWrite`) is the CPU's load/store path: it reports, as a bug, any access to memory
 * the CPU cannot address (device-private VRAM), which in a real system would be a machine check.
 *
 * @see include/linux/highmem.h (copy_highpage, clear_highpage, memcpy_to_page)
 */
import { BugError } from "../sim/errors";
import { PAGE_SIZE, type PageState } from "./page-state";

const SLAB_SHIFT = 8;
const SLAB_PAGES = 1 << SLAB_SHIFT;
const SLAB_BYTES = SLAB_PAGES * PAGE_SIZE;
/**
 * Longest single host memmove a page copy issues: 127 pages (508 KiB). Copies of whole slabs
 * (1 MiB) measured about 20% slower on an AMD EPYC host than the same bytes moved in smaller
 * pieces, because glibc's memmove leaves `rep movsb` for a vector loop at
 * `rep_movsb_stop_threshold`, which is the L2 size on AMD (1 MiB there, 512 KiB on Zen 2/3).
 * Below it, longer pieces are faster: 2 MiB folios copied in 508 KiB pieces took about 4% less
 * time than in 256 KiB ones (median of 15 interleaved runs on that host). The kernel's folio_copy
 * goes page by page; 127 pages keeps the per-call cost negligible and every piece under the
 * threshold on common hosts.
 */
const COPY_CHUNK_PAGES = 127;

/**
 * Real bytes of every page of a machine.
 * @see struct page's memory, reached through page_address / kmap_local_page
 */
export class Contents {
  private slabs: (Uint8Array | undefined)[] = [];
  /** Slabs allocated so far (each 1 MiB). */
  slabCount = 0;

  /** @param pages - the machine's page state (for region checks). */
  constructor(private readonly pages: PageState) {}

  /**
   * Bytes allocated for contents.
   * @returns slabCount × 1 MiB.
   */
  get bytesAllocated(): number {
    return this.slabCount * SLAB_BYTES;
  }

  /**
   * Whether the page has ever had storage allocated (false ⇒ reads as zeros).
   * @param pfn - page.
   * @returns true if backed by a slab.
   */
  isBacked(pfn: number): boolean {
    return this.slabs[pfn >>> SLAB_SHIFT] !== undefined;
  }

  /**
   * A writable view of `n` contiguous pages within one slab, allocating the slab.
   * @param pfn - first page.
   * @param n - pages, all in the same 256-page slab.
   * @returns a Uint8Array aliasing the pages' bytes.
   */
  view(pfn: number, n = 1): Uint8Array {
    const s = this.slab(pfn);
    const off = (pfn & (SLAB_PAGES - 1)) * PAGE_SIZE;
    return s.subarray(off, off + n * PAGE_SIZE);
  }

  /**
   * Copy bytes out of a page (unchecked path).
   * @param pfn - source page.
   * @param offset - byte offset in the page.
   * @param dst - destination; `offset + dst.length <= PAGE_SIZE`.
   */
  read(pfn: number, offset: number, dst: Uint8Array): void {
    const s = this.slabs[pfn >>> SLAB_SHIFT];
    if (s === undefined) {
      dst.fill(0);
      return;
    }
    const off = (pfn & (SLAB_PAGES - 1)) * PAGE_SIZE + offset;
    dst.set(s.subarray(off, off + dst.length));
  }

  /**
   * Copy bytes into a page (unchecked path).
   * @param pfn - destination page.
   * @param offset - byte offset in the page.
   * @param src - bytes; `offset + src.length <= PAGE_SIZE`.
   */
  write(pfn: number, offset: number, src: Uint8Array): void {
    const s = this.slab(pfn);
    s.set(src, (pfn & (SLAB_PAGES - 1)) * PAGE_SIZE + offset);
  }

  /**
   * The CPU's load path: like {@link Contents.read}, for CPU-addressable memory only.
   * @throws BugError `cpu-access-device-private` if the page is not CPU-addressable.
   */
  cpuRead(pfn: number, offset: number, dst: Uint8Array): void {
    this.checkCpu(pfn);
    this.read(pfn, offset, dst);
  }

  /**
   * The CPU's store path: like {@link Contents.write}, for CPU-addressable memory only.
   * @throws BugError `cpu-access-device-private` if the page is not CPU-addressable.
   */
  cpuWrite(pfn: number, offset: number, src: Uint8Array): void {
    this.checkCpu(pfn);
    this.write(pfn, offset, src);
  }

  /**
   * Report a CPU access to memory the CPU cannot address.
   * @param pfn - page about to be accessed by the CPU.
   * @throws BugError when the page's region is not CPU-accessible.
   */
  checkCpu(pfn: number): void {
    const r = this.pages.regionOf(pfn);
    if (r === undefined || !r.cpuAccessible) {
      throw new BugError("cpu-access-device-private", `CPU access to pfn ${pfn}${r ? ` in ${r.name}` : ""}, which the CPU cannot address`);
    }
  }

  /**
   * Copy `n` whole pages (unchecked path). Source and destination runs may cross slabs; the two
   * ranges must not overlap (distinct pages, as for copy_highpage: the copy runs forward in pieces).
   * @param dstPfn - first destination page.
   * @param srcPfn - first source page.
   * @param n - number of pages.
   * @see copy_highpage, folio_copy
   */
  copyPages(dstPfn: number, srcPfn: number, n: number): void {
    if (n === 1) {
      const ss = this.slabs[srcPfn >>> SLAB_SHIFT];
      if (ss === undefined) this.clearPages(dstPfn, 1);
      else {
        const so = (srcPfn & (SLAB_PAGES - 1)) * PAGE_SIZE;
        this.slab(dstPfn).set(ss.subarray(so, so + PAGE_SIZE), (dstPfn & (SLAB_PAGES - 1)) * PAGE_SIZE);
      }
      return;
    }
    let i = 0;
    while (i < n) {
      const d = dstPfn + i;
      const s = srcPfn + i;
      const run = Math.min(n - i, COPY_CHUNK_PAGES, SLAB_PAGES - (d & (SLAB_PAGES - 1)), SLAB_PAGES - (s & (SLAB_PAGES - 1)));
      const ss = this.slabs[s >>> SLAB_SHIFT];
      if (ss === undefined) {
        this.clearPages(d, run);
      } else {
        const so = (s & (SLAB_PAGES - 1)) * PAGE_SIZE;
        this.slab(d).set(ss.subarray(so, so + run * PAGE_SIZE), (d & (SLAB_PAGES - 1)) * PAGE_SIZE);
      }
      i += run;
    }
  }

  /**
   * Zero `n` pages (no slab is allocated for pages that are already unbacked).
   * @param pfn - first page.
   * @param n - number of pages.
   * @see clear_highpage
   */
  clearPages(pfn: number, n: number): void {
    let i = 0;
    while (i < n) {
      const p = pfn + i;
      const run = Math.min(n - i, SLAB_PAGES - (p & (SLAB_PAGES - 1)));
      const s = this.slabs[p >>> SLAB_SHIFT];
      if (s !== undefined) {
        const o = (p & (SLAB_PAGES - 1)) * PAGE_SIZE;
        s.fill(0, o, o + run * PAGE_SIZE);
      }
      i += run;
    }
  }

  /**
   * Whether every byte of the page is zero.
   * @param pfn - page.
   * @returns true for unbacked or all-zero pages.
   */
  isZero(pfn: number): boolean {
    const s = this.slabs[pfn >>> SLAB_SHIFT];
    if (s === undefined) return true;
    const o = (pfn & (SLAB_PAGES - 1)) * PAGE_SIZE;
    const w = new Uint32Array(s.buffer, s.byteOffset + o, PAGE_SIZE / 4);
    for (let i = 0; i < w.length; i++) if (w[i] !== 0) return false;
    return true;
  }

  /**
   * If every 8-byte word of the page holds the same value, that value's first word; else undefined.
   * @param pfn - page.
   * @returns the repeated 32-bit pattern (both halves equal), or undefined.
   * @see zswap_is_page_same_filled in mm/zswap.c
   */
  sameFilled(pfn: number): number | undefined {
    const s = this.slabs[pfn >>> SLAB_SHIFT];
    if (s === undefined) return 0;
    const o = (pfn & (SLAB_PAGES - 1)) * PAGE_SIZE;
    const w = new Uint32Array(s.buffer, s.byteOffset + o, PAGE_SIZE / 4);
    const v = w[0] as number;
    for (let i = 1; i < w.length; i++) if (w[i] !== v) return undefined;
    return v;
  }

  private slab(pfn: number): Uint8Array {
    const i = pfn >>> SLAB_SHIFT;
    let s = this.slabs[i];
    if (s === undefined) {
      s = new Uint8Array(SLAB_BYTES);
      while (this.slabs.length < i) this.slabs.push(undefined);
      this.slabs[i] = s;
      this.slabCount++;
    }
    return s;
  }
}
