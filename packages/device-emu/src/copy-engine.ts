/**
 * DMA copy engines: engines × channels per GPU, executing batches of copy descriptors with the
 * timing of their path, moving real bytes, and signalling a fence per batch.
 *
 * Theory of operation. A {@link CopyBatch} is a list of descriptors in typed arrays: source
 * aperture and address, destination aperture and address, length in bytes. Apertures are those
 * of the GPU MMU: VID (this GPU's VRAM, by VRAM offset), SYS (system memory, by DMA address,
 * translated by this GPU's IOMMU) and PEER k (GPU k's VRAM, by its VRAM offset, over the peer
 * link). Supported paths: VID↔VID, SYS→VID, VID→SYS, PEER→VID, VID→PEER; SYS→SYS is refused as
 * UVM refuses it by default (`uvm_block_cpu_to_cpu_copy_with_ce` = 0), and PEER↔SYS/PEER↔PEER
 * need the other GPU's engine.
 *
 * {@link CopyEngines.submit} validates the whole batch synchronously (EINVAL naming the
 * descriptor field; nothing is queued then), snapshots it, and queues it on one channel. Each
 * channel is a p-queue with concurrency `channelConcurrency` (default 1: a channel executes its
 * GPFIFO entries in order, as UVM's channels do); channels and engines run in parallel. The
 * channel is chosen by the caller or, by default, as the least loaded (queued + running), ties
 * to the lowest (engine, channel). p-queue only orders work: every duration is virtual time.
 *
 * Execution of a batch, at the virtual time its channel starts it:
 * 1. Translation. Every page of every descriptor is translated now, in a typed-array loop: VID
 *    and PEER to VRAM pfns, SYS through the IOMMU (each IOVA page's in-flight count is raised
 *    until completion, so unmapping it meanwhile is reported as a bug). The first descriptor that
 *    cannot run ends the batch there: IOMMU refusal (`io_page_fault` event, fence error EFAULT),
 *    a read of an ECC-poisoned VRAM page (EIO), or an injected DMA error (EIO). Descriptors before
 *    it still execute. Contiguous pages are merged into runs.
 * 2. Timing. Consecutive descriptors on the same path form a segment; segments run one after the
 *    other. A segment of `d` descriptors and `b` bytes first waits `d × latency` of its path (a
 *    per-transfer latency, as UVMSmart charges every transfer; VRAM↔VRAM uses
 *    `localCopyLatencyNs`), then moves `b` bytes (2b on the VRAM port for a local copy: it reads
 *    and writes VRAM) as one flow on the path's {@link LinkResource}, sharing its bandwidth fairly
 *    with every other flow there. So a lone transfer takes latency + bytes / bandwidth, and two
 *    concurrent transfers over one link each take about twice as long. A link that is down, or
 *    goes down mid-flow, fails the segment with EIO.
 * 3. Completion. The bytes of every completed segment move (core `Contents.copyPages` per run,
 *    byte copies for unaligned parts), IOVA in-flight counts drop, statistics update, then the
 *    fence signals (with a {@link DmaError} naming the failing descriptor when one failed) and
 *    `dma_fence_signaled` fires.
 *
 * Statistics: per engine busy time (any channel running), utilisation, batches, descriptors,
 * bytes and errors; per channel current and maximum queue depth; bytes per link direction live on
 * the links themselves.
 *
 * @see NVIDIA uvm_channel.c (channel pools, 2 channels per CE pool, GPFIFO), uvm_push.c,
 *      uvm_ce_test.c, uvm_va_block.c block_copy_resident_pages; include/linux/dma-fence.h;
 *      drivers/gpu/drm/nouveau/nouveau_dmem.c (nvc0b5_migrate_copy)
 */

