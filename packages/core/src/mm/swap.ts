/**
 * Swap-out of anonymous pages and swap-in on fault.
 *
 * **Design: no swap cache; swap-in maps every sharer.** The kernel keeps a swapped-in page in the
 * swap cache so that each sharer's later fault finds it (do_swap_page → swap_cache_get_folio),
 * and drops it from the cache once the slot's count allows. hmmkit models the same end state
 * without the cache: a slot remembers the anon_vma and page index of the page that went out
 * (a swapped-out page has no `struct page` left to carry its rmap), so the first fault on any
 * sharer walks that anon_vma, finds every PTE holding the same swap entry and maps the new page
 * into all of them at once. Counts stay exact at every step: the slot's swap count equals the
 * number of entries holding it; after swap-in the page's mapcount and refcount equal the number
 * of sharers mapped, and the slot is freed (frontswap invalidated). Consequences, all
 * kernel-compatible: one major fault (`pgmajfault`) and one read (`pswpin` or `zswpin`) per page
 * however many processes share it; a page mapped by several processes comes back read-only and
 * not anon-exclusive (the next write COWs, as after fork); a page with a single mapping comes back
 * writable and exclusive (the kernel's `RMAP_EXCLUSIVE` case of do_swap_page). Should a sharer not
 * be found through the anon_vma (it cannot happen with hmmkit's VMA operations, but the count
 * decides, not the walk), the slot keeps its remaining count and its bytes are written to the
 * device, so no later fault loses data.
 *
 * **Swap-out** ({@link Swap.swapOutFolio}) of one isolated, order-0 anonymous page: refuse a page
 * that may be DMA-pinned (activate), that someone holds a reference on beyond its mappings (keep),
 * whose lock is taken (keep), or when the device is full (activate); else allocate a slot
 * (add_to_swap), replace every mapping found through the rmap with the swap entry
 * (try_to_unmap; mirrors get MMU_NOTIFY_CLEAR first), write it out (swap_writepage: the
 * frontswap backend first, else the device) and free the page. If a mapping cannot be removed the
 * entries are restored and the slot freed.
 *
 * **Fault guard.** Fault handlers allocate while they hold a page they have not referenced (the
 * COW source in do_wp_page); the kernel protects it with a folio reference, hmmkit's handlers with
 * {@link Swap.faultMm}/{@link Swap.faultVa}, set by the CPU access loop around each fault: reclaim
 * never unmaps a page mapped at the faulting address.
 *
 * @see mm/vmscan.c (shrink_folio_list: add_to_swap, try_to_unmap, pageout), mm/rmap.c
 *      (try_to_unmap_one), mm/memory.c (do_swap_page), mm/swap_state.c, mm/page_io.c
 */
import { VM_FAULT } from "../memremap/memremap";
import { PAGE_SIZE, PG } from "../phys/page-state";
import { BugError, HmmError } from "../sim/errors";
import type { Mm } from "./mm";
import type { MmCore } from "./mm-core";
import { MMU_NOTIFY, mmuNotifyRange } from "./mmu-notifier";
import { entryPayload, isHuge, isPresent, mkPte, mkSwpEntry, PTE, SWP, swpType } from "./page-table";
import { SwapInfo } from "./swapfile";
import { VM, type Vma } from "./vma";

/** What reclaim should do with a folio after a swap-out attempt. @see enum folio_references, shrink_folio_list's labels */
export const SWAPOUT = {
  /** Swapped out and freed. */
  RECLAIMED: 0,
  /** Put back on the inactive list (locked, referenced elsewhere, not mapped). @see keep_locked */
  KEEP: 1,
  /** Move to the active list (pinned, swap full, not anonymous). @see activate_locked */
  ACTIVATE: 2,
} as const;

/** A swap-out outcome. @see shrink_folio_list */
export type SwapoutResult = (typeof SWAPOUT)[keyof typeof SWAPOUT];

/**
 * The swap layer of a machine (reach it as `machine.mm.swap`).
 *
 * Context: synchronous; never awaits.
 * @see mm/swap_state.c, mm/swapfile.c
 */
export class Swap {
  /** The swap device, once {@link Swap.swapon} ran (`swapMiB` > 0). */
  device: SwapInfo | undefined;
  /** Address space of the fault being handled by the CPU access loop (reclaim spares its page). */
  faultMm: Mm | undefined;
  /** Page-aligned address of that fault. */
  faultVa = -1;

  /** @param core - the mm layer. */
  constructor(private readonly core: MmCore) {}

