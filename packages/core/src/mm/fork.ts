/**
 * fork: duplicate an address space with copy-on-write.
 *
 * Every VMA is copied (except MADV_DONTFORK ones). Shared (shmem) VMAs copy no entries: the child
 * faults pages in from the shmem object. For private VMAs each entry is copied as the kernel's
 * copy_page_range does:
 * - present page: both entries become read-only, the page gains a reference and a mapcount and
 *   loses anon-exclusive; a page that may be DMA-pinned is copied for the child at once
 *   (copy_present_page) so the pin keeps pointing at the parent's page;
 * - zero page: copied as is;
 * - huge PMD: as a present page at PMD level (a pinned THP is split and copied per page);
 * - migration entry: copied; a writable one becomes readable in both;
 * - device-private entry: the device page gains a reference and a mapcount; a writable one
 *   becomes read-only in both (the next write faults it back to RAM and COWs);
 * - device-exclusive entry: the CPU mapping is restored first, then copied as present.
 * The parent's private VMAs get one MMU_NOTIFY_PROTECTION_PAGE invalidation first, so mirrors
 * drop write access before entries are write-protected.
 *
 * @see kernel/fork.c (dup_mmap), mm/memory.c (copy_page_range, copy_pte_range,
 *      copy_nonpresent_pte, copy_present_pte), mm/huge_memory.c (copy_huge_pmd)
 */
import { GUP_PIN_COUNTING_BIAS, HPAGE_PMD_NR, PAGE_SIZE, PG } from "../phys/page-state";
import type { Mm } from "./mm";
import type { MmCore } from "./mm-core";
import { MMU_NOTIFY, mmuNotifyRange } from "./mmu-notifier";
import { entryPayload, isHuge, isPresent, mkPte, PMD_SIZE, PTE, PTRS_PER_PTE, SWP, swpType, withBits } from "./page-table";
import { VM, type Vma } from "./vma";

/**
 * Copy-on-write duplication of address spaces.
 * @see dup_mmap
 */
export class Forker {
  /** @param core - the mm layer. */
  constructor(private readonly core: MmCore) {}

  /**
   * Duplicate `parent` into a new address space.
   * @param parent - the parent's mm. @returns the child's mm.
   * @throws HmmError ENOMEM if a copy for a pinned page cannot be allocated (the child is torn down).
   * @see dup_mmap
   */
  dupMmap(parent: Mm): Mm {
    const core = this.core;
    const child = core.newMm();
    for (const vma of parent.vmas) {
      if (vma.flags & VM.DONTCOPY) continue;
      const cv = vma.slice(vma.start, vma.end);
      child.insertVma(cv);
      const obj = core.rmap.get(vma.mapping);
      obj?.mms.add(child);
      if (vma.shared) {
        core.shmemVmaRef(vma.mapping, +1);
        continue;
      }
      mmuNotifyRange(parent, vma.start, vma.end, MMU_NOTIFY.PROTECTION_PAGE);
      if (vma.flags & VM.HUGETLB) core.hugetlb.copyRange(parent, child, vma, cv);
      else this.copyRange(parent, child, vma, cv);
    }
    return child;
  }

  private copyRange(src: Mm, dst: Mm, vma: Vma, dvma: Vma): void {
    const core = this.core;
    for (let va = vma.start; va < vma.end; ) {
      const pmdEnd = Math.min(vma.end, (Math.floor(va / PMD_SIZE) + 1) * PMD_SIZE);
      let pmd = src.pt.getPmd(va);
      if (pmd !== 0 && isHuge(pmd)) {
        if (this.copyHugePmd(src, dst, va, pmd)) {
          va = pmdEnd;
          continue;
        }
        core.huge.splitHugePmd(src, va);
        pmd = src.pt.getPmd(va);
      }
      const t = src.pt.pteTable(va);
      if (t !== undefined) {
        for (let a = va; a < pmdEnd; a += PAGE_SIZE) {
          const i = Math.floor(a / PAGE_SIZE) % PTRS_PER_PTE;
          let e = t[i] as number;
          if (e === 0) continue;
          if (swpType(e) === SWP.DEVICE_EXCLUSIVE) {
            // Restore the CPU mapping first (the device loses exclusivity), then copy it.
            mmuNotifyRange(src, a, a + PAGE_SIZE, MMU_NOTIFY.EXCLUSIVE);
            e = mkPte(entryPayload(e), (e & PTE.WRITE) !== 0);
            t[i] = e;
          }
          const ce = this.copyPte(src, dvma, a, e, t, i);
          if (ce === 0) continue;
          dst.pt.setPte(a, ce);
          const ty = swpType(ce);
          const cp = entryPayload(ce);
          if ((isPresent(ce) || ty === 0) && cp !== core.zeroPfn && !core.huge.isHugeZeroPfn(cp)) {
            if (vma.file !== undefined && !((core.pages.flags[core.pages.compoundHead(cp)] as number) & PG.anon)) dst.rssFile++;
            else dst.rssAnon++;
          } else if (ty === SWP.DEVICE_PRIVATE) dst.rssDevice++;
        }
      }
      va = pmdEnd;
    }
  }

