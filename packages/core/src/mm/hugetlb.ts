/**
 * HugeTLB: a pool of persistent 2 MiB pages, mapped by `MAP_HUGETLB` private anonymous mappings.
 *
 * The pool is sized like `/proc/sys/vm/nr_hugepages` ({@link Hugetlb.setNrHugepages}, or the
 * `hugepages` machine option at boot): each page is an order-9 compound block taken from the buddy
 * allocator, so growing the pool can stop short on a fragmented machine. Pool pages are never on an
 * LRU list: reclaim, swap, compaction and khugepaged leave them alone.
 *
 * A private mapping reserves one pool page per 2 MiB at mmap time (ENOMEM when the pool cannot
 * cover it); the first fault of each 2 MiB consumes the owner's reservation, and unmapping gives
 * back the reservations not yet used. A forked child owns no reservations: its copy-on-write
 * faults take unreserved pages and get SIGBUS when there are none; when the owner's copy finds the
 * pool empty, the owner takes the page back from the children (their later faults there are
 * SIGBUS), as unmap_ref_private does. Pages are mapped by PMD leaves
 * (the x86 2 MiB hugetlb entry), read-only after a read fault and writable after a write fault;
 * a write to a page shared with a fork copies the whole 2 MiB page.
 *
 * Differences from the kernel, on purpose: only the default 2 MiB size; no surplus pages
 * (overcommit), no MAP_SHARED or hugetlbfs files, no MAP_NORESERVE; hugetlb pages do not migrate
 * (compaction, CMA and offlining treat them as unmovable); mremap of a hugetlb mapping is EINVAL;
 * MADV_DONTNEED does not give a dropped page's reservation back.
 *
 * @see mm/hugetlb.c, Documentation/admin-guide/mm/hugetlbpage.rst
 */
import { VM_FAULT } from "../memremap/memremap";
import { GFP } from "../phys/page-alloc";
import { HPAGE_PMD_NR, HPAGE_PMD_ORDER, PG } from "../phys/page-state";
import { BugError, einval } from "../sim/errors";
import type { Mm } from "./mm";
import type { MmCore } from "./mm-core";
import { MMU_NOTIFY, mmuNotifyRange } from "./mmu-notifier";
import { entryPayload, isHuge, isPresent, isWrite, mkPte, PMD_SIZE, PTE, swpType, withBits } from "./page-table";
import { VM, type Vma } from "./vma";

/**
 * The HugeTLB pool of one machine and the fault, zap and fork paths of hugetlb mappings.
 * Reach it as `machine.mm.hugetlb`.
 * @remarks Departure: one 2 MiB size, no surplus pages, private anonymous mappings only (no
 * hugetlbfs files or MAP_SHARED), and pool pages never migrate.
 * @see struct hstate
 */
export class Hugetlb {
  /** Free pool pages (heads, refcount 0), most recently freed last. @see hstate.hugepage_freelists */
  private readonly free: number[] = [];
  /** Pages in the pool, free or in use. @see hstate.nr_huge_pages (HugePages_Total) */
  nrHugepages = 0;
  /** Free pages promised to mappings that have not faulted them yet. @see hstate.resv_huge_pages (HugePages_Rsvd) */
  resvHugepages = 0;
  /** The size asked for last; pages in use above it go back to the buddy allocator when freed. */
  private target = 0;

  /** @param core - the mm layer. */
  constructor(private readonly core: MmCore) {}

  /** Free pool pages. @returns HugePages_Free. @see hstate.free_huge_pages */
  get freeHugepages(): number {
    return this.free.length;
  }

  /**
   * Resize the pool, as a write to `/proc/sys/vm/nr_hugepages` does. Growing takes order-9 blocks
   * from the buddy allocator (with compaction) until `count` or the first failure; shrinking
   * returns free, unreserved pages at once and the rest as they are freed.
   * @param count - the wanted number of 2 MiB pages, >= 0.
   * @returns the pool size now (may be short of `count`).
   * @throws HmmError EINVAL when `count` is not a non-negative integer.
   * @see set_max_huge_pages
   */
  setNrHugepages(count: number): number {
    if (!Number.isInteger(count) || count < 0) einval("count", `a non-negative integer, got ${count}`);
    const core = this.core;
    const ps = core.pages;
    this.target = count;
    while (this.nrHugepages < count) {
      const head = core.alloc.allocPages(HPAGE_PMD_ORDER, GFP.COMP);
      if (head < 0) break;
      ps.refcount[head] = 0;
      ps.flags[head] = (ps.flags[head] as number) | PG.hugetlb;
      this.free.push(head);
      this.nrHugepages++;
    }
    while (this.nrHugepages > count && this.free.length > this.resvHugepages) {
      this.dissolve(this.free.pop() as number);
    }
    return this.nrHugepages;
  }

