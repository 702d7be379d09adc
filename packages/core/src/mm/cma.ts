/**
 * The contiguous memory allocator (CMA), alloc_contig_range, and memory offlining.
 *
 * A CMA area is reserved at boot (`MachineConfig.cmaMiB`, at the bottom of node 0): its pages stay in the buddy allocator and serve ordinary allocations
 * until {@link Cma.cmaAlloc} wants a contiguous run, which {@link Cma.allocContigRange} then
 * clears:
 *
 * 1. **Check** (has_unmovable_pages): every page of the range must be free, an LRU folio that is
 *    not DMA-pinned, or a pinned-movable page; anything else (a kernel page, a pinned user page,
 *    a page already isolated by someone else) makes the range busy: -EBUSY, nothing changed.
 * 2. **Isolate** (start_isolate_page_range): the range's free pages are taken out of the buddy
 *    allocator, so nothing can allocate them while the range is cleared (the kernel marks the
 *    pageblocks MIGRATE_ISOLATE).
 * 3. **Migrate** (__alloc_contig_migrate_range): movable pages are isolated and migrated
 *    (MR_CONTIG_RANGE) to pages outside the range; sources freed by migration are taken as they
 *    return to the allocator. Repeated while it makes progress.
 * 4. The range's pages are handed out each with refcount 1 (split, not compound), or, when some
 *    page could not move, everything taken is given back and -EBUSY returned with the pfns that
 *    stayed.
 *
 * {@link Cma.offlinePages} runs the same steps on any RAM range (offline_pages: the isolation,
 * then do_migrate_range with MR_MEMORY_HOTPLUG) and keeps the pages out of the allocator as
 * PG_reserved until {@link Cma.onlinePages}. Where the kernel retries migration until a signal or
 * timeout, hmmkit gives up when a pass makes no progress and names the pages it cannot move.
 *
 * Known gap: hmmkit's allocator has no pageblock migratetypes, so unmovable allocations are not
 * kept out of the CMA area (the kernel only lets __GFP_MOVABLE allocations use MIGRATE_CMA
 * pageblocks); an unmovable page landing there makes the positions it covers busy, as it would in
 * the kernel after a misplaced allocation.
 *
 * @see mm/cma.c (cma_alloc, cma_release, cma_declare_contiguous), mm/page_alloc.c
 *      (alloc_contig_range), mm/page_isolation.c (start_isolate_page_range, has_unmovable_pages),
 *      mm/memory_hotplug.c (offline_pages, do_migrate_range)
 */
import { MIGRATE_REASON, type MigrateReason } from "../migrate/migrate";
import { GFP } from "../phys/page-alloc";
import { MAX_PAGE_ORDER, PG } from "../phys/page-state";
import { BugError, ERRNO, einval } from "../sim/errors";
import type { MmCore } from "./mm-core";

/** A reserved CMA area. @see struct cma */
export interface CmaArea {
  /** First pfn. */
  readonly basePfn: number;
  /** Pages in the area. */
  readonly count: number;
  /** One byte per page: 1 = handed out by cmaAlloc. @see cma->bitmap */
  readonly bitmap: Uint8Array;
  /** Label. @see cma->name */
  readonly name: string;
}

/** The outcome of {@link Cma.allocContigRange} / {@link Cma.offlinePages}. */
export interface ContigResult {
  /** 0, -EBUSY (a page could not be moved) or -ENOMEM (no memory to migrate into). */
  ret: number;
  /** The pfns that could not be moved (empty on success). */
  busyPfns: number[];
}

const MAX_ROUNDS = 16;

/**
 * CMA, contiguous allocation and memory offlining for one machine (`machine.mm.cma`).
 *
 * Context: synchronous; never awaits.
 * @see mm/cma.c, mm/memory_hotplug.c
 */
export class Cma {
  /** The CMA area, if one was reserved. */
  area: CmaArea | undefined;
  private readonly offline = new Set<number>();

  /** @param core - the mm layer. */
  constructor(private readonly core: MmCore) {}

