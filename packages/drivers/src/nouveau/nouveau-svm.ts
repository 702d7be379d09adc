/**
 * nouveau_svm: shared virtual memory for a GPU — GPU VA spaces bound to a task's address space
 * (GPU VA == CPU VA), kept coherent by an interval notifier, and the servicing of replayable fault
 * batches and access-counter notifications according to a {@link MigrationPolicy}.
 *
 * Theory of operation
 * -------------------
 * VA spaces. {@link NouveauDriver.svmmInit} creates a device-emu GPU VA space for a task and
 * subscribes an interval notifier over its whole address space (nouveau_svmm_init). The
 * notifier's invalidate callback unmaps the GPU PTEs of the range — DMA-unmapping remote system
 * pages — for every event (munmap, mprotect, fork's write protection, COW, exit, and other
 * drivers' or the core's migrations), except the MMU_NOTIFY_MIGRATE events this driver raises
 * itself (owner == this GPU's owner while this driver is inside migrate_vma_setup): its migration
 * code unmaps and remaps the pages it migrates explicitly, as nouveau skips its own migrations and
 * calls nouveau_svmm_invalidate itself. Checking "raised by this driver" rather than only the
 * owner matters with owner groups: a peer's migration carries the same owner and must invalidate.
 *
 * Fault service (per batch, under the VRAM mutex), as UVM's service_fault_batch:
 * 1. copy the batch, sort it by (VA space, address), scan where each page lives (a cheap CPU
 *    page-table scan, drm_gpusvm_scan_mm), ask the policy for a decision per fault;
 * 2. per 2 MiB block and VMA, with the block's migrating faults: ask the policy for prefetch
 *    pages, reserve VRAM (evicting), bring pages of GPUs outside the owner group to system memory
 *    first (hmm_range_fault → their migrateToRam: the staging path), then migrate each run of
 *    wanted pages with the copy engine (nouveau_dmem_migrate_vma; peers' pages by peer copy);
 * 3. every fault still unmapped — remote/pin decisions, pages migrate_vma skipped, -EBUSY peer
 *    windows — goes through hmm_range_fault (REQ_FAULT, REQ_WRITE for writes) with the retry
 *    protocol and is mapped: this GPU's VRAM (VID), a group peer's VRAM (PEER), or system memory
 *    through the IOMMU (SYS). -EFAULT/-EPERM cancel the fault (the warps die, as a fatal fault).
 * The fault buffer replays after the handler returns (UVM's BATCH_FLUSH).
 *
 * Access counters: the policy marks notifications to migrate; the pages of the flagged 64 KiB
 * sub-regions not already here are migrated (expand_notification_block).
 *
 * Locking: the "VRAM mutex" (one allocating flow per GPU) is an async mutex; page-table updates
 * are synchronous sections (JS runs one at a time), which is the exclusion svmm->mutex gives.
 *
 * @see drivers/gpu/drm/nouveau/nouveau_svm.c (nouveau_svm_fault, nouveau_range_fault,
 *      nouveau_svmm_invalidate, nouveau_svmm_init), NVIDIA uvm_gpu_replayable_faults.c
 *      (service_fault_batch), uvm_hmm.c, uvm_gpu_access_counters.c, drm_gpusvm.c
 */
import {
  ERRNO,
  entryPayload,
  HMM_PFN,
  HMM_RANGE_DEFAULT_TIMEOUT,
  HmmError,
  type HmmRange,
  hmmPfnToPfn,
  hmmRangeFault,
  isHuge,
  isPresent,
  type Machine,
  MMU_NOTIFY,
  type Mm,
  type MmuIntervalNotifier,
  type MmuNotifierRange,
  mmuIntervalNotifierInsert,
  mmuIntervalNotifierRemove,
  mmuIntervalReadBegin,
  mmuIntervalReadRetry,
  mmuIntervalSetSeq,
  PAGE_SIZE,
  PMD_SIZE,
  SWP,
  swpType,
  type Task,
  VM,
  type Vma,
} from "@hmmkit/core";
import {
  ACCESS_READ,
  ACCESS_WRITE,
  type AccessCounterBatch,
  type AccessStream,
  APERTURE_SYS,
  APERTURE_VID,
  aperturePeer,
  DMA_BIDIRECTIONAL,
  DMA_TO_DEVICE,
  FAULT_ACCESS_WRITE,
  type FaultBatch,
  GPU_BLOCK_SIZE,
  GPU_PERM_READ,
  GPU_PERM_RWA,
  GPU_PERM_WRITE,
  GPU_VA_LIMIT,
  type GpuDevice,
  type GpuVaSpace,
  type KernelHandle,
  type Platform,
  PTE_VALID,
} from "@hmmkit/device-emu";
import { type DmemHost, NouveauDmem, type NouveauStats, zeroNouveauStats } from "./nouveau-dmem";
import {
  type EvictionCandidates,
  type EvictionChoice,
  type MigrationPolicy,
  POLICY_MIGRATE,
  POLICY_PIN,
  type PolicyAccessCounterBatch,
  type PolicyContext,
  type PolicyFaultBatch,
  RESIDENCY_CPU,
  RESIDENCY_NONE,
} from "./policy";

const EBUSY = -ERRNO.EBUSY;
const PAGES_PER_BLOCK = GPU_BLOCK_SIZE / PAGE_SIZE;
/** Safety net for the hmm retry loop when virtual time does not advance. */
const RANGE_FAULT_MAX_RETRIES = 10_000;

/** What the per-GPU driver needs from its module (implemented by NouveauModule). */
export interface NouveauModuleHost {
  /** The machine. */
  readonly machine: Machine;
  /** The platform. */
  readonly platform: Platform;
  /** GPU index owning a device pfn, or -1. */
  gpuOfPfn(pfn: number): number;
  /** Record migrations for thrashing detection; reports go to every GPU with a VA space on the mm. */
  recordMigration(mmId: number, va: number, npages: number, proc: number): void;
  /** Emit a trace event (if listened to). */
  trace(name: keyof NouveauEvents, payload: NouveauEvents[keyof NouveauEvents][0]): void;
}

/**
 * The driver's tracepoints (no kernel tracepoint exists for these; names follow `did<Verb><Subject>`).
 * Payloads are plain numbers so event logs serialise byte for byte.
 */
