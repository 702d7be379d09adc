/**
 * nouveau_dmem: a GPU's VRAM as device-private memory — 2 MiB chunks, free lists, migration to
 * VRAM and back to system memory with the copy engine, and eviction when VRAM is full.
 *
 * Theory of operation
 * -------------------
 * Memory. The GPU's VRAM region (device-emu `Vram`) is handed to the kernel with memremapPages
 * (MEMORY_DEVICE_PRIVATE) in sections of {@link NOUVEAU_DMEM_SECTION_CHUNKS} chunks of 2 MiB, as
 * nouveau_dmem_chunk_alloc registers `NR_CHUNKS` = 128 chunks per dev_pagemap. The pgmap owner is
 * the GPU's owner identity: its own, or the owner group it shares with peers (drm_pagemap's
 * owner groups), chosen by the module. A chunk is FREE, cut into 4 KiB pages (PAGES), or one
 * 2 MiB folio (FOLIO); it is claimed from device-emu's VRAM bookkeeping while not FREE, split
 * lazily and merged eagerly (UVM PMM: "split lazily, merge eagerly"): when its last page is freed
 * it becomes FREE again. Free lists: a stack of free page offsets per chunk, a stack of chunks
 * with free pages, and a stack of FREE chunks (the 2 MiB free list). Per VRAM page the driver
 * keeps the VA and GPU VA space that made it resident (its reverse map, for eviction policies).
 * All of it is typed arrays; a page is a number.
 *
 * Allocation initialises the page with zoneDevicePageInit / zoneDeviceFolioInit (refcount 1,
 * locked); the core's `folioFree` op returns it to the free lists. LRU: every allocation stamps
 * its chunk with a sequence number, so the least recently allocated chunk is UVM's USED-list head.
 *
 * Copies. Every byte moves on the GPU's copy engines (no CPU copy): system pages are DMA-mapped
 * through the GPU's IOMMU (DMA_TO_DEVICE / DMA_FROM_DEVICE), one descriptor per page or per
 * contiguous run (IOVA- and VRAM-contiguous pages are merged, as one nvc0b5_migrate_copy launch
 * copies a run), peer pages are read over the peer aperture (PEER→VID, drm_pagemap's
 * copy_to_devmem). Pages that were never populated are cleared in VRAM (nvc0b5_migrate_clear);
 * device-emu has no memset descriptor, so the clear is done on the device's contents at
 * allocation and costs no virtual time (reported as a missing device-emu feature). One fence per
 * window; the driver awaits it before migrate_vma_pages (the core requires the copy complete
 * before pages/finalize; nouveau calls migrate_vma_pages before nouveau_fence_wait, which is
 * equivalent because finalize follows the wait). IOVAs are unmapped after the fence in
 * descending order, so the IOMMU's LIFO free list hands them out ascending next time and runs stay
 * mergeable.
 *
 * Migration to VRAM (`migrateWindow`): migrate_vma_setup over a run of at most 512 pages
 * (SELECT_SYSTEM, plus SELECT_DEVICE_PRIVATE when the GPU is in an owner group so peers' pages
 * are collected), allocate, unmap this GPU's PTEs of the collected pages, copy, wait, pages, map
 * the GPU PTEs, finalize. With peer pages collected the window is all-or-nothing, as
 * drm_pagemap_migrate_to_devmem: -EBUSY unless every page was collected and none is already
 * local; a window whose pages are all local is a no-op.
 *
 * Migration to RAM (`migrateToRam`, the pgmap op): one page, or the whole folio when it is
 * PMD-mapped; allocate a locked system page, DMA-map it, invalidate this GPU's PTE (the driver
 * skips its own MMU_NOTIFY_MIGRATE, as nouveau_svmm_invalidate is called explicitly under
 * svmm->mutex), copy VID→SYS, wait, pages, finalize. cpages == 0 → 0 (someone else migrated it).
 *
 * Eviction (`evict`): the policy picks a chunk (default: least recently allocated) or a set of
 * pages; migrate_device_range / migrate_device_pfns collects them (its CLEAR notifications make
 * every GPU VA space unmap them), system pages are allocated, the copy runs, then
 * migrate_device_pages / finalize. Always to system memory, never to a peer (UVM's rule).
 *
 * Locking: allocation and eviction run under the driver's VRAM mutex (one flow at a time per
 * GPU: fault service, access-counter service, explicit migration). migrateToRam only frees VRAM
 * and takes no lock. Between setup and pages the pages are locked migration entries: CPU faults
 * wait, other migrations skip them.
 *
 * @see drivers/gpu/drm/nouveau/nouveau_dmem.c (nouveau_dmem_chunk_alloc, nouveau_dmem_page_alloc_locked,
 *      nouveau_dmem_migrate_vma, nouveau_dmem_migrate_chunk, nouveau_dmem_migrate_to_ram,
 *      nouveau_dmem_evict_chunk, nvc0b5_migrate_copy), drivers/gpu/drm/drm_pagemap.c
 *      (drm_pagemap_migrate_to_devmem), NVIDIA uvm_pmm_gpu.c
 */
import {
  type DevPagemap,
  type DevPagemapOps,
  ERRNO,
  GFP,
  HPAGE_PMD_NR,
  type Machine,
  MEMORY_DEVICE_PRIVATE,
  MIGRATE_PFN,
  MIGRATE_VMA_SELECT,
  type MigrateVma,
  migratePfn,
  migratePfnToPfn,
  mpfnFlags,
  PAGE_SIZE,
  PG,
  VM,
  VM_FAULT,
  type Vma,
  type VmFault,
} from "@hmmkit/core";
import {
  APERTURE_SYS,
  APERTURE_VID,
  aperturePeer,
  CopyBatch,
  DMA_FROM_DEVICE,
  DMA_TO_DEVICE,
  GPU_PERM_READ,
  GPU_PERM_RWA,
  type GpuDevice,
} from "@hmmkit/device-emu";
import type { EvictionCandidates, EvictionChoice } from "./policy";

