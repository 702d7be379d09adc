/**
 * The page-fault handler and page-table teardown (the kernel's mm/memory.c).
 *
 * `followPte` is the CPU's translation fast path: a present entry that permits the access gives a
 * pfn with no allocation and no promise. Anything else goes to `handleMmFault`, which returns 0
 * when the access can be retried, a VM_FAULT_* code when it cannot, or a promise when the fault
 * must wait (a device-private page's `migrateToRam`, a page under migration).
 *
 * Fault outcomes by entry:
 * - none, anonymous private VMA: read → the shared zero page (read-only); write → a new zeroed
 *   page, anon-exclusive, on the LRU. THP-eligible ranges try an order-9 folio first
 *   (huge-memory.ts) and fall back (`thp_fault_fallback`).
 * - none, shared VMA: the shmem object's page at that index, allocated zeroed if absent.
 * - present read-only, write to a writable VMA: COW (do_wp_page): the zero page is replaced by a
 *   new page; an exclusive anonymous page (refcount 1, mapcount 1) is reused in place; anything
 *   else is copied, with an MMU_NOTIFY_CLEAR invalidation for mirrors.
 * - migration entry: wait for the page lock to drop, retry.
 * - device-private entry: take a reference and the page lock, call the pgmap's `migrateToRam`,
 *   retry. If the page is locked elsewhere, wait for it and retry.
 * - device-exclusive entry: notify MMU_NOTIFY_EXCLUSIVE and restore the CPU mapping.
 * - a PROT_NONE mapping (present bit cleared, pfn kept) only faults with SIGSEGV, since the VMA
 *   denies the access first.
 *
 * Zap releases exactly what each entry holds: a present or device-private/exclusive entry holds
 * one mapcount and one reference; a migration entry holds neither (collect already dropped
 * them); the zero pages are never counted.
 *
 * @see mm/memory.c (handle_mm_fault, do_anonymous_page, do_wp_page, do_swap_page,
 *      zap_pte_range), mm/shmem.c (shmem_fault), mm/mprotect.c (change_pte_range)
 */
import { VM_FAULT } from "../memremap/memremap";
import { PAGE_SIZE, PG } from "../phys/page-state";
import { BugError } from "../sim/errors";
import type { Mm } from "./mm";
import type { MmCore } from "./mm-core";
import { MMU_NOTIFY, mmuNotifyRange } from "./mmu-notifier";
import {
  entryPayload,
  isHuge,
  isPresent,
  isWrite,
  mkPte,
  mkSwpEntry,
  PMD_SIZE,
  PTE,
  PTRS_PER_PTE,
  SWP,
  swpType,
  withBits,
} from "./page-table";
import type { ShmemObject } from "./rmap";
import { VM, type Vma } from "./vma";

/** Returned by a THP fault attempt that must fall back to base pages. */
export const FAULT_FALLBACK = -1;

/**
 * The machine's fault handler.
 * @see mm/memory.c
 */
export class FaultHandler {
  /** @param core - the mm layer. */
  constructor(private readonly core: MmCore) {}

  /**
   * Translate for a CPU access without faulting: the pfn, or -1 if a fault is needed.
   * Sets the accessed (and, for writes, dirty) bit.
   * @param mm - address space. @param va - address. @param write - store access.
   * @returns pfn or -1.
   * @see follow_page_pte, the MMU's walk
   */
  followPte(mm: Mm, va: number, write: boolean): number {
    const pt = mm.pt;
    const pmd = pt.getPmd(va);
    if (pmd === 0) return -1;
    if (isHuge(pmd)) {
      if (!isPresent(pmd) || (write && !isWrite(pmd))) return -1;
      return entryPayload(pmd) + Math.floor((va % PMD_SIZE) / PAGE_SIZE);
    }
    const t = pt.pteTable(va);
    if (t === undefined) return -1;
    const i = Math.floor(va / PAGE_SIZE) % PTRS_PER_PTE;
    const e = t[i] as number;
    if (e % 2 !== 1) return -1;
    const low = e % 256;
    if (write) {
      if ((low & PTE.WRITE) === 0) return -1;
      if ((low & (PTE.DIRTY | PTE.YOUNG)) !== (PTE.DIRTY | PTE.YOUNG)) t[i] = e - low + (low | PTE.DIRTY | PTE.YOUNG);
    } else if ((low & PTE.YOUNG) === 0) t[i] = e + PTE.YOUNG;
    return (e - low) / 256;
  }

