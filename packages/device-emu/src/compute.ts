/**
 * The compute engine: runs kernels given as access streams, stalls warps on page faults, replays
 * them, and charges every access to the bandwidth of the memory it reaches.
 *
 * Theory of operation. A kernel is a set of {@link AccessStream}s (one per warp) in one
 * {@link GpuVaSpace}: typed arrays of address, size (1..4096 bytes, not crossing a 4 KiB page:
 * a warp's coalesced access) and flags (ACCESS_READ / ACCESS_WRITE / ACCESS_ATOMIC). Warps of all
 * running kernels advance together in rounds. In a round each runnable warp executes up to
 * `warpQuantum` accesses in a synchronous loop over the typed arrays: one Map lookup per 2 MiB
 * block change, one PTE read and a permission test per access, no allocation. The loop stops a
 * warp at its first miss:
 *
 * - no valid PTE, or a missing permission (write to read-only, atomic without ATOMIC): the warp
 *   stalls ("fault and stall") and a replayable fault is posted to the {@link FaultBuffer} (or
 *   dropped if it is full: the warp stays stalled and refaults after the next replay). A replay
 *   makes every stalled warp re-execute its faulting access; a cancel kills the warps stalled
 *   on that page;
 * - a SYS target refused by the IOMMU (`io_page_fault`), a remote target over a link that is down,
 *   a peer target without a link, or a read of an ECC-poisoned VRAM page: a fatal fault — the warp
 *   is killed and the kernel's fence carries the error (EFAULT for the IOMMU, EIO otherwise).
 *
 * Timing. The bytes a round moves are summed per resource: the local VRAM port, the host link's
 * H2D (reads of system memory) and D2H (writes), and each peer link's two directions (an atomic
 * counts as a read and a write). The round then adds one flow per used resource, after that
 * link's latency for remote ones (warps overlap their misses, so a round pays each link latency
 * once), and ends when all its flows are done; the next round starts then. Flows share links
 * with DMA copies, so compute traffic and copies slow each other down. Remote accesses are
 * counted by the {@link AccessCounters}.
 *
 * Wall-clock cost: the access loop is plain typed-array code (about 10^7–10^8 accesses per
 * second); each round costs one clock instant.
 *
 * @see NVIDIA uvm_gpu_replayable_faults.c (fault-and-stall, replay), UVMSmart gpu-sim.cc
 *      (page-table walk and far-fault modelling), nouveau nvkm/subdev/fault
 */

import { PAGE_SIZE } from "@hmmkit/core/phys";
import type { Fence, SimClock, TraceBus } from "@hmmkit/core/sim";
import { type Errno, einval, Fence as FenceImpl, HmmError } from "@hmmkit/core/sim";
import type { AccessCounters } from "./access-counters";
import type { DeviceEvents } from "./events";
import { type GpuFabric, peerDirection } from "./fabric";
import {
  FAULT_ACCESS_ATOMIC,
  FAULT_ACCESS_READ,
  FAULT_ACCESS_WRITE,
  FAULT_TYPE_ATOMIC,
  FAULT_TYPE_INVALID_PTE,
  FAULT_TYPE_READ,
  FAULT_TYPE_WRITE,
  type FaultBuffer,
} from "./fault-buffer";
import { GPU_BLOCK_SIZE, GPU_PERM_ATOMIC, GPU_PERM_READ, GPU_PERM_WRITE, GPU_VA_LIMIT, type GpuVaSpace, PTE_VALID } from "./gpu-mmu";
import type { Iommu } from "./iommu";
import type { Link, LinkResource } from "./links";
import type { Vram } from "./vram";

const INV_PAGE = 1 / PAGE_SIZE;
const INV_BLOCK = 1 / GPU_BLOCK_SIZE;

/** Access flag: the access reads. */
export const ACCESS_READ = 1;
/** Access flag: the access writes. */
export const ACCESS_WRITE = 2;
/** Access flag: the access is an atomic read-modify-write (needs GPU_PERM_ATOMIC and WRITE). */
export const ACCESS_ATOMIC = 4;