import { type Contents, PAGE_SIZE } from "@hmmkit/core/phys";
import type { Fence, SimClock, TraceBus } from "@hmmkit/core/sim";
import { type Errno, einval, Fence as FenceImpl, HmmError } from "@hmmkit/core/sim";
import PQueue from "p-queue";
import type { DeviceEvents } from "./events";
import { type GpuFabric, peerDirection } from "./fabric";
import { APERTURE_SYS, APERTURE_VID } from "./gpu-mmu";
import { IOMMU_READ, IOMMU_WRITE, IOVA_BASE, type Iommu } from "./iommu";
import type { Link, LinkResource } from "./links";

/**
 * The error a copy batch's fence carries when a descriptor failed.
 * @see dma_fence_set_error
 */
export class DmaError extends HmmError {
  /**
   * @param code - EFAULT (IOMMU refusal) or EIO (ECC, injected DMA error, link down).
   * @param message - what failed.
   * @param descriptor - index of the failing descriptor in its batch.
   */
  constructor(
    code: Errno,
    message: string,
    readonly descriptor: number,
  ) {
    super(code, message, `descriptors[${descriptor}]`);
    this.name = "DmaError";
  }
}

/**
 * A list of copy descriptors in growable typed arrays (reusable: clear and refill).
 *
 * @example
 * ```ts
 * const b = new CopyBatch();
 * b.push(APERTURE_SYS, dmaAddr, APERTURE_VID, gpu.vram.pfnToAddr(pfn), 4096);
 * const fence = gpu.copy.submit(b);
 * ```
 * @see the methods UVM pushes per copy (ce_hal->memcopy) and nouveau's migrate copy
 */
export class CopyBatch {
  /** Number of descriptors. */
  count = 0;
  /** Per descriptor: source aperture. */
  srcAperture: Uint8Array;
  /** Per descriptor: source address. */
  srcAddr: Float64Array;
  /** Per descriptor: destination aperture. */
  dstAperture: Uint8Array;
  /** Per descriptor: destination address. */
  dstAddr: Float64Array;
  /** Per descriptor: length in bytes. */
  length: Float64Array;

  /** @param capacity - initial capacity in descriptors (grows as needed). */
  constructor(capacity = 64) {
    const c = Math.max(1, capacity);
    this.srcAperture = new Uint8Array(c);
    this.srcAddr = new Float64Array(c);
    this.dstAperture = new Uint8Array(c);
    this.dstAddr = new Float64Array(c);
    this.length = new Float64Array(c);
  }

  /**
   * Append a descriptor (validated at submit).
   * @param srcAperture - APERTURE_VID, APERTURE_SYS or aperturePeer(k).
   * @param srcAddr - source address in that aperture.
   * @param dstAperture - destination aperture.
   * @param dstAddr - destination address.
   * @param length - bytes.
   * @returns this, for chaining.
   */
  push(srcAperture: number, srcAddr: number, dstAperture: number, dstAddr: number, length: number): this {
    if (this.count === this.length.length) this.grow();
    const i = this.count++;
    this.srcAperture[i] = srcAperture;
    this.srcAddr[i] = srcAddr;
    this.dstAperture[i] = dstAperture;
    this.dstAddr[i] = dstAddr;
    this.length[i] = length;
    return this;
  }

  /** Forget every descriptor (keeps the storage). */
  clear(): void {
    this.count = 0;
  }

  private grow(): void {
    const c = this.length.length * 2;
    const g = <T extends Uint8Array | Float64Array>(a: T, C: new (n: number) => T): T => {
      const b = new C(c);
      b.set(a as never);
      return b;
    };
    this.srcAperture = g(this.srcAperture, Uint8Array);
    this.srcAddr = g(this.srcAddr, Float64Array);
    this.dstAperture = g(this.dstAperture, Uint8Array);
    this.dstAddr = g(this.dstAddr, Float64Array);
    this.length = g(this.length, Float64Array);
  }
}

/** Options of {@link CopyEngines.submit}. */
export interface SubmitOptions {
  /** Engine index; default: the least loaded channel of any engine. */
  readonly engine?: number;
  /** Channel index within the engine (requires `engine`); default: its least loaded channel. */
  readonly channel?: number;
}

