/**
 * dmirror: the reference device driver, modelled on the kernel's lib/test_hmm.c (THP era).
 *
 * Theory of operation
 * -------------------
 * A {@link DmirrorModule} registers devices 0 and 1 with device-private memory and, like the
 * module loaded with `spm_addr_dev0/1`, devices 2 and 3 with device-coherent memory. Each device
 * is its own owner (`pagemap.owner = mdevice`), so device 0 treats device 1's private pages as
 * foreign. A device's memory comes in chunks (256 MiB by default, `DEVMEM_CHUNK_SIZE`), each one
 * `memremapPages` of a fresh range; a chunk is cut either into 4 KiB pages (`freePages`) or, when
 * it was allocated for a THP request, into 2 MiB folios (`freeFolios`). Allocation takes from a free
 * list (or adds a chunk) and initialises the page with `zoneDeviceFolioInit` (refcount 1,
 * locked); the core calls `folioFree` when its last reference goes and the page returns to its
 * free list (`cfree`), unless its chunk is being removed.
 *
 * There is no backing "rpage": the device's bytes are the device pfn's own contents, reached
 * through the unchecked contents API, which is this device's DMA. The kernel's
 * `rpage->zone_device_data = dmirror` (who migrated the page, used by the CPU fault handler) is
 * kept per device page in the chunk (`zoneDeviceData`), and `folioSplit` keeps it in step.
 *
 * Each {@link DmirrorFile} (an open of `/dev/hmm_dmirrorN`) mirrors the opener's address space in
 * its own device page table ({@link DmirrorPt}: user pfn → pfn with a WRITE/ATOMIC tag, no page
 * references held) and subscribes an interval notifier over the whole address space. Every
 * invalidation erases the mirrored range, except MMU_NOTIFY_MIGRATE invalidations issued by this
 * device's own migrations (the migration code updates the page table itself).
 *
 * Commands (`ioctl`) follow the kernel's semantics and errno results: READ/WRITE fault pages in
 * with the canonical hmm_range_fault retry loop in 32-page windows (`faults` counts passes);
 * MIGRATE_TO_DEV/TO_SYS migrate in 512-page windows clipped to each VMA; SNAPSHOT reports per-page
 * state without faulting; RELEASE evicts and unregisters every chunk; FLAGS sets FAIL_ALLOC.
 * Copies are CPU copies (the DMA engine comes with device-emu).
 *
 * Locking: the kernel's `dmirror->mutex` protects the page table. Here every page-table update is
 * a synchronous section (the invalidate callback, the check of `mmuIntervalReadRetry` with the
 * store that follows, the migration steps), and JS runs one section at a time, which gives the same
 * exclusion. Only hmmRangeFault awaits.
 *
 * Differences from the kernel, all deliberate: a command on an address space that has exited
 * returns -EINVAL (the kernel's READ/WRITE would spin: `dmirror_fault` returns 0 when
 * `mmget_not_zero` fails); EXCLUSIVE uses the core's makeDeviceExclusive (formerly -EOPNOTSUPP: the core had no make_device_exclusive
 * yet); chunks of coherent devices are fresh ranges rather than the fixed SPM range; an invalidation
 * erases exactly `[start, end)` (the kernel's `xa_for_each_range` also erases the page at `end`).
 *
 * @see lib/test_hmm.c, lib/test_hmm_uapi.h, tools/testing/selftests/mm/hmm-tests.c
 */
import {
  BugError,
  type Contents,
  type DevPagemap,
  type DevPagemapOps,
  ERRNO,
  GFP,
  HMM_PFN,
  HMM_RANGE_DEFAULT_TIMEOUT,
  HmmError,
  type HmmRange,
  HPAGE_PMD_NR,
  HPAGE_PMD_ORDER,
  hmmPfnToMapOrder,
  hmmPfnToPfn,
  hmmRangeFault,
  type Machine,
  MEMORY_DEVICE_COHERENT,
  MEMORY_DEVICE_PRIVATE,
  MIGRATE_PFN,
  MIGRATE_VMA_SELECT,
  type MigrateVma,
  MMU_NOTIFY,
  type Mm,
  type MmapFile,
  type MmuIntervalNotifier,
  type MmuNotifierRange,
  makeDeviceExclusive,
  migratePfn,
  migratePfnToPfn,
  mmuIntervalNotifierInsert,
  mmuIntervalNotifierRemove,
  mmuIntervalReadBegin,
  mmuIntervalReadRetry,
  mmuIntervalSetSeq,
  mpfnFlags,
  PAGE_SIZE,
  PG,
  PTRS_PER_PTE,
  type Task,
  VM,
  VM_FAULT,
  type Vma,
  type VmFault,
} from "@hmmkit/core";
import {
  HMM_DMIRROR_CHECK_EXCLUSIVE,
  HMM_DMIRROR_EXCLUSIVE,
  HMM_DMIRROR_FLAG_FAIL_ALLOC,
  HMM_DMIRROR_FLAGS,
  HMM_DMIRROR_MEMORY_DEVICE_COHERENT,
  HMM_DMIRROR_MEMORY_DEVICE_PRIVATE,
  HMM_DMIRROR_MIGRATE_TO_DEV,
  HMM_DMIRROR_MIGRATE_TO_SYS,
  HMM_DMIRROR_PROT_DEV_COHERENT_LOCAL,
  HMM_DMIRROR_PROT_DEV_COHERENT_REMOTE,
  HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL,
  HMM_DMIRROR_PROT_DEV_PRIVATE_REMOTE,
  HMM_DMIRROR_PROT_ERROR,
  HMM_DMIRROR_PROT_NONE,
  HMM_DMIRROR_PROT_PMD,
  HMM_DMIRROR_PROT_READ,
  HMM_DMIRROR_PROT_WRITE,
  HMM_DMIRROR_PROT_ZERO,
  HMM_DMIRROR_READ,
  HMM_DMIRROR_RELEASE,
  HMM_DMIRROR_SNAPSHOT,
  HMM_DMIRROR_WRITE,
  type HmmDmirrorCmd,
} from "./test-hmm-uapi";

/** Number of dmirror devices (0, 1 private; 2, 3 coherent). @see DMIRROR_NDEVICES */
export const DMIRROR_NDEVICES = 4;
/** Pages per device memory chunk: 256 MiB. @see DEVMEM_CHUNK_SIZE */
export const DEVMEM_CHUNK_PAGES = (256 * 1024 * 1024) / PAGE_SIZE;
/** Pages per hmm_range_fault window of READ/WRITE/SNAPSHOT (`unsigned long pfns[32]`). @see dmirror_fault */
export const DMIRROR_FAULT_WINDOW = 32;
/** Device page-table tag: read-write entry. @see DPT_XA_TAG_WRITE */
export const DPT_XA_TAG_WRITE = 3;
/** Device page-table tag: exclusive (atomic) entry. @see DPT_XA_TAG_ATOMIC */
export const DPT_XA_TAG_ATOMIC = 1;
/** Device page-table tag of a read-only entry (the kernel's untagged pointer). */
export const DPT_XA_TAG_READ = 0;

const EINVAL = -ERRNO.EINVAL;
const ENOENT = -ERRNO.ENOENT;
const EFAULT = -ERRNO.EFAULT;
const EBUSY = -ERRNO.EBUSY;
const EPERM = -ERRNO.EPERM;
const ENOMEM = -ERRNO.ENOMEM;
/** Safety net: a retry loop that never advances virtual time cannot reach the 1000 ms timeout. */
const RANGE_FAULT_MAX_RETRIES = 100_000;

function hasF(m: number, f: number): boolean {
  return (mpfnFlags(m) & f) !== 0;
}

// ------------------------------------------------------------------------------------------------
// Copies of a migration window

/**
 * The copies (and clears) of one migration window, coalesced into runs of pages contiguous on
 * both sides and done together once every destination is allocated. A run of contiguous pfns is
 * contiguous in the direct map, so one memcpy covers it, as a DMA engine takes one descriptor
 * for it; doing the window's copies back to back also overlaps their cache misses, which a copy
 * between two allocations cannot.
 * @see dmirror_migrate_alloc_and_copy, dmirror_devmem_fault_alloc_and_copy (copy_highpage per page)
 */
class DmirrorCopyList {
  private ops = new Float64Array(3 * 64);
  private n = 0;

  /**
   * Queue a copy of `pages` pages from `src` to `dst`, or a clear of `dst` when `src` is -1.
   * @param dst - first destination pfn. @param src - first source pfn, or -1. @param pages - count.
   */
  add(dst: number, src: number, pages: number): void {
    const o = this.ops;
    const last = 3 * (this.n - 1);
    if (this.n > 0) {
      const ld = o[last] as number;
      const ls = o[last + 1] as number;
      const ln = o[last + 2] as number;
      if (ld + ln === dst && ((src < 0 && ls < 0) || (src >= 0 && ls >= 0 && ls + ln === src))) {
        o[last + 2] = ln + pages;
        return;
      }
    }
    if (3 * (this.n + 1) > o.length) {
      const grown = new Float64Array(o.length * 2);
      grown.set(o);
      this.ops = grown;
    }
    const at = 3 * this.n++;
    this.ops[at] = dst;
    this.ops[at + 1] = src;
    this.ops[at + 2] = pages;
  }

