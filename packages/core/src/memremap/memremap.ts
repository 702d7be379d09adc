/**
 * dev_pagemap: ZONE_DEVICE memory given `struct page`s, for device-private and device-coherent
 * memory.
 *
 * `memremapPages` gives a range of device memory per-page state: every page gets PG_zoneDevice,
 * the pgmap's id and refcount 0 (free device pages have refcount 0 since v6.1). The driver's
 * allocator takes a free page with {@link zoneDevicePageInit} / {@link zoneDeviceFolioInit}
 * (refcount 1, locked, compound for order > 0); when the last reference goes, the core calls the
 * pgmap's `folioFree` (the driver puts it back on its free list) and the pages return to their
 * free state.
 *
 * Device-private pages (MEMORY_DEVICE_PRIVATE) are never CPU-addressable: page tables hold
 * device-private entries for them, a CPU access to one calls `migrateToRam`, and the bytes of the
 * range cannot be reached through the CPU access path (the emulator reports it as a bug).
 * Device-coherent pages (MEMORY_DEVICE_COHERENT) are mapped by the CPU like RAM.
 *
 * Registration rules, as memremap_pages enforces them: a private pgmap needs `folioFree`,
 * `migrateToRam` and an owner; a coherent pgmap needs `folioFree` and an owner. `memunmapPages`
 * requires every page to be free again (the kernel waits forever on a leaked reference; the
 * emulator reports it).
 *
 * @see mm/memremap.c, include/linux/memremap.h
 */

import type { Mm } from "../mm/mm";
import type { Vma } from "../mm/vma";
import { type PageState, PG, type PhysRegion } from "../phys/page-state";
import { BugError, einval, HmmError } from "../sim/errors";

/** Memory types. Values follow enum memory_type. @see include/linux/memremap.h */
export const MEMORY_DEVICE_PRIVATE = 1;
/** @see MEMORY_DEVICE_COHERENT */
export const MEMORY_DEVICE_COHERENT = 2;

/** VM fault result bits (a subset). @see include/linux/mm_types.h (enum vm_fault_reason) */
export const VM_FAULT = {
  /** Out of memory. @see VM_FAULT_OOM */
  OOM: 0x1,
  /** Bus error. @see VM_FAULT_SIGBUS */
  SIGBUS: 0x2,
  /** Needed I/O. @see VM_FAULT_MAJOR */
  MAJOR: 0x4,
  /** Hit a poisoned page. @see VM_FAULT_HWPOISON */
  HWPOISON: 0x10,
  /** Bad access. @see VM_FAULT_SIGSEGV */
  SIGSEGV: 0x40,
  /** Retry the fault. @see VM_FAULT_RETRY */
  RETRY: 0x400,
} as const;

/**
 * A CPU fault on a device-private entry, as `migrateToRam` receives it.
 * @see struct vm_fault
 */
export interface VmFault {
  /** The faulting address space. */
  readonly mm: Mm;
  /** The VMA of the fault. */
  readonly vma: Vma;
  /** The faulting address (page aligned). */
  readonly address: number;
  /** The device-private page the entry points to (locked, with a reference held by the fault). */
  readonly page: number;
  /** Whether it was a write fault. @see FAULT_FLAG_WRITE */
  readonly write: boolean;
  /** Whether the page is mapped by a PTE (false: by a PMD, i.e. a whole device THP). `vmf->pte`. */
  readonly pteMapped: boolean;
}

/**
 * A pgmap's callbacks. Current mainline names (`folio_free` was `page_free` before 2025).
 * @see struct dev_pagemap_ops
 */
export interface DevPagemapOps {
  /** The folio at `head` (order `order`) lost its last reference: return it to the driver's free list. @see folio_free */
  folioFree(head: number, order: number): void;
  /** The core split a device-private THP: `tail` left the folio headed by `head`. @see folio_split */
  folioSplit?(head: number, tail: number): void;
  /** CPU touched a device-private page: migrate it (or its folio) back to RAM. Returns 0 or VM_FAULT_* bits. @see migrate_to_ram */
  migrateToRam?(vmf: VmFault): number | Promise<number>;
  /** A memory failure hit `nr` pages at `pfn`. Returns 0 or a negative errno. @see memory_failure */
  memoryFailure?(pgmap: DevPagemap, pfn: number, nr: number, flags: number): number;
}