/** Per-engine statistics. */
export interface CopyEngineStats {
  /** Virtual ns during which at least one channel of the engine ran a batch. */
  busyNs: number;
  /** Batches completed (successfully or not). */
  batches: number;
  /** Descriptors executed to completion. */
  descriptors: number;
  /** Bytes moved to completion. */
  bytes: number;
  /** Batches that ended with an error. */
  errors: number;
}

/** Configuration of one GPU's copy engines (validated by the platform). */
export interface CopyEngineConfig {
  /** Number of engines. */
  readonly engines: number;
  /** Channels per engine. */
  readonly channelsPerEngine: number;
  /** Concurrent batches per channel (p-queue concurrency). */
  readonly channelConcurrency: number;
  /** Per-descriptor latency of a VRAM↔VRAM copy, ns. */
  readonly localCopyLatencyNs: number;
}

/** What the copy engines consult per batch (fault injection). */
export interface CopyInjectionHook {
  /**
   * Whether the batch about to start on (gpu, engine) must fail, and at which descriptor.
   * @returns the failing descriptor index, or -1.
   */
  takeDmaError(gpu: number, engine: number, descriptors: number): number;
}

const OP_INIT = 64;
/** 1 / PAGE_SIZE: multiplying by a power-of-two reciprocal is exact and cheaper than % or /. */
const INV_PAGE = 1 / PAGE_SIZE;

interface Segment {
  res: LinkResource;
  link: Link | null;
  latency: number;
  bytes: number;
  ndesc: number;
  opEnd: number;
  descEnd: number;
}

/** One submitted batch, from submit to signal. */
class CopyJob {
  ops = 0;
  opSrc: Float64Array;
  opDst: Float64Array;
  opSrcOff: Uint16Array;
  opDstOff: Uint16Array;
  opBytes: Float64Array;
  opPages: Uint8Array;
  iovas: Float64Array;
  niovas = 0;
  barrier = false;
  readonly descOpEnd: Float64Array;
  error: DmaError | undefined;
  constructor(
    readonly seqno: number,
    readonly engine: number,
    readonly channel: number,
    readonly n: number,
    readonly srcAp: Uint8Array,
    readonly srcAddr: Float64Array,
    readonly dstAp: Uint8Array,
    readonly dstAddr: Float64Array,
    readonly len: Float64Array,
    readonly fence: FenceImpl,
  ) {
    this.descOpEnd = new Float64Array(n);
    // Sized for one page per descriptor (the common case); grows for larger ones.
    const c = Math.max(OP_INIT, n + 1);
    this.opSrc = new Float64Array(c);
    this.opDst = new Float64Array(c);
    this.opSrcOff = new Uint16Array(c);
    this.opDstOff = new Uint16Array(c);
    this.opBytes = new Float64Array(c);
    this.opPages = new Uint8Array(c);
    this.iovas = new Float64Array(2 * c);
  }

  pushOp(src: number, srcOff: number, dst: number, dstOff: number, bytes: number, pages: boolean): void {
    const k = this.ops;
    if (this.barrier) this.barrier = false;
    else if (pages && k > 0 && this.opPages[k - 1] === 1) {
      const np = (this.opBytes[k - 1] as number) / PAGE_SIZE;
      if ((this.opSrc[k - 1] as number) + np === src && (this.opDst[k - 1] as number) + np === dst) {
        this.opBytes[k - 1] = (this.opBytes[k - 1] as number) + PAGE_SIZE;
        return;
      }
    }
    if (k === this.opSrc.length) this.growOps();
    this.opSrc[k] = src;
    this.opDst[k] = dst;
    this.opSrcOff[k] = srcOff;
    this.opDstOff[k] = dstOff;
    this.opBytes[k] = bytes;
    this.opPages[k] = pages ? 1 : 0;
    this.ops = k + 1;
  }

  pushIova(idx: number): void {
    if (this.niovas === this.iovas.length) {
      const a = new Float64Array(this.iovas.length * 2);
      a.set(this.iovas);
      this.iovas = a;
    }
    this.iovas[this.niovas++] = idx;
  }

