/**
 * `Mm` (mm_struct): an address space — its VMAs, page tables and notifier state — and the
 * system calls that change its layout: mmap, munmap, mprotect, madvise.
 *
 * VMAs are kept sorted and non-overlapping. munmap and mprotect split VMAs at the range's edges
 * (splitting a PMD-mapped THP when an edge falls inside it), notify interval subscribers before
 * the page tables change (MMU_NOTIFY_UNMAP, MMU_NOTIFY_PROTECTION_VMA), and leave every
 * refcount and mapcount exact. Anonymous mappings of at least 2 MiB are placed on a 2 MiB
 * boundary, as the kernel's THP-aware get_unmapped_area does.
 *
 * Anonymous memory is modelled (private, and shared = shmem), and two kinds of files: tmpfs files
 * (`ShmemFile`: shared mappings of their page cache, private ones that fault from it) and driver
 * files whose mmap inserts pages (VM_MIXEDMAP). Disk-backed files are out of scope. The emulator
 * does not model mmap_lock contention: layout changes are
 * synchronous, and in-flight migrations tolerate them the way the kernel's do after the lock is
 * dropped (a vanished migration entry is simply not restored).
 *
 * @see mm/mmap.c, mm/vma.c, mm/mprotect.c, mm/madvise.c, include/linux/mm_types.h
 */
import { PAGE_SIZE, PG } from "../phys/page-state";
import { ERRNO, einval, errnoName, HmmError } from "../sim/errors";
import type { MmCore } from "./mm-core";
import { MMU_NOTIFY, MmuNotifierState, mmuNotifyRange } from "./mmu-notifier";
import { mremap } from "./mremap";
import { isHuge, mkPte, PageTable, PMD_SIZE, PTE } from "./page-table";
import {
  MADV_COLLAPSE,
  MADV_DOFORK,
  MADV_DONTFORK,
  MADV_DONTNEED,
  MADV_FREE,
  MADV_HUGEPAGE,
  MADV_NOHUGEPAGE,
  MAP_ANONYMOUS,
  MAP_FIXED,
  MAP_HUGETLB,
  MAP_PRIVATE,
  MAP_SHARED,
  type MmapFile,
  PROT_EXEC,
  PROT_READ,
  PROT_WRITE,
  protToVm,
  TASK_SIZE,
  VM,
  Vma,
} from "./vma";

export { TASK_SIZE };

/** Top of the mmap area (top-down allocation below it). @see mmap_base */
export const MMAP_BASE = 0x7f0000000000;
/** Lowest address mmap hands out. @see mmap_min_addr */
export const MMAP_MIN_ADDR = 0x10000;

/**
 * An address space.
 * @see struct mm_struct
 */
export class Mm {
  /** The page tables. */
  readonly pt = new PageTable();
  /** VMAs sorted by start, non-overlapping. */
  vmas: Vma[] = [];
  /** Interval-notifier state. */
  readonly notifiers = new MmuNotifierState();
  /** Whether the address space was torn down. */
  dead = false;
  /** Resident anonymous base pages mapped (RSS). @see MM_ANONPAGES */
  rssAnon = 0;
  /** Device-private entries mapped. @see MM_SWAPENTS (the kernel counts them as swap entries) */
  rssDevice = 0;
  /** Pages a driver inserted into a private driver mapping, still mapped. @see MM_FILEPAGES */
  rssFile = 0;
  /** HugeTLB pages mapped, in base pages (not part of RSS). @see mm->hugetlb_usage (HugetlbPages) */
  hugetlbUsage = 0;
  /** Users (tasks) of this mm. @see mm_users */
  users = 1;

  /**
   * @param id - machine-unique id. @param core - the mm layer.
   */
  constructor(
    readonly id: number,
    readonly core: MmCore,
  ) {}