  /**
   * Do every queued copy and clear, in order, and empty the list.
   * @param contents - the machine's page contents.
   */
  flush(contents: Contents): void {
    const o = this.ops;
    for (let i = 0; i < 3 * this.n; i += 3) {
      const src = o[i + 1] as number;
      if (src < 0) contents.clearPages(o[i] as number, o[i + 2] as number);
      else contents.copyPages(o[i] as number, src, o[i + 2] as number);
    }
    this.n = 0;
  }
}

// ------------------------------------------------------------------------------------------------
// Device page table

const PT_SHIFT_PAGES = 512;

/**
 * A dmirror device page table: user pfn → pfn (system page or device page) with a tag, as the
 * kernel's `dmirror->pt` xarray of tagged `struct page *`. Entries hold no page references;
 * correctness relies on notifier invalidation. Storage is a sparse two-level table (512-entry
 * Float64Array leaves), entry value `(pfn + 1) * 4 + tag`, 0 = empty.
 * @see struct dmirror (pt), xa_store / xa_load / xa_erase
 */
export class DmirrorPt {
  private readonly leaves = new Map<number, Float64Array>();
  /** The last leaf looked up (migrations walk the table in order). */
  private lastKey = -1;
  private lastLeaf: Float64Array | undefined;

  private leaf(k: number): Float64Array | undefined {
    if (k === this.lastKey) return this.lastLeaf;
    const leaf = this.leaves.get(k);
    if (leaf !== undefined) {
      this.lastKey = k;
      this.lastLeaf = leaf;
    }
    return leaf;
  }

  /**
   * Look an entry up.
   * @param upfn - user virtual page number (`addr / PAGE_SIZE`).
   * @returns the mapped pfn, or -1 if there is no entry.
   * @see xa_load, xa_untag_pointer
   */
  load(upfn: number): number {
    const leaf = this.leaf(Math.floor(upfn / PT_SHIFT_PAGES));
    if (leaf === undefined) return -1;
    const e = leaf[upfn & (PT_SHIFT_PAGES - 1)] as number;
    return e === 0 ? -1 : Math.floor(e / 4) - 1;
  }

  /**
   * The tag of an entry.
   * @param upfn - user virtual page number.
   * @returns {@link DPT_XA_TAG_READ}, {@link DPT_XA_TAG_WRITE} or {@link DPT_XA_TAG_ATOMIC}; -1 if absent.
   * @see xa_pointer_tag
   */
  tag(upfn: number): number {
    const leaf = this.leaf(Math.floor(upfn / PT_SHIFT_PAGES));
    if (leaf === undefined) return -1;
    const e = leaf[upfn & (PT_SHIFT_PAGES - 1)] as number;
    return e === 0 ? -1 : e % 4;
  }

  /**
   * Store an entry.
   * @param upfn - user virtual page number. @param pfn - page it maps. @param tag - DPT_XA_TAG_*.
   * @see xa_store, xa_tag_pointer
   */
  store(upfn: number, pfn: number, tag: number): void {
    const k = Math.floor(upfn / PT_SHIFT_PAGES);
    let leaf = this.leaf(k);
    if (leaf === undefined) {
      leaf = new Float64Array(PT_SHIFT_PAGES);
      this.leaves.set(k, leaf);
    }
    leaf[upfn & (PT_SHIFT_PAGES - 1)] = (pfn + 1) * 4 + tag;
  }

  /**
   * Store `n` entries mapping consecutive user pages to consecutive pfns (a folio).
   * @param upfn - first user virtual page number. @param pfn - first pfn. @param n - entries.
   * @param tag - DPT_XA_TAG_*.
   * @see xa_store (one per page in dmirror_migrate_finalize_and_map)
   */
  storeRange(upfn: number, pfn: number, n: number, tag: number): void {
    for (let i = 0; i < n; ) {
      const u = upfn + i;
      const k = Math.floor(u / PT_SHIFT_PAGES);
      let leaf = this.leaf(k);
      if (leaf === undefined) {
        leaf = new Float64Array(PT_SHIFT_PAGES);
        this.leaves.set(k, leaf);
      }
      const o = u & (PT_SHIFT_PAGES - 1);
      const m = Math.min(n - i, PT_SHIFT_PAGES - o);
      const e0 = (pfn + i + 1) * 4 + tag;
      for (let j = 0; j < m; j++) leaf[o + j] = e0 + 4 * j;
      i += m;
    }
  }

  /**
   * Erase one entry. @param upfn - user virtual page number. @see xa_erase
   */
  erase(upfn: number): void {
    const leaf = this.leaf(Math.floor(upfn / PT_SHIFT_PAGES));
    if (leaf !== undefined) leaf[upfn & (PT_SHIFT_PAGES - 1)] = 0;
  }

  /**
   * Erase the entries of `[startUpfn, endUpfn)`.
   * @param startUpfn - first user page. @param endUpfn - one past the last.
   * @see dmirror_do_update
   */
  eraseRange(startUpfn: number, endUpfn: number): void {
    if (endUpfn <= startUpfn) return;
    const k0 = Math.floor(startUpfn / PT_SHIFT_PAGES);
    const k1 = Math.floor((endUpfn - 1) / PT_SHIFT_PAGES);
    // Leaves are kept once allocated (4 KiB per 2 MiB of address space mirrored): a range
    // migrated back and forth would otherwise allocate a leaf per window per round.
    if (k1 - k0 + 1 <= this.leaves.size) {
      for (let k = k0; k <= k1; k++) {
        const leaf = this.leaves.get(k);
        if (leaf !== undefined) this.eraseInLeaf(leaf, k, startUpfn, endUpfn);
      }
    } else {
      for (const [k, leaf] of [...this.leaves]) if (k >= k0 && k <= k1) this.eraseInLeaf(leaf, k, startUpfn, endUpfn);
    }
  }

  /** Clear the part of `[startUpfn, endUpfn)` that leaf `k` covers. */
  private eraseInLeaf(leaf: Float64Array, k: number, startUpfn: number, endUpfn: number): void {
    const base = k * PT_SHIFT_PAGES;
    leaf.fill(0, Math.max(startUpfn, base) - base, Math.min(endUpfn, base + PT_SHIFT_PAGES) - base);
  }

  /** Erase every entry. @see xa_destroy */
  clear(): void {
    this.leaves.clear();
    this.lastKey = -1;
  }

  /**
   * Number of entries (a full scan; for tests and dumps).
   * @returns the count of present entries.
   */
  count(): number {
    let n = 0;
    for (const leaf of this.leaves.values()) for (let i = 0; i < PT_SHIFT_PAGES; i++) if (leaf[i] !== 0) n++;
    return n;
  }
}

// ------------------------------------------------------------------------------------------------
// Chunks and devices

/**
 * One chunk of device memory: a registered pgmap plus the driver's per-page data.
 * @see struct dmirror_chunk
 */
export class DmirrorChunk {
  /** Set while the chunk is being removed: freed pages no longer return to the free lists. */
  remove = false;
  /** Per device page: the mirror that allocated it (the kernel's `rpage->zone_device_data`). */
  readonly zoneDeviceData: (DmirrorFile | undefined)[];
  /** Per device page: 1 while allocated (between allocation and `folioFree`), for double-free checks. */
  readonly allocated: Uint8Array;

  /** @param pagemap - the chunk's pgmap. @param mdevice - its device. */
  constructor(
    readonly pagemap: DevPagemap,
    readonly mdevice: DmirrorDevice,
  ) {
    this.zoneDeviceData = new Array<DmirrorFile | undefined>(pagemap.npages).fill(undefined);
    this.allocated = new Uint8Array(pagemap.npages);
  }
}

/** Options of {@link DmirrorModule.load}. */
export interface DmirrorOptions {
  /**
   * Also register devices 2 and 3 with device-coherent memory (the kernel module's
   * `spm_addr_dev0`/`spm_addr_dev1` parameters). Default true.
   */
  coherent?: boolean;
  /** Pages per chunk (`DEVMEM_CHUNK_SIZE / PAGE_SIZE`), a positive multiple of 512. Default 65536 (256 MiB). */
  chunkPages?: number;
  /** Chunks a device may hold at once (fake physical address space); 1..2^20. Default unlimited. */
  maxChunks?: number;
}

/**
 * A free list of device pfns (4 KiB pages or 2 MiB folio heads), first in first out: allocation
 * takes the page freed longest ago. Departure: the kernel's dmirror keeps a LIFO list; FIFO order
 * gives a migration that frees its pages in ascending order the same ascending pages back, so the
 * next migration's copies stay contiguous runs (see `DmirrorCopyList`), round after round.
 * @see dmirror_device.free_pages, dmirror_device.free_folios
 */
export class DevmemFreeList {
  /** A ring of pfns (capacity a power of two), `n` of them from `head` on. */
  private ring = new Float64Array(64);
  private head = 0;
  private n = 0;