/** Pages per chunk: 2 MiB (`DMEM_CHUNK_SIZE` = HPAGE_PMD_SIZE). @see nouveau_dmem.c */
export const NOUVEAU_DMEM_CHUNK_PAGES = 512;
/** Chunks per memremapPages section (`NR_CHUNKS`, 256 MiB). @see nouveau_dmem.c */
export const NOUVEAU_DMEM_SECTION_CHUNKS = 128;
/** Pages per migrate_vma window (`HPAGE_PMD_NR`). @see nouveau_dmem_migrate_vma */
export const NOUVEAU_MIGRATE_WINDOW = 512;

const CHUNK_FREE = 0;
const CHUNK_PAGES = 1;
const CHUNK_FOLIO = 2;

const EBUSY = -ERRNO.EBUSY;
const EIO = -ERRNO.EIO;

function hasF(m: number, f: number): boolean {
  return (mpfnFlags(m) & f) !== 0;
}

/** What the VRAM side needs from its GPU driver (implemented by NouveauDriver). */
export interface DmemHost {
  /** GPU index. */
  readonly index: number;
  /** Machine. */
  readonly machine: Machine;
  /** The device. */
  readonly gpu: GpuDevice;
  /** Owner identity of this GPU's pgmaps (own or group). */
  readonly owner: object;
  /** Whether this GPU shares its owner with peers. */
  readonly grouped: boolean;
  /** Set while this driver runs migrate_vma_setup: its notifiers skip their own MIGRATE events. */
  selfMigrating: number;
  /** GPU index owning a device pfn, or -1. */
  gpuOfPfn(pfn: number): number;
  /** First VRAM pfn of GPU `g`. */
  vramBaseOf(g: number): number;
  /** Unmap this GPU's PTEs of `[va, va + n pages)` in the VA space bound to mm `mmId`, if any. */
  unmapGpu(mmId: number, va: number, n: number): void;
  /** Map VRAM pages in the VA space `instance`: `n` pages from `va` to pfns `pfns[0..n)` (-1 skips). */
  mapVram(instance: number, va: number, pfns: Float64Array, perms: Uint8Array, n: number): void;
  /** Record migration events for thrashing detection. */
  recordMigration(mmId: number, va: number, npages: number, proc: number): void;
  /** Counters. */
  readonly stats: NouveauStats;
  /** Ask the policy which chunk or pages to evict. */
  pickVictim(c: EvictionCandidates, choice: EvictionChoice): number;
}

/**
 * Per-GPU counters of the nouveau-like driver (numbers only; copy with `{ ...stats }`).
 * @see procfs per-processor stats of UVM (num_thrashing, num_pin_remote, …), /proc/vmstat
 */
export interface NouveauStats {
  /** Fault batches serviced. */
  faultBatches: number;
  /** Raw fault entries fetched in those batches. */
  faultEntries: number;
  /** Coalesced faults serviced (one per page and batch). */
  faults: number;
  /** Faults cancelled (no VMA, permission). */
  faultsCancelled: number;
  /** Pages migrated system memory → this GPU's VRAM (DMA copies). */
  pagesToVram: number;
  /** Pages that were never populated and were zero-filled in VRAM. */
  pagesZeroFilled: number;
  /** Pages migrated from a peer GPU's VRAM with a peer copy. */
  pagesFromPeer: number;
  /** Pages migrated this GPU's VRAM → system memory on CPU faults. */
  pagesToRam: number;
  /** Pages pulled to system memory from a GPU outside this GPU's owner group (the staging path). */
  pagesViaSystem: number;
  /** Pages migrated by prefetch (beyond the faulting ones). */
  pagesPrefetched: number;
  /** Pages evicted to system memory. */
  pagesEvicted: number;
  /** Eviction rounds (victim selections). */
  evictions: number;
  /** PTEs mapped to system memory (remote). */
  remoteMaps: number;
  /** PTEs mapped to a peer's VRAM. */
  peerMaps: number;
  /** Remote mappings made because of a PIN decision. */
  pinnedMaps: number;
  /** Pages reported thrashing by the detector and forwarded to this GPU's policy. */
  thrashingEvents: number;
  /** Access-counter notifications received. */
  accessCounterNotifications: number;
  /** Pages migrated because of access-counter notifications. */
  accessCounterMigrations: number;
  /** Peer migrations refused with -EBUSY (all-or-nothing). */
  peerBusy: number;
  /** Copy batches whose fence carried a DMA error. */
  dmaErrors: number;
  /** Copy batches submitted. */
  copyBatches: number;
  /** Copy descriptors submitted. */
  copyDescriptors: number;
}

/**
 * Fresh zeroed counters.
 * @returns a {@link NouveauStats} with every field 0.
 */
export function zeroNouveauStats(): NouveauStats {
  return {
    faultBatches: 0,
    faultEntries: 0,
    faults: 0,
    faultsCancelled: 0,
    pagesToVram: 0,
    pagesZeroFilled: 0,
    pagesFromPeer: 0,
    pagesToRam: 0,
    pagesViaSystem: 0,
    pagesPrefetched: 0,
    pagesEvicted: 0,
    evictions: 0,
    remoteMaps: 0,
    peerMaps: 0,
    pinnedMaps: 0,
    thrashingEvents: 0,
    accessCounterNotifications: 0,
    accessCounterMigrations: 0,
    peerBusy: 0,
    dmaErrors: 0,
    copyBatches: 0,
    copyDescriptors: 0,
  };
}

/** Append a descriptor, merging it into the previous one when both sides continue it. */
function pushRun(b: CopyBatch, sa: number, s: number, da: number, d: number, len: number): void {
  const k = b.count - 1;
  if (
    k >= 0 &&
    b.srcAperture[k] === sa &&
    b.dstAperture[k] === da &&
    (b.srcAddr[k] as number) + (b.length[k] as number) === s &&
    (b.dstAddr[k] as number) + (b.length[k] as number) === d
  ) {
    b.length[k] = (b.length[k] as number) + len;
    return;
  }
  b.push(sa, s, da, d, len);
}

