/**
 * Device memory migration: migrate_vma_setup / migrate_vma_pages / migrate_vma_finalize, and the
 * VMA-less migrate_device_range / migrate_device_pfns / migrate_device_pages /
 * migrate_device_finalize used for eviction.
 *
 * The protocol, in three calls (the caller owns the destination pages and the copy; the core never
 * copies data):
 *
 * 1. **setup** validates the arguments, then *collects*: it walks `[start, end)` inside one
 *    MMU_NOTIFY_MIGRATE invalidation (owner = `pgmapOwner`, so the caller can skip its own), and
 *    for each page fills `src[i]` with `migratePfn(pfn) | MIGRATE [| WRITE] [| COMPOUND]`, taking a
 *    reference and the page lock (trylock: a page locked elsewhere is skipped, best effort),
 *    replacing its entry with a migration entry and dropping the mapping's rmap and reference.
 *    Selection: a system page needs SELECT_SYSTEM; a device-private page needs
 *    SELECT_DEVICE_PRIVATE **and** `pgmap.owner === pgmapOwner`; a device-coherent page needs
 *    SELECT_DEVICE_COHERENT and the owner too. Holes and zero pages of anonymous VMAs are
 *    collected as `MIGRATE` without VALID (the caller allocates and clears); holes of shared
 *    VMAs are not. A PMD-mapped THP (or an aligned hole) is one `COMPOUND` entry when
 *    SELECT_COMPOUND is set and the range covers the whole aligned 2 MiB; otherwise it is split.
 *    Then *unmap*: system folios are isolated from the LRU (the isolation reference replaces the
 *    collect reference), remaining mappings (other address spaces after fork) are replaced by
 *    migration entries, and `migrate_vma_check_page` restores any page with references beyond its
 *    mappings and the expected extra ones (a pin): its `MIGRATE` is cleared, its mappings restored,
 *    its entry zeroed. `cpages` is recomputed as the entries still migrating.
 * 2. The caller allocates a locked destination for each `MIGRATE` entry it wants (or leaves
 *    `dst[i] = 0` to decline), copies, and sets `dst[i] = migratePfn(dpfn) [| COMPOUND]`.
 * 3. **pages** commits each entry: no destination → `MIGRATE` cleared; a hole → the destination
 *    is inserted into the page table (fails if something was mapped there meanwhile); a COMPOUND
 *    source with a non-COMPOUND destination → the source folio is split and migrated page by
 *    page (the caller filled 512 destinations); COMPOUND destination for a non-COMPOUND source
 *    → fails; a non-anonymous source to device memory → fails; a source whose refcount is not
 *    exactly the expected one → fails. Success ⇔ `src[i] & MIGRATE` afterwards.
 *    **finalize** replaces each migration entry by the destination (success) or the source
 *    (failure), unlocks both, puts destinations on the LRU (system pages) and drops the
 *    references, freeing the sources that migrated (device sources reach their `folioFree`).
 *    `faultPage` stays locked for the fault handler.
 *
 * @see mm/migrate_device.c, include/linux/migrate.h, Documentation/mm/hmm.rst
 */
import { MEMORY_DEVICE_COHERENT, MEMORY_DEVICE_PRIVATE } from "../memremap/memremap";
import type { Mm } from "../mm/mm";
import type { MmCore } from "../mm/mm-core";
import { MMU_NOTIFY, type MmuNotifierRange, mmuNotifierInvalidateRangeEnd, mmuNotifierInvalidateRangeStart } from "../mm/mmu-notifier";
import { entryPayload, isHuge, isPresent, isWrite, mkPte, mkSwpEntry, PMD_SIZE, PTE, PTRS_PER_PTE, SWP, swpType } from "../mm/page-table";
import { VM, type Vma } from "../mm/vma";
import { HPAGE_PMD_NR, HPAGE_PMD_ORDER, PAGE_SIZE, PG } from "../phys/page-state";
import { BugError, einval } from "../sim/errors";

/** mpfn flags (low 6 bits). Bit 2 was MIGRATE_PFN_LOCKED until v5.16. @see include/linux/migrate.h */
export const MIGRATE_PFN = {
  /** The entry holds a pfn. @see MIGRATE_PFN_VALID */
  VALID: 1,
  /** The page is (still) migrating. @see MIGRATE_PFN_MIGRATE */
  MIGRATE: 2,
  /** The CPU mapping was writable. @see MIGRATE_PFN_WRITE */
  WRITE: 8,
  /** The entry stands for a whole 512-page folio. @see MIGRATE_PFN_COMPOUND */
  COMPOUND: 16,
} as const;
/** Bits below the pfn in an mpfn. @see MIGRATE_PFN_SHIFT */
export const MIGRATE_PFN_SHIFT = 6;

/** What setup selects. @see enum migrate_vma_direction */
export const MIGRATE_VMA_SELECT = {
  /** System RAM pages. @see MIGRATE_VMA_SELECT_SYSTEM */
  SYSTEM: 1,
  /** Device-private pages of `pgmapOwner`. @see MIGRATE_VMA_SELECT_DEVICE_PRIVATE */
  DEVICE_PRIVATE: 2,
  /** Device-coherent pages of `pgmapOwner`. @see MIGRATE_VMA_SELECT_DEVICE_COHERENT */
  DEVICE_COHERENT: 4,
  /** Keep PMD-sized folios whole. @see MIGRATE_VMA_SELECT_COMPOUND */
  COMPOUND: 8,
} as const;

/**
 * Encode a pfn as a valid mpfn (arithmetic: the pfn may exceed 32 bits).
 * @param pfn - page frame number (integer, 0 ≤ pfn < 2^47).
 * @returns `pfn * 64 + MIGRATE_PFN_VALID`.
 * @see migrate_pfn
 */
export function migratePfn(pfn: number): number {
  return pfn * 64 + MIGRATE_PFN.VALID;
}

/**
 * Decode an mpfn.
 * @param m - an mpfn. @returns the pfn, or -1 when VALID is clear. @see migrate_pfn_to_page
 */
export function migratePfnToPfn(m: number): number {
  return (m & MIGRATE_PFN.VALID) !== 0 ? Math.floor(m / 64) : -1;
}

/**
 * The flag bits of an mpfn. @param m - an mpfn. @returns the low 6 bits.
 */
export function mpfnFlags(m: number): number {
  return m & 63;
}

// The flag bits are read with `&`: exact for non-negative integers below 2^53 (ToInt32 keeps the
// value modulo 2^32), and an integer instruction where `%` on a double is a call to fmod.
function setF(m: number, f: number): number {
  return m & f ? m : m + f;
}
function clrF(m: number, f: number): number {
  return m - (m & f & 63);
}
function hasF(m: number, f: number): boolean {
  return (m & f) !== 0;
}

/**
 * The arguments and results of a migrate_vma operation.
 *
 * hmmkit's VMAs carry no back-pointer to their address space, so `mm` is passed alongside `vma`.
 * @see struct migrate_vma
 */
