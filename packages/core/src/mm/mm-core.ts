/**
 * The mm layer of a machine: tasks and their address spaces, the CPU access API, and the wiring
 * of the mm mechanisms (rmap, LRU, page refs, faults, THP, fork, memremap).
 *
 * CPU access (`read`, `write`, `touch`) walks the range page by page: a present entry that allows
 * the access is used directly (synchronous typed-array work, no promise per page); otherwise the
 * fault handler runs, synchronously when it can, awaiting only when the fault must wait (a
 * device-private page's `migrateToRam`, a page under migration). A fault that cannot be resolved
 * throws the errno a user copy would see: EFAULT for SIGSEGV/SIGBUS, ENOMEM for OOM, EHWPOISON for
 * a poisoned page. Bytes go through the checked CPU path of `Contents`, so touching device-private
 * memory from the CPU is reported as a bug.
 *
 * @see mm/memory.c, kernel/fork.c, kernel/exit.c, mm/mmap.c (exit_mmap)
 */
import { inject, injectable } from "tsyringe";
import type { MachineConfigResolved } from "../config";
import { Memremap, VM_FAULT } from "../memremap/memremap";
import { Migration } from "../migrate/migrate";
import { MigrateDevice } from "../migrate/migrate-device";
import type { Contents } from "../phys/contents";
import type { PageAllocator } from "../phys/page-alloc";
import { PAGE_SIZE, type PageState, PG } from "../phys/page-state";
import { Pinpage } from "../pinpage/pinpage";
import type { SimClock } from "../sim/clock";
import { BugError, einval, HmmError } from "../sim/errors";
import type { TraceBus } from "../sim/events";
import type { VmStat } from "../sim/vmstat";
import { TOKENS } from "../tokens";
import { Cma } from "./cma";
import { COMPACT, Compaction } from "./compaction";
import { FaultHandler } from "./fault";
import { Forker } from "./fork";
import { HugeMemory } from "./huge-memory";
import { Hugetlb } from "./hugetlb";
import { Khugepaged } from "./khugepaged";
import { Lru } from "./lru";
import { Mm } from "./mm";
import { MMU_NOTIFY, mmuNotifierInvalidateRangeEnd, mmuNotifierInvalidateRangeStart, mmuNotifyRange } from "./mmu-notifier";
import { PageRefs } from "./page-ref";
import { AnonVma, Rmap, ShmemObject } from "./rmap";
import { ShmemFile } from "./shmem";
import { Swap } from "./swap";
import { SWAP_SLOTS_PER_MIB } from "./swapfile";
import { ThpReservations } from "./thp-reserve";
import type { Vma } from "./vma";
import { Vmscan } from "./vmscan";

/**
 * A task: one process with one thread, owning an address space.
 * @see struct task_struct
 */
export class Task {
  /** Whether the task exited. */
  exited = false;
  /** @param pid - process id. @param mm - its address space. */
  constructor(
    readonly pid: number,
    readonly mm: Mm,
  ) {}
}

/** Swap hooks, installed by the swap layer. @see mm/swapfile.c */
export type SwapIn = (mm: Mm, vma: Vma, va: number, entry: number, write: boolean) => number | Promise<number>;

/**
 * The mm layer.
 *
 * Context: methods that take a task and bytes are async (they may wait on a fault); layout
 * changes (`Mm.mmap`, `munmap`, `mprotect`, `madvise`), `fork` and `exit` are synchronous.
 */
@injectable()
export class MmCore {
  /** Reverse map and mapping registry. */
  readonly rmap: Rmap;
  /** LRU lists. */
  readonly lru: Lru;
  /** Page references and locks. */
  readonly refs: PageRefs;
  /** The fault handler. */
  readonly fault: FaultHandler;
  /** THP mechanisms. */
  readonly huge: HugeMemory;
  /** The HugeTLB pool and hugetlb mappings. */
  readonly hugetlb: Hugetlb;
  /** fork. */
  readonly forker: Forker;
  /** THP reservations (seed 002). */
  readonly thpRes: ThpReservations;
  /** The khugepaged scanner. */
  readonly khugepaged: Khugepaged;
  /** ZONE_DEVICE registry. */
  readonly memremap: Memremap;
  /** Device migration (migrate_vma_*, migrate_device_*). */
  readonly migrate: MigrateDevice;
  /** Migration of system pages (migrate_pages). @see mm/migrate.c */
  readonly migration: Migration;
  /** The pinpage subsystem and user pins. @see mm/pinpage.c (RFC), mm/gup.c */
  readonly pinpage: Pinpage;
  /** Compaction. @see mm/compaction.c */
  readonly compaction: Compaction;
  /** CMA, alloc_contig_range and memory offlining. @see mm/cma.c, mm/memory_hotplug.c */
  readonly cma: Cma;
  /** Swap-out, swap-in and the swap device (`swap.device`, with `swapMiB` > 0). @see mm/swapfile.c, mm/swap_state.c */
  readonly swap: Swap;
  /** Reclaim: LRU aging, kswapd, direct reclaim. @see mm/vmscan.c */
  readonly vmscan: Vmscan;
  /** The zero page's pfn. @see ZERO_PAGE */
  zeroPfn = -1;
  /** Live tasks by pid. */
  readonly tasks = new Map<number, Task>();
  /** Swap-in hook (set by the swap layer). */
  swapIn: SwapIn | undefined;
  /** Swap-slot release hook. */
  swapFree: ((slot: number) => void) | undefined;
  /** Swap-slot duplicate hook (fork). */
  swapDup: ((slot: number) => void) | undefined;
  private nextPid = 1;
  private nextMmId = 1;

