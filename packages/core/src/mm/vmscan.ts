/**
 * Page reclaim: LRU aging, background reclaim (kswapd) and direct reclaim.
 *
 * **Aging.** Each node has an inactive and an active anonymous list (lru.ts). When the inactive
 * list is low against the active one (`inactive * ratio < active`, ratio = √(10 · GiB of the
 * lists), at least 1: inactive_is_low), {@link Vmscan.shrinkActiveList} moves folios from the
 * active tail to the inactive head, clearing their PTEs' accessed (young) bits on the way
 * (`pgdeactivate`). {@link Vmscan.shrinkInactiveList} isolates folios from the inactive tail
 * (`pgscan_kswapd` / `pgscan_direct`) and decides per folio as folio_check_references does:
 * accessed PTEs found (and cleared) ⇒ the folio is marked referenced and kept for another trip
 * round the inactive list, or activated when it was already referenced or is mapped young more
 * than once (`pgactivate`); no accessed PTE ⇒ reclaim: swap it out (swap.ts) and free it
 * (`pgsteal_*`). A THP is split first (as shrink_folio_list does without THP_SWAP) and its base
 * pages are reclaimed one by one. Pages that may be DMA-pinned, unevictable pages, pages mapped
 * at the address a fault is handling, and everything when no swap slot is free are activated or
 * kept, never reclaimed; device pages are never on an LRU list. Only anonymous pages are
 * reclaimed (shmem pages are activated: hmmkit has no shmem swap).
 *
 * **kswapd.** The allocator calls `onLowWatermark` when a zone falls below its low watermark;
 * {@link Vmscan.wakeupKswapd} schedules the node's kswapd on the machine's clock. Each kswapd
 * event reclaims one batch (SWAP_CLUSTER_MAX pages) and, unless every zone of the node is back
 * at its high watermark, schedules the next batch {@link KSWAPD_BATCH_NS} later. A run
 * (`pageoutrun`) ends when the node is balanced or after MAX_RECLAIM_RETRIES batches without
 * progress (kswapd_failures). kswapd only runs when the clock runs (`machine.run()`).
 *
 * **Direct reclaim.** A failed allocation's slow path calls {@link Vmscan.tryToFreePages}
 * (`allocstall_normal`) through `MmCore.shrinkers`: shrink the node at falling priorities (12 → 0,
 * scanning `list size >> priority` pages, at least a batch) until SWAP_CLUSTER_MAX pages are
 * reclaimed. Orders above PAGE_ALLOC_COSTLY_ORDER are left to compaction.
 *
 * @see mm/vmscan.c (shrink_active_list, shrink_inactive_list, shrink_folio_list,
 *      folio_check_references, inactive_is_low, balance_pgdat, kswapd, wakeup_kswapd,
 *      try_to_free_pages), mm/rmap.c (folio_referenced)
 */
import type { Zone } from "../phys/page-alloc";
import { PG } from "../phys/page-state";
import type { SimEvent } from "../sim/clock";
import { LRU_ACTIVE_ANON, LRU_INACTIVE_ANON } from "./lru";
import type { MmCore } from "./mm-core";
import { entryPayload, isHuge, isPresent, PTE, swpType, withBits } from "./page-table";
import { SWAPOUT } from "./swap";

/** Pages reclaimed (and isolated) per batch. @see SWAP_CLUSTER_MAX */
export const SWAP_CLUSTER_MAX = 32;
/** The first (lowest) reclaim priority: scan `size >> 12`. @see DEF_PRIORITY */
export const DEF_PRIORITY = 12;
/** Batches without progress after which kswapd gives up until woken again. @see MAX_RECLAIM_RETRIES */
export const MAX_RECLAIM_RETRIES = 16;
/** Orders above this are not worth direct reclaim (compaction serves them). @see PAGE_ALLOC_COSTLY_ORDER */
export const PAGE_ALLOC_COSTLY_ORDER = 3;
/** Virtual time between two kswapd batches, in ns (hmmkit's model of one batch's cost). @see kswapd, balance_pgdat */
export const KSWAPD_BATCH_NS = 50_000;

/** What folio_check_references decided. @see enum folio_references */
const FOLIOREF = { RECLAIM: 0, KEEP: 1, ACTIVATE: 2 } as const;