export interface MigrateVma {
  /** The address space. */
  mm: Mm;
  /** The VMA containing `[start, end)`. */
  vma: Vma;
  /** Source mpfns, >= (end - start) / PAGE_SIZE entries; filled by setup; the caller must not modify it after setup. */
  src: Float64Array;
  /** Destination mpfns, same length; filled by the caller between setup and pages. */
  dst: Float64Array;
  /** First byte (page aligned). */
  start: number;
  /** One past the last byte (page aligned). */
  end: number;
  /** Device pages are selected only if their pgmap's owner is this; also the notifier owner. */
  pgmapOwner: unknown;
  /** {@link MIGRATE_VMA_SELECT} bits. */
  flags: number;
  /** From migrateToRam: the locked device-private page that faulted (stays locked), or -1/undefined. */
  faultPage?: number;
  /** Out: pages collected and still migrating after setup. */
  cpages: number;
  /** Out: entries filled. */
  npages: number;
}

const SELECT_ALL =
  MIGRATE_VMA_SELECT.SYSTEM | MIGRATE_VMA_SELECT.DEVICE_PRIVATE | MIGRATE_VMA_SELECT.DEVICE_COHERENT | MIGRATE_VMA_SELECT.COMPOUND;

/**
 * Device migration for one machine. Reach it as `machine.migrate` (or `mm.core.migrate`).
 *
 * Context: every call is synchronous; the caller holds the address space stable between setup and
 * finalize (the kernel's mmap read lock). Between the calls the caller may await (a DMA copy): a
 * CPU access to a page under migration waits until finalize.
 * @see mm/migrate_device.c
 */
export class MigrateDevice {
  /** Heads of large folios with PTE-level migration entries (a split PMD or a PTE-mapped folio). */
  private readonly largePteMigration = new Set<number>();
  /** Pages whose migration entry fork duplicated (finalize walks the rmap for them). */
  private readonly copiedEntries = new Set<number>();
  /** Per migrate_vma src array: 1 where the page's only mapping was at start + i * PAGE_SIZE when collected. */
  private readonly soleMapping = new WeakMap<Float64Array, Uint8Array>();
  /** The storage behind `soleMapping`, kept per src array across migrations (no allocation per window). */
  private readonly soleBuffers = new WeakMap<Float64Array, Uint8Array>();

  /** @param core - the mm layer. */
  constructor(private readonly core: MmCore) {}

  /**
   * Record that PTE-level migration entries point into the large folio at `head` (so finalize
   * walks its subpages, not only its PMD mappings).
   * @param head - folio head.
   */
  notePteMigration(head: number): void {
    this.largePteMigration.add(head);
  }

  /**
   * Collect, lock and unmap the pages of `[start, end)` (step 1 of 3; see the file comment).
   * @param args - the migration; `src` is overwritten, `cpages`/`npages` are set.
   * @returns 0 (even when nothing could be collected).
   * @throws HmmError EINVAL naming the argument: `args.vma` (not a live VMA of `args.mm`, or
   *   VM_IO/PFNMAP/MIXEDMAP, or hugetlb), `args.start`/`args.end` (unaligned, empty, or outside the VMA),
   *   `args.src`/`args.dst` (not Float64Arrays of npages entries), `args.flags` (unknown bits),
   *   `args.faultPage` (not a locked device-private page). Nothing is changed when it throws.
   * @see migrate_vma_setup
   * @example
   * ```ts
   * const args = { mm, vma, start, end, src, dst, pgmapOwner: owner, flags: MIGRATE_VMA_SELECT.SYSTEM, cpages: 0, npages: 0 };
   * m.migrate.migrateVmaSetup(args);
   * for (let i = 0; i < args.npages; i++) if (args.src[i] % 64 & MIGRATE_PFN.MIGRATE) { dst[i] = migratePfn(allocLockedDevicePage()); copy... }
   * m.migrate.migrateVmaPages(args);
   * // update the device page table for entries whose src still has MIGRATE
   * m.migrate.migrateVmaFinalize(args);
   * ```
   */
  migrateVmaSetup(args: MigrateVma): number {
    const core = this.core;
    if (args === null || typeof args !== "object") einval("args", "a MigrateVma object");
    const { mm, vma } = args;
    if (mm === undefined || mm.dead || mm.core !== core) einval("args.mm", "a live address space of this machine");
    if (vma === undefined || !mm.vmas.includes(vma)) einval("args.vma", "a live VMA of args.mm");
    if (vma.flags & (VM.IO | VM.PFNMAP | VM.MIXEDMAP | VM.HUGETLB))
      einval("args.vma", "a VMA without VM_IO/VM_PFNMAP/VM_MIXEDMAP/VM_HUGETLB");
    const { start, end } = args;
    if (!Number.isInteger(start) || start % PAGE_SIZE !== 0) einval("args.start", `page aligned, got ${start}`);
    if (!Number.isInteger(end) || end % PAGE_SIZE !== 0) einval("args.end", `page aligned, got ${end}`);
    const nr = (end - start) / PAGE_SIZE;
    if (nr <= 0) einval("args.end", `greater than args.start (${start}), got ${end}`);
    if (start < vma.start || start >= vma.end)
      einval("args.start", `inside the VMA [0x${vma.start.toString(16)}, 0x${vma.end.toString(16)})`);
    if (end <= vma.start || end > vma.end) einval("args.end", `inside the VMA [0x${vma.start.toString(16)}, 0x${vma.end.toString(16)})`);
    if (!(args.src instanceof Float64Array) || args.src.length < nr) einval("args.src", `a Float64Array of at least ${nr} entries`);
    if (!(args.dst instanceof Float64Array) || args.dst.length < nr) einval("args.dst", `a Float64Array of at least ${nr} entries`);
    if (!Number.isInteger(args.flags) || (args.flags & ~SELECT_ALL) !== 0)
      einval("args.flags", `MIGRATE_VMA_SELECT_* bits, got ${args.flags}`);
    const fp = args.faultPage ?? -1;
    if (fp >= 0 && (!core.memremap.isDevicePrivate(fp) || !core.refs.isLocked(core.pages.compoundHead(fp)))) {
      einval("args.faultPage", "a locked device-private page");
    }
    args.src.fill(0, 0, nr);
    args.cpages = 0;
    args.npages = 0;
    let sole = this.soleBuffers.get(args.src);
    if (sole === undefined || sole.length < nr) {
      sole = new Uint8Array(args.src.length);
      this.soleBuffers.set(args.src, sole);
    } else sole.fill(0, 0, nr);
    this.soleMapping.set(args.src, sole);
    this.collect(args);
    if (args.cpages > 0) args.cpages = this.unmap(args.src, args.npages, fp);
    return 0;
  }

  /**
   * Commit the migration of every entry that has a destination (step 3 of 3, first half).
   * A COMPOUND source entry with a COMPOUND destination moves the whole folio; with a base-page
   * destination the source folio is split and each of the 512 `dst` entries is used. A `dst`
   * entry whose `src` entry is 0 (such as a tail entry of a COMPOUND one) migrates nothing, and
   * finalize unlocks and puts it, as the kernel does.
   * @param args - the migration, after setup and after the caller filled `dst`.
   * @throws HmmError EINVAL `args.dst[i]` if a destination is not a locked, referenced page (or a
   *   COMPOUND destination is not an order-9 folio head); nothing is changed when it throws.
   * @see migrate_vma_pages
   */
  migrateVmaPages(args: MigrateVma): void {
    this.checkDst(args.src, args.dst, args.npages, "args.dst");
    this.migratePagesInner(args.src, args.dst, args.npages, args);
  }

