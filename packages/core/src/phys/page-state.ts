/**
 * `struct page`, as struct-of-arrays: per-page state in typed arrays indexed by pfn.
 *
 * A page is a number. Every field of the kernel's `struct page` that hmmkit models is one typed
 * array here (include/linux/mm_types.h): flags, refcount, mapcount, pin count, pgmap, pinpage
 * owner, compound order, zone, LRU/free-list links, mapping, index and private. That is 46 bytes
 * per page, against 64 for the kernel's `struct page`, and nothing is allocated per page.
 *
 * PFNs are global: system RAM regions come first, device regions (VRAM, then memremapped
 * ranges) are appended above them, each starting on a 2 MiB boundary. When a region is added the
 * arrays are reallocated (a cold path); callers must re-read the array fields after any call that
 * can add a region (`addRegion`, i.e. memremapPages / device probe), never cache them across one.
 *
 * Compound pages are naturally aligned: every page of an order-N folio stores N in `order`, the
 * head has PG_head and the tails PG_tail, so `compoundHead(pfn)` is arithmetic. Link fields hold
 * pfn + 1 so that 0 (the typed array's initial value) means "none" and boot touches no memory.
 *
 * @see include/linux/mm_types.h, include/linux/page-flags.h, include/linux/mmzone.h
 */
import { BugError, einval } from "../sim/errors";

/** Base page size in bytes (hmmkit models 4 KiB base pages, as x86-64). @see PAGE_SIZE */
export const PAGE_SIZE = 4096;
/** log2(PAGE_SIZE). @see PAGE_SHIFT */
export const PAGE_SHIFT = 12;
/** Highest buddy order (orders 0..MAX_PAGE_ORDER). @see MAX_PAGE_ORDER */
export const MAX_PAGE_ORDER = 10;
/** Order of a PMD-mapped THP: 2 MiB at 4 KiB base pages. @see HPAGE_PMD_ORDER */
export const HPAGE_PMD_ORDER = 9;
/** Base pages in a PMD-mapped THP. @see HPAGE_PMD_NR */
export const HPAGE_PMD_NR = 512;
/** Bytes in a PMD-mapped THP. @see HPAGE_PMD_SIZE */
export const HPAGE_PMD_SIZE = HPAGE_PMD_NR * PAGE_SIZE;
/** Bias a FOLL_PIN pin adds to the refcount of a small folio. @see GUP_PIN_COUNTING_BIAS */
export const GUP_PIN_COUNTING_BIAS = 1024;

/**
 * Page flags (bits of `PageState.flags`), named after enum pageflags and the page types.
 * @see include/linux/page-flags.h
 */
export const PG = {
  /** Page is locked. @see PG_locked */
  locked: 1 << 0,
  /** Referenced since last LRU scan. @see PG_referenced */
  referenced: 1 << 1,
  /** Contents differ from backing store. @see PG_dirty */
  dirty: 1 << 2,
  /** On an LRU list. @see PG_lru */
  lru: 1 << 3,
  /** On the active LRU list. @see PG_active */
  active: 1 << 4,
  /** Head of a compound page. @see PG_head */
  head: 1 << 5,
  /** Tail of a compound page (the kernel encodes it in compound_head). @see PageTail */
  tail: 1 << 6,
  /** Free, in the buddy allocator; `order` holds the block order. @see PageBuddy */
  buddy: 1 << 7,
  /** Reserved: never allocated or freed (the zero page). @see PG_reserved */
  reserved: 1 << 8,
  /** Anonymous page (`mapping` is an anon_vma). @see PageAnon */
  anon: 1 << 9,
  /** Backed by swap (anonymous or shmem). @see PG_swapbacked */
  swapbacked: 1 << 10,
  /** In the swap cache. @see PG_swapcache */
  swapcache: 1 << 11,
  /** Isolated from the LRU for migration or reclaim. @see PG_isolated / folio_isolate_lru */
  isolated: 1 << 12,
  /** Hardware-poisoned. @see PG_hwpoison */
  hwpoison: 1 << 13,
  /** Movable through registered movable operations (pinpage). @see PageMovableOps */
  movableOps: 1 << 14,
  /** ZONE_DEVICE page (its pgmap is in `pgmap`). @see is_zone_device_page */
  zoneDevice: 1 << 15,
  /** Under writeback to swap. @see PG_writeback */
  writeback: 1 << 16,
  /** Anon page exclusive to one mm. @see PG_anon_exclusive */
  anonExclusive: 1 << 17,
  /** Unevictable. @see PG_unevictable */
  unevictable: 1 << 18,
  /** Contents up to date. @see PG_uptodate */
  uptodate: 1 << 19,
  /** Part of a THP reservation, not yet mapped (seed 002). */
  reserved_thp: 1 << 20,
  /** Large folio that can be rmapped (THP). @see PG_large_rmappable */
  largeRmappable: 1 << 21,
  /** A HugeTLB pool page (folio head). @see folio_test_hugetlb */
  hugetlb: 1 << 22,
} as const;