/** Why pages migrate to VRAM: a fault (with its prefetch), access counters, or an explicit request. */
export type MigrationCause = "fault" | "counters" | "explicit";

/** One prepared migrate_vma window of a {@link MigrationBatch}. */
export class WindowJob {
  /** The migrate_vma arguments (its src/dst are this job's). */
  readonly mig: MigrateVma;
  /** Source mpfns. */
  readonly src = new Float64Array(NOUVEAU_MIGRATE_WINDOW);
  /** Destination mpfns. */
  readonly dst = new Float64Array(NOUVEAU_MIGRATE_WINDOW);
  /** Per page: 0 not collected, 1 hole, 2 system, 3 local, 4 peer. */
  readonly kind = new Int8Array(NOUVEAU_MIGRATE_WINDOW);
  /** VA space to map into. */
  instance = 0;
  /** Why. */
  cause: MigrationCause = "fault";
  constructor() {
    this.mig = {
      mm: undefined as unknown as MigrateVma["mm"],
      vma: undefined as unknown as Vma,
      src: this.src,
      dst: this.dst,
      start: 0,
      end: 0,
      pgmapOwner: undefined,
      flags: 0,
      cpages: 0,
      npages: 0,
    };
  }
}

/**
 * Windows prepared together: their copies share one push (one fence), as UVM's fault service
 * adds every block's copies to the batch tracker and waits once.
 */
export class MigrationBatch {
  /** Prepared windows (first `njobs`). */
  readonly jobs: WindowJob[] = [];
  /** Windows in use. */
  njobs = 0;
  /** The copy descriptors. */
  readonly copy = new CopyBatch(NOUVEAU_MIGRATE_WINDOW);
  /** DMA addresses to unmap after the fence. */
  iova = new Float64Array(NOUVEAU_MIGRATE_WINDOW);
  /** Their sizes in pages. */
  iovaLen = new Float64Array(NOUVEAU_MIGRATE_WINDOW);
  /** Entries used. */
  niova = 0;
  /**
   * Record a DMA mapping to undo after the fence.
   * @param io - DMA address. @param n - pages.
   */
  pushIova(io: number, n: number): void {
    if (this.niova === this.iova.length) {
      const a = new Float64Array(this.iova.length * 2);
      a.set(this.iova);
      this.iova = a;
      const l = new Float64Array(this.iovaLen.length * 2);
      l.set(this.iovaLen);
      this.iovaLen = l;
    }
    this.iova[this.niova] = io;
    this.iovaLen[this.niova++] = n;
  }
}

/** Result of migrating windows to VRAM. */
export interface WindowResult {
  /** 0, -EBUSY (peer all-or-nothing), or -EIO (DMA error). */
  ret: number;
  /** Pages migrated into VRAM by this window (zero-filled, from system memory or from a peer). */
  migrated: number;
  /** Of those, pages copied from a peer. */
  fromPeer: number;
}

/**
 * One GPU's device memory: chunks, allocator, migrations and eviction.
 *
 * Context: synchronous bookkeeping; `migrateWindow`, `migrateToRam`, `evict` await DMA fences.
 * @see nouveau_dmem.c (struct nouveau_dmem, struct nouveau_dmem_chunk)
 */
export class NouveauDmem {
  /** The pgmaps (sections) registered for the VRAM. */
  readonly pgmaps: DevPagemap[] = [];
  /** The pgmap callbacks. @see nouveau_dmem_pagemap_ops */
  readonly ops: DevPagemapOps;
  /** Number of 2 MiB chunks. */
  readonly nchunks: number;
  /** First VRAM pfn. */
  readonly basePfn: number;
  /** Per chunk: FREE (0), PAGES (1), FOLIO (2). */
  readonly chunkState: Uint8Array;
  /** Per chunk: pages in use. @see nouveau_dmem_chunk.callocated */
  readonly chunkUsed: Uint16Array;
  /** Per chunk: sequence of its last allocation (LRU). */
  readonly chunkSeq: Float64Array;
  /** Per chunk: virtual time of its last allocation. */
  readonly chunkNs: Float64Array;
  /** Per VRAM page: the VA it backs, or -1. */
  readonly pageVa: Float64Array;
  /** Per VRAM page: GPU VA space id that made it resident, or 0. */
  readonly pageInstance: Uint32Array;
  private readonly freeOff: Uint16Array;
  private readonly freeTop: Uint16Array;
  private readonly partial: Int32Array;
  private nPartial = 0;
  private readonly inPartial: Uint8Array;
  private readonly freeChunks: Int32Array;
  private nFreeChunks = 0;
  private allocSeq = 0;
  /** Pages currently free (in FREE chunks and on page free lists). */
  freePages: number;
  private removing = false;
  // Scratch (one flow at a time under the VRAM mutex; migrateToRam has its own).
  private readonly mbatch = new MigrationBatch();
  private readonly mapPfns = new Float64Array(NOUVEAU_MIGRATE_WINDOW);
  private readonly mapPerms = new Uint8Array(NOUVEAU_MIGRATE_WINDOW);
  private readonly cand: {
    count: number;
    chunk: Uint32Array;
    lastAllocSeq: Float64Array;
    lastAllocNs: Float64Array;
    usedPages: Uint16Array;
    chunkBasePfn: number;
    pageVa: Float64Array;
    pageInstance: Uint32Array;
  };
  private readonly choice: EvictionChoice;

