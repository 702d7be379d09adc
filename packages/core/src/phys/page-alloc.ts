/**
 * The buddy allocator: one per zone, orders 0..MAX_PAGE_ORDER, with watermarks.
 *
 * Free blocks are kept on per-order doubly-linked lists threaded through the pages' LRU link
 * fields (a free page is never on an LRU list, as in the kernel, where both use `page->lru`). A
 * free block's head has PG_buddy and its order in `order`. Freeing merges a block with its buddy
 * (`pfn ^ (1 << order)`) while the buddy is free at the same order, so fragmentation is real:
 * scattered order-0 allocations stop order-9 allocations from succeeding until compaction moves
 * them.
 *
 * Allocation takes the smallest non-empty order ≥ the request and splits it, returning the upper
 * halves to the lists (expand). An allocation succeeds only if the zone's free pages stay at or
 * above the requested watermark afterwards (`min` unless the caller asks otherwise); a zone below
 * `low` asks for background reclaim through `onLowWatermark`; on failure `onAllocFail` may reclaim
 * or compact and the allocation is retried once (the slow path).
 *
 * Refcounts: a block leaves the allocator with refcount 1 on its head (set_page_refcounted); it
 * returns through {@link PageAllocator.freePages} only with refcount 0 and no mappings.
 *
 * @see mm/page_alloc.c (__rmqueue_smallest, expand, __free_one_page), mm/mmzone.c
 */
import { BugError, einval } from "../sim/errors";
import type { TraceBus } from "../sim/events";
import type { VmStat } from "../sim/vmstat";
import type { Contents } from "./contents";
import { MAX_PAGE_ORDER, type PageState, PG, type PhysRegion } from "./page-state";

/** GFP-like allocation flags. @see include/linux/gfp_types.h */
export const GFP = {
  /** Zero the pages. @see __GFP_ZERO */
  ZERO: 1 << 0,
  /** Make an order > 0 block a compound folio. @see __GFP_COMP */
  COMP: 1 << 1,
  /** May dip below the min watermark (the kernel's ALLOC_HARDER/HIGH). @see __GFP_HIGH */
  HIGH: 1 << 2,
  /** Do not run the slow path (no reclaim or compaction). @see __GFP_NOWARN|~__GFP_DIRECT_RECLAIM */
  NORETRY: 1 << 3,
  /** Movable allocation: may come from a CMA area. @see __GFP_MOVABLE */
  MOVABLE: 1 << 4,
  /** Transparent-huge-page allocation (implies COMP). @see GFP_TRANSHUGE */
  TRANSHUGE: (1 << 1) | (1 << 5),
} as const;

/** Watermark levels in pages. @see enum zone_watermarks */
export interface Watermarks {
  /** Below this, only HIGH allocations succeed. @see WMARK_MIN */
  min: number;
  /** Below this, background reclaim is woken. @see WMARK_LOW */
  low: number;
  /** Background reclaim stops above this. @see WMARK_HIGH */
  high: number;
}

/**
 * A zone: a range of pfns with its own free lists and watermarks.
 * @see struct zone in include/linux/mmzone.h
 */
export class Zone {
  /** Free-list heads per order, as pfn + 1 (0 = empty). */
  readonly freeHead = new Float64Array(MAX_PAGE_ORDER + 1);
  /** Number of free blocks per order. @see free_area.nr_free */
  readonly nrFree = new Float64Array(MAX_PAGE_ORDER + 1);
  /** Free base pages in the zone. @see NR_FREE_PAGES */
  freePages = 0;
  /** Watermarks in pages. */
  readonly watermark: Watermarks;

  /**
   * @param id - index in the allocator.
   * @param name - e.g. `"Normal"` or `"Movable"`.
   * @param nid - node id.
   * @param startPfn - first pfn.
   * @param npages - pages spanned (= managed; hmmkit has no holes).
   */
  constructor(
    readonly id: number,
    readonly name: string,
    readonly nid: number,
    readonly startPfn: number,
    readonly npages: number,
  ) {
    // The kernel's min_free_kbytes = sqrt(lowmem_kbytes * 16), clamped to [128 KiB, 256 MiB];
    // low = min * 5/4, high = min * 3/2 (watermark_scale_factor aside).
    const kbytes = npages * 4;
    const minKb = Math.min(262144, Math.max(128, Math.floor(Math.sqrt(kbytes * 16))));
    const min = Math.floor(minKb / 4);
    this.watermark = { min, low: min + (min >> 2), high: min + (min >> 1) };
  }