  /**
   * @param config - machine configuration. @param pages - page state. @param contents - bytes.
   * @param alloc - buddy allocator. @param vmstat - counters. @param bus - tracepoints. @param clock - virtual time.
   */
  constructor(
    @inject(TOKENS.config) readonly config: MachineConfigResolved,
    @inject(TOKENS.pages) readonly pages: PageState,
    @inject(TOKENS.contents) readonly contents: Contents,
    @inject(TOKENS.alloc) readonly alloc: PageAllocator,
    @inject(TOKENS.vmstat) readonly vmstat: VmStat,
    @inject(TOKENS.bus) readonly bus: TraceBus,
    @inject(TOKENS.clock) readonly clock: SimClock,
  ) {
    this.rmap = new Rmap(pages);
    this.lru = new Lru(pages, vmstat, (pfn) => alloc.zoneOf(pfn)?.nid ?? 0);
    this.refs = new PageRefs(pages, alloc, this.lru, vmstat);
    this.fault = new FaultHandler(this);
    this.huge = new HugeMemory(this);
    this.hugetlb = new Hugetlb(this);
    this.forker = new Forker(this);
    this.thpRes = new ThpReservations(this);
    this.khugepaged = new Khugepaged(this);
    this.memremap = new Memremap(pages);
    this.migrate = new MigrateDevice(this);
    this.migration = new Migration(this);
    this.pinpage = new Pinpage(this);
    this.compaction = new Compaction(this);
    this.cma = new Cma(this);
    this.swap = new Swap(this);
    this.vmscan = new Vmscan(this);
  }

  /**
   * Bring the layer up: reserve the zero page, connect ZONE_DEVICE frees.
   * @see mm_init, init_zero_pfn
   */
  boot(): void {
    const pfn = this.alloc.allocPages(0, 0);
    if (pfn < 0) throw new BugError("boot", "no memory for the zero page");
    this.contents.clearPages(pfn, 1);
    this.pages.flags[pfn] = (this.pages.flags[pfn] as number) | PG.reserved;
    this.zeroPfn = pfn;
    this.refs.zoneDeviceFree = (head) => this.memremap.freeZoneDeviceFolio(head);
    this.refs.hugetlbFree = (head) => this.hugetlb.freeFolio(head);
    this.shrinkers.push(() => this.thpRes.releaseAll() > 0);
    this.shrinkers.push(() => this.huge.deferredSplitScan() > 0);
    // Direct compaction for costly orders (__alloc_pages_direct_compact).
    this.shrinkers.push((zone, order) => {
      if (order === 0) return false;
      this.vmstat.c.compact_stall++;
      return this.compaction.compactZone(zone, order).status === COMPACT.SUCCESS;
    });
    if (this.config.cmaMiB > 0) this.cma.reserve(this.config.cmaMiB * 256);
    if (this.config.hugepages > 0) this.hugetlb.setNrHugepages(this.config.hugepages);
    if (this.config.swapMiB > 0) {
      // swapon: swap entries now resolve through the swap layer; reclaim can swap anon pages out.
      this.swap.swapon(this.config.swapMiB * SWAP_SLOTS_PER_MIB);
      this.swapIn = (mm, vma, va, entry, write) => this.swap.doSwapPage(mm, vma, va, entry, write);
      this.swapFree = (slot) => this.swap.freeEntry(slot);
      this.swapDup = (slot) => this.swap.dupEntry(slot);
      this.shrinkers.push((zone, order) => this.vmscan.tryToFreePages(zone, order));
      const prevLow = this.alloc.hooks.onLowWatermark;
      this.alloc.hooks.onLowWatermark = (zone) => {
        prevLow?.(zone);
        this.vmscan.wakeupKswapd(zone);
      };
    }
    const prev = this.alloc.hooks.onAllocFail;
    this.alloc.hooks.onAllocFail = (zone, order, gfp) => {
      let progress = prev ? prev(zone, order, gfp) : false;
      for (const s of this.shrinkers) if (s(zone, order, gfp)) progress = true;
      return progress;
    };
  }