  /**
   * Enable a swap device of `nslots` slots (slot 0 is its header).
   * @param nslots - slots, >= 2.
   * @returns the device.
   * @throws HmmError EBUSY if a device is enabled; EINVAL for a bad size.
   * @see sys_swapon
   */
  swapon(nslots: number): SwapInfo {
    if (this.device !== undefined) throw new HmmError("EBUSY", "a swap device is already enabled", "nslots");
    this.device = new SwapInfo(0, nslots, this.core.vmstat);
    return this.device;
  }

  /**
   * Whether anonymous pages can be reclaimed now (a device with a free slot).
   * @returns true if so. @see can_reclaim_anon_pages
   */
  canReclaimAnon(): boolean {
    const d = this.device;
    return d !== undefined && d.nrSwapPages > 0;
  }

  /**
   * Swap out one isolated order-0 anonymous page (see the file comment).
   * @param pfn - a page isolated from the LRU (its isolation reference held by the caller).
   * @returns RECLAIMED (the page and the isolation reference are gone), or KEEP / ACTIVATE (the
   *   caller puts it back; nothing changed).
   * @see shrink_folio_list (the anonymous, swap-backed path)
   */
  swapOutFolio(pfn: number): SwapoutResult {
    const core = this.core;
    const ps = core.pages;
    const dev = this.device;
    const f = ps.flags[pfn] as number;
    if (!(f & PG.anon) || f & (PG.head | PG.tail)) return SWAPOUT.ACTIVATE;
    if (f & PG.unevictable) return SWAPOUT.ACTIVATE;
    if (core.migration.folioMaybeDmaPinned(pfn)) return SWAPOUT.ACTIVATE;
    if (dev === undefined || dev.nrSwapPages === 0) return SWAPOUT.ACTIVATE;
    const mapcount = ps.mapcount[pfn] as number;
    // Expected references: one per mapping plus the isolation reference.
    if (mapcount === 0 || (ps.refcount[pfn] as number) !== mapcount + 1) return SWAPOUT.KEEP;
    if (!core.refs.trylockPage(pfn)) return SWAPOUT.KEEP;
    // A page mapped at the address being faulted is in use by the fault handler.
    let guarded = false;
    const sites: Array<[Mm, Vma, number]> = [];
    core.rmap.walk(pfn, (mm, vma, va) => {
      if (vma.shared) return false;
      const pmd = mm.pt.getPmd(va);
      if (pmd === 0 || isHuge(pmd)) return false;
      const e = mm.pt.getPte(va);
      if (e === 0 || entryPayload(e) !== pfn || !(isPresent(e) || swpType(e) === 0)) return false;
      if (mm === this.faultMm && va === this.faultVa) guarded = true;
      sites.push([mm, vma, va]);
      return false;
    });
    if (guarded || sites.length !== mapcount) {
      core.refs.unlockPage(pfn);
      return SWAPOUT.KEEP;
    }
    // add_to_swap: the slot starts with count 1, taken by the first entry.
    const slot = dev.getSwapPage({ mapping: ps.mapping[pfn] as number, index: ps.index[pfn] as number });
    const swp = mkSwpEntry(SWP.SWAP, slot, false);
    let first = true;
    for (const [mm, vma, va] of sites) {
      const e = mm.pt.getPte(va);
      mmuNotifyRange(mm, va, va + PAGE_SIZE, MMU_NOTIFY.CLEAR);
      if ((e % 256) & PTE.DIRTY) ps.flags[pfn] = (ps.flags[pfn] as number) | PG.dirty;
      mm.pt.setPte(va, swp);
      if (!first) dev.swapDuplicate(slot);
      first = false;
      ps.mapcount[pfn] = (ps.mapcount[pfn] as number) - 1;
      if (!vma.shared) mm.rssAnon--;
      core.refs.putPage(pfn);
    }
    if ((ps.refcount[pfn] as number) !== 1 || (ps.mapcount[pfn] as number) !== 0) {
      throw new BugError("swapout-refs", `pfn ${pfn} keeps refcount ${ps.refcount[pfn]} mapcount ${ps.mapcount[pfn]} after unmap`);
    }
    // pageout → swap_writepage: frontswap first, else the device. Real bytes move.
    const contents = core.contents;
    dev.swapWritepage(slot, pfn, (p, dst) => contents.read(p, 0, dst));
    // The page is clean now and nothing maps it: free it with the isolation reference.
    ps.flags[pfn] = (ps.flags[pfn] as number) & ~(PG.isolated | PG.dirty | PG.active | PG.referenced);
    core.refs.unlockPage(pfn);
    core.refs.putPage(pfn);
    return SWAPOUT.RECLAIMED;
  }