  /** Entries on the list. */
  get length(): number {
    return this.n;
  }

  /** Put a free pfn at the tail. @param pfn - a free page or folio head. */
  push(pfn: number): void {
    if (this.n === this.ring.length) this.resize(this.ring.length * 2);
    this.ring[(this.head + this.n) & (this.ring.length - 1)] = pfn;
    this.n++;
  }

  /** Take the pfn at the head. @returns it, or undefined when the list is empty. */
  shift(): number | undefined {
    if (this.n === 0) return undefined;
    const p = this.ring[this.head] as number;
    this.head = (this.head + 1) & (this.ring.length - 1);
    this.n--;
    return p;
  }

  /** Keep only the entries `keep` accepts, in order. @param keep - predicate on a pfn. */
  retain(keep: (pfn: number) => boolean): void {
    const old = this.ring;
    const mask = old.length - 1;
    let kept = 0;
    for (let i = 0; i < this.n; i++) {
      const p = old[(this.head + i) & mask] as number;
      if (keep(p)) old[(this.head + kept++) & mask] = p;
    }
    this.n = kept;
  }

  /** Empty the list. */
  clear(): void {
    this.ring = new Float64Array(64);
    this.head = 0;
    this.n = 0;
  }

  /** Copy the entries, in order, into a ring of `cap` slots. */
  private resize(cap: number): void {
    const old = this.ring;
    const mask = old.length - 1;
    const ring = new Float64Array(cap);
    for (let i = 0; i < this.n; i++) ring[i] = old[(this.head + i) & mask] as number;
    this.ring = ring;
    this.head = 0;
  }
}

/**
 * One dmirror device: its memory chunks, free lists and counters. The device object is the owner
 * of its pgmaps (`pagemap.owner = mdevice`).
 * @see struct dmirror_device
 */
export class DmirrorDevice {
  /** Chunks currently registered. @see dmirror_device.devmem_chunks */
  chunks: DmirrorChunk[] = [];
  /** Pages handed out by the allocator, ever. @see dmirror_device.calloc */
  calloc = 0;
  /** Pages returned to the free lists, ever. @see dmirror_device.cfree */
  cfree = 0;
  /** Free 4 KiB device pages. @see dmirror_device.free_pages */
  readonly freePages = new DevmemFreeList();
  /** Free 2 MiB device folios (heads). @see dmirror_device.free_folios */
  readonly freeFolios = new DevmemFreeList();
  /**
   * The pgmap callbacks shared by every chunk of this device (the kernel's `dmirror_devmem_ops`).
   * Tests may wrap a callback to observe it.
   * @see dmirror_devmem_ops
   */
  readonly devmemOps: DevPagemapOps;
  private readonly byPgmap = new Map<number, DmirrorChunk>();
  /** The chunk {@link DmirrorDevice.chunkOf} found last (cleared when a chunk is removed). */
  private lastChunk: DmirrorChunk | undefined;
  private readonly files = new Set<DmirrorFile>();

  /**
   * @param machine - the machine. @param id - device number (minor).
   * @param zoneDeviceType - HMM_DMIRROR_MEMORY_DEVICE_PRIVATE or _COHERENT.
   * @param chunkPages - pages per chunk. @param maxChunks - chunk limit.
   */
  constructor(
    readonly machine: Machine,
    readonly id: number,
    readonly zoneDeviceType: number,
    readonly chunkPages: number,
    readonly maxChunks: number,
  ) {
    this.devmemOps = {
      folioFree: (head, order) => this.devmemFree(head, order),
      folioSplit: (head, tail) => this.devmemFolioSplit(head, tail),
      ...(zoneDeviceType === HMM_DMIRROR_MEMORY_DEVICE_PRIVATE ? { migrateToRam: (vmf: VmFault) => this.devmemFault(vmf) } : {}),
    };
  }

  /** Whether this device's memory is device-private. @see dmirror_is_private_zone */
  get isPrivate(): boolean {
    return this.zoneDeviceType === HMM_DMIRROR_MEMORY_DEVICE_PRIVATE;
  }

  /** The device-selection flag for migrations from this device. @see dmirror_select_device */
  get selectDevice(): number {
    return this.isPrivate ? MIGRATE_VMA_SELECT.DEVICE_PRIVATE : MIGRATE_VMA_SELECT.DEVICE_COHERENT;
  }

  /** Open files of this device. */
  get openFiles(): ReadonlySet<DmirrorFile> {
    return this.files;
  }

  /**
   * Bring the device up with one chunk of 4 KiB pages (`maxChunks` is at least 1).
   * @see dmirror_device_init
   */
  init(): void {
    this.allocateChunk(false, false);
  }

  /**
   * Open the device for `task`: a new mirror of its address space.
   * @param task - a live task. @returns the open file.
   * @throws HmmError EINVAL if the task has exited.
   * @see dmirror_fops_open
   */
  open(task: Task): DmirrorFile {
    if (task.exited || task.mm.dead) throw new HmmError("EINVAL", `task ${task.pid} has exited`, "task");
    const f = new DmirrorFile(this, task);
    this.files.add(f);
    return f;
  }

  /** @internal Called by DmirrorFile.close. */
  forget(f: DmirrorFile): void {
    this.files.delete(f);
  }

  /**
   * The chunk holding a device pfn of this device.
   * @param pfn - a device pfn. @returns the chunk or undefined.
   * @see dmirror_page_to_chunk
   */
  chunkOf(pfn: number): DmirrorChunk | undefined {
    // The kernel's container_of on the page's pgmap is O(1); the last chunk found answers the
    // runs of lookups a migration makes without the pgmap and map lookups.
    const last = this.lastChunk;
    if (last !== undefined && pfn >= last.pagemap.startPfn && pfn < last.pagemap.endPfn) return last;
    const pg = this.machine.memremap.pgmapOf(pfn);
    const c = pg === undefined ? undefined : this.byPgmap.get(pg.id);
    if (c !== undefined) this.lastChunk = c;
    return c;
  }

  /**
   * Whether a device page is allocated (between allocation and its `folioFree`).
   * @param pfn - a device pfn of this device. @returns true if allocated.
   */
  isPageAllocated(pfn: number): boolean {
    const c = this.chunkOf(pfn);
    return c !== undefined && c.allocated[pfn - c.pagemap.startPfn] === 1;
  }

  /** Device pages currently allocated (calloc - cfree, ignoring chunks removed while in use). */
  get allocatedPages(): number {
    let n = 0;
    for (const c of this.chunks) for (let i = 0; i < c.allocated.length; i++) n += c.allocated[i] as number;
    return n;
  }

  /** Pages on the free lists (4 KiB pages + 512 per free folio). */
  get freeListPages(): number {
    return this.freePages.length + this.freeFolios.length * HPAGE_PMD_NR;
  }

  /** Pages of every registered chunk. */
  get totalPages(): number {
    return this.chunks.length * this.chunkPages;
  }

  /**
   * Register a new chunk and put its pages on the free lists (as 2 MiB folios if `isLarge`).
   * @param isLarge - cut the chunk into folios. @param wantPage - also allocate one page/folio from it.
   * @returns the allocated page (when `wantPage`), 0 when not wanted, or -1 (-ENOMEM: chunk limit).
   * @see dmirror_allocate_chunk
   */
  allocateChunk(isLarge: boolean, wantPage: boolean): number {
    if (this.chunks.length >= this.maxChunks) return -1;
    const m = this.machine;
    const pg = m.memremap.memremapPages({
      type: this.isPrivate ? MEMORY_DEVICE_PRIVATE : MEMORY_DEVICE_COHERENT,
      owner: this,
      ops: this.devmemOps,
      range: { npages: this.chunkPages },
      name: `hmm_dmirror${this.id}.${this.chunks.length}`,
    });
    const chunk = new DmirrorChunk(pg, this);
    this.chunks.push(chunk);
    this.byPgmap.set(pg.id, chunk);
    // In ascending order: allocation takes the lowest pfns first.
    if (isLarge) for (let p = pg.startPfn; p < pg.endPfn; p += HPAGE_PMD_NR) this.freeFolios.push(p);
    else for (let p = pg.startPfn; p < pg.endPfn; p++) this.freePages.push(p);
    if (!wantPage) return 0;
    const list = isLarge ? this.freeFolios : this.freePages;
    const p = list.shift();
    if (p === undefined) return -1;
    this.calloc += isLarge ? HPAGE_PMD_NR : 1;
    return p;
  }

