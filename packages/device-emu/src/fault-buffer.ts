/**
 * The replayable fault buffer, and the fetch → coalesce → service → flush → replay loop that
 * delivers its faults to the driver in batches.
 *
 * Theory of operation (hardware side). When a warp's access misses in the GPU page table (no
 * valid PTE, or a write/atomic without the permission), the µTLB stalls the warp ("fault and
 * stall") and the MMU writes a fault entry at PUT of a ring buffer of fixed capacity: instance
 * (GPU VA space), 4 KiB-aligned address, access type (UVM's order PREFETCH 0 < READ 1 < WRITE 2 <
 * ATOMIC 3), fault type (invalid PTE, write or atomic protection), µTLB id and timestamp. Entries
 * are typed arrays indexed by ring slot. Stalled warps stay stalled until a replay: then every
 * stalled warp re-executes its access, and faults again if it is still not serviced.
 *
 * Overflow (documented behaviour, as on NVIDIA hardware): when the ring is full the entry cannot
 * be written. It is dropped, `faultsDropped` counts it and `didOverflowFaultBuffer` fires; the
 * warp stays stalled like any faulted warp, and because a replay re-executes every stalled access
 * the dropped fault is raised again after the next replay. Nothing is lost for good; the cost is
 * extra replay round trips. (UVM's BATCH_FLUSH policy and its PUT re-read exist for exactly this
 * duplicate-and-refault traffic.)
 *
 * Theory of operation (driver side, modelled on `uvm_parent_gpu_service_replayable_faults`). A
 * non-empty buffer raises an interrupt; after `interruptLatencyNs` the bottom half runs: it
 * fetches up to `batchSize` entries (`uvm_perf_fault_batch_count`, default 256, never more than
 * the capacity) from GET to the cached PUT, re-reading PUT only when GET has caught up with it
 * (`fetch_fault_buffer_entries`). Duplicates are coalesced as UVM does: an entry merges into the
 * last coalesced fault of its µTLB when instance and address match, or into the last coalesced
 * fault of the batch when instance and address match and its access type is no more intrusive;
 * the representative keeps the most intrusive access type, the mask of all types and the number
 * of instances (`fetch_fault_buffer_try_merge_entry`). The batch (typed arrays, valid until the
 * handler settles) goes to the driver's {@link GpuDriverOps.serviceFaults}; when it settles the
 * replay policy runs (`uvm_perf_fault_replay_policy`): BATCH replays; BATCH_FLUSH (default)
 * flushes the buffer — re-reading PUT when duplicates exceeded `replayUpdatePutRatio` % of the
 * batch (default 50), else up to the cached PUT — then replays; ONCE replays when the buffer is
 * drained; BLOCK leaves replays to the driver (UVM replays per VA block inside its service code).
 * At most `maxBatchesPerService` (20) batches run per bottom half; if faults remain the interrupt
 * is re-armed. A replay takes effect `replayLatencyNs` after it is issued.
 *
 * Costs (reference §5.2, estimates there): interrupt + fetch ~5–10 µs (default 5 µs), replay
 * ~1–2 µs (default 1 µs).
 *
 * @see NVIDIA uvm_gpu_replayable_faults.c (fetch_fault_buffer_entries,
 *      fetch_fault_buffer_try_merge_entry, fault_buffer_flush_locked, push_replay_on_gpu,
 *      uvm_parent_gpu_service_replayable_faults), uvm_gpu_replayable_faults.h (replay policies)
 */
import type { Fence, SimClock, TraceBus } from "@hmmkit/core/sim";
import { Fence as FenceImpl } from "@hmmkit/core/sim";
import type { DeviceEvents } from "./events";

/**
 * A read fault. Access types keep UVM's values and intrusiveness order (PREFETCH 0 < READ 1 <
 * WRITE 2 < ATOMIC 3); the emulated SMs issue no prefetch faults.
 * @see uvm_fault_access_type_t
 */
export const FAULT_ACCESS_READ = 1;
/** A write fault. */
export const FAULT_ACCESS_WRITE = 2;
/** An atomic fault (most intrusive). */
export const FAULT_ACCESS_ATOMIC = 3;

/** Fault type: no valid PTE. @see UVM_FAULT_TYPE_INVALID_PTE */
export const FAULT_TYPE_INVALID_PTE = 0;
/** Fault type: write to a PTE without write permission. @see UVM_FAULT_TYPE_WRITE */
export const FAULT_TYPE_WRITE = 1;
/** Fault type: atomic to a PTE without atomic permission. @see UVM_FAULT_TYPE_ATOMIC */
export const FAULT_TYPE_ATOMIC = 2;
/** Fault type: read of a PTE without read permission. @see UVM_FAULT_TYPE_READ */
export const FAULT_TYPE_READ = 3;