  /**
   * Handle a fault at `va`.
   * @param mm - address space. @param va - faulting address. @param write - store access.
   * @returns 0 when the access should be retried; VM_FAULT_SIGSEGV / SIGBUS / OOM / HWPOISON bits
   *   when it cannot complete; a promise of either when the fault has to wait.
   * @see handle_mm_fault
   */
  handleMmFault(mm: Mm, va: number, write: boolean): number | Promise<number> {
    const core = this.core;
    const vma = mm.findVma(va);
    if (vma === undefined) return VM_FAULT.SIGSEGV;
    if (write ? (vma.flags & VM.WRITE) === 0 : (vma.flags & VM.READ) === 0) return VM_FAULT.SIGSEGV;
    core.vmstat.c.pgfault++;
    if (core.bus.wants("page_fault_user")) core.bus.emit("page_fault_user", { mm: mm.id, address: va, write });
    if (vma.flags & VM.HUGETLB) return core.hugetlb.fault(mm, vma, va, write);
    const pt = mm.pt;
    const pmd = pt.getPmd(va);
    if (pmd === 0 && !vma.shared && core.huge.eligible(vma, va)) {
      const r = core.huge.doHugePmdAnonymousPage(mm, vma, va, write);
      if (r !== FAULT_FALLBACK) return r;
    } else if (pmd !== 0 && isHuge(pmd)) {
      return core.huge.hugePmdFault(mm, vma, va, pmd, write);
    }
    if (vma.shared) return this.shmemFault(mm, vma, va, write);
    const e = pt.getPte(va);
    if (e === 0) {
      if (vma.file === undefined) return this.doAnonymousPage(mm, vma, va, write);
      // A tmpfs file faults from its page cache; a driver mapping has no ->fault: what its mmap
      // did not insert is not there.
      const obj = vma.file.shmem;
      return obj !== undefined ? this.privateFileFault(mm, vma, obj, va, write) : VM_FAULT.SIGBUS;
    }
    if (!isPresent(e)) {
      switch (swpType(e)) {
        case SWP.MIGRATION:
          return this.migrationEntryWait(entryPayload(e));
        case SWP.DEVICE_PRIVATE:
          return this.doDevicePrivateFault(mm, vma, va, entryPayload(e), write, true);
        case SWP.DEVICE_EXCLUSIVE:
          return this.removeDeviceExclusiveEntry(mm, vma, va, e);
        case SWP.SWAP:
          if (core.swapIn === undefined) throw new BugError("no-swap", `swap entry at 0x${va.toString(16)} with no swap layer`);
          return core.swapIn(mm, vma, va, e, write);
        case SWP.HWPOISON:
          return VM_FAULT.HWPOISON;
        case 0:
          // A PROT_NONE entry the VMA now permits (mprotect restores entries; this is the safety net).
          mm.pt.setPte(va - (va % PAGE_SIZE), withBits(e, PTE.PRESENT, vma.flags & VM.WRITE ? 0 : PTE.WRITE));
          return 0;
        default:
          return VM_FAULT.SIGSEGV;
      }
    }
    if (write && !isWrite(e)) return this.doWpPage(mm, vma, va, e);
    return 0;
  }