/**
 * One warp's accesses, in program order.
 * @see UVMSmart's access trace (page, address, size, is_read, sm, warp)
 */
export interface AccessStream {
  /** Virtual addresses. */
  readonly addr: Float64Array;
  /** Sizes in bytes (1..4096, not crossing a 4 KiB boundary). */
  readonly size: Uint8Array | Uint16Array | Uint32Array;
  /** ACCESS_* flags (non-zero). */
  readonly flags: Uint8Array;
  /** Number of accesses (default: addr.length). */
  readonly count?: number;
}

/** Statistics of one kernel. */
export interface KernelStats {
  /** Accesses executed. */
  accesses: number;
  /** Faults raised (posted or dropped; a refault after replay counts again). */
  faults: number;
  /** Bytes to this GPU's VRAM. */
  localBytes: number;
  /** Bytes to system memory. */
  sysBytes: number;
  /** Bytes to peers' VRAM. */
  peerBytes: number;
  /** Warps killed by a fatal fault. */
  warpsKilled: number;
  /** Virtual time of launch. */
  startNs: number;
  /** Virtual time of completion (-1 while running). */
  endNs: number;
}

/** A launched kernel. */
export interface KernelHandle {
  /** Kernel id on this GPU. */
  readonly id: number;
  /** Signals when every warp completed or was killed; `error` is the first fatal fault. */
  readonly fence: Fence;
  /** Live statistics. */
  readonly stats: KernelStats;
}

/** Compute-engine configuration (validated by the platform). */
export interface ComputeConfig {
  /** Accesses a warp executes per round at most. */
  readonly warpQuantum: number;
}

const S_RUNNABLE = 0;
const S_STALLED = 1;
const S_DONE = 2;

class KernelRun {
  live: number;
  error: HmmError | undefined;
  constructor(
    readonly id: number,
    readonly space: GpuVaSpace,
    readonly fence: FenceImpl,
    readonly stats: KernelStats,
    warps: number,
  ) {
    this.live = warps;
  }
}

class Warp {
  state = S_RUNNABLE;
  pc = 0;
  stallPage = -1;
  constructor(
    readonly id: number,
    readonly kernel: KernelRun,
    readonly addr: Float64Array,
    readonly size: Uint8Array | Uint16Array | Uint32Array,
    readonly flags: Uint8Array,
    readonly count: number,
  ) {}
}

/** Resource slots: 0 VRAM port, 1 H2D, 2 D2H, then 3+2k (k→this GPU) and 4+2k (this GPU→k). */
const R_VRAM = 0;
const R_H2D = 1;
const R_D2H = 2;

/**
 * One GPU's compute engine.
 *
 * Context: `launch` is synchronous; kernels run from the clock's run loop. Warps of one GPU are
 * visited in launch order, so runs are deterministic.
 * @see uvm_gpu_replayable_faults.c, UVMSmart gpu-sim.cc
 */
export class ComputeEngine {
  private warps: Warp[] = [];
  private finishing: Warp[] = [];
  private runnable = 0;
  private roundPending = false;
  private kernelSeq = 0;
  private warpSeq = 0;
  private readonly res: (LinkResource | undefined)[] = [];
  private readonly resLink: (Link | null)[] = [];
  private readonly acc: Float64Array;
  /** Accesses executed since boot (all kernels). */
  accesses = 0;
  /** Rounds executed. */
  rounds = 0;
  /** Kernels completed. */
  kernelsCompleted = 0;