  /**
   * Finish: remap to the destinations (or restore the sources), unlock and release.
   * @param args - the migration, after {@link MigrateDevice.migrateVmaPages}.
   * @see migrate_vma_finalize
   */
  migrateVmaFinalize(args: MigrateVma): void {
    this.finalizeInner(args.src, args.dst, args.npages, args.faultPage ?? -1, args);
    this.soleMapping.delete(args.src);
  }

  /**
   * Lock and unmap a range of device pfns for migration to system memory, without a VMA.
   * Free pages (refcount 0) and tail pages give 0 entries; a large folio gives one COMPOUND
   * entry followed by zeros.
   * @param src - output mpfns, >= npages entries.
   * @param startPfn - first device pfn. @param npages - number of pfns.
   * @returns 0.
   * @throws HmmError EINVAL for a bad array or a range outside one live pgmap.
   * @see migrate_device_range
   */
  migrateDeviceRange(src: Float64Array, startPfn: number, npages: number): number {
    if (!(src instanceof Float64Array) || !Number.isInteger(npages) || npages <= 0 || src.length < npages) {
      einval("src", `a Float64Array of at least npages (${npages}) entries`);
    }
    const pg = this.core.memremap.pgmapOf(startPfn);
    if (pg === undefined || startPfn + npages > pg.endPfn) einval("startPfn", "a range of device pfns inside one live pgmap");
    this.lockAndUnmap(src, npages, (i) => startPfn + i);
    return 0;
  }

  /**
   * Like {@link MigrateDevice.migrateDeviceRange} for a non-contiguous list of device pfns.
   * @param src - in: pfns (plain numbers); out: mpfns. @param npages - entries.
   * @returns 0. @throws HmmError EINVAL for a bad array or a pfn that is not a device page.
   * @see migrate_device_pfns
   */
  migrateDevicePfns(src: Float64Array, npages: number): number {
    if (!(src instanceof Float64Array) || !Number.isInteger(npages) || npages <= 0 || src.length < npages) {
      einval("src", `a Float64Array of at least npages (${npages}) entries`);
    }
    for (let i = 0; i < npages; i++) {
      if (this.core.memremap.pgmapOf(src[i] as number) === undefined) einval(`src[${i}]`, "the pfn of a page of a live pgmap");
    }
    this.lockAndUnmap(src, npages, (i) => src[i] as number);
    return 0;
  }

  /**
   * Lock each device pfn (a large folio gives one COMPOUND entry followed by zeros), then unmap.
   * `pfnAt(i)` is read before `src[i]` is overwritten.
   */
  private lockAndUnmap(src: Float64Array, npages: number, pfnAt: (i: number) => number): void {
    for (let i = 0; i < npages; i++) {
      const pfn = pfnAt(i);
      src[i] = this.pfnLock(pfn);
      const n = this.core.pages.folioNrPages(pfn);
      if (src[i] !== 0 && n > 1) {
        src[i] = setF(src[i] as number, MIGRATE_PFN.COMPOUND);
        for (let j = 1; j < n && i + j < npages; j++) src[i + j] = 0;
        i += n - 1;
      }
    }
    this.unmap(src, npages, -1);
  }

  /**
   * migrate_vma_pages for migrate_device_range: commit each entry (no holes, no split).
   * @param src - from migrateDeviceRange. @param dst - destinations. @param npages - entries.
   * @throws HmmError EINVAL `dst[i]` as {@link MigrateDevice.migrateVmaPages}.
   * @see migrate_device_pages
   */
  migrateDevicePages(src: Float64Array, dst: Float64Array, npages: number): void {
    this.checkDst(src, dst, npages, "dst");
    this.migratePagesInner(src, dst, npages, undefined);
  }

  /**
   * Finalize a migrate_device_range migration.
   * @param src - sources. @param dst - destinations. @param npages - entries.
   * @see migrate_device_finalize
   */
  migrateDeviceFinalize(src: Float64Array, dst: Float64Array, npages: number): void {
    this.finalizeInner(src, dst, npages, -1);
  }

  // ---------------------------------------------------------------- collect

  private collect(args: MigrateVma): void {
    const { mm } = args;
    const range: MmuNotifierRange = {
      mm,
      start: args.start,
      end: args.end,
      event: MMU_NOTIFY.MIGRATE,
      owner: args.pgmapOwner,
      blockable: true,
    };
    const hit = mmuNotifierInvalidateRangeStart(range);
    try {
      let va = args.start;
      while (va < args.end) {
        const pmdEnd = Math.min(args.end, (Math.floor(va / PMD_SIZE) + 1) * PMD_SIZE);
        const pmd = mm.pt.getPmd(va);
        if (pmd === 0) this.collectHole(args, va, pmdEnd);
        else if (isHuge(pmd) && this.collectHugePmd(args, va, pmdEnd, pmd)) {
          // collected or skipped as a whole
        } else this.collectPtes(args, va, pmdEnd);
        va = pmdEnd;
      }
    } finally {
      mmuNotifierInvalidateRangeEnd(range, hit);
    }
  }

  private skip(args: MigrateVma, a: number, b: number): void {
    const n = Math.max(0, Math.ceil((b - a) / PAGE_SIZE));
    args.dst.fill(0, args.npages, args.npages + n);
    args.src.fill(0, args.npages, args.npages + n);
    args.npages += n;
  }

  private collectHole(args: MigrateVma, a: number, b: number): void {
    if (args.vma.shared) {
      this.skip(args, a, b);
      return;
    }
    if (args.flags & MIGRATE_VMA_SELECT.COMPOUND && a % PMD_SIZE === 0 && b % PMD_SIZE === 0) {
      args.src[args.npages] = MIGRATE_PFN.MIGRATE | MIGRATE_PFN.COMPOUND;
      args.dst[args.npages++] = 0;
      args.cpages++;
      this.skip(args, a + PAGE_SIZE, b);
      return;
    }
    for (let x = a; x < b; x += PAGE_SIZE) {
      args.src[args.npages] = MIGRATE_PFN.MIGRATE;
      args.dst[args.npages++] = 0;
      args.cpages++;
    }
  }

