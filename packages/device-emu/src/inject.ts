/**
 * Fault injection: DMA errors, ECC poison on VRAM pages, and link failures, each reported to the
 * driver through the path real hardware would use.
 *
 * Theory of operation.
 * - DMA error: {@link FaultInjector.injectDmaError} arms a one-shot (or `count`-shot) error for
 *   the next copy batches a GPU (optionally one engine) starts. The batch stops at descriptor
 *   `descriptor` (default 0; clamped to the batch's last): the descriptors before it complete and
 *   move their bytes, the rest do not run, and the batch's fence carries a {@link DmaError} EIO
 *   naming the descriptor — the driver sees it where it waits, as with `dma_fence_set_error`.
 *   Arming is FIFO per GPU, so which batch fails is deterministic.
 * - ECC poison: {@link FaultInjector.poisonVram} marks a VRAM frame as holding an uncorrectable
 *   error. The GPU reports it at once: `didDetectEccError` fires and the driver's
 *   {@link GpuDriverOps.handleEccError} is called (its job: call the kernel's memory-failure path
 *   for the device page and retire the frame). From then on device reads of the frame fail: a
 *   copy reading it ends with EIO, a kernel reading it loses the warp with EIO. Writes still land
 *   (the frame keeps its poison until {@link Vram.unpoison}).
 * - Link down: {@link FaultInjector.setLinkState} takes a host or peer link down (in-flight copies
 *   over it fail with EIO, new ones fail at once, compute accesses over it kill their warp) or
 *   brings it back. `didChangeLinkState` fires either way.
 *
 * Every injection is counted in {@link FaultInjector.stats}. Randomised campaigns draw from the
 * machine's seeded Rng (fork a stream) and call these methods, so runs stay reproducible.
 *
 * @see mm/memory-failure.c (memory_failure), include/linux/dma-fence.h (dma_fence_set_error),
 *      drivers/pci/pcie/aer.c; NVIDIA Xid 48 (double-bit ECC), Xid 74 (NVLink error)
 */
import { einval } from "@hmmkit/core/sim";
import type { CopyInjectionHook } from "./copy-engine";
import type { Link } from "./links";

/** Options of {@link FaultInjector.injectDmaError}. */
export interface DmaErrorOptions {
  /** Only batches started on this engine; default any engine of the GPU. */
  readonly engine?: number;
  /** Index of the failing descriptor in the batch (default 0, clamped to the batch's last). */
  readonly descriptor?: number;
  /** Number of batches to fail (default 1). */
  readonly count?: number;
}

/** Counters of injected faults. */
export interface InjectionStats {
  /** DMA errors armed. */
  dmaErrorsArmed: number;
  /** DMA errors that failed a batch. */
  dmaErrorsFired: number;
  /** VRAM frames poisoned. */
  eccPoisoned: number;
  /** Link-down transitions. */
  linkDowns: number;
}

/** What the injector needs from the platform. */
export interface InjectionTarget {
  /** Number of GPUs. */
  readonly gpuCount: number;
  /**
   * Engines of a GPU.
   * @param gpu - GPU index.
   * @returns the number of copy engines.
   */
  enginesOf(gpu: number): number;
  /**
   * Poison a VRAM frame and report it.
   * @param gpu - GPU index.
   * @param pfn - the frame.
   * @returns false if it was already poisoned.
   */
  poison(gpu: number, pfn: number): boolean;
  /**
   * Find a link by name (`"gpu0.host"`, `"gpu0-gpu1"`).
   * @param name - link name.
   * @returns the link, or undefined.
   */
  linkByName(name: string): Link | undefined;
}

interface Armed {
  engine: number;
  descriptor: number;
  remaining: number;
}

/**
 * The platform's fault injector.
 *
 * Context: synchronous; may be called at any time, including from event callbacks.
 * @see mm/hwpoison-inject.c (the kernel's own poison injector), fault-inject.c
 */
export class FaultInjector implements CopyInjectionHook {
  /** Injection counters. */
  readonly stats: InjectionStats = { dmaErrorsArmed: 0, dmaErrorsFired: 0, eccPoisoned: 0, linkDowns: 0 };
  private readonly armed: Armed[][] = [];