  /** Returns the child's entry; may update the parent's entry in `t[i]`. */
  private copyPte(_src: Mm, dvma: Vma, va: number, e: number, t: Float64Array, i: number): number {
    const core = this.core;
    const ps = core.pages;
    const pfn = entryPayload(e);
    const type = swpType(e);
    if (isPresent(e) || type === 0) {
      if (pfn === core.zeroPfn || core.huge.isHugeZeroPfn(pfn)) return e;
      const head = ps.compoundHead(pfn);
      if ((ps.flags[head] as number) & PG.anon && this.maybeDmaPinned(head)) {
        const np = core.allocUserPage(false);
        if (np < 0) throw core.enomem("fork: no memory to copy a pinned page");
        core.contents.copyPages(np, pfn, 1);
        core.rmap.addNewAnon(np, dvma.mapping, dvma.pageIndex(va), false);
        core.vmstat.c.nr_anon_pages++;
        core.lru.add(np);
        return mkPte(np, (dvma.flags & VM.WRITE) !== 0 && (e & PTE.WRITE) !== 0) + PTE.DIRTY;
      }
      ps.refcount[head] = (ps.refcount[head] as number) + 1;
      ps.mapcount[pfn] = (ps.mapcount[pfn] as number) + 1;
      ps.flags[head] = (ps.flags[head] as number) & ~PG.anonExclusive;
      const ro = withBits(e, 0, PTE.WRITE);
      t[i] = ro;
      return withBits(ro, 0, PTE.YOUNG);
    }
    switch (type) {
      case SWP.MIGRATION: {
        core.migrate.noteMigrationEntryCopy(pfn);
        const ro = withBits(e, 0, PTE.WRITE);
        t[i] = ro;
        return ro;
      }
      case SWP.DEVICE_PRIVATE: {
        const head = ps.compoundHead(pfn);
        ps.refcount[head] = (ps.refcount[head] as number) + 1;
        ps.mapcount[pfn] = (ps.mapcount[pfn] as number) + 1;
        ps.flags[head] = (ps.flags[head] as number) & ~PG.anonExclusive;
        const ro = withBits(e, 0, PTE.WRITE);
        t[i] = ro;
        return ro;
      }
      case SWP.SWAP:
        core.swapDup?.(pfn);
        return e;
      default:
        return e;
    }
  }

  /** Copy a huge PMD; false means "split it and copy PTEs" (a pinned THP). */
  private copyHugePmd(src: Mm, dst: Mm, haddr: number, pmd: number): boolean {
    const core = this.core;
    const ps = core.pages;
    const pfn = entryPayload(pmd);
    const type = swpType(pmd);
    if (isPresent(pmd) || type === 0) {
      if (core.huge.isHugeZeroPfn(pfn)) {
        dst.pt.setPmd(haddr, pmd);
        return true;
      }
      if (this.maybeDmaPinned(pfn)) return false;
      ps.refcount[pfn] = (ps.refcount[pfn] as number) + 1;
      core.huge.entireMapcountInc(pfn);
      ps.flags[pfn] = (ps.flags[pfn] as number) & ~PG.anonExclusive;
      const ro = withBits(pmd, 0, PTE.WRITE);
      src.pt.setPmd(haddr, ro);
      dst.pt.setPmd(haddr, ro);
      dst.rssAnon += HPAGE_PMD_NR;
      return true;
    }
    if (type === SWP.MIGRATION) {
      const ro = withBits(pmd, 0, PTE.WRITE);
      src.pt.setPmd(haddr, ro);
      dst.pt.setPmd(haddr, ro);
      return true;
    }
    if (type === SWP.DEVICE_PRIVATE) {
      ps.refcount[pfn] = (ps.refcount[pfn] as number) + 1;
      core.huge.entireMapcountInc(pfn);
      ps.flags[pfn] = (ps.flags[pfn] as number) & ~PG.anonExclusive;
      const ro = withBits(pmd, 0, PTE.WRITE);
      src.pt.setPmd(haddr, ro);
      dst.pt.setPmd(haddr, ro);
      dst.rssDevice += HPAGE_PMD_NR;
      return true;
    }
    return false;
  }

  /**
   * Whether a folio may be DMA-pinned (FOLL_PIN).
   * @param head - folio head. @returns true if pinned. @see folio_maybe_dma_pinned
   */
  maybeDmaPinned(head: number): boolean {
    const ps = this.core.pages;
    if ((ps.flags[head] as number) & PG.head) return (ps.pincount[head] as number) > 0;
    return (ps.refcount[head] as number) >= GUP_PIN_COUNTING_BIAS;
  }
}