/** Payload of `didServiceFaultBatch`. */
export interface FaultBatchServicedEvent {
  /** GPU index. */
  gpu: number;
  /** Fault entries in the batch. */
  faults: number;
  /** Pages migrated to VRAM for it. */
  migrated: number;
  /** Pages mapped remotely (system memory or a peer). */
  remote: number;
  /** Faults cancelled (fatal). */
  cancelled: number;
  /** Virtual time (ns). */
  now: number;
}

/** Payload of `didMigrateToVram`. */
export interface MigrateToVramEvent {
  /** GPU index. */
  gpu: number;
  /** Address-space id (-1 for a batch aggregate). */
  mm: number;
  /** First address of the window (-1 for a batch aggregate). */
  start: number;
  /** Pages migrated. */
  npages: number;
  /** Of which came from a peer GPU. */
  fromPeer: number;
  /** Virtual time (ns). */
  now: number;
}

/** Payload of `didMigrateToRam`. */
export interface MigrateToRamEvent {
  /** GPU index. */
  gpu: number;
  /** Address-space id. */
  mm: number;
  /** Faulting CPU address. */
  address: number;
  /** Pages migrated back. */
  npages: number;
  /** Virtual time (ns). */
  now: number;
}

/** Payload of `didEvictVram`. */
export interface EvictVramEvent {
  /** GPU index. */
  gpu: number;
  /** Pages evicted to system memory. */
  npages: number;
  /** Virtual time (ns). */
  now: number;
}

/** Payload of `didDetectThrashing`. */
export interface ThrashingDetectedEvent {
  /** Address-space id. */
  mm: number;
  /** The thrashing page's address. */
  address: number;
  /** Migration/remap events counted in the window. */
  events: number;
  /** Processors involved (bit mask). */
  processors: number;
  /** Virtual time (ns). */
  now: number;
}

/** Events of the nouveau-like driver. */
export interface NouveauEvents {
  /** A fault batch was serviced. */
  didServiceFaultBatch: [FaultBatchServicedEvent];
  /** Pages were migrated to a GPU's VRAM (one window). */
  didMigrateToVram: [MigrateToVramEvent];
  /** A CPU fault migrated a device page back to system memory. */
  didMigrateToRam: [MigrateToRamEvent];
  /** VRAM pages were evicted to system memory. */
  didEvictVram: [EvictVramEvent];
  /** A page was reported thrashing. */
  didDetectThrashing: [ThrashingDetectedEvent];
}

/** A tiny FIFO async mutex (one allocating flow per GPU). */
class AsyncMutex {
  private held = false;
  private readonly waiters: (() => void)[] = [];
  acquire(): Promise<void> | undefined {
    if (!this.held) {
      this.held = true;
      return undefined;
    }
    return new Promise<void>((r) => this.waiters.push(r));
  }
  release(): void {
    const w = this.waiters.shift();
    if (w !== undefined) w();
    else this.held = false;
  }
  get busy(): boolean {
    return this.held;
  }
}

/**
 * A GPU VA space bound to one task's address space (SVM: GPU VA == CPU VA).
 *
 * Context: synchronous except the device access helpers, which run a kernel.
 * @see struct nouveau_svmm, nouveau_svmm_init, nouveau_svmm_invalidate
 */
export class NouveauSvmm {
  /** The GPU VA space (its id is the instance id of its faults). */
  readonly space: GpuVaSpace;
  /** The interval notifier over the whole address space. */
  readonly notifier: MmuIntervalNotifier;
  /** Whether {@link NouveauSvmm.close} ran. */
  closed = false;
  /** Invalidations that reached this VA space (own MIGRATE events excluded). */
  invalidations = 0;
  private readonly blocks = new Set<number>();
  private readonly addrs = new Float64Array(PAGES_PER_BLOCK);

  /**
   * Use {@link NouveauDriver.svmmInit}.
   * @param driver - the GPU driver. @param task - the bound task.
   */
  constructor(
    readonly driver: NouveauDriver,
    readonly task: Task,
  ) {
    this.space = driver.gpu.createVaSpace();
    this.notifier = mmuIntervalNotifierInsert(task.mm, 0, GPU_VA_LIMIT, {
      invalidate: (sub, range, seq) => this.invalidate(sub, range, seq),
    });
  }

  /** The bound address space. */
  get mm(): Mm {
    return this.task.mm;
  }

  /** The instance id carried by this VA space's faults. */
  get instance(): number {
    return this.space.id;
  }

  /**
   * The notifier callback: unmap `[start, end)` from the GPU, except this driver's own migrations.
   * @param sub - the subscription. @param range - the invalidation. @param seq - its sequence.
   * @returns true.
   * @see nouveau_svmm_invalidate_range_start, dmirror_interval_invalidate
   */
  invalidate(sub: MmuIntervalNotifier, range: MmuNotifierRange, seq: number): boolean {
    const d = this.driver;
    if (range.event === MMU_NOTIFY.MIGRATE && range.owner === d.owner && d.selfMigrating > 0) return true;
    mmuIntervalSetSeq(sub, seq);
    this.invalidations++;
    this.unmapRange(range.start, range.end);
    return true;
  }

  /**
   * Remove every GPU mapping in `[start, end)`, DMA-unmapping remote system pages.
   * @param start - first byte. @param end - one past the last.
   * @returns the number of PTEs cleared.
   * Context: synchronous.
   * @see nouveau_svmm_invalidate (nvif_vmm_pfnclr)
   */
  unmapRange(start: number, end: number): number {
    const s = Math.max(0, Math.floor(start / PAGE_SIZE) * PAGE_SIZE);
    const e = Math.min(GPU_VA_LIMIT, Math.ceil(Math.min(end, GPU_VA_LIMIT) / PAGE_SIZE) * PAGE_SIZE);
    if (e <= s || this.blocks.size === 0) return 0;
    const b0 = Math.floor(s / GPU_BLOCK_SIZE);
    const b1 = Math.floor((e - 1) / GPU_BLOCK_SIZE);
    let cleared = 0;
    if (b1 - b0 + 1 > this.blocks.size) {
      for (const b of [...this.blocks]) if (b >= b0 && b <= b1) cleared += this.unmapInBlock(b, s, e);
    } else {
      for (let b = b0; b <= b1; b++) if (this.blocks.has(b)) cleared += this.unmapInBlock(b, s, e);
    }
    return cleared;
  }

