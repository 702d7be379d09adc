/**
 * Migration of system pages to other system pages: the kernel's migrate_pages() as compaction,
 * CMA allocation, memory offlining and long-term pinning use it.
 *
 * Protocol (mm/migrate.c):
 *
 * 1. The caller **isolates** folios onto a list ({@link Migration.isolateFolio}): an LRU folio
 *    leaves its LRU list with an extra reference and PG_isolated (folio_isolate_lru); a
 *    pinned-movable page (pinpage / movable_ops) is isolated through its owner's `isolate` op with
 *    an extra reference and PG_isolated (isolate_movable_ops_page).
 * 2. {@link Migration.migratePages} makes up to `NR_MAX_MIGRATE_PAGES_RETRY` (10) passes over the
 *    list. For each LRU folio: trylock it (a locked folio is retried), refuse it while it may be
 *    DMA-pinned (FOLL_PIN: retried, then counted as failed), take a destination from the caller's
 *    `getNewFolio`, replace every mapping found through the rmap by a migration entry
 *    (try_to_migrate), check that only the expected references remain (the isolation reference,
 *    plus the page cache's for shmem) — if not, restore the mappings and retry — then copy the
 *    real bytes, move the mapping/index/flags (folio_migrate_mapping, folio_migrate_flags), point
 *    every migration entry at the destination (remove_migration_ptes), put the destination on the
 *    LRU and free the source. A large folio is migrated whole when `getNewFolio` gives a
 *    same-order destination, else it is split (split_folio_to_list) and its base pages migrated
 *    (`thp_migration_split`). A pinned-movable page is migrated by its owner's `migrate` op
 *    (Pinpage.migratePinpage); the core copies nothing for it.
 * 3. Folios still on the list after the passes (failed, or -EAGAIN every time) are put back
 *    (putback_movable_pages); the result counts successes and failures (`pgmigrate_success`,
 *    `pgmigrate_fail`, `thp_migration_*`).
 *
 * Refcount rules: the isolation reference is the caller's until migratePages returns; a
 * destination leaves `getNewFolio` with refcount 1 (its allocation reference) and is given back
 * with `putNewFolio` when unused. For a migrated anonymous folio the destination's allocation
 * reference is dropped after remapping (folio_putback_lru), so it ends with one reference per
 * mapping; for shmem it becomes the page cache's reference; for a pinned-movable page it becomes
 * the owning subsystem's reference, and the source's subsystem reference is dropped.
 *
 * Lock order: source folio lock, then destination lock. A CPU fault on a migration entry waits
 * for the source's lock (migration_entry_wait), which is dropped after the remap.
 *
 * @see mm/migrate.c (migrate_pages, migrate_pages_batch, migrate_folio_unmap, migrate_folio_move,
 *      remove_migration_ptes, putback_movable_pages), mm/rmap.c (try_to_migrate)
 */
import type { MmCore } from "../mm/mm-core";
import { MMU_NOTIFY, mmuNotifyRange } from "../mm/mmu-notifier";
import { entryPayload, isHuge, isPresent, isWrite, mkPte, mkSwpEntry, PMD_SIZE, PTE, SWP, swpType } from "../mm/page-table";
import { ShmemObject } from "../mm/rmap";
import { VM } from "../mm/vma";
import { GUP_PIN_COUNTING_BIAS, HPAGE_PMD_NR, PAGE_SIZE, PG } from "../phys/page-state";
import { BugError, ERRNO } from "../sim/errors";

/** Passes migratePages makes before a folio that keeps failing with -EAGAIN counts as failed. @see NR_MAX_MIGRATE_PAGES_RETRY */
export const NR_MAX_MIGRATE_PAGES_RETRY = 10;