  /**
   * Register the GPU's VRAM as device-private memory (all sections, chunks FREE).
   * @param host - the GPU driver.
   * @throws HmmError from memremapPages (EEXIST if the VRAM is already remapped).
   * Context: synchronous.
   * @see nouveau_dmem_init, nouveau_dmem_chunk_alloc (memremap_pages)
   */
  constructor(private readonly host: DmemHost) {
    const vram = host.gpu.vram;
    const m = host.machine;
    this.basePfn = vram.basePfn;
    this.nchunks = vram.npages / NOUVEAU_DMEM_CHUNK_PAGES;
    this.ops = {
      folioFree: (head, order) => this.folioFree(head, order),
      folioSplit: () => {},
      migrateToRam: (vmf) => this.migrateToRam(vmf),
    };
    for (let c = 0; c < this.nchunks; c += NOUVEAU_DMEM_SECTION_CHUNKS) {
      const n = Math.min(NOUVEAU_DMEM_SECTION_CHUNKS, this.nchunks - c) * NOUVEAU_DMEM_CHUNK_PAGES;
      this.pgmaps.push(
        m.memremap.memremapPages({
          type: MEMORY_DEVICE_PRIVATE,
          owner: host.owner,
          ops: this.ops,
          range: { startPfn: this.basePfn + c * NOUVEAU_DMEM_CHUNK_PAGES, npages: n },
          name: `nouveau${host.index}.dmem${this.pgmaps.length}`,
        }),
      );
    }
    const n = this.nchunks;
    this.chunkState = new Uint8Array(n);
    this.chunkUsed = new Uint16Array(n);
    this.chunkSeq = new Float64Array(n);
    this.chunkNs = new Float64Array(n);
    this.pageVa = new Float64Array(n * NOUVEAU_DMEM_CHUNK_PAGES).fill(-1);
    this.pageInstance = new Uint32Array(n * NOUVEAU_DMEM_CHUNK_PAGES);
    this.freeOff = new Uint16Array(n * NOUVEAU_DMEM_CHUNK_PAGES);
    this.freeTop = new Uint16Array(n);
    this.partial = new Int32Array(n);
    this.inPartial = new Uint8Array(n);
    this.freeChunks = new Int32Array(n);
    for (let c = n - 1; c >= 0; c--) this.freeChunks[this.nFreeChunks++] = c;
    this.freePages = n * NOUVEAU_DMEM_CHUNK_PAGES;
    this.cand = {
      count: 0,
      chunk: new Uint32Array(n),
      lastAllocSeq: new Float64Array(n),
      lastAllocNs: new Float64Array(n),
      usedPages: new Uint16Array(n),
      chunkBasePfn: this.basePfn,
      pageVa: this.pageVa,
      pageInstance: this.pageInstance,
    };
    this.choice = { pfns: new Float64Array(n * NOUVEAU_DMEM_CHUNK_PAGES), count: 0 };
  }

  /** Free 2 MiB chunks (the folio free list). */
  get freeChunkCount(): number {
    return this.nFreeChunks;
  }

  /** Pages in use. */
  get usedPages(): number {
    return this.nchunks * NOUVEAU_DMEM_CHUNK_PAGES - this.freePages;
  }

  // ------------------------------------------------------------------ allocator

  private takeChunk(state: number): number {
    if (this.nFreeChunks === 0) return -1;
    const c = this.freeChunks[--this.nFreeChunks] as number;
    this.chunkState[c] = state;
    this.host.gpu.vram.claim(this.basePfn + c * NOUVEAU_DMEM_CHUNK_PAGES, NOUVEAU_DMEM_CHUNK_PAGES);
    return c;
  }

  private stamp(c: number): void {
    this.chunkSeq[c] = ++this.allocSeq;
    this.chunkNs[c] = this.host.machine.clock.now;
  }

  /**
   * Allocate one 4 KiB VRAM page, initialised (refcount 1, locked), or -1 when VRAM is full
   * (the caller evicts first).
   * @returns the pfn, or -1.
   * Context: synchronous.
   * @see nouveau_dmem_page_alloc_locked
   */
  allocPage(): number {
    let c = -1;
    while (this.nPartial > 0) {
      const k = this.partial[this.nPartial - 1] as number;
      if (this.chunkState[k] === CHUNK_PAGES && (this.freeTop[k] as number) > 0) {
        c = k;
        break;
      }
      this.inPartial[k] = 0;
      this.nPartial--;
    }
    if (c < 0) {
      c = this.takeChunk(CHUNK_PAGES);
      if (c < 0) return -1;
      const base = c * NOUVEAU_DMEM_CHUNK_PAGES;
      for (let i = 0; i < NOUVEAU_DMEM_CHUNK_PAGES; i++) this.freeOff[base + i] = NOUVEAU_DMEM_CHUNK_PAGES - 1 - i;
      this.freeTop[c] = NOUVEAU_DMEM_CHUNK_PAGES;
      this.partial[this.nPartial++] = c;
      this.inPartial[c] = 1;
    }
    const top = (this.freeTop[c] as number) - 1;
    this.freeTop[c] = top;
    const off = this.freeOff[c * NOUVEAU_DMEM_CHUNK_PAGES + top] as number;
    this.chunkUsed[c] = (this.chunkUsed[c] as number) + 1;
    this.freePages--;
    this.stamp(c);
    const pfn = this.basePfn + c * NOUVEAU_DMEM_CHUNK_PAGES + off;
    this.host.machine.memremap.zoneDevicePageInit(pfn);
    return pfn;
  }

  /**
   * Allocate a 2 MiB VRAM folio (a whole FREE chunk), initialised, or -1.
   * @returns the head pfn, or -1.
   * Context: synchronous.
   * @see nouveau_dmem_page_alloc_locked (is_large), zone_device_folio_init
   */
  allocFolio(): number {
    const c = this.takeChunk(CHUNK_FOLIO);
    if (c < 0) return -1;
    this.chunkUsed[c] = NOUVEAU_DMEM_CHUNK_PAGES;
    this.freePages -= NOUVEAU_DMEM_CHUNK_PAGES;
    this.stamp(c);
    const head = this.basePfn + c * NOUVEAU_DMEM_CHUNK_PAGES;
    this.host.machine.memremap.zoneDeviceFolioInit(head, 9);
    return head;
  }