  /**
   * Reserve the CMA area at boot: the bottom `npages` of node 0 (as `cma=size@start` would place
   * it), so that boot-time unmovable allocations, which the buddy allocator hands out from the top
   * of memory, stay out of it.
   * @param npages - pages, a positive multiple of 512, smaller than node 0.
   * @throws HmmError EINVAL for a bad size; BugError if called twice.
   * @see cma_declare_contiguous_nid
   */
  reserve(npages: number): void {
    if (this.area !== undefined) throw new BugError("cma-twice", "the CMA area is already reserved");
    const z = this.core.alloc.zones.find((zz) => zz.nid === 0);
    if (z === undefined) throw new BugError("cma-no-node0", "no zone on node 0");
    if (!Number.isInteger(npages) || npages <= 0 || npages % 512 !== 0 || npages >= z.npages) {
      einval("config.cmaMiB", `a multiple of 2 MiB smaller than node 0 (${z.npages / 256} MiB)`);
    }
    this.area = { basePfn: z.startPfn, count: npages, bitmap: new Uint8Array(npages), name: "reserved" };
  }

  /**
   * Whether `pfn` lies in the CMA area.
   * @param pfn - page. @returns true if so. @see is_migrate_cma_page
   */
  isCmaPfn(pfn: number): boolean {
    const a = this.area;
    return a !== undefined && pfn >= a.basePfn && pfn < a.basePfn + a.count;
  }

  /**
   * Allocate `count` contiguous pages from the CMA area, aligned to `2^align` pages, migrating
   * movable and pinned-movable pages out of the way.
   * @param count - pages (> 0). @param align - alignment order (0..MAX_PAGE_ORDER).
   * @returns the first pfn (each page has refcount 1), or -1 if no position could be cleared
   *   (`cma_alloc_fail`).
   * @throws HmmError EINVAL for bad arguments or when no CMA area is configured.
   * @see cma_alloc
   * @example
   * ```ts
   * const m = Machine.create({ ramMiB: [64], cmaMiB: 8 });
   * const pfn = m.mm.cma.cmaAlloc(1024, 9);
   * m.mm.cma.cmaRelease(pfn, 1024);
   * ```
   */
  cmaAlloc(count: number, align: number): number {
    const a = this.area;
    if (a === undefined) einval("cma", "a configured CMA area (MachineConfig.cmaMiB)");
    if (!Number.isInteger(count) || count <= 0 || count > a.count) einval("count", `1..${a.count}, got ${count}`);
    if (!Number.isInteger(align) || align < 0 || align > MAX_PAGE_ORDER) einval("align", `0..${MAX_PAGE_ORDER}, got ${align}`);
    const step = 1 << align;
    const vm = this.core.vmstat.c;
    for (let off = (step - (a.basePfn % step)) % step; off + count <= a.count; off += step) {
      let used = false;
      for (let i = 0; i < count; i++) {
        if (a.bitmap[off + i]) {
          used = true;
          break;
        }
      }
      if (used) continue;
      const r = this.allocContigRange(a.basePfn + off, a.basePfn + off + count);
      if (r.ret === 0) {
        a.bitmap.fill(1, off, off + count);
        vm.cma_alloc_success++;
        return a.basePfn + off;
      }
    }
    vm.cma_alloc_fail++;
    return -1;
  }

  /**
   * Give back pages from {@link Cma.cmaAlloc}.
   * @param pfn - first page as returned. @param count - pages.
   * @returns false if the range is not an allocated part of the area (nothing freed).
   * @throws BugError if a page has other references than the allocation's.
   * @see cma_release
   */
  cmaRelease(pfn: number, count: number): boolean {
    const a = this.area;
    if (a === undefined || !Number.isInteger(count) || count <= 0 || pfn < a.basePfn || pfn + count > a.basePfn + a.count) return false;
    for (let i = 0; i < count; i++) if (!a.bitmap[pfn - a.basePfn + i]) return false;
    this.freeContigRange(pfn, count);
    a.bitmap.fill(0, pfn - a.basePfn, pfn - a.basePfn + count);
    return true;
  }