  /**
   * Allocate a device page (or a 2 MiB folio) for `dmirror`: pop a free list (adding a chunk when
   * it is empty), initialise it (refcount 1, locked) and record the mirror.
   * @param dmirror - the mirror migrating into it. @param isLarge - a 2 MiB folio.
   * @returns the pfn (folio head), or -1 when no chunk can be added.
   * @see dmirror_devmem_alloc_page
   */
  devmemAllocPage(dmirror: DmirrorFile, isLarge: boolean): number {
    let dpage: number | undefined;
    if (isLarge && this.freeFolios.length > 0) {
      dpage = this.freeFolios.shift() as number;
      this.calloc += HPAGE_PMD_NR;
    } else if (!isLarge && this.freePages.length > 0) {
      dpage = this.freePages.shift() as number;
      this.calloc++;
    } else {
      dpage = this.allocateChunk(isLarge, true);
      if (dpage < 0) return -1;
    }
    const order = isLarge ? HPAGE_PMD_ORDER : 0;
    this.machine.memremap.zoneDeviceFolioInit(dpage, order);
    const c = this.chunkOf(dpage) as DmirrorChunk;
    const off = dpage - c.pagemap.startPfn;
    const n = 1 << order;
    const taken = n === 1 ? (c.allocated[off] === 1 ? 0 : -1) : c.allocated.subarray(off, off + n).indexOf(1);
    if (taken >= 0) throw new BugError("dmirror-double-alloc", `hmm_dmirror${this.id}: pfn ${dpage + taken} allocated twice`);
    if (n === 1) c.allocated[off] = 1;
    else c.allocated.fill(1, off, off + n);
    c.zoneDeviceData[off] = dmirror;
    return dpage;
  }

  /**
   * `folio_free`: the folio lost its last reference; put it back on the free list (unless its
   * chunk is being removed).
   * @param head - folio head. @param order - 0 or 9.
   * @throws BugError `dmirror-double-free` if the pages were not allocated.
   * @see dmirror_devmem_free
   */
  devmemFree(head: number, order: number): void {
    const c = this.chunkOf(head);
    if (c === undefined) throw new BugError("dmirror-free-foreign", `hmm_dmirror${this.id}: folio_free of pfn ${head}, not ours`);
    const off = head - c.pagemap.startPfn;
    const n = 1 << order;
    const free = n === 1 ? (c.allocated[off] === 0 ? 0 : -1) : c.allocated.subarray(off, off + n).indexOf(0);
    if (free >= 0) throw new BugError("dmirror-double-free", `hmm_dmirror${this.id}: folio_free of free pfn ${head + free}`);
    // A folio's driver data is on its head (devmemFolioSplit hands it to the tails on a split).
    c.zoneDeviceData[off] = undefined;
    if (n === 1) c.allocated[off] = 0;
    else c.allocated.fill(0, off, off + n);
    if (c.remove) return;
    this.cfree += n;
    if (order > 0) this.freeFolios.push(head);
    else this.freePages.push(head);
  }

  /**
   * `folio_split`: the core split a device THP; keep per-page driver data in step. `tail` = -1
   * (the kernel's NULL) closes the split.
   * @param head - the original head. @param tail - a page that left the folio, or -1.
   * @see dmirror_devmem_folio_split
   */
  devmemFolioSplit(head: number, tail: number): void {
    if (tail < 0) return;
    const c = this.chunkOf(head);
    if (c === undefined) throw new BugError("dmirror-split-foreign", `hmm_dmirror${this.id}: folio_split of pfn ${head}, not ours`);
    const s = c.pagemap.startPfn;
    c.zoneDeviceData[tail - s] = c.zoneDeviceData[head - s];
  }

  /**
   * `migrate_to_ram`: the CPU touched one of this device's private pages. Migrates the page (or
   * the whole 2 MiB folio when it is PMD-mapped) back to system memory.
   * @param vmf - the fault. @returns 0, VM_FAULT_SIGBUS (setup refused) or VM_FAULT_OOM.
   * @see dmirror_devmem_fault
   */
  devmemFault(vmf: VmFault): number {
    const m = this.machine;
    const head = m.pages.compoundHead(vmf.page);
    const c = this.chunkOf(head);
    const dmirror = c?.zoneDeviceData[head - (c?.pagemap.startPfn ?? 0)];
    if (c === undefined || dmirror === undefined) {
      throw new BugError("dmirror-fault-no-mirror", `hmm_dmirror${this.id}: CPU fault on pfn ${vmf.page} with no mirror recorded`);
    }
    let order = Math.log2(m.pages.folioNrPages(head));
    // A partially mapped (PTE-mapped) folio: migrate only the faulting page.
    if (vmf.pteMapped) order = 0;
    const size = PAGE_SIZE * 2 ** order;
    const start = vmf.address - (vmf.address % size);
    const nr = size / PAGE_SIZE;
    const args: MigrateVma = {
      mm: vmf.mm,
      vma: vmf.vma,
      start,
      end: start + size,
      src: new Float64Array(nr),
      dst: new Float64Array(nr),
      pgmapOwner: this,
      flags: this.selectDevice | (order ? MIGRATE_VMA_SELECT.COMPOUND : 0),
      faultPage: vmf.page,
      cpages: 0,
      npages: 0,
    };
    try {
      m.migrate.migrateVmaSetup(args);
    } catch (e) {
      if (e instanceof HmmError) return VM_FAULT.SIGBUS;
      throw e;
    }
    const ret = dmirror.devmemFaultAllocAndCopy(args);
    if (ret) {
      m.migrate.migrateVmaFinalize(args);
      return ret;
    }
    m.migrate.migrateVmaPages(args);
    // No device finalize: alloc_and_copy already erased the device page table entries.
    m.migrate.migrateVmaFinalize(args);
    return 0;
  }

  /**
   * Migrate every in-use page of a chunk back to system memory (no VMA needed).
   * @param chunk - a chunk of this device.
   * @throws BugError `dmirror-evict-nomem` when no system page is left for a base page (the
   *   kernel's __GFP_NOFAIL allocation would loop).
   * @see dmirror_device_evict_chunk
   */
  evictChunk(chunk: DmirrorChunk): void {
    const m = this.machine;
    const ps = m.pages;
    const npages = chunk.pagemap.npages;
    const src = new Float64Array(npages);
    const dst = new Float64Array(npages);
    m.migrate.migrateDeviceRange(src, chunk.pagemap.startPfn, npages);
    for (let i = 0; i < npages; i++) {
      const s = src[i] as number;
      const spage = migratePfnToPfn(s);
      if (spage < 0 || !hasF(s, MIGRATE_PFN.MIGRATE)) continue;
      if (!((ps.flags[spage] as number) & PG.zoneDevice)) continue; // WARN_ON in the kernel
      let order = Math.log2(ps.folioNrPages(ps.compoundHead(spage)));
      let dpage: number;
      if (hasF(s, MIGRATE_PFN.COMPOUND)) {
        dpage = m.alloc.allocPages(order, GFP.TRANSHUGE | GFP.MOVABLE);
        // Like the kernel (migrate_device_range does not split yet), a failed large allocation leaves the folio where it is.
        if (dpage < 0) continue;
      } else {
        dpage = m.alloc.allocPages(0, GFP.MOVABLE);
        if (dpage < 0) throw new BugError("dmirror-evict-nomem", `hmm_dmirror${this.id}: no system page to evict pfn ${spage}`);
        order = 0;
      }
      m.mm.refs.trylockPage(dpage);
      dst[i] = migratePfn(dpage) + (hasF(s, MIGRATE_PFN.WRITE) ? MIGRATE_PFN.WRITE : 0) + (order ? MIGRATE_PFN.COMPOUND : 0);
      m.contents.copyPages(dpage, spage, 1 << order);
    }
    m.migrate.migrateDevicePages(src, dst, npages);
    m.migrate.migrateDeviceFinalize(src, dst, npages);
  }

  /**
   * Evict and unregister every chunk (RELEASE and device removal): mark each chunk removed, drop
   * its free pages, evict it, memunmapPages it.
   * @see dmirror_device_remove_chunks
   */
  removeChunks(): void {
    const m = this.machine;
    for (const chunk of this.chunks) {
      chunk.remove = true;
      const { startPfn, endPfn } = chunk.pagemap;
      const outside = (p: number) => p < startPfn || p >= endPfn;
      this.freePages.retain(outside);
      this.freeFolios.retain(outside);
      this.evictChunk(chunk);
      m.memremap.memunmapPages(chunk.pagemap);
      this.byPgmap.delete(chunk.pagemap.id);
      this.lastChunk = undefined;
    }
    this.chunks = [];
    this.freePages.clear();
    this.freeFolios.clear();
  }
}

// ------------------------------------------------------------------------------------------------
// Open files (mirrors)

interface Bounce {
  ptr: Uint8Array;
  addr: number;
  cpages: number;
}

/**
 * One open of a dmirror device: a mirror of the opener's address space.
 * @see struct dmirror, dmirror_fops
 */
export class DmirrorFile implements MmapFile {
  /** The device page table. @see dmirror.pt */
  readonly pt = new DmirrorPt();
  /** The copies of the migration window in progress. */
  private readonly copies = new DmirrorCopyList();
  /** The interval notifier over the whole address space. @see dmirror.notifier */
  readonly notifier: MmuIntervalNotifier;
  /** Flags set by HMM_DMIRROR_FLAGS ({@link HMM_DMIRROR_FLAG_FAIL_ALLOC}). @see dmirror.flags */
  flags = 0;
  /** Whether {@link DmirrorFile.close} ran. */
  closed = false;
  private readonly hmmPfns = new Float64Array(DMIRROR_FAULT_WINDOW);
  private readonly migSrc = new Float64Array(PTRS_PER_PTE);
  private readonly migDst = new Float64Array(PTRS_PER_PTE);

