/**
 * Transparent huge pages: PMD-mapped order-9 anonymous folios, the huge zero page, PMD splits and
 * folio splits.
 *
 * A THP fault in an eligible range (the VMA covers the aligned 2 MiB; THP mode "always" without
 * MADV_NOHUGEPAGE, or "madvise" with MADV_HUGEPAGE) allocates an order-9 folio and maps it with
 * one PMD entry (`thp_fault_alloc`); when no order-9 block is free it falls back to base pages
 * (`thp_fault_fallback`). A read fault maps the huge zero page instead, when enabled.
 *
 * Refcounts: each PMD mapping holds one folio reference and one entire mapcount (kept in the first
 * tail page). Splitting a PMD (`splitHugePmd`) replaces it by 512 PTEs, each holding a reference
 * and a per-page mapcount: the folio becomes PTE-mapped but stays large. Splitting the folio
 * (`splitFolio`) then needs every reference accounted for by mappings plus the caller's own (an
 * extra pin makes it fail, as can_split_folio does); unmapped subpages are freed.
 *
 * Device-private THPs use the same PMD machinery with device-private PMD entries (seed 000):
 * split to 512 device-private PTEs, `folioSplit` called for each tail.
 *
 * @see mm/huge_memory.c, Documentation/admin-guide/mm/transhuge.rst
 */
import { VM_FAULT } from "../memremap/memremap";
import { GFP } from "../phys/page-alloc";
import { HPAGE_PMD_NR, HPAGE_PMD_ORDER, PAGE_SIZE, PG } from "../phys/page-state";
import { FAULT_FALLBACK } from "./fault";
import type { Mm } from "./mm";
import type { MmCore } from "./mm-core";
import { MMU_NOTIFY, mmuNotifyRange } from "./mmu-notifier";
import { entryPayload, isHuge, isPresent, isWrite, mkPte, mkSwpEntry, PMD_SIZE, PTE, SWP, swpType, withBits } from "./page-table";
import { VM, type Vma } from "./vma";

/**
 * THP mechanisms of a machine.
 * @see mm/huge_memory.c
 */
export class HugeMemory {
  /** Head pfn of the huge zero page, or -1 before first use. @see huge_zero_folio */
  hugeZeroPfn = -1;
  /** Partly unmapped THPs waiting to be split under memory pressure. @see struct deferred_split */
  private readonly deferred = new Set<number>();

  /** @param core - the mm layer. */
  constructor(private readonly core: MmCore) {}

  /**
   * Whether a THP may back the aligned 2 MiB around `va` in `vma`.
   * @param vma - an anonymous VMA. @param va - address. @returns true if eligible.
   * @see thp_vma_allowable_order, transhuge_vma_suitable
   */
  eligible(vma: Vma, va: number): boolean {
    const mode = this.core.config.thp;
    if (mode === "never" || vma.shared || vma.file !== undefined || vma.flags & (VM.NOHUGEPAGE | VM.HUGETLB)) return false;
    if (mode === "madvise" && !(vma.flags & VM.HUGEPAGE)) return false;
    const haddr = va - (va % PMD_SIZE);
    return haddr >= vma.start && haddr + PMD_SIZE <= vma.end && vma.pageIndex(haddr) % HPAGE_PMD_NR === (haddr / PAGE_SIZE) % HPAGE_PMD_NR;
  }

  /**
   * Whether `pfn` is part of the huge zero page.
   * @param pfn - page. @returns true if so. @see is_huge_zero_pfn
   */
  isHugeZeroPfn(pfn: number): boolean {
    return this.hugeZeroPfn >= 0 && pfn >= this.hugeZeroPfn && pfn < this.hugeZeroPfn + HPAGE_PMD_NR;
  }