/** Why pages migrate (the kernel's enum migrate_reason, as tracepoint text). @see include/linux/migrate_mode.h */
export const MIGRATE_REASON = {
  /** Compaction. @see MR_COMPACTION */
  COMPACTION: "compaction",
  /** Memory offlining. @see MR_MEMORY_HOTPLUG */
  MEMORY_HOTPLUG: "memory_hotplug",
  /** alloc_contig_range (CMA). @see MR_CONTIG_RANGE */
  CONTIG_RANGE: "contig_range",
  /** Long-term pinning moves pages out of movable/CMA memory first. @see MR_LONGTERM_PIN */
  LONGTERM_PIN: "longterm_pin",
  /** migrate_pages(2)/move_pages(2)-style requests. @see MR_SYSCALL */
  SYSCALL: "syscall",
} as const;

/** A migrate reason. @see enum migrate_reason */
export type MigrateReason = (typeof MIGRATE_REASON)[keyof typeof MIGRATE_REASON];

/**
 * Allocate a destination for `src` (a folio head) of `2^order` pages: the pfn of a page (or an
 * order-`order` compound folio head) with refcount 1, or -1 when none is available.
 * @see new_folio_t
 */
export type GetNewFolio = (src: number, order: number) => number;

/** Give back a destination that was not used (refcount 1, order as allocated). @see free_folio_t */
export type PutNewFolio = (dst: number, order: number) => void;

/** What {@link Migration.migratePages} did. */
export interface MigrateResult {
  /** Base pages migrated. @see ret_succeeded */
  nrSucceeded: number;
  /** Base pages not migrated (put back). The kernel's return value when >= 0. */
  nrFailed: number;
  /** Large folios split because no large destination was available. */
  nrThpSplit: number;
  /** -ENOMEM if the run stopped because `getNewFolio` failed, else 0. */
  err: number;
  /** Head pfns of the folios that were not migrated (put back). */
  failedPfns: number[];
}

const SPLIT = 1;

/**
 * Migration of system pages for one machine (reach it as `machine.mm.migration`).
 *
 * Context: synchronous; never awaits.
 * @see mm/migrate.c
 */
export class Migration {
  /** @param core - the mm layer. */
  constructor(private readonly core: MmCore) {}

  /**
   * Whether a folio may be DMA-pinned (FOLL_PIN): large folios by their pin count, small ones by
   * a refcount at or above GUP_PIN_COUNTING_BIAS (false positives allowed, no false negatives).
   * @param head - folio head.
   * @returns true if it may be pinned.
   * @see folio_maybe_dma_pinned
   */
  folioMaybeDmaPinned(head: number): boolean {
    const ps = this.core.pages;
    if ((ps.flags[head] as number) & PG.head) return (ps.pincount[head] as number) > 0;
    return (ps.refcount[head] as number) >= GUP_PIN_COUNTING_BIAS;
  }

  /**
   * Isolate the folio containing `pfn` for migration: an LRU folio leaves its list, a
   * pinned-movable page goes through its owner's `isolate` op. Either way it gains a reference
   * and PG_isolated.
   * @param pfn - any page of the folio.
   * @returns the head pfn if isolated; -1 if it is free, already isolated, neither LRU nor
   *   pinned-movable, or its owner refused.
   * @see isolate_folio_to_list, folio_isolate_lru, isolate_movable_ops_page
   */
  isolateFolio(pfn: number): number {
    const core = this.core;
    const ps = core.pages;
    const head = ps.compoundHead(pfn);
    const f = ps.flags[head] as number;
    if ((ps.refcount[head] as number) <= 0 || f & (PG.isolated | PG.zoneDevice | PG.reserved)) return -1;
    if (f & PG.movableOps) return core.pinpage.isolateMovableOpsPage(head) ? head : -1;
    if (f & PG.lru) return core.lru.isolate(head) ? head : -1;
    return -1;
  }

  /**
   * Return isolated folios to where they came from and drop the isolation references.
   * @param list - isolated folio heads.
   * @see putback_movable_pages
   */
  putbackMovablePages(list: readonly number[]): void {
    for (const head of list) this.putbackOne(head);
  }