  /**
   * The VMA containing `va`.
   * @param va - address. @returns the VMA or undefined. @see vma_lookup
   */
  findVma(va: number): Vma | undefined {
    const v = this.vmas;
    let lo = 0;
    let hi = v.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const m = v[mid] as Vma;
      if (va < m.start) hi = mid - 1;
      else if (va >= m.end) lo = mid + 1;
      else return m;
    }
    return undefined;
  }

  /**
   * VMAs overlapping `[start, end)`, ascending.
   * @param start - first byte. @param end - one past last. @returns the VMAs.
   */
  vmasIn(start: number, end: number): Vma[] {
    return this.vmas.filter((v) => v.start < end && v.end > start);
  }

  /**
   * Map anonymous memory, or a driver's file (a private mapping it populates).
   * @param addr - hint, or the exact address with MAP_FIXED (page aligned); 0 lets the kernel pick.
   * @param length - bytes, > 0 (rounded up to pages).
   * @param prot - PROT_READ | PROT_WRITE | PROT_EXEC, or PROT_NONE.
   * @param flags - MAP_ANONYMOUS with MAP_PRIVATE or MAP_SHARED, optionally MAP_FIXED; with a
   *   `file`, MAP_PRIVATE without MAP_ANONYMOUS. MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB maps
   *   2 MiB HugeTLB pages (length rounded up to 2 MiB, pool pages reserved now; see hugetlb.ts).
   * @param file - a driver file whose `mmap` populates the VMA (see {@link MmapFile}).
   * @returns the mapped address.
   * @throws HmmError EINVAL for a zero length, unaligned MAP_FIXED address, both or neither of
   *   MAP_PRIVATE/MAP_SHARED, MAP_ANONYMOUS without a file or not MAP_ANONYMOUS with one, a shared
   *   file mapping or unknown bits, MAP_HUGETLB with MAP_SHARED or a file, or with a MAP_FIXED
   *   address not 2 MiB aligned; ENOMEM when no gap fits or the HugeTLB pool cannot reserve the
   *   pages; the errno the file's `mmap` returns (the range is unmapped again).
   * @see do_mmap, mmap_region, mmap(2)
   */
  mmap(addr: number, length: number, prot: number, flags: number, file?: MmapFile): number {
    this.checkAlive();
    if (file !== undefined && (file === null || typeof file.mmap !== "function")) einval("file", "an object with an mmap(mm, vma) method");
    if (!Number.isInteger(length) || length <= 0) einval("length", `a positive byte count, got ${length}`);
    if (!Number.isInteger(prot) || (prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC)) !== 0) einval("prot", `PROT_* bits, got ${prot}`);
    if (!Number.isInteger(flags) || (flags & ~(MAP_SHARED | MAP_PRIVATE | MAP_FIXED | MAP_ANONYMOUS | MAP_HUGETLB)) !== 0) {
      einval("flags", `MAP_SHARED|MAP_PRIVATE|MAP_FIXED|MAP_ANONYMOUS|MAP_HUGETLB bits, got 0x${Number(flags).toString(16)}`);
    }
    if (file === undefined && !(flags & MAP_ANONYMOUS)) einval("flags", "MAP_ANONYMOUS (a file mapping needs the `file` argument)");
    if (file !== undefined && flags & MAP_ANONYMOUS) einval("flags", "no MAP_ANONYMOUS with a file");
    const shared = (flags & MAP_SHARED) !== 0;
    if (shared === ((flags & MAP_PRIVATE) !== 0)) einval("flags", "exactly one of MAP_SHARED and MAP_PRIVATE");
    if (file !== undefined && shared && file.shmem === undefined) einval("flags", "MAP_PRIVATE (shared driver mappings are not modelled)");
    const hugetlb = (flags & MAP_HUGETLB) !== 0;
    if (hugetlb && (shared || file !== undefined))
      einval("flags", "MAP_HUGETLB with MAP_PRIVATE|MAP_ANONYMOUS (shared hugetlb is not modelled)");
    const unit = hugetlb ? PMD_SIZE : PAGE_SIZE;
    const len = Math.ceil(length / unit) * unit;
    if (hugetlb && !this.core.hugetlb.canReserve(len / PMD_SIZE)) {
      throw new HmmError("ENOMEM", `the HugeTLB pool cannot reserve ${len / PMD_SIZE} huge pages`, "length");
    }
    let start: number;
    if (flags & MAP_FIXED) {
      if (!Number.isInteger(addr) || addr % unit !== 0 || addr < MMAP_MIN_ADDR || addr + len > TASK_SIZE) {
        einval(
          "addr",
          `a ${hugetlb ? "2 MiB" : "page"}-aligned address in [0x${MMAP_MIN_ADDR.toString(16)}, TASK_SIZE) with MAP_FIXED, got ${addr}`,
        );
      }
      start = addr;
      this.checkHugetlbEdges(start, start + len);
      this.munmapRange(start, start + len);
    } else {
      start = this.unmappedArea(len, len >= PMD_SIZE ? PMD_SIZE : PAGE_SIZE);
    }
    const core = this.core;
    // A shared mapping of a tmpfs file maps its page cache; anything else gets a new object.
    const obj = shared ? (file?.shmem ?? core.rmap.newShmem()) : core.rmap.newAnonVma();
    obj.mms.add(this);
    if (shared) core.shmemVmaRef(obj.id, +1);
    // vm_pgoff: the file offset (0) for file and shmem mappings, the linear page index for anon.
    const pgoff = shared || file !== undefined ? 0 : start / PAGE_SIZE;
    const vma = new Vma(start, start + len, protToVm(prot) | (shared ? VM.SHARED : 0) | (hugetlb ? VM.HUGETLB : 0), obj.id, pgoff);
    vma.file = file;
    if (hugetlb) core.hugetlb.reserve(vma);
    this.insertVma(vma);
    if (file !== undefined) {
      const r = file.mmap(this, vma);
      if (r !== 0) {
        this.munmapRange(start, start + len);
        throw new HmmError(errnoName(r), `the file's mmap failed with ${r}`, "file");
      }
    }
    return start;
  }

  /**
   * Insert a page into a driver mapping (from its file's `mmap`). The page must be a referenced,
   * non-anonymous RAM page; the mapping takes its own reference and a mapcount, so the driver may
   * drop its reference afterwards. The PTE is read-only in a private mapping (a write copies the
   * page), and the VMA becomes VM_MIXEDMAP.
   * @param vma - a driver VMA of this address space. @param addr - page aligned, inside it.
   * @param pfn - the page.
   * @returns 0, or -EBUSY when something is already mapped at `addr`.
   * @throws HmmError EINVAL naming the argument: `vma` (not a live driver VMA), `addr` (unaligned or
   *   outside), `pfn` (not a referenced RAM page, or an anonymous one).
   * @see vm_insert_page, insert_page
   */
  vmInsertPage(vma: Vma, addr: number, pfn: number): number {
    this.checkAlive();
    if (!this.vmas.includes(vma) || vma.file === undefined) einval("vma", "a live driver VMA of this address space");
    if (!Number.isInteger(addr) || addr % PAGE_SIZE !== 0 || addr < vma.start || addr >= vma.end) {
      einval("addr", `a page-aligned address in [0x${vma.start.toString(16)}, 0x${vma.end.toString(16)}), got ${addr}`);
    }
    const ps = this.core.pages;
    const ramPage = ps.pfnValid(pfn) && this.core.alloc.zoneOf(pfn) !== undefined;
    if (!ramPage || (ps.refcount[ps.compoundHead(pfn)] as number) <= 0) einval("pfn", `a referenced RAM page, got ${pfn}`);
    if ((ps.flags[ps.compoundHead(pfn)] as number) & PG.anon) einval("pfn", `a page that is not anonymous (pfn ${pfn})`);
    const pmd = this.pt.getPmd(addr);
    if ((pmd !== 0 && isHuge(pmd)) || this.pt.getPte(addr) !== 0) return -ERRNO.EBUSY;
    vma.flags |= VM.MIXEDMAP;
    this.core.refs.getPage(pfn);
    ps.mapcount[pfn] = (ps.mapcount[pfn] as number) + 1;
    this.rssFile++;
    // vm_page_prot of a private mapping is read-only: the first write copies the page.
    this.pt.setPte(addr, mkPte(pfn, false) + PTE.YOUNG);
    return 0;
  }

  /**
   * Unmap `[addr, addr + length)`; unmapped holes inside are fine.
   * @param addr - page aligned. @param length - bytes, > 0.
   * @throws HmmError EINVAL for an unaligned address or non-positive length, or a range that would
   *   split a hugetlb mapping off a 2 MiB boundary.
   * @see do_munmap, munmap(2)
   */
  munmap(addr: number, length: number): void {
    this.checkAlive();
    this.checkRange(addr, length);
    const end = addr + Math.ceil(length / PAGE_SIZE) * PAGE_SIZE;
    this.checkHugetlbEdges(addr, end);
    this.munmapRange(addr, end);
  }

  /**
   * Change the protection of `[addr, addr + length)`, which must be fully mapped.
   * @param addr - page aligned. @param length - bytes, >= 0 (0 is a no-op, as in the kernel). @param prot - PROT_* bits.
   * @throws HmmError EINVAL for bad arguments or a range that would split a hugetlb mapping off a
   *   2 MiB boundary; ENOMEM if part of the range is unmapped (state unchanged).
   * @see do_mprotect_pkey, mprotect(2)
   */
  mprotect(addr: number, length: number, prot: number): void {
    this.checkAlive();
    this.checkRange(addr, length, true);
    if (!Number.isInteger(prot) || (prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC)) !== 0) einval("prot", `PROT_* bits, got ${prot}`);
    if (length === 0) return;
    const end = addr + Math.ceil(length / PAGE_SIZE) * PAGE_SIZE;
    this.checkFullyMapped(addr, end, "mprotect");
    this.checkHugetlbEdges(addr, end);
    const newVm = protToVm(prot);
    mmuNotifyRange(this, addr, end, MMU_NOTIFY.PROTECTION_VMA);
    for (const v of this.splitAt(addr, end)) {
      v.flags = (v.flags & ~(VM.READ | VM.WRITE | VM.EXEC)) | newVm;
      this.core.fault.changeProtection(this, v, v.start, v.end, newVm);
    }
  }

  /**
   * Give advice about `[addr, addr + length)`.
   * @param addr - page aligned. @param length - bytes, > 0.
   * @param advice - MADV_DONTNEED, MADV_FREE, MADV_HUGEPAGE, MADV_NOHUGEPAGE, MADV_DONTFORK, MADV_DOFORK, MADV_COLLAPSE.
   * @throws HmmError EINVAL for unknown advice or bad range, MADV_FREE or MADV_COLLAPSE on a hugetlb
   *   mapping, or a range that would split one off a 2 MiB boundary (MADV_DONTNEED on hugetlb needs
   *   a 2 MiB-aligned start and drops whole huge pages only); ENOMEM if part of the range is unmapped.
   * @see do_madvise, madvise(2), madvise_dontneed_free_valid_vma
   */
  madvise(addr: number, length: number, advice: number): void {
    this.checkAlive();
    this.checkRange(addr, length, true);
    const end = addr + Math.ceil(length / PAGE_SIZE) * PAGE_SIZE;
    const known = [MADV_DONTNEED, MADV_FREE, MADV_HUGEPAGE, MADV_NOHUGEPAGE, MADV_DONTFORK, MADV_DOFORK, MADV_COLLAPSE];
    if (!known.includes(advice)) einval("advice", `one of MADV_DONTNEED/FREE/HUGEPAGE/NOHUGEPAGE/DONTFORK/DOFORK, got ${advice}`);
    if (length === 0) return;
    this.checkFullyMapped(addr, end, "madvise");
    const huge = this.vmasIn(addr, end).filter((v) => v.flags & VM.HUGETLB);
    if (huge.length > 0) {
      if (advice === MADV_FREE || advice === MADV_COLLAPSE) einval("advice", "not MADV_FREE or MADV_COLLAPSE on a hugetlb mapping");
      if (advice === MADV_DONTNEED) {
        for (const v of huge) {
          const s = Math.max(addr, v.start);
          if (s % PMD_SIZE !== 0) einval("addr", `2 MiB aligned where a hugetlb mapping starts for MADV_DONTNEED, got 0x${s.toString(16)}`);
        }
      } else this.checkHugetlbEdges(addr, end);
    }
    if (advice === MADV_COLLAPSE) {
      this.madviseCollapse(addr, end);
      return;
    }
    if (advice === MADV_FREE && this.vmasIn(addr, end).some((v) => v.shared))
      einval("advice", "MADV_FREE on private anonymous memory only (a shared range was given)");
    if (advice === MADV_DONTNEED || advice === MADV_FREE) {
      // MADV_FREE frees lazily in the kernel; with no reclaim pass between, hmmkit frees at once,
      // which is what a later reclaim would do to the clean pages.
      // A hugetlb VMA drops whole huge pages only: its end is rounded down.
      mmuNotifyRange(this, addr, end, MMU_NOTIFY.CLEAR);
      for (const v of this.vmasIn(addr, end)) {
        const e = Math.min(end, v.end);
        this.core.fault.zapRange(this, v, Math.max(addr, v.start), v.flags & VM.HUGETLB ? e - (e % PMD_SIZE) : e);
      }
      return;
    }
    for (const v of this.splitAt(addr, end)) {
      if (advice === MADV_HUGEPAGE) v.flags = (v.flags | VM.HUGEPAGE) & ~VM.NOHUGEPAGE;
      else if (advice === MADV_NOHUGEPAGE) v.flags = (v.flags | VM.NOHUGEPAGE) & ~VM.HUGEPAGE;
      else if (advice === MADV_DONTFORK) v.flags |= VM.DONTCOPY;
      else v.flags &= ~VM.DONTCOPY;
    }
  }

  /**
   * Grow, shrink or move a mapping (see mremap.ts for every outcome).
   * @param oldAddr - page aligned. @param oldSize - bytes. @param newSize - bytes, > 0.
   * @param flags - MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP. @param newAddr - target with MREMAP_FIXED.
   * @returns the mapping's new address.
   * @throws HmmError EINVAL, EFAULT, ENOMEM as mremap(2).
   * @remarks Departure: a hugetlb mapping is EINVAL (the kernel moves 2 MiB-aligned ones since 6.1).
   * @see mremap(2)
   */
  mremap(oldAddr: number, oldSize: number, newSize: number, flags: number, newAddr = 0): number {
    this.checkAlive();
    return mremap(this, oldAddr, oldSize, newSize, flags, newAddr);
  }

  /** @internal A free, aligned gap of `len` bytes (top-down), for mmap and mremap. */
  unmappedAreaFor(len: number, align: number): number {
    return this.unmappedArea(len, align);
  }

  /**
   * MADV_COLLAPSE: collapse every whole 2 MiB range of `[start, end)` into a THP now, whatever the
   * THP mode (the VMA must not be MADV_NOHUGEPAGE). Ranges already PMD-mapped count as done.
   * @throws HmmError EINVAL (shared or NOHUGEPAGE VMA), EAGAIN (a range could not be collapsed:
   *   pinned/shared/non-present pages), ENOMEM (no order-9 block).
   * @see madvise_collapse
   */
  private madviseCollapse(start: number, end: number): void {
    let failed = false;
    for (let haddr = Math.ceil(start / PMD_SIZE) * PMD_SIZE; haddr + PMD_SIZE <= end; haddr += PMD_SIZE) {
      const vma = this.findVma(haddr);
      if (vma === undefined || haddr + PMD_SIZE > vma.end) continue;
      if (vma.shared || vma.file !== undefined || vma.flags & VM.NOHUGEPAGE)
        einval("addr", "a private anonymous range without MADV_NOHUGEPAGE for MADV_COLLAPSE");
      const pmd = this.pt.getPmd(haddr);
      if (pmd !== 0 && isHuge(pmd)) continue;
      const free0 = this.core.vmstat.c.thp_collapse_alloc_failed;
      if (!this.core.khugepaged.collapseHugePage(this, vma, haddr, true)) {
        if (this.core.vmstat.c.thp_collapse_alloc_failed > free0)
          throw new HmmError("ENOMEM", `no order-9 block to collapse 0x${haddr.toString(16)}`, "addr");
        failed = true;
      }
    }
    if (failed) throw new HmmError("EAGAIN", "some ranges could not be collapsed", "addr");
  }

  /** @internal Unmap a page-aligned range (no argument checks). */
  munmapRange(start: number, end: number): void {
    const hit = this.vmasIn(start, end);
    if (hit.length === 0) return;
    mmuNotifyRange(this, start, end, MMU_NOTIFY.UNMAP);
    for (const v of this.splitAt(start, end)) {
      this.core.fault.zapRange(this, v, v.start, v.end);
      this.removeVma(v);
    }
    this.core.fault.freePgtables(this, start, end);
  }

  /** @internal Insert a VMA keeping order. */
  insertVma(vma: Vma): void {
    let i = 0;
    while (i < this.vmas.length && (this.vmas[i] as Vma).start < vma.start) i++;
    this.vmas.splice(i, 0, vma);
  }

  /** @internal Remove a VMA, dropping its shmem reference and its unused hugetlb reservations. */
  removeVma(vma: Vma): void {
    const i = this.vmas.indexOf(vma);
    if (i >= 0) this.vmas.splice(i, 1);
    if (vma.shared) this.core.shmemVmaRef(vma.mapping, -1);
    if (vma.hugetlbResv !== undefined) this.core.hugetlb.unreserve(vma);
  }

  /**
   * Split VMAs so that none straddles `start` or `end`; split PMD mappings at the edges.
   * @returns the VMAs inside `[start, end)`.
   * @internal
   */
  splitAt(start: number, end: number): Vma[] {
    for (const edge of [start, end]) {
      const v = this.findVma(edge);
      if (v !== undefined && v.start < edge) {
        this.core.huge.splitPmdAt(this, edge);
        const right = v.slice(edge, v.end);
        v.end = edge;
        v.splitResvTo(right);
        if (right.shared) this.core.shmemVmaRef(right.mapping, +1);
        this.insertVma(right);
      } else if (v === undefined) {
        this.core.huge.splitPmdAt(this, edge);
      }
    }
    return this.vmasIn(start, end);
  }

  private checkRange(addr: number, length: number, zeroOk = false): void {
    if (!Number.isInteger(addr) || addr % PAGE_SIZE !== 0 || addr < 0) einval("addr", `a page-aligned address, got ${addr}`);
    if (!Number.isInteger(length) || length < 0 || (length === 0 && !zeroOk) || addr + length > TASK_SIZE) {
      einval("length", `a ${zeroOk ? "non-negative" : "positive"} length within TASK_SIZE, got ${length}`);
    }
  }

  /**
   * A hugetlb VMA splits only on 2 MiB boundaries.
   * @throws HmmError EINVAL (`addr` or `length`) when `start` or `end` falls inside a hugetlb VMA off one.
   * @see hugetlb_vm_op_split
   */
  private checkHugetlbEdges(start: number, end: number): void {
    for (const [edge, name] of [
      [start, "addr"],
      [end, "length"],
    ] as const) {
      const v = this.findVma(edge);
      if (v !== undefined && v.flags & VM.HUGETLB && v.start < edge && edge % PMD_SIZE !== 0) {
        einval(name, `a 2 MiB boundary inside the hugetlb mapping at 0x${v.start.toString(16)}, got 0x${edge.toString(16)}`);
      }
    }
  }

  private checkFullyMapped(start: number, end: number, what: string): void {
    let cur = start;
    for (const v of this.vmasIn(start, end)) {
      if (v.start > cur) break;
      cur = v.end;
    }
    if (cur < end) throw new HmmError("ENOMEM", `${what}: [0x${start.toString(16)}, 0x${end.toString(16)}) is not fully mapped`, "addr");
  }

  private checkAlive(): void {
    if (this.dead) throw new HmmError("EINVAL", "address space has exited", "mm");
  }

  private unmappedArea(len: number, align: number): number {
    let top = MMAP_BASE;
    for (let i = this.vmas.length - 1; i >= -1; i--) {
      const v = this.vmas[i];
      const floor = v === undefined ? MMAP_MIN_ADDR : v.end;
      if (v !== undefined && v.start >= top) continue;
      const candidate = Math.floor((top - len) / align) * align;
      if (candidate >= floor) return candidate;
      if (v !== undefined) top = Math.min(top, v.start);
    }
    throw new HmmError("ENOMEM", `no gap of ${len} bytes in the address space`, "length");
  }
}