  /**
   * The `folio_free` op: put the folio's pages back on the free lists; a chunk whose last page
   * returns becomes FREE (merged).
   * @param head - folio head. @param order - 0 or 9.
   * Context: called by the core when the last reference goes.
   * @see nouveau_dmem_folio_free (page_free before 2025)
   */
  folioFree(head: number, order: number): void {
    const rel = head - this.basePfn;
    const c = Math.floor(rel / NOUVEAU_DMEM_CHUNK_PAGES);
    const n = 2 ** order;
    this.pageVa.fill(-1, rel, rel + n);
    this.pageInstance.fill(0, rel, rel + n);
    this.freePages += n;
    const used = (this.chunkUsed[c] as number) - n;
    this.chunkUsed[c] = used;
    if (this.chunkState[c] === CHUNK_PAGES) {
      const top = this.freeTop[c] as number;
      this.freeOff[c * NOUVEAU_DMEM_CHUNK_PAGES + top] = rel - c * NOUVEAU_DMEM_CHUNK_PAGES;
      this.freeTop[c] = top + 1;
      if (this.inPartial[c] === 0 && used > 0) {
        this.partial[this.nPartial++] = c;
        this.inPartial[c] = 1;
      }
    }
    if (used === 0) {
      this.chunkState[c] = CHUNK_FREE;
      this.freeTop[c] = 0;
      this.host.gpu.vram.release(this.basePfn + c * NOUVEAU_DMEM_CHUNK_PAGES, NOUVEAU_DMEM_CHUNK_PAGES);
      if (!this.removing) this.freeChunks[this.nFreeChunks++] = c;
    }
  }

  /** Release an allocated, locked destination that was not used (unlock + put → folioFree). */
  private dropDst(pfn: number): void {
    const refs = this.host.machine.mm.refs;
    refs.unlockPage(pfn);
    refs.putPage(pfn);
  }

  // ------------------------------------------------------------------ migration to VRAM

  /**
   * Start a migration batch: windows prepared into it share one copy push and one fence.
   * @returns the (reused) batch, emptied.
   * Context: synchronous; one batch at a time per GPU (the caller holds the VRAM mutex).
   * @see uvm_va_block_make_resident with the batch's tracker (service_fault_batch waits once)
   */
  beginBatch(): MigrationBatch {
    const b = this.mbatch;
    b.njobs = 0;
    b.niova = 0;
    b.copy.clear();
    return b;
  }

  /**
   * Prepare one window: migrate_vma_setup over `[start, end)` (at most 512 pages inside `vma`),
   * classify, allocate destinations, unmap this GPU's old PTEs of the migrating pages and queue
   * their copies in `batch`. Pages already here, pages another migration holds, and (without a
   * group) other GPUs' pages are left alone. `writeFault[i]` = 1 marks pages faulted for write:
   * a collected page whose CPU mapping is read-only (COW) is left for the fault path, which breaks
   * COW first.
   * @param batch - from {@link NouveauDmem.beginBatch}.
   * @param args - address space, VMA, range, and the VA space to map into.
   * @param writeFault - per page of the window, or undefined.
   * @param cause - why (counted: access-counter migrations; thrashing events except explicit).
   * @returns 0, or -EBUSY when peers' pages were collected but the window is not all-or-nothing
   *   (drm_pagemap_migrate_to_devmem); the window is then already restored.
   * @throws HmmError EINVAL from migrate_vma_setup for a bad range (a caller bug).
   * Context: synchronous; caller holds the VRAM mutex and has reserved VRAM.
   * @see nouveau_dmem_migrate_vma, nouveau_dmem_migrate_chunk, drm_pagemap_migrate_to_devmem
   */
  prepareWindow(
    batch: MigrationBatch,
    args: { mm: MigrateVma["mm"]; vma: Vma; start: number; end: number; instance: number },
    writeFault: Uint8Array | undefined,
    cause: MigrationCause,
  ): number {
    const h = this.host;
    const m = h.machine;
    const ps = m.pages;
    const gpu = h.gpu;
    const npages = (args.end - args.start) / PAGE_SIZE;
    if (batch.njobs === batch.jobs.length) batch.jobs.push(new WindowJob());
    const job = batch.jobs[batch.njobs] as WindowJob;
    const mig = job.mig;
    mig.mm = args.mm;
    mig.vma = args.vma;
    mig.start = args.start;
    mig.end = args.end;
    mig.pgmapOwner = h.owner;
    mig.flags = MIGRATE_VMA_SELECT.SYSTEM | (h.grouped ? MIGRATE_VMA_SELECT.DEVICE_PRIVATE : 0);
    job.instance = args.instance;
    job.cause = cause;
    h.selfMigrating++;
    try {
      m.migrate.migrateVmaSetup(mig);
    } finally {
      h.selfMigrating--;
    }
    const src = job.src;
    const dst = job.dst;
    const kind = job.kind;
    if (mig.cpages === 0) {
      m.migrate.migrateVmaPages(mig);
      m.migrate.migrateVmaFinalize(mig);
      return 0;
    }
    // Classify: 0 not collected, 1 hole, 2 system, 3 local, 4 peer.
    let local = 0;
    let peers = 0;
    let collected = 0;
    for (let i = 0; i < npages; i++) {
      const s = src[i] as number;
      dst[i] = 0;
      if (!hasF(s, MIGRATE_PFN.MIGRATE)) {
        kind[i] = 0;
        continue;
      }
      collected++;
      const p = migratePfnToPfn(s);
      if (p < 0) kind[i] = 1;
      else if (((ps.flags[p] as number) & PG.zoneDevice) === 0) kind[i] = 2;
      else if (h.gpuOfPfn(p) === h.index) {
        kind[i] = 3;
        local++;
      } else {
        kind[i] = 4;
        peers++;
      }
    }
    if (peers > 0 && (collected !== npages || local > 0)) {
      // All-or-nothing (drm_pagemap): restore everything.
      h.stats.peerBusy++;
      m.migrate.migrateVmaPages(mig);
      m.migrate.migrateVmaFinalize(mig);
      return EBUSY;
    }
    const b = batch.copy;
    const i0 = args.start / PAGE_SIZE;
    const vmaWrite = (args.vma.flags & VM.WRITE) !== 0;
    for (let i = 0; i < npages; i++) {
      const k = kind[i] as number;
      if (k === 0 || k === 3) continue;
      const s = src[i] as number;
      if (k === 2 && writeFault !== undefined && writeFault[i] === 1 && !hasF(s, MIGRATE_PFN.WRITE)) continue;
      const d = this.allocPage();
      if (d < 0) continue;
      const daddr = (d - this.basePfn) * PAGE_SIZE;
      const sp = migratePfnToPfn(s);
      if (k === 1) m.contents.clearPages(d, 1);
      else if (k === 2) {
        const io = gpu.iommu.dmaMapPage(sp, DMA_TO_DEVICE, 1);
        batch.pushIova(io, 1);
        pushRun(b, APERTURE_SYS, io, APERTURE_VID, daddr, PAGE_SIZE);
      } else {
        const g = h.gpuOfPfn(sp);
        pushRun(b, aperturePeer(g), (sp - h.vramBaseOf(g)) * PAGE_SIZE, APERTURE_VID, daddr, PAGE_SIZE);
      }
      const w = hasF(s, MIGRATE_PFN.WRITE) || (k === 1 && vmaWrite);
      dst[i] = migratePfn(d) + (w ? MIGRATE_PFN.WRITE : 0);
      this.pageVa[d - this.basePfn] = (i0 + i) * PAGE_SIZE;
      this.pageInstance[d - this.basePfn] = args.instance;
    }
    // This GPU's own PTEs of the migrating pages (remote mappings) go before the copy.
    for (let i = 0; i < npages; ) {
      if (dst[i] === 0) {
        i++;
        continue;
      }
      let j = i + 1;
      while (j < npages && dst[j] !== 0) j++;
      h.unmapGpu(args.mm.id, args.start + i * PAGE_SIZE, j - i);
      i = j;
    }
    batch.njobs++;
    return 0;
  }