  /**
   * Whether `pfn` is in the zone.
   * @param pfn - page.
   * @returns true if startPfn ≤ pfn < startPfn + npages.
   */
  contains(pfn: number): boolean {
    return pfn >= this.startPfn && pfn < this.startPfn + this.npages;
  }
}

/** Hooks the mm layer installs for the allocator's slow path. */
export interface AllocHooks {
  /** Free pages fell below the low watermark: wake background reclaim. @see wakeup_kswapd */
  onLowWatermark?: (zone: Zone) => void;
  /** An allocation failed: reclaim or compact synchronously; return true to retry. @see __alloc_pages_slowpath */
  onAllocFail?: (zone: Zone, order: number, gfp: number) => boolean;
}

/**
 * The machine's page allocator over every RAM zone.
 *
 * Context: synchronous; never awaits.
 * @see mm/page_alloc.c
 */
export class PageAllocator {
  /** Zones, in pfn order. */
  readonly zones: Zone[] = [];
  /** Hooks for reclaim/compaction; set by the mm layer. */
  hooks: AllocHooks = {};
  private inSlowPath = false;
  /** Open {@link PageAllocator.beginFreeBatch} calls. */
  private batchDepth = 0;
  /** Frees queued while a batch is open: block heads, orders, count. */
  private batchPfns = new Float64Array(512);
  private batchOrders = new Uint8Array(512);
  private batchN = 0;

  /**
   * @param pages - per-page state.
   * @param vmstat - counters (nr_free_pages, pgalloc_normal, pgfree).
   * @param contents - page bytes, for __GFP_ZERO.
   * @param bus - tracepoints (mm_page_alloc, mm_page_free), optional.
   */
  constructor(
    private readonly pages: PageState,
    private readonly vmstat: VmStat,
    private readonly contents: Contents,
    private readonly bus?: TraceBus,
  ) {}

  /**
   * Create a zone over a RAM region and free all its pages into it.
   * @param region - a RAM region of the page state.
   * @param name - zone name.
   * @returns the zone.
   * @see free_area_init, memblock_free_all
   */
  addZone(region: PhysRegion, name = "Normal"): Zone {
    if (region.kind !== "ram") einval("region", `a RAM region, got ${region.kind} ${region.name}`);
    const z = new Zone(this.zones.length, name, region.nid, region.basePfn, region.npages);
    this.zones.push(z);
    this.pages.zone.fill(z.id, region.basePfn, region.basePfn + region.npages);
    let pfn = region.basePfn;
    const end = region.basePfn + region.npages;
    while (pfn < end) {
      let order = MAX_PAGE_ORDER;
      while (order > 0 && ((pfn & ((1 << order) - 1)) !== 0 || pfn + (1 << order) > end)) order--;
      this.pushFree(z, pfn, order);
      z.freePages += 1 << order;
      this.vmstat.c.nr_free_pages += 1 << order;
      pfn += 1 << order;
    }
    return z;
  }

  /** Total free pages over all zones. */
  get nrFreePages(): number {
    if (this.batchN !== 0) this.drainFreeBatch();
    let n = 0;
    for (const z of this.zones) n += z.freePages;
    return n;
  }

  /** Total pages managed over all zones. */
  get totalPages(): number {
    let n = 0;
    for (const z of this.zones) n += z.npages;
    return n;
  }

