/**
 * THP reservations for anonymous memory (seed 002: Anthony Yznaga's RFC, with Mel Gorman's
 * review applied).
 *
 * With `promotion_threshold` T > 1, the first **write** fault in a THP-eligible, 2 MiB-aligned
 * range of an address space allocates an aligned order-9 block of base pages (not a compound
 * folio: `split_page` leaves each page with one reference), maps only the faulting page and holds
 * the other 511 in reserve (`thp_res_alloc`, `nr_thp_reserved` += 511). Later faults in the range
 * take the page at the same offset from the reservation (`nr_thp_reserved` − 1 each). Read faults
 * map the zero page and reserve nothing, as the review asks.
 *
 * When T base pages of a reservation are mapped, the range is promoted **in place**: the block
 * becomes one order-9 folio mapped by a PMD, the unmapped pages zeroed, no copy
 * (`res_pages_collapsed`). Promotion happens at the fault that reaches T (`thpPromotion:
 * "fault"`) or in khugepaged's next scan (`"khugepaged"`, the RFC's choice). A range whose pages
 * are no longer exclusively mapped at their offsets (a COW after fork, a partial unmap) cannot be
 * promoted in place; its reservation stays until it is released.
 *
 * Reservations belong to the address space, not the VMA (the review's preference). After fork
 * they stay with the parent; the child has none, so its COW faults never use them. Unmapping or
 * zapping any part of a reserved range releases the reservation. Under memory pressure every
 * reservation is dropped at once (the review preferred this to a fine-grained shrinker): each
 * unused reserved page goes back to the buddy allocator.
 *
 * @see the RFC "mm: thp: implement THP reservations for anonymous memory" (2018-11-08),
 *      mm/khugepaged.c (collapse_huge_page), mm/huge_memory.c
 */
import { GFP } from "../phys/page-alloc";
import { HPAGE_PMD_NR, HPAGE_PMD_ORDER, PAGE_SIZE, PG } from "../phys/page-state";
import type { Mm } from "./mm";
import type { MmCore } from "./mm-core";
import { MMU_NOTIFY, mmuNotifyRange } from "./mmu-notifier";
import { entryPayload, isHuge, isPresent, mkPte, PMD_SIZE, PTE, PTRS_PER_PTE, swpType } from "./page-table";
import { VM, type Vma } from "./vma";

/** One reservation: an aligned order-9 block backing one 2 MiB range of one address space. */
export class ThpReservation {
  /** Which offsets have been handed to a fault (1) or are still reserved (0). */
  readonly used = new Uint8Array(HPAGE_PMD_NR);
  /** Number of offsets handed out. */
  nrUsed = 0;
  /** @param haddr - the range's 2 MiB-aligned address. @param base - the block's first pfn. */
  constructor(
    readonly haddr: number,
    readonly base: number,
  ) {}
}

/**
 * The machine's THP reservations, per address space.
 * @see struct thp_reservation (RFC)
 */
export class ThpReservations {
  private readonly byMm = new Map<Mm, Map<number, ThpReservation>>();

  /** @param core - the mm layer. */
  constructor(private readonly core: MmCore) {}

  /** Whether reservations are on (`promotion_threshold` > 1). */
  get enabled(): boolean {
    return this.core.config.thpPromotionThreshold > 1;
  }

  /**
   * The reservations of an address space (read-only view for reports and tests).
   * @param mm - address space. @returns its reservations by 2 MiB address.
   */
  of(mm: Mm): ReadonlyMap<number, ThpReservation> {
    return this.byMm.get(mm) ?? new Map();
  }