  /**
   * Run a prepared batch: submit its copies (one fence), wait, then per window migrate_vma_pages,
   * map the GPU PTEs of the pages that migrated, and migrate_vma_finalize; DMA-unmap the sources.
   * A DMA error abandons every window of the batch (sources restored, destinations freed).
   * @param batch - the prepared batch.
   * @returns pages migrated and, of those, pages from peers; `ret` -EIO on a DMA error.
   * Context: async (awaits the fence); caller holds the VRAM mutex.
   * @see nouveau_dmem_migrate_chunk (nouveau_fence_new, migrate_vma_pages, nouveau_fence_wait,
   *      nouveau_pfns_map, dma_unmap_page, migrate_vma_finalize)
   */
  async runBatch(batch: MigrationBatch): Promise<WindowResult> {
    const h = this.host;
    const m = h.machine;
    const gpu = h.gpu;
    let err: Error | undefined;
    if (batch.copy.count > 0) {
      h.stats.copyBatches++;
      h.stats.copyDescriptors += batch.copy.count;
      err = await gpu.copy.submit(batch.copy).wait();
      if (err !== undefined) h.stats.dmaErrors++;
    }
    let migrated = 0;
    let fromPeer = 0;
    const st = h.stats;
    const pfns = this.mapPfns;
    const perms = this.mapPerms;
    for (let w = 0; w < batch.njobs; w++) {
      const job = batch.jobs[w] as WindowJob;
      const mig = job.mig;
      const { src, dst, kind } = job;
      const npages = (mig.end - mig.start) / PAGE_SIZE;
      if (err !== undefined) {
        for (let i = 0; i < npages; i++) {
          const d = migratePfnToPfn(dst[i] as number);
          if (d >= 0) this.dropDst(d);
          dst[i] = 0;
        }
      }
      m.migrate.migrateVmaPages(mig);
      let n = 0;
      for (let i = 0; i < npages; i++) {
        const d = dst[i] as number;
        pfns[i] = -1;
        if (d === 0 || !hasF(src[i] as number, MIGRATE_PFN.MIGRATE)) continue;
        pfns[i] = migratePfnToPfn(d);
        perms[i] = hasF(d, MIGRATE_PFN.WRITE) ? GPU_PERM_RWA : GPU_PERM_READ;
        n++;
        const k = kind[i] as number;
        if (k === 1) st.pagesZeroFilled++;
        else if (k === 2) st.pagesToVram++;
        else {
          st.pagesFromPeer++;
          fromPeer++;
        }
      }
      if (n > 0) h.mapVram(job.instance, mig.start, pfns, perms, npages);
      m.migrate.migrateVmaFinalize(mig);
      migrated += n;
      if (job.cause === "counters") st.accessCounterMigrations += n;
      if (n > 0 && job.cause !== "explicit") {
        // Thrashing events: runs of migrated populated pages.
        let runStart = -1;
        for (let i = 0; i <= npages; i++) {
          const ok = i < npages && pfns[i] !== -1 && kind[i] !== 1;
          if (ok && runStart < 0) runStart = i;
          else if (!ok && runStart >= 0) {
            h.recordMigration(mig.mm.id, mig.start + runStart * PAGE_SIZE, i - runStart, 1 + h.index);
            runStart = -1;
          }
        }
      }
    }
    for (let j = batch.niova - 1; j >= 0; j--) gpu.iommu.dmaUnmapPage(batch.iova[j] as number, batch.iovaLen[j] as number);
    batch.njobs = 0;
    batch.niova = 0;
    batch.copy.clear();
    return { ret: err !== undefined ? EIO : 0, migrated, fromPeer };
  }

  /**
   * Migrate one window now ({@link NouveauDmem.prepareWindow} + {@link NouveauDmem.runBatch}).
   * @param args - as prepareWindow. @param writeFault - as prepareWindow. @param cause - as prepareWindow.
   * @returns the result (`ret` -EBUSY or -EIO as above).
   * Context: async; caller holds the VRAM mutex and has reserved VRAM.
   * @see nouveau_dmem_migrate_vma
   */
  async migrateWindow(
    args: { mm: MigrateVma["mm"]; vma: Vma; start: number; end: number; instance: number },
    writeFault: Uint8Array | undefined,
    cause: MigrationCause,
  ): Promise<WindowResult> {
    const b = this.beginBatch();
    const r = this.prepareWindow(b, args, writeFault, cause);
    if (r !== 0) {
      b.njobs = 0;
      return { ret: r, migrated: 0, fromPeer: 0 };
    }
    return this.runBatch(b);
  }