  /**
   * Allocate `2^order` contiguous, naturally aligned pages.
   * @param order - 0..MAX_PAGE_ORDER.
   * @param gfp - {@link GFP} flags.
   * @param nid - preferred node (-1: any, lowest first).
   * @returns the head pfn with refcount 1, or -1 when no block is free (the kernel's NULL).
   * @throws HmmError EINVAL if `order` is out of range.
   * @see __alloc_pages, alloc_pages
   */
  allocPages(order: number, gfp = 0, nid = -1): number {
    if (!Number.isInteger(order) || order < 0 || order > MAX_PAGE_ORDER) {
      einval("order", `an integer in 0..${MAX_PAGE_ORDER}, got ${order}`);
    }
    if (this.batchN !== 0) this.drainFreeBatch();
    let pfn = this.tryZones(order, gfp, nid);
    if (pfn < 0 && !(gfp & GFP.NORETRY) && this.hooks.onAllocFail && !this.inSlowPath) {
      this.inSlowPath = true;
      try {
        for (let attempt = 0; attempt < 2 && pfn < 0; attempt++) {
          let retry = false;
          for (const z of this.zones) if ((nid < 0 || z.nid === nid) && this.hooks.onAllocFail(z, order, gfp)) retry = true;
          if (!retry) break;
          pfn = this.tryZones(order, gfp, nid);
        }
      } finally {
        this.inSlowPath = false;
      }
    }
    if (pfn < 0) return -1;
    this.prepNewPage(pfn, order, gfp);
    return pfn;
  }

  private tryZones(order: number, gfp: number, nid: number): number {
    const zones = this.zones;
    for (let i = 0; i < zones.length; i++) {
      const z = zones[i] as Zone;
      if (nid >= 0 && z.nid !== nid) continue;
      const pfn = this.rmqueue(z, order, gfp);
      if (pfn >= 0) return pfn;
    }
    if (nid >= 0) {
      for (const z of this.zones) {
        if (z.nid === nid) continue;
        const pfn = this.rmqueue(z, order, gfp);
        if (pfn >= 0) return pfn;
      }
    }
    return -1;
  }

  /**
   * Take a specific free block out of the allocator (for a CMA or reservation path that already
   * knows which pages it wants).
   * @param pfn - aligned head of the wanted block.
   * @param order - its order.
   * @returns true if every page of the block was free and is now allocated (refcount 1 on head).
   * @see alloc_contig_range (isolate_freepages_range)
   */
  allocRange(pfn: number, order: number, gfp = 0): boolean {
    if (this.batchN !== 0) this.drainFreeBatch();
    const n = 1 << order;
    const z = this.zones[this.pages.zone[pfn] as number];
    if (z === undefined || !z.contains(pfn) || !z.contains(pfn + n - 1)) return false;
    // Every page must lie inside a free block.
    for (let p = pfn; p < pfn + n; ) {
      const head = this.freeBlockOf(p);
      if (head < 0) return false;
      p = head + (1 << (this.pages.order[head] as number));
    }
    for (let p = pfn; p < pfn + n; ) {
      const head = this.freeBlockOf(p);
      const o = this.pages.order[head] as number;
      this.delFree(z, head, o);
      z.freePages -= 1 << o;
      this.vmstat.c.nr_free_pages -= 1 << o;
      // Give back the parts of the block outside [pfn, pfn+n).
      this.carve(z, head, o, pfn, pfn + n);
      p = head + (1 << o);
    }
    this.prepNewPage(pfn, order, gfp);
    return true;
  }

  /**
   * Whether `pfn` is currently free (inside a free buddy block).
   * @param pfn - page.
   * @returns true if free. @see PageBuddy, page_is_buddy
   */
  isFree(pfn: number): boolean {
    if (this.batchN !== 0) this.drainFreeBatch();
    return this.freeBlockOf(pfn) >= 0;
  }

  /**
   * Return a block to its zone, merging with free buddies.
   * @param pfn - head of the block (a folio head for compound pages).
   * @param order - the block's order.
   * @param fromPut - the caller just dropped the last reference (skips the double-free lookup).
   * @throws BugError `double-free` if the page is already free, `bad-page` if it is mapped,
   *   locked, referenced or on an LRU list.
   * @see __free_pages, __free_one_page, free_pages_prepare (bad_page)
   */
  freePages(pfn: number, order: number, fromPut = false): void {
    if (this.batchDepth > 0 && fromPut && !this.bus?.wants("mm_page_free")) {
      this.queueFree(pfn, order);
      return;
    }
    if (this.batchN !== 0) this.drainFreeBatch();
    this.freeBlock(pfn, order, fromPut);
  }