  /**
   * Swap-in on a fault at a swap entry: read the slot into a new page and map it into every entry
   * that holds the slot (see the file comment).
   * @param mm - faulting address space. @param vma - its VMA. @param va - faulting address.
   * @param entry - the swap entry found there. @param write - store access.
   * @returns 0 (retry the access) or VM_FAULT_OOM.
   * @throws BugError if the slot is not in use (a stale swap entry).
   * @see do_swap_page
   */
  doSwapPage(mm: Mm, vma: Vma, va: number, entry: number, write: boolean): number {
    const core = this.core;
    const ps = core.pages;
    const dev = this.device;
    const slot = entryPayload(entry);
    const addr = va - (va % PAGE_SIZE);
    if (dev === undefined) throw new BugError("no-swap", `swap entry at 0x${va.toString(16)} without a swap device`);
    if (dev.swapCount(slot) === 0) throw new BugError("swap-entry-stale", `swap entry for free slot ${slot} at 0x${va.toString(16)}`);
    const pfn = core.allocUserPage(false);
    if (pfn < 0) return VM_FAULT.OOM;
    if (mm.pt.getPte(addr) !== entry) {
      // Changed while we allocated: let the access retry.
      core.refs.putPage(pfn);
      return 0;
    }
    core.vmstat.c.pgmajfault++;
    const contents = core.contents;
    dev.swapReadpage(slot, pfn, (p, src) => contents.write(p, 0, src));
    const mapping = dev.slotMapping[slot] as number;
    const index = dev.slotIndex[slot] as number;
    const sites: Array<[Mm, Vma, number]> = [];
    const obj = core.rmap.get(mapping);
    if (obj !== undefined) {
      for (const m of obj.mms) {
        for (const v of m.vmas) {
          if (v.mapping !== mapping) continue;
          const a = v.addressOf(index);
          if (a < v.start || a >= v.end) continue;
          const e = m.pt.getPte(a);
          if (e !== 0 && swpType(e) === SWP.SWAP && entryPayload(e) === slot) sites.push([m, v, a]);
        }
      }
    }
    if (!sites.some(([m, , a]) => m === mm && a === addr)) sites.push([mm, vma, addr]);
    const count = sites.length;
    const exclusive = count === 1 && dev.swapCount(slot) === 1;
    core.rmap.addNewAnon(pfn, mapping === 0 ? vma.mapping : mapping, mapping === 0 ? vma.pageIndex(addr) : index, false);
    ps.mapcount[pfn] = count;
    ps.refcount[pfn] = count;
    let fl = (ps.flags[pfn] as number) | PG.dirty;
    if (!exclusive) fl &= ~PG.anonExclusive;
    ps.flags[pfn] = fl;
    core.vmstat.c.nr_anon_pages++;
    core.lru.add(pfn);
    for (const [m, v, a] of sites) {
      const w = exclusive && (v.flags & VM.WRITE) !== 0;
      let e = mkPte(pfn, w);
      if (m === mm && a === addr) e += PTE.YOUNG + (w && write ? PTE.DIRTY : 0);
      if ((v.flags & VM.READ) === 0) e -= PTE.PRESENT;
      m.pt.setPte(a, e);
      m.rssAnon++;
    }
    if (!dev.swapFree(slot, count) && (dev.onDevice[slot] as number) === 0) {
      dev.keepOnDevice(slot, (dst) => contents.read(pfn, 0, dst));
    }
    return 0;
  }

  /**
   * A page-table entry holding `slot` went away (zap): drop its swap count.
   * @param slot - the entry's slot. @see free_swap_and_cache
   */
  freeEntry(slot: number): void {
    const dev = this.device;
    if (dev === undefined) throw new BugError("no-swap", `swap entry for slot ${slot} without a swap device`);
    dev.swapFree(slot);
  }

  /**
   * fork copied an entry holding `slot`: add a swap count.
   * @param slot - the entry's slot. @see swap_duplicate (copy_nonpresent_pte)
   */
  dupEntry(slot: number): void {
    const dev = this.device;
    if (dev === undefined) throw new BugError("no-swap", `swap entry for slot ${slot} without a swap device`);
    dev.swapDuplicate(slot);
  }
}