/** What a physical region is. */
export type RegionKind = "ram" | "device";

/** A contiguous range of pfns. */
export interface PhysRegion {
  /** Index in {@link PageState.regions}. */
  readonly id: number;
  /** What it is: system RAM, or memory behind a device (VRAM). */
  readonly kind: RegionKind;
  /** First pfn. */
  readonly basePfn: number;
  /** Number of pages. */
  readonly npages: number;
  /** NUMA node id for RAM; -1 for device memory. */
  readonly nid: number;
  /** Human-readable name, e.g. `"node0"` or `"gpu0-vram"`. */
  readonly name: string;
  /** Whether the CPU may load/store its bytes (RAM, device-coherent memory). */
  cpuAccessible: boolean;
}

/** Bytes of metadata per page (sum of the element sizes of the per-page arrays). */
export const PAGE_METADATA_BYTES = 4 + 4 + 4 + 4 + 2 + 2 + 1 + 1 + 4 + 4 + 4 + 8 + 4;

const REGION_ALIGN = 512;

/**
 * Per-page state for every pfn of a machine.
 *
 * Context: synchronous; no locking (one machine runs on one JS thread).
 * @see struct page in include/linux/mm_types.h
 */
export class PageState {
  /** Page flags ({@link PG}). */
  flags = new Uint32Array(0);
  /** Reference count (`_refcount`). Free pages have 0. */
  refcount = new Int32Array(0);
  /** Number of page-table mappings (`_mapcount + 1`). */
  mapcount = new Int32Array(0);
  /** FOLL_PIN pins (`_pincount`; small folios also carry the bias in refcount). */
  pincount = new Int32Array(0);
  /** dev_pagemap id (0 = none). */
  pgmap = new Uint16Array(0);
  /** Owning pinpage subsystem id (0 = none). */
  owner = new Uint16Array(0);
  /** Compound order (all pages of a folio), or the free block order for PG_buddy heads. */
  order = new Uint8Array(0);
  /** Zone id (index into the allocator's zones; 255 = none). */
  zone = new Uint8Array(0);
  /** LRU / free-list previous link, as pfn + 1 (0 = none). */
  lruPrev = new Uint32Array(0);
  /** LRU / free-list next link, as pfn + 1 (0 = none). */
  lruNext = new Uint32Array(0);
  /** Mapping id: anon_vma or shmem object (0 = none). */
  mapping = new Uint32Array(0);
  /** Index in the mapping (virtual page number for anon). */
  index = new Float64Array(0);
  /** Owner-private word (`page->private`, `zone_device_data`). */
  private = new Uint32Array(0);

  /** Regions in pfn order. */
  readonly regions: PhysRegion[] = [];
  private lastRegion: PhysRegion | undefined;
  private capacity = 0;
  private end = 0;

  /** One past the highest pfn of any region. */
  get maxPfn(): number {
    return this.end;
  }

  /**
   * Add a region of `npages` pages above every existing one, aligned to 2 MiB.
   * @param kind - RAM or device memory.
   * @param npages - number of pages, > 0, a multiple of 512.
   * @param nid - NUMA node (RAM), or -1.
   * @param name - label.
   * @returns the new region.
   * @throws HmmError EINVAL if `npages` is not a positive multiple of 512.
   * @see memblock_add / memremap_pages' pfn range reservation
   */
  addRegion(kind: RegionKind, npages: number, nid: number, name: string): PhysRegion {
    if (!Number.isInteger(npages) || npages <= 0 || npages % REGION_ALIGN !== 0) {
      einval("npages", `a positive multiple of ${REGION_ALIGN} pages (2 MiB), got ${npages}`);
    }
    const basePfn = Math.ceil(this.end / REGION_ALIGN) * REGION_ALIGN;
    const region: PhysRegion = { id: this.regions.length, kind, basePfn, npages, nid, name, cpuAccessible: kind === "ram" };
    this.grow(basePfn + npages);
    this.zone.fill(255, basePfn, basePfn + npages);
    this.regions.push(region);
    this.end = basePfn + npages;
    return region;
  }