  /**
   * Memory-pressure callbacks run when an allocation fails (before it is retried). Each returns
   * true if it freed something.
   * @see struct shrinker
   */
  readonly shrinkers: ((zone: import("../phys/page-alloc").Zone, order: number, gfp: number) => boolean)[] = [];

  /** Exit every task and stop khugepaged (machine teardown). */
  shutdown(): void {
    this.khugepaged.stop();
    this.vmscan.stop();
    for (const t of [...this.tasks.values()]) this.exit(t);
  }

  /** @internal A new empty address space. */
  newMm(): Mm {
    return new Mm(this.nextMmId++, this);
  }

  /**
   * Create a task with an empty address space.
   * @returns the task. @see kernel_clone (for the first process)
   */
  spawn(): Task {
    const t = new Task(this.nextPid++, this.newMm());
    this.tasks.set(t.pid, t);
    if (this.config.thpPromotionThreshold > 1 && this.config.thpPromotion === "khugepaged") this.khugepaged.start();
    return t;
  }

  /**
   * Fork a task: the child gets a copy-on-write duplicate of the parent's address space.
   * @param parent - a live task. @returns the child.
   * @throws HmmError EINVAL if the parent exited; ENOMEM if a pinned page cannot be copied.
   * @see kernel_clone, dup_mmap
   */
  fork(parent: Task): Task {
    this.checkTask(parent, "parent");
    const mm = this.forker.dupMmap(parent.mm);
    const t = new Task(this.nextPid++, mm);
    this.tasks.set(t.pid, t);
    return t;
  }

  /**
   * End a task: tear its address space down (every page it alone mapped is freed; device pages
   * go to their pgmap's `folioFree`). Idempotent.
   * @param task - the task. @see do_exit, exit_mmap
   */
  exit(task: Task): void {
    if (task.exited) return;
    task.exited = true;
    this.tasks.delete(task.pid);
    const mm = task.mm;
    if (--mm.users > 0) return;
    this.thpRes.releaseMm(mm);
    const range = { mm, start: 0, end: Number.MAX_SAFE_INTEGER, event: MMU_NOTIFY.RELEASE, owner: undefined, blockable: true };
    mmuNotifierInvalidateRangeEnd(range, mmuNotifierInvalidateRangeStart(range));
    for (const v of [...mm.vmas]) {
      // exit_mmap: after the RELEASE above, unmap_vmas notifies UNMAP for every VMA.
      mmuNotifyRange(mm, v.start, v.end, MMU_NOTIFY.UNMAP);
      this.fault.zapRange(mm, v, v.start, v.end);
      mm.removeVma(v);
      this.fault.freePgtables(mm, v.start, v.end);
      const obj = this.rmap.get(v.mapping);
      obj?.mms.delete(mm);
    }
    mm.dead = true;
  }

  /**
   * Read `len` bytes at `va` as task `task` (faulting pages in).
   * @param task - a live task. @param va - address. @param len - bytes, >= 0.
   * @returns the bytes.
   * @throws HmmError EFAULT (no mapping / access denied), ENOMEM (OOM), EHWPOISON, EINVAL (bad arguments).
   * @see copy_from_user
   */
  async read(task: Task, va: number, len: number): Promise<Uint8Array> {
    this.checkAccess(task, va, len);
    const out = new Uint8Array(len);
    await this.access(task.mm, va, len, false, undefined, out);
    return out;
  }

  /**
   * Write bytes at `va` as task `task` (faulting pages in, breaking COW).
   * @param task - a live task. @param va - address. @param data - bytes.
   * @throws HmmError EFAULT, ENOMEM, EHWPOISON, EINVAL as {@link MmCore.read}.
   * @see copy_to_user
   */
  async write(task: Task, va: number, data: Uint8Array): Promise<void> {
    if (!(data instanceof Uint8Array)) einval("data", "a Uint8Array");
    this.checkAccess(task, va, data.length);
    await this.access(task.mm, va, data.length, true, data, undefined);
  }

  /**
   * Touch every page of a range (read or write one byte's worth), faulting each in.
   * @param task - a live task. @param va - address. @param len - bytes. @param write - write access.
   * @throws HmmError as {@link MmCore.read}.
   */
  async touch(task: Task, va: number, len: number, write: boolean): Promise<void> {
    this.checkAccess(task, va, len);
    await this.access(task.mm, va, len, write, undefined, undefined);
  }

