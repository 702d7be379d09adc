/**
 * The IOMMU: per-device DMA mapping of system pages, with permissions, that faults instead of
 * letting a bad access through.
 *
 * Theory of operation. Each GPU has its own IOMMU domain. A driver maps system pages with
 * {@link Iommu.dmaMapPage} (one page, or a physically contiguous run) and receives a DMA address
 * (IOVA) that it programs into copy descriptors (SYS aperture) or GPU page-table entries. The
 * domain is a flat page table over IOVA page numbers in typed arrays: `pfnPlus1` (0 = unmapped),
 * `prot` (IOMMU_READ | IOMMU_WRITE, from the DMA direction as `dma_info_to_prot` derives it),
 * `runLen` (pages in the mapping that starts here, 0 elsewhere) and `inflight` (DMA transfers
 * that have translated the page and not yet completed).
 *
 * A device access translates each IOVA page: unmapped, or lacking the permission (a device write
 * to a DMA_TO_DEVICE mapping, a read of a DMA_FROM_DEVICE one), raises an `io_page_fault` event
 * and fails the access; it never succeeds silently. Driver misbehaviour is a bug, as the kernel's
 * DMA-API debugging (kernel/dma/debug.c) reports it: unmapping an address that is not mapped
 * (double unmap), unmapping with a different size than mapped, or unmapping while a transfer that
 * uses the page is still in flight.
 *
 * IOVA allocation: IOVAs start at {@link IOVA_BASE}; freed ranges are reused exactly by size, LIFO,
 * before the allocator extends the space, so the addresses a run hands out are deterministic.
 *
 * @see include/linux/dma-mapping.h (dma_map_page, dma_unmap_page), include/linux/dma-direction.h,
 *      drivers/iommu/dma-iommu.c (dma_info_to_prot, iommu_dma_map_page), include/linux/iommu.h
 *      (IOMMU_READ, IOMMU_WRITE, report_iommu_fault), kernel/dma/debug.c
 */

import { PAGE_SIZE, type PageState } from "@hmmkit/core/phys";
import type { TraceBus } from "@hmmkit/core/sim";
import { BugError, einval } from "@hmmkit/core/sim";
import type { DeviceEvents, IommuFaultReason } from "./events";

/** DMA direction, with the values of enum dma_data_direction. @see include/linux/dma-direction.h */
export const DMA_BIDIRECTIONAL = 0;
/** The device reads the memory (IOMMU_READ). @see DMA_TO_DEVICE */
export const DMA_TO_DEVICE = 1;
/** The device writes the memory (IOMMU_WRITE). @see DMA_FROM_DEVICE */
export const DMA_FROM_DEVICE = 2;
/** A DMA direction value. @see enum dma_data_direction */
export type DmaDirection = typeof DMA_BIDIRECTIONAL | typeof DMA_TO_DEVICE | typeof DMA_FROM_DEVICE;

/** Permission bit: the device may read. @see IOMMU_READ in include/linux/iommu.h */
export const IOMMU_READ = 1;
/** Permission bit: the device may write. @see IOMMU_WRITE in include/linux/iommu.h */
export const IOMMU_WRITE = 2;

/** First IOVA handed out (IOVA 0 is never valid, so a zeroed descriptor always faults). */
export const IOVA_BASE = 0x100000;

/**
 * One device's IOMMU domain.
 *
 * Context: synchronous; no method awaits. Callers hold nothing.
 * @see drivers/iommu/dma-iommu.c, include/linux/dma-mapping.h
 */
export class Iommu {
  /** Per IOVA page: mapped system pfn + 1 (0 = unmapped). */
  pfnPlus1 = new Float64Array(1024);
  /** Per IOVA page: IOMMU_READ | IOMMU_WRITE. */
  prot = new Uint8Array(1024);
  /** Per IOVA page: length in pages of the mapping starting here (0 if not a start). */
  runLen = new Uint32Array(1024);
  /** Per IOVA page: in-flight DMA transfers that translated it. */
  inflight = new Int32Array(1024);
  /** Pages currently mapped. */
  mappedPages = 0;
  /** IOMMU faults raised (refused accesses). */
  faults = 0;
  private top = 0;
  private freeBySize = new Map<number, number[]>();

  /**
   * @param gpu - the device's index (for events and messages).
   * @param pages - the machine's page state (to check that mapped pfns are system RAM).
   * @param bus - the platform's trace bus.
   */
  constructor(
    readonly gpu: number,
    private readonly pages: PageState,
    private readonly bus: TraceBus<DeviceEvents>,
  ) {}