  private freeBlock(pfn: number, order: number, fromPut: boolean): void {
    const ps = this.pages;
    const n = 1 << order;
    const z = this.zones[ps.zone[pfn] as number];
    if (z === undefined || !z.contains(pfn)) throw new BugError("bad-page", `free of pfn ${pfn}, which is not in a RAM zone`);
    // A free block overlapping [pfn, pfn + n) either contains pfn (found by freeBlockOf) or
    // starts inside the range (its head has PG_buddy): one lookup plus a flag test per page. A
    // free that follows a refcount drop to zero (`fromPut`) cannot be a double free — a free page
    // has refcount 0 and its put would have underflowed — so it skips the lookup.
    if (!fromPut && this.freeBlockOf(pfn) >= 0) throw new BugError("double-free", `pfn ${pfn} freed twice`);
    // One pass that ORs together everything that must be zero; the page at fault is looked for
    // only when something is set.
    const flags = ps.flags;
    const mapcount = ps.mapcount;
    const refcount = ps.refcount;
    let bad = 0;
    for (let p = pfn; p < pfn + n; p++) {
      bad |= ((flags[p] as number) & (PG.buddy | PG.locked | PG.lru | PG.reserved)) | (mapcount[p] as number) | (refcount[p] as number);
    }
    if (bad !== 0) this.badFree(pfn, n);
    const end = pfn + n;
    if (n === 1) {
      ps.flags[pfn] = 0;
      ps.order[pfn] = 0;
      ps.mapping[pfn] = 0;
      ps.index[pfn] = 0;
      ps.private[pfn] = 0;
      ps.pincount[pfn] = 0;
      ps.owner[pfn] = 0;
    } else if ((flags[pfn] as number) & PG.head) {
      // Dissolve the compound folio (the kernel's free_tail_page_prepare). mapping, index, private
      // and the pin count are only ever set on a folio's head (the entire mapcount on head + 1),
      // and a split that hands them to former tails makes base pages of them: a folio's tails are
      // clean, so only the head's (and head + 1's) are cleared.
      ps.flags.fill(0, pfn, end);
      ps.order.fill(0, pfn, end);
      ps.mapping[pfn] = 0;
      ps.index[pfn] = 0;
      ps.private[pfn] = 0;
      ps.pincount[pfn] = 0;
      ps.pincount[pfn + 1] = 0;
      ps.owner.fill(0, pfn, end);
    } else {
      // A block of base pages: any of them may have been used on its own.
      ps.flags.fill(0, pfn, end);
      ps.order.fill(0, pfn, end);
      ps.mapping.fill(0, pfn, end);
      ps.index.fill(0, pfn, end);
      ps.private.fill(0, pfn, end);
      ps.pincount.fill(0, pfn, end);
      ps.owner.fill(0, pfn, end);
    }
    z.freePages += n;
    this.vmstat.c.nr_free_pages += n;
    this.vmstat.c.pgfree += n;
    if (this.bus?.wants("mm_page_free")) this.bus.emit("mm_page_free", { pfn, order });
    let head = pfn;
    let o = order;
    while (o < MAX_PAGE_ORDER) {
      const buddy = head ^ (1 << o);
      if (!z.contains(buddy)) break;
      const bf = ps.flags[buddy] as number;
      if (!(bf & PG.buddy) || (ps.order[buddy] as number) !== o) break;
      this.delFree(z, buddy, o);
      head = Math.min(head, buddy);
      o++;
    }
    this.pushFree(z, head, o);
  }

