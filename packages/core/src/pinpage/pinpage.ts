/**
 * The pinpage subsystem (seed 003, "[RFC 0/3] Pin page control subsystem", made real) and user
 * pins (FOLL_PIN / FOLL_LONGTERM).
 *
 * **Kernel-owned movable pages.** A subsystem (zswap's pool, a balloon, a driver's ring) registers
 * with {@link PinpageOps}: `create`, `destroy`, `addPage`, `delPage`, `findPage` (map-backed
 * defaults keep the seed's `pfn → pinpage_info` tree in {@link PinpageSystem.pages}) and
 * `migrate`, plus the later movable_operations hooks `isolate` and `putback`. `setPinpage` marks a
 * page it owns pinned-movable: the page's `owner` field names the subsystem and PG_movableOps is
 * set; compaction, CMA allocation and offlining then isolate it (an extra reference and
 * PG_isolated) and call {@link Pinpage.migratePinpage}, which finds the owner from the page and
 * calls its `migrate(sys, page, newpage)`. The subsystem copies the bytes and rewires its own
 * structures; on success the core moves the registration (`delPage(page)`, `addPage(newpage,
 * private)`) and the page marks to the new page. `-EAGAIN` is a temporary failure (retried), any
 * other error permanent: the page is put back untouched (`putback`).
 *
 * **One owner per page.** The thread's nested-pin question is settled as the kernel settled it
 * (non-LRU migration, 2016; movable_operations, 2022): a page has at most one owning subsystem;
 * a second subsystem's claim throws EBUSY naming the owner, and a page that user space may have
 * DMA-pinned cannot be claimed at all (EBUSY). Only kernel-owned pages can be claimed: not on an
 * LRU list, not mapped by user space.
 *
 * **User pins.** {@link Pinpage.pinUserPages} is pin_user_pages(): it faults pages in, then pins
 * each folio (a small folio's refcount grows by GUP_PIN_COUNTING_BIAS, a large folio's pin count
 * by one plus one reference); `nr_foll_pin_acquired/released` count them. A pinned page is never
 * migrated while held: migration retries then fails it, compaction skips it and counts it.
 * With FOLL_LONGTERM the pages are first checked: any in a CMA area, ZONE_MOVABLE or
 * device-coherent memory are unpinned, migrated out (MR_LONGTERM_PIN) and the pin retried
 * (check_and_migrate_movable_pages); if they cannot move, nothing stays pinned and -ENOMEM is
 * returned, as the kernel reports a failed migration there.
 *
 * Lock order: a page's lock is taken by the core around `migrate` (both pages locked) and by
 * isolation around `isolate`; subsystems must not take page locks inside their ops.
 *
 * @see mm/pinpage.c and include/linux/pinpage.h (RFC, 2013), include/linux/migrate.h (struct
 *      movable_operations), mm/migrate.c (isolate_movable_ops_page, putback_movable_ops_page),
 *      mm/gup.c (pin_user_pages, unpin_user_pages, check_and_migrate_movable_pages),
 *      Documentation/core-api/pin_user_pages.rst
 */

import { MIGRATE_REASON } from "../migrate/migrate";
import type { Mm } from "../mm/mm";
import type { MmCore } from "../mm/mm-core";
import { GFP } from "../phys/page-alloc";
import { GUP_PIN_COUNTING_BIAS, PG } from "../phys/page-state";
import { BugError, ERRNO, einval, HmmError } from "../sim/errors";

/** What a subsystem keeps per page (the RFC's `struct pinpage_info`). */
export interface PinpageInfo {
  /** The page. */
  readonly pfn: number;
  /** The subsystem's private word for it (zswap: its zspage). */
  readonly private: unknown;
}

/**
 * A subsystem's callbacks. Every op but `migrate` has a map-backed default ({@link generalAddPage}
 * and friends). Return values are 0 or a negative errno, as in the RFC.
 * @see struct pinpage_system (RFC), struct movable_operations
 */