  /** Returns true when the PMD range was handled whole; false to continue at PTE level. */
  private collectHugePmd(args: MigrateVma, a: number, b: number, pmd: number): boolean {
    const core = this.core;
    const { mm } = args;
    const fp = args.faultPage ?? -1;
    const faultFolio = fp >= 0 ? core.pages.compoundHead(fp) : -1;
    const pfn = entryPayload(pmd);
    let write = false;
    if (isPresent(pmd) || swpType(pmd) === 0) {
      if (!(args.flags & MIGRATE_VMA_SELECT.SYSTEM)) {
        this.skip(args, a, b);
        return true;
      }
      if (core.huge.isHugeZeroPfn(pfn)) {
        this.collectHole(args, a, b);
        return true;
      }
      write = isWrite(pmd);
    } else if (swpType(pmd) === SWP.DEVICE_PRIVATE) {
      const pg = core.memremap.pgmapOf(pfn);
      if (!(args.flags & MIGRATE_VMA_SELECT.DEVICE_PRIVATE) || pg === undefined || pg.owner !== args.pgmapOwner) {
        this.skip(args, a, b);
        return true;
      }
      write = isWrite(pmd);
    } else {
      // A migration entry (another migration in flight) or anything else: best effort, skip.
      this.skip(args, a, b);
      return true;
    }
    const head = pfn;
    core.refs.getPage(head);
    if (head !== faultFolio && !core.refs.trylockPage(head)) {
      core.refs.putPage(head);
      this.skip(args, a, b);
      return true;
    }
    if (args.flags & MIGRATE_VMA_SELECT.COMPOUND && a % PMD_SIZE === 0 && b % PMD_SIZE === 0) {
      args.src[args.npages] = migratePfn(head) + MIGRATE_PFN.MIGRATE + MIGRATE_PFN.COMPOUND + (write ? MIGRATE_PFN.WRITE : 0);
      args.dst[args.npages++] = 0;
      args.cpages++;
      const haddr = a;
      const present = isPresent(pmd);
      mm.pt.setPmd(haddr, mkSwpEntry(SWP.MIGRATION, head, write) + PTE.HUGE);
      if (pmd & PTE.DIRTY) core.pages.flags[head] = (core.pages.flags[head] as number) | PG.dirty;
      core.huge.entireMapcountDec(head);
      if (present) mm.rssAnon -= HPAGE_PMD_NR;
      else mm.rssDevice -= HPAGE_PMD_NR;
      core.refs.putPage(head);
      this.skip(args, a + PAGE_SIZE, b);
      return true;
    }
    // Fallback: split the folio, then collect at PTE level.
    const ok = core.huge.splitFolio(head, 1);
    if (head !== faultFolio) core.refs.unlockPage(head);
    core.refs.putPage(head);
    if (!ok) {
      this.skip(args, a, b);
      return true;
    }
    if (mm.pt.getPmd(a) === 0) {
      this.collectHole(args, a, b);
      return true;
    }
    return false;
  }

  /**
   * Collect the PTE-mapped pages of `[a, b)` (one PMD's worth at most). Reads and writes the PTE
   * table directly: it is looked up once, and again after a folio split.
   */
  private collectPtes(args: MigrateVma, a: number, b: number): void {
    const core = this.core;
    const ps = core.pages;
    const { mm, vma, src, dst, flags } = args;
    const fp = args.faultPage ?? -1;
    const zeroPfn = core.zeroPfn;
    const sole = this.soleMapping.get(src) as Uint8Array;
    const selSystem = (flags & MIGRATE_VMA_SELECT.SYSTEM) !== 0;
    const selPrivate = (flags & MIGRATE_VMA_SELECT.DEVICE_PRIVATE) !== 0;
    const selCoherent = (flags & MIGRATE_VMA_SELECT.DEVICE_COHERENT) !== 0;
    let t = mm.pt.pteTable(a);
    let n = args.npages;
    let cpages = args.cpages;
    // The entry's index in the PTE table, advanced with addr.
    let idx = (a / PAGE_SIZE) & (PTRS_PER_PTE - 1);
    for (let addr = a; addr < b; ) {
      const e = t === undefined ? 0 : (t[idx] as number);
      if (e === 0) {
        let mpfn = 0;
        if (!vma.shared) {
          mpfn = MIGRATE_PFN.MIGRATE;
          cpages++;
        }
        dst[n] = 0;
        src[n++] = mpfn;
        addr += PAGE_SIZE;
        idx++;
        continue;
      }
      const present = (e & PTE.PRESENT) !== 0;
      const type = swpType(e);
      const page = entryPayload(e);
      let select: boolean;
      if (!present && type !== 0) {
        if (type !== SWP.DEVICE_PRIVATE) select = false;
        else {
          const pg = core.memremap.pgmapOf(page);
          select = selPrivate && pg !== undefined && pg.owner === args.pgmapOwner;
        }
      } else if (page === zeroPfn && selSystem) {
        dst[n] = 0;
        src[n++] = MIGRATE_PFN.MIGRATE;
        cpages++;
        addr += PAGE_SIZE;
        idx++;
        continue;
      } else if (!((ps.flags[page] as number) & PG.zoneDevice)) select = selSystem && page !== zeroPfn;
      else {
        const pg = core.memremap.pgmapOf(page);
        select = pg !== undefined && pg.type === MEMORY_DEVICE_COHERENT && selCoherent && pg.owner === args.pgmapOwner;
      }
      if (select && (ps.flags[page] as number) & (PG.head | PG.tail)) {
        args.npages = n;
        args.cpages = cpages;
        if (!this.splitForCollect(page, fp)) {
          this.skip(args, addr, b);
          return;
        }
        t = mm.pt.pteTable(a);
        continue; // re-read this entry
      }
      if (!select || (ps.mapping[page] as number) === 0) {
        dst[n] = 0;
        src[n++] = 0;
        addr += PAGE_SIZE;
        idx++;
        continue;
      }
      // folio_get + folio_trylock; on success the mapping's reference becomes the collect
      // reference (the kernel's folio_put after the migration entry is installed), so the
      // refcount is unchanged either way.
      if ((ps.refcount[page] as number) <= 0)
        throw new BugError("get-free-page", `get_page on pfn ${page} with refcount ${ps.refcount[page]}`);
      const f = ps.flags[page] as number;
      if (page !== fp && f & PG.locked) {
        dst[n] = 0;
        src[n++] = 0;
        addr += PAGE_SIZE;
        idx++;
        continue;
      }
      const write = (e & PTE.WRITE) !== 0;
      ps.flags[page] = f | PG.locked | (e & PTE.DIRTY ? PG.dirty : 0);
      cpages++;
      (t as Float64Array)[idx] = mkSwpEntry(SWP.MIGRATION, page, write);
      const mc = (ps.mapcount[page] as number) - 1;
      ps.mapcount[page] = mc;
      if (mc === 0) sole[n] = 1;
      if (type === SWP.DEVICE_PRIVATE) mm.rssDevice--;
      else mm.rssAnon--;
      dst[n] = 0;
      src[n++] = migratePfn(page) + MIGRATE_PFN.MIGRATE + (write ? MIGRATE_PFN.WRITE : 0);
      addr += PAGE_SIZE;
      idx++;
    }
    args.npages = n;
    args.cpages = cpages;
  }

  private splitForCollect(page: number, fp: number): boolean {
    const core = this.core;
    const head = core.pages.compoundHead(page);
    const faultFolio = fp >= 0 ? core.pages.compoundHead(fp) : -1;
    if (head !== faultFolio) {
      core.refs.getPage(head);
      if (!core.refs.trylockPage(head)) {
        core.refs.putPage(head);
        return false;
      }
    }
    // The fault handler's reference and lock count as the caller's for the faulting folio.
    const ok = core.huge.splitFolio(head, 1);
    if (head !== faultFolio) {
      core.refs.unlockPage(head);
      core.refs.putPage(head);
    } else if (ok && fp !== head) {
      // After the split the faulting page is its own folio: move the handler's lock and
      // reference from the old head to it, as migrate_vma_split_folio does.
      const ps = core.pages;
      ps.refcount[fp] = (ps.refcount[fp] as number) + 1;
      core.refs.unlockPage(head);
      core.refs.putPage(head);
      if (!core.refs.trylockPage(fp))
        throw new BugError("split-fault-page-locked", `faulting page ${fp} locked by someone else after split`);
    }
    return ok;
  }