/** An existing device region's pfns for {@link DevPagemapInit.range}. @see struct range */
export interface PgmapRange {
  /** First pfn: the start of a device region (e.g. a GPU's VRAM). */
  startPfn: number;
  /** Number of pages. */
  npages: number;
}

/** A size for which memremapPages reserves fake physical address space. @see request_free_mem_region */
export interface PgmapSize {
  /** Number of pages, a multiple of 512. */
  npages: number;
}

/** What a driver passes to {@link Memremap.memremapPages}. @see struct dev_pagemap */
export interface DevPagemapInit {
  /** MEMORY_DEVICE_PRIVATE or MEMORY_DEVICE_COHERENT. */
  type: number;
  /** Identity used for owner filtering (`pgmap_owner`, `dev_private_owner`). Must not be undefined/null. */
  owner: unknown;
  /** Callbacks. */
  ops: DevPagemapOps;
  /**
   * The range: an existing device region's pfns (e.g. a GPU's VRAM), or a page count for which a
   * fresh range of fake physical address space is reserved (as request_free_mem_region does).
   */
  range: PgmapRange | PgmapSize;
  /** Label for dumps. */
  name?: string;
}

/**
 * A registered dev_pagemap.
 * @see struct dev_pagemap
 */
export class DevPagemap {
  /** Whether memunmapPages ran. */
  dead = false;
  /**
   * @param id - pgmap id stored in each page (> 0). @param type - memory type. @param owner - owner identity.
   * @param ops - callbacks. @param startPfn - first pfn. @param npages - number of pages. @param name - label.
   */
  constructor(
    readonly id: number,
    readonly type: number,
    readonly owner: unknown,
    readonly ops: DevPagemapOps,
    readonly startPfn: number,
    readonly npages: number,
    readonly name: string,
  ) {}

  /** One past the last pfn. */
  get endPfn(): number {
    return this.startPfn + this.npages;
  }
}

/**
 * The machine's ZONE_DEVICE registry.
 * @see mm/memremap.c
 */
export class Memremap {
  /** Registered pgmaps by id (index 0 unused). */
  readonly pgmaps: (DevPagemap | undefined)[] = [undefined];

  /** @param pages - per-page state. */
  constructor(private readonly pages: PageState) {}