export interface PinpageOps {
  /** Initialise the subsystem's structures at registration. @see general_create_subsys */
  create?(sys: PinpageSystem): number;
  /** Tear them down at unregistration. @see general_destroy_subsys */
  destroy?(sys: PinpageSystem): number;
  /** Record that the subsystem owns `pfn`. @see general_add_page */
  addPage?(sys: PinpageSystem, pfn: number, priv: unknown): number;
  /** Forget `pfn`; -EINVAL if it was not recorded. @see general_del_page */
  delPage?(sys: PinpageSystem, pfn: number): number;
  /** The record of `pfn`, or undefined. @see general_find_page */
  findPage?(sys: PinpageSystem, pfn: number): PinpageInfo | undefined;
  /**
   * Move the contents of `page` to `newpage` (both locked by the core) and rewire the subsystem's
   * own references to it. 0 on success, -EAGAIN to be retried later, another -errno to give up
   * (the page is put back untouched).
   * @see pinpage_system.migrate (RFC), movable_operations.migrate_page
   */
  migrate(sys: PinpageSystem, page: number, newpage: number): number;
  /** The page is about to be migrated (locked): false if it cannot move now. Default: true. @see movable_operations.isolate_page */
  isolate?(sys: PinpageSystem, pfn: number): boolean;
  /** An isolated page was not migrated: take it back. Default: nothing. @see movable_operations.putback_page */
  putback?(sys: PinpageSystem, pfn: number): void;
}

/**
 * A registered subsystem.
 * @see struct pinpage_system
 */
export class PinpageSystem {
  /** The map the default ops use: pfn → record (the RFC's `page_tree`). */
  readonly pages = new Map<number, PinpageInfo>();
  /** Whether it was unregistered. */
  dead = false;
  /**
   * @param id - the id stored in each owned page's `owner` field (1..65535).
   * @param name - label, used in EBUSY messages.
   * @param ops - callbacks, defaults filled in.
   */
  constructor(
    readonly id: number,
    readonly name: string,
    readonly ops: Required<PinpageOps>,
  ) {}
}

/**
 * Default `create`: clear the map. @param sys - the subsystem. @returns 0. @see general_create_subsys
 */
export function generalCreateSubsys(sys: PinpageSystem): number {
  sys.pages.clear();
  return 0;
}

/** Default `destroy`. @param sys - the subsystem. @returns 0. @see general_destroy_subsys */
export function generalDestroySubsys(sys: PinpageSystem): number {
  sys.pages.clear();
  return 0;
}

/**
 * Default `addPage`: record `pfn → private`.
 * @param sys - the subsystem. @param pfn - page. @param priv - private word.
 * @returns 0, or -EEXIST if recorded already (radix_tree_insert's answer). @see general_add_page
 */
export function generalAddPage(sys: PinpageSystem, pfn: number, priv: unknown): number {
  if (sys.pages.has(pfn)) return -ERRNO.EEXIST;
  sys.pages.set(pfn, { pfn, private: priv });
  return 0;
}

/**
 * Default `delPage`.
 * @param sys - the subsystem. @param pfn - page. @returns 0, or -EINVAL if not recorded. @see general_del_page
 */
export function generalDelPage(sys: PinpageSystem, pfn: number): number {
  return sys.pages.delete(pfn) ? 0 : -ERRNO.EINVAL;
}

/**
 * Default `findPage`.
 * @param sys - the subsystem. @param pfn - page. @returns the record or undefined. @see general_find_page
 */
export function generalFindPage(sys: PinpageSystem, pfn: number): PinpageInfo | undefined {
  return sys.pages.get(pfn);
}

/** gup_flags. Values follow enum gup_flags (include/linux/mm_types.h); FOLL_PIN is internal there. */
export const FOLL = {
  /** Check the PTE is writable (write fault if not). @see FOLL_WRITE */
  WRITE: 0x1,
  /** Don't fault: pin only what is mapped. @see FOLL_NOFAULT */
  NOFAULT: 0x20,
  /** The pin is long-term (RDMA, VFIO, io_uring): migrate out of movable/CMA memory first. @see FOLL_LONGTERM */
  LONGTERM: 0x100,
} as const;