  // ---------------------------------------------------------------- unmap

  private unmap(src: Float64Array, npages: number, fp: number): number {
    const core = this.core;
    const ps = core.pages;
    const faultFolio = fp >= 0 ? ps.compoundHead(fp) : -1;
    let unmapped = 0;
    let restore = 0;
    for (let i = 0; i < npages; ) {
      const m = src[i] as number;
      const page = migratePfnToPfn(m);
      let nr = 1;
      if (page < 0) {
        if (hasF(m, MIGRATE_PFN.MIGRATE)) unmapped++;
        i++;
        continue;
      }
      const head = ps.compoundHead(page);
      nr = ps.folioNrPages(head);
      if (nr > 1) src[i] = setF(m, MIGRATE_PFN.COMPOUND);
      const zd = ((ps.flags[head] as number) & PG.zoneDevice) !== 0;
      let failed = false;
      if (!zd) {
        if (!core.lru.isolate(head)) failed = true;
        else core.refs.putPage(head);
      }
      if (!failed) {
        let mapped = core.rmap.folioMapcount(head);
        if (mapped > 0) {
          this.tryToMigrate(head);
          mapped = core.rmap.folioMapcount(head);
        }
        if (mapped > 0 || !this.checkPage(head, page === fp)) {
          if (!zd) {
            core.refs.getPage(head);
            core.lru.putback(head, (p) => core.refs.putPage(p));
          }
          failed = true;
        }
      }
      if (failed) {
        src[i] = clrF(src[i] as number, MIGRATE_PFN.MIGRATE);
        restore++;
      } else unmapped++;
      i += nr;
    }
    for (let i = 0; i < npages && restore > 0; i++) {
      const m = src[i] as number;
      const page = migratePfnToPfn(m);
      if (page < 0 || hasF(m, MIGRATE_PFN.MIGRATE)) continue;
      const head = ps.compoundHead(page);
      this.removeMigrationPtes(head, head);
      src[i] = 0;
      if (head !== faultFolio) core.refs.unlockPage(head);
      core.refs.putPage(head);
      restore--;
    }
    return unmapped;
  }

  /** The kernel's migrate_vma_check_page: false if the folio has references beyond the expected ones (a pin). */
  private checkPage(head: number, isFaultPage: boolean): boolean {
    const ps = this.core.pages;
    let extra = 1 + (isFaultPage ? 1 : 0);
    const f = ps.flags[head] as number;
    if (f & PG.zoneDevice) extra++;
    if ((ps.mapping[head] as number) !== 0 && !(f & PG.anon) && !(f & PG.zoneDevice)) extra++;
    // Called with the folio unmapped (its mapcount is 0).
    return (ps.refcount[head] as number) - extra <= 0;
  }

  /** Replace every remaining mapping of a folio by a migration entry. @see try_to_migrate */
  private tryToMigrate(head: number): void {
    const core = this.core;
    const ps = core.pages;
    const n = ps.folioNrPages(head);
    const zd = ((ps.flags[head] as number) & PG.zoneDevice) !== 0;
    if (n > 1 && core.rmap.entireMapcount(head) > 0) {
      core.rmap.walk(head, (mm, _vma, va) => {
        const haddr = va - (va % PMD_SIZE);
        const pmd = mm.pt.getPmd(haddr);
        if (pmd === 0 || !isHuge(pmd) || entryPayload(pmd) !== head) return false;
        const t = swpType(pmd);
        if (!(isPresent(pmd) || t === 0 || t === SWP.DEVICE_PRIVATE)) return false;
        this.notifyClear(mm, haddr, haddr + PMD_SIZE);
        mm.pt.setPmd(haddr, mkSwpEntry(SWP.MIGRATION, head, isWrite(pmd)) + PTE.HUGE);
        core.huge.entireMapcountDec(head);
        if (zd) mm.rssDevice -= HPAGE_PMD_NR;
        else mm.rssAnon -= HPAGE_PMD_NR;
        core.refs.putPage(head);
        return false;
      });
    }
    for (let p = head; p < head + n; p++) {
      if ((ps.mapcount[p] as number) === 0) continue;
      if (n > 1) this.largePteMigration.add(head);
      core.rmap.walk(p, (mm, _vma, va) => {
        const pmd = mm.pt.getPmd(va);
        if (pmd === 0 || isHuge(pmd)) return false;
        const e = mm.pt.getPte(va);
        if (e === 0 || entryPayload(e) !== p) return false;
        const t = swpType(e);
        if (!(isPresent(e) || t === 0 || t === SWP.DEVICE_PRIVATE || t === SWP.DEVICE_EXCLUSIVE)) return false;
        this.notifyClear(mm, va, va + PAGE_SIZE);
        mm.pt.setPte(va, mkSwpEntry(SWP.MIGRATION, p, isWrite(e)));
        ps.mapcount[p] = (ps.mapcount[p] as number) - 1;
        if (t === SWP.DEVICE_PRIVATE) mm.rssDevice--;
        else mm.rssAnon--;
        core.refs.putPage(p);
        return (ps.mapcount[p] as number) === 0;
      });
    }
  }

  private notifyClear(mm: Mm, start: number, end: number): void {
    if (mm.notifiers.subs.length === 0) return;
    const r: MmuNotifierRange = { mm, start, end, event: MMU_NOTIFY.CLEAR, owner: undefined, blockable: true };
    mmuNotifierInvalidateRangeEnd(r, mmuNotifierInvalidateRangeStart(r));
  }

  /**
   * Replace migration entries pointing at `srcHead`'s pages by entries for `dstHead`'s pages.
   * @see remove_migration_ptes
   */
  private removeMigrationPtes(srcHead: number, dstHead: number): void {
    const core = this.core;
    const ps = core.pages;
    const n = ps.folioNrPages(dstHead);
    const srcN = ps.folioNrPages(srcHead);
    const dstPg = core.memremap.pgmapOf(dstHead);
    const dstPrivate = dstPg?.type === MEMORY_DEVICE_PRIVATE;
    const zd = dstPg !== undefined;
    if (n > 1 && srcN === n) {
      // PMD migration entries first.
      core.rmap.walk(srcHead, (mm, vma, va) => {
        const haddr = va - (va % PMD_SIZE);
        const pmd = mm.pt.getPmd(haddr);
        if (pmd === 0 || !isHuge(pmd) || swpType(pmd) !== SWP.MIGRATION || entryPayload(pmd) !== srcHead) return false;
        const w = isWrite(pmd) && (vma.flags & VM.WRITE) !== 0;
        const e = dstPrivate
          ? mkSwpEntry(SWP.DEVICE_PRIVATE, dstHead, w) + PTE.HUGE
          : mkPte(dstHead, w) + PTE.HUGE + PTE.YOUNG + (w ? PTE.DIRTY : 0);
        mm.pt.setPmd(haddr, e);
        core.refs.getPage(dstHead);
        core.huge.entireMapcountInc(dstHead);
        if (dstPrivate) mm.rssDevice += HPAGE_PMD_NR;
        else mm.rssAnon += HPAGE_PMD_NR;
        if (!zd && core.rmap.entireMapcount(dstHead) === 1) core.vmstat.c.nr_anon_transparent_hugepages++;
        return false;
      });
    }
    // A large folio migrated by PMD has no PTE-level entries unless one was split or PTE-mapped.
    if (srcN > 1 && !this.largePteMigration.delete(srcHead)) return;
    for (let i = 0; i < srcN; i++) {
      const sp = srcHead + i;
      const dp = dstHead + i;
      core.rmap.walk(sp, (mm, vma, va) => {
        const haddr = va - (va % PMD_SIZE);
        const pmd = mm.pt.getPmd(haddr);
        if (pmd !== 0 && isHuge(pmd)) {
          if (swpType(pmd) !== SWP.MIGRATION) return false;
          // A PMD migration entry for a folio that has since been split: split the entry.
          core.huge.splitHugePmd(mm, haddr);
        }
        this.restorePte(mm, vma, va, sp, dp, dstPrivate);
        return false;
      });
    }
  }