  /** @internal The access loop. */
  async access(mm: Mm, va: number, len: number, write: boolean, src: Uint8Array | undefined, dst: Uint8Array | undefined): Promise<void> {
    const contents = this.contents;
    let off = 0;
    let retries = 0;
    while (off < len) {
      const addr = va + off;
      const pfn = this.fault.followPte(mm, addr, write);
      if (pfn < 0) {
        // Reclaim spares the page at the faulting address while the handler runs (swap.ts).
        const swap = this.swap;
        swap.faultMm = mm;
        swap.faultVa = addr - (addr % PAGE_SIZE);
        let r: number | Promise<number>;
        try {
          r = this.fault.handleMmFault(mm, addr, write);
        } finally {
          swap.faultMm = undefined;
          swap.faultVa = -1;
        }
        if (typeof r !== "number") r = await r;
        if (r !== 0) throw this.faultError(r, addr, write);
        if (++retries > 64) throw new BugError("fault-livelock", `fault at 0x${addr.toString(16)} retried 64 times without progress`);
        continue;
      }
      retries = 0;
      const pageOff = addr % PAGE_SIZE;
      const n = Math.min(PAGE_SIZE - pageOff, len - off);
      if (src !== undefined) contents.cpuWrite(pfn, pageOff, src.subarray(off, off + n));
      else if (dst !== undefined) contents.cpuRead(pfn, pageOff, dst.subarray(off, off + n));
      else if (!this.pages.regionOf(pfn)?.cpuAccessible) contents.checkCpu(pfn);
      off += n;
    }
  }

  /**
   * Allocate a zeroed (or not) order-0 user page, with the slow path.
   * @param zero - clear its contents. @returns the pfn or -1. @see alloc_anon_folio
   */
  allocUserPage(zero = true): number {
    const pfn = this.alloc.allocPages(0, 0);
    if (pfn >= 0 && zero) this.contents.clearPages(pfn, 1);
    return pfn;
  }

  /**
   * The shmem object behind a mapping id.
   * @param id - mapping id. @returns the object.
   * @throws BugError if it is not a shmem object.
   */
  shmemOf(id: number): ShmemObject {
    const o = this.rmap.get(id);
    if (!(o instanceof ShmemObject)) throw new BugError("not-shmem", `mapping ${id} is not a shmem object`);
    return o;
  }

  /**
   * Create a tmpfs file of `size` bytes (an O_TMPFILE on tmpfs plus ftruncate).
   * @param size - bytes, >= 0. @returns the open file; `close()` it when done.
   * @throws HmmError EINVAL for a bad size.
   * @see shmem_file_setup
   * @example
   * ```ts
   * const f = m.mm.shmemFileSetup(4096);
   * f.pwrite(new Uint8Array([1, 2, 3]), 0);
   * const p = task.mm.mmap(0, 4096, PROT_READ, MAP_SHARED, f);
   * ```
   */
  shmemFileSetup(size: number): ShmemFile {
    return new ShmemFile(this, size);
  }

  /**
   * Count VMAs referencing a shmem object; at zero its pages are released.
   * @param id - mapping id. @param delta - +1 or -1.
   * @see shmem_evict_inode
   */
  shmemVmaRef(id: number, delta: number): void {
    const o = this.shmemOf(id);
    o.vmaRefs += delta;
    if (o.vmaRefs > 0) return;
    for (const pfn of o.pages.values()) this.refs.putPage(pfn);
    o.pages.clear();
    this.rmap.drop(id);
  }

  /** @internal An ENOMEM error. */
  enomem(msg: string): HmmError {
    return new HmmError("ENOMEM", msg);
  }

  private faultError(code: number, addr: number, write: boolean): HmmError {
    const a = `0x${addr.toString(16)}`;
    if (code & VM_FAULT.OOM) return new HmmError("ENOMEM", `out of memory faulting ${a}`, "va");
    if (code & VM_FAULT.HWPOISON) return new HmmError("EHWPOISON", `memory failure at ${a}`, "va");
    if (code & VM_FAULT.SIGBUS) return new HmmError("EFAULT", `SIGBUS ${write ? "writing" : "reading"} ${a}`, "va");
    return new HmmError("EFAULT", `SIGSEGV ${write ? "writing" : "reading"} ${a}: no mapping allows it`, "va");
  }

  private checkTask(task: Task, name: string): void {
    if (!(task instanceof Task)) einval(name, "a Task");
    if (task.exited) einval(name, `a live task (pid ${task.pid} exited)`);
  }

  private checkAccess(task: Task, va: number, len: number): void {
    this.checkTask(task, "task");
    if (!Number.isInteger(va) || va < 0) einval("va", `a non-negative integer address, got ${va}`);
    if (!Number.isInteger(len) || len < 0) einval("len", `a non-negative length, got ${len}`);
  }

  /** The anon_vma class (for instanceof checks by other layers). */
  static readonly AnonVma = AnonVma;
}