/** Times check_and_migrate_movable_pages is retried before giving up with -ENOMEM. */
const LONGTERM_RETRIES = 4;

/**
 * The pinpage subsystem and user pins of one machine (reach it as `machine.mm.pinpage`).
 *
 * Context: registration, marking, isolation and migration are synchronous; `pinUserPages` may
 * await (it faults pages in).
 * @see mm/pinpage.c (RFC), mm/gup.c
 */
export class Pinpage {
  private readonly systems: (PinpageSystem | undefined)[] = [undefined];
  private readonly released = new Set<number>();

  /** @param core - the mm layer. */
  constructor(private readonly core: MmCore) {}

  /**
   * Register a subsystem (calls its `create`).
   * @param name - label (non-empty).
   * @param ops - callbacks; `migrate` is required, the others default to the map-backed ones.
   * @returns the subsystem.
   * @throws HmmError EINVAL for a missing `migrate` or name; ENOSPC when 65535 subsystems exist;
   *   the errno of a failing `create` (nothing registered).
   * @see register_pinpage
   * @example
   * ```ts
   * const sys = m.mm.pinpage.registerPinpage("ring", { migrate: (s, page, newpage) => { m.contents.copyPages(newpage, page, 1); return 0; } });
   * const pfn = m.alloc.allocPages(0);
   * m.mm.pinpage.setPinpage(sys, pfn, "slot 0");
   * ```
   */
  registerPinpage(name: string, ops: PinpageOps): PinpageSystem {
    if (typeof name !== "string" || name === "") einval("name", "a non-empty string");
    if (ops === null || typeof ops !== "object" || typeof ops.migrate !== "function") einval("ops.migrate", "a function");
    if (this.systems.length > 0xffff) throw new HmmError("ENOSPC", "65535 pinpage subsystems are registered", "name");
    const full: Required<PinpageOps> = {
      create: ops.create ?? generalCreateSubsys,
      destroy: ops.destroy ?? generalDestroySubsys,
      addPage: ops.addPage ?? generalAddPage,
      delPage: ops.delPage ?? generalDelPage,
      findPage: ops.findPage ?? generalFindPage,
      migrate: ops.migrate,
      isolate: ops.isolate ?? (() => true),
      putback: ops.putback ?? (() => undefined),
    };
    const sys = new PinpageSystem(this.systems.length, name, full);
    const rc = full.create(sys);
    if (rc !== 0) throw errnoError(rc, `pinpage subsystem ${name}: create failed`, "ops.create");
    this.systems.push(sys);
    return sys;
  }

  /**
   * Unregister a subsystem (calls its `destroy`).
   * @param sys - a registered subsystem.
   * @returns 0.
   * @throws HmmError EBUSY if it still owns pages (clear them first); EINVAL if not registered.
   * @see unregister_pinpage
   */
  unregisterPinpage(sys: PinpageSystem): number {
    this.checkSys(sys);
    const ps = this.core.pages;
    for (let pfn = 0; pfn < ps.maxPfn; pfn++) {
      if ((ps.owner[pfn] as number) === sys.id) throw new HmmError("EBUSY", `pinpage subsystem ${sys.name} still owns pfn ${pfn}`, "sys");
    }
    sys.dead = true;
    this.systems[sys.id] = undefined;
    return sys.ops.destroy(sys);
  }

  /**
   * The subsystem that owns `pfn`, if any.
   * @param pfn - page. @returns the subsystem or undefined.
   */
  ownerOf(pfn: number): PinpageSystem | undefined {
    const id = this.core.pages.owner[pfn] as number;
    return id === 0 ? undefined : this.systems[id];
  }