  /** Replace the migration entry for `sp` at `va` (if it is there) by an entry for `dp`. Returns true if replaced. */
  private restorePte(mm: Mm, vma: Vma, va: number, sp: number, dp: number, dstPrivate: boolean): boolean {
    const e = mm.pt.getPte(va);
    if (e === 0 || swpType(e) !== SWP.MIGRATION || entryPayload(e) !== sp) return false;
    mm.pt.setPte(va, this.restoredEntry(e, vma, dp, dstPrivate));
    this.mapRestored(mm, dp, dstPrivate);
    return true;
  }

  /** The entry that replaces migration entry `e` for page `dp` (writable if `e` was and the VMA is). */
  private restoredEntry(e: number, vma: Vma, dp: number, dstPrivate: boolean): number {
    const w = (e & PTE.WRITE) !== 0 && (vma.flags & VM.WRITE) !== 0;
    return dstPrivate ? mkSwpEntry(SWP.DEVICE_PRIVATE, dp, w) : mkPte(dp, w) + PTE.YOUNG + (w ? PTE.DIRTY : 0);
  }

  /** Account a restored PTE mapping of `dp`: its reference, mapcount and the RSS counter. */
  private mapRestored(mm: Mm, dp: number, dstPrivate: boolean): void {
    this.core.refs.getPage(dp);
    const ps = this.core.pages;
    ps.mapcount[dp] = (ps.mapcount[dp] as number) + 1;
    if (dstPrivate) mm.rssDevice++;
    else mm.rssAnon++;
  }

  /**
   * Record that fork copied a migration entry for `pfn`, so finalize must walk the rmap for it.
   * @param pfn - the page under migration.
   */
  noteMigrationEntryCopy(pfn: number): void {
    this.copiedEntries.add(this.core.pages.compoundHead(pfn));
  }

  private pfnLock(pfn: number): number {
    const core = this.core;
    const ps = core.pages;
    if ((ps.flags[pfn] as number) & PG.tail || (ps.refcount[pfn] as number) <= 0) return 0;
    core.refs.getPage(pfn);
    if (!core.refs.trylockPage(pfn)) {
      core.refs.putPage(pfn);
      return 0;
    }
    return migratePfn(pfn) + MIGRATE_PFN.MIGRATE;
  }

  // ---------------------------------------------------------------- pages

  private checkDst(src: Float64Array, dst: Float64Array, npages: number, name: string): void {
    const ps = this.core.pages;
    if (!(dst instanceof Float64Array) || dst.length < npages) einval(name, `a Float64Array of at least ${npages} entries`);
    for (let i = 0; i < npages; i++) {
      const m = dst[i] as number;
      if (m === 0) continue;
      const d = migratePfnToPfn(m);
      if (d < 0) einval(`${name}[${i}]`, "0 or a valid mpfn (migratePfn(pfn) [| COMPOUND])");
      if (!ps.pfnValid(d)) einval(`${name}[${i}]`, `a valid pfn, got ${d}`);
      const head = ps.compoundHead(d);
      if ((ps.refcount[head] as number) <= 0 || !((ps.flags[head] as number) & PG.locked)) {
        einval(
          `${name}[${i}]`,
          `a locked, referenced destination page (pfn ${d}: refcount ${ps.refcount[head]}, ${(ps.flags[head] as number) & PG.locked ? "locked" : "unlocked"})`,
        );
      }
      if (hasF(m, MIGRATE_PFN.COMPOUND) && (head !== d || ps.folioNrPages(d) !== HPAGE_PMD_NR)) {
        einval(`${name}[${i}]`, `a COMPOUND destination must be the head of an order-${HPAGE_PMD_ORDER} folio (pfn ${d})`);
      }
      const s = migratePfnToPfn(src[i] as number);
      if (s >= 0 && s === d) einval(`${name}[${i}]`, "a destination different from the source");
    }
  }