  /**
   * Whether `n` more pages can be reserved.
   * @param n - huge pages. @returns true if the free, unreserved pool pages cover them.
   * @see hugetlb_acct_memory
   */
  canReserve(n: number): boolean {
    return this.free.length - this.resvHugepages >= n;
  }

  /**
   * Reserve pool pages for a new private mapping and record them on its VMA.
   * @param vma - the new hugetlb VMA (2 MiB aligned).
   * @throws BugError `hugetlb-resv` when the pool cannot cover it (check {@link Hugetlb.canReserve} first).
   * @see hugetlb_reserve_pages
   */
  reserve(vma: Vma): void {
    const n = (vma.end - vma.start) / PMD_SIZE;
    if (!this.canReserve(n))
      throw new BugError("hugetlb-resv", `reserving ${n} huge pages with ${this.free.length - this.resvHugepages} available`);
    this.resvHugepages += n;
    const resv = new Set<number>();
    for (let a = vma.start; a < vma.end; a += PMD_SIZE) resv.add(a);
    vma.hugetlbResv = resv;
  }

  /**
   * Give back the reservations a VMA still holds (it is being unmapped).
   * @param vma - a hugetlb VMA leaving its address space.
   * @see hugetlb_vm_op_close
   */
  unreserve(vma: Vma): void {
    const resv = vma.hugetlbResv;
    if (resv === undefined) return;
    this.resvHugepages -= resv.size;
    vma.hugetlbResv = undefined;
    while (this.nrHugepages > this.target && this.free.length > this.resvHugepages) this.dissolve(this.free.pop() as number);
  }

  /**
   * Handle a fault in a hugetlb VMA.
   * @param mm - address space. @param vma - the hugetlb VMA. @param va - faulting address.
   * @param write - store access.
   * @returns 0, or VM_FAULT_SIGBUS when the pool has no page for it.
   * @see hugetlb_fault
   */
  fault(mm: Mm, vma: Vma, va: number, write: boolean): number {
    const haddr = va - (va % PMD_SIZE);
    const pmd = mm.pt.getPmd(haddr);
    if (pmd === 0) return this.noPage(mm, vma, haddr, write);
    if (!isHuge(pmd)) throw new BugError("hugetlb-pte", `PTE table under hugetlb VMA at 0x${haddr.toString(16)}`);
    if (!isPresent(pmd)) {
      // A PROT_NONE entry the VMA now permits.
      if (swpType(pmd) !== 0) return VM_FAULT.SIGBUS;
      mm.pt.setPmd(haddr, withBits(pmd, PTE.PRESENT, 0));
      return 0;
    }
    if (write && !isWrite(pmd)) return this.wp(mm, vma, haddr, pmd);
    return 0;
  }

  /** First touch of a 2 MiB range: a zeroed pool page, read-only unless the fault writes. @see hugetlb_no_page */
  private noPage(mm: Mm, vma: Vma, haddr: number, write: boolean): number {
    // The owner took a page back from this (forked) mapping: the kernel kills rather than
    // silently hand out a zeroed page where data was.
    if (vma.hugetlbUnmapped) return VM_FAULT.SIGBUS;
    const head = this.allocFolio(vma, haddr);
    if (head < 0) return VM_FAULT.SIGBUS;
    this.core.contents.clearPages(head, HPAGE_PMD_NR);
    this.core.rmap.addNewAnon(head, vma.mapping, vma.pageIndex(haddr), true);
    const w = write && (vma.flags & VM.WRITE) !== 0;
    mm.pt.setPmd(haddr, mkPte(head, w) + PTE.HUGE + PTE.YOUNG + (w ? PTE.DIRTY : 0));
    mm.hugetlbUsage += HPAGE_PMD_NR;
    return 0;
  }