  /**
   * Mark a page the subsystem owns as pinned-movable.
   * @param sys - the subsystem. @param pfn - an allocated, kernel-owned order-0 RAM page.
   * @param priv - the subsystem's private word for it.
   * @returns 0, or the negative errno of the subsystem's `addPage` (nothing marked).
   * @throws HmmError EBUSY naming the owner if another subsystem (or this one) owns it, or if
   *   user space may hold a DMA pin on it; EINVAL if it is free, compound, a device page, on an
   *   LRU list or mapped by user space.
   * @see set_pinpage (RFC), __SetPageMovable
   */
  setPinpage(sys: PinpageSystem, pfn: number, priv?: unknown): number {
    this.checkSys(sys);
    this.checkClaim(sys, pfn, "pfn");
    const rc = sys.ops.addPage(sys, pfn, priv);
    if (rc !== 0) return rc;
    this.mark(sys, pfn);
    return 0;
  }

  /**
   * Mark `npages` contiguous pages pinned-movable in one batch (the thread's batched API). Every
   * page is checked before any is marked, so the batch is all-or-nothing.
   * @param sys - the subsystem. @param startPfn - first page. @param npages - count (> 0).
   * @param privates - optional private word per page (index i for startPfn + i).
   * @returns 0, or the negative errno of the first failing `addPage` (the pages added before it are removed again).
   * @throws HmmError as {@link Pinpage.setPinpage}, naming the first bad page; EINVAL for a bad count.
   * @see set_pinpage (batched form proposed in the RFC thread)
   */
  setPinpageRange(sys: PinpageSystem, startPfn: number, npages: number, privates?: readonly unknown[]): number {
    this.checkSys(sys);
    if (!Number.isInteger(npages) || npages <= 0) einval("npages", `a positive count, got ${npages}`);
    for (let i = 0; i < npages; i++) this.checkClaim(sys, startPfn + i, `startPfn + ${i}`);
    for (let i = 0; i < npages; i++) {
      const rc = sys.ops.addPage(sys, startPfn + i, privates?.[i]);
      if (rc !== 0) {
        for (let j = 0; j < i; j++) {
          sys.ops.delPage(sys, startPfn + j);
          this.unmark(startPfn + j);
        }
        return rc;
      }
      this.mark(sys, startPfn + i);
    }
    return 0;
  }

  /**
   * Clear a page's pinned-movable mark (the subsystem is about to free it or keep it unmovable).
   * If the page is isolated for migration right now, the migration treats it as released.
   * @param sys - its owner. @param pfn - page.
   * @returns 0, or the negative errno of the subsystem's `delPage` (mark kept).
   * @throws HmmError EINVAL if `sys` does not own the page.
   * @see clear_pinpage (RFC), __ClearPageMovable
   */
  clearPinpage(sys: PinpageSystem, pfn: number): number {
    this.checkSys(sys);
    const ps = this.core.pages;
    if (!ps.pfnValid(pfn) || (ps.owner[pfn] as number) !== sys.id) einval("pfn", `a page owned by ${sys.name}, got ${pfn}`);
    const rc = sys.ops.delPage(sys, pfn);
    if (rc !== 0) return rc;
    if ((ps.flags[pfn] as number) & PG.isolated) this.released.add(pfn);
    this.unmark(pfn);
    return 0;
  }

  /**
   * Clear `npages` contiguous pages in one batch.
   * @param sys - their owner. @param startPfn - first page. @param npages - count.
   * @returns 0, or the first failing `delPage`'s errno (pages before it stay cleared).
   * @throws HmmError EINVAL if `sys` does not own one of them (nothing cleared).
   * @see clear_pinpage
   */
  clearPinpageRange(sys: PinpageSystem, startPfn: number, npages: number): number {
    this.checkSys(sys);
    if (!Number.isInteger(npages) || npages <= 0) einval("npages", `a positive count, got ${npages}`);
    const ps = this.core.pages;
    for (let i = 0; i < npages; i++) {
      const p = startPfn + i;
      if (!ps.pfnValid(p) || (ps.owner[p] as number) !== sys.id) einval(`startPfn + ${i}`, `a page owned by ${sys.name}, got ${p}`);
    }
    for (let i = 0; i < npages; i++) {
      const rc = this.clearPinpage(sys, startPfn + i);
      if (rc !== 0) return rc;
    }
    return 0;
  }