/** When replays are issued. @see uvm_perf_fault_replay_policy_t */
export type ReplayPolicy = "block" | "batch" | "batch-flush" | "once";
/** Flush modes. @see uvm_gpu_buffer_flush_mode_t */
export type FlushMode = "cached-put" | "update-put";

/** Fault-buffer configuration (validated by the platform). */
export interface FaultBufferConfig {
  /** Ring capacity in entries. */
  readonly entries: number;
  /** Entries fetched per batch (`uvm_perf_fault_batch_count`). */
  readonly batchSize: number;
  /** Replay policy (`uvm_perf_fault_replay_policy`). */
  readonly replayPolicy: ReplayPolicy;
  /** % duplicates above which a BATCH_FLUSH flush re-reads PUT (`uvm_perf_fault_replay_update_put_ratio`). */
  readonly replayUpdatePutRatio: number;
  /** Batches per bottom-half run (`uvm_perf_fault_max_batches_per_service`). */
  readonly maxBatchesPerService: number;
  /** Coalesce duplicates (`uvm_perf_fault_coalesce`). */
  readonly coalesce: boolean;
  /** Interrupt + fetch latency, ns. */
  readonly interruptLatencyNs: number;
  /** Replay latency, ns. */
  readonly replayLatencyNs: number;
}

/**
 * A batch of coalesced faults handed to the driver. Arrays hold `count` representatives; they are
 * reused by the next batch, so copy what must outlive the handler.
 *
 * @see uvm_fault_service_batch_context_t, uvm_fault_buffer_entry_t
 */
export interface FaultBatch {
  /** The GPU. */
  readonly gpu: number;
  /** Sequence number of the batch on this GPU (from 0). */
  readonly batchId: number;
  /** Raw entries fetched (`num_cached_faults`). */
  readonly cached: number;
  /** Representatives after coalescing (`num_coalesced_faults`). */
  readonly count: number;
  /** Per representative: GPU VA space id (the instance pointer). */
  readonly instance: Uint32Array;
  /** Per representative: 4 KiB-aligned faulting address. */
  readonly address: Float64Array;
  /** Per representative: most intrusive access type (FAULT_ACCESS_*). */
  readonly accessType: Uint8Array;
  /** Per representative: bit (1 << type) for every access type merged. */
  readonly accessTypeMask: Uint8Array;
  /** Per representative: number of raw entries merged into it. */
  readonly numInstances: Uint32Array;
  /** Per representative: fault type (FAULT_TYPE_*). */
  readonly faultType: Uint8Array;
  /** Per representative: µTLB (stream) id. */
  readonly utlb: Uint32Array;
  /** Per representative: virtual time the entry was written. */
  readonly timestamp: Float64Array;
}

/** What the fault buffer needs from the rest of the GPU. */
export interface FaultBufferHost {
  /** The driver's batch handler, if bound. */
  serviceFaults(): ((batch: FaultBatch) => Promise<void> | void) | undefined;
  /** Make every stalled warp re-execute its access; returns how many resumed. */
  replayStalled(): number;
  /** Kill warps stalled on (instance, page); returns how many. */
  cancelStalled(instance: number, pageVa: number): number;
}

/**
 * One GPU's replayable fault buffer and its service loop.
 *
 * Context: `post` is synchronous (called from the compute engine's event); the service loop is
 * async and awaits the driver's handler; `replay`/`flush`/`cancel` may be called by the driver at
 * any time, from any context.
 * @see uvm_gpu_replayable_faults.c
 */
export class FaultBuffer {
  // The ring (typed arrays indexed by seq % entries).
  private readonly rInstance: Uint32Array;
  private readonly rAddr: Float64Array;
  private readonly rAccess: Uint8Array;
  private readonly rType: Uint8Array;
  private readonly rUtlb: Uint32Array;
  private readonly rTime: Float64Array;
  private putSeq = 0;
  private getSeq = 0;
  private cachedPutSeq = 0;
  // The batch (reused).
  private readonly batch: {
    gpu: number;
    batchId: number;
    cached: number;
    count: number;
    instance: Uint32Array;
    address: Float64Array;
    accessType: Uint8Array;
    accessTypeMask: Uint8Array;
    numInstances: Uint32Array;
    faultType: Uint8Array;
    utlb: Uint32Array;
    timestamp: Float64Array;
  };
  private readonly utlbLast = new Map<number, number>();
  private serviceArmed = false;
  private servicing = false;
  private pendingReplays = 0;