  private unmapInBlock(b: number, s: number, e: number): number {
    const space = this.space;
    const slot = space.slotOf(b);
    if (slot < 0) {
      this.blocks.delete(b);
      return 0;
    }
    const bs = b * GPU_BLOCK_SIZE;
    const first = Math.max(s, bs);
    const last = Math.min(e, bs + GPU_BLOCK_SIZE);
    const i0 = (first - bs) / PAGE_SIZE;
    const i1 = (last - bs) / PAGE_SIZE;
    const flags = space.flags;
    const target = space.target;
    const iommu = this.driver.gpu.iommu;
    let valid = 0;
    for (let i = i0; i < i1; i++) {
      const f = flags[slot * 512 + i] as number;
      if ((f & PTE_VALID) === 0) continue;
      valid++;
      if (f >> 8 === APERTURE_SYS) iommu.dmaUnmapPage((target[slot * 512 + i] as number) * PAGE_SIZE, 1);
    }
    if (valid > 0) space.unmap(first, last - first);
    if (space.slotOf(b) < 0) this.blocks.delete(b);
    return valid;
  }

  /**
   * Map consecutive pages to one aperture (targets page aligned), tracking the block.
   * @param va - page-aligned start. @param aperture - APERTURE_*. @param addrs - targets. @param n - pages.
   * @param perms - GPU_PERM_* bits.
   * Context: synchronous.
   * @see nvif_vmm_pfnmap
   */
  mapPages(va: number, aperture: number, addrs: Float64Array, n: number, perms: number): void {
    this.space.mapPages(va, aperture, n === addrs.length ? addrs : addrs.subarray(0, n), perms);
    const b0 = Math.floor(va / GPU_BLOCK_SIZE);
    const b1 = Math.floor((va + n * PAGE_SIZE - 1) / GPU_BLOCK_SIZE);
    for (let b = b0; b <= b1; b++) this.blocks.add(b);
  }

  /** @internal Scratch for VID maps. */
  get scratch(): Float64Array {
    return this.addrs;
  }

  /**
   * The GPU PTE flags of a page (0 when unmapped).
   * @param va - any address of the page.
   * @returns the flags word (perms | PTE_VALID | size | aperture << 8).
   */
  pteFlags(va: number): number {
    const b = Math.floor(va / GPU_BLOCK_SIZE);
    const slot = this.space.slotOf(b);
    if (slot < 0) return 0;
    return this.space.flags[slot * 512 + Math.floor((va - b * GPU_BLOCK_SIZE) / PAGE_SIZE)] as number;
  }

  /**
   * Launch a kernel in this VA space.
   * @param streams - the warps' access streams.
   * @returns the kernel handle (await `fence.promise` with the clock running).
   * @throws HmmError EINVAL as device-emu's `ComputeEngine.launch`.
   * Context: synchronous.
   * @see cuLaunchKernel; nouveau's channel submission
   */
  launch(streams: readonly AccessStream[]): KernelHandle {
    return this.driver.gpu.compute.launch(this.space, streams);
  }

  /**
   * Write bytes at `va` from the GPU: a kernel writes every page (faulting them in as the
   * policy decides), then the bytes are stored through the GPU's translation (its VRAM, a peer's
   * VRAM or system memory through the IOMMU).
   * @param va - address. @param data - bytes.
   * @throws the kernel's fatal-fault error (EFAULT: no VMA or read-only).
   * Context: async; the machine's clock must run (`machine.settle`).
   * @see dmirror's HMM_DMIRROR_WRITE; a memcpy kernel
   */
  async deviceWrite(va: number, data: Uint8Array): Promise<void> {
    await this.deviceAccess(va, data.length, data, undefined);
  }

  /**
   * Read bytes at `va` from the GPU (see {@link NouveauSvmm.deviceWrite}).
   * @param va - address. @param len - bytes.
   * @returns the bytes.
   * @throws the kernel's fatal-fault error.
   * Context: async; the clock must run.
   */
  async deviceRead(va: number, len: number): Promise<Uint8Array> {
    const out = new Uint8Array(len);
    await this.deviceAccess(va, len, undefined, out);
    return out;
  }

  private async deviceAccess(va: number, len: number, src: Uint8Array | undefined, dst: Uint8Array | undefined): Promise<void> {
    const p0 = Math.floor(va / PAGE_SIZE);
    const p1 = Math.ceil((va + len) / PAGE_SIZE);
    const n = p1 - p0;
    const write = src !== undefined;
    const d = this.driver;
    for (let attempt = 0; attempt < 64; attempt++) {
      const addr = new Float64Array(n);
      for (let i = 0; i < n; i++) addr[i] = (p0 + i) * PAGE_SIZE;
      const k = this.launch([
        { addr, size: new Uint16Array(n).fill(1), flags: new Uint8Array(n).fill(write ? ACCESS_WRITE : ACCESS_READ) },
      ]);
      await k.fence.promise;
      if (k.fence.error !== undefined) throw k.fence.error;
      // Synchronous from here: translate and move the bytes, or retry if a mapping went away.
      const pfns = new Float64Array(n);
      let ok = true;
      for (let i = 0; i < n && ok; i++) {
        const pte = this.space.lookup((p0 + i) * PAGE_SIZE);
        if (pte === undefined || (write && (pte.perms & GPU_PERM_WRITE) === 0)) ok = false;
        else pfns[i] = d.translate(pte.aperture, pte.addr, write);
        if (pfns[i] === -1) ok = false;
      }
      if (!ok) continue;
      const contents = d.machine.contents;
      let off = 0;
      for (let i = 0; i < n; i++) {
        const pageStart = (p0 + i) * PAGE_SIZE;
        const a = Math.max(va, pageStart);
        const b = Math.min(va + len, pageStart + PAGE_SIZE);
        if (src !== undefined) contents.write(pfns[i] as number, a - pageStart, src.subarray(off, off + b - a));
        else if (dst !== undefined) contents.read(pfns[i] as number, a - pageStart, dst.subarray(off, off + b - a));
        off += b - a;
      }
      return;
    }
    throw new Error(`nouveau: device access at 0x${va.toString(16)} kept losing its mappings`);
  }