  /**
   * Migrate a pinned-movable page through its owner: find the owner from the page, call its
   * `migrate(page, newpage)`, and on success move the registration and the marks to `newpage`.
   * @param page - a locked pinned-movable page. @param newpage - a locked fresh page (refcount 1).
   * @returns 0, -EAGAIN (retry later) or another negative errno; on failure nothing changed.
   * @throws BugError if `page` has no owner or its owner does not know it (`findPage`).
   * @see migrate_pinpage (RFC), migrate_movable_ops_page
   */
  migratePinpage(page: number, newpage: number): number {
    const sys = this.ownerOf(page);
    if (sys === undefined) throw new BugError("pinpage-no-owner", `migrate_pinpage on pfn ${page}, which no subsystem owns`);
    const info = sys.ops.findPage(sys, page);
    if (info === undefined) throw new BugError("pinpage-not-found", `${sys.name} does not know its page ${page}`);
    const rc = sys.ops.migrate(sys, page, newpage);
    if (rc !== 0) return rc;
    sys.ops.delPage(sys, page);
    this.unmark(page);
    const arc = sys.ops.addPage(sys, newpage, info.private);
    if (arc !== 0) throw new BugError("pinpage-add-after-migrate", `${sys.name}: addPage(${newpage}) failed with ${arc} after migrating`);
    this.mark(sys, newpage);
    return 0;
  }

  /** @internal Isolate a pinned-movable page for migration. @see isolate_movable_ops_page */
  isolateMovableOpsPage(pfn: number): boolean {
    const core = this.core;
    const ps = core.pages;
    if ((ps.refcount[pfn] as number) <= 0) return false;
    core.refs.getPage(pfn);
    const sys = this.ownerOf(pfn);
    if (sys === undefined || !((ps.flags[pfn] as number) & PG.movableOps) || !core.refs.trylockPage(pfn)) {
      core.refs.putPage(pfn);
      return false;
    }
    let ok = !((ps.flags[pfn] as number) & PG.isolated) && sys.ops.isolate(sys, pfn);
    if (ok) ps.flags[pfn] = (ps.flags[pfn] as number) | PG.isolated;
    core.refs.unlockPage(pfn);
    if (!ok) {
      core.refs.putPage(pfn);
      ok = false;
    }
    return ok;
  }

  /** @internal Put back an isolated pinned-movable page. @see putback_movable_ops_page */
  putbackMovableOpsPage(pfn: number): void {
    const core = this.core;
    const ps = core.pages;
    const sys = this.ownerOf(pfn);
    if (sys !== undefined && (ps.flags[pfn] as number) & PG.movableOps) sys.ops.putback(sys, pfn);
    ps.flags[pfn] = (ps.flags[pfn] as number) & ~PG.isolated;
    this.released.delete(pfn);
    core.refs.putPage(pfn);
  }

  /** @internal Whether the page was released by its owner while isolated. */
  wasMovableOps(pfn: number): boolean {
    return this.released.has(pfn);
  }

  /** @internal Forget a page released while isolated. */
  forgetReleased(pfn: number): void {
    this.released.delete(pfn);
  }

  // ------------------------------------------------------------------ user pins