  /** Faults written into the ring. */
  faultsPosted = 0;
  /** Faults dropped because the ring was full. */
  faultsDropped = 0;
  /** Entries fetched into batches. */
  faultsFetched = 0;
  /** Entries merged into a representative (duplicates). */
  faultsCoalesced = 0;
  /** Entries discarded by flushes. */
  faultsFlushed = 0;
  /** Batches delivered. */
  batches = 0;
  /** Replays issued. */
  replays = 0;
  /** Bottom-half runs. */
  serviceRuns = 0;

  /**
   * @param gpu - GPU index.
   * @param config - validated configuration.
   * @param clock - the machine's clock.
   * @param bus - the platform's trace bus.
   * @param host - the GPU-side hooks (driver ops, stalled warps).
   */
  constructor(
    readonly gpu: number,
    readonly config: FaultBufferConfig,
    private readonly clock: SimClock,
    private readonly bus: TraceBus<DeviceEvents>,
    private readonly host: FaultBufferHost,
  ) {
    const n = config.entries;
    this.rInstance = new Uint32Array(n);
    this.rAddr = new Float64Array(n);
    this.rAccess = new Uint8Array(n);
    this.rType = new Uint8Array(n);
    this.rUtlb = new Uint32Array(n);
    this.rTime = new Float64Array(n);
    const b = config.batchSize;
    this.batch = {
      gpu,
      batchId: 0,
      cached: 0,
      count: 0,
      instance: new Uint32Array(b),
      address: new Float64Array(b),
      accessType: new Uint8Array(b),
      accessTypeMask: new Uint8Array(b),
      numInstances: new Uint32Array(b),
      faultType: new Uint8Array(b),
      utlb: new Uint32Array(b),
      timestamp: new Float64Array(b),
    };
  }

  /** Entries currently in the ring (written, not yet fetched or flushed). */
  get pending(): number {
    return this.putSeq - this.getSeq;
  }

  /** Whether the bottom half is running or armed. */
  get busy(): boolean {
    return this.servicing || this.serviceArmed || this.pendingReplays > 0;
  }

  /**
   * Write a fault entry (the GPU MMU's side). Arms the interrupt.
   * @param instance - GPU VA space id.
   * @param address - faulting address (aligned down to 4 KiB here).
   * @param accessType - FAULT_ACCESS_*.
   * @param faultType - FAULT_TYPE_*.
   * @param utlb - µTLB (stream) id.
   * @returns true if written, false if dropped because the ring is full.
   * Context: synchronous.
   */
  post(instance: number, address: number, accessType: number, faultType: number, utlb: number): boolean {
    const addr = address - (address % 4096);
    if (this.putSeq - this.getSeq >= this.config.entries) {
      this.faultsDropped++;
      if (this.bus.wants("didOverflowFaultBuffer")) this.bus.emit("didOverflowFaultBuffer", { gpu: this.gpu, instance, address: addr });
      this.arm();
      return false;
    }
    const i = this.putSeq % this.config.entries;
    this.rInstance[i] = instance;
    this.rAddr[i] = addr;
    this.rAccess[i] = accessType;
    this.rType[i] = faultType;
    this.rUtlb[i] = utlb;
    this.rTime[i] = this.clock.now;
    this.putSeq++;
    this.faultsPosted++;
    if (this.bus.wants("didRaiseGpuFault")) this.bus.emit("didRaiseGpuFault", { gpu: this.gpu, instance, address: addr, accessType, utlb });
    this.arm();
    return true;
  }

  /**
   * Issue a replay: after `replayLatencyNs` every stalled warp re-executes its faulting access.
   * @returns a fence signalled when the replay has taken effect.
   * Context: any; does not await.
   * @see push_replay_on_gpu (UVM_FAULT_REPLAY_TYPE_START)
   */
  replay(): Fence {
    this.replays++;
    this.pendingReplays++;
    const f = new FenceImpl();
    this.clock.schedule(this.config.replayLatencyNs, () => {
      this.pendingReplays--;
      const resumed = this.host.replayStalled();
      if (this.bus.wants("didReplayGpuFaults")) this.bus.emit("didReplayGpuFaults", { gpu: this.gpu, resumed });
      f.signal(this.clock.now);
    });
    return f;
  }

  /**
   * Discard the entries in the ring.
   * @param mode - `"update-put"` (default) discards everything written so far; `"cached-put"` only
   *   up to the PUT value read by the last fetch.
   * @returns the number of entries discarded.
   * Context: any; synchronous.
   * @see fault_buffer_flush_locked, UVM_GPU_BUFFER_FLUSH_MODE_UPDATE_PUT / _CACHED_PUT
   */
  flush(mode: FlushMode = "update-put"): number {
    const target = mode === "update-put" ? this.putSeq : Math.max(this.cachedPutSeq, this.getSeq);
    const n = target - this.getSeq;
    this.getSeq = target;
    if (this.cachedPutSeq < target) this.cachedPutSeq = target;
    this.faultsFlushed += n;
    if (this.bus.wants("didFlushFaultBuffer")) this.bus.emit("didFlushFaultBuffer", { gpu: this.gpu, discarded: n });
    return n;
  }