  /**
   * A write to a read-only hugetlb PMD: reuse the page if only this mapping has it, else copy it.
   * When the pool has no page for the copy and this VMA owns the mapping's reservations, the page
   * is taken back from the forked mappings (unmap_ref_private) and reused; anyone else gets SIGBUS.
   * @see hugetlb_wp
   */
  private wp(mm: Mm, vma: Vma, haddr: number, pmd: number): number {
    const core = this.core;
    const ps = core.pages;
    const old = entryPayload(pmd);
    const reuse = () => {
      ps.flags[old] = (ps.flags[old] as number) | PG.anonExclusive;
      mm.pt.setPmd(haddr, withBits(pmd, PTE.WRITE | PTE.DIRTY | PTE.YOUNG, 0));
      return 0;
    };
    if (core.rmap.entireMapcount(old) === 1) return reuse();
    const head = this.copyFolio(vma, haddr, old);
    if (head < 0) {
      // The owner takes the page back from its children and reuses it; anyone else is SIGBUS.
      if (vma.hugetlbResv === undefined) return VM_FAULT.SIGBUS;
      this.unmapRefPrivate(vma, haddr, old);
      return core.rmap.entireMapcount(old) === 1 ? reuse() : VM_FAULT.SIGBUS;
    }
    // Mirrors of the old page (a device that hmm_range_fault-ed it) must drop it.
    mmuNotifyRange(mm, haddr, haddr + PMD_SIZE, MMU_NOTIFY.CLEAR);
    mm.pt.setPmd(haddr, mkPte(head, true) + PTE.HUGE + PTE.YOUNG + PTE.DIRTY);
    core.rmap.setEntireMapcount(old, core.rmap.entireMapcount(old) - 1);
    core.refs.putPage(old);
    return 0;
  }

  /**
   * Unmap `old` from every forked mapping of the owner's VMA at `haddr` and mark those VMAs so
   * that a later fault there is SIGBUS.
   * @see unmap_ref_private, HPAGE_RESV_UNMAPPED
   */
  private unmapRefPrivate(vma: Vma, haddr: number, old: number): void {
    const obj = this.core.rmap.get(vma.mapping);
    if (obj === undefined) return;
    const index = vma.pageIndex(haddr);
    for (const omm of obj.mms) {
      for (const v of omm.vmas) {
        // Other owners keep their pages (they own reservations); shared mappings do not exist here.
        if (v === vma || v.mapping !== vma.mapping || !(v.flags & VM.HUGETLB) || v.hugetlbResv !== undefined) continue;
        const a = v.addressOf(index);
        if (a < v.start || a >= v.end) continue;
        const pmd = omm.pt.getPmd(a);
        if (pmd === 0 || (!isPresent(pmd) && swpType(pmd) !== 0) || entryPayload(pmd) !== old) continue;
        v.hugetlbUnmapped = true;
        mmuNotifyRange(omm, a, a + PMD_SIZE, MMU_NOTIFY.CLEAR);
        this.zapPmd(omm, a, pmd);
      }
    }
  }

  /**
   * Remove every hugetlb PMD in `[start, end)` (2 MiB aligned: the callers keep hugetlb ranges so).
   * @param mm - address space. @param start - first byte. @param end - one past last.
   * @see unmap_hugepage_range
   */
  zapRange(mm: Mm, start: number, end: number): void {
    for (let va = start; va < end; va += PMD_SIZE) {
      const pmd = mm.pt.getPmd(va);
      if (pmd !== 0) this.zapPmd(mm, va, pmd);
    }
  }

  /**
   * Remove a hugetlb PMD and release its page (to the pool once the last reference goes).
   * @param mm - address space. @param haddr - 2 MiB aligned address. @param pmd - the entry.
   * @see __unmap_hugepage_range
   */
  zapPmd(mm: Mm, haddr: number, pmd: number): void {
    const core = this.core;
    mm.pt.setPmd(haddr, 0);
    if (!isPresent(pmd) && swpType(pmd) !== 0) return;
    const head = entryPayload(pmd);
    core.rmap.setEntireMapcount(head, core.rmap.entireMapcount(head) - 1);
    mm.hugetlbUsage -= HPAGE_PMD_NR;
    core.refs.putPage(head);
  }