  /**
   * Migrate a list of isolated folios (see the file comment for the protocol).
   * @param from - isolated folio heads (from {@link Migration.isolateFolio}); all are consumed:
   *   migrated, or put back.
   * @param getNewFolio - destination allocator.
   * @param putNewFolio - takes back a destination that was not used.
   * @param reason - why (tracepoint text).
   * @returns counts of migrated and failed base pages, split THPs and the failed heads.
   * @throws BugError if an entry is not an isolated folio head.
   * @see migrate_pages
   * @example
   * ```ts
   * const head = m.mm.migration.isolateFolio(pfn);
   * const r = m.mm.migration.migratePages([head], (_s, o) => m.alloc.allocPages(o, o ? GFP.COMP : 0),
   *   (d) => m.mm.refs.putPage(d), MIGRATE_REASON.SYSCALL);
   * ```
   */
  migratePages(from: readonly number[], getNewFolio: GetNewFolio, putNewFolio: PutNewFolio, reason: MigrateReason): MigrateResult {
    const core = this.core;
    const ps = core.pages;
    for (const h of from) {
      const f = ps.flags[h] as number;
      if (!(f & PG.isolated) || f & PG.tail) {
        throw new BugError("migrate-not-isolated", `migratePages got pfn ${h}, which is not an isolated folio head`);
      }
    }
    const res: MigrateResult = { nrSucceeded: 0, nrFailed: 0, nrThpSplit: 0, err: 0, failedPfns: [] };
    let list = [...from];
    const failed: number[] = [];
    for (let pass = 0; pass < NR_MAX_MIGRATE_PAGES_RETRY && list.length > 0 && res.err === 0; pass++) {
      const retry: number[] = [];
      for (let i = 0; i < list.length; i++) {
        const head = list[i] as number;
        const n = ps.folioNrPages(head);
        const rc = this.unmapAndMove(head, getNewFolio, putNewFolio, res, retry);
        if (rc === 0) {
          res.nrSucceeded += n;
          if (n > 1) core.vmstat.c.thp_migration_success++;
        } else if (rc === -ERRNO.EAGAIN) retry.push(head);
        else if (rc === SPLIT) {
          // The base pages were queued on `retry`.
        } else if (rc === -ERRNO.ENOMEM) {
          res.err = -ERRNO.ENOMEM;
          for (let j = i; j < list.length; j++) failed.push(list[j] as number);
          break;
        } else failed.push(head);
      }
      list = retry;
    }
    failed.push(...list);
    for (const head of failed) {
      const n = ps.folioNrPages(head);
      res.nrFailed += n;
      res.failedPfns.push(head);
      if (n > 1) core.vmstat.c.thp_migration_fail++;
      this.putbackOne(head);
    }
    core.vmstat.c.pgmigrate_success += res.nrSucceeded;
    core.vmstat.c.pgmigrate_fail += res.nrFailed;
    if (core.bus.wants("mm_migrate_pages")) core.bus.emit("mm_migrate_pages", { succeeded: res.nrSucceeded, failed: res.nrFailed, reason });
    return res;
  }

  private putbackOne(head: number): void {
    const core = this.core;
    const ps = core.pages;
    const f = ps.flags[head] as number;
    if (!(f & PG.isolated)) throw new BugError("putback-not-isolated", `putback of pfn ${head}, which is not isolated`);
    if (f & PG.movableOps || core.pinpage.wasMovableOps(head)) {
      core.pinpage.putbackMovableOpsPage(head);
      return;
    }
    ps.flags[head] = f & ~PG.isolated;
    if ((ps.refcount[head] as number) === 1 && core.rmap.folioMapcount(head) === 0 && !this.inPageCache(head)) {
      // Freed from under us: only the isolation reference is left.
      core.refs.putPage(head);
      return;
    }
    core.lru.putback(head, (p) => core.refs.putPage(p));
  }