  /**
   * @param gpu - GPU index.
   * @param config - validated configuration.
   * @param clock - the machine's clock.
   * @param fabric - links and peers.
   * @param vram - this GPU's VRAM.
   * @param iommu - this GPU's IOMMU.
   * @param faults - this GPU's fault buffer.
   * @param counters - this GPU's access counters.
   * @param bus - the platform's trace bus.
   */
  constructor(
    readonly gpu: number,
    readonly config: ComputeConfig,
    private readonly clock: SimClock,
    private readonly fabric: GpuFabric,
    private readonly vram: Vram,
    private readonly iommu: Iommu,
    private readonly faults: FaultBuffer,
    private readonly counters: AccessCounters,
    private readonly bus: TraceBus<DeviceEvents>,
  ) {
    const host = fabric.hostLink(gpu);
    this.res[R_VRAM] = fabric.vramPort(gpu);
    this.resLink[R_VRAM] = null;
    this.res[R_H2D] = host.forward;
    this.res[R_D2H] = host.reverse;
    this.resLink[R_H2D] = host;
    this.resLink[R_D2H] = host;
    for (let k = 0; k < fabric.gpuCount; k++) {
      const l = k === gpu ? undefined : fabric.peerLink(gpu, k);
      this.res[3 + 2 * k] = l === undefined ? undefined : peerDirection(l, k);
      this.res[4 + 2 * k] = l === undefined ? undefined : peerDirection(l, gpu);
      this.resLink[3 + 2 * k] = l ?? null;
      this.resLink[4 + 2 * k] = l ?? null;
    }
    this.acc = new Float64Array(this.res.length);
  }

  /** Warps not yet completed (runnable or stalled). */
  get liveWarps(): number {
    return this.warps.length;
  }

  /** Warps stalled on a fault. */
  get stalledWarps(): number {
    return this.warps.length - this.runnable;
  }

  /** Whether no kernel is running. */
  get idle(): boolean {
    return this.warps.length === 0 && !this.roundPending && this.finishing.length === 0;
  }

  /**
   * Launch a kernel: one warp per stream, all in `space`.
   * @param space - the GPU VA space the kernel runs in (must belong to this GPU).
   * @param streams - the warps' access streams (at least one).
   * @returns the kernel's handle; its fence signals when every warp is done.
   * @throws HmmError EINVAL naming the field (`streams[2].size[17]`, …) for a foreign VA space,
   *   no streams, mismatched array lengths, a bad address/size/flag, or an access crossing a
   *   4 KiB boundary. Nothing is launched then.
   * Context: synchronous; execution starts at the current virtual time, from the run loop.
   * @see cuLaunchKernel (the user side); the SM's warp scheduler
   * @example
   * ```ts
   * const k = gpu.compute.launch(space, [{ addr, size, flags }]);
   * await clock.settle(k.fence.promise);
   * ```
   */
  launch(space: GpuVaSpace, streams: readonly AccessStream[]): KernelHandle {
    if (space.gpu !== this.gpu) einval("space", `a GPU VA space of gpu${this.gpu}, got one of gpu${space.gpu}`);
    if (!Array.isArray(streams) || streams.length === 0) einval("streams", "at least one access stream");
    const counts: number[] = [];
    streams.forEach((s, i) => {
      counts.push(this.validateStream(s, i));
    });
    const id = this.kernelSeq++;
    const stats: KernelStats = {
      accesses: 0,
      faults: 0,
      localBytes: 0,
      sysBytes: 0,
      peerBytes: 0,
      warpsKilled: 0,
      startNs: this.clock.now,
      endNs: -1,
    };
    const fence = new FenceImpl();
    const k = new KernelRun(id, space, fence, stats, streams.length);
    streams.forEach((s, i) => {
      const w = new Warp(this.warpSeq++, k, s.addr, s.size, s.flags, counts[i] as number);
      if (w.count === 0) {
        w.state = S_DONE;
        k.live--;
      } else {
        this.warps.push(w);
        this.runnable++;
      }
    });
    if (this.bus.wants("didLaunchKernel")) this.bus.emit("didLaunchKernel", { gpu: this.gpu, kernel: id, streams: streams.length });
    if (k.live === 0) this.finishKernel(k);
    this.kick();
    return { id, fence, stats };
  }