  /**
   * Unbind: remove the notifier, unmap everything, destroy the GPU VA space. Idempotent.
   * Context: synchronous.
   * @see nouveau_svmm_fini
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    mmuIntervalNotifierRemove(this.notifier);
    this.unmapRange(0, GPU_VA_LIMIT);
    this.driver.gpu.destroyVaSpace(this.space);
    this.driver.forget(this);
  }
}

/** The migration plan of one (VA space, 2 MiB block, VMA) of a fault batch. */
class BlockPlan {
  svmm: NouveauSvmm | undefined;
  vma: Vma | undefined;
  blockVa = 0;
  first = 0;
  end = 0;
  nwant = 0;
  nforeign = 0;
  prefetched = false;
  readonly faulted = new Uint8Array(PAGES_PER_BLOCK);
  readonly write = new Uint8Array(PAGES_PER_BLOCK);
  readonly want = new Uint8Array(PAGES_PER_BLOCK);
  readonly resident = new Uint8Array(PAGES_PER_BLOCK);
  readonly prefetch = new Uint8Array(PAGES_PER_BLOCK);
  readonly foreign = new Uint16Array(PAGES_PER_BLOCK);
}

/**
 * The nouveau-like driver of one GPU: device memory ({@link NouveauDmem}), SVM VA spaces, fault
 * and access-counter service, the policy.
 *
 * Context: created by `NouveauModule.probe`; service runs from the clock's run loop.
 * @see nouveau_drm.c (nouveau_drm_probe), nouveau_svm.c, nouveau_dmem.c
 */
export class NouveauDriver implements DmemHost {
  /** Counters. */
  readonly stats: NouveauStats = zeroNouveauStats();
  /** Device memory. */
  readonly dmem: NouveauDmem;
  /** Set while this driver runs a migrate_vma_setup (its notifiers skip those MIGRATE events). */
  selfMigrating = 0;
  /** The policy services. */
  readonly ctx: PolicyContext;
  private readonly svmms = new Map<number, NouveauSvmm>();
  private readonly byMm = new Map<number, NouveauSvmm>();
  private readonly lock = new AsyncMutex();
  // Fault-batch scratch (sorted copy).
  private readonly fInstance: Uint32Array;
  private readonly fAddress: Float64Array;
  private readonly fAccess: Uint8Array;
  private readonly fInstances: Uint32Array;
  private readonly fResidency: Int8Array;
  private readonly fDecision: Uint8Array;
  private readonly fDone: Uint8Array;
  private readonly order: number[] = [];
  private readonly pb: PolicyFaultBatch;
  private readonly pr: {
    instance: number;
    blockVa: number;
    first: number;
    end: number;
    resident: Uint8Array;
    faulted: Uint8Array;
    prefetch: Uint8Array;
  };
  private readonly plans: BlockPlan[] = [];
  private nplans = 0;
  private readonly hmmPfns = new Float64Array(PAGES_PER_BLOCK);
  private readonly addrScratch = new Float64Array(PAGES_PER_BLOCK);

  /**
   * Use `NouveauModule.probe`.
   * @param module - the module. @param index - GPU index. @param owner - pgmap owner identity.
   * @param grouped - whether the owner is shared with peers. @param policy - this GPU's policy.
   */
  constructor(
    readonly module: NouveauModuleHost,
    readonly index: number,
    readonly owner: object,
    readonly grouped: boolean,
    readonly policy: MigrationPolicy,
  ) {
    this.dmem = new NouveauDmem(this);
    const cap = this.gpu.config.faultBuffer.batchSize;
    this.fInstance = new Uint32Array(cap);
    this.fAddress = new Float64Array(cap);
    this.fAccess = new Uint8Array(cap);
    this.fInstances = new Uint32Array(cap);
    this.fResidency = new Int8Array(cap);
    this.fDecision = new Uint8Array(cap);
    this.fDone = new Uint8Array(cap);
    const self = this;
    this.pb = {
      count: 0,
      instance: this.fInstance,
      address: this.fAddress,
      accessType: this.fAccess,
      numInstances: this.fInstances,
      residency: this.fResidency,
      decision: this.fDecision,
    };
    this.pr = {
      instance: 0,
      blockVa: 0,
      first: 0,
      end: 0,
      resident: new Uint8Array(PAGES_PER_BLOCK),
      faulted: new Uint8Array(PAGES_PER_BLOCK),
      prefetch: new Uint8Array(PAGES_PER_BLOCK),
    };
    this.ctx = {
      gpu: index,
      get gpuCount() {
        return self.module.platform.gpus.length;
      },
      get now() {
        return self.machine.clock.now;
      },
      get vramChunks() {
        return self.dmem.nchunks;
      },
      get vramFreePages() {
        return self.dmem.freePages;
      },
      random: () => self.machine.rng.next(),
      residentMask: (inst, blockVa, out) => self.residentScan(inst, blockVa, out, undefined),
      residentPfns: (inst, blockVa, out) => self.residentScan(inst, blockVa, undefined, out),
    };
  }

  /** The machine. */
  get machine(): Machine {
    return this.module.machine;
  }

  /** The device. */
  get gpu(): GpuDevice {
    return this.module.platform.gpu(this.index);
  }

  /** Bound VA spaces by instance id. */
  get vaSpaces(): ReadonlyMap<number, NouveauSvmm> {
    return this.svmms;
  }

  /** Whether a fault or counter service (or explicit migration) is running. */
  get busy(): boolean {
    return this.lock.busy;
  }

  /**
   * Bind a task: create its GPU VA space and notifier.
   * @param task - a live task whose address space has no VA space on this GPU yet.
   * @returns the bound VA space.
   * @throws HmmError EINVAL if the task exited; EBUSY if its mm is already bound to this GPU.
   * Context: synchronous.
   * @see nouveau_svmm_init (NOUVEAU_SVM_INIT ioctl)
   */
  svmmInit(task: Task): NouveauSvmm {
    if (task.exited || task.mm.dead) throw new HmmError("EINVAL", `task ${task.pid} has exited`, "task");
    if (this.byMm.has(task.mm.id)) throw new HmmError("EBUSY", `task ${task.pid}'s mm is already bound to gpu${this.index}`, "task");
    const s = new NouveauSvmm(this, task);
    this.svmms.set(s.instance, s);
    this.byMm.set(task.mm.id, s);
    return s;
  }