  /**
   * Register device memory.
   * @param init - type, owner, ops and range.
   * @returns the pgmap.
   * @throws HmmError EINVAL naming the field: unknown type, missing `folioFree`, missing
   *   `migrateToRam` for a private pgmap, missing owner, a range that is not an unused device
   *   region; EEXIST if the range is already remapped.
   * @see memremap_pages
   */
  memremapPages(init: DevPagemapInit): DevPagemap {
    if (init === null || typeof init !== "object") einval("pgmap", "an object");
    if (init.type !== MEMORY_DEVICE_PRIVATE && init.type !== MEMORY_DEVICE_COHERENT) {
      einval("pgmap.type", `MEMORY_DEVICE_PRIVATE or MEMORY_DEVICE_COHERENT, got ${String(init.type)}`);
    }
    if (init.ops === null || typeof init.ops !== "object" || typeof init.ops.folioFree !== "function") {
      einval("pgmap.ops.folioFree", "a function (every device pgmap must free its folios)");
    }
    if (init.type === MEMORY_DEVICE_PRIVATE && typeof init.ops.migrateToRam !== "function") {
      einval("pgmap.ops.migrateToRam", "a function (a device-private pgmap must migrate pages back on CPU fault)");
    }
    if (init.owner === undefined || init.owner === null)
      einval("pgmap.owner", "an owner identity (device-private and coherent pgmaps need one)");
    const ps = this.pages;
    let region: PhysRegion;
    if ("startPfn" in init.range) {
      const { startPfn, npages } = init.range;
      const r = ps.regionOf(startPfn);
      if (r === undefined || r.kind !== "device") einval("pgmap.range.startPfn", `the start of a device memory region, got ${startPfn}`);
      if (!Number.isInteger(npages) || npages <= 0 || startPfn + npages > r.basePfn + r.npages) {
        einval("pgmap.range.npages", `a positive count within region ${r.name}, got ${npages}`);
      }
      for (const pg of this.pgmaps) {
        if (pg && !pg.dead && pg.startPfn < startPfn + npages && startPfn < pg.endPfn) {
          throw new HmmError("EEXIST", `pgmap.range overlaps pgmap ${pg.name}`, "pgmap.range");
        }
      }
      region = r;
    } else {
      const { npages } = init.range;
      if (!Number.isInteger(npages) || npages <= 0 || npages % 512 !== 0)
        einval("pgmap.range.npages", `a positive multiple of 512, got ${npages}`);
      region = ps.addRegion("device", npages, -1, init.name ?? `pgmap${this.pgmaps.length}`);
    }
    const startPfn = "startPfn" in init.range ? init.range.startPfn : region.basePfn;
    const npages = init.range.npages;
    if (this.pgmaps.length >= 0xffff) throw new HmmError("ENOSPC", "too many pgmaps", "pgmap");
    const pg = new DevPagemap(this.pgmaps.length, init.type, init.owner, init.ops, startPfn, npages, init.name ?? region.name);
    this.pgmaps.push(pg);
    region.cpuAccessible = init.type === MEMORY_DEVICE_COHERENT;
    for (let p = startPfn; p < startPfn + npages; p++) {
      ps.flags[p] = PG.zoneDevice;
      ps.refcount[p] = 0;
      ps.mapcount[p] = 0;
      ps.order[p] = 0;
      ps.pgmap[p] = pg.id;
    }
    return pg;
  }

  /**
   * Unregister device memory; every page must be free (refcount 0).
   * @param pgmap - a live pgmap.
   * @throws HmmError EINVAL if already unmapped; BugError `pgmap-busy` naming pages still referenced.
   * @see memunmap_pages
   */
  memunmapPages(pgmap: DevPagemap): void {
    if (pgmap.dead || this.pgmaps[pgmap.id] !== pgmap) einval("pgmap", "a registered, live pgmap");
    const ps = this.pages;
    const busy: number[] = [];
    for (let p = pgmap.startPfn; p < pgmap.endPfn; p++) if ((ps.refcount[p] as number) !== 0) busy.push(p);
    if (busy.length > 0) {
      throw new BugError("pgmap-busy", `memunmap_pages(${pgmap.name}): ${busy.length} page(s) still referenced, first pfn ${busy[0]}`);
    }
    for (let p = pgmap.startPfn; p < pgmap.endPfn; p++) {
      ps.flags[p] = 0;
      ps.pgmap[p] = 0;
      ps.order[p] = 0;
    }
    pgmap.dead = true;
    this.pgmaps[pgmap.id] = undefined;
  }

  /**
   * The pgmap of a ZONE_DEVICE page.
   * @param pfn - page. @returns the pgmap, or undefined for non-device pages. @see page_pgmap
   */
  pgmapOf(pfn: number): DevPagemap | undefined {
    const id = this.pages.pgmap[pfn] as number;
    return id === 0 ? undefined : this.pgmaps[id];
  }

  /**
   * Whether `pfn` is a device-private page. @param pfn - page. @returns true if so.
   * @see is_device_private_page
   */
  isDevicePrivate(pfn: number): boolean {
    return this.pgmapOf(pfn)?.type === MEMORY_DEVICE_PRIVATE;
  }

  /**
   * Whether `pfn` is a device-coherent page. @param pfn - page. @returns true if so.
   * @see is_device_coherent_page
   */
  isDeviceCoherent(pfn: number): boolean {
    return this.pgmapOf(pfn)?.type === MEMORY_DEVICE_COHERENT;
  }