  /** @param target - the platform. */
  constructor(private readonly target: InjectionTarget) {
    for (let g = 0; g < target.gpuCount; g++) this.armed.push([]);
  }

  /**
   * Make the next copy batch(es) of a GPU fail with EIO.
   * @param gpu - GPU index.
   * @param opts - engine filter, failing descriptor, count.
   * @throws HmmError EINVAL for a bad GPU, engine, descriptor or count.
   * Context: synchronous.
   * @see dma_fence_set_error
   */
  injectDmaError(gpu: number, opts: DmaErrorOptions = {}): void {
    this.checkGpu(gpu);
    const engine = opts.engine ?? -1;
    if (opts.engine !== undefined && (!Number.isInteger(engine) || engine < 0 || engine >= this.target.enginesOf(gpu))) {
      einval("opts.engine", `an engine of gpu${gpu} in [0, ${this.target.enginesOf(gpu)}), got ${engine}`);
    }
    const descriptor = opts.descriptor ?? 0;
    if (!Number.isInteger(descriptor) || descriptor < 0) einval("opts.descriptor", `a descriptor index >= 0, got ${descriptor}`);
    const count = opts.count ?? 1;
    if (!Number.isInteger(count) || count < 1) einval("opts.count", `a positive integer, got ${count}`);
    (this.armed[gpu] as Armed[]).push({ engine, descriptor, remaining: count });
    this.stats.dmaErrorsArmed += count;
  }

  /**
   * Poison a VRAM frame (uncorrectable ECC error) and report it to the driver.
   * @param gpu - GPU index.
   * @param pfn - a pfn of that GPU's VRAM.
   * @returns false if the frame was already poisoned (nothing reported again).
   * @throws HmmError EINVAL for a bad GPU or a pfn outside its VRAM.
   * Context: synchronous; the driver's handleEccError runs before this returns.
   * @see memory_failure, hwpoison_inject
   */
  poisonVram(gpu: number, pfn: number): boolean {
    this.checkGpu(gpu);
    const fresh = this.target.poison(gpu, pfn);
    if (fresh) this.stats.eccPoisoned++;
    return fresh;
  }

  /**
   * Take a link down or bring it back up.
   * @param link - the link or its name (`"gpu0.host"`, `"gpu0-gpu1"`).
   * @param up - the new state.
   * @throws HmmError EINVAL for an unknown link name.
   * Context: synchronous; failing copies' callbacks run before this returns (their fences
   *   signal then).
   * @see pcie AER link-down, NVLink Xid 74
   */
  setLinkState(link: Link | string, up: boolean): void {
    const l = typeof link === "string" ? this.target.linkByName(link) : link;
    if (l === undefined) einval("link", `a link name such as "gpu0.host" or "gpu0-gpu1", got ${String(link)}`);
    if (!up && l.up) this.stats.linkDowns++;
    l.setUp(up);
  }

  /**
   * Consume an armed DMA error for a batch about to start (called by the copy engines).
   * @param gpu - GPU index.
   * @param engine - engine starting the batch.
   * @param descriptors - descriptors in the batch.
   * @returns the failing descriptor index (clamped), or -1 when none is armed.
   */
  takeDmaError(gpu: number, engine: number, descriptors: number): number {
    const list = this.armed[gpu];
    if (list === undefined || list.length === 0) return -1;
    for (let i = 0; i < list.length; i++) {
      const a = list[i] as Armed;
      if (a.engine !== -1 && a.engine !== engine) continue;
      if (--a.remaining === 0) list.splice(i, 1);
      this.stats.dmaErrorsFired++;
      return Math.min(a.descriptor, descriptors - 1);
    }
    return -1;
  }

  /**
   * DMA errors armed and not yet fired on a GPU.
   * @param gpu - GPU index.
   * @returns the count.
   */
  pendingDmaErrors(gpu: number): number {
    let n = 0;
    for (const a of this.armed[gpu] ?? []) n += a.remaining;
    return n;
  }

  private checkGpu(gpu: number): void {
    if (!Number.isInteger(gpu) || gpu < 0 || gpu >= this.target.gpuCount)
      einval("gpu", `a GPU index in [0, ${this.target.gpuCount}), got ${gpu}`);
  }
}