  // ------------------------------------------------------------------ migration to RAM

  /**
   * The `migrate_to_ram` op: a CPU touched one of this GPU's pages. Migrates the page (the whole
   * folio when PMD-mapped) to a system page with a VID→SYS copy.
   * @param vmf - the fault.
   * @returns 0 (also when someone else migrated it), VM_FAULT_SIGBUS (setup refused or DMA
   *   error), VM_FAULT_OOM (no system page).
   * Context: async; the core holds the page locked with a reference.
   * @see nouveau_dmem_migrate_to_ram
   */
  async migrateToRam(vmf: VmFault): Promise<number> {
    const h = this.host;
    const m = h.machine;
    const ps = m.pages;
    const head = ps.compoundHead(vmf.page);
    const order = vmf.pteMapped ? 0 : Math.log2(ps.folioNrPages(head));
    const nr = 2 ** order;
    const start = vmf.address - (vmf.address % (nr * PAGE_SIZE));
    const src = new Float64Array(nr);
    const dst = new Float64Array(nr);
    const args: MigrateVma = {
      mm: vmf.mm,
      vma: vmf.vma,
      start,
      end: start + nr * PAGE_SIZE,
      src,
      dst,
      pgmapOwner: h.owner,
      flags: MIGRATE_VMA_SELECT.DEVICE_PRIVATE | (order ? MIGRATE_VMA_SELECT.COMPOUND : 0),
      faultPage: vmf.page,
      cpages: 0,
      npages: 0,
    };
    h.selfMigrating++;
    try {
      m.migrate.migrateVmaSetup(args);
    } catch {
      return VM_FAULT.SIGBUS;
    } finally {
      h.selfMigrating--;
    }
    if (args.cpages === 0) {
      m.migrate.migrateVmaFinalize(args);
      return 0;
    }
    const b = new CopyBatch(4);
    const iovas: number[] = [];
    const lens: number[] = [];
    let ret = 0;
    let moved = 0;
    for (let i = 0; i < args.npages; i++) {
      const s = src[i] as number;
      const sp = migratePfnToPfn(s);
      if (sp < 0 || !hasF(s, MIGRATE_PFN.MIGRATE)) continue;
      const n = hasF(s, MIGRATE_PFN.COMPOUND) ? ps.folioNrPages(ps.compoundHead(sp)) : 1;
      const dp = n > 1 ? m.alloc.allocPages(9, GFP.TRANSHUGE | GFP.MOVABLE) : m.alloc.allocPages(0, GFP.MOVABLE);
      if (dp < 0) {
        ret = VM_FAULT.OOM;
        break;
      }
      m.mm.refs.trylockPage(dp);
      dst[i] = migratePfn(dp) + (hasF(s, MIGRATE_PFN.WRITE) ? MIGRATE_PFN.WRITE : 0) + (n > 1 ? MIGRATE_PFN.COMPOUND : 0);
      const io = h.gpu.iommu.dmaMapPage(dp, DMA_FROM_DEVICE, n);
      iovas.push(io);
      lens.push(n);
      b.push(APERTURE_VID, (sp - this.basePfn) * PAGE_SIZE, APERTURE_SYS, io, n * PAGE_SIZE);
      moved += n;
    }
    // nouveau_svmm_invalidate under svmm->mutex: this GPU's PTE goes before the copy.
    h.unmapGpu(vmf.mm.id, start, nr);
    let err: Error | undefined;
    if (ret === 0 && b.count > 0) {
      h.stats.copyBatches++;
      h.stats.copyDescriptors += b.count;
      err = await h.gpu.copy.submit(b).wait();
    }
    if (ret !== 0 || err !== undefined) {
      if (err !== undefined) h.stats.dmaErrors++;
      for (let i = 0; i < args.npages; i++) {
        const d = migratePfnToPfn(dst[i] as number);
        if (d >= 0) {
          m.mm.refs.unlockPage(d);
          m.mm.refs.putPage(d);
        }
        dst[i] = 0;
      }
      moved = 0;
      if (ret === 0) ret = VM_FAULT.SIGBUS;
    }
    m.migrate.migrateVmaPages(args);
    for (let j = iovas.length - 1; j >= 0; j--) h.gpu.iommu.dmaUnmapPage(iovas[j] as number, lens[j] as number);
    m.migrate.migrateVmaFinalize(args);
    h.stats.pagesToRam += moved;
    if (moved > 0) h.recordMigration(vmf.mm.id, start, nr, 0);
    return ret;
  }

  // ------------------------------------------------------------------ eviction

  /**
   * Evict until at least `need` pages are free (or nothing more can be evicted).
   * @param need - pages wanted free.
   * @returns the number of pages evicted.
   * Context: async; caller holds the VRAM mutex.
   * @see nouveau_dmem_evict_chunk, uvm_pmm_gpu.c evict_root_chunk
   */
  async reserve(need: number): Promise<number> {
    let evicted = 0;
    let guard = 0;
    while (this.freePages < need && guard++ < this.nchunks * 2) {
      const n = await this.evictOnce();
      if (n === 0) break;
      evicted += n;
    }
    return evicted;
  }

  /**
   * Evict a whole free chunk's worth: need a FREE chunk for a folio.
   * @returns true when a FREE chunk is available.
   * Context: async; caller holds the VRAM mutex.
   */
  async reserveChunk(): Promise<boolean> {
    let guard = 0;
    while (this.nFreeChunks === 0 && guard++ < this.nchunks * 2) {
      if ((await this.evictOnce(true)) === 0) break;
    }
    return this.nFreeChunks > 0;
  }