  /**
   * Take the page for a write fault at `addr` from the range's reservation, creating the
   * reservation on the range's first write fault.
   * @param mm - address space. @param addr - page-aligned faulting address (THP-eligible range).
   * @returns a zeroed pfn with one reference (the caller maps it), or -1 to allocate normally.
   * @see khugepaged_reserve, alloc from reservation (RFC)
   */
  allocFromReservation(mm: Mm, addr: number): number {
    const core = this.core;
    const ps = core.pages;
    const haddr = addr - (addr % PMD_SIZE);
    const idx = (addr - haddr) / PAGE_SIZE;
    let map = this.byMm.get(mm);
    let res = map?.get(haddr);
    if (res === undefined) {
      const base = core.alloc.allocPages(HPAGE_PMD_ORDER, GFP.NORETRY);
      if (base < 0) {
        core.vmstat.c.thp_res_alloc_failed++;
        return -1;
      }
      // split_page: every page of the block gets its own reference.
      for (let i = 0; i < HPAGE_PMD_NR; i++) {
        ps.refcount[base + i] = 1;
        ps.flags[base + i] = (ps.flags[base + i] as number) | PG.reserved_thp;
      }
      res = new ThpReservation(haddr, base);
      if (map === undefined) {
        map = new Map();
        this.byMm.set(mm, map);
      }
      map.set(haddr, res);
      core.vmstat.c.thp_res_alloc++;
      core.vmstat.c.nr_thp_reserved += HPAGE_PMD_NR;
    }
    if (res.used[idx] === 1) return -1;
    const pfn = res.base + idx;
    res.used[idx] = 1;
    res.nrUsed++;
    core.vmstat.c.nr_thp_reserved--;
    ps.flags[pfn] = (ps.flags[pfn] as number) & ~PG.reserved_thp;
    core.contents.clearPages(pfn, 1);
    return pfn;
  }

  /**
   * After a fault mapped a page from a reservation: promote synchronously if configured and the
   * threshold is reached.
   * @param mm - address space. @param vma - the VMA. @param addr - the faulting address.
   */
  afterFault(mm: Mm, vma: Vma, addr: number): void {
    if (this.core.config.thpPromotion !== "fault") return;
    const res = this.byMm.get(mm)?.get(addr - (addr % PMD_SIZE));
    if (res !== undefined && res.nrUsed >= this.core.config.thpPromotionThreshold) this.promote(mm, vma, res);
  }

  /**
   * Promote a reservation in place to a PMD-mapped THP.
   * @param mm - address space. @param vma - the VMA covering the range. @param res - the reservation.
   * @returns true if promoted; false if a page is no longer exclusively mapped at its offset.
   * @see collapse_huge_page (in place, RFC)
   */
  promote(mm: Mm, vma: Vma, res: ThpReservation): boolean {
    const core = this.core;
    const ps = core.pages;
    const { haddr, base } = res;
    if (haddr < vma.start || haddr + PMD_SIZE > vma.end || vma.shared) return false;
    const pmd = mm.pt.getPmd(haddr);
    if (pmd === 0 || isHuge(pmd)) return false;
    const t = mm.pt.pteTable(haddr);
    if (t === undefined) return false;
    for (let i = 0; i < HPAGE_PMD_NR; i++) {
      const p = base + i;
      const e = t[i] as number;
      if (res.used[i] === 1) {
        const ok =
          isPresent(e) &&
          entryPayload(e) === p &&
          (ps.refcount[p] as number) === 1 &&
          (ps.mapcount[p] as number) === 1 &&
          ((ps.flags[p] as number) & (PG.locked | PG.lru)) === PG.lru;
        if (!ok) return false;
      } else if (e !== 0 && !(isPresent(e) && entryPayload(e) === core.zeroPfn)) return false;
    }
    mmuNotifyRange(mm, haddr, haddr + PMD_SIZE, MMU_NOTIFY.CLEAR);
    const unused = HPAGE_PMD_NR - res.nrUsed;
    for (let i = 0; i < HPAGE_PMD_NR; i++) {
      const p = base + i;
      t[i] = 0;
      if (res.used[i] === 1) {
        core.lru.del(p);
        ps.mapcount[p] = 0;
      } else core.contents.clearPages(p, 1);
      ps.refcount[p] = 0;
      ps.flags[p] = (ps.flags[p] as number) & ~(PG.reserved_thp | PG.anon | PG.swapbacked | PG.anonExclusive | PG.referenced | PG.active);
      ps.mapping[p] = 0;
    }
    mm.pt.freePteTable(haddr);
    ps.prepCompound(base, HPAGE_PMD_ORDER);
    ps.refcount[base] = 1;
    // mapNewAnonThp adds a full THP to the anon counters; the used pages were already counted.
    core.huge.mapNewAnonThp(mm, vma, haddr, base);
    core.vmstat.c.nr_anon_pages -= res.nrUsed;
    mm.rssAnon -= res.nrUsed;
    core.vmstat.c.nr_thp_reserved -= unused;
    core.vmstat.c.res_pages_collapsed++;
    this.byMm.get(mm)?.delete(haddr);
    return true;
  }

