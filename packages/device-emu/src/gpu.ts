/**
 * `GpuDevice`: one emulated GPU — VRAM, MMU (GPU VA spaces), compute engine, replayable fault
 * buffer, access counters, copy engines and IOMMU — and the driver binding that services it.
 *
 * Theory of operation. A GPU is built by its {@link Platform} from a validated configuration; its
 * parts are plain objects wired by constructor (hardware has no DI). The driver binds its
 * {@link GpuDriverOps} with {@link GpuDevice.bindDriver}: fault batches, access-counter
 * notifications and ECC errors are then delivered to it. Obligations are these callbacks; the
 * trace bus only observes. A driver typically:
 *
 * 1. exposes `gpu.vram.basePfn .. + npages` to the kernel with memremapPages and allocates
 *    frames itself;
 * 2. creates a GPU VA space per process ({@link GpuDevice.createVaSpace}) and maps pages in it
 *    (VID for VRAM, SYS with a DMA address from `gpu.iommu.dmaMapPage`, PEER for a linked GPU);
 * 3. services fault batches by migrating (`gpu.copy.submit` + awaiting the fence) and mapping;
 *    the replay policy (or the driver, under "block") replays.
 *
 * Lifecycle: {@link GpuDevice.quiescent} lists what is still in flight (copies, kernels, fault or
 * counter servicing, DMA mappings, VA-space mappings, claimed VRAM), for leak guards.
 *
 * @see drivers/gpu/drm/nouveau/nouveau_svm.c + nouveau_dmem.c (a GPU driver's HMM side), NVIDIA
 *      uvm_gpu.c (uvm_gpu_t), lib/test_hmm.c (dmirror)
 */

import type { PhysContext } from "@hmmkit/core/phys";
import type { TraceBus } from "@hmmkit/core/sim";
import { einval, HmmError } from "@hmmkit/core/sim";
import { type AccessCounterBatch, type AccessCounterConfig, AccessCounters } from "./access-counters";
import { type ComputeConfig, ComputeEngine } from "./compute";
import { type CopyEngineConfig, CopyEngines, type CopyInjectionHook } from "./copy-engine";
import type { DeviceEvents } from "./events";
import type { GpuFabric } from "./fabric";
import { type FaultBatch, FaultBuffer, type FaultBufferConfig } from "./fault-buffer";
import { GpuVaSpace } from "./gpu-mmu";
import { Iommu } from "./iommu";
import type { Link } from "./links";
import { Vram } from "./vram";

/**
 * The driver's callbacks (its obligations towards the hardware). All are optional; an unbound
 * GPU keeps its faults and notifications pending until a driver binds.
 *
 * @see struct nouveau_svm (fault buffer handler), uvm_parent_gpu_service_replayable_faults,
 *      uvm_gpu_service_access_counters
 */
export interface GpuDriverOps {
  /**
   * Service a batch of coalesced replayable faults (make the pages resident and map them, or
   * cancel the faults). The replay policy runs when the returned promise settles. A throw or
   * rejection is a driver bug: it propagates (as an unhandled rejection) and stops the bottom half.
   * @param batch - the batch; its arrays are reused by the next batch.
   */
  serviceFaults?(batch: FaultBatch): Promise<void> | void;
  /**
   * Handle a batch of access-counter notifications (e.g. migrate hot remote regions).
   * @param batch - the batch; its arrays are reused by the next batch.
   */
  serviceAccessCounters?(batch: AccessCounterBatch): Promise<void> | void;
  /**
   * An uncorrectable ECC error was found in a VRAM frame: the driver should run the kernel's
   * memory-failure path for the device page and retire the frame.
   * @param pfn - the poisoned frame.
   */
  handleEccError?(pfn: number): void;
}

/** A GPU's validated configuration. */
export interface GpuResolvedConfig {
  /** Name, e.g. `"gpu0"`. */
  readonly name: string;
  /** VRAM in MiB. */
  readonly vramMiB: number;
  /** VRAM bandwidth, GB/s. */
  readonly vramBandwidthGBps: number;
  /** Copy engines. */
  readonly copy: CopyEngineConfig;
  /** Fault buffer. */
  readonly faultBuffer: FaultBufferConfig;
  /** Access counters. */
  readonly accessCounters: AccessCounterConfig;
  /** Compute engine. */
  readonly compute: ComputeConfig;
}