  /** One eviction round: ask the policy, evict. Returns pages evicted. */
  private async evictOnce(wholeChunk = false): Promise<number> {
    const c = this.cand;
    c.count = 0;
    for (let k = 0; k < this.nchunks; k++) {
      if (this.chunkState[k] === CHUNK_FREE || this.chunkUsed[k] === 0) continue;
      const j = c.count++;
      c.chunk[j] = k;
      c.lastAllocSeq[j] = this.chunkSeq[k] as number;
      c.lastAllocNs[j] = this.chunkNs[k] as number;
      c.usedPages[j] = this.chunkUsed[k] as number;
    }
    if (c.count === 0) return 0;
    const choice = this.choice;
    choice.count = 0;
    let pick = wholeChunk ? -1 : this.host.pickVictim(c, choice);
    if (wholeChunk || (pick < 0 && choice.count === 0) || pick >= c.count) {
      pick = 0;
      for (let j = 1; j < c.count; j++) if ((c.lastAllocSeq[j] as number) < (c.lastAllocSeq[pick] as number)) pick = j;
      choice.count = 0;
    }
    this.host.stats.evictions++;
    if (choice.count > 0 && pick < 0) return this.evictPfns(choice.pfns, choice.count);
    const chunk = c.chunk[pick] as number;
    const n = await this.evictChunk(chunk);
    // Pages that could not be collected (locked by a migration in flight) keep the chunk busy;
    // stamp it so the next round picks another.
    if (n === 0) this.stamp(chunk);
    return n;
  }

  /**
   * Evict every in-use page of chunk `c` to system memory.
   * @param c - chunk index.
   * @returns pages evicted.
   * Context: async (awaits the copy).
   * @see nouveau_dmem_evict_chunk (migrate_device_range + __GFP_NOFAIL allocations)
   */
  async evictChunk(c: number): Promise<number> {
    const n = NOUVEAU_DMEM_CHUNK_PAGES;
    const src = new Float64Array(n);
    this.host.machine.migrate.migrateDeviceRange(src, this.basePfn + c * n, n);
    return this.evictCollected(src, n);
  }

  /**
   * Evict a list of VRAM pages of this GPU (page-granular eviction policies).
   * @param pfns - pfns (copied). @param count - entries.
   * @returns pages evicted.
   * Context: async.
   * @see migrate_device_pfns, drm_pagemap_evict_to_ram
   */
  async evictPfns(pfns: Float64Array, count: number): Promise<number> {
    const src = new Float64Array(count);
    let k = 0;
    for (let i = 0; i < count; i++) {
      const p = pfns[i] as number;
      if (p >= this.basePfn && p < this.basePfn + this.nchunks * NOUVEAU_DMEM_CHUNK_PAGES) src[k++] = p;
    }
    if (k === 0) return 0;
    this.host.machine.migrate.migrateDevicePfns(src, k);
    return this.evictCollected(src, k);
  }

  private async evictCollected(src: Float64Array, n: number): Promise<number> {
    const h = this.host;
    const m = h.machine;
    const ps = m.pages;
    const dst = new Float64Array(n);
    const b = new CopyBatch(64);
    const iovas: number[] = [];
    const lens: number[] = [];
    let moved = 0;
    for (let i = 0; i < n; i++) {
      const s = src[i] as number;
      const sp = migratePfnToPfn(s);
      if (sp < 0 || !hasF(s, MIGRATE_PFN.MIGRATE)) continue;
      const nr = hasF(s, MIGRATE_PFN.COMPOUND) ? ps.folioNrPages(ps.compoundHead(sp)) : 1;
      const dp = nr > 1 ? m.alloc.allocPages(9, GFP.TRANSHUGE | GFP.MOVABLE) : m.alloc.allocPages(0, GFP.MOVABLE);
      if (dp < 0) continue; // the page stays on the device (the kernel would loop in __GFP_NOFAIL)
      m.mm.refs.trylockPage(dp);
      dst[i] = migratePfn(dp) + (hasF(s, MIGRATE_PFN.WRITE) ? MIGRATE_PFN.WRITE : 0) + (nr > 1 ? MIGRATE_PFN.COMPOUND : 0);
      const io = h.gpu.iommu.dmaMapPage(dp, DMA_FROM_DEVICE, nr);
      iovas.push(io);
      lens.push(nr);
      pushRun(b, APERTURE_VID, (sp - this.basePfn) * PAGE_SIZE, APERTURE_SYS, io, nr * PAGE_SIZE);
      moved += nr;
    }
    let err: Error | undefined;
    if (b.count > 0) {
      h.stats.copyBatches++;
      h.stats.copyDescriptors += b.count;
      err = await h.gpu.copy.submit(b).wait();
    }
    if (err !== undefined) {
      h.stats.dmaErrors++;
      for (let i = 0; i < n; i++) {
        const d = migratePfnToPfn(dst[i] as number);
        if (d >= 0) {
          m.mm.refs.unlockPage(d);
          m.mm.refs.putPage(d);
        }
        dst[i] = 0;
      }
      moved = 0;
    }
    m.migrate.migrateDevicePages(src, dst, n);
    for (let j = iovas.length - 1; j >= 0; j--) h.gpu.iommu.dmaUnmapPage(iovas[j] as number, lens[j] as number);
    m.migrate.migrateDeviceFinalize(src, dst, n);
    h.stats.pagesEvicted += moved;
    return moved;
  }

  /**
   * Evict everything and unregister the pgmaps (driver teardown).
   * @returns pages that could not be evicted (0 when all went back).
   * Context: async.
   * @see nouveau_dmem_fini (nouveau_dmem_evict_chunk per chunk, memunmap_pages)
   */
  async fini(): Promise<number> {
    for (let c = 0; c < this.nchunks; c++)
      if (this.chunkState[c] !== CHUNK_FREE && (this.chunkUsed[c] as number) > 0) await this.evictChunk(c);
    const left = this.usedPages;
    if (left > 0) return left;
    this.removing = true;
    for (const pg of this.pgmaps) this.host.machine.memremap.memunmapPages(pg);
    this.pgmaps.length = 0;
    return 0;
  }

  /** Whether fini() unregistered the memory. */
  get removed(): boolean {
    return this.removing;
  }

  /** Pages per 2 MiB: re-exported for callers. */
  static readonly CHUNK_PAGES = HPAGE_PMD_NR;
}