  /** @internal Called by NouveauSvmm.close. */
  forget(s: NouveauSvmm): void {
    this.svmms.delete(s.instance);
    if (this.byMm.get(s.mm.id) === s) this.byMm.delete(s.mm.id);
  }

  /**
   * The VA space bound to an address space.
   * @param mmId - core Mm id.
   * @returns the VA space, or undefined.
   */
  svmmOf(mmId: number): NouveauSvmm | undefined {
    return this.byMm.get(mmId);
  }

  // ------------------------------------------------------------------ DmemHost

  /** @inheritDoc */
  gpuOfPfn(pfn: number): number {
    return this.module.gpuOfPfn(pfn);
  }

  /** @inheritDoc */
  vramBaseOf(g: number): number {
    return this.module.platform.gpu(g).vram.basePfn;
  }

  /** @inheritDoc */
  unmapGpu(mmId: number, va: number, n: number): void {
    this.byMm.get(mmId)?.unmapRange(va, va + n * PAGE_SIZE);
  }

  /** @inheritDoc */
  mapVram(instance: number, va: number, pfns: Float64Array, perms: Uint8Array, n: number): void {
    const s = this.svmms.get(instance);
    if (s === undefined) return;
    const base = this.dmem.basePfn;
    const a = this.addrScratch;
    for (let i = 0; i < n; ) {
      if (pfns[i] === -1) {
        i++;
        continue;
      }
      const p = perms[i] as number;
      let j = i;
      while (j < n && pfns[j] !== -1 && perms[j] === p) {
        a[j - i] = ((pfns[j] as number) - base) * PAGE_SIZE;
        j++;
      }
      s.mapPages(va + i * PAGE_SIZE, APERTURE_VID, a, j - i, p);
      i = j;
    }
  }

  /** @inheritDoc */
  recordMigration(mmId: number, va: number, npages: number, proc: number): void {
    this.module.recordMigration(mmId, va, npages, proc);
  }

  /** @inheritDoc */
  pickVictim(c: EvictionCandidates, choice: EvictionChoice): number {
    const p = this.policy.selectEvictionVictim;
    return p === undefined ? -1 : p.call(this.policy, this.ctx, c, choice);
  }

  /**
   * Translate a GPU PTE target to a pfn (for device-side data access).
   * @param aperture - APERTURE_*. @param addr - target byte address. @param write - a write.
   * @returns the pfn, or -1 when the IOMMU refuses.
   */
  translate(aperture: number, addr: number, write: boolean): number {
    if (aperture === APERTURE_VID) return this.gpu.vram.addrToPfn(addr);
    if (aperture === APERTURE_SYS) return this.gpu.iommu.translate(addr, write, "compute");
    return this.module.platform.gpu(aperture - 2).vram.addrToPfn(addr);
  }

  private residentScan(instance: number, blockVa: number, mask: Uint8Array | undefined, pfns: Float64Array | undefined): void {
    mask?.fill(0);
    pfns?.fill(-1);
    const s = this.svmms.get(instance);
    if (s === undefined) return;
    const sp = s.space;
    const slot = sp.slotOf(Math.floor(blockVa / GPU_BLOCK_SIZE));
    if (slot < 0) return;
    const flags = sp.flags;
    const target = sp.target;
    const base = this.dmem.basePfn;
    for (let i = 0; i < PAGES_PER_BLOCK; i++) {
      const f = flags[slot * 512 + i] as number;
      if ((f & PTE_VALID) !== 0 && f >> 8 === APERTURE_VID) {
        if (mask !== undefined) mask[i] = 1;
        if (pfns !== undefined) pfns[i] = base + (target[slot * 512 + i] as number);
      }
    }
  }

  /**
   * Where a page lives now (a CPU page-table scan; nothing is faulted).
   * @param mm - address space. @param va - page address.
   * @returns RESIDENCY_NONE, RESIDENCY_CPU or a GPU index.
   * @see drm_gpusvm_scan_mm
   */
  residencyOf(mm: Mm, va: number): number {
    const m = this.machine;
    const pmd = mm.pt.getPmd(va);
    let e: number;
    let sub = 0;
    if (pmd !== 0 && isHuge(pmd)) {
      e = pmd;
      sub = Math.floor((va % PMD_SIZE) / PAGE_SIZE);
    } else e = mm.pt.getPte(va);
    if (e === 0) return RESIDENCY_NONE;
    if (isPresent(e)) {
      const pfn = entryPayload(e) + sub;
      return pfn === m.mm.zeroPfn ? RESIDENCY_NONE : RESIDENCY_CPU;
    }
    if (swpType(e) === SWP.DEVICE_PRIVATE) return this.module.gpuOfPfn(entryPayload(e) + sub);
    return RESIDENCY_CPU;
  }

  // ------------------------------------------------------------------ fault service

  /**
   * The GpuDriverOps fault handler: service one coalesced batch (see the file comment).
   * @param b - the batch (its arrays are copied at once).
   * @returns resolves when every fault is mapped or cancelled.
   * Context: async; takes the VRAM mutex.
   * @see nouveau_svm_fault, uvm_parent_gpu_service_replayable_faults / service_fault_batch
   */
  async serviceFaults(b: FaultBatch): Promise<void> {
    const n = b.count;
    const st = this.stats;
    st.faultBatches++;
    st.faultEntries += b.cached;
    st.faults += n;
    // Copy, sorted by (instance, address).
    const ord = this.order;
    ord.length = n;
    for (let i = 0; i < n; i++) ord[i] = i;
    ord.sort((x, y) => (b.instance[x] as number) - (b.instance[y] as number) || (b.address[x] as number) - (b.address[y] as number));
    for (let i = 0; i < n; i++) {
      const k = ord[i] as number;
      this.fInstance[i] = b.instance[k] as number;
      this.fAddress[i] = b.address[k] as number;
      this.fAccess[i] = b.accessType[k] as number;
      this.fInstances[i] = b.numInstances[k] as number;
    }
    const w = this.lock.acquire();
    if (w !== undefined) await w;
    try {
      await this.serviceSorted(n);
    } finally {
      this.lock.release();
    }
  }