  /**
   * Clear `[start, end)` and take every page of it (see the file comment).
   * @param start - first pfn. @param end - one past the last (same zone).
   * @param reason - migrate reason (tracepoint text).
   * @returns 0 with every page refcount 1, or -EBUSY / -ENOMEM with the pfns that stayed (nothing taken).
   * @throws HmmError EINVAL for a range outside one RAM zone.
   * @see alloc_contig_range
   */
  allocContigRange(start: number, end: number, reason: MigrateReason = MIGRATE_REASON.CONTIG_RANGE): ContigResult {
    const core = this.core;
    const alloc = core.alloc;
    const ps = core.pages;
    const z = alloc.zoneOf(start);
    if (!Number.isInteger(start) || !Number.isInteger(end) || end <= start || z === undefined || !z.contains(end - 1)) {
      einval("start", `a non-empty range of one RAM zone, got [${start}, ${end})`);
    }
    const unmovable = this.unmovablePages(start, end);
    if (unmovable.length > 0) return { ret: -ERRNO.EBUSY, busyPfns: unmovable };
    const held = new Uint8Array(end - start);
    let nheld = 0;
    const take = (): void => {
      for (let p = start; p < end; ) {
        if (held[p - start] || !((ps.flags[p] as number) & PG.buddy)) {
          p++;
          continue;
        }
        let o = Math.min(ps.order[p] as number, MAX_PAGE_ORDER);
        while (o > 0 && ((p & ((1 << o) - 1)) !== 0 || p + (1 << o) > end)) o--;
        if (!alloc.allocRange(p, o)) {
          p++;
          continue;
        }
        for (let q = p; q < p + (1 << o); q++) {
          ps.refcount[q] = 1;
          held[q - start] = 1;
        }
        nheld += 1 << o;
        p += 1 << o;
      }
      // Pages of the range that are free but inside a larger block straddling its edge.
      for (let p = start; p < end; p++) {
        if (!held[p - start] && alloc.isFree(p) && alloc.allocRange(p, 0)) {
          held[p - start] = 1;
          nheld++;
        }
      }
    };
    const getNew = (_src: number, order: number): number => {
      for (;;) {
        const d = alloc.allocPages(order, (order > 0 ? GFP.COMP : 0) | GFP.NORETRY);
        if (d < 0) return -1;
        if (d + (1 << order) <= start || d >= end) return d;
        // A source freed by this very migration came back: keep it for the range.
        if (order > 0) ps.clearCompound(d, order);
        for (let q = d; q < d + (1 << order); q++) {
          ps.refcount[q] = 1;
          if (q >= start && q < end && !held[q - start]) {
            held[q - start] = 1;
            nheld++;
          } else if (q < start || q >= end) {
            ps.refcount[q] = 0;
            alloc.freePages(q, 0);
          }
        }
      }
    };
    let ret = 0;
    take();
    for (let round = 0; round < MAX_ROUNDS && nheld < end - start; round++) {
      const list: number[] = [];
      for (let p = start; p < end; ) {
        if (held[p - start]) {
          p++;
          continue;
        }
        const head = ps.compoundHead(p);
        const h = core.migration.isolateFolio(head);
        if (h >= 0) list.push(h);
        p = head + ps.folioNrPages(head);
      }
      const before = nheld;
      if (list.length > 0) {
        const r = core.migration.migratePages(list, getNew, (d) => core.refs.putPage(d), reason);
        if (r.err !== 0) ret = r.err;
      }
      take();
      if (nheld === before || ret !== 0) break;
    }
    if (nheld === end - start) return { ret: 0, busyPfns: [] };
    const busy: number[] = [];
    for (let p = start; p < end; p++) if (!held[p - start]) busy.push(p);
    for (let p = start; p < end; p++) {
      if (held[p - start]) {
        ps.refcount[p] = 0;
        alloc.freePages(p, 0);
      }
    }
    return { ret: ret !== 0 ? ret : -ERRNO.EBUSY, busyPfns: busy };
  }

  /**
   * Free pages taken by {@link Cma.allocContigRange} (each must have refcount 1).
   * @param pfn - first page. @param count - pages.
   * @throws BugError if a page holds other references.
   * @see free_contig_range
   */
  freeContigRange(pfn: number, count: number): void {
    const ps = this.core.pages;
    for (let p = pfn; p < pfn + count; p++) {
      if ((ps.refcount[p] as number) !== 1)
        throw new BugError("contig-free-busy", `freeing contiguous pfn ${p} with refcount ${ps.refcount[p]}`);
    }
    for (let p = pfn; p < pfn + count; p++) {
      ps.refcount[p] = 0;
      this.core.alloc.freePages(p, 0);
    }
  }