  /**
   * Map `npages` physically contiguous system pages for DMA by this device.
   * @param pfn - first system-RAM pfn.
   * @param dir - DMA_TO_DEVICE (device reads), DMA_FROM_DEVICE (device writes) or DMA_BIDIRECTIONAL.
   * @param npages - pages in the run (default 1; a THP is 512).
   * @returns the DMA address (IOVA) of the first page; the run is IOVA-contiguous.
   * @throws HmmError EINVAL if `pfn` is not system RAM (device memory is never DMA-mapped through
   *   the IOMMU; peers use the PEER aperture), `npages` < 1 or `dir` is not a direction.
   * Context: synchronous.
   * @see dma_map_page, iommu_dma_map_page, dma_info_to_prot
   */
  dmaMapPage(pfn: number, dir: DmaDirection, npages = 1): number {
    if (dir !== DMA_BIDIRECTIONAL && dir !== DMA_TO_DEVICE && dir !== DMA_FROM_DEVICE) {
      einval("dir", `DMA_BIDIRECTIONAL (0), DMA_TO_DEVICE (1) or DMA_FROM_DEVICE (2), got ${String(dir)}`);
    }
    if (!Number.isInteger(npages) || npages < 1) einval("npages", `a positive integer, got ${npages}`);
    this.checkRam(pfn, npages);
    const prot = dir === DMA_TO_DEVICE ? IOMMU_READ : dir === DMA_FROM_DEVICE ? IOMMU_WRITE : IOMMU_READ | IOMMU_WRITE;
    const idx = this.allocIova(npages);
    for (let i = 0; i < npages; i++) {
      this.pfnPlus1[idx + i] = pfn + i + 1;
      this.prot[idx + i] = prot;
    }
    this.runLen[idx] = npages;
    this.mappedPages += npages;
    return IOVA_BASE + idx * PAGE_SIZE;
  }

  /**
   * Map many single pages (a scatter list of order-0 pages) in one call.
   * @param pfns - system-RAM pfns.
   * @param dir - the DMA direction for all of them.
   * @param out - receives one DMA address per page (allocated when omitted).
   * @returns `out`.
   * @throws HmmError EINVAL as {@link Iommu.dmaMapPage}, checked for every page before any is
   *   mapped (nothing is mapped on error).
   * Context: synchronous.
   * @see dma_map_sg (without merging)
   */
  dmaMapPages(pfns: ArrayLike<number>, dir: DmaDirection, out: Float64Array = new Float64Array(pfns.length)): Float64Array {
    if (out.length < pfns.length) einval("out", `room for ${pfns.length} addresses, got ${out.length}`);
    for (let i = 0; i < pfns.length; i++) this.checkRam(pfns[i] as number, 1, `pfns[${i}]`);
    for (let i = 0; i < pfns.length; i++) out[i] = this.dmaMapPage(pfns[i] as number, dir, 1);
    return out;
  }

  /**
   * Unmap a mapping created by {@link Iommu.dmaMapPage}.
   * @param dmaAddr - the address dmaMapPage returned.
   * @param npages - the size it was mapped with (default 1).
   * @throws BugError `dma-unmap-unmapped` when nothing is mapped there (double unmap),
   *   `dma-unmap-size` when the size differs from the mapping's, `dma-unmap-busy` when a DMA
   *   transfer using one of its pages is still in flight. State is unchanged after a throw.
   * Context: synchronous.
   * @see dma_unmap_page, kernel/dma/debug.c check_unmap
   */
  dmaUnmapPage(dmaAddr: number, npages = 1): void {
    const idx = this.index(dmaAddr);
    if (idx < 0 || idx >= this.top || this.runLen[idx] === 0 || this.pfnPlus1[idx] === 0) {
      throw new BugError(
        "dma-unmap-unmapped",
        `gpu${this.gpu}: dma_unmap of IOVA 0x${dmaAddr.toString(16)} which is not mapped (double unmap?)`,
      );
    }
    const len = this.runLen[idx] as number;
    if (len !== npages) {
      throw new BugError(
        "dma-unmap-size",
        `gpu${this.gpu}: dma_unmap of IOVA 0x${dmaAddr.toString(16)} with ${npages} pages, mapped with ${len}`,
      );
    }
    for (let i = 0; i < len; i++) {
      if ((this.inflight[idx + i] as number) > 0) {
        throw new BugError(
          "dma-unmap-busy",
          `gpu${this.gpu}: dma_unmap of IOVA 0x${(dmaAddr + i * PAGE_SIZE).toString(16)} while a DMA transfer uses it`,
        );
      }
    }
    this.pfnPlus1.fill(0, idx, idx + len);
    this.prot.fill(0, idx, idx + len);
    this.runLen[idx] = 0;
    this.mappedPages -= len;
    let list = this.freeBySize.get(len);
    if (list === undefined) {
      list = [];
      this.freeBySize.set(len, list);
    }
    list.push(idx);
  }