  /**
   * Initialise a free device page for the driver: refcount 1, locked.
   * @param pfn - a free page of a live pgmap.
   * @throws BugError `zone-device-init-busy` if it is not free (a double allocation).
   * @see zone_device_page_init
   */
  zoneDevicePageInit(pfn: number): void {
    this.zoneDeviceFolioInit(pfn, 0);
  }

  /**
   * Initialise a free, aligned run of `2^order` device pages as one folio: refcount 1, locked.
   * @param head - aligned first page. @param order - 0..9.
   * @throws HmmError EINVAL for a bad order or unaligned head; BugError if a page is in use.
   * @see zone_device_folio_init
   */
  zoneDeviceFolioInit(head: number, order: number): void {
    const pg = this.pgmapOf(head);
    if (pg === undefined) einval("pfn", `a page of a live pgmap, got ${head}`);
    if (!Number.isInteger(order) || order < 0 || order > 9) einval("order", `0..9, got ${order}`);
    const n = 1 << order;
    if (head % n !== 0 || head + n > pg.endPfn) einval("pfn", `aligned to ${n} pages inside the pgmap, got ${head}`);
    const ps = this.pages;
    const refcount = ps.refcount;
    const flags = ps.flags;
    let busy = 0;
    for (let p = head; p < head + n; p++) busy |= (refcount[p] as number) | ((flags[p] as number) & (PG.locked | PG.head | PG.tail));
    if (busy !== 0) {
      for (let p = head; p < head + n; p++) {
        if ((ps.refcount[p] as number) !== 0 || (ps.flags[p] as number) & (PG.locked | PG.head | PG.tail)) {
          throw new BugError("zone-device-init-busy", `zone_device_page_init on pfn ${p}, which is in use (refcount ${ps.refcount[p]})`);
        }
      }
    }
    // Free device pages have no mapping or index (freeZoneDeviceFolio clears the head's; tails never
    // hold one): only the head's are cleared again.
    ps.mapping[head] = 0;
    ps.index[head] = 0;
    if (n === 1) {
      ps.flags[head] = PG.zoneDevice | PG.locked;
    } else {
      // prep_compound_page on freshly initialised pages: head, then tails.
      ps.flags[head] = PG.zoneDevice | PG.head | PG.locked;
      ps.flags.fill(PG.zoneDevice | PG.tail, head + 1, head + n);
      ps.order.fill(order, head, head + n);
    }
    ps.refcount[head] = 1;
  }

  /**
   * Free a ZONE_DEVICE folio whose refcount reached zero: hand it to the driver's `folioFree`,
   * then return the pages to their free state.
   * @param head - folio head.
   * @throws BugError if the page is still locked or mapped.
   * @see free_zone_device_folio
   */
  freeZoneDeviceFolio(head: number): void {
    const ps = this.pages;
    const pg = this.pgmapOf(head);
    if (pg === undefined) throw new BugError("zone-device-free", `pfn ${head} has no live pgmap`);
    const f = ps.flags[head] as number;
    const order = f & PG.head ? (ps.order[head] as number) : 0;
    const n = 1 << order;
    if (f & PG.locked) throw new BugError("free-locked-page", `device pfn ${head} freed while locked`);
    const mapcount = ps.mapcount;
    let mapped = 0;
    for (let p = head; p < head + n; p++) mapped |= mapcount[p] as number;
    if (mapped !== 0) {
      for (let p = head; p < head + n; p++) {
        if ((ps.mapcount[p] as number) !== 0)
          throw new BugError("bad-page", `device pfn ${p} freed while mapped (mapcount ${ps.mapcount[p]})`);
      }
    }
    // Only the head holds mapping and index (see PageAllocator.freePages).
    ps.mapping[head] = 0;
    ps.index[head] = 0;
    if (n === 1) {
      ps.flags[head] = PG.zoneDevice;
    } else {
      ps.pincount[head + 1] = 0;
      ps.order.fill(0, head, head + n);
      ps.flags.fill(PG.zoneDevice, head, head + n);
    }
    pg.ops.folioFree(head, order);
  }
}