/**
 * One emulated GPU.
 *
 * Context: every method is synchronous; work that takes time completes from the clock's run loop.
 * @see uvm_gpu_t (NVIDIA UVM), struct nouveau_drm / nvkm_device
 */
export class GpuDevice {
  /** The GPU's VRAM (a device region of the machine's physical memory). */
  readonly vram: Vram;
  /** The GPU's IOMMU domain. */
  readonly iommu: Iommu;
  /** The replayable fault buffer and its service loop. */
  readonly faults: FaultBuffer;
  /** Access counters. */
  readonly accessCounters: AccessCounters;
  /** DMA copy engines. */
  readonly copy: CopyEngines;
  /** The compute engine. */
  readonly compute: ComputeEngine;
  private ops: GpuDriverOps | undefined;
  private readonly spaces = new Map<number, GpuVaSpace>();
  private spaceSeq = 1;
  /** Poisoned frames reported while no driver handled ECC errors (oldest first). */
  readonly unhandledEcc: number[] = [];

  /**
   * Built by {@link Platform.create}; not for direct use.
   * @param index - GPU index on the platform.
   * @param config - validated configuration.
   * @param ctx - the machine's physical-memory services.
   * @param fabric - the platform's links.
   * @param bus - the platform's trace bus.
   * @param inject - fault-injection hook for the copy engines.
   */
  constructor(
    readonly index: number,
    readonly config: GpuResolvedConfig,
    ctx: PhysContext,
    private readonly fabric: GpuFabric,
    private readonly bus: TraceBus<DeviceEvents>,
    inject: CopyInjectionHook,
  ) {
    this.vram = new Vram(ctx, index, (config.vramMiB * 1024 * 1024) / 4096);
    this.iommu = new Iommu(index, ctx.pages, bus);
    this.faults = new FaultBuffer(index, config.faultBuffer, ctx.clock, bus, {
      serviceFaults: () => {
        const o = this.ops;
        return o?.serviceFaults === undefined
          ? undefined
          : (b: FaultBatch) => (o.serviceFaults as (b: FaultBatch) => Promise<void> | void).call(o, b);
      },
      replayStalled: () => this.compute.replayStalled(),
      cancelStalled: (instance, page) => this.compute.cancelStalled(instance, page),
    });
    this.accessCounters = new AccessCounters(index, config.accessCounters, ctx.clock, bus, () => {
      const o = this.ops;
      return o?.serviceAccessCounters === undefined
        ? undefined
        : (b: AccessCounterBatch) => (o.serviceAccessCounters as (b: AccessCounterBatch) => Promise<void> | void).call(o, b);
    });
    this.copy = new CopyEngines(index, config.copy, ctx.clock, ctx.contents, this.iommu, fabric, bus, inject);
    this.compute = new ComputeEngine(
      index,
      config.compute,
      ctx.clock,
      fabric,
      this.vram,
      this.iommu,
      this.faults,
      this.accessCounters,
      bus,
    );
  }

  /** The GPU's name. */
  get name(): string {
    return this.config.name;
  }

  /** The GPU's host link. */
  get hostLink(): Link {
    return this.fabric.hostLink(this.index);
  }

  /**
   * The peer link to another GPU.
   * @param gpu - the other GPU.
   * @returns the link, or undefined when there is none.
   */
  peerLink(gpu: number): Link | undefined {
    return this.fabric.peerLink(this.index, gpu);
  }

  /** The bound driver's ops, if any. */
  get driver(): GpuDriverOps | undefined {
    return this.ops;
  }

  /**
   * Bind a driver: from now on it receives fault batches, notifications and ECC errors. Pending
   * faults and notifications are delivered (after the interrupt latency), and ECC errors found
   * while unbound are reported at once.
   * @param ops - the driver's callbacks.
   * @throws HmmError EBUSY if a driver is already bound (unbind first); EINVAL if `ops` is not
   *   an object.
   * Context: synchronous.
   * @see pci_driver.probe, nouveau_svm_init, uvm_gpu_retain
   */
  bindDriver(ops: GpuDriverOps): void {
    if (this.ops !== undefined) throw new HmmError("EBUSY", `ops: ${this.name} already has a driver bound (unbind it first)`, "ops");
    if (ops === null || typeof ops !== "object") einval("ops", "a GpuDriverOps object");
    this.ops = ops;
    this.faults.kick();
    this.accessCounters.kick();
    if (ops.handleEccError !== undefined) {
      const list = this.unhandledEcc.splice(0);
      for (const pfn of list) ops.handleEccError(pfn);
    }
  }