  private growOps(): void {
    const c = this.opSrc.length * 2;
    const f = (a: Float64Array): Float64Array => {
      const b = new Float64Array(c);
      b.set(a);
      return b;
    };
    this.opSrc = f(this.opSrc);
    this.opDst = f(this.opDst);
    this.opBytes = f(this.opBytes);
    const s = new Uint16Array(c);
    s.set(this.opSrcOff);
    this.opSrcOff = s;
    const d = new Uint16Array(c);
    d.set(this.opDstOff);
    this.opDstOff = d;
    const p = new Uint8Array(c);
    p.set(this.opPages);
    this.opPages = p;
  }
}

/**
 * One GPU's copy engines.
 *
 * Context: `submit` is synchronous and may be called from anywhere (driver code, event
 * callbacks); the returned fence signals from the clock's run loop.
 * @see uvm_channel.c, uvm_push.c, include/linux/dma-fence.h
 */
export class CopyEngines {
  /** Per engine statistics. */
  readonly stats: CopyEngineStats[];
  private readonly queues: PQueue[];
  private readonly running: Int32Array;
  private readonly busySince: Float64Array;
  /** Per channel (engine * channelsPerEngine + channel): highest queue depth seen. */
  readonly maxQueueDepth: Int32Array;
  private seq = 0;
  private outstanding = 0;
  private readonly tmp = new Uint8Array(PAGE_SIZE);

  /**
   * @param gpu - GPU index.
   * @param config - validated configuration.
   * @param clock - the machine's clock.
   * @param contents - page contents (real bytes).
   * @param iommu - this GPU's IOMMU.
   * @param fabric - links and peers.
   * @param bus - the platform's trace bus.
   * @param inject - fault-injection hook.
   */
  constructor(
    readonly gpu: number,
    readonly config: CopyEngineConfig,
    private readonly clock: SimClock,
    private readonly contents: Contents,
    private readonly iommu: Iommu,
    private readonly fabric: GpuFabric,
    private readonly bus: TraceBus<DeviceEvents>,
    private readonly inject: CopyInjectionHook,
  ) {
    const nch = config.engines * config.channelsPerEngine;
    this.queues = [];
    for (let i = 0; i < nch; i++) this.queues.push(new PQueue({ concurrency: config.channelConcurrency }));
    this.running = new Int32Array(config.engines);
    this.busySince = new Float64Array(config.engines);
    this.maxQueueDepth = new Int32Array(nch);
    this.stats = [];
    for (let e = 0; e < config.engines; e++) this.stats.push({ busyNs: 0, batches: 0, descriptors: 0, bytes: 0, errors: 0 });
  }

  /** Batches submitted and not yet signalled. */
  get outstandingBatches(): number {
    return this.outstanding;
  }

  /** Whether every channel is idle (nothing queued or running). */
  get idle(): boolean {
    return this.outstanding === 0;
  }

  /**
   * Current queue depth of a channel (queued + running batches).
   * @param engine - engine index.
   * @param channel - channel index.
   * @returns the depth.
   */
  queueDepth(engine: number, channel: number): number {
    const q = this.queues[engine * this.config.channelsPerEngine + channel];
    return q === undefined ? 0 : q.size + q.pending;
  }

  /**
   * Fraction of the elapsed virtual time an engine was busy.
   * @param engine - engine index.
   * @returns busy / now, in [0, 1].
   */
  utilisation(engine: number): number {
    const s = this.stats[engine];
    if (s === undefined || this.clock.now === 0) return 0;
    const busy = s.busyNs + ((this.running[engine] as number) > 0 ? this.clock.now - (this.busySince[engine] as number) : 0);
    return Math.min(1, busy / this.clock.now);
  }

