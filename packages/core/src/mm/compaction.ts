/**
 * Memory compaction: move movable pages out of the way so that a free block of the wanted order
 * forms.
 *
 * Two scanners walk a zone towards each other one pageblock (512 pages) at a time. The
 * **migrate scanner** starts at the zone's low end and isolates movable pages: LRU folios
 * (unless they may be DMA-pinned, in which case they are skipped and counted — the kernel's
 * `page_count > page_mapcount + 1` test) and pinned-movable pages through their owner's `isolate`
 * op. The **free scanner** starts at the high end and takes free buddy blocks out of the allocator
 * as migration targets. Each batch of isolated pages is migrated with {@link Migration.migratePages}
 * into the free scanner's pages (compaction_alloc, which splits its isolated blocks to the order
 * asked for, so THPs move whole when a large enough block was isolated, else they are split).
 * After each pageblock the zone is checked: compaction succeeds as soon as a free block of the
 * wanted order exists (compact_finished), and stops when the scanners meet. Free pages left over
 * are returned to the allocator (release_freepages).
 *
 * Counters: `compact_migrate_scanned` and `compact_free_scanned` (pages looked at),
 * `compact_isolated` (pages isolated by either scanner), `compact_stall` (direct compactions),
 * `compact_success`/`compact_fail` (per run), plus `pgmigrate_*` through migration. Pinned pages
 * skipped have no vmstat counter in the kernel; they are counted in {@link CompactResult}.
 *
 * Simplifications: no pageblock migratetypes or skip bits, no async/sync modes (every run is
 * MIGRATE_SYNC-like), no deferral (`compact_defer_shift`): every call scans the whole zone.
 *
 * @see mm/compaction.c (compact_zone, isolate_migratepages_block, isolate_freepages_block,
 *      compaction_alloc, compact_finished, try_to_compact_pages)
 */
import { MIGRATE_REASON } from "../migrate/migrate";
import type { Zone } from "../phys/page-alloc";
import { MAX_PAGE_ORDER, PG } from "../phys/page-state";
import { einval } from "../sim/errors";
import type { MmCore } from "./mm-core";

/** Pages in a pageblock (the scanners' unit). @see pageblock_nr_pages */
export const PAGEBLOCK_NR_PAGES = 512;
/** Pages isolated before a batch is migrated. @see COMPACT_CLUSTER_MAX */
export const COMPACT_CLUSTER_MAX = 32;

/** How a compaction run ended. @see enum compact_result */
export const COMPACT = {
  /** Not enough free memory to compact into. @see COMPACT_SKIPPED */
  SKIPPED: "skipped",
  /** A free block of the wanted order exists. @see COMPACT_SUCCESS */
  SUCCESS: "success",
  /** The scanners met without forming the block. @see COMPACT_COMPLETE */
  COMPLETE: "complete",
} as const;

/** A compaction outcome. */
export type CompactStatus = (typeof COMPACT)[keyof typeof COMPACT];

/** What one {@link Compaction.compactZone} run did. @see struct compact_control */
export interface CompactResult {
  /** How it ended. */
  status: CompactStatus;
  /** Pages scanned by the migrate scanner. */
  migrateScanned: number;
  /** Pages scanned by the free scanner. */
  freeScanned: number;
  /** Pages isolated for migration. */
  isolated: number;
  /** Base pages migrated. */
  migrated: number;
  /** Base pages that failed to migrate. */
  failed: number;
  /** LRU folios skipped because they may be DMA-pinned (FOLL_PIN). */
  pinnedSkipped: number;
}

/**
 * Compaction for one machine (reach it as `machine.mm.compaction`).
 *
 * Context: synchronous; never awaits.
 * @see mm/compaction.c
 */
export class Compaction {
  /** @param core - the mm layer. */
  constructor(private readonly core: MmCore) {}