  /**
   * Pin user pages (FOLL_PIN), faulting them in. Small folios gain GUP_PIN_COUNTING_BIAS
   * references, large folios one pin and one reference; the zero page is never really pinned.
   * With FOLL_LONGTERM, pages in a CMA area, ZONE_MOVABLE or device-coherent memory are migrated
   * out first and the pin retried.
   * @param mm - the address space. @param start - page-aligned address.
   * @param nrPages - pages to pin (> 0). @param gupFlags - {@link FOLL} bits.
   * @param pages - out: the pfn of each pinned page (>= nrPages entries).
   * @returns the number pinned (fewer than asked if a fault failed part way), or a negative
   *   errno if none: -EFAULT (no mapping / access denied), -ENOMEM (out of memory, or a
   *   long-term pin whose pages could not be migrated), -EHWPOISON.
   * @throws HmmError EINVAL for bad arguments.
   * @see pin_user_pages, __gup_longterm_locked, check_and_migrate_movable_pages
   * @example
   * ```ts
   * const pfns = new Float64Array(4);
   * const n = await m.mm.pinpage.pinUserPages(t.mm, va, 4, FOLL.WRITE | FOLL.LONGTERM, pfns);
   * // ... DMA ...
   * m.mm.pinpage.unpinUserPages(pfns, n);
   * ```
   */
  async pinUserPages(mm: Mm, start: number, nrPages: number, gupFlags: number, pages: Float64Array): Promise<number> {
    const core = this.core;
    if (mm === null || typeof mm !== "object" || mm.core !== core || mm.dead) einval("mm", "a live address space of this machine");
    if (!Number.isInteger(start) || start < 0 || start % 4096 !== 0) einval("start", `a page-aligned address, got ${start}`);
    if (!Number.isInteger(nrPages) || nrPages <= 0) einval("nrPages", `a positive count, got ${nrPages}`);
    if (!Number.isInteger(gupFlags) || (gupFlags & ~(FOLL.WRITE | FOLL.NOFAULT | FOLL.LONGTERM)) !== 0)
      einval("gupFlags", `FOLL_WRITE|FOLL_NOFAULT|FOLL_LONGTERM bits, got ${gupFlags}`);
    if (!(pages instanceof Float64Array) || pages.length < nrPages) einval("pages", `a Float64Array of at least ${nrPages} entries`);
    for (let attempt = 0; ; attempt++) {
      const n = await this.pinRange(mm, start, nrPages, gupFlags, pages);
      if (n <= 0 || !(gupFlags & FOLL.LONGTERM)) return n;
      const rc = this.checkAndMigrateMovablePages(pages, n);
      if (rc === 0) return n;
      if (rc !== -ERRNO.EAGAIN || attempt >= LONGTERM_RETRIES) return -ERRNO.ENOMEM;
    }
  }

  /**
   * Release pins taken by {@link Pinpage.pinUserPages}.
   * @param pages - pfns as returned. @param npages - how many.
   * @throws BugError `unpin-unpinned` if a page carries no pin.
   * @see unpin_user_pages
   */
  unpinUserPages(pages: Float64Array, npages: number): void {
    for (let i = 0; i < npages; i++) this.unpinPage(pages[i] as number);
  }

  /**
   * Whether a pinned page may stay pinned long-term where it is.
   * @param pfn - page. @returns false for CMA, ZONE_MOVABLE and device-coherent pages.
   * @see folio_is_longterm_pinnable
   */
  isLongtermPinnable(pfn: number): boolean {
    const core = this.core;
    if (pfn === core.zeroPfn || core.huge.isHugeZeroPfn(pfn)) return true;
    if (core.memremap.isDeviceCoherent(pfn)) return false;
    if (core.cma.isCmaPfn(pfn)) return false;
    return core.alloc.zoneOf(pfn)?.name !== "Movable";
  }

