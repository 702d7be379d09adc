/**
 * VRAM: a GPU's device memory as a physical region of the machine, with real bytes.
 *
 * Theory of operation. At device creation the VRAM is added to core's {@link PageState} as a
 * region of kind `"device"` (`cpuAccessible` false): its pfns are global, above system RAM, and
 * its contents are real bytes in core's {@link Contents} (lazily allocated, zero until written).
 * The CPU cannot load or store them (`Contents.cpuRead` reports it as a bug); only the device (its
 * compute engine and copy engines) and peers over a link reach them. A driver later hands this pfn
 * range to the kernel with `memremapPages` (MEMORY_DEVICE_PRIVATE), exactly as nouveau_dmem.c
 * exposes its VRAM chunks, so `basePfn`/`npages` are public.
 *
 * Hardware addresses VRAM by physical offset (`addr = (pfn - basePfn) * PAGE_SIZE`), as the copy
 * engine's VID aperture does; {@link Vram.pfnToAddr} and {@link Vram.addrToPfn} convert.
 *
 * Allocation of VRAM frames is the driver's job (its own allocator, as nouveau's chunk list or
 * UVM's PMM). {@link Vram.claim}/{@link Vram.release} are only a bookkeeping aid for drivers and
 * leak guards: a per-frame in-use bit, with double-claim and double-release reported as bugs.
 *
 * Per-frame state is typed arrays indexed by `pfn - basePfn`: `poison` (an uncorrectable ECC
 * error was injected; device reads of the frame fail) and `inUse`.
 *
 * @see drivers/gpu/drm/nouveau/nouveau_dmem.c (nouveau_dmem_chunk_alloc, nouveau_dmem_page_addr),
 *      NVIDIA uvm_pmm_gpu.c (GPU physical memory manager), mm/memremap.c
 */

import { PAGE_SIZE, type PhysContext, type PhysRegion } from "@hmmkit/core/phys";
import { BugError, einval } from "@hmmkit/core/sim";

/**
 * One GPU's VRAM.
 *
 * Context: synchronous; no method awaits.
 * @see nouveau_dmem.c, uvm_pmm_gpu.c
 */
export class Vram {
  /** The physical region (kind `"device"`, not CPU-accessible). */
  readonly region: PhysRegion;
  /** Per-frame ECC poison flag (1 = poisoned). Index: pfn - basePfn. */
  readonly poison: Uint8Array;
  /** Per-frame in-use flag kept by {@link Vram.claim}/{@link Vram.release}. */
  readonly inUse: Uint8Array;
  /** Number of frames currently claimed. */
  framesInUse = 0;
  /** Number of frames currently poisoned. */
  framesPoisoned = 0;

  /**
   * Add the VRAM region to the machine.
   * @param ctx - the machine's physical-memory services.
   * @param gpu - GPU index (names the region `gpu<i>-vram`).
   * @param npages - size in 4 KiB pages, a positive multiple of 512.
   * @throws HmmError EINVAL from `PageState.addRegion` if `npages` is not a multiple of 512.
   * @see memremap_pages (the driver's later step), nouveau_dmem_chunk_alloc
   */
  constructor(
    private readonly ctx: PhysContext,
    readonly gpu: number,
    npages: number,
  ) {
    this.region = ctx.pages.addRegion("device", npages, -1, `gpu${gpu}-vram`);
    this.region.cpuAccessible = false;
    this.poison = new Uint8Array(npages);
    this.inUse = new Uint8Array(npages);
  }

  /** First pfn of the VRAM. */
  get basePfn(): number {
    return this.region.basePfn;
  }

  /** Number of 4 KiB frames. */
  get npages(): number {
    return this.region.npages;
  }

  /** Size in bytes. */
  get bytes(): number {
    return this.region.npages * PAGE_SIZE;
  }

  /**
   * Whether `pfn` is one of this VRAM's frames.
   * @param pfn - any pfn.
   * @returns true when basePfn <= pfn < basePfn + npages.
   */
  contains(pfn: number): boolean {
    return pfn >= this.region.basePfn && pfn < this.region.basePfn + this.region.npages && Number.isInteger(pfn);
  }