  private migratePagesInner(src: Float64Array, dst: Float64Array, npages: number, migrate: MigrateVma | undefined): void {
    const core = this.core;
    const ps = core.pages;
    let range: MmuNotifierRange | undefined;
    let hit = false;
    const fp = migrate?.faultPage ?? -1;
    try {
      for (let i = 0; i < npages; ) {
        const sm0 = src[i] as number;
        const dm0 = dst[i] as number;
        if (sm0 === 0 && dm0 === 0) {
          i++; // nothing collected, nothing to commit (the tail entries of a COMPOUND one)
          continue;
        }
        const newpage = dm0 & MIGRATE_PFN.VALID ? Math.floor(dm0 / 64) : -1;
        const page = sm0 & MIGRATE_PFN.VALID ? Math.floor(sm0 / 64) : -1;
        let nr = 1;
        // Fast path: a base page with a base-page destination, both plain RAM or the source RAM
        // and the destination device memory of an anonymous source (the common case).
        if (
          page >= 0 &&
          newpage >= 0 &&
          (sm0 & (MIGRATE_PFN.MIGRATE | MIGRATE_PFN.COMPOUND)) === MIGRATE_PFN.MIGRATE &&
          !(dm0 & MIGRATE_PFN.COMPOUND)
        ) {
          const sf = ps.flags[page] as number;
          if (!(sf & (PG.head | PG.tail))) {
            const dpg = (ps.flags[newpage] as number) & PG.zoneDevice ? core.memremap.pgmapOf(newpage) : undefined;
            const devOk = dpg === undefined || dpg.type === MEMORY_DEVICE_PRIVATE || dpg.type === MEMORY_DEVICE_COHERENT;
            const mappingOk = dpg === undefined || (ps.mapping[page] as number) === 0 || (sf & PG.anon) !== 0;
            if (!devOk || !mappingOk || !this.migrateMapping(newpage, page, page === fp ? 1 : 0)) src[i] = sm0 - MIGRATE_PFN.MIGRATE;
            i++;
            continue;
          }
        }
        if (newpage < 0) {
          src[i] = clrF(src[i] as number, MIGRATE_PFN.MIGRATE);
          i++;
          continue;
        }
        if (page < 0) {
          if (!hasF(src[i] as number, MIGRATE_PFN.MIGRATE)) {
            i++;
            continue;
          }
          if (migrate === undefined)
            throw new BugError("migrate-device-hole", "migrate_device_pages met a hole entry (no VMA to insert into)");
          const addr = migrate.start + i * PAGE_SIZE;
          if (range === undefined) {
            range = {
              mm: migrate.mm,
              start: addr,
              end: migrate.end,
              event: MMU_NOTIFY.MIGRATE,
              owner: migrate.pgmapOwner,
              blockable: true,
            };
            hit = mmuNotifierInvalidateRangeStart(range);
          }
          if (hasF(src[i] as number, MIGRATE_PFN.COMPOUND) && !hasF(dst[i] as number, MIGRATE_PFN.COMPOUND)) {
            nr = HPAGE_PMD_NR;
            src[i] = clrF(src[i] as number, MIGRATE_PFN.COMPOUND);
          }
          for (let j = 0; j < nr && i + j < npages; j++) {
            src[i + j] = setF(src[i + j] as number, MIGRATE_PFN.MIGRATE);
            this.insertPage(migrate, addr + j * PAGE_SIZE, dst, src, i + j);
          }
          i += nr;
          continue;
        }
        const sm = src[i] as number;
        if (hasF(sm, MIGRATE_PFN.MIGRATE) && hasF(sm, MIGRATE_PFN.COMPOUND) && !hasF(dst[i] as number, MIGRATE_PFN.COMPOUND)) {
          if (migrate === undefined) {
            src[i] = clrF(sm, MIGRATE_PFN.MIGRATE | MIGRATE_PFN.COMPOUND);
            i++;
            continue;
          }
          nr = ps.folioNrPages(page);
          if (!this.splitUnmappedFolio(migrate, src, i, page)) {
            src[i] = clrF(src[i] as number, MIGRATE_PFN.MIGRATE | MIGRATE_PFN.COMPOUND);
            i++;
            continue;
          }
        } else if (hasF(sm, MIGRATE_PFN.MIGRATE) && hasF(dst[i] as number, MIGRATE_PFN.COMPOUND) && !hasF(sm, MIGRATE_PFN.COMPOUND)) {
          src[i] = clrF(sm, MIGRATE_PFN.MIGRATE);
        }
        const newPg = core.memremap.pgmapOf(newpage);
        const srcFlags = ps.flags[ps.compoundHead(page)] as number;
        if (newPg !== undefined) {
          if (newPg.type !== MEMORY_DEVICE_PRIVATE && newPg.type !== MEMORY_DEVICE_COHERENT) {
            src[i] = clrF(src[i] as number, MIGRATE_PFN.MIGRATE);
            i += nr;
            continue;
          }
          // Only anonymous memory moves to device memory.
          if ((ps.mapping[page] as number) !== 0 && !(srcFlags & PG.anon)) {
            src[i] = clrF(src[i] as number, MIGRATE_PFN.MIGRATE);
            i += nr;
            continue;
          }
        }
        const extra = page === fp ? 1 : 0;
        if (nr === 1 && (src[i] as number) & (dst[i] as number) & MIGRATE_PFN.COMPOUND) {
          // Folio to folio: the entries behind it have src 0, and such an entry migrates nothing
          // (finalize releases whatever dst holds there), so step over them.
          if (hasF(src[i] as number, MIGRATE_PFN.MIGRATE) && !this.migrateMapping(newpage, page, extra)) {
            src[i] = clrF(src[i] as number, MIGRATE_PFN.MIGRATE);
          }
          i += ps.folioNrPages(page);
          continue;
        }
        for (let j = 0; j < nr && i + j < npages; j++) {
          if (!hasF(src[i + j] as number, MIGRATE_PFN.MIGRATE)) continue;
          const s = migratePfnToPfn(src[i + j] as number);
          const d = migratePfnToPfn(dst[i + j] as number);
          if (s < 0 || d < 0 || !this.migrateMapping(d, s, extra)) src[i + j] = clrF(src[i + j] as number, MIGRATE_PFN.MIGRATE);
        }
        i += nr;
      }
    } finally {
      if (range !== undefined) mmuNotifierInvalidateRangeEnd(range, hit);
    }
  }

  /** folio_migrate_mapping + folio_migrate_flags for anonymous folios. */
  private migrateMapping(newHead: number, oldHead: number, extra: number): boolean {
    const core = this.core;
    const ps = core.pages;
    if ((ps.refcount[oldHead] as number) !== 1 + extra) return false;
    const n = ps.folioNrPages(oldHead);
    const of = ps.flags[oldHead] as number;
    ps.mapping[newHead] = ps.mapping[oldHead] as number;
    ps.index[newHead] = ps.index[oldHead] as number;
    const carry = of & (PG.anon | PG.swapbacked | PG.uptodate | PG.dirty | PG.anonExclusive | PG.referenced);
    ps.flags[newHead] = ((ps.flags[newHead] as number) & ~(PG.anon | PG.swapbacked | PG.anonExclusive)) | carry;
    if (!((ps.flags[newHead] as number) & PG.zoneDevice) && carry & PG.anon) core.vmstat.c.nr_anon_pages += n;
    return true;
  }

  private splitUnmappedFolio(migrate: MigrateVma, src: Float64Array, idx: number, head: number): boolean {
    const core = this.core;
    const addr = migrate.start + idx * PAGE_SIZE;
    const haddr = addr - (addr % PMD_SIZE);
    const pmd = migrate.mm.pt.getPmd(haddr);
    if (pmd !== 0 && isHuge(pmd) && swpType(pmd) === SWP.MIGRATION && entryPayload(pmd) === head) core.huge.splitHugePmd(migrate.mm, haddr);
    if (!core.huge.splitUnmappedFolio(head)) return false;
    const m = clrF(src[idx] as number, MIGRATE_PFN.COMPOUND);
    src[idx] = m;
    const flags = mpfnFlags(m);
    for (let i = 1; i < HPAGE_PMD_NR; i++) src[idx + i] = (head + i) * 64 + flags;
    core.vmstat.c.thp_migration_split++;
    return true;
  }