  /**
   * Queue a batch of copies.
   * @param batch - descriptors (snapshotted: the caller may reuse it at once).
   * @param opts - engine/channel choice.
   * @returns a fence that signals when the batch is done; `fence.error` is a {@link DmaError}
   *   when a descriptor failed (EFAULT: IOMMU refusal; EIO: ECC poison, injected DMA error, link
   *   down), in which case the descriptors before it completed and the rest did not run.
   * @throws HmmError EINVAL naming the field (`batch.length[3]`, `batch.dstAperture[0]`, …) for an
   *   empty batch, a non-positive length, an unknown aperture, an unsupported path, a VRAM range
   *   out of bounds, a peer with no link, or a bad engine/channel. Nothing is queued then.
   * Context: synchronous; does not await. The fence signals from the clock's run loop.
   * @see uvm_push_begin/uvm_push_end + ce_hal->memcopy, dma_fence_emit, nouveau_dmem_copy_one
   */
  submit(batch: CopyBatch, opts: SubmitOptions = {}): Fence {
    const n = batch.count;
    if (!Number.isInteger(n) || n < 1) einval("batch.count", `at least one descriptor, got ${n}`);
    this.validate(batch);
    const ch = this.pickChannel(opts);
    const engine = Math.floor(ch / this.config.channelsPerEngine);
    const channel = ch % this.config.channelsPerEngine;
    const fence = new FenceImpl();
    const job = new CopyJob(
      this.seq++,
      engine,
      channel,
      n,
      batch.srcAperture.slice(0, n),
      batch.srcAddr.slice(0, n),
      batch.dstAperture.slice(0, n),
      batch.dstAddr.slice(0, n),
      batch.length.slice(0, n),
      fence,
    );
    this.outstanding++;
    if (this.bus.wants("dma_fence_emit")) {
      let bytes = 0;
      for (let i = 0; i < n; i++) bytes += job.len[i] as number;
      this.bus.emit("dma_fence_emit", { gpu: this.gpu, engine, channel, seqno: job.seqno, descriptors: n, bytes });
    }
    const q = this.queues[ch] as PQueue;
    q.add(() => this.execute(job)).catch((e: unknown) => {
      throw e;
    });
    const depth = q.size + q.pending;
    if (depth > (this.maxQueueDepth[ch] as number)) this.maxQueueDepth[ch] = depth;
    return fence;
  }

  private pickChannel(opts: SubmitOptions): number {
    const cpe = this.config.channelsPerEngine;
    if (opts.engine !== undefined) {
      if (!Number.isInteger(opts.engine) || opts.engine < 0 || opts.engine >= this.config.engines) {
        einval("opts.engine", `an engine index in [0, ${this.config.engines}), got ${opts.engine}`);
      }
      if (opts.channel !== undefined) {
        if (!Number.isInteger(opts.channel) || opts.channel < 0 || opts.channel >= cpe) {
          einval("opts.channel", `a channel index in [0, ${cpe}), got ${opts.channel}`);
        }
        return opts.engine * cpe + opts.channel;
      }
      return this.leastLoaded(opts.engine * cpe, (opts.engine + 1) * cpe);
    }
    if (opts.channel !== undefined) einval("opts.channel", "only together with opts.engine");
    return this.leastLoaded(0, this.queues.length);
  }

  private leastLoaded(from: number, to: number): number {
    let best = from;
    let bestDepth = Number.POSITIVE_INFINITY;
    for (let i = from; i < to; i++) {
      const q = this.queues[i] as PQueue;
      const d = q.size + q.pending;
      if (d < bestDepth) {
        bestDepth = d;
        best = i;
      }
    }
    return best;
  }