  /**
   * The huge zero page, allocated on first use (never freed).
   * @returns its head pfn, or -1 if no order-9 block could be had. @see mm_get_huge_zero_folio
   */
  getHugeZeroPage(): number {
    if (this.hugeZeroPfn >= 0) return this.hugeZeroPfn;
    const core = this.core;
    const pfn = core.alloc.allocPages(HPAGE_PMD_ORDER, GFP.TRANSHUGE | GFP.NORETRY);
    if (pfn < 0) return -1;
    core.contents.clearPages(pfn, HPAGE_PMD_NR);
    for (let p = pfn; p < pfn + HPAGE_PMD_NR; p++) core.pages.flags[p] = (core.pages.flags[p] as number) | PG.reserved;
    core.vmstat.c.thp_zero_page_alloc++;
    this.hugeZeroPfn = pfn;
    return pfn;
  }

  /**
   * Fault in a THP (or the huge zero page) for a none PMD.
   * @returns 0, VM_FAULT_OOM, or FAULT_FALLBACK to continue with base pages.
   * @see do_huge_pmd_anonymous_page
   */
  doHugePmdAnonymousPage(mm: Mm, vma: Vma, va: number, write: boolean): number {
    const core = this.core;
    const haddr = va - (va % PMD_SIZE);
    if (!write && core.config.useZeroPage) {
      const hz = this.getHugeZeroPage();
      if (hz < 0) {
        core.vmstat.c.thp_fault_fallback++;
        return FAULT_FALLBACK;
      }
      mm.pt.setPmd(haddr, mkPte(hz, false) + PTE.HUGE);
      return 0;
    }
    // With reservations on, write faults reserve a block and map base pages (thp-reserve.ts).
    if (core.thpRes.enabled) return FAULT_FALLBACK;
    const gfp = GFP.TRANSHUGE | (vma.flags & VM.HUGEPAGE ? 0 : GFP.NORETRY);
    const pfn = core.alloc.allocPages(HPAGE_PMD_ORDER, gfp);
    if (pfn < 0) {
      core.vmstat.c.thp_fault_fallback++;
      return FAULT_FALLBACK;
    }
    core.contents.clearPages(pfn, HPAGE_PMD_NR);
    this.mapNewAnonThp(mm, vma, haddr, pfn);
    core.vmstat.c.thp_fault_alloc++;
    return 0;
  }

  /**
   * Map a fresh (refcount 1) order-9 folio at `haddr` as a new anonymous THP.
   * @param mm - address space. @param vma - VMA. @param haddr - PMD-aligned address. @param pfn - folio head.
   * @see map_anon_folio_pmd
   */
  mapNewAnonThp(mm: Mm, vma: Vma, haddr: number, pfn: number): void {
    const core = this.core;
    core.pages.flags[pfn] = (core.pages.flags[pfn] as number) | PG.largeRmappable;
    core.rmap.addNewAnon(pfn, vma.mapping, vma.pageIndex(haddr), true);
    core.vmstat.c.nr_anon_transparent_hugepages++;
    core.vmstat.c.nr_anon_pages += HPAGE_PMD_NR;
    core.lru.add(pfn);
    const w = (vma.flags & VM.WRITE) !== 0;
    mm.pt.setPmd(haddr, mkPte(pfn, w) + PTE.HUGE + PTE.YOUNG + (w ? PTE.DIRTY : 0));
    mm.rssAnon += HPAGE_PMD_NR;
  }

  /**
   * Fault on a huge PMD entry.
   * @returns 0 to retry, VM_FAULT bits, or a promise (migration wait, device-private THP).
   * @see do_huge_pmd_wp_page, do_huge_pmd_device_private, pmd_migration_entry_wait
   */
  hugePmdFault(mm: Mm, vma: Vma, va: number, pmd: number, write: boolean): number | Promise<number> {
    const core = this.core;
    if (isPresent(pmd)) {
      if (write && !isWrite(pmd)) return this.wpHugePmd(mm, vma, va, pmd);
      return 0;
    }
    switch (swpType(pmd)) {
      case SWP.MIGRATION:
        return core.fault.migrationEntryWait(entryPayload(pmd));
      case SWP.DEVICE_PRIVATE:
        return core.fault.doDevicePrivateFault(mm, vma, va, entryPayload(pmd), write, false);
      default:
        return VM_FAULT.SIGSEGV;
    }
  }