  /**
   * Use {@link DmirrorDevice.open} (or {@link DmirrorModule.open}).
   * @param mdevice - the device. @param task - the opener.
   * @see dmirror_fops_open
   */
  constructor(
    readonly mdevice: DmirrorDevice,
    readonly task: Task,
  ) {
    this.notifier = mmuIntervalNotifierInsert(task.mm, 0, 2 ** 52, {
      invalidate: (sub, range, curSeq) => this.intervalInvalidate(sub, range, curSeq),
    });
  }

  /** The mirrored address space. */
  get mm(): Mm {
    return this.task.mm;
  }

  private get m(): Machine {
    return this.mdevice.machine;
  }

  /**
   * The device file's mmap (pass the file to `mm.mmap`): back every page of the new private
   * mapping with a zeroed system page inserted with `vmInsertPage`, so the VMA is VM_MIXEDMAP and
   * its PTEs are read-only until a write copies the page.
   * @param mm - the address space mapping the file. @param vma - the new VMA.
   * @returns 0, -ENOMEM, or the error of `vmInsertPage` (mmap then unmaps what was inserted).
   * @see dmirror_fops_mmap
   * @example
   * ```ts
   * const p = task.mm.mmap(0, PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE, file);
   * ```
   */
  mmap(mm: Mm, vma: Vma): number {
    const m = this.m;
    for (let addr = vma.start; addr < vma.end; addr += PAGE_SIZE) {
      const page = m.alloc.allocPages(0, GFP.ZERO);
      if (page < 0) return ENOMEM;
      const ret = mm.vmInsertPage(vma, addr, page);
      m.mm.refs.putPage(page);
      if (ret) return ret;
    }
    return 0;
  }

  /**
   * Close the file: remove the notifier and evict every chunk of the device (THP-era test_hmm
   * does this so no device page outlives the mirror that may be recorded for it). Idempotent.
   * @see dmirror_fops_release
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    mmuIntervalNotifierRemove(this.notifier);
    for (const chunk of [...this.mdevice.chunks]) this.mdevice.evictChunk(chunk);
    this.pt.clear();
    this.mdevice.forget(this);
  }

  /**
   * Issue a command, as `ioctl(fd, request, &cmd)`.
   * @param request - an HMM_DMIRROR_* command number.
   * @param cmd - the command; `cpages`/`faults` are written back only when the result is 0.
   * @returns 0, or a negative errno: -EINVAL (unaligned `addr`, empty or wrapping range, unknown
   *   request, no VMA or no VM_READ for a migration, exited address space), -EFAULT (a fault that
   *   cannot be resolved, or `ptr` too short), -EPERM (write to a read-only range; CHECK_EXCLUSIVE
   *   found an atomic entry), -ENOENT (MIGRATE_TO_DEV: a page of the range is not on the device
   *   afterwards), -EBUSY (range-fault timeout), -ENOMEM (MIGRATE_TO_SYS: no system memory),
   *   -EOPNOTSUPP (EXCLUSIVE).
   * @throws HmmError EINVAL if `cmd` is not an object (API misuse, not a user error).
   * Context: async; commands of one file should not overlap (the kernel serialises nothing
   * either, but the selftests never overlap them).
   * @see dmirror_fops_unlocked_ioctl
   * @example
   * ```ts
   * const cmd = { addr: va, ptr: new Uint8Array(npages * 4096), npages, cpages: 0, faults: 0 };
   * const ret = await file.ioctl(HMM_DMIRROR_READ, cmd); // 0, cmd.cpages === npages, cmd.faults === 1
   * ```
   */
  async ioctl(request: number, cmd: HmmDmirrorCmd): Promise<number> {
    if (cmd === null || typeof cmd !== "object") throw new HmmError("EINVAL", "cmd: a HmmDmirrorCmd object", "cmd");
    if (this.closed) return EINVAL;
    const { addr, npages } = cmd;
    if (!Number.isSafeInteger(addr) || addr < 0 || addr % PAGE_SIZE !== 0) return EINVAL;
    if (!Number.isSafeInteger(npages) || npages < 0) return EINVAL;
    const end = addr + npages * PAGE_SIZE;
    // cmd.addr >= cmd.addr + (npages << PAGE_SHIFT): empty or wrapping (beyond 2^53 here).
    if (!Number.isSafeInteger(end) || addr >= end) return EINVAL;
    const c: HmmDmirrorCmd = { addr, ptr: cmd.ptr, npages, cpages: 0, faults: 0 };
    let ret: number;
    switch (request) {
      case HMM_DMIRROR_READ:
        ret = await this.read(c);
        break;
      case HMM_DMIRROR_WRITE:
        ret = await this.write(c);
        break;
      case HMM_DMIRROR_MIGRATE_TO_DEV:
        ret = this.migrateToDevice(c);
        break;
      case HMM_DMIRROR_MIGRATE_TO_SYS:
        ret = this.migrateToSystem(c);
        break;
      case HMM_DMIRROR_EXCLUSIVE:
        ret = await this.exclusive(c);
        break;
      case HMM_DMIRROR_CHECK_EXCLUSIVE:
        ret = this.checkAtomic(addr, end);
        break;
      case HMM_DMIRROR_SNAPSHOT:
        ret = await this.snapshot(c);
        break;
      case HMM_DMIRROR_RELEASE:
        this.mdevice.removeChunks();
        ret = 0;
        break;
      case HMM_DMIRROR_FLAGS:
        this.flags = npages;
        ret = 0;
        break;
      default:
        return EINVAL;
    }
    if (ret) return ret;
    cmd.cpages = c.cpages;
    cmd.faults = c.faults;
    return 0;
  }

  // ------------------------------------------------------------------ notifier

  /**
   * The interval notifier callback: erase the mirrored range, except for this device's own
   * migrations.
   * @param sub - the subscription. @param range - the invalidation. @param curSeq - its sequence.
   * @returns true.
   * @see dmirror_interval_invalidate
   */
  intervalInvalidate(sub: MmuIntervalNotifier, range: MmuNotifierRange, curSeq: number): boolean {
    if (range.event === MMU_NOTIFY.MIGRATE && range.owner === this.mdevice) return true;
    mmuIntervalSetSeq(sub, curSeq);
    this.pt.eraseRange(Math.floor(range.start / PAGE_SIZE), Math.ceil(Math.min(range.end, 2 ** 52) / PAGE_SIZE));
    return true;
  }

  // ------------------------------------------------------------------ READ / WRITE

  /**
   * Store a faulted window into the device page table (under the "mutex").
   * @param range - a successful hmm range. @param write - write fault requested.
   * @returns 0 or -EFAULT (a read-only entry where a write was requested).
   * @see dmirror_do_fault
   */
  private doFault(range: HmmRange, write: boolean): number {
    const n = (range.end - range.start) / PAGE_SIZE;
    const u0 = range.start / PAGE_SIZE;
    for (let i = 0; i < n; i++) {
      const e = range.hmmPfns[i] as number;
      const low = e % 256;
      if (low & HMM_PFN.ERROR || !(low & HMM_PFN.VALID)) {
        throw new BugError("dmirror-fault-invalid", `hmm_range_fault succeeded with entry ${e} at page ${u0 + i}`);
      }
      let tag = DPT_XA_TAG_READ;
      if (low & HMM_PFN.WRITE) tag = DPT_XA_TAG_WRITE;
      else if (write) return EFAULT;
      this.pt.store(u0 + i, hmmPfnToPfn(e), tag);
    }
    return 0;
  }

  /**
   * The canonical retry loop: read_begin, hmm_range_fault, check read_retry under the lock,
   * program the device page table.
   * @param range - one window. @param write - fault writable.
   * @returns 0 or a negative errno from hmm_range_fault (-EBUSY after the timeout).
   * @see dmirror_range_fault
   */
  private async rangeFault(range: HmmRange, write: boolean): Promise<number> {
    const clock = this.m.clock;
    const timeout = clock.now + HMM_RANGE_DEFAULT_TIMEOUT * 1e6;
    for (let tries = 0; ; tries++) {
      if (clock.now > timeout) return EBUSY;
      if (tries > RANGE_FAULT_MAX_RETRIES) {
        throw new BugError("dmirror-range-fault-livelock", `hmm_range_fault retried ${tries} times without virtual time passing`);
      }
      range.notifierSeq = mmuIntervalReadBegin(range.notifier);
      const ret = await hmmRangeFault(this.m.mm, range);
      if (ret) {
        if (ret === EBUSY) continue;
        return ret;
      }
      if (mmuIntervalReadRetry(range.notifier, range.notifierSeq)) continue;
      break;
    }
    return this.doFault(range, write);
  }