  /**
   * Make every stalled warp runnable again (the replay's effect).
   * @returns the number of warps resumed.
   * Context: called by the fault buffer's replay event.
   */
  replayStalled(): number {
    let n = 0;
    for (const w of this.warps) {
      if (w.state === S_STALLED) {
        w.state = S_RUNNABLE;
        w.stallPage = -1;
        n++;
      }
    }
    this.runnable += n;
    this.kick();
    return n;
  }

  /**
   * Kill the warps stalled on one page (the driver cancelled the fault).
   * @param instance - GPU VA space id.
   * @param pageVa - 4 KiB-aligned address.
   * @returns the number of warps killed.
   */
  cancelStalled(instance: number, pageVa: number): number {
    let n = 0;
    for (const w of this.warps) {
      if (w.state === S_STALLED && w.kernel.space.id === instance && w.stallPage === pageVa) {
        this.kill(w, "EFAULT", `fault at 0x${pageVa.toString(16)} cancelled by the driver`, pageVa, false);
        this.warpDone(w);
        n++;
      }
    }
    if (n > 0) this.reap();
    return n;
  }

  private validateStream(s: AccessStream, i: number): number {
    if (s === null || typeof s !== "object") einval(`streams[${i}]`, "an AccessStream");
    if (!(s.addr instanceof Float64Array)) einval(`streams[${i}].addr`, "a Float64Array");
    if (!(s.flags instanceof Uint8Array)) einval(`streams[${i}].flags`, "a Uint8Array");
    if (!(s.size instanceof Uint8Array || s.size instanceof Uint16Array || s.size instanceof Uint32Array)) {
      einval(`streams[${i}].size`, "a Uint8Array, Uint16Array or Uint32Array");
    }
    const n = s.count ?? s.addr.length;
    if (!Number.isInteger(n) || n < 0 || n > s.addr.length || n > s.size.length || n > s.flags.length) {
      einval(`streams[${i}].count`, `an integer in [0, min(array lengths)], got ${n}`);
    }
    const { addr, size, flags } = s;
    for (let j = 0; j < n; j++) {
      const a = addr[j] as number;
      const z = size[j] as number;
      const f = flags[j] as number;
      // Page offset without a float modulo: a * 2^-12 is exact.
      const off = a - Math.floor(a * INV_PAGE) * PAGE_SIZE;
      if (a >= 0 && a < GPU_VA_LIMIT && off === Math.floor(off) && z >= 1 && off + z <= PAGE_SIZE && f !== 0 && (f & ~7) === 0) continue;
      if (!(a >= 0 && a < GPU_VA_LIMIT) || !Number.isInteger(a))
        einval(`streams[${i}].addr[${j}]`, `an integer GPU VA below 2^49, got ${a}`);
      if (z < 1 || z > PAGE_SIZE || (a % PAGE_SIZE) + z > PAGE_SIZE) {
        einval(`streams[${i}].size[${j}]`, `1..4096 bytes not crossing a 4 KiB page, got ${z} at 0x${a.toString(16)}`);
      }
      einval(`streams[${i}].flags[${j}]`, `a non-empty combination of ACCESS_READ|ACCESS_WRITE|ACCESS_ATOMIC, got ${f}`);
    }
    return n;
  }

  private kick(): void {
    if (this.roundPending || this.runnable === 0) return;
    this.roundPending = true;
    this.clock.schedule(0, () => this.round());
  }

  private round(): void {
    this.rounds++;
    const acc = this.acc;
    acc.fill(0);
    let executed = 0;
    const ws = this.warps;
    for (let i = 0; i < ws.length; i++) {
      const w = ws[i] as Warp;
      if (w.state === S_RUNNABLE) executed += this.runWarp(w);
    }
    this.reap();
    this.accesses += executed;
    let flows = 0;
    let settled = false;
    const done = (): void => {
      if (--flows === 0 && settled) this.endRound();
    };
    for (let r = 0; r < acc.length; r++) {
      const b = acc[r] as number;
      if (b === 0) continue;
      const res = this.res[r] as LinkResource;
      const link = this.resLink[r] as Link | null;
      flows++;
      if (link === null) res.addFlow(b, done);
      else
        this.clock.schedule(link.latencyNs, () => {
          if (link.up) res.addFlow(b, done);
          else done();
        });
    }
    settled = true;
    if (flows === 0) this.endRound();
  }