  private wpHugePmd(mm: Mm, vma: Vma, va: number, pmd: number): number {
    const core = this.core;
    const ps = core.pages;
    const haddr = va - (va % PMD_SIZE);
    const pfn = entryPayload(pmd);
    if (this.isHugeZeroPfn(pfn)) {
      const np = core.alloc.allocPages(HPAGE_PMD_ORDER, GFP.TRANSHUGE | GFP.NORETRY);
      if (np >= 0) {
        core.contents.clearPages(np, HPAGE_PMD_NR);
        mmuNotifyRange(mm, haddr, haddr + PMD_SIZE, MMU_NOTIFY.CLEAR);
        mm.pt.setPmd(haddr, 0);
        this.mapNewAnonThp(mm, vma, haddr, np);
        core.vmstat.c.thp_fault_alloc++;
        return 0;
      }
      core.vmstat.c.thp_fault_fallback++;
      this.splitHugePmd(mm, haddr);
      return 0;
    }
    if ((ps.flags[pfn] as number) & PG.anon && (ps.refcount[pfn] as number) === 1 && core.rmap.folioMapcount(pfn) === 1) {
      mm.pt.setPmd(haddr, withBits(pmd, PTE.WRITE | PTE.DIRTY | PTE.YOUNG, 0));
      return 0;
    }
    this.splitHugePmd(mm, haddr);
    return 0;
  }

  /**
   * If a huge PMD leaf covers `va` and `va` is not on its boundary, split it.
   * @param mm - address space. @param va - an edge address.
   * @see vma_adjust_trans_huge / split_huge_pmd_address
   */
  splitPmdAt(mm: Mm, va: number): void {
    if (va % PMD_SIZE === 0) return;
    const haddr = va - (va % PMD_SIZE);
    const pmd = mm.pt.getPmd(haddr);
    if (pmd !== 0 && isHuge(pmd)) this.splitHugePmd(mm, haddr);
  }

  /**
   * Replace the huge PMD leaf at `haddr` by a PTE table mapping the same 512 pages.
   * @param mm - address space. @param haddr - PMD-aligned address.
   * @see __split_huge_pmd, __split_huge_pmd_locked
   */
  splitHugePmd(mm: Mm, haddr: number): void {
    const core = this.core;
    const ps = core.pages;
    const pt = mm.pt;
    const pmd = pt.getPmd(haddr);
    if (pmd === 0 || !isHuge(pmd)) return;
    mmuNotifyRange(mm, haddr, haddr + PMD_SIZE, MMU_NOTIFY.CLEAR);
    const pfn = entryPayload(pmd);
    const bits = (pmd % 256) & ~PTE.HUGE;
    const type = swpType(pmd);
    pt.setPmd(haddr, 0);
    const t = pt.ensurePteTable(haddr);
    if (type !== SWP.MIGRATION) core.vmstat.c.thp_split_pmd++;
    if ((isPresent(pmd) || type === 0) && this.isHugeZeroPfn(pfn)) {
      for (let i = 0; i < HPAGE_PMD_NR; i++) t[i] = mkPte(core.zeroPfn, false);
      return;
    }
    for (let i = 0; i < HPAGE_PMD_NR; i++) t[i] = (pfn + i) * 256 + bits;
    if (type === SWP.MIGRATION) {
      core.migrate.notePteMigration(pfn);
      return;
    }
    for (let i = 0; i < HPAGE_PMD_NR; i++) ps.mapcount[pfn + i] = (ps.mapcount[pfn + i] as number) + 1;
    this.entireMapcountDec(pfn);
    ps.refcount[pfn] = (ps.refcount[pfn] as number) + HPAGE_PMD_NR - 1;
  }