/**
 * Reclaim for one machine (reach it as `machine.mm.vmscan`).
 *
 * Context: synchronous; kswapd runs as clock events.
 * @see mm/vmscan.c
 */
export class Vmscan {
  private readonly kswapd = new Map<number, SimEvent>();
  private readonly failures = new Map<number, number>();

  /** @param core - the mm layer. */
  constructor(private readonly core: MmCore) {}

  /**
   * Wake the node's kswapd (the allocator's low-watermark hook). A no-op when it is already
   * scheduled or nothing can be reclaimed.
   * @param zone - the zone that fell below its low watermark.
   * @see wakeup_kswapd
   */
  wakeupKswapd(zone: Zone): void {
    const nid = zone.nid;
    if (this.kswapd.has(nid) || !this.core.swap.canReclaimAnon()) return;
    this.core.vmstat.c.pageoutrun++;
    this.failures.set(nid, 0);
    this.kswapd.set(
      nid,
      this.core.clock.schedule(0, () => this.kswapdBatch(nid)),
    );
  }

  /** Whether the node's kswapd is scheduled. @param nid - node. @returns true if awake. */
  kswapdAwake(nid: number): boolean {
    return this.kswapd.has(nid);
  }

  /** Cancel every kswapd event (machine teardown). @see kswapd_stop */
  stop(): void {
    for (const ev of this.kswapd.values()) this.core.clock.cancel(ev);
    this.kswapd.clear();
  }

  private kswapdBatch(nid: number): void {
    this.kswapd.delete(nid);
    if (this.nodeBalanced(nid)) return;
    let reclaimed = 0;
    for (let prio = DEF_PRIORITY; prio >= 0 && reclaimed === 0; prio -= 4) reclaimed = this.shrinkNode(nid, prio, true, SWAP_CLUSTER_MAX);
    const fails = reclaimed > 0 ? 0 : (this.failures.get(nid) ?? 0) + 1;
    this.failures.set(nid, fails);
    if (this.nodeBalanced(nid) || fails >= MAX_RECLAIM_RETRIES || !this.core.swap.canReclaimAnon()) return;
    this.kswapd.set(
      nid,
      this.core.clock.schedule(KSWAPD_BATCH_NS, () => this.kswapdBatch(nid)),
    );
  }

  /**
   * Whether every zone of a node has at least its high watermark free.
   * @param nid - node. @returns true if balanced. @see pgdat_balanced
   */
  nodeBalanced(nid: number): boolean {
    for (const z of this.core.alloc.zones) if (z.nid === nid && z.freePages < z.watermark.high) return false;
    return true;
  }

  /**
   * Direct reclaim for a failed allocation.
   * @param zone - the zone that failed. @param order - the allocation's order.
   * @returns true if any page was reclaimed.
   * @see try_to_free_pages, do_try_to_free_pages
   */
  tryToFreePages(zone: Zone, order: number): boolean {
    if (order > PAGE_ALLOC_COSTLY_ORDER || !this.core.swap.canReclaimAnon()) return false;
    this.core.vmstat.c.allocstall_normal++;
    let reclaimed = 0;
    for (let prio = DEF_PRIORITY; prio >= 0 && reclaimed < SWAP_CLUSTER_MAX; prio--) {
      reclaimed += this.shrinkNode(zone.nid, prio, false, SWAP_CLUSTER_MAX - reclaimed);
    }
    return reclaimed > 0;
  }

