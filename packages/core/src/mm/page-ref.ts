/**
 * Page references and the page lock.
 *
 * `getPage`/`putPage` move a folio's refcount (kept on the head). When it reaches zero the folio
 * is freed: a ZONE_DEVICE folio goes to its pgmap's `folioFree` (the driver's free list) and stays
 * at refcount 0; a RAM folio leaves the LRU and returns to the buddy allocator.
 *
 * The page lock is a flag (PG_locked) plus a wait queue per locked page, kept only while someone
 * waits. `trylockPage` never waits; `lockPage` awaits. Unlocking wakes every waiter (they re-check,
 * as folio_wait_bit does), in the order they began to wait.
 *
 * @see include/linux/page_ref.h, mm/swap.c (__folio_put), mm/filemap.c (folio_lock, folio_unlock)
 */

import type { PageAllocator } from "../phys/page-alloc";
import { type PageState, PG } from "../phys/page-state";
import { BugError } from "../sim/errors";
import type { VmStat } from "../sim/vmstat";
import type { Lru } from "./lru";

/** What the memremap layer does when a ZONE_DEVICE folio's last reference goes. */
export type ZoneDeviceFree = (head: number) => void;

/**
 * Reference counting and page locks of a machine.
 * @see include/linux/page_ref.h
 */
export class PageRefs {
  private readonly waiters = new Map<number, (() => void)[]>();
  /** Set by memremap: frees a ZONE_DEVICE folio to its pgmap. */
  zoneDeviceFree: ZoneDeviceFree | undefined;
  /** Set by the mm layer: returns a HugeTLB folio to its pool. @see free_huge_folio */
  hugetlbFree: ((head: number) => void) | undefined;

  /**
   * @param pages - per-page state. @param alloc - the buddy allocator. @param lru - LRU lists. @param vmstat - counters.
   */
  constructor(
    private readonly pages: PageState,
    private readonly alloc: PageAllocator,
    private readonly lru: Lru,
    private readonly vmstat: VmStat,
  ) {}

  /**
   * Take a reference on the folio containing `pfn`.
   * @param pfn - any page of the folio.
   * @throws BugError `get-free-page` if the folio is free (refcount 0).
   * @see folio_get
   */
  getPage(pfn: number): void {
    const ps = this.pages;
    const head = ps.compoundHead(pfn);
    const rc = ps.refcount[head] as number;
    if (rc <= 0) throw new BugError("get-free-page", `get_page on pfn ${pfn} with refcount ${rc}`);
    ps.refcount[head] = rc + 1;
  }

  /**
   * Drop a reference; free the folio when it was the last.
   * @param pfn - any page of the folio.
   * @returns true if the folio was freed.
   * @throws BugError `put-free-page` on a refcount underflow (a double put).
   * @see folio_put, __folio_put
   */
  putPage(pfn: number): boolean {
    const ps = this.pages;
    const head = ps.compoundHead(pfn);
    const rc = (ps.refcount[head] as number) - 1;
    if (rc < 0) throw new BugError("put-free-page", `put_page on pfn ${pfn}: refcount underflow (double free?)`);
    ps.refcount[head] = rc;
    if (rc > 0) return false;
    this.freeFolio(head);
    return true;
  }

  /**
   * Free a folio whose refcount is zero.
   * @param head - folio head.
   * @see __folio_put, free_zone_device_folio
   */
  freeFolio(head: number): void {
    const ps = this.pages;
    const f = ps.flags[head] as number;
    if (f & PG.zoneDevice) {
      if (this.zoneDeviceFree === undefined) throw new BugError("zone-device-free", `no memremap layer to free device pfn ${head}`);
      this.zoneDeviceFree(head);
      return;
    }
    if (f & PG.locked) throw new BugError("free-locked-page", `freeing locked pfn ${head}`);
    if (f & PG.hugetlb) {
      if (this.hugetlbFree === undefined) throw new BugError("hugetlb-free", `no hugetlb layer to free pfn ${head}`);
      this.hugetlbFree(head);
      return;
    }
    if (f & PG.lru) this.lru.del(head);
    const order = f & PG.head ? (ps.order[head] as number) : 0;
    if (f & PG.anon) this.vmstat.c.nr_anon_pages -= 1 << order;
    // freePages clears the flags, the head's fields and the entire mapcount slot (head + 1's pin
    // count) after checking that nothing that must be clear (locked, lru, mapcount) is set.
    this.alloc.freePages(head, order, true);
  }

  /**
   * Try to lock a page without waiting.
   * @param pfn - page (the folio head for large folios). @returns true if it is now locked by the caller.
   * @see folio_trylock
   */
  trylockPage(pfn: number): boolean {
    const ps = this.pages;
    const f = ps.flags[pfn] as number;
    if (f & PG.locked) return false;
    ps.flags[pfn] = f | PG.locked;
    return true;
  }

  /**
   * Lock a page, waiting while someone else holds it.
   * @param pfn - page. @returns resolves once the caller holds the lock.
   * @see folio_lock
   */
  async lockPage(pfn: number): Promise<void> {
    while (!this.trylockPage(pfn)) await this.waitUnlocked(pfn);
  }

  /**
   * Unlock a page and wake its waiters.
   * @param pfn - a locked page.
   * @throws BugError `unlock-unlocked` if it was not locked.
   * @see folio_unlock
   */
  unlockPage(pfn: number): void {
    const ps = this.pages;
    const f = ps.flags[pfn] as number;
    if (!(f & PG.locked)) throw new BugError("unlock-unlocked", `unlock of pfn ${pfn}, which is not locked`);
    ps.flags[pfn] = f & ~PG.locked;
    if (this.waiters.size === 0) return;
    const w = this.waiters.get(pfn);
    if (w !== undefined) {
      this.waiters.delete(pfn);
      for (const wake of w) wake();
    }
  }

  /**
   * Whether a page is locked.
   * @param pfn - page. @returns PG_locked. @see folio_test_locked
   */
  isLocked(pfn: number): boolean {
    return ((this.pages.flags[pfn] as number) & PG.locked) !== 0;
  }

  /**
   * Wait until the page is unlocked (returns at once if it is).
   * @param pfn - page. @returns resolves after the next unlock.
   * @see folio_wait_locked, migration_entry_wait
   */
  waitUnlocked(pfn: number): Promise<void> {
    if (!this.isLocked(pfn)) return Promise.resolve();
    return new Promise<void>((resolve) => {
      let w = this.waiters.get(pfn);
      if (w === undefined) {
        w = [];
        this.waiters.set(pfn, w);
      }
      w.push(resolve);
    });
  }

  /** Number of pages someone waits on (leak checks). */
  get waitingPages(): number {
    return this.waiters.size;
  }
}