  /**
   * Remove a huge PMD leaf and release what it held.
   * @param mm - address space. @param haddr - PMD-aligned address. @param pmd - the entry.
   * @see zap_huge_pmd
   */
  zapHugePmd(mm: Mm, haddr: number, pmd: number): void {
    const core = this.core;
    mm.pt.setPmd(haddr, 0);
    const pfn = entryPayload(pmd);
    const type = swpType(pmd);
    if (isPresent(pmd) || type === 0) {
      if (this.isHugeZeroPfn(pfn)) return;
      this.entireMapcountDec(pfn);
      mm.rssAnon -= HPAGE_PMD_NR;
      core.refs.putPage(pfn);
    } else if (type === SWP.DEVICE_PRIVATE) {
      this.entireMapcountDec(pfn);
      mm.rssDevice -= HPAGE_PMD_NR;
      core.refs.putPage(pfn);
    }
  }

  /** @internal Drop one PMD mapping of a folio, keeping NR_ANON_THPS exact. */
  entireMapcountDec(head: number): void {
    const rmap = this.core.rmap;
    const n = rmap.entireMapcount(head) - 1;
    rmap.setEntireMapcount(head, n);
    if (n === 0 && !((this.core.pages.flags[head] as number) & PG.zoneDevice)) this.core.vmstat.c.nr_anon_transparent_hugepages--;
  }

  /** @internal Add one PMD mapping of a folio. */
  entireMapcountInc(head: number): void {
    const rmap = this.core.rmap;
    rmap.setEntireMapcount(head, rmap.entireMapcount(head) + 1);
  }

  /**
   * Split a large folio into base pages. PMD mappings are split first (through the rmap). Fails
   * when references exist beyond its mappings and the caller's `callerRefs` (a pin, a GUP
   * reference), as can_split_folio does. Subpages that nothing maps are freed.
   * @param head - folio head. @param callerRefs - references the caller holds.
   * @returns true on success (or if already small).
   * @see split_huge_page_to_list_to_order, can_split_folio
   */
  splitFolio(head: number, callerRefs: number): boolean {
    const core = this.core;
    const ps = core.pages;
    const n = ps.folioNrPages(head);
    if (n === 1) return true;
    if (core.rmap.entireMapcount(head) > 0) {
      core.rmap.walk(head, (mm, _vma, va) => {
        const haddr = va - (va % PMD_SIZE);
        const pmd = mm.pt.getPmd(haddr);
        if (pmd !== 0 && isHuge(pmd) && entryPayload(pmd) === head) this.splitHugePmd(mm, haddr);
        return false;
      });
      if (core.rmap.entireMapcount(head) > 0) return false;
    }
    let mapped = 0;
    for (let p = head; p < head + n; p++) mapped += ps.mapcount[p] as number;
    if ((ps.refcount[head] as number) !== mapped + callerRefs) return false;
    const f = ps.flags[head] as number;
    const wasLru = (f & PG.lru) !== 0;
    if (wasLru) core.lru.del(head);
    const inherit = (ps.flags[head] as number) & (PG.anon | PG.swapbacked | PG.uptodate | PG.dirty | PG.zoneDevice | PG.anonExclusive);
    const order = ps.order[head] as number;
    ps.pincount[head + 1] = 0;
    ps.clearCompound(head, order);
    const zoneDevice = (f & PG.zoneDevice) !== 0;
    const pg = zoneDevice ? core.memremap.pgmapOf(head) : undefined;
    for (let i = 0; i < n; i++) {
      const p = head + i;
      if (p !== head) {
        ps.flags[p] = ((ps.flags[p] as number) & ~(PG.head | PG.tail)) | inherit;
        ps.mapping[p] = ps.mapping[head] as number;
        ps.index[p] = (ps.index[head] as number) + i;
        ps.pgmap[p] = ps.pgmap[head] as number;
        ps.refcount[p] = ps.mapcount[p] as number;
        pg?.ops.folioSplit?.(head, p);
      }
    }
    ps.refcount[head] = (ps.mapcount[head] as number) + callerRefs;
    pg?.ops.folioSplit?.(head, -1);
    for (let i = 0; i < n; i++) {
      const p = head + i;
      if (p !== head && (ps.refcount[p] as number) === 0) {
        if (zoneDevice) core.memremap.freeZoneDeviceFolio(p);
        else core.refs.freeFolio(p);
      } else if (wasLru && !zoneDevice) core.lru.add(p);
    }
    core.vmstat.c.thp_split_page++;
    if (core.bus.wants("mm_split_huge_page")) core.bus.emit("mm_split_huge_page", { pfn: head });
    return true;
  }