  /**
   * Shrink one node's anonymous LRU lists at a priority.
   * @param nid - node. @param priority - 0..DEF_PRIORITY (scan `size >> priority`, at least a batch).
   * @param kswapd - background (true) or direct reclaim. @param nrToReclaim - stop after this many.
   * @returns pages reclaimed.
   * @see shrink_node, shrink_lruvec
   */
  shrinkNode(nid: number, priority: number, kswapd: boolean, nrToReclaim: number): number {
    const core = this.core;
    const vec = core.lru.vecs[nid];
    if (vec === undefined || !core.swap.canReclaimAnon()) return 0;
    let reclaimed = 0;
    if (this.inactiveIsLow(nid)) {
      this.shrinkActiveList(nid, Math.max(SWAP_CLUSTER_MAX, Math.floor((vec.nrPages[LRU_ACTIVE_ANON] as number) / 2 ** priority)));
    }
    let nrScan = Math.min(
      vec.nrPages[LRU_INACTIVE_ANON] as number,
      Math.max(SWAP_CLUSTER_MAX, Math.floor((vec.nrPages[LRU_INACTIVE_ANON] as number) / 2 ** priority)),
    );
    while (nrScan > 0 && reclaimed < nrToReclaim && core.swap.canReclaimAnon()) {
      const batch = Math.min(SWAP_CLUSTER_MAX, nrScan);
      nrScan -= batch;
      reclaimed += this.shrinkInactiveList(nid, batch, kswapd, nrToReclaim - reclaimed);
      if ((vec.nrPages[LRU_INACTIVE_ANON] as number) === 0 && (vec.nrPages[LRU_ACTIVE_ANON] as number) > 0) {
        this.shrinkActiveList(nid, SWAP_CLUSTER_MAX);
      }
    }
    return reclaimed;
  }

  /**
   * Whether the inactive list is too small against the active one.
   * @param nid - node. @returns true if the active list should be aged. @see inactive_is_low
   */
  inactiveIsLow(nid: number): boolean {
    const vec = this.core.lru.vecs[nid];
    if (vec === undefined) return false;
    const inactive = vec.nrPages[LRU_INACTIVE_ANON] as number;
    const active = vec.nrPages[LRU_ACTIVE_ANON] as number;
    const gb = Math.floor(((inactive + active) * 4096) / (1 << 30));
    const ratio = gb > 0 ? Math.floor(Math.sqrt(10 * gb)) : 1;
    return inactive * ratio < active;
  }

  /**
   * Age the active list: move up to `nrToScan` pages from its tail to the inactive head, clearing
   * their accessed bits.
   * @param nid - node. @param nrToScan - base pages to move.
   * @returns pages deactivated.
   * @see shrink_active_list
   */
  shrinkActiveList(nid: number, nrToScan: number): number {
    const core = this.core;
    const ps = core.pages;
    let moved = 0;
    while (moved < nrToScan) {
      const head = core.lru.tailOf(nid, LRU_ACTIVE_ANON);
      if (head < 0) break;
      const n = ps.folioNrPages(head);
      core.lru.del(head);
      if (n === 1) this.folioReferenced(head);
      core.lru.add(head, false);
      moved += n;
    }
    core.vmstat.c.pgdeactivate += moved;
    return moved;
  }

  /**
   * Scan up to `nrToScan` pages from the inactive tail and reclaim what is not referenced.
   * @param nid - node. @param nrToScan - pages to isolate. @param kswapd - background reclaim.
   * @param nrToReclaim - stop reclaiming after this many (the rest are put back).
   * @returns pages reclaimed.
   * @see shrink_inactive_list, isolate_lru_folios, shrink_folio_list
   */
  shrinkInactiveList(nid: number, nrToScan: number, kswapd: boolean, nrToReclaim = Number.POSITIVE_INFINITY): number {
    const core = this.core;
    const ps = core.pages;
    const vm = core.vmstat.c;
    const list: number[] = [];
    let guard = 0;
    while (list.length < nrToScan && guard++ < nrToScan * 4) {
      const head = core.lru.tailOf(nid, LRU_INACTIVE_ANON);
      if (head < 0) break;
      const n = ps.folioNrPages(head);
      if (n > 1) {
        // split_folio_to_list: reclaim the base pages.
        if (core.huge.splitFolio(head, 0)) {
          for (let p = head; p < head + n && list.length < nrToScan; p++) {
            const f = ps.flags[p] as number;
            if (f & PG.lru && !(f & PG.active) && core.lru.isolate(p)) list.push(p);
          }
        } else {
          core.lru.del(head);
          core.lru.add(head, true);
          vm.pgactivate += n;
        }
        continue;
      }
      if (!core.lru.isolate(head)) break;
      list.push(head);
    }
    if (kswapd) vm.pgscan_kswapd += list.length;
    else vm.pgscan_direct += list.length;
    let reclaimed = 0;
    for (const pfn of list) {
      let r: number = reclaimed >= nrToReclaim ? FOLIOREF.KEEP : this.checkReferences(pfn);
      if (r === FOLIOREF.RECLAIM) {
        const s = core.swap.swapOutFolio(pfn);
        if (s === SWAPOUT.RECLAIMED) {
          reclaimed++;
          continue;
        }
        r = s === SWAPOUT.ACTIVATE ? FOLIOREF.ACTIVATE : FOLIOREF.KEEP;
      }
      if (r === FOLIOREF.ACTIVATE) {
        core.lru.add(pfn, true);
        vm.pgactivate++;
      } else core.lru.add(pfn, false);
      core.refs.putPage(pfn);
    }
    if (kswapd) vm.pgsteal_kswapd += reclaimed;
    else vm.pgsteal_direct += reclaimed;
    return reclaimed;
  }