  private validate(b: CopyBatch): void {
    const myBytes = this.fabric.vramOf(this.gpu).bytes;
    const { srcAperture, dstAperture, srcAddr, dstAddr, length } = b;
    for (let i = 0; i < b.count; i++) {
      const len = length[i] as number;
      const sa = srcAperture[i] as number;
      const da = dstAperture[i] as number;
      const s = srcAddr[i] as number;
      const t = dstAddr[i] as number;
      // Fast accept for the common shapes; anything else goes through the precise checks.
      if (len > 0 && len === Math.floor(len) && s >= 0 && s === Math.floor(s) && t >= 0 && t === Math.floor(t)) {
        if (da === APERTURE_VID && t + len <= myBytes && (sa === APERTURE_SYS || (sa === APERTURE_VID && s + len <= myBytes))) continue;
        if (sa === APERTURE_VID && da === APERTURE_SYS && s + len <= myBytes) continue;
      }
      if (!Number.isInteger(len) || len <= 0) einval(`batch.length[${i}]`, `a positive integer byte count, got ${len}`);
      this.checkSide("src", i, sa, s, len, myBytes);
      this.checkSide("dst", i, da, t, len, myBytes);
      if (sa !== APERTURE_VID && da !== APERTURE_VID) {
        einval(
          `batch.dstAperture[${i}]`,
          "a path with this GPU's VRAM on one side (VID↔VID, SYS↔VID, PEER↔VID); SYS→SYS and PEER↔SYS/PEER need another engine",
        );
      }
    }
  }

  private checkSide(side: "src" | "dst", i: number, ap: number, addr: number, len: number, myBytes: number): void {
    const f = `batch.${side}Addr[${i}]`;
    if (!Number.isInteger(addr) || addr < 0) einval(f, `a non-negative integer address, got ${addr}`);
    if (ap === APERTURE_VID) {
      if (addr + len > myBytes) einval(f, `a range inside gpu${this.gpu}'s VRAM (${myBytes} bytes), got [${addr}, ${addr + len})`);
    } else if (ap !== APERTURE_SYS) {
      const k = ap - 2;
      if (k < 0 || k >= this.fabric.gpuCount || k === this.gpu) {
        einval(
          `batch.${side}Aperture[${i}]`,
          `APERTURE_VID, APERTURE_SYS or aperturePeer(k) for another GPU k < ${this.fabric.gpuCount}, got ${ap}`,
        );
      }
      if (this.fabric.peerLink(this.gpu, k) === undefined)
        einval(`batch.${side}Aperture[${i}]`, `a peer linked to gpu${this.gpu}; gpu${k} has no peer link to it`);
      const pb = this.fabric.vramOf(k).bytes;
      if (addr + len > pb) einval(f, `a range inside gpu${k}'s VRAM (${pb} bytes), got [${addr}, ${addr + len})`);
    }
  }

  /** The resource and link of a descriptor's path (validated already). */
  private pathOf(sa: number, da: number): { res: LinkResource; link: Link | null; latency: number; factor: number } {
    const g = this.gpu;
    if (sa === APERTURE_VID && da === APERTURE_VID) {
      return { res: this.fabric.vramPort(g), link: null, latency: this.config.localCopyLatencyNs, factor: 2 };
    }
    if (sa === APERTURE_SYS || da === APERTURE_SYS) {
      const l = this.fabric.hostLink(g);
      return { res: sa === APERTURE_SYS ? l.forward : l.reverse, link: l, latency: l.latencyNs, factor: 1 };
    }
    const k = (sa === APERTURE_VID ? da : sa) - 2;
    const l = this.fabric.peerLink(g, k) as Link;
    return { res: peerDirection(l, sa === APERTURE_VID ? g : k), link: l, latency: l.latencyNs, factor: 1 };
  }

  private execute(job: CopyJob): Promise<void> {
    const e = job.engine;
    if ((this.running[e] as number) === 0) this.busySince[e] = this.clock.now;
    this.running[e] = (this.running[e] as number) + 1;
    return new Promise<void>((resolve) => {
      const okDescs = this.translate(job);
      const segs = this.segments(job, okDescs);
      const finish = (opsDone: number, descsDone: number): void => {
        this.complete(job, opsDone, descsDone);
        resolve();
      };
      const run = (i: number): void => {
        if (i === segs.length) {
          finish(job.ops, okDescs);
          return;
        }
        const s = segs[i] as Segment;
        const prevOps = i === 0 ? 0 : (segs[i - 1] as Segment).opEnd;
        const prevDescs = i === 0 ? 0 : (segs[i - 1] as Segment).descEnd;
        const down = (): void => {
          job.error = new DmaError("EIO", `gpu${this.gpu} copy descriptor ${prevDescs}: ${s.link?.name} is down`, prevDescs);
          finish(prevOps, prevDescs);
        };
        if (s.link !== null && !s.link.up) {
          down();
          return;
        }
        this.clock.schedule(s.latency * s.ndesc, () => {
          if (s.link !== null && !s.link.up) {
            down();
            return;
          }
          s.res.addFlow(s.bytes, (err) => {
            if (err !== undefined) down();
            else run(i + 1);
          });
        });
      };
      run(0);
    });
  }