  /**
   * Compact a zone until a free block of `order` exists or the scanners meet.
   * @param zone - a zone of this machine's allocator.
   * @param order - the order wanted, 0..MAX_PAGE_ORDER.
   * @returns what happened; `status` is SUCCESS when a free block of `order` exists afterwards.
   * @throws HmmError EINVAL for a foreign zone or a bad order.
   * @see compact_zone
   * @example
   * ```ts
   * const r = m.mm.compaction.compactZone(m.alloc.zones[0]!, 9);
   * if (r.status === COMPACT.SUCCESS) m.alloc.allocPages(9, GFP.TRANSHUGE);
   * ```
   */
  compactZone(zone: Zone, order: number): CompactResult {
    const core = this.core;
    const alloc = core.alloc;
    const vm = core.vmstat.c;
    if (!alloc.zones.includes(zone)) einval("zone", "a zone of this machine's allocator");
    if (!Number.isInteger(order) || order < 0 || order > MAX_PAGE_ORDER)
      einval("order", `an integer in 0..${MAX_PAGE_ORDER}, got ${order}`);
    const res: CompactResult = {
      status: COMPACT.COMPLETE,
      migrateScanned: 0,
      freeScanned: 0,
      isolated: 0,
      migrated: 0,
      failed: 0,
      pinnedSkipped: 0,
    };
    if (this.finished(zone, order)) {
      res.status = COMPACT.SUCCESS;
      return res;
    }
    // compaction_suitable: migration needs free targets above the min watermark.
    if (zone.freePages < zone.watermark.min + (1 << order)) {
      res.status = COMPACT.SKIPPED;
      return res;
    }
    const ps = core.pages;
    const start = zone.startPfn;
    const end = zone.startPfn + zone.npages;
    let migratePfn = start;
    let freePfn = end - (end % PAGEBLOCK_NR_PAGES === 0 ? PAGEBLOCK_NR_PAGES : end % PAGEBLOCK_NR_PAGES);
    // Isolated free blocks per order (pfns; each page refcount 0 while isolated).
    const freeLists: number[][] = Array.from({ length: MAX_PAGE_ORDER + 1 }, () => []);
    let freeCount = 0;
    const isolateFree = (need: number): void => {
      while (freeCount < need && freePfn > migratePfn) {
        const blockEnd = Math.min(freePfn + PAGEBLOCK_NR_PAGES, end);
        for (let p = freePfn; p < blockEnd; ) {
          res.freeScanned++;
          vm.compact_free_scanned++;
          const f = ps.flags[p] as number;
          if (f & PG.buddy) {
            const o = ps.order[p] as number;
            if (alloc.allocRange(p, o)) {
              ps.refcount[p] = 0;
              (freeLists[o] as number[]).push(p);
              freeCount += 1 << o;
              res.isolated += 1 << o;
              vm.compact_isolated += 1 << o;
            }
            p += 1 << o;
          } else p++;
        }
        freePfn -= PAGEBLOCK_NR_PAGES;
      }
    };
    const compactionAlloc = (_src: number, o: number): number => {
      if (freeCount < 1 << o) isolateFree((1 << o) + COMPACT_CLUSTER_MAX);
      let k = o;
      while (k <= MAX_PAGE_ORDER && (freeLists[k] as number[]).length === 0) k++;
      if (k > MAX_PAGE_ORDER) return -1;
      const p = (freeLists[k] as number[]).pop() as number;
      while (k > o) {
        k--;
        (freeLists[k] as number[]).push(p + (1 << k));
      }
      freeCount -= 1 << o;
      ps.refcount[p] = 1;
      if (o > 0) ps.prepCompound(p, o);
      return p;
    };
    const compactionFree = (dst: number, o: number): void => {
      ps.refcount[dst] = 0;
      if (o > 0) ps.clearCompound(dst, o);
      ps.flags[dst] = 0;
      (freeLists[o] as number[]).push(dst);
      freeCount += 1 << o;
    };
    let list: number[] = [];
    const flush = (): void => {
      if (list.length === 0) return;
      const r = core.migration.migratePages(list, compactionAlloc, compactionFree, MIGRATE_REASON.COMPACTION);
      res.migrated += r.nrSucceeded;
      res.failed += r.nrFailed;
      list = [];
    };
    while (migratePfn < freePfn + PAGEBLOCK_NR_PAGES && migratePfn < end) {
      const blockEnd = Math.min(migratePfn + PAGEBLOCK_NR_PAGES, end, freePfn + PAGEBLOCK_NR_PAGES);
      for (let p = migratePfn; p < blockEnd; ) {
        res.migrateScanned++;
        vm.compact_migrate_scanned++;
        const f = ps.flags[p] as number;
        if (f & PG.buddy) {
          p += 1 << (ps.order[p] as number);
          continue;
        }
        const head = ps.compoundHead(p);
        const step = head + ps.folioNrPages(head) - p;
        if (f & PG.lru || (head !== p && (ps.flags[head] as number) & PG.lru)) {
          if (
            core.migration.folioMaybeDmaPinned(head) ||
            (ps.refcount[head] as number) > core.rmap.folioMapcount(head) + this.cacheRefs(head)
          ) {
            res.pinnedSkipped++;
          } else if (core.migration.isolateFolio(head) >= 0) {
            list.push(head);
            res.isolated += ps.folioNrPages(head);
            vm.compact_isolated += ps.folioNrPages(head);
          }
        } else if (f & PG.movableOps && !(f & PG.isolated)) {
          if (core.migration.isolateFolio(p) >= 0) {
            list.push(p);
            res.isolated++;
            vm.compact_isolated++;
          }
        }
        p += Math.max(1, step);
        if (list.length >= COMPACT_CLUSTER_MAX) flush();
      }
      flush();
      migratePfn += PAGEBLOCK_NR_PAGES;
      if (this.finished(zone, order)) {
        res.status = COMPACT.SUCCESS;
        break;
      }
    }
    flush();
    // release_freepages: give back what the free scanner took.
    for (let o = 0; o <= MAX_PAGE_ORDER; o++) {
      for (const p of freeLists[o] as number[]) alloc.freePages(p, o);
    }
    if (res.status !== COMPACT.SUCCESS && this.finished(zone, order)) res.status = COMPACT.SUCCESS;
    if (res.status === COMPACT.SUCCESS) vm.compact_success++;
    else vm.compact_fail++;
    return res;
  }

  /**
   * Direct compaction for a failed allocation: compact every zone of the node until one has a
   * free block of `order`.
   * @param order - the failed allocation's order. @param nid - node, or -1 for all.
   * @returns true if a block of `order` is now free somewhere.
   * @see try_to_compact_pages
   */
  tryToCompactPages(order: number, nid = -1): boolean {
    const core = this.core;
    core.vmstat.c.compact_stall++;
    for (const z of core.alloc.zones) {
      if (nid >= 0 && z.nid !== nid) continue;
      if (this.compactZone(z, order).status === COMPACT.SUCCESS) return true;
    }
    return false;
  }

  /** References a movable folio legitimately holds besides its mappings (the page cache's). */
  private cacheRefs(head: number): number {
    const ps = this.core.pages;
    return (ps.flags[head] as number) & PG.anon || (ps.mapping[head] as number) === 0 ? 0 : 1;
  }

  private finished(zone: Zone, order: number): boolean {
    for (let o = order; o <= MAX_PAGE_ORDER; o++) if ((zone.nrFree[o] as number) > 0) return true;
    return false;
  }
}