  /**
   * Reclaim specific pages now, ignoring their accessed bits (MADV_PAGEOUT's path). Pages that
   * are not on an LRU list, may be DMA-pinned, are locked or cannot be swapped are left where
   * they are; a THP is split first.
   * @param pfns - pages (any page of a folio).
   * @returns pages reclaimed (swapped out and freed).
   * @see reclaim_pages, reclaim_folio_list (ignore_references)
   * @example
   * ```ts
   * const pfn = ...; // a page mapped by a task
   * m.mm.vmscan.reclaimPages([pfn]); // now a swap entry; the next access swaps it in
   * ```
   */
  reclaimPages(pfns: readonly number[]): number {
    const core = this.core;
    const ps = core.pages;
    let reclaimed = 0;
    for (const pfn of pfns) {
      if (!ps.pfnValid(pfn)) continue;
      let head = ps.compoundHead(pfn);
      if ((ps.refcount[head] as number) <= 0) continue;
      if (!((ps.flags[head] as number) & PG.lru)) continue;
      if (ps.folioNrPages(head) > 1) {
        if (!core.huge.splitFolio(head, 0)) continue;
        head = pfn;
        if (!((ps.flags[head] as number) & PG.lru)) continue;
      }
      const active = ((ps.flags[head] as number) & PG.active) !== 0;
      if (!core.lru.isolate(head)) continue;
      if (core.swap.swapOutFolio(head) === SWAPOUT.RECLAIMED) {
        reclaimed++;
        continue;
      }
      core.lru.add(head, active);
      core.refs.putPage(head);
    }
    return reclaimed;
  }

  /** RECLAIM, KEEP or ACTIVATE, as folio_check_references for an anonymous folio. */
  private checkReferences(pfn: number): number {
    const ps = this.core.pages;
    const referencedPtes = this.folioReferenced(pfn);
    const f = ps.flags[pfn] as number;
    const referencedFolio = (f & PG.referenced) !== 0;
    ps.flags[pfn] = f & ~PG.referenced;
    if (!(f & PG.anon)) return FOLIOREF.ACTIVATE;
    if (referencedPtes > 0) {
      ps.flags[pfn] = (ps.flags[pfn] as number) | PG.referenced;
      return referencedFolio || referencedPtes > 1 ? FOLIOREF.ACTIVATE : FOLIOREF.KEEP;
    }
    return FOLIOREF.RECLAIM;
  }

  /**
   * Count and clear the accessed bits of every PTE mapping an order-0 page.
   * @param pfn - the page. @returns the number of young PTEs found. @see folio_referenced
   */
  folioReferenced(pfn: number): number {
    let young = 0;
    this.core.rmap.walk(pfn, (mm, _vma, va) => {
      const pmd = mm.pt.getPmd(va);
      if (pmd === 0 || isHuge(pmd)) return false;
      const t = mm.pt.pteTable(va);
      if (t === undefined) return false;
      const i = Math.floor(va / 4096) % 512;
      const e = t[i] as number;
      if (e === 0 || entryPayload(e) !== pfn || !(isPresent(e) || swpType(e) === 0)) return false;
      if ((e % 256) & PTE.YOUNG) {
        young++;
        t[i] = withBits(e, 0, PTE.YOUNG);
      }
      return false;
    });
    return young;
  }
}