  /** The round's bytes have moved: warps that finished in it complete now. */
  private endRound(): void {
    const fin = this.finishing;
    this.finishing = [];
    this.roundPending = false;
    for (const w of fin) this.warpDone(w);
    this.kick();
  }

  /** Execute up to warpQuantum accesses of one warp; returns how many executed. */
  private runWarp(w: Warp): number {
    const space = w.kernel.space;
    const stats = w.kernel.stats;
    const pf = space.flags;
    const pt = space.target;
    const addr = w.addr;
    const size = w.size;
    const flags = w.flags;
    const acc = this.acc;
    const poison = this.vram.poison;
    const anyPoison = this.vram.framesPoisoned > 0;
    let pc = w.pc;
    const end = Math.min(w.count, pc + this.config.warpQuantum);
    let lastBlk = -1;
    let base = -1;
    let executed = 0;
    let local = 0;
    while (pc < end) {
      const va = addr[pc] as number;
      const blk = Math.floor(va * INV_BLOCK);
      if (blk !== lastBlk) {
        const slot = space.slotOf(blk);
        base = slot < 0 ? -1 : slot * 512;
        lastBlk = blk;
      }
      const fl = flags[pc] as number;
      const p = base + ((va - blk * GPU_BLOCK_SIZE) >>> 12);
      const f = base < 0 ? 0 : (pf[p] as number);
      const need =
        (fl & ACCESS_READ ? GPU_PERM_READ : 0) |
        (fl & ACCESS_WRITE ? GPU_PERM_WRITE : 0) |
        (fl & ACCESS_ATOMIC ? GPU_PERM_ATOMIC | GPU_PERM_WRITE : 0);
      if ((f & PTE_VALID) === 0 || (f & need) !== need) {
        this.fault(w, va, fl, f);
        break;
      }
      const sz = size[pc] as number;
      const ap = f >> 8;
      if (ap === 0) {
        if (anyPoison && poison[pt[p] as number] === 1 && (fl & (ACCESS_READ | ACCESS_ATOMIC)) !== 0) {
          this.kill(w, "EIO", `uncorrectable ECC error reading pfn ${this.vram.basePfn + (pt[p] as number)} of gpu${this.gpu}`, va, true);
          break;
        }
        local += sz;
      } else if (!this.remote(w, va, fl, sz, ap, (pt[p] as number) * PAGE_SIZE + (va % PAGE_SIZE), stats)) break;
      pc++;
      executed++;
    }
    acc[R_VRAM] = (acc[R_VRAM] as number) + local;
    stats.localBytes += local;
    stats.accesses += executed;
    w.pc = pc;
    if (pc >= w.count && w.state === S_RUNNABLE) {
      w.state = S_DONE;
      this.runnable--;
      this.finishing.push(w);
    }
    return executed;
  }