  /**
   * Fork: share each mapped page copy-on-write (both sides read-only); a page that may be
   * DMA-pinned is copied for the child at once, as the kernel does.
   * @param src - parent. @param dst - child. @param vma - the parent's VMA.
   * @param dvma - the child's (no reservations).
   * @throws HmmError ENOMEM when a pinned page cannot be copied (the fork fails).
   * @see copy_hugetlb_page_range
   */
  copyRange(src: Mm, dst: Mm, vma: Vma, dvma: Vma): void {
    const core = this.core;
    const ps = core.pages;
    dvma.hugetlbUnmapped = false; // hugetlb_dup_vma_private
    for (let haddr = vma.start; haddr < vma.end; haddr += PMD_SIZE) {
      const pmd = src.pt.getPmd(haddr);
      if (pmd === 0) continue;
      if (!isPresent(pmd) && swpType(pmd) !== 0) continue;
      const head = entryPayload(pmd);
      if (core.forker.maybeDmaPinned(head)) {
        const np = this.copyFolio(dvma, haddr, head);
        if (np < 0) throw core.enomem("fork: no huge page to copy a pinned hugetlb page");
        const w = (dvma.flags & VM.WRITE) !== 0 && isWrite(pmd);
        dst.pt.setPmd(haddr, mkPte(np, w) + PTE.HUGE + PTE.DIRTY);
      } else {
        ps.refcount[head] = (ps.refcount[head] as number) + 1;
        core.rmap.setEntireMapcount(head, core.rmap.entireMapcount(head) + 1);
        ps.flags[head] = (ps.flags[head] as number) & ~PG.anonExclusive;
        const ro = withBits(pmd, 0, PTE.WRITE);
        src.pt.setPmd(haddr, ro);
        dst.pt.setPmd(haddr, withBits(ro, 0, PTE.YOUNG));
      }
      dst.hugetlbUsage += HPAGE_PMD_NR;
    }
  }

  /**
   * A pool page whose last reference went: back to the free list (or to the buddy allocator when
   * the pool is above its asked size).
   * @param head - a hugetlb folio head with refcount 0.
   * @throws BugError `bad-page` if it is still mapped.
   * @see free_huge_folio
   */
  freeFolio(head: number): void {
    const core = this.core;
    const ps = core.pages;
    if (core.rmap.entireMapcount(head) !== 0) throw new BugError("bad-page", `hugetlb pfn ${head} freed while mapped`);
    ps.mapping[head] = 0;
    ps.index[head] = 0;
    ps.flags[head] = PG.head | PG.hugetlb;
    if (this.nrHugepages > this.target && this.free.length >= this.resvHugepages) this.dissolve(head);
    else this.free.push(head);
  }

  /** A new page for `vma` at `haddr` holding a copy of `old`, rmapped but not mapped; -1 if the pool has none. */
  private copyFolio(vma: Vma, haddr: number, old: number): number {
    const head = this.allocFolio(vma, haddr);
    if (head < 0) return -1;
    this.core.contents.copyPages(head, old, HPAGE_PMD_NR);
    this.core.rmap.addNewAnon(head, vma.mapping, vma.pageIndex(haddr), true);
    return head;
  }

  /** Take a page for `vma` at `haddr`: its reservation if it holds one, else an unreserved one; -1 if none. */
  private allocFolio(vma: Vma, haddr: number): number {
    const resv = vma.hugetlbResv;
    if (resv?.delete(haddr)) this.resvHugepages--;
    else if (this.free.length - this.resvHugepages <= 0) return -1;
    const head = this.free.pop();
    if (head === undefined) throw new BugError("hugetlb-resv", "a reserved huge page is missing from the pool");
    this.core.pages.refcount[head] = 1;
    return head;
  }

  /** Return a pool page to the buddy allocator. @see update_and_free_hugetlb_folio */
  private dissolve(head: number): void {
    const ps = this.core.pages;
    ps.flags[head] = (ps.flags[head] as number) & ~PG.hugetlb;
    this.nrHugepages--;
    this.core.alloc.freePages(head, HPAGE_PMD_ORDER, true);
  }
}