  /**
   * Take a RAM range offline: migrate everything movable out, then keep every page out of the
   * allocator (PG_reserved) until {@link Cma.onlinePages}.
   * @param startPfn - first page (aligned to 512). @param npages - pages (a multiple of 512).
   * @returns `{ ret: 0 }`, or `{ ret: -EBUSY, busyPfns }` naming the pages that cannot move (a
   *   kernel page, a DMA-pinned user page): nothing is offlined then (pages already migrated stay
   *   where they went, as in the kernel).
   * @throws HmmError EINVAL for a misaligned range, one outside a RAM zone, or already offline.
   * @see offline_pages
   */
  offlinePages(startPfn: number, npages: number): ContigResult {
    const core = this.core;
    if (!Number.isInteger(startPfn) || startPfn % 512 !== 0) einval("startPfn", `aligned to 512 pages, got ${startPfn}`);
    if (!Number.isInteger(npages) || npages <= 0 || npages % 512 !== 0) einval("npages", `a positive multiple of 512, got ${npages}`);
    const z = core.alloc.zoneOf(startPfn);
    if (z === undefined || !z.contains(startPfn + npages - 1)) einval("startPfn", "a range inside one RAM zone");
    for (let p = startPfn; p < startPfn + npages; p++) if (this.offline.has(p)) einval("startPfn", `online pages; pfn ${p} is offline`);
    if (this.area !== undefined && startPfn < this.area.basePfn + this.area.count && startPfn + npages > this.area.basePfn) {
      for (let p = Math.max(startPfn, this.area.basePfn); p < Math.min(startPfn + npages, this.area.basePfn + this.area.count); p++) {
        if (this.area.bitmap[p - this.area.basePfn]) return { ret: -ERRNO.EBUSY, busyPfns: [p] };
      }
    }
    const r = this.allocContigRange(startPfn, startPfn + npages, MIGRATE_REASON.MEMORY_HOTPLUG);
    if (r.ret !== 0) return r;
    const ps = core.pages;
    for (let p = startPfn; p < startPfn + npages; p++) {
      ps.flags[p] = (ps.flags[p] as number) | PG.reserved;
      this.offline.add(p);
    }
    return r;
  }

  /**
   * Bring pages offlined by {@link Cma.offlinePages} back to the allocator.
   * @param startPfn - first page. @param npages - pages.
   * @throws HmmError EINVAL if a page of the range is not offline.
   * @see online_pages
   */
  onlinePages(startPfn: number, npages: number): void {
    for (let p = startPfn; p < startPfn + npages; p++) if (!this.offline.has(p)) einval("startPfn", `offline pages; pfn ${p} is online`);
    const ps = this.core.pages;
    for (let p = startPfn; p < startPfn + npages; p++) {
      ps.flags[p] = (ps.flags[p] as number) & ~PG.reserved;
      this.offline.delete(p);
    }
    this.freeContigRange(startPfn, npages);
  }

  /**
   * Pages of `[start, end)` that cannot be migrated: neither free, nor an LRU folio without DMA
   * pins, nor a pinned-movable page that is not already isolated.
   * @param start - first pfn. @param end - one past the last.
   * @returns their pfns (empty if the range can be cleared).
   * @see has_unmovable_pages
   */
  unmovablePages(start: number, end: number): number[] {
    const core = this.core;
    const ps = core.pages;
    const out: number[] = [];
    for (let p = start; p < end; p++) {
      const f = ps.flags[p] as number;
      if (core.alloc.isFree(p)) continue;
      const head = ps.compoundHead(p);
      const hf = ps.flags[head] as number;
      if (hf & PG.movableOps && !(hf & PG.isolated)) continue;
      if (hf & PG.lru && !core.migration.folioMaybeDmaPinned(head)) continue;
      if (f & PG.buddy) continue;
      out.push(p);
    }
    return out;
  }
}