  /**
   * Fault `[start, end)` into the device page table in 32-page windows.
   * @param start - first byte. @param end - one past last. @param write - writable.
   * @returns 0 or a negative errno.
   * @see dmirror_fault
   */
  private async fault(start: number, end: number, write: boolean): Promise<number> {
    if (this.mm.dead) return EINVAL;
    const range: HmmRange = {
      notifier: this.notifier,
      notifierSeq: 0,
      start: 0,
      end: 0,
      hmmPfns: this.hmmPfns,
      defaultFlags: HMM_PFN.REQ_FAULT | (write ? HMM_PFN.REQ_WRITE : 0),
      pfnFlagsMask: 0,
      devPrivateOwner: this.mdevice,
    };
    for (let addr = start; addr < end; addr = range.end) {
      range.start = addr;
      range.end = Math.min(addr + DMIRROR_FAULT_WINDOW * PAGE_SIZE, end);
      const ret = await this.rangeFault(range, write);
      if (ret) return ret;
    }
    return 0;
  }

  /**
   * Copy mirrored pages into the bounce buffer; -ENOENT at the first page not mirrored.
   * @see dmirror_do_read
   */
  private doRead(start: number, end: number, bounce: Bounce): number {
    const contents = this.m.contents;
    let off = start - bounce.addr;
    for (let u = start / PAGE_SIZE; u < end / PAGE_SIZE; u++) {
      const pfn = this.pt.load(u);
      if (pfn < 0) return ENOENT;
      contents.read(pfn, 0, bounce.ptr.subarray(off, off + PAGE_SIZE));
      off += PAGE_SIZE;
      bounce.cpages++;
    }
    return 0;
  }

  /**
   * Copy the bounce buffer into mirrored writable pages; -ENOENT at the first page not mirrored writable.
   * @see dmirror_do_write
   */
  private doWrite(start: number, end: number, bounce: Bounce): number {
    const contents = this.m.contents;
    let off = start - bounce.addr;
    for (let u = start / PAGE_SIZE; u < end / PAGE_SIZE; u++) {
      const pfn = this.pt.load(u);
      if (pfn < 0 || this.pt.tag(u) !== DPT_XA_TAG_WRITE) return ENOENT;
      contents.write(pfn, 0, bounce.ptr.subarray(off, off + PAGE_SIZE));
      off += PAGE_SIZE;
      bounce.cpages++;
    }
    return 0;
  }

  /**
   * HMM_DMIRROR_EXCLUSIVE: take exclusive (atomic) access to every page of the range with
   * makeDeviceExclusive, map each with the ATOMIC tag, then return the data.
   * @param cmd - the command. @returns 0 or a negative errno (-EFAULT, -EPERM, -EOPNOTSUPP from
   *   makeDeviceExclusive).
   * @see dmirror_exclusive, dmirror_atomic_map
   */
  async exclusive(cmd: HmmDmirrorCmd): Promise<number> {
    const start = cmd.addr;
    const end = start + cmd.npages * PAGE_SIZE;
    const refs = this.m.mm.refs;
    for (let addr = start; addr < end; addr += PAGE_SIZE) {
      const r = await makeDeviceExclusive(this.mm, addr, this.mdevice);
      if (r.ret !== 0) return r.ret;
      this.pt.store(addr / PAGE_SIZE, r.page, DPT_XA_TAG_ATOMIC);
      refs.unlockPage(this.m.pages.compoundHead(r.page));
      refs.putPage(r.page);
    }
    const size = cmd.npages * PAGE_SIZE;
    const bounce: Bounce = { ptr: new Uint8Array(size), addr: start, cpages: 0 };
    const ret = this.doRead(start, end, bounce);
    if (ret === 0) {
      if (!(cmd.ptr instanceof Uint8Array) || cmd.ptr.length < size) return EFAULT;
      cmd.ptr.set(bounce.ptr);
    }
    cmd.cpages = bounce.cpages;
    return ret;
  }

  /**
   * HMM_DMIRROR_READ. @param cmd - the command. @returns 0 or a negative errno.
   * @see dmirror_read
   */
  async read(cmd: HmmDmirrorCmd): Promise<number> {
    const size = cmd.npages * PAGE_SIZE;
    let start = cmd.addr;
    const end = start + size;
    const bounce: Bounce = { ptr: new Uint8Array(size), addr: start, cpages: 0 };
    let ret: number;
    for (;;) {
      ret = this.doRead(start, end, bounce);
      if (ret !== ENOENT) break;
      start = cmd.addr + bounce.cpages * PAGE_SIZE;
      ret = await this.fault(start, end, false);
      if (ret) break;
      cmd.faults++;
    }
    if (ret === 0) {
      if (!(cmd.ptr instanceof Uint8Array) || cmd.ptr.length < size) ret = EFAULT;
      else cmd.ptr.set(bounce.ptr);
    }
    cmd.cpages = bounce.cpages;
    return ret;
  }

  /**
   * HMM_DMIRROR_WRITE. @param cmd - the command. @returns 0 or a negative errno.
   * @see dmirror_write
   */
  async write(cmd: HmmDmirrorCmd): Promise<number> {
    const size = cmd.npages * PAGE_SIZE;
    let start = cmd.addr;
    const end = start + size;
    if (!(cmd.ptr instanceof Uint8Array) || cmd.ptr.length < size) return EFAULT;
    const bounce: Bounce = { ptr: cmd.ptr.slice(0, size), addr: start, cpages: 0 };
    let ret: number;
    for (;;) {
      ret = this.doWrite(start, end, bounce);
      if (ret !== ENOENT) break;
      start = cmd.addr + bounce.cpages * PAGE_SIZE;
      ret = await this.fault(start, end, true);
      if (ret) break;
      cmd.faults++;
    }
    cmd.cpages = bounce.cpages;
    return ret;
  }

  // ------------------------------------------------------------------ migration to the device

  /**
   * Allocate device pages for each collected entry and copy (or clear) into them; on a failed
   * THP allocation, fall back to 512 base device pages.
   * @param args - after migrateVmaSetup.
   * @see dmirror_migrate_alloc_and_copy
   */
  private migrateAllocAndCopy(args: MigrateVma): void {
    const copies = this.copies;
    try {
      this.migrateAlloc(args, copies);
    } finally {
      copies.flush(this.m.contents);
    }
  }

  private migrateAlloc(args: MigrateVma, copies: DmirrorCopyList): void {
    const m = this.m;
    const ps = m.pages;
    const { src, dst } = args;
    const npages = args.npages;
    for (let i = 0; i < npages; ) {
      const s = src[i] as number;
      if (!hasF(s, MIGRATE_PFN.MIGRATE)) {
        i++;
        continue;
      }
      const isLarge = hasF(s, MIGRATE_PFN.COMPOUND);
      const write = hasF(s, MIGRATE_PFN.WRITE) ? MIGRATE_PFN.WRITE : 0;
      // spage < 0: a pte_none hole or the zero page (allocate and clear).
      const spage = migratePfnToPfn(s);
      if (spage >= 0 && (ps.flags[spage] as number) & PG.zoneDevice) {
        i++; // WARN in the kernel: "page already in device"
        continue;
      }
      let dpage: number;
      if (this.flags & HMM_DMIRROR_FLAG_FAIL_ALLOC) {
        this.flags &= ~HMM_DMIRROR_FLAG_FAIL_ALLOC;
        dpage = -1;
      } else dpage = this.mdevice.devmemAllocPage(this, isLarge);
      if (dpage < 0) {
        if (!isLarge) {
          i++;
          continue;
        }
        const nr = spage < 0 ? HPAGE_PMD_NR : ps.folioNrPages(ps.compoundHead(spage));
        for (let j = 0; j < nr && i < npages; j++) {
          const d = this.mdevice.devmemAllocPage(this, false);
          if (d < 0) return; // the kernel would dereference NULL; leave the rest undecided
          dst[i] = migratePfn(d) + write;
          copies.add(d, spage >= 0 ? spage + j : -1, 1);
          i++;
        }
        continue;
      }
      dst[i] = migratePfn(dpage) + write;
      if (isLarge) {
        dst[i] = (dst[i] as number) + MIGRATE_PFN.COMPOUND;
        copies.add(dpage, spage, HPAGE_PMD_NR);
        i += HPAGE_PMD_NR;
        continue;
      }
      copies.add(dpage, spage, 1);
      i++;
    }
  }

  /**
   * Map the pages that migrated into the device page table.
   * @param args - after migrateVmaPages.
   * @see dmirror_migrate_finalize_and_map
   */
  private migrateFinalizeAndMap(args: MigrateVma): void {
    const { src, dst } = args;
    const u0 = args.start / PAGE_SIZE;
    const n = (args.end - args.start) / PAGE_SIZE;
    for (let i = 0; i < n; i++) {
      if (!hasF(src[i] as number, MIGRATE_PFN.MIGRATE)) continue;
      const d = dst[i] as number;
      const dpage = migratePfnToPfn(d);
      if (dpage < 0) continue;
      const nr = hasF(d, MIGRATE_PFN.COMPOUND) ? this.m.pages.folioNrPages(dpage) : 1;
      const tag = hasF(d, MIGRATE_PFN.WRITE) ? DPT_XA_TAG_WRITE : DPT_XA_TAG_READ;
      this.pt.storeRange(u0 + i, dpage, nr, tag);
      i += nr - 1;
    }
  }