  /** A remote access; returns false when the warp was killed. */
  private remote(w: Warp, va: number, fl: number, sz: number, ap: number, target: number, stats: KernelStats): boolean {
    const acc = this.acc;
    const reads = (fl & (ACCESS_READ | ACCESS_ATOMIC)) !== 0;
    const writes = (fl & (ACCESS_WRITE | ACCESS_ATOMIC)) !== 0;
    if (ap === 1) {
      const io = this.iommu;
      const idx = io.index(target);
      const reason = io.check(idx, writes) ?? (reads && writes ? io.check(idx, false) : undefined);
      if (reason !== undefined) {
        io.fault(target - (target % PAGE_SIZE), writes, reason, "compute");
        this.kill(w, "EFAULT", `IOMMU fault (${reason}) at IOVA 0x${target.toString(16)}`, va, true);
        return false;
      }
      if (!(this.resLink[R_H2D] as Link).up) {
        this.kill(w, "EIO", `host link of gpu${this.gpu} is down`, va, true);
        return false;
      }
      if (reads) acc[R_H2D] = (acc[R_H2D] as number) + sz;
      if (writes) acc[R_D2H] = (acc[R_D2H] as number) + sz;
      stats.sysBytes += sz;
    } else {
      const k = ap - 2;
      const link = k < this.fabric.gpuCount ? this.resLink[3 + 2 * k] : null;
      if (link === null || link === undefined) {
        this.kill(w, "EFAULT", `PTE targets gpu${k}'s VRAM but gpu${this.gpu} has no peer link to it`, va, true);
        return false;
      }
      if (!link.up) {
        this.kill(w, "EIO", `${link.name} is down`, va, true);
        return false;
      }
      const pv = this.fabric.vramOf(k);
      const off = Math.floor(target / PAGE_SIZE);
      if (off >= pv.npages) {
        this.kill(w, "EFAULT", `PTE targets offset 0x${target.toString(16)} beyond gpu${k}'s VRAM`, va, true);
        return false;
      }
      if (reads && pv.poison[off] === 1) {
        this.kill(w, "EIO", `uncorrectable ECC error reading pfn ${pv.basePfn + off} of gpu${k}`, va, true);
        return false;
      }
      if (reads) acc[3 + 2 * k] = (acc[3 + 2 * k] as number) + sz;
      if (writes) acc[4 + 2 * k] = (acc[4 + 2 * k] as number) + sz;
      stats.peerBytes += sz;
    }
    this.counters.count(w.kernel.space.id, va, ap);
    return true;
  }

  private fault(w: Warp, va: number, fl: number, pteFlags: number): void {
    const page = va - (va % PAGE_SIZE);
    const accessType = fl & ACCESS_ATOMIC ? FAULT_ACCESS_ATOMIC : fl & ACCESS_WRITE ? FAULT_ACCESS_WRITE : FAULT_ACCESS_READ;
    let type = FAULT_TYPE_INVALID_PTE;
    if ((pteFlags & PTE_VALID) !== 0) {
      if (fl & ACCESS_ATOMIC && (pteFlags & GPU_PERM_ATOMIC) === 0) type = FAULT_TYPE_ATOMIC;
      else if (fl & (ACCESS_WRITE | ACCESS_ATOMIC) && (pteFlags & GPU_PERM_WRITE) === 0) type = FAULT_TYPE_WRITE;
      else type = FAULT_TYPE_READ;
    }
    w.state = S_STALLED;
    w.stallPage = page;
    this.runnable--;
    w.kernel.stats.faults++;
    this.faults.post(w.kernel.space.id, page, accessType, type, w.id);
  }

  private kill(w: Warp, code: Errno, why: string, va: number, runnable: boolean): void {
    if (runnable) this.runnable--;
    w.state = S_DONE;
    const k = w.kernel;
    k.stats.warpsKilled++;
    if (k.error === undefined) k.error = new HmmError(code, `gpu${this.gpu} kernel ${k.id}: ${why}`);
    if (this.bus.wants("didRaiseFatalFault"))
      this.bus.emit("didRaiseFatalFault", { gpu: this.gpu, instance: k.space.id, address: va, reason: why });
    if (runnable) this.finishing.push(w);
  }

  private warpDone(w: Warp): void {
    const k = w.kernel;
    if (--k.live === 0) this.finishKernel(k);
  }

  private finishKernel(k: KernelRun): void {
    k.stats.endNs = this.clock.now;
    this.kernelsCompleted++;
    k.fence.signal(this.clock.now, k.error);
    if (this.bus.wants("didCompleteKernel")) {
      this.bus.emit("didCompleteKernel", { gpu: this.gpu, kernel: k.id, accesses: k.stats.accesses, error: k.error?.message });
    }
  }

  private reap(): void {
    let j = 0;
    const ws = this.warps;
    for (let i = 0; i < ws.length; i++) {
      const w = ws[i] as Warp;
      if (w.state !== S_DONE) ws[j++] = w;
    }
    ws.length = j;
  }
}