  private async serviceSorted(n: number): Promise<void> {
    const st = this.stats;
    const res = this.fResidency;
    const dec = this.fDecision;
    const done = this.fDone;
    for (let i = 0; i < n; i++) {
      const s = this.svmms.get(this.fInstance[i] as number);
      res[i] = s === undefined ? RESIDENCY_NONE : this.residencyOf(s.mm, this.fAddress[i] as number);
      dec[i] = POLICY_MIGRATE;
      done[i] = 0;
    }
    (this.pb as { count: number }).count = n;
    this.policy.onFaultBatch?.(this.ctx, this.pb);
    // Phase 2: plan per (instance, block, VMA), stage, reserve, migrate in one copy batch.
    this.nplans = 0;
    for (let i = 0; i < n; ) {
      const inst = this.fInstance[i] as number;
      const blk = Math.floor((this.fAddress[i] as number) / GPU_BLOCK_SIZE);
      let j = i + 1;
      while (j < n && this.fInstance[j] === inst && Math.floor((this.fAddress[j] as number) / GPU_BLOCK_SIZE) === blk) j++;
      const s = this.svmms.get(inst);
      if (s !== undefined && !s.mm.dead) this.planBlock(s, blk, i, j);
      i = j;
    }
    const migratedPages = this.nplans > 0 ? await this.runPlans() : 0;
    // Phase 3: map what is still unmapped.
    let remote = 0;
    let cancelled = 0;
    for (let i = 0; i < n; ) {
      const inst = this.fInstance[i] as number;
      const s = this.svmms.get(inst);
      if (s === undefined || s.mm.dead) {
        this.gpu.faults.cancel(inst, this.fAddress[i] as number);
        cancelled++;
        i++;
        continue;
      }
      const va = this.fAddress[i] as number;
      const write = (this.fAccess[i] as number) >= FAULT_ACCESS_WRITE;
      const need = write ? GPU_PERM_WRITE | GPU_PERM_READ : GPU_PERM_READ;
      if (((s.pteFlags(va) & (need | PTE_VALID)) as number) === (need | PTE_VALID)) {
        i++;
        continue;
      }
      // A run of consecutive unmapped faults with the same write-ness.
      let j = i + 1;
      while (
        j < n &&
        this.fInstance[j] === inst &&
        this.fAddress[j] === va + (j - i) * PAGE_SIZE &&
        (this.fAccess[j] as number) >= FAULT_ACCESS_WRITE === write &&
        j - i < PAGES_PER_BLOCK &&
        (s.pteFlags(this.fAddress[j] as number) & (need | PTE_VALID)) !== (need | PTE_VALID)
      )
        j++;
      const r = await this.mapRange(s, va, j - i, write);
      if (r !== 0) {
        for (let k = i; k < j; k++) this.gpu.faults.cancel(inst, this.fAddress[k] as number);
        cancelled += j - i;
      } else {
        for (let k = i; k < j; k++) {
          const d = dec[k] as number;
          if (d === POLICY_PIN) st.pinnedMaps++;
        }
        remote += j - i;
      }
      i = j;
    }
    st.faultsCancelled += cancelled;
    this.module.trace("didServiceFaultBatch", {
      gpu: this.index,
      faults: n,
      migrated: migratedPages,
      remote,
      cancelled,
      now: this.machine.clock.now,
    });
  }

  /** Plan the migration of faults [i, j) of one block (decided MIGRATE) plus the policy's prefetch. */
  private planBlock(s: NouveauSvmm, blk: number, i: number, j: number): void {
    const blockVa = blk * GPU_BLOCK_SIZE;
    const mm = s.mm;
    // One VMA at a time.
    for (let k = i; k < j; ) {
      if (this.fDecision[k] !== POLICY_MIGRATE || this.fResidency[k] === this.index) {
        k++;
        continue;
      }
      const va = this.fAddress[k] as number;
      const vma = mm.findVma(va);
      if (vma === undefined || (vma.flags & VM.READ) === 0) {
        k++;
        continue;
      }
      if (this.nplans === this.plans.length) this.plans.push(new BlockPlan());
      const plan = this.plans[this.nplans] as BlockPlan;
      plan.svmm = s;
      plan.vma = vma;
      plan.blockVa = blockVa;
      plan.first = Math.max(0, (vma.start - blockVa) / PAGE_SIZE);
      plan.end = Math.min(PAGES_PER_BLOCK, (vma.end - blockVa) / PAGE_SIZE);
      plan.nforeign = 0;
      const { faulted, write, want } = plan;
      faulted.fill(0);
      write.fill(0);
      let stop = k;
      while (stop < j && (this.fAddress[stop] as number) < vma.end) {
        if (this.fDecision[stop] === POLICY_MIGRATE && this.fResidency[stop] !== this.index) {
          const p = ((this.fAddress[stop] as number) - blockVa) / PAGE_SIZE;
          faulted[p] = 1;
          if ((this.fAccess[stop] as number) >= FAULT_ACCESS_WRITE) write[p] = 1;
          const r = this.fResidency[stop] as number;
          if (r >= 0 && !this.inGroup(r)) plan.foreign[plan.nforeign++] = p;
        }
        stop++;
      }
      k = stop;
      want.set(faulted);
      plan.prefetched = false;
      if (this.policy.prefetch !== undefined) {
        const pr = this.pr;
        pr.instance = s.instance;
        pr.blockVa = blockVa;
        pr.first = plan.first;
        pr.end = plan.end;
        pr.faulted = faulted;
        pr.resident = plan.resident;
        pr.prefetch = plan.prefetch;
        this.residentScan(s.instance, blockVa, plan.resident, undefined);
        plan.prefetch.fill(0);
        this.policy.prefetch(this.ctx, pr);
        for (let p = plan.first; p < plan.end; p++) if (plan.prefetch[p] === 1 && plan.resident[p] === 0) want[p] = 1;
        plan.prefetched = true;
      }
      let nwant = 0;
      for (let p = plan.first; p < plan.end; p++) nwant += want[p] as number;
      plan.nwant = nwant;
      if (nwant > 0) this.nplans++;
    }
  }