  private doAnonymousPage(mm: Mm, vma: Vma, va: number, write: boolean): number {
    const core = this.core;
    const pt = mm.pt;
    const addr = va - (va % PAGE_SIZE);
    if (!write && core.config.useZeroPage) {
      pt.setPte(addr, mkPte(core.zeroPfn, false));
      return 0;
    }
    const fromRes = write && core.thpRes.enabled && core.huge.eligible(vma, addr);
    let pfn = fromRes ? core.thpRes.allocFromReservation(mm, addr) : -1;
    if (pfn < 0) pfn = core.allocUserPage();
    if (pfn < 0) return VM_FAULT.OOM;
    core.rmap.addNewAnon(pfn, vma.mapping, vma.pageIndex(addr), false);
    core.vmstat.c.nr_anon_pages++;
    core.lru.add(pfn);
    const w = (vma.flags & VM.WRITE) !== 0;
    pt.setPte(addr, mkPte(pfn, w) + PTE.YOUNG + (w ? PTE.DIRTY : 0));
    mm.rssAnon++;
    if (fromRes) core.thpRes.afterFault(mm, vma, addr);
    return 0;
  }

  private shmemFault(mm: Mm, vma: Vma, va: number, write: boolean): number | Promise<number> {
    const core = this.core;
    const addr = va - (va % PAGE_SIZE);
    const e = mm.pt.getPte(addr);
    if (e !== 0) {
      if (isPresent(e)) {
        if (write && !isWrite(e)) mm.pt.setPte(addr, withBits(e, PTE.WRITE | PTE.DIRTY, 0));
        return 0;
      }
      if (swpType(e) === SWP.MIGRATION) return this.migrationEntryWait(entryPayload(e));
      return VM_FAULT.SIGBUS;
    }
    const obj = core.shmemOf(vma.mapping);
    const index = vma.pageIndex(addr);
    if (index >= obj.sizePages) return VM_FAULT.SIGBUS;
    const pfn = this.shmemGetPage(obj, index);
    if (pfn < 0) return VM_FAULT.OOM;
    // The page cache holds one reference; each mapping holds another.
    core.refs.getPage(pfn);
    core.pages.mapcount[pfn] = (core.pages.mapcount[pfn] as number) + 1;
    const w = (vma.flags & VM.WRITE) !== 0 && write;
    mm.pt.setPte(addr, mkPte(pfn, (vma.flags & VM.WRITE) !== 0) + PTE.YOUNG + (w ? PTE.DIRTY : 0));
    return 0;
  }

  /**
   * The page-cache page at `index` of a shmem object, allocating a zeroed one for a hole.
   * @param obj - the shmem object. @param index - page index.
   * @returns the pfn (the cache holds one reference), or -1 when no page could be allocated.
   * @see shmem_get_folio (SGP_CACHE)
   */
  shmemGetPage(obj: ShmemObject, index: number): number {
    const core = this.core;
    let pfn = obj.pages.get(index);
    if (pfn !== undefined) return pfn;
    pfn = core.allocUserPage();
    if (pfn < 0) return -1;
    const ps = core.pages;
    ps.flags[pfn] = (ps.flags[pfn] as number) | PG.swapbacked | PG.uptodate;
    ps.mapping[pfn] = obj.id;
    ps.index[pfn] = index;
    obj.pages.set(index, pfn);
    core.lru.add(pfn);
    return pfn;
  }

  /**
   * A fault on a hole of a private mapping of a tmpfs file: a read maps the page-cache page
   * read-only (a later write copies it); a write copies it into a new anonymous page at once.
   * @see do_read_fault, do_cow_fault
   */
  private privateFileFault(mm: Mm, vma: Vma, obj: ShmemObject, va: number, write: boolean): number {
    const core = this.core;
    const ps = core.pages;
    const addr = va - (va % PAGE_SIZE);
    const index = vma.pageIndex(addr);
    if (index >= obj.sizePages) return VM_FAULT.SIGBUS;
    const pfn = this.shmemGetPage(obj, index);
    if (pfn < 0) return VM_FAULT.OOM;
    if (!write) {
      core.refs.getPage(pfn);
      ps.mapcount[pfn] = (ps.mapcount[pfn] as number) + 1;
      mm.rssFile++;
      mm.pt.setPte(addr, mkPte(pfn, false) + PTE.YOUNG);
      return 0;
    }
    const np = this.newAnonCopy(vma, addr, pfn);
    if (np < 0) return VM_FAULT.OOM;
    mm.pt.setPte(addr, mkPte(np, true) + PTE.DIRTY + PTE.YOUNG);
    mm.rssAnon++;
    return 0;
  }