  /** Map a destination into a hole. @see migrate_vma_insert_page */
  private insertPage(migrate: MigrateVma, addr: number, dst: Float64Array, src: Float64Array, idx: number): void {
    const core = this.core;
    const ps = core.pages;
    const { mm, vma } = migrate;
    const abort = () => {
      src[idx] = clrF(src[idx] as number, MIGRATE_PFN.MIGRATE);
    };
    if (vma.shared || mm.findVma(addr) !== vma) {
      abort();
      return;
    }
    const dp = migratePfnToPfn(dst[idx] as number);
    const pg = core.memremap.pgmapOf(dp);
    if (pg !== undefined && pg.type !== MEMORY_DEVICE_PRIVATE && pg.type !== MEMORY_DEVICE_COHERENT) {
      abort();
      return;
    }
    const isPrivate = pg?.type === MEMORY_DEVICE_PRIVATE;
    const w = (vma.flags & VM.WRITE) !== 0;
    if (hasF(dst[idx] as number, MIGRATE_PFN.COMPOUND)) {
      const pmd = mm.pt.getPmd(addr);
      const okPlace = addr % PMD_SIZE === 0 && addr >= vma.start && addr + PMD_SIZE <= vma.end;
      const zeroHuge = pmd !== 0 && isHuge(pmd) && isPresent(pmd) && core.huge.isHugeZeroPfn(entryPayload(pmd));
      if (!okPlace || (pmd !== 0 && !zeroHuge)) {
        for (let i = 0; i < HPAGE_PMD_NR && idx + i < src.length; i++) src[idx + i] = clrF(src[idx + i] as number, MIGRATE_PFN.MIGRATE);
        return;
      }
      ps.flags[dp] = (ps.flags[dp] as number) | PG.largeRmappable | PG.uptodate;
      core.rmap.addNewAnon(dp, vma.mapping, vma.pageIndex(addr), true);
      if (pg === undefined) {
        core.lru.add(dp);
        core.vmstat.c.nr_anon_pages += HPAGE_PMD_NR;
        core.vmstat.c.nr_anon_transparent_hugepages++;
      }
      core.refs.getPage(dp);
      if (zeroHuge) mm.pt.setPmd(addr, 0);
      mm.pt.setPmd(addr, isPrivate ? mkSwpEntry(SWP.DEVICE_PRIVATE, dp, w) + PTE.HUGE : mkPte(dp, w) + PTE.HUGE + (w ? PTE.DIRTY : 0));
      if (isPrivate) mm.rssDevice += HPAGE_PMD_NR;
      else mm.rssAnon += HPAGE_PMD_NR;
      core.vmstat.c.thp_fault_alloc++;
      return;
    }
    const pmd = mm.pt.getPmd(addr);
    if (pmd !== 0 && isHuge(pmd)) {
      if (!(isPresent(pmd) && core.huge.isHugeZeroPfn(entryPayload(pmd)))) {
        abort();
        return;
      }
      core.huge.splitHugePmd(mm, addr - (addr % PMD_SIZE));
    }
    const orig = mm.pt.getPte(addr);
    if (orig !== 0 && !(isPresent(orig) && entryPayload(orig) === core.zeroPfn)) {
      abort();
      return;
    }
    ps.flags[dp] = (ps.flags[dp] as number) | PG.uptodate;
    core.rmap.addNewAnon(dp, vma.mapping, vma.pageIndex(addr), false);
    if (pg === undefined) {
      core.lru.add(dp);
      core.vmstat.c.nr_anon_pages++;
    }
    core.refs.getPage(dp);
    mm.pt.setPte(addr, isPrivate ? mkSwpEntry(SWP.DEVICE_PRIVATE, dp, w) : mkPte(dp, w) + (w ? PTE.DIRTY : 0));
    if (isPrivate) mm.rssDevice++;
    else mm.rssAnon++;
    src[idx] = MIGRATE_PFN.MIGRATE;
  }

  // ---------------------------------------------------------------- finalize

  private finalizeInner(src: Float64Array, dst: Float64Array, npages: number, fp: number, migrate?: MigrateVma): void {
    const core = this.core;
    const ps = core.pages;
    const refs = core.refs;
    const sole = migrate === undefined ? undefined : this.soleMapping.get(src);
    const faultFolio = fp >= 0 ? ps.compoundHead(fp) : -1;
    // The fast path restores the entry a page was collected from, in the VMA it was collected
    // from if that VMA still covers it (else the one covering it now; none if unmapped meanwhile).
    const mm = migrate?.mm;
    const vma = migrate !== undefined && mm !== undefined && !mm.dead && mm.vmas.includes(migrate.vma) ? migrate.vma : undefined;
    // The PTE table of the entries [tableFrom, tableEnd): looked up again past its end (or after a
    // walk that may have split a PMD, which sets tableEnd to 0).
    let table: Float64Array | undefined;
    let tableFrom = 0;
    let tableEnd = 0;
    let tableIdx = 0;
    let ok = 0;
    let failed = 0;
    // Nothing in this loop adds to copiedEntries: when it starts empty it stays so.
    const anyCopied = this.copiedEntries.size !== 0;
    // The sources' frees reach the buddy allocator together at the end (see beginFreeBatch).
    core.alloc.beginFreeBatch();
    try {
      for (let i = 0; i < npages; i++) {
        // migratePfnToPfn, by hand: this loop runs once per page.
        const dm = dst[i] as number;
        const sm = src[i] as number;
        if (sm === 0 && dm === 0) continue; // not collected, no destination (e.g. a COMPOUND entry's tail)
        const newpage = dm & MIGRATE_PFN.VALID ? Math.floor(dm / 64) : -1;
        const page = sm & MIGRATE_PFN.VALID ? Math.floor(sm / 64) : -1;
        let dstHead = newpage >= 0 ? ps.compoundHead(newpage) : -1;
        if (page < 0) {
          if (dstHead >= 0) {
            refs.unlockPage(dstHead);
            refs.putPage(dstHead);
          }
          continue;
        }
        const srcHead = ps.compoundHead(page);
        const n = ps.folioNrPages(srcHead);
        if (!hasF(src[i] as number, MIGRATE_PFN.MIGRATE) || dstHead < 0) {
          if (dstHead >= 0) {
            refs.unlockPage(dstHead);
            refs.putPage(dstHead);
          }
          dstHead = srcHead;
          failed += n;
        } else ok += n;
        const dstDevice = ((ps.flags[dstHead] as number) & PG.zoneDevice) !== 0;
        if (!dstDevice) core.lru.add(dstHead);
        // Fast path: the page had one mapping, at the address it was collected from (no fork copied
        // its migration entry since); otherwise walk the rmap as remove_migration_ptes does.
        let restored = false;
        const copied = anyCopied && this.copiedEntries.delete(srcHead);
        if (sole !== undefined && mm !== undefined && sole[i] === 1 && n === 1 && !copied) {
          const va = (migrate as MigrateVma).start + i * PAGE_SIZE;
          if (i >= tableEnd) {
            table = mm.pt.pteTable(va);
            tableIdx = (va / PAGE_SIZE) & (PTRS_PER_PTE - 1);
            tableFrom = i;
            tableEnd = i + PTRS_PER_PTE - tableIdx;
          }
          const idx = tableIdx + (i - tableFrom);
          const e = table === undefined ? 0 : (table[idx] as number);
          if (e === 0)
            restored = true; // unmapped meanwhile: nothing to restore
          else if (swpType(e) === SWP.MIGRATION && entryPayload(e) === srcHead) {
            const v = vma !== undefined && va >= vma.start && va < vma.end ? vma : mm.findVma(va);
            if (v !== undefined) {
              const dstPrivate = dstDevice && core.memremap.pgmapOf(dstHead)?.type === MEMORY_DEVICE_PRIVATE;
              (table as Float64Array)[idx] = this.restoredEntry(e, v, dstHead, dstPrivate);
              this.mapRestored(mm, dstHead, dstPrivate);
              restored = true;
            }
          }
        }
        if (!restored) {
          this.removeMigrationPtes(srcHead, dstHead);
          tableEnd = 0; // the walk may have split a PMD: look the table up again
        }
        if (srcHead !== faultFolio) refs.unlockPage(srcHead);
        refs.putPage(srcHead);
        if (dstHead !== srcHead) {
          refs.unlockPage(dstHead);
          refs.putPage(dstHead);
          if (n > 1) core.vmstat.c.thp_migration_success++;
        } else if (n > 1) core.vmstat.c.thp_migration_fail++;
      }
    } finally {
      core.alloc.endFreeBatch();
    }
    core.vmstat.c.pgmigrate_success += ok;
    core.vmstat.c.pgmigrate_fail += failed;
    if (core.bus.wants("mm_migrate_pages")) core.bus.emit("mm_migrate_pages", { succeeded: ok, failed, reason: "device" });
  }
}