  /** Stage foreign pages, reserve VRAM, prepare every planned run into one batch, run it. */
  private async runPlans(): Promise<number> {
    let total = 0;
    for (let x = 0; x < this.nplans; x++) {
      const plan = this.plans[x] as BlockPlan;
      total += plan.nwant;
      // The staging path: pages of GPUs outside the owner group go to system memory first.
      for (let f = 0; f < plan.nforeign; f++) {
        const p = plan.foreign[f] as number;
        const r = await this.faultIn(plan.svmm as NouveauSvmm, plan.blockVa + p * PAGE_SIZE, 1, plan.write[p] === 1);
        if (r === 0) this.stats.pagesViaSystem++;
      }
    }
    if (this.dmem.freePages < total) {
      const ev = await this.dmem.reserve(total);
      if (ev > 0) this.module.trace("didEvictVram", { gpu: this.index, npages: ev, now: this.machine.clock.now });
    }
    const batch = this.dmem.beginBatch();
    for (let x = 0; x < this.nplans; x++) {
      const plan = this.plans[x] as BlockPlan;
      const s = plan.svmm as NouveauSvmm;
      if (s.closed || s.mm.dead || s.mm.findVma(plan.blockVa + plan.first * PAGE_SIZE) !== plan.vma) continue;
      const want = plan.want;
      for (let p = plan.first; p < plan.end; ) {
        if (want[p] === 0) {
          p++;
          continue;
        }
        let q = p + 1;
        while (q < plan.end && want[q] === 1) q++;
        this.dmem.prepareWindow(
          batch,
          { mm: s.mm, vma: plan.vma as Vma, start: plan.blockVa + p * PAGE_SIZE, end: plan.blockVa + q * PAGE_SIZE, instance: s.instance },
          plan.write.subarray(p, q),
          "fault",
        );
        p = q;
      }
    }
    const r = await this.dmem.runBatch(batch);
    if (r.migrated > 0) {
      this.module.trace("didMigrateToVram", {
        gpu: this.index,
        mm: -1,
        start: -1,
        npages: r.migrated,
        fromPeer: r.fromPeer,
        now: this.machine.clock.now,
      });
    }
    for (let x = 0; x < this.nplans; x++) {
      const plan = this.plans[x] as BlockPlan;
      if (!plan.prefetched) continue;
      const s = plan.svmm as NouveauSvmm;
      for (let p = plan.first; p < plan.end; p++) {
        if (plan.want[p] === 1 && plan.faulted[p] === 0) {
          const f = s.pteFlags(plan.blockVa + p * PAGE_SIZE);
          if ((f & PTE_VALID) !== 0 && f >> 8 === APERTURE_VID) this.stats.pagesPrefetched++;
        }
      }
      plan.svmm = undefined;
      plan.vma = undefined;
    }
    return r.migrated;
  }

  private inGroup(g: number): boolean {
    return g === this.index || (this.grouped && this.module.platform.gpu(g).driver !== undefined && this.ownerOf(g) === this.owner);
  }

  private ownerOf(g: number): unknown {
    const m = this.machine;
    return m.memremap.pgmapOf(this.module.platform.gpu(g).vram.basePfn)?.owner;
  }

  /**
   * hmm_range_fault with the retry protocol over `[va, va + n pages)`.
   * @returns 0 or a negative errno; `this.hmmPfns` holds the entries.
   */
  private async faultIn(s: NouveauSvmm, va: number, n: number, write: boolean, onValid?: () => void): Promise<number> {
    const m = this.machine;
    const range: HmmRange = {
      notifier: s.notifier,
      notifierSeq: 0,
      start: va,
      end: va + n * PAGE_SIZE,
      hmmPfns: this.hmmPfns,
      defaultFlags: HMM_PFN.REQ_FAULT | (write ? HMM_PFN.REQ_WRITE : 0),
      pfnFlagsMask: 0,
      devPrivateOwner: this.owner,
    };
    const timeout = m.clock.now + HMM_RANGE_DEFAULT_TIMEOUT * 1e6;
    for (let tries = 0; ; tries++) {
      if (m.clock.now > timeout || tries > RANGE_FAULT_MAX_RETRIES) return EBUSY;
      range.notifierSeq = mmuIntervalReadBegin(s.notifier);
      const r = await hmmRangeFault(m.mm, range);
      if (r === EBUSY) continue;
      if (r !== 0) return r;
      if (mmuIntervalReadRetry(s.notifier, range.notifierSeq)) continue;
      // Still in the synchronous section that checked the sequence: the entries are current.
      onValid?.();
      return 0;
    }
  }

  /**
   * Fault in and map `n` pages remotely or locally, wherever hmm_range_fault finds them.
   * @returns 0 or a negative errno (-EFAULT, -EPERM, -EBUSY).
   * @see nouveau_range_fault
   */
  private async mapRange(s: NouveauSvmm, va: number, n: number, write: boolean): Promise<number> {
    if (s.closed) return -ERRNO.EFAULT;
    return this.faultIn(s, va, n, write, () => {
      // The "svmm->mutex" section: the sequence was just checked; program the GPU page table.
      s.unmapRange(va, va + n * PAGE_SIZE);
      this.mapEntries(s, va, n);
    });
  }

  private mapEntries(s: NouveauSvmm, va: number, n: number): void {
    const st = this.stats;
    const hp = this.hmmPfns;
    const a = this.addrScratch;
    const iommu = this.gpu.iommu;
    const base = this.dmem.basePfn;
    for (let i = 0; i < n; i++) {
      const e = hp[i] as number;
      const pfn = hmmPfnToPfn(e);
      const w = ((e % 256) & HMM_PFN.WRITE) !== 0;
      const perms = w ? GPU_PERM_RWA : GPU_PERM_READ;
      const g = this.module.gpuOfPfn(pfn);
      const pva = va + i * PAGE_SIZE;
      if (g === this.index) {
        a[0] = (pfn - base) * PAGE_SIZE;
        s.mapPages(pva, APERTURE_VID, a, 1, perms);
      } else if (g >= 0) {
        a[0] = (pfn - this.vramBaseOf(g)) * PAGE_SIZE;
        s.mapPages(pva, aperturePeer(g), a, 1, perms);
        st.peerMaps++;
      } else {
        a[0] = iommu.dmaMapPage(pfn, w ? DMA_BIDIRECTIONAL : DMA_TO_DEVICE, 1);
        s.mapPages(pva, APERTURE_SYS, a, 1, perms);
        st.remoteMaps++;
      }
    }
  }