  private async pinRange(mm: Mm, start: number, nrPages: number, gupFlags: number, pages: Float64Array): Promise<number> {
    const core = this.core;
    const write = (gupFlags & FOLL.WRITE) !== 0;
    let n = 0;
    let retries = 0;
    while (n < nrPages) {
      const va = start + n * 4096;
      const pfn = core.fault.followPte(mm, va, write);
      if (pfn < 0) {
        let r = -ERRNO.EFAULT;
        if (!(gupFlags & FOLL.NOFAULT)) {
          const f = core.fault.handleMmFault(mm, va, write);
          const code = typeof f === "number" ? f : await f;
          r = code === 0 ? 0 : code & 0x1 ? -ERRNO.ENOMEM : code & 0x10 ? -ERRNO.EHWPOISON : -ERRNO.EFAULT;
        }
        if (r !== 0 || ++retries > 64) return n > 0 ? n : r !== 0 ? r : -ERRNO.EFAULT;
        continue;
      }
      retries = 0;
      if (core.memremap.isDevicePrivate(pfn)) return n > 0 ? n : -ERRNO.EFAULT;
      this.pinPage(pfn);
      pages[n++] = pfn;
    }
    return n;
  }

  private pinPage(pfn: number): void {
    const core = this.core;
    const ps = core.pages;
    if (pfn === core.zeroPfn || core.huge.isHugeZeroPfn(pfn)) return;
    const head = ps.compoundHead(pfn);
    if ((ps.flags[head] as number) & PG.head) {
      ps.pincount[head] = (ps.pincount[head] as number) + 1;
      ps.refcount[head] = (ps.refcount[head] as number) + 1;
    } else ps.refcount[head] = (ps.refcount[head] as number) + GUP_PIN_COUNTING_BIAS;
    core.vmstat.c.nr_foll_pin_acquired++;
  }

  private unpinPage(pfn: number): void {
    const core = this.core;
    const ps = core.pages;
    if (pfn === core.zeroPfn || core.huge.isHugeZeroPfn(pfn)) return;
    const head = ps.compoundHead(pfn);
    if ((ps.flags[head] as number) & PG.head) {
      if ((ps.pincount[head] as number) <= 0) throw new BugError("unpin-unpinned", `unpin of pfn ${pfn}, which has no pin`);
      ps.pincount[head] = (ps.pincount[head] as number) - 1;
    } else {
      if ((ps.refcount[head] as number) < GUP_PIN_COUNTING_BIAS)
        throw new BugError("unpin-unpinned", `unpin of pfn ${pfn}, which has no pin`);
      ps.refcount[head] = (ps.refcount[head] as number) - (GUP_PIN_COUNTING_BIAS - 1);
    }
    core.vmstat.c.nr_foll_pin_released++;
    core.refs.putPage(head);
  }

  /** 0 if every page may stay pinned; else unpin all, migrate the unpinnable ones, -EAGAIN (or -ENOMEM). */
  private checkAndMigrateMovablePages(pages: Float64Array, n: number): number {
    const core = this.core;
    const ps = core.pages;
    const bad: number[] = [];
    for (let i = 0; i < n; i++) {
      const pfn = pages[i] as number;
      if (!this.isLongtermPinnable(pfn)) {
        const head = ps.compoundHead(pfn);
        if (!bad.includes(head)) bad.push(head);
      }
    }
    if (bad.length === 0) return 0;
    this.unpinUserPages(pages, n);
    const lru: number[] = [];
    for (const head of bad) {
      if (core.memremap.isDeviceCoherent(head)) {
        if (!this.migrateDeviceCoherentPage(head)) return -ERRNO.ENOMEM;
        continue;
      }
      const h = core.migration.isolateFolio(head);
      if (h >= 0) lru.push(h);
    }
    if (lru.length > 0) {
      const stash: Array<[number, number]> = [];
      const r = core.migration.migratePages(
        lru,
        (_src, order) => this.allocPinnable(order, stash),
        (dst) => core.refs.putPage(dst),
        MIGRATE_REASON.LONGTERM_PIN,
      );
      for (const [p, o] of stash) {
        core.pages.refcount[p] = 0;
        core.alloc.freePages(p, o);
      }
      if (r.nrFailed > 0) return -ERRNO.ENOMEM;
    }
    return -ERRNO.EAGAIN;
  }