  /** 0, -EAGAIN, -ENOMEM, SPLIT, or a permanent -errno. */
  private unmapAndMove(head: number, getNew: GetNewFolio, putNew: PutNewFolio, res: MigrateResult, retry: number[]): number {
    const core = this.core;
    const ps = core.pages;
    const f = ps.flags[head] as number;
    if (f & PG.movableOps || core.pinpage.wasMovableOps(head)) return this.moveMovableOps(head, getNew, putNew);
    const n = ps.folioNrPages(head);
    if ((ps.refcount[head] as number) === 1 && core.rmap.folioMapcount(head) === 0 && !this.inPageCache(head)) {
      // The folio was freed from under us: only our isolation reference is left.
      ps.flags[head] = f & ~(PG.isolated | PG.active);
      core.refs.putPage(head);
      return 0;
    }
    if (!core.refs.trylockPage(head)) return -ERRNO.EAGAIN;
    if (this.folioMaybeDmaPinned(head)) {
      core.refs.unlockPage(head);
      return -ERRNO.EAGAIN;
    }
    const order = n > 1 ? (ps.order[head] as number) : 0;
    const dst = getNew(head, order);
    if (dst < 0) {
      core.refs.unlockPage(head);
      return n > 1 ? this.splitForMigration(head, res, retry) : -ERRNO.ENOMEM;
    }
    if (ps.folioNrPages(dst) !== n || (ps.refcount[dst] as number) !== 1) {
      throw new BugError(
        "migrate-bad-dst",
        `getNewFolio returned pfn ${dst} (${ps.folioNrPages(dst)} pages, refcount ${ps.refcount[dst]}) for ${n} pages`,
      );
    }
    core.refs.trylockPage(dst);
    tryToMigrate(core, head);
    const shmem = this.inPageCache(head);
    const expected = 1 + (shmem ? 1 : 0);
    if (core.rmap.folioMapcount(head) !== 0 || (ps.refcount[head] as number) !== expected) {
      removeMigrationPtes(core, head, head);
      core.refs.unlockPage(dst);
      putNew(dst, order);
      core.refs.unlockPage(head);
      return -ERRNO.EAGAIN;
    }
    // folio_migrate_mapping + folio_migrate_flags + folio_copy: real bytes move.
    core.contents.copyPages(dst, head, n);
    const carry =
      (ps.flags[head] as number) &
      (PG.anon |
        PG.swapbacked |
        PG.uptodate |
        PG.dirty |
        PG.anonExclusive |
        PG.referenced |
        PG.active |
        PG.largeRmappable |
        PG.unevictable);
    const active = (carry & PG.active) !== 0;
    ps.flags[dst] = (ps.flags[dst] as number) | (carry & ~PG.active);
    ps.mapping[dst] = ps.mapping[head] as number;
    ps.index[dst] = ps.index[head] as number;
    if (carry & PG.anon) core.vmstat.c.nr_anon_pages += n;
    if (shmem) (core.rmap.get(ps.mapping[head] as number) as ShmemObject).pages.set(ps.index[head] as number, dst);
    removeMigrationPtes(core, head, dst);
    core.lru.add(dst, active);
    core.refs.unlockPage(dst);
    if (!shmem) core.refs.putPage(dst);
    // The source: the page cache's reference moved to dst; the isolation reference frees it.
    ps.flags[head] = (ps.flags[head] as number) & ~(PG.isolated | PG.active);
    core.refs.unlockPage(head);
    if (shmem) {
      ps.mapping[head] = 0;
      ps.refcount[head] = (ps.refcount[head] as number) - 1;
    }
    core.refs.putPage(head);
    return 0;
  }

  private inPageCache(head: number): boolean {
    const ps = this.core.pages;
    const m = ps.mapping[head] as number;
    if (m === 0 || (ps.flags[head] as number) & PG.anon) return false;
    const obj = this.core.rmap.get(m);
    return obj instanceof ShmemObject && obj.pages.get(ps.index[head] as number) === head;
  }