  /**
   * A new anonymous page for `addr` of `vma` holding a copy of `src` (zeros for -1), on the LRU and
   * in the VMA's anon_vma, not yet mapped. `src` is held across the allocation, so direct reclaim
   * inside it cannot take it.
   * @returns the pfn, or -1 when no page could be allocated.
   * @see wp_page_copy, do_cow_fault
   */
  private newAnonCopy(vma: Vma, addr: number, src: number): number {
    const core = this.core;
    if (src >= 0) core.refs.getPage(src);
    const np = core.allocUserPage(src < 0);
    if (src >= 0) {
      if (np >= 0) core.contents.copyPages(np, src, 1);
      core.refs.putPage(src);
    }
    if (np < 0) return -1;
    core.rmap.addNewAnon(np, vma.mapping, vma.pageIndex(addr), false);
    core.vmstat.c.nr_anon_pages++;
    core.lru.add(np);
    return np;
  }

  private doWpPage(mm: Mm, vma: Vma, va: number, e: number): number {
    const core = this.core;
    const ps = core.pages;
    const addr = va - (va % PAGE_SIZE);
    const pfn = entryPayload(e);
    const isZero = pfn === core.zeroPfn || core.huge.isHugeZeroPfn(pfn);
    if (!isZero) {
      const head = ps.compoundHead(pfn);
      const f = ps.flags[head] as number;
      // Reuse an exclusive small anonymous page: nobody else maps or references it.
      if (f & PG.anon && head === pfn && !(f & PG.head) && (ps.refcount[pfn] as number) === 1 && (ps.mapcount[pfn] as number) === 1) {
        ps.flags[pfn] = f | PG.anonExclusive;
        mm.pt.setPte(addr, withBits(e, PTE.WRITE | PTE.DIRTY | PTE.YOUNG, 0));
        return 0;
      }
    }
    const np = this.newAnonCopy(vma, addr, isZero ? -1 : pfn);
    if (np < 0) return VM_FAULT.OOM;
    mmuNotifyRange(mm, addr, addr + PAGE_SIZE, MMU_NOTIFY.CLEAR);
    mm.pt.setPte(addr, mkPte(np, true) + PTE.DIRTY + PTE.YOUNG);
    if (!isZero) {
      ps.mapcount[pfn] = (ps.mapcount[pfn] as number) - 1;
      // A driver's inserted page (not anonymous) is replaced by an anonymous copy.
      if (!((ps.flags[ps.compoundHead(pfn)] as number) & PG.anon)) {
        mm.rssFile--;
        mm.rssAnon++;
      }
      core.refs.putPage(pfn);
    } else mm.rssAnon++;
    return 0;
  }

  /**
   * Wait for a page under migration, then retry.
   * @param pfn - the page the migration entry points to. @returns resolves to 0 (retry).
   * @see migration_entry_wait
   */
  migrationEntryWait(pfn: number): Promise<number> {
    const head = this.core.pages.compoundHead(pfn);
    return this.core.refs.waitUnlocked(head).then(() => 0);
  }

  /**
   * Fault on a device-private entry: lock the page, call `migrateToRam`.
   * @param pteMapped - the entry was a PTE (false: a PMD mapping a whole device THP).
   * @returns 0 to retry, or the VM_FAULT bits `migrateToRam` returned.
   * @see do_swap_page (is_device_private_entry branch)
   */
  async doDevicePrivateFault(mm: Mm, vma: Vma, va: number, pfn: number, write: boolean, pteMapped: boolean): Promise<number> {
    const core = this.core;
    const pg = core.memremap.pgmapOf(pfn);
    if (pg === undefined || pg.ops.migrateToRam === undefined)
      throw new BugError("device-private-no-pgmap", `device-private entry to pfn ${pfn} without a live pgmap`);
    const head = core.pages.compoundHead(pfn);
    core.refs.getPage(pfn);
    if (!core.refs.trylockPage(head)) {
      core.refs.putPage(pfn);
      await core.refs.waitUnlocked(head);
      return 0;
    }
    let r: number;
    try {
      r = await pg.ops.migrateToRam({ mm, vma, address: va - (va % PAGE_SIZE), page: pfn, write, pteMapped });
    } finally {
      // migrateToRam may have split the folio: the lock is now on the faulting page's own folio.
      core.refs.unlockPage(core.pages.compoundHead(pfn));
      core.refs.putPage(pfn);
    }
    return r;
  }