  /**
   * Open a free batch: until the matching {@link PageAllocator.endFreeBatch} (nested calls count),
   * a free that follows a last reference drop (`freePages(pfn, order, true)`) is queued instead of
   * done, unless `mm_page_free` is traced (every block then gets its own event). The queue is
   * drained, in order, by the outermost endFreeBatch and before anything else the allocator does
   * (allocating, freeing otherwise, answering `isFree` or `nrFreePages`), and a run of consecutive
   * order-0 pages in it is freed as the aligned blocks it is made of, each complete — and pushed
   * onto its free list — where the one-by-one frees would complete it: the allocator ends up
   * exactly as without the batch (same blocks, same free-list order, same counters), and a
   * 512-page run costs one merge instead of 512. Between begin and end the zones' `freePages`
   * fields lag the queued frees.
   * @see free_unref_folios, free_pcppages_bulk (the kernel frees through per-CPU lists in batches)
   */
  beginFreeBatch(): void {
    this.batchDepth++;
  }

  /**
   * Close a {@link PageAllocator.beginFreeBatch}; the outermost one frees what was queued.
   * @throws BugError `free-batch-unbalanced` without an open batch; as {@link PageAllocator.freePages}
   *   for a queued block in a bad state (found now, not when it was queued).
   */
  endFreeBatch(): void {
    if (this.batchDepth <= 0) throw new BugError("free-batch-unbalanced", "endFreeBatch without beginFreeBatch");
    if (--this.batchDepth === 0) this.drainFreeBatch();
  }

  private queueFree(pfn: number, order: number): void {
    if (this.batchN === this.batchPfns.length) {
      const pfns = new Float64Array(this.batchPfns.length * 2);
      const orders = new Uint8Array(pfns.length);
      pfns.set(this.batchPfns);
      orders.set(this.batchOrders);
      this.batchPfns = pfns;
      this.batchOrders = orders;
    }
    this.batchPfns[this.batchN] = pfn;
    this.batchOrders[this.batchN++] = order;
  }

  private drainFreeBatch(): void {
    const n = this.batchN;
    if (n === 0) return;
    this.batchN = 0;
    const pfns = this.batchPfns;
    const orders = this.batchOrders;
    for (let i = 0; i < n; ) {
      const pfn = pfns[i] as number;
      let j = i + 1;
      if ((orders[i] as number) === 0) {
        while (j < n && (orders[j] as number) === 0 && (pfns[j] as number) === pfn + (j - i)) j++;
      }
      if (j - i === 1) {
        this.freeBlock(pfn, orders[i] as number, true);
        i = j;
        continue;
      }
      // Split [pfn, pfn + len) into its maximal aligned blocks, lowest first, none across the end
      // of a zone (the buddy allocator never merges across one).
      const end = pfn + (j - i);
      for (let p = pfn; p < end; ) {
        const z = this.zones[this.pages.zone[p] as number];
        const stop = z === undefined ? p + 1 : Math.min(end, z.startPfn + z.npages);
        let o = 0;
        while (o < MAX_PAGE_ORDER && p % (2 << o) === 0 && p + (2 << o) <= stop) o++;
        this.freeBlock(p, o, true);
        p += 1 << o;
      }
      i = j;
    }
  }

  /** Report the first page of a block being freed that is in use or already free. @see bad_page */
  private badFree(pfn: number, n: number): never {
    const ps = this.pages;
    for (let p = pfn; p < pfn + n; p++) {
      const f = ps.flags[p] as number;
      if (f & PG.buddy) throw new BugError("double-free", `pfn ${p} freed twice`);
      if (f & (PG.locked | PG.lru | PG.reserved) || (ps.mapcount[p] as number) !== 0 || (ps.refcount[p] as number) !== 0) {
        throw new BugError(
          "bad-page",
          `freeing pfn ${p} in a bad state: flags=0x${f.toString(16)} refcount=${ps.refcount[p]} mapcount=${ps.mapcount[p]}`,
        );
      }
    }
    throw new BugError("bad-page", `freeing pfn ${pfn}: a page of the block changed while it was checked`);
  }

  /**
   * The zone a pfn belongs to.
   * @param pfn - page.
   * @returns the zone or undefined (device memory).
   */
  zoneOf(pfn: number): Zone | undefined {
    return this.zones[this.pages.zone[pfn] as number];
  }