  /** Translate every page; returns the number of descriptors that can run. Sets job.error. */
  private translate(job: CopyJob): number {
    const n = job.n;
    let failAt = this.inject.takeDmaError(this.gpu, job.engine, n);
    if (failAt >= n) failAt = n - 1;
    for (let d = 0; d < n; d++) {
      if (d === failAt) {
        job.error = new DmaError("EIO", `gpu${this.gpu} copy descriptor ${d}: injected DMA error`, d);
        return d;
      }
      const opsBefore = job.ops;
      const lastBytesBefore = opsBefore > 0 ? (job.opBytes[opsBefore - 1] as number) : 0;
      const iovasBefore = job.niovas;
      const len = job.len[d] as number;
      const sa = job.srcAp[d] as number;
      const da = job.dstAp[d] as number;
      // A page run never spans two paths, so segment boundaries fall between ops.
      if (d > 0 && (sa !== job.srcAp[d - 1] || da !== job.dstAp[d - 1])) job.barrier = true;
      const sBase = job.srcAddr[d] as number;
      const dBase = job.dstAddr[d] as number;
      let off = 0;
      while (off < len) {
        const s = sBase + off;
        const t = dBase + off;
        const so = s - Math.floor(s * INV_PAGE) * PAGE_SIZE;
        const to = t - Math.floor(t * INV_PAGE) * PAGE_SIZE;
        let chunk = len - off;
        if (PAGE_SIZE - so < chunk) chunk = PAGE_SIZE - so;
        if (PAGE_SIZE - to < chunk) chunk = PAGE_SIZE - to;
        const sp = this.pfnFor(job, d, sa, s, false);
        const tp = sp < 0 ? -1 : this.pfnFor(job, d, da, t, true);
        if (tp < 0) {
          // Undo this descriptor's partial work and stop the batch here.
          job.ops = opsBefore;
          if (opsBefore > 0) job.opBytes[opsBefore - 1] = lastBytesBefore;
          this.dropIovas(job, iovasBefore);
          return d;
        }
        job.pushOp(sp, so, tp, to, chunk, so === 0 && to === 0 && chunk === PAGE_SIZE);
        off += chunk;
      }
      job.descOpEnd[d] = job.ops;
    }
    return n;
  }

  /** pfn of one page of an aperture, or -1 with job.error set. Hot path: typed arrays only. */
  private pfnFor(job: CopyJob, d: number, ap: number, addr: number, write: boolean): number {
    if (ap === APERTURE_SYS) {
      const io = this.iommu;
      const idx = addr >= IOVA_BASE ? Math.floor((addr - IOVA_BASE) * INV_PAGE) : -1;
      if (idx >= 0 && idx < io.pfnPlus1.length) {
        const pp = io.pfnPlus1[idx] as number;
        if (pp !== 0 && ((io.prot[idx] as number) & (write ? IOMMU_WRITE : IOMMU_READ)) !== 0) {
          io.inflight[idx] = (io.inflight[idx] as number) + 1;
          job.pushIova(idx);
          return pp - 1;
        }
      }
      const reason = io.check(idx, write) ?? "unmapped";
      io.fault(addr - (addr % PAGE_SIZE), write, reason, "dma");
      job.error = new DmaError("EFAULT", `gpu${this.gpu} copy descriptor ${d}: IOMMU fault (${reason}) at IOVA 0x${addr.toString(16)}`, d);
      return -1;
    }
    if (this.vramBase === undefined) this.initVramTables();
    const off = Math.floor(addr * INV_PAGE);
    if (!write && (this.vramPoison[ap] as Uint8Array)[off] === 1) {
      const pfn = (this.vramBase as Float64Array)[ap] as number;
      job.error = new DmaError(
        "EIO",
        `gpu${this.gpu} copy descriptor ${d}: uncorrectable ECC error reading pfn ${pfn + off} of gpu${ap === APERTURE_VID ? this.gpu : ap - 2}`,
        d,
      );
      return -1;
    }
    return ((this.vramBase as Float64Array)[ap] as number) + off;
  }