  /**
   * Split a large folio that nothing maps (it is under migration: locked, one reference, its
   * mappings replaced by migration entries). Every base page ends locked with one reference,
   * as the folio was.
   * @param head - folio head (locked, refcount 1, mapcount 0). @returns false if it has other references.
   * @see folio_split_unmapped
   */
  splitUnmappedFolio(head: number): boolean {
    const core = this.core;
    const ps = core.pages;
    const n = ps.folioNrPages(head);
    if (n === 1) return true;
    if ((ps.refcount[head] as number) !== 1 || core.rmap.folioMapcount(head) !== 0) return false;
    const inherit =
      (ps.flags[head] as number) &
      (PG.anon | PG.swapbacked | PG.uptodate | PG.dirty | PG.zoneDevice | PG.anonExclusive | PG.isolated | PG.locked);
    const order = ps.order[head] as number;
    ps.pincount[head + 1] = 0;
    ps.clearCompound(head, order);
    const pg = inherit & PG.zoneDevice ? core.memremap.pgmapOf(head) : undefined;
    for (let i = 1; i < n; i++) {
      const p = head + i;
      ps.flags[p] = ((ps.flags[p] as number) & ~(PG.head | PG.tail)) | inherit;
      ps.mapping[p] = ps.mapping[head] as number;
      ps.index[p] = (ps.index[head] as number) + i;
      ps.pgmap[p] = ps.pgmap[head] as number;
      ps.refcount[p] = 1;
      pg?.ops.folioSplit?.(head, p);
    }
    pg?.ops.folioSplit?.(head, -1);
    core.vmstat.c.thp_split_page++;
    if (core.bus.wants("mm_split_huge_page")) core.bus.emit("mm_split_huge_page", { pfn: head });
    return true;
  }

  /**
   * Queue a PTE-mapped THP that lost some (not all) of its mappings, so that memory pressure can
   * split it and free its unmapped subpages.
   * @param head - folio head. @see deferred_split_folio
   */
  deferredSplitFolio(head: number): void {
    const core = this.core;
    const ps = core.pages;
    if (!((ps.flags[head] as number) & PG.head) || (ps.flags[head] as number) & PG.zoneDevice || this.deferred.has(head)) return;
    if (core.rmap.folioMapcount(head) === 0) return; // fully unmapped: it is freed, not split
    this.deferred.add(head);
    core.vmstat.c.thp_deferred_split_page++;
  }

  /**
   * The deferred-split shrinker: split every queued THP that nothing but its mappings holds,
   * freeing its unmapped subpages.
   * @returns base pages freed.
   * @see deferred_split_scan
   */
  deferredSplitScan(): number {
    const core = this.core;
    const ps = core.pages;
    let freed = 0;
    for (const head of [...this.deferred]) {
      this.deferred.delete(head);
      if (!((ps.flags[head] as number) & PG.head) || (ps.refcount[head] as number) === 0) continue;
      const free0 = core.alloc.nrFreePages;
      core.refs.getPage(head);
      if (!core.refs.trylockPage(head)) {
        core.refs.putPage(head);
        this.deferred.add(head);
        continue;
      }
      const ok = this.splitFolio(head, 1);
      core.refs.unlockPage(head);
      core.refs.putPage(head);
      if (!ok) this.deferred.add(head);
      freed += core.alloc.nrFreePages - free0;
    }
    return freed;
  }

  /** @internal Make a huge device-private PMD entry. */
  mkDevicePrivatePmd(pfn: number, write: boolean): number {
    return mkSwpEntry(SWP.DEVICE_PRIVATE, pfn, write) + PTE.HUGE;
  }
}