  /**
   * Migrate `[addr, addr + npages pages)` to device memory in 512-page windows, without the
   * bounce read of MIGRATE_TO_DEV (the part a policy or a benchmark needs).
   * @param addr - page aligned. @param npages - > 0.
   * @returns 0, -EINVAL (no VMA / no VM_READ / exited mm; the windows before it did migrate), or
   *   the errno of a refused migrate_vma_setup.
   * @see dmirror_migrate_to_device (its loop)
   */
  migrateRangeToDevice(addr: number, npages: number): number {
    const m = this.m;
    const mm = this.mm;
    if (mm.dead) return EINVAL;
    const end = addr + npages * PAGE_SIZE;
    for (let a = addr, next = addr; a < end; a = next) {
      const vma = mm.findVma(a);
      if (vma === undefined || !(vma.flags & VM.READ)) return EINVAL;
      next = Math.min(end, a + PTRS_PER_PTE * PAGE_SIZE, vma.end);
      const args: MigrateVma = {
        mm,
        vma,
        src: this.migSrc,
        dst: this.migDst,
        start: a,
        end: next,
        pgmapOwner: this.mdevice,
        flags: MIGRATE_VMA_SELECT.SYSTEM | MIGRATE_VMA_SELECT.COMPOUND,
        cpages: 0,
        npages: 0,
      };
      try {
        m.migrate.migrateVmaSetup(args);
      } catch (e) {
        if (e instanceof HmmError) return e.errno;
        throw e;
      }
      this.migrateAllocAndCopy(args);
      m.migrate.migrateVmaPages(args);
      this.migrateFinalizeAndMap(args);
      m.migrate.migrateVmaFinalize(args);
    }
    return 0;
  }

  /**
   * HMM_DMIRROR_MIGRATE_TO_DEV: migrate, then read the range back from the device page table
   * (-ENOENT if a page is not there, e.g. shared memory holes or another device's pages).
   * @param cmd - the command. @returns 0 or a negative errno.
   * @see dmirror_migrate_to_device
   */
  migrateToDevice(cmd: HmmDmirrorCmd): number {
    const start = cmd.addr;
    const size = cmd.npages * PAGE_SIZE;
    let ret = this.migrateRangeToDevice(start, cmd.npages);
    if (ret) return ret;
    const bounce: Bounce = { ptr: new Uint8Array(size), addr: start, cpages: 0 };
    ret = this.doRead(start, start + size, bounce);
    if (ret === 0) {
      if (!(cmd.ptr instanceof Uint8Array) || cmd.ptr.length < size) ret = EFAULT;
      else cmd.ptr.set(bounce.ptr);
    }
    cmd.cpages = bounce.cpages;
    return ret;
  }

  // ------------------------------------------------------------------ migration to system memory

  /**
   * Allocate system pages for each collected device page (a THP when the device folio is one,
   * with a per-page fallback), erase the device page table entries, copy.
   * @param args - after migrateVmaSetup.
   * @returns 0 or VM_FAULT_OOM (every destination allocated for the failing entry is released).
   * @see dmirror_devmem_fault_alloc_and_copy
   */
  devmemFaultAllocAndCopy(args: MigrateVma): number {
    const copies = this.copies;
    try {
      return this.devmemFaultAlloc(args, copies);
    } finally {
      copies.flush(this.m.contents);
    }
  }

  private devmemFaultAlloc(args: MigrateVma, copies: DmirrorCopyList): number {
    const m = this.m;
    const ps = m.pages;
    const refs = m.mm.refs;
    const { src, dst } = args;
    const npages = args.npages;
    let addr = args.start;
    for (let i = 0; i < npages; ) {
      const s = src[i] as number;
      const spage = migratePfnToPfn(s);
      if (spage < 0 || !hasF(s, MIGRATE_PFN.MIGRATE)) {
        addr += PAGE_SIZE;
        i++;
        continue;
      }
      if (!((ps.flags[spage] as number) & PG.zoneDevice)) {
        addr += PAGE_SIZE; // WARN_ON in the kernel
        i++;
        continue;
      }
      const shead = ps.compoundHead(spage);
      const order = (ps.flags[shead] as number) & PG.head ? (ps.order[shead] as number) : 0;
      const n = 1 << order;
      let d = order ? MIGRATE_PFN.COMPOUND : 0;
      if (hasF(s, MIGRATE_PFN.WRITE)) d += MIGRATE_PFN.WRITE;
      let dpage: number;
      if (this.flags & HMM_DMIRROR_FLAG_FAIL_ALLOC) {
        this.flags &= ~HMM_DMIRROR_FLAG_FAIL_ALLOC;
        if (d & MIGRATE_PFN.COMPOUND) d -= MIGRATE_PFN.COMPOUND;
        dpage = -1;
      } else if (order) dpage = m.alloc.allocPages(order, GFP.TRANSHUGE | GFP.MOVABLE);
      else dpage = m.alloc.allocPages(0, GFP.MOVABLE);
      if (dpage < 0 && !order) return VM_FAULT.OOM;
      if (dpage >= 0) {
        refs.trylockPage(dpage);
        d += migratePfn(dpage);
      }
      dst[i] = d;
      if (dpage >= 0) {
        // One destination for the whole folio: erase the mirror entries, copy in one run.
        const u = addr / PAGE_SIZE;
        if (n === 1) this.pt.erase(u);
        else this.pt.eraseRange(u, u + n);
        addr += n * PAGE_SIZE;
        copies.add(dpage, spage, n);
        i += n;
        continue;
      }
      // The large allocation failed: try with base pages, one per subpage.
      for (let j = 0; j < n; j++) {
        const p = m.alloc.allocPages(0, GFP.MOVABLE);
        if (p < 0) {
          // Unlock and free what was allocated; clear the rest so pages/finalize skip them.
          for (let k = 0; k < j; k++) {
            const f = migratePfnToPfn(dst[i + k] as number);
            refs.unlockPage(f);
            refs.putPage(f);
          }
          for (let k = j; k < n; k++) dst[i + k] = 0;
          return VM_FAULT.OOM;
        }
        refs.trylockPage(p);
        dst[i + j] = migratePfn(p);
        this.pt.erase(addr / PAGE_SIZE);
        addr += PAGE_SIZE;
      }
      // Every subpage has a destination: queue their copies (none were queued if one failed).
      for (let j = 0; j < n; j++) copies.add(migratePfnToPfn(dst[i + j] as number), spage + j, 1);
      i += n;
    }
    return 0;
  }

  /**
   * HMM_DMIRROR_MIGRATE_TO_SYS: migrate this device's pages of the range back to system memory.
   * `cpages` counts the src entries that are VALID and still MIGRATE after migrateVmaPages (a
   * whole-THP entry counts once, as in the kernel).
   * @param cmd - the command. @returns 0, -EINVAL (no VMA / no VM_READ), -ENOMEM.
   * @see dmirror_migrate_to_system
   */
  migrateToSystem(cmd: HmmDmirrorCmd): number {
    const m = this.m;
    const mm = this.mm;
    if (mm.dead) return EINVAL;
    const start = cmd.addr;
    const end = start + cmd.npages * PAGE_SIZE;
    cmd.cpages = 0;
    for (let a = start, next = start; a < end; a = next) {
      const vma = mm.findVma(a);
      if (vma === undefined || !(vma.flags & VM.READ)) return EINVAL;
      next = Math.min(end, a + PTRS_PER_PTE * PAGE_SIZE, vma.end);
      const args: MigrateVma = {
        mm,
        vma,
        src: this.migSrc,
        dst: this.migDst,
        start: a,
        end: next,
        pgmapOwner: this.mdevice,
        flags: this.mdevice.selectDevice | MIGRATE_VMA_SELECT.COMPOUND,
        cpages: 0,
        npages: 0,
      };
      try {
        m.migrate.migrateVmaSetup(args);
      } catch (e) {
        if (e instanceof HmmError) return e.errno;
        throw e;
      }
      if (this.devmemFaultAllocAndCopy(args)) {
        m.migrate.migrateVmaFinalize(args);
        return ENOMEM;
      }
      m.migrate.migrateVmaPages(args);
      for (let i = 0; i < args.npages; i++) {
        const s = args.src[i] as number;
        if (hasF(s, MIGRATE_PFN.VALID) && hasF(s, MIGRATE_PFN.MIGRATE)) cmd.cpages++;
        if (hasF(s, MIGRATE_PFN.COMPOUND)) i += HPAGE_PMD_NR - 1; // a folio's entry; its tails are zero
      }
      m.migrate.migrateVmaFinalize(args);
    }
    return 0;
  }

  // ------------------------------------------------------------------ snapshot, exclusive