  /**
   * The VID-aperture physical address of a frame.
   * @param pfn - a VRAM pfn.
   * @returns (pfn - basePfn) * 4096.
   * @throws HmmError EINVAL if `pfn` is not in this VRAM.
   * @see nouveau_dmem_page_addr
   */
  pfnToAddr(pfn: number): number {
    if (!this.contains(pfn)) einval("pfn", `a pfn of gpu${this.gpu}'s VRAM [${this.basePfn}, ${this.basePfn + this.npages}), got ${pfn}`);
    return (pfn - this.region.basePfn) * PAGE_SIZE;
  }

  /**
   * The frame holding a VID-aperture physical address.
   * @param addr - byte offset into VRAM, 0 <= addr < bytes.
   * @returns its pfn.
   * @throws HmmError EINVAL if `addr` is out of range.
   */
  addrToPfn(addr: number): number {
    if (!Number.isInteger(addr) || addr < 0 || addr >= this.bytes) einval("addr", `a VRAM offset in [0, ${this.bytes}), got ${addr}`);
    return this.region.basePfn + Math.floor(addr / PAGE_SIZE);
  }

  /**
   * Record that `n` frames from `pfn` are in use (bookkeeping for drivers and leak guards).
   * @param pfn - first frame.
   * @param n - number of frames (default 1).
   * @throws HmmError EINVAL if the range leaves the VRAM.
   * @throws BugError `vram-double-claim` if a frame is already claimed (nothing is changed).
   * Context: synchronous.
   */
  claim(pfn: number, n = 1): void {
    const off = this.range(pfn, n);
    for (let i = 0; i < n; i++) {
      if (this.inUse[off + i] !== 0) throw new BugError("vram-double-claim", `gpu${this.gpu} VRAM frame ${pfn + i} claimed twice`);
    }
    this.inUse.fill(1, off, off + n);
    this.framesInUse += n;
  }

  /**
   * Record that `n` frames from `pfn` are free again.
   * @param pfn - first frame.
   * @param n - number of frames (default 1).
   * @throws HmmError EINVAL if the range leaves the VRAM.
   * @throws BugError `vram-double-release` if a frame is not claimed (nothing is changed).
   * Context: synchronous.
   */
  release(pfn: number, n = 1): void {
    const off = this.range(pfn, n);
    for (let i = 0; i < n; i++) {
      if (this.inUse[off + i] === 0) throw new BugError("vram-double-release", `gpu${this.gpu} VRAM frame ${pfn + i} released while free`);
    }
    this.inUse.fill(0, off, off + n);
    this.framesInUse -= n;
  }

  /**
   * Whether a frame carries an uncorrectable ECC error.
   * @param pfn - a VRAM pfn.
   * @returns true when poisoned.
   */
  isPoisoned(pfn: number): boolean {
    return this.contains(pfn) && this.poison[pfn - this.region.basePfn] === 1;
  }

  /**
   * Clear a frame's poison (the driver retired and scrubbed it; as `unpoison_memory` for tests).
   * The frame's bytes are zeroed.
   * @param pfn - a VRAM pfn.
   * @throws HmmError EINVAL if `pfn` is not in this VRAM.
   * @see mm/memory-failure.c unpoison_memory
   */
  unpoison(pfn: number): void {
    const off = this.range(pfn, 1);
    if (this.poison[off] === 1) {
      this.poison[off] = 0;
      this.framesPoisoned--;
      this.ctx.contents.clearPages(pfn, 1);
    }
  }

  /** @internal Set the poison bit; returns false if it was already set. */
  setPoison(pfn: number): boolean {
    const off = this.range(pfn, 1);
    if (this.poison[off] === 1) return false;
    this.poison[off] = 1;
    this.framesPoisoned++;
    return true;
  }

  private range(pfn: number, n: number): number {
    if (!Number.isInteger(n) || n < 1) einval("n", `a positive number of frames, got ${n}`);
    if (!this.contains(pfn) || !this.contains(pfn + n - 1)) {
      einval("pfn", `frames [${pfn}, ${pfn + n}) inside gpu${this.gpu}'s VRAM [${this.basePfn}, ${this.basePfn + this.npages})`);
    }
    return pfn - this.region.basePfn;
  }
}