  /**
   * The region containing `pfn`.
   * @param pfn - a page frame number.
   * @returns the region, or undefined for a pfn in no region.
   */
  regionOf(pfn: number): PhysRegion | undefined {
    // Regions are only ever appended, so the last hit stays valid; lookups come in runs.
    const last = this.lastRegion;
    if (last !== undefined && pfn >= last.basePfn && pfn < last.basePfn + last.npages) return last;
    const rs = this.regions;
    let lo = 0;
    let hi = rs.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const r = rs[mid] as PhysRegion;
      if (pfn < r.basePfn) hi = mid - 1;
      else if (pfn >= r.basePfn + r.npages) lo = mid + 1;
      else {
        this.lastRegion = r;
        return r;
      }
    }
    return undefined;
  }

  /**
   * Whether `pfn` lies in some region.
   * @param pfn - candidate pfn.
   * @returns true if valid. @see pfn_valid
   */
  pfnValid(pfn: number): boolean {
    return Number.isInteger(pfn) && pfn >= 0 && pfn < this.end && this.regionOf(pfn) !== undefined;
  }

  /**
   * The head pfn of the folio containing `pfn`.
   * @param pfn - any page of the folio.
   * @returns the head's pfn. @see compound_head
   */
  compoundHead(pfn: number): number {
    if ((this.flags[pfn] as number) & PG.tail) {
      const n = 1 << (this.order[pfn] as number);
      return pfn - (pfn & (n - 1));
    }
    return pfn;
  }

  /**
   * Number of base pages in the folio headed by `head`.
   * @param head - a head (or small) page.
   * @returns 1 << order. @see folio_nr_pages
   */
  folioNrPages(head: number): number {
    return (this.flags[head] as number) & PG.head ? 1 << (this.order[head] as number) : 1;
  }

  /**
   * Make the `2^order` pages at `head` one compound folio (head + tails).
   * @param head - aligned head pfn.
   * @param order - 1..MAX_PAGE_ORDER.
   * @see prep_compound_page
   */
  prepCompound(head: number, order: number): void {
    const n = 1 << order;
    bugOnAligned(head, n);
    const f = this.flags;
    f[head] = ((f[head] as number) | PG.head) & ~PG.tail;
    this.order.fill(order, head, head + n);
    for (let p = head + 1; p < head + n; p++) f[p] = ((f[p] as number) | PG.tail) & ~PG.head;
  }

  /**
   * Undo {@link PageState.prepCompound}: every page becomes an order-0 page.
   * @param head - the folio's head.
   * @param order - its order.
   * @see split_page / __split_huge_page
   */
  clearCompound(head: number, order: number): void {
    const n = 1 << order;
    const f = this.flags;
    for (let p = head; p < head + n; p++) f[p] = (f[p] as number) & ~(PG.head | PG.tail);
    this.order.fill(0, head, head + n);
  }

  private grow(minCap: number): void {
    if (minCap <= this.capacity) return;
    let cap = Math.max(minCap, this.capacity);
    // RAM is sized once at boot; device regions append. Grow exactly to avoid idle RSS.
    cap = Math.ceil(cap / REGION_ALIGN) * REGION_ALIGN;
    const re = <T extends { length: number; set(a: ArrayLike<number>): void }>(old: T, C: new (n: number) => T): T => {
      const a = new C(cap);
      if (old.length) a.set(old as unknown as ArrayLike<number>);
      return a;
    };
    this.flags = re(this.flags, Uint32Array);
    this.refcount = re(this.refcount, Int32Array);
    this.mapcount = re(this.mapcount, Int32Array);
    this.pincount = re(this.pincount, Int32Array);
    this.pgmap = re(this.pgmap, Uint16Array);
    this.owner = re(this.owner, Uint16Array);
    this.order = re(this.order, Uint8Array);
    this.zone = re(this.zone, Uint8Array);
    this.lruPrev = re(this.lruPrev, Uint32Array);
    this.lruNext = re(this.lruNext, Uint32Array);
    this.mapping = re(this.mapping, Uint32Array);
    this.index = re(this.index, Float64Array);
    this.private = re(this.private, Uint32Array);
    this.capacity = cap;
  }
}

function bugOnAligned(pfn: number, n: number): void {
  if (pfn % n !== 0) throw new BugError("compound-align", `compound head ${pfn} not aligned to ${n} pages`);
}