  /**
   * Unbind the driver. Faults and notifications stay pending.
   * Context: synchronous.
   * @see pci_driver.remove
   */
  unbindDriver(): void {
    this.ops = undefined;
  }

  /**
   * Create a GPU VA space (a channel's page directory).
   * @returns the new space; its `id` is the instance id its faults carry.
   * Context: synchronous.
   * @see uvm_gpu_va_space_create, nouveau_svmm_init
   */
  createVaSpace(): GpuVaSpace {
    const s = new GpuVaSpace(this.index, this.spaceSeq++);
    this.spaces.set(s.id, s);
    return s;
  }

  /**
   * Destroy a GPU VA space whose mappings are all gone.
   * @param space - a space of this GPU.
   * @throws HmmError EINVAL if it is not one of this GPU's live spaces or still has mappings.
   * Context: synchronous.
   * @see uvm_gpu_va_space_destroy
   */
  destroyVaSpace(space: GpuVaSpace): void {
    if (this.spaces.get(space.id) !== space) einval("space", `a live VA space of ${this.name}`);
    if (space.validPtes !== 0) einval("space", `a VA space with no mappings left, ${space.validPtes} PTEs still valid`);
    this.spaces.delete(space.id);
  }

  /**
   * A live VA space by instance id (to resolve a fault's instance).
   * @param id - instance id.
   * @returns the space, or undefined.
   * @see uvm_parent_gpu_fault_entry_to_va_space
   */
  vaSpace(id: number): GpuVaSpace | undefined {
    return this.spaces.get(id);
  }

  /**
   * Report an uncorrectable ECC error on a VRAM frame (used by the fault injector).
   * @param pfn - a VRAM pfn.
   * @returns false if it was already poisoned.
   * @throws HmmError EINVAL if `pfn` is not in this GPU's VRAM.
   * Context: synchronous; the driver's handleEccError runs before this returns.
   * @see memory_failure
   */
  reportEccError(pfn: number): boolean {
    if (!this.vram.contains(pfn)) einval("pfn", `a pfn of ${this.name}'s VRAM, got ${pfn}`);
    if (!this.vram.setPoison(pfn)) return false;
    if (this.bus.wants("didDetectEccError")) this.bus.emit("didDetectEccError", { gpu: this.index, pfn });
    const h = this.ops?.handleEccError;
    if (h !== undefined) h.call(this.ops, pfn);
    else this.unhandledEcc.push(pfn);
    return true;
  }

  /**
   * What is still in flight or held on this GPU, for leak guards.
   * @returns human-readable problems; empty when the GPU is quiescent.
   */
  quiescent(): string[] {
    const out: string[] = [];
    const n = this.name;
    if (!this.copy.idle) out.push(`${n}: ${this.copy.outstandingBatches} copy batch(es) outstanding`);
    if (!this.compute.idle) out.push(`${n}: ${this.compute.liveWarps} warp(s) live`);
    if (this.faults.busy) out.push(`${n}: fault servicing in progress`);
    if (this.faults.pending > 0) out.push(`${n}: ${this.faults.pending} fault(s) pending in the buffer`);
    if (this.accessCounters.busy || this.accessCounters.pending > 0) out.push(`${n}: access-counter notifications pending`);
    if (this.iommu.mappedPages > 0) out.push(`${n}: ${this.iommu.mappedPages} page(s) still DMA-mapped`);
    for (const s of this.spaces.values()) if (s.validPtes > 0) out.push(`${n}: VA space ${s.id} has ${s.validPtes} valid PTE(s)`);
    if (this.vram.framesInUse > 0) out.push(`${n}: ${this.vram.framesInUse} VRAM frame(s) claimed`);
    return out;
  }
}