  /**
   * Release the reservations overlapping `[start, end)` of `mm` (munmap, zap, exit).
   * @param mm - address space. @param start - first byte. @param end - one past last.
   * @returns base pages returned to the allocator.
   */
  releaseRange(mm: Mm, start: number, end: number): number {
    const map = this.byMm.get(mm);
    if (map === undefined || map.size === 0) return 0;
    let freed = 0;
    for (const res of [...map.values()]) if (res.haddr < end && res.haddr + PMD_SIZE > start) freed += this.release(mm, res);
    return freed;
  }

  /**
   * Drop every reservation of every address space (memory pressure).
   * @returns base pages returned to the allocator.
   * @see the review: "dump all reservations on memory pressure"
   */
  releaseAll(): number {
    let freed = 0;
    for (const [mm, map] of this.byMm) for (const res of [...map.values()]) freed += this.release(mm, res);
    return freed;
  }

  /**
   * Forget an address space (exit); releases its reservations.
   * @param mm - address space.
   */
  releaseMm(mm: Mm): void {
    this.releaseRange(mm, 0, Number.MAX_SAFE_INTEGER);
    this.byMm.delete(mm);
  }

  /**
   * Reservations eligible for promotion (for khugepaged).
   * @param mm - address space. @returns the reservations with at least `promotion_threshold` pages used.
   */
  promotable(mm: Mm): ThpReservation[] {
    const t = this.core.config.thpPromotionThreshold;
    return [...(this.byMm.get(mm)?.values() ?? [])].filter((r) => r.nrUsed >= t);
  }

  private release(mm: Mm, res: ThpReservation): number {
    const core = this.core;
    const ps = core.pages;
    let freed = 0;
    for (let i = 0; i < HPAGE_PMD_NR; i++) {
      if (res.used[i] === 1) continue;
      const p = res.base + i;
      ps.flags[p] = (ps.flags[p] as number) & ~PG.reserved_thp;
      ps.refcount[p] = 0;
      core.alloc.freePages(p, 0);
      freed++;
    }
    core.vmstat.c.nr_thp_reserved -= freed;
    this.byMm.get(mm)?.delete(res.haddr);
    return freed;
  }
}

/** @internal PTE-table helper for khugepaged: count none/zero entries and check collapsibility. */
export function scanPmdRange(core: MmCore, mm: Mm, haddr: number): { none: number; collapsible: boolean } {
  const t = mm.pt.pteTable(haddr);
  if (t === undefined) return { none: PTRS_PER_PTE, collapsible: false };
  const ps = core.pages;
  let none = 0;
  let collapsible = true;
  for (let i = 0; i < PTRS_PER_PTE; i++) {
    const e = t[i] as number;
    if (e === 0 || (isPresent(e) && entryPayload(e) === core.zeroPfn)) {
      none++;
      continue;
    }
    if (!isPresent(e) || swpType(e) !== 0) {
      collapsible = false;
      continue;
    }
    const p = entryPayload(e);
    const f = ps.flags[p] as number;
    if (
      !(f & PG.anon) ||
      f & (PG.head | PG.tail | PG.locked | PG.zoneDevice) ||
      (ps.refcount[p] as number) !== 1 ||
      (ps.mapcount[p] as number) !== 1
    ) {
      collapsible = false;
    }
  }
  return { none, collapsible };
}

/** @internal Whether `vma` permits a THP at `haddr` (mode, flags, alignment). */
export function thpRangeOk(core: MmCore, vma: Vma, haddr: number): boolean {
  return core.huge.eligible(vma, haddr) && (vma.flags & VM.READ) !== 0;
}

/** @internal Build a present huge PMD entry. */
export function mkHugePmd(pfn: number, write: boolean): number {
  return mkPte(pfn, write) + PTE.HUGE;
}