  /** An allocation that avoids CMA and ZONE_MOVABLE (PF_MEMALLOC_PIN): other pages are stashed. */
  private allocPinnable(order: number, stash: Array<[number, number]>): number {
    const core = this.core;
    for (let tries = 0; tries < 1 << 16; tries++) {
      const p = core.alloc.allocPages(order, order > 0 ? GFP.COMP : 0);
      if (p < 0) return -1;
      if (this.isLongtermPinnable(p)) return p;
      stash.push([p, order]);
    }
    return -1;
  }

  /** Move one device-coherent page to system memory through migrate_device_*. @see migrate_device_coherent_folio */
  private migrateDeviceCoherentPage(pfn: number): boolean {
    const core = this.core;
    const src = new Float64Array([pfn]);
    const dst = new Float64Array(1);
    core.migrate.migrateDevicePfns(src, 1);
    if (!(((src[0] as number) % 64) & 2)) {
      core.migrate.migrateDeviceFinalize(src, dst, 1);
      return false;
    }
    const d = core.alloc.allocPages(0, 0);
    if (d >= 0) {
      core.refs.trylockPage(d);
      core.contents.copyPages(d, pfn, 1);
      dst[0] = d * 64 + 1;
    }
    core.migrate.migrateDevicePages(src, dst, 1);
    const ok = (((src[0] as number) % 64) & 2) !== 0;
    core.migrate.migrateDeviceFinalize(src, dst, 1);
    return ok && d >= 0;
  }

  // ------------------------------------------------------------------ helpers

  private checkSys(sys: PinpageSystem): void {
    if (!(sys instanceof PinpageSystem) || sys.dead || this.systems[sys.id] !== sys) einval("sys", "a registered pinpage subsystem");
  }

  private checkClaim(sys: PinpageSystem, pfn: number, arg: string): void {
    const core = this.core;
    const ps = core.pages;
    if (!Number.isInteger(pfn) || !ps.pfnValid(pfn)) einval(arg, `a valid pfn, got ${pfn}`);
    const owner = this.ownerOf(pfn);
    if (owner !== undefined) {
      throw new HmmError(
        "EBUSY",
        owner === sys
          ? `pfn ${pfn} is already owned by ${sys.name} (set_pinpage does not nest)`
          : `pfn ${pfn} is owned by pinpage subsystem ${owner.name}; a page has at most one owner`,
        arg,
      );
    }
    const f = ps.flags[pfn] as number;
    if ((ps.refcount[pfn] as number) <= 0 || f & PG.buddy) einval(arg, `an allocated page, got free pfn ${pfn}`);
    if (f & (PG.zoneDevice | PG.head | PG.tail | PG.reserved))
      einval(arg, `an order-0 RAM page, got pfn ${pfn} (flags 0x${f.toString(16)})`);
    if (core.migration.folioMaybeDmaPinned(pfn))
      throw new HmmError("EBUSY", `pfn ${pfn} may be DMA-pinned by user space (FOLL_PIN); it cannot get an owner`, arg);
    if (f & (PG.lru | PG.anon) || (ps.mapcount[pfn] as number) > 0 || (ps.mapping[pfn] as number) !== 0)
      einval(arg, `a kernel-owned page (not on an LRU list, not mapped by user space), got pfn ${pfn}`);
  }

  private mark(sys: PinpageSystem, pfn: number): void {
    const ps = this.core.pages;
    ps.owner[pfn] = sys.id;
    ps.flags[pfn] = (ps.flags[pfn] as number) | PG.movableOps;
  }

  private unmark(pfn: number): void {
    const ps = this.core.pages;
    ps.owner[pfn] = 0;
    ps.flags[pfn] = (ps.flags[pfn] as number) & ~PG.movableOps;
  }
}

function errnoError(rc: number, msg: string, arg: string): HmmError {
  const name = (Object.keys(ERRNO) as (keyof typeof ERRNO)[]).find((k) => ERRNO[k] === -rc) ?? "EINVAL";
  return new HmmError(name, `${msg} (${rc})`, arg);
}