  private removeDeviceExclusiveEntry(mm: Mm, vma: Vma, va: number, e: number): number | Promise<number> {
    const core = this.core;
    const pfn = entryPayload(e);
    const head = core.pages.compoundHead(pfn);
    if (!core.refs.trylockPage(head)) return core.refs.waitUnlocked(head).then(() => 0);
    const addr = va - (va % PAGE_SIZE);
    mmuNotifyRange(mm, addr, addr + PAGE_SIZE, MMU_NOTIFY.EXCLUSIVE, undefined);
    if (mm.pt.getPte(addr) === e) mm.pt.setPte(addr, mkPte(pfn, isWrite(e) && (vma.flags & VM.WRITE) !== 0) + PTE.YOUNG);
    core.refs.unlockPage(head);
    return 0;
  }

  /**
   * Remove every mapping in `[start, end)` of `vma` (both PMD-aligned edges already split).
   * @param mm - address space. @param vma - the VMA. @param start - first byte. @param end - one past last.
   * @see zap_page_range_single, unmap_page_range
   */
  zapRange(mm: Mm, vma: Vma, start: number, end: number): void {
    const pt = mm.pt;
    if (vma.flags & VM.HUGETLB) {
      this.core.hugetlb.zapRange(mm, start, end);
      return;
    }
    this.core.thpRes.releaseRange(mm, start, end);
    let va = start;
    while (va < end) {
      const pmdEnd = Math.min(end, (Math.floor(va / PMD_SIZE) + 1) * PMD_SIZE);
      const pmd = pt.getPmd(va);
      if (pmd === 0) {
        va = pmdEnd;
        continue;
      }
      if (isHuge(pmd)) {
        if (va % PMD_SIZE === 0 && pmdEnd - va === PMD_SIZE) {
          this.core.huge.zapHugePmd(mm, va, pmd);
          va = pmdEnd;
          continue;
        }
        this.core.huge.splitHugePmd(mm, va - (va % PMD_SIZE));
      }
      const t = pt.pteTable(va);
      if (t !== undefined) {
        for (let a = va; a < pmdEnd; a += PAGE_SIZE) {
          const i = Math.floor(a / PAGE_SIZE) % PTRS_PER_PTE;
          const e = t[i] as number;
          if (e === 0) continue;
          t[i] = 0;
          this.zapEntry(mm, vma, e);
        }
      }
      va = pmdEnd;
    }
  }

  /**
   * Release what one PTE held.
   * @param mm - address space. @param vma - its VMA. @param e - the entry (already cleared).
   * @see zap_present_ptes, zap_nonpresent_ptes
   */
  zapEntry(mm: Mm, vma: Vma, e: number): void {
    const core = this.core;
    const ps = core.pages;
    const type = swpType(e);
    const pfn = entryPayload(e);
    if (isPresent(e) || type === 0) {
      if (pfn === core.zeroPfn || core.huge.isHugeZeroPfn(pfn)) return;
      ps.mapcount[pfn] = (ps.mapcount[pfn] as number) - 1;
      if (!vma.shared) {
        if ((ps.flags[ps.compoundHead(pfn)] as number) & PG.anon || vma.file === undefined) mm.rssAnon--;
        else mm.rssFile--;
      }
      if ((ps.mapcount[pfn] as number) === 0 && (ps.flags[pfn] as number) & (PG.head | PG.tail))
        core.huge.deferredSplitFolio(ps.compoundHead(pfn));
      core.refs.putPage(pfn);
      return;
    }
    switch (type) {
      case SWP.MIGRATION:
      case SWP.HWPOISON:
        return;
      case SWP.DEVICE_PRIVATE:
      case SWP.DEVICE_EXCLUSIVE:
        ps.mapcount[pfn] = (ps.mapcount[pfn] as number) - 1;
        if (type === SWP.DEVICE_PRIVATE) mm.rssDevice--;
        else mm.rssAnon--;
        core.refs.putPage(pfn);
        return;
      case SWP.SWAP:
        if (core.swapFree === undefined) throw new BugError("no-swap", "swap entry zapped with no swap layer");
        core.swapFree(pfn);
        return;
      default:
        throw new BugError("bad-pte", `unknown entry 0x${e.toString(16)}`);
    }
  }