  /** VRAM base pfn and poison array per aperture (0: own VRAM, 2 + k: GPU k), built on first use. */
  private vramBase: Float64Array | undefined;
  private vramPoison: Uint8Array[] = [];
  private initVramTables(): void {
    const n = this.fabric.gpuCount;
    const base = new Float64Array(2 + n);
    const own = this.fabric.vramOf(this.gpu);
    base[APERTURE_VID] = own.basePfn;
    this.vramPoison[APERTURE_VID] = own.poison;
    this.vramPoison[APERTURE_SYS] = new Uint8Array(0);
    for (let k = 0; k < n; k++) {
      const v = this.fabric.vramOf(k);
      base[2 + k] = v.basePfn;
      this.vramPoison[2 + k] = v.poison;
    }
    this.vramBase = base;
  }

  private dropIovas(job: CopyJob, from: number): void {
    const inflight = this.iommu.inflight;
    for (let i = from; i < job.niovas; i++) {
      const idx = job.iovas[i] as number;
      inflight[idx] = (inflight[idx] as number) - 1;
    }
    job.niovas = from;
  }

  private segments(job: CopyJob, okDescs: number): Segment[] {
    const segs: Segment[] = [];
    let cur: Segment | null = null;
    let curKey = -1;
    for (let d = 0; d < okDescs; d++) {
      const sa = job.srcAp[d] as number;
      const da = job.dstAp[d] as number;
      const key = sa * 256 + da;
      const len = job.len[d] as number;
      if (cur === null || key !== curKey) {
        const p = this.pathOf(sa, da);
        cur = { res: p.res, link: p.link, latency: p.latency, bytes: 0, ndesc: 0, opEnd: 0, descEnd: 0 };
        segs.push(cur);
        curKey = key;
      }
      cur.bytes += len * (sa === APERTURE_VID && da === APERTURE_VID ? 2 : 1);
      cur.ndesc++;
      cur.descEnd = d + 1;
      cur.opEnd = job.descOpEnd[d] as number;
    }
    return segs;
  }

  private complete(job: CopyJob, opsDone: number, descsDone: number): void {
    const c = this.contents;
    let bytes = 0;
    for (let k = 0; k < opsDone; k++) {
      const nb = job.opBytes[k] as number;
      bytes += nb;
      if (job.opPages[k] === 1) c.copyPages(job.opDst[k] as number, job.opSrc[k] as number, nb / PAGE_SIZE);
      else {
        const t = this.tmp.subarray(0, nb);
        c.read(job.opSrc[k] as number, job.opSrcOff[k] as number, t);
        c.write(job.opDst[k] as number, job.opDstOff[k] as number, t);
      }
    }
    this.dropIovas(job, 0);
    const e = job.engine;
    const st = this.stats[e] as CopyEngineStats;
    st.batches++;
    st.descriptors += descsDone;
    st.bytes += bytes;
    if (job.error !== undefined) st.errors++;
    this.running[e] = (this.running[e] as number) - 1;
    if ((this.running[e] as number) === 0) st.busyNs += this.clock.now - (this.busySince[e] as number);
    this.outstanding--;
    job.fence.signal(this.clock.now, job.error);
    if (this.bus.wants("dma_fence_signaled")) {
      this.bus.emit("dma_fence_signaled", { gpu: this.gpu, engine: e, channel: job.channel, seqno: job.seqno, error: job.error?.message });
    }
  }
}