  private splitForMigration(head: number, res: MigrateResult, retry: number[]): number {
    const core = this.core;
    const ps = core.pages;
    const n = ps.folioNrPages(head);
    if (!core.refs.trylockPage(head)) return -ERRNO.EAGAIN;
    const ok = core.huge.splitFolio(head, 1);
    core.refs.unlockPage(head);
    if (!ok) return -ERRNO.EAGAIN;
    res.nrThpSplit++;
    core.vmstat.c.thp_migration_split++;
    // The head keeps the isolation reference and PG_isolated; isolate the surviving tails too.
    retry.push(head);
    for (let p = head + 1; p < head + n; p++) {
      if ((ps.refcount[p] as number) <= 0 || (ps.flags[p] as number) & PG.buddy) continue;
      if ((ps.flags[p] as number) & PG.lru) core.lru.del(p);
      ps.flags[p] = (ps.flags[p] as number) | PG.isolated;
      ps.refcount[p] = (ps.refcount[p] as number) + 1;
      retry.push(p);
    }
    return SPLIT;
  }

  private moveMovableOps(src: number, getNew: GetNewFolio, putNew: PutNewFolio): number {
    const core = this.core;
    const ps = core.pages;
    if (!((ps.flags[src] as number) & PG.movableOps)) {
      // The owner released the page while it was isolated: nothing left to move.
      ps.flags[src] = (ps.flags[src] as number) & ~PG.isolated;
      core.pinpage.forgetReleased(src);
      core.refs.putPage(src);
      return 0;
    }
    if (!core.refs.trylockPage(src)) return -ERRNO.EAGAIN;
    const dst = getNew(src, 0);
    if (dst < 0) {
      core.refs.unlockPage(src);
      return -ERRNO.ENOMEM;
    }
    core.refs.trylockPage(dst);
    const rc = core.pinpage.migratePinpage(src, dst);
    core.refs.unlockPage(dst);
    if (rc !== 0) {
      putNew(dst, 0);
      core.refs.unlockPage(src);
      return rc;
    }
    // Success: dst's allocation reference is now the owner's; the owner's reference on src goes,
    // then the isolation reference, which frees it.
    ps.flags[src] = (ps.flags[src] as number) & ~PG.isolated;
    core.refs.unlockPage(src);
    ps.refcount[src] = (ps.refcount[src] as number) - 1;
    core.refs.putPage(src);
    return 0;
  }
}

/** Marker bit (PTE.DIRTY's position, unused in migration entries) recording a PROT_NONE mapping. */
const PROT_NONE_MARK = PTE.DIRTY;

/**
 * Replace every mapping of a (locked) system folio by a migration entry, through the rmap: PMD
 * mappings by PMD migration entries, PTEs by PTE migration entries (writable when the PTE was),
 * dropping each mapping's mapcount and reference. Mirrors get MMU_NOTIFY_CLEAR first.
 * @param core - the mm layer.
 * @param head - a locked folio head.
 * @see try_to_migrate, try_to_migrate_one
 */