  // ------------------------------------------------------------------ access counters

  /**
   * The GpuDriverOps access-counter handler: ask the policy, migrate the flagged sub-regions.
   * @param b - the notifications.
   * Context: async; takes the VRAM mutex.
   * @see uvm_gpu_service_access_counters, service_va_block_locked, expand_notification_block
   */
  async serviceAccessCounters(b: AccessCounterBatch): Promise<void> {
    const n = b.count;
    this.stats.accessCounterNotifications += n;
    if (this.policy.onAccessCounters === undefined) return;
    const pab: PolicyAccessCounterBatch = {
      count: n,
      instance: b.instance.slice(0, n),
      address: b.address.slice(0, n),
      granularity: b.granularity,
      subMask: b.subMask.slice(0, n),
      counterValue: b.counterValue.slice(0, n),
      migrate: new Uint8Array(n),
    };
    this.policy.onAccessCounters(this.ctx, pab);
    const w = this.lock.acquire();
    if (w !== undefined) await w;
    try {
      const sub = pab.granularity / 32;
      for (let i = 0; i < n; i++) {
        if (pab.migrate[i] !== 1) continue;
        const s = this.svmms.get(pab.instance[i] as number);
        if (s === undefined || s.mm.dead) continue;
        const mask = pab.subMask[i] as number;
        for (let bit = 0; bit < 32; bit++) {
          if ((mask & (2 ** bit)) === 0) continue;
          const start = (pab.address[i] as number) + bit * sub;
          await this.migrateRangeLocked(s, start, sub / PAGE_SIZE, "counters", true);
        }
      }
    } finally {
      this.lock.release();
    }
  }

  // ------------------------------------------------------------------ explicit migration

  /**
   * Migrate `[va, va + npages pages)` of a bound VA space to this GPU's VRAM now (an explicit
   * prefetch: NOUVEAU_SVM_BIND with a VRAM target, cudaMemPrefetchAsync).
   * @param s - a VA space of this GPU. @param va - page aligned. @param npages - > 0.
   * @returns 0, or -EINVAL (a hole in the VMAs: the windows before it did migrate).
   * @throws HmmError EINVAL for a foreign VA space or bad arguments.
   * Context: async; takes the VRAM mutex; the clock must run.
   * @see nouveau_svmm_bind, nouveau_dmem_migrate_vma
   */
  async migrateRange(s: NouveauSvmm, va: number, npages: number): Promise<number> {
    if (s.driver !== this || s.closed) throw new HmmError("EINVAL", "s: a live VA space of this GPU", "s");
    if (!Number.isSafeInteger(va) || va % PAGE_SIZE !== 0) throw new HmmError("EINVAL", `va: page aligned, got ${va}`, "va");
    if (!Number.isSafeInteger(npages) || npages <= 0) throw new HmmError("EINVAL", `npages: > 0, got ${npages}`, "npages");
    const w = this.lock.acquire();
    if (w !== undefined) await w;
    try {
      return await this.migrateRangeLocked(s, va, npages, "explicit", false);
    } finally {
      this.lock.release();
    }
  }

  private async migrateRangeLocked(
    s: NouveauSvmm,
    va: number,
    npages: number,
    cause: "counters" | "explicit",
    skipHoles: boolean,
  ): Promise<number> {
    const mm = s.mm;
    const end = va + npages * PAGE_SIZE;
    // Runs of pages not already mapped from this GPU's VRAM, at most one block each.
    const runs: [Vma, number, number][] = [];
    let ret = 0;
    for (let a = va; a < end; ) {
      const vma = mm.findVma(a);
      if (vma === undefined || (vma.flags & VM.READ) === 0) {
        if (skipHoles) {
          a += PAGE_SIZE;
          continue;
        }
        ret = -ERRNO.EINVAL;
        break;
      }
      const next = Math.min(end, vma.end, (Math.floor(a / GPU_BLOCK_SIZE) + 1) * GPU_BLOCK_SIZE);
      for (let p = a; p < next; ) {
        const f = s.pteFlags(p);
        if ((f & PTE_VALID) !== 0 && f >> 8 === APERTURE_VID) {
          p += PAGE_SIZE;
          continue;
        }
        let q = p + PAGE_SIZE;
        while (q < next) {
          const g = s.pteFlags(q);
          if ((g & PTE_VALID) !== 0 && g >> 8 === APERTURE_VID) break;
          q += PAGE_SIZE;
        }
        runs.push([vma, p, q]);
        p = q;
      }
      a = next;
    }
    // Batches of up to 16 windows (8 MiB): one reservation and one fence each.
    for (let r0 = 0; r0 < runs.length; r0 += 16) {
      const part = runs.slice(r0, r0 + 16);
      let need = 0;
      for (const [, p, q] of part) need += (q - p) / PAGE_SIZE;
      if (this.dmem.freePages < need) await this.dmem.reserve(need);
      const batch = this.dmem.beginBatch();
      for (const [vma, p, q] of part) {
        if (mm.dead || mm.findVma(p) !== vma) continue;
        this.dmem.prepareWindow(batch, { mm, vma, start: p, end: q, instance: s.instance }, undefined, cause);
      }
      await this.dmem.runBatch(batch);
    }
    return ret;
  }

  /**
   * What is still held by this driver, for leak guards.
   * @returns human-readable problems; empty when idle and empty.
   */
  quiescent(): string[] {
    const out: string[] = [];
    if (this.lock.busy) out.push(`nouveau${this.index}: service in progress`);
    if (this.dmem.usedPages > 0) out.push(`nouveau${this.index}: ${this.dmem.usedPages} VRAM page(s) in use`);
    if (this.dmem.freePages !== this.dmem.nchunks * 512) out.push(`nouveau${this.index}: free lists hold ${this.dmem.freePages} pages`);
    if (this.svmms.size > 0) out.push(`nouveau${this.index}: ${this.svmms.size} VA space(s) bound`);
    return out;
  }
}