  private freeBlockOf(pfn: number): number {
    const ps = this.pages;
    for (let o = 0; o <= MAX_PAGE_ORDER; o++) {
      const head = pfn - (pfn & ((1 << o) - 1));
      const f = ps.flags[head] as number;
      if (f & PG.buddy && (ps.order[head] as number) >= o) {
        return head + (1 << (ps.order[head] as number)) > pfn ? head : -1;
      }
    }
    return -1;
  }

  private carve(z: Zone, head: number, order: number, lo: number, hi: number): void {
    const n = 1 << order;
    if (head >= lo && head + n <= hi) return;
    if (head + n <= lo || head >= hi) {
      this.pushFree(z, head, order);
      z.freePages += n;
      this.vmstat.c.nr_free_pages += n;
      return;
    }
    const half = order - 1;
    this.carve(z, head, half, lo, hi);
    this.carve(z, head + (1 << half), half, lo, hi);
  }

  private rmqueue(z: Zone, order: number, gfp: number): number {
    const n = 1 << order;
    const wm = gfp & GFP.HIGH ? z.watermark.min >> 1 : z.watermark.min;
    if (z.freePages - n < wm) return -1;
    let o = order;
    while (o <= MAX_PAGE_ORDER && (z.freeHead[o] as number) === 0) o++;
    if (o > MAX_PAGE_ORDER) return -1;
    const pfn = (z.freeHead[o] as number) - 1;
    this.delFree(z, pfn, o);
    // expand: return upper halves
    while (o > order) {
      o--;
      this.pushFree(z, pfn + (1 << o), o);
    }
    z.freePages -= n;
    this.vmstat.c.nr_free_pages -= n;
    if (z.freePages < z.watermark.low && this.hooks.onLowWatermark) this.hooks.onLowWatermark(z);
    return pfn;
  }

  private prepNewPage(pfn: number, order: number, gfp: number): void {
    const ps = this.pages;
    const n = 1 << order;
    // Free pages have refcount and mapcount 0 (freePages checked every page) and no mapping, index,
    // private or pincount; only flags and order can hold the free lists' marks (PG_buddy and a
    // block order on former buddy heads).
    if (n === 1) {
      ps.flags[pfn] = 0;
      ps.mapcount[pfn] = 0;
      ps.order[pfn] = 0;
    } else if (gfp & GFP.COMP) {
      // prep_compound_page: head, then tails.
      ps.flags[pfn] = PG.head;
      ps.flags.fill(PG.tail, pfn + 1, pfn + n);
      ps.order.fill(order, pfn, pfn + n);
    } else {
      ps.flags.fill(0, pfn, pfn + n);
      ps.order.fill(0, pfn, pfn + n);
    }
    ps.refcount[pfn] = 1;
    if (gfp & GFP.ZERO) this.contents.clearPages(pfn, n);
    if (this.bus?.wants("mm_page_alloc")) this.bus.emit("mm_page_alloc", { pfn, order });
    this.vmstat.c.pgalloc_normal += n;
  }

  private pushFree(z: Zone, pfn: number, order: number): void {
    const ps = this.pages;
    ps.flags[pfn] = PG.buddy;
    ps.order[pfn] = order;
    const head = z.freeHead[order] as number;
    ps.lruPrev[pfn] = 0;
    ps.lruNext[pfn] = head;
    if (head !== 0) ps.lruPrev[head - 1] = pfn + 1;
    z.freeHead[order] = pfn + 1;
    z.nrFree[order] = (z.nrFree[order] as number) + 1;
  }

  private delFree(z: Zone, pfn: number, order: number): void {
    const ps = this.pages;
    const prev = ps.lruPrev[pfn] as number;
    const next = ps.lruNext[pfn] as number;
    if (prev !== 0) ps.lruNext[prev - 1] = next;
    else z.freeHead[order] = next;
    if (next !== 0) ps.lruPrev[next - 1] = prev;
    ps.lruPrev[pfn] = 0;
    ps.lruNext[pfn] = 0;
    ps.flags[pfn] = (ps.flags[pfn] as number) & ~PG.buddy;
    ps.order[pfn] = 0;
    z.nrFree[order] = (z.nrFree[order] as number) - 1;
  }
}