  /**
   * Cancel the faults on one page: warps stalled on it are killed (their kernel fails with
   * EFAULT), as for an access the driver finds invalid (no VMA, bad permission).
   * @param instance - GPU VA space id.
   * @param address - any address in the page.
   * @returns the number of warps killed.
   * Context: any; synchronous.
   * @see push_cancel_on_gpu_targeted, cancel_fault_precise_va
   */
  cancel(instance: number, address: number): number {
    return this.host.cancelStalled(instance, address - (address % 4096));
  }

  /**
   * Start the bottom half if faults are pending and it is not running (after binding a driver).
   * Context: any.
   */
  kick(): void {
    if (this.pending > 0) this.arm();
  }

  private arm(): void {
    if (this.serviceArmed || this.servicing) return;
    if (this.host.serviceFaults() === undefined) return;
    this.serviceArmed = true;
    this.clock.schedule(this.config.interruptLatencyNs, () => {
      this.serviceArmed = false;
      void this.service();
    });
  }

  private async service(): Promise<void> {
    const handler = this.host.serviceFaults();
    if (handler === undefined || this.servicing) return;
    this.servicing = true;
    this.serviceRuns++;
    const policy = this.config.replayPolicy;
    let done = 0;
    try {
      while (this.pending > 0 && done < this.config.maxBatchesPerService) {
        const b = this.fetch();
        if (b.cached === 0) break;
        done++;
        if (this.bus.wants("didFetchFaultBatch")) {
          this.bus.emit("didFetchFaultBatch", { gpu: this.gpu, batchId: b.batchId, cached: b.cached, coalesced: b.count });
        }
        await handler(b);
        if (policy === "batch") this.replay();
        else if (policy === "batch-flush") {
          const dupPct = ((b.cached - b.count) * 100) / b.cached;
          this.flush(dupPct > this.config.replayUpdatePutRatio ? "update-put" : "cached-put");
          this.replay();
        }
      }
      if (policy === "once" && done > 0 && this.pending === 0) this.replay();
    } finally {
      this.servicing = false;
    }
    if (this.pending > 0) this.arm();
  }

  /** Fetch and coalesce up to batchSize entries (fetch_fault_buffer_entries). */
  private fetch(): FaultBatch {
    const b = this.batch;
    const n = this.config.entries;
    if (this.getSeq === this.cachedPutSeq) this.cachedPutSeq = this.putSeq;
    const coalesce = this.config.coalesce;
    const ul = this.utlbLast;
    ul.clear();
    let cached = 0;
    let reps = 0;
    let last = -1;
    while (this.getSeq < this.cachedPutSeq && cached < this.config.batchSize) {
      const i = this.getSeq % n;
      const inst = this.rInstance[i] as number;
      const addr = this.rAddr[i] as number;
      const acc = this.rAccess[i] as number;
      const u = this.rUtlb[i] as number;
      let into = -1;
      if (coalesce && reps > 0) {
        const lt = ul.get(u);
        if (lt !== undefined && b.instance[lt] === inst && b.address[lt] === addr) into = lt;
        else if (last >= 0 && b.instance[last] === inst && b.address[last] === addr && acc <= (b.accessType[last] as number)) into = last;
      }
      if (into >= 0) {
        b.numInstances[into] = (b.numInstances[into] as number) + 1;
        b.accessTypeMask[into] = (b.accessTypeMask[into] as number) | (1 << acc);
        if (acc > (b.accessType[into] as number)) {
          // The more intrusive entry becomes the representative.
          b.accessType[into] = acc;
          b.faultType[into] = this.rType[i] as number;
          b.utlb[into] = u;
          b.timestamp[into] = this.rTime[i] as number;
        }
        this.faultsCoalesced++;
      } else {
        b.instance[reps] = inst;
        b.address[reps] = addr;
        b.accessType[reps] = acc;
        b.accessTypeMask[reps] = 1 << acc;
        b.numInstances[reps] = 1;
        b.faultType[reps] = this.rType[i] as number;
        b.utlb[reps] = u;
        b.timestamp[reps] = this.rTime[i] as number;
        ul.set(u, reps);
        last = reps;
        reps++;
      }
      cached++;
      this.getSeq++;
    }
    this.faultsFetched += cached;
    b.batchId = this.batches++;
    b.cached = cached;
    b.count = reps;
    return b;
  }
}