  /**
   * Encode one hmm entry as an HMM_DMIRROR_PROT_* byte.
   * @param entry - an hmmRangeFault output entry. @returns the byte.
   * @see dmirror_mkentry
   */
  mkentry(entry: number): number {
    const low = entry % 256;
    if (low & HMM_PFN.ERROR) return HMM_DMIRROR_PROT_ERROR;
    if (!(low & HMM_PFN.VALID)) return HMM_DMIRROR_PROT_NONE;
    const m = this.m;
    const page = hmmPfnToPfn(entry);
    const pg = m.memremap.pgmapOf(page);
    let perm: number;
    if (pg?.type === MEMORY_DEVICE_PRIVATE) {
      perm = pg.owner === this.mdevice ? HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL : HMM_DMIRROR_PROT_DEV_PRIVATE_REMOTE;
    } else if (pg?.type === MEMORY_DEVICE_COHERENT) {
      perm = pg.owner === this.mdevice ? HMM_DMIRROR_PROT_DEV_COHERENT_LOCAL : HMM_DMIRROR_PROT_DEV_COHERENT_REMOTE;
    } else if (page === m.mm.zeroPfn) perm = HMM_DMIRROR_PROT_ZERO;
    else perm = HMM_DMIRROR_PROT_NONE;
    perm |= low & HMM_PFN.WRITE ? HMM_DMIRROR_PROT_WRITE : HMM_DMIRROR_PROT_READ;
    if (hmmPfnToMapOrder(entry) === HPAGE_PMD_ORDER) perm |= HMM_DMIRROR_PROT_PMD;
    return perm;
  }

  /**
   * Snapshot one window under a temporary interval notifier (its callback only bumps the sequence).
   * @see dmirror_range_snapshot
   */
  private async rangeSnapshot(range: HmmRange, perm: Uint8Array): Promise<number> {
    const m = this.m;
    range.notifier = mmuIntervalNotifierInsert(this.mm, range.start, range.end - range.start, {
      invalidate: (sub, _range, curSeq) => {
        mmuIntervalSetSeq(sub, curSeq);
        return true;
      },
    });
    try {
      const timeout = m.clock.now + HMM_RANGE_DEFAULT_TIMEOUT * 1e6;
      for (let tries = 0; ; tries++) {
        if (m.clock.now > timeout) return EBUSY;
        if (tries > RANGE_FAULT_MAX_RETRIES) {
          throw new BugError("dmirror-range-fault-livelock", `snapshot retried ${tries} times without virtual time passing`);
        }
        range.notifierSeq = mmuIntervalReadBegin(range.notifier);
        const ret = await hmmRangeFault(m.mm, range);
        if (ret) {
          if (ret === EBUSY) continue;
          return ret;
        }
        if (mmuIntervalReadRetry(range.notifier, range.notifierSeq)) continue;
        break;
      }
      const n = (range.end - range.start) / PAGE_SIZE;
      for (let i = 0; i < n; i++) perm[i] = this.mkentry(range.hmmPfns[i] as number);
      return 0;
    } finally {
      mmuIntervalNotifierRemove(range.notifier);
    }
  }

  /**
   * HMM_DMIRROR_SNAPSHOT: one HMM_DMIRROR_PROT_* byte per page into `ptr`, in 32-page windows,
   * without faulting anything in.
   * @param cmd - the command. @returns 0 or a negative errno.
   * @see dmirror_snapshot
   */
  async snapshot(cmd: HmmDmirrorCmd): Promise<number> {
    if (this.mm.dead) return EINVAL;
    const start = cmd.addr;
    const end = start + cmd.npages * PAGE_SIZE;
    const perm = new Uint8Array(DMIRROR_FAULT_WINDOW);
    const range: HmmRange = {
      notifier: this.notifier,
      notifierSeq: 0,
      start: 0,
      end: 0,
      hmmPfns: new Float64Array(DMIRROR_FAULT_WINDOW),
      defaultFlags: 0,
      pfnFlagsMask: 0,
      devPrivateOwner: this.mdevice,
    };
    let uptr = 0;
    for (let addr = start, next = start; addr < end; addr = next) {
      next = Math.min(addr + DMIRROR_FAULT_WINDOW * PAGE_SIZE, end);
      range.start = addr;
      range.end = next;
      const ret = await this.rangeSnapshot(range, perm);
      if (ret) return ret;
      const n = (next - addr) / PAGE_SIZE;
      if (!(cmd.ptr instanceof Uint8Array) || cmd.ptr.length < uptr + n) return EFAULT;
      cmd.ptr.set(perm.subarray(0, n), uptr);
      cmd.cpages += n;
      uptr += n;
    }
    return 0;
  }

  /**
   * HMM_DMIRROR_CHECK_EXCLUSIVE: -EPERM if any entry of `[start, end)` is still tagged atomic.
   * @param start - first byte. @param end - one past last. @returns 0 or -EPERM.
   * @see dmirror_check_atomic
   */
  checkAtomic(start: number, end: number): number {
    for (let u = start / PAGE_SIZE; u < end / PAGE_SIZE; u++) if (this.pt.tag(u) === DPT_XA_TAG_ATOMIC) return EPERM;
    return 0;
  }
}

// ------------------------------------------------------------------------------------------------
// Module

/**
 * The dmirror module: its devices, as `insmod test_hmm.ko` creates them.
 * @see hmm_dmirror_init, hmm_dmirror_exit
 */
export class DmirrorModule {
  /** Devices by number (`/dev/hmm_dmirrorN`). */
  readonly devices: DmirrorDevice[] = [];
  private loaded = true;

  /** @param machine - the machine the module is loaded into. */
  private constructor(
    /** The machine the module is loaded into. */
    readonly machine: Machine,
  ) {}

  /**
   * Load the module on a machine: devices 0 and 1 (device-private), and 2 and 3
   * (device-coherent) unless `opts.coherent` is false. Each device gets its first chunk.
   * @param machine - the machine. @param opts - see {@link DmirrorOptions}.
   * @returns the module.
   * @throws HmmError EINVAL naming a bad option (`opts.chunkPages`, `opts.maxChunks`, `opts.coherent`).
   * @see hmm_dmirror_init, dmirror_device_init
   * @example
   * ```ts
   * const m = Machine.create({ ramMiB: [256] });
   * const mod = DmirrorModule.load(m);
   * const t = m.mm.spawn();
   * const fd = mod.open(0, t);
   * // ... fd.ioctl(HMM_DMIRROR_MIGRATE_TO_DEV, cmd) ...
   * fd.close();
   * mod.unload();
   * ```
   */
  static load(machine: Machine, opts: DmirrorOptions = {}): DmirrorModule {
    if (opts === null || typeof opts !== "object") throw new HmmError("EINVAL", "opts: an object", "opts");
    const chunkPages = opts.chunkPages ?? DEVMEM_CHUNK_PAGES;
    if (!Number.isInteger(chunkPages) || chunkPages <= 0 || chunkPages % HPAGE_PMD_NR !== 0) {
      throw new HmmError("EINVAL", `opts.chunkPages: a positive multiple of ${HPAGE_PMD_NR}, got ${chunkPages}`, "opts.chunkPages");
    }
    const maxChunks = opts.maxChunks ?? Number.POSITIVE_INFINITY;
    if (maxChunks !== Number.POSITIVE_INFINITY && (!Number.isInteger(maxChunks) || maxChunks < 1 || maxChunks > 2 ** 20)) {
      throw new HmmError("EINVAL", `opts.maxChunks: an integer in 1..2^20, got ${maxChunks}`, "opts.maxChunks");
    }
    const coherent = opts.coherent ?? true;
    if (typeof coherent !== "boolean") throw new HmmError("EINVAL", "opts.coherent: a boolean", "opts.coherent");
    const mod = new DmirrorModule(machine);
    const types = [HMM_DMIRROR_MEMORY_DEVICE_PRIVATE, HMM_DMIRROR_MEMORY_DEVICE_PRIVATE];
    if (coherent) types.push(HMM_DMIRROR_MEMORY_DEVICE_COHERENT, HMM_DMIRROR_MEMORY_DEVICE_COHERENT);
    types.forEach((type, id) => {
      const d = new DmirrorDevice(machine, id, type, chunkPages, maxChunks);
      d.init();
      mod.devices.push(d);
    });
    return mod;
  }

  /**
   * Open `/dev/hmm_dmirror<unit>` as `task`.
   * @param unit - device number. @param task - a live task.
   * @returns the open file.
   * @throws HmmError ENODEV if the device does not exist (e.g. coherent devices not loaded);
   *   EINVAL if the module was unloaded or the task exited.
   * @see hmm_open in hmm-tests.c, dmirror_fops_open
   */
  open(unit: number, task: Task): DmirrorFile {
    if (!this.loaded) throw new HmmError("EINVAL", "the dmirror module was unloaded", "module");
    const d = this.devices[unit];
    if (d === undefined) throw new HmmError("ENODEV", `no /dev/hmm_dmirror${unit}`, "unit");
    return d.open(task);
  }

  /**
   * Unload: close every open file, then evict and unregister every device's memory. Idempotent.
   * @see hmm_dmirror_exit, dmirror_device_release
   */
  unload(): void {
    if (!this.loaded) return;
    this.loaded = false;
    for (const d of this.devices) {
      for (const f of [...d.openFiles]) f.close();
      d.removeChunks();
    }
  }
}