export function tryToMigrate(core: MmCore, head: number): void {
  const ps = core.pages;
  const n = ps.folioNrPages(head);
  if (n > 1 && core.rmap.entireMapcount(head) > 0) {
    core.rmap.walk(head, (mm, _vma, va) => {
      const haddr = va - (va % PMD_SIZE);
      const pmd = mm.pt.getPmd(haddr);
      if (pmd === 0 || !isHuge(pmd) || entryPayload(pmd) !== head || !(isPresent(pmd) || swpType(pmd) === 0)) return false;
      mmuNotifyRange(mm, haddr, haddr + PMD_SIZE, MMU_NOTIFY.CLEAR);
      if ((pmd % 256) & PTE.DIRTY) ps.flags[head] = (ps.flags[head] as number) | PG.dirty;
      mm.pt.setPmd(haddr, mkSwpEntry(SWP.MIGRATION, head, isWrite(pmd)) + PTE.HUGE);
      core.huge.entireMapcountDec(head);
      mm.rssAnon -= HPAGE_PMD_NR;
      core.refs.putPage(head);
      return false;
    });
  }
  for (let p = head; p < head + n; p++) {
    if ((ps.mapcount[p] as number) === 0) continue;
    core.rmap.walk(p, (mm, vma, va) => {
      const pmd = mm.pt.getPmd(va);
      if (pmd === 0 || isHuge(pmd)) return false;
      const e = mm.pt.getPte(va);
      if (e === 0 || entryPayload(e) !== p || !(isPresent(e) || swpType(e) === 0)) return false;
      mmuNotifyRange(mm, va, va + PAGE_SIZE, MMU_NOTIFY.CLEAR);
      if ((e % 256) & PTE.DIRTY) ps.flags[head] = (ps.flags[head] as number) | PG.dirty;
      mm.pt.setPte(va, mkSwpEntry(SWP.MIGRATION, p, isWrite(e)) + (isPresent(e) ? 0 : PROT_NONE_MARK));
      ps.mapcount[p] = (ps.mapcount[p] as number) - 1;
      if (!vma.shared) mm.rssAnon--;
      core.refs.putPage(p);
      return (ps.mapcount[p] as number) === 0;
    });
  }
}

/**
 * Replace the migration entries pointing at `srcHead`'s pages by present entries for `dstHead`'s
 * pages (or back to `srcHead` itself when a migration is abandoned), taking a reference and a
 * mapcount per entry.
 * @param core - the mm layer.
 * @param srcHead - the folio the migration entries name.
 * @param dstHead - the folio to map (same number of pages).
 * @see remove_migration_ptes, remove_migration_pte
 */
export function removeMigrationPtes(core: MmCore, srcHead: number, dstHead: number): void {
  const ps = core.pages;
  const n = ps.folioNrPages(srcHead);
  if (n > 1) {
    core.rmap.walk(srcHead, (mm, vma, va) => {
      const haddr = va - (va % PMD_SIZE);
      const pmd = mm.pt.getPmd(haddr);
      if (pmd === 0 || !isHuge(pmd) || swpType(pmd) !== SWP.MIGRATION || entryPayload(pmd) !== srcHead) return false;
      const w = isWrite(pmd) && (vma.flags & VM.WRITE) !== 0;
      mm.pt.setPmd(haddr, mkPte(dstHead, w) + PTE.HUGE + PTE.YOUNG + (w ? PTE.DIRTY : 0));
      core.refs.getPage(dstHead);
      core.huge.entireMapcountInc(dstHead);
      mm.rssAnon += HPAGE_PMD_NR;
      if (core.rmap.entireMapcount(dstHead) === 1) core.vmstat.c.nr_anon_transparent_hugepages++;
      return false;
    });
  }
  for (let i = 0; i < n; i++) {
    const sp = srcHead + i;
    const dp = dstHead + i;
    core.rmap.walk(sp, (mm, vma, va) => {
      const pmd = mm.pt.getPmd(va);
      if (pmd === 0 || isHuge(pmd)) return false;
      const e = mm.pt.getPte(va);
      if (e === 0 || swpType(e) !== SWP.MIGRATION || entryPayload(e) !== sp) return false;
      const w = isWrite(e) && (vma.flags & VM.WRITE) !== 0;
      const protNone = ((e % 256) & PROT_NONE_MARK) !== 0;
      let ne = mkPte(dp, w) + PTE.YOUNG + (w ? PTE.DIRTY : 0);
      if (protNone) ne -= PTE.PRESENT;
      mm.pt.setPte(va, ne);
      core.refs.getPage(dp);
      ps.mapcount[dp] = (ps.mapcount[dp] as number) + 1;
      if (!vma.shared) mm.rssAnon++;
      return false;
    });
  }
}