  /**
   * Translate one device access (the IOMMU's page walk), raising an IOMMU fault when refused.
   * @param dmaAddr - the IOVA accessed (any byte of the page).
   * @param write - whether the device writes.
   * @param source - who accesses, for the event.
   * @returns the system pfn, or -1 when the access was refused (an `io_page_fault` was emitted).
   * Context: synchronous.
   * @see iommu_iova_to_phys, report_iommu_fault
   */
  translate(dmaAddr: number, write: boolean, source: "dma" | "compute"): number {
    const idx = this.index(dmaAddr);
    const reason = this.check(idx, write);
    if (reason !== undefined) {
      this.fault(dmaAddr, write, reason, source);
      return -1;
    }
    return (this.pfnPlus1[idx] as number) - 1;
  }

  /**
   * The IOVA page index of a DMA address (no checks beyond arithmetic).
   * @param dmaAddr - a DMA address.
   * @returns its page index, or -1 below {@link IOVA_BASE} / not an integer.
   */
  index(dmaAddr: number): number {
    if (!(dmaAddr >= IOVA_BASE) || !Number.isInteger(dmaAddr)) return -1;
    return Math.floor((dmaAddr - IOVA_BASE) / PAGE_SIZE);
  }

  /**
   * Why an access to IOVA page `idx` would be refused.
   * @param idx - IOVA page index.
   * @param write - whether the access writes.
   * @returns undefined when allowed, else the reason.
   */
  check(idx: number, write: boolean): IommuFaultReason | undefined {
    if (idx < 0 || idx >= this.top || this.pfnPlus1[idx] === 0) return "unmapped";
    const p = this.prot[idx] as number;
    if (write ? (p & IOMMU_WRITE) === 0 : (p & IOMMU_READ) === 0) return write ? "readonly" : "writeonly";
    return undefined;
  }

  /**
   * Record and report a refused access.
   * @param dmaAddr - the faulting IOVA.
   * @param write - whether it was a write.
   * @param reason - why it was refused.
   * @param source - DMA engine or compute.
   * @see report_iommu_fault, trace_io_page_fault
   */
  fault(dmaAddr: number, write: boolean, reason: IommuFaultReason, source: "dma" | "compute"): void {
    this.faults++;
    if (this.bus.wants("io_page_fault")) this.bus.emit("io_page_fault", { gpu: this.gpu, iova: dmaAddr, write, reason, source });
  }

  private checkRam(pfn: number, npages: number, arg = "pfn"): void {
    const r = Number.isInteger(pfn) && pfn >= 0 ? this.pages.regionOf(pfn) : undefined;
    if (r === undefined || r.kind !== "ram" || pfn + npages > r.basePfn + r.npages) {
      einval(arg, `system-RAM pfns [${pfn}, ${pfn + npages}) in one region${r ? `, got ${r.name}` : ""}`);
    }
  }

  private allocIova(npages: number): number {
    const list = this.freeBySize.get(npages);
    if (list !== undefined && list.length > 0) return list.pop() as number;
    const idx = this.top;
    this.top += npages;
    if (this.top > this.pfnPlus1.length) this.grow(this.top);
    return idx;
  }

  private grow(min: number): void {
    let cap = this.pfnPlus1.length;
    while (cap < min) cap *= 2;
    const g = <T extends Float64Array | Uint8Array | Uint32Array | Int32Array>(a: T, C: new (n: number) => T): T => {
      const b = new C(cap);
      b.set(a as never);
      return b;
    };
    this.pfnPlus1 = g(this.pfnPlus1, Float64Array);
    this.prot = g(this.prot, Uint8Array);
    this.runLen = g(this.runLen, Uint32Array);
    this.inflight = g(this.inflight, Int32Array);
  }
}