  /**
   * Free PTE tables left empty in `[start, end)`.
   * @param mm - address space. @param start - first byte. @param end - one past last.
   * @see free_pgtables
   */
  freePgtables(mm: Mm, start: number, end: number): void {
    const pt = mm.pt;
    for (let va = start - (start % PMD_SIZE); va < end; va += PMD_SIZE) {
      const t = pt.pteTable(va);
      if (t === undefined) continue;
      let empty = true;
      for (let i = 0; i < PTRS_PER_PTE; i++) {
        if (t[i] !== 0) {
          empty = false;
          break;
        }
      }
      if (empty) pt.freePteTable(va);
    }
  }

  /**
   * Apply a VMA's new protection to its entries: drop write permission, hide (PROT_NONE) or
   * re-expose present entries. Write permission is never added here: the next write faults and
   * COW decides (as the kernel does for private mappings it cannot prove exclusive).
   * @param mm - address space. @param _vma - the VMA (edges split). @param start - first byte.
   * @param end - one past last. @param newVm - new VM_READ/WRITE/EXEC bits.
   * @see change_protection, change_pte_range, change_huge_pmd
   */
  changeProtection(mm: Mm, _vma: Vma, start: number, end: number, newVm: number): void {
    const pt = mm.pt;
    const noWrite = (newVm & VM.WRITE) === 0;
    const noAccess = (newVm & VM.READ) === 0;
    const fix = (e: number): number => {
      if (e === 0) return 0;
      const type = swpType(e);
      if (isPresent(e) || type === 0) {
        let n = e;
        if (noWrite) n = withBits(n, 0, PTE.WRITE);
        if (noAccess) n = withBits(n, 0, PTE.PRESENT);
        else n = withBits(n, PTE.PRESENT, 0);
        return n;
      }
      if (noWrite && (type === SWP.MIGRATION || type === SWP.DEVICE_PRIVATE || type === SWP.DEVICE_EXCLUSIVE))
        return withBits(e, 0, PTE.WRITE);
      return e;
    };
    for (let va = start; va < end; ) {
      const pmdEnd = Math.min(end, (Math.floor(va / PMD_SIZE) + 1) * PMD_SIZE);
      const pmd = pt.getPmd(va);
      if (pmd !== 0 && isHuge(pmd)) {
        pt.setPmd(va, fix(pmd));
      } else {
        const t = pt.pteTable(va);
        if (t !== undefined) {
          for (let a = va; a < pmdEnd; a += PAGE_SIZE) {
            const i = Math.floor(a / PAGE_SIZE) % PTRS_PER_PTE;
            t[i] = fix(t[i] as number);
          }
        }
      }
      va = pmdEnd;
    }
  }

  /** @internal Make a writable-or-not present entry for a VMA. */
  mkVmaPte(vma: Vma, pfn: number, write: boolean): number {
    return mkPte(pfn, write && (vma.flags & VM.WRITE) !== 0);
  }

  /** @internal Make a device-private entry. */
  mkDevicePrivate(pfn: number, write: boolean): number {
    return mkSwpEntry(SWP.DEVICE_PRIVATE, pfn, write);
  }
}
