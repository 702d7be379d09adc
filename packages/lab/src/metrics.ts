/**
 * Run metrics: what a policy comparison measures — GPU faults and fault batches, pages migrated
 * each way and between GPUs, bytes per link direction, simulated time, copy-engine utilisation,
 * evictions, thrashing events, remote accesses — and their evolution over simulated time.
 *
 * Theory of operation. Every number is read from the emulated hardware and kernel, never
 * estimated: the fault buffer's counters (`faultsPosted`, `batches`, …), the copy engines'
 * per-engine stats, each link direction's `bytes`, the access counters' `accessesCounted` (remote
 * accesses), core's `/proc/vmstat` counters, and the driver's own counters (migrations by
 * direction, evictions, thrashing), which a {@link DriverCounters} object names. A
 * {@link MetricsSampler} takes cumulative snapshots on the machine's clock, every `bucketNs` of
 * virtual time, and stores per-bucket deltas; when the buckets fill up it merges them pairwise
 * and doubles `bucketNs`, so any run length fits a bounded series and the result depends only on
 * virtual time (never on wall time): same scenario + seed ⇒ the same series.
 *
 * @see UVMSmart's printed metrics (Page_tot_fault, Page_validate, Page_evict_*, Page_tot_thrash,
 *      Pcie_read/write_utilization; reference/uvm-policies.md §2.6), UVM procfs stats
 *      (num_thrashing, num_pin_*; §1.5), /proc/vmstat
 */
import type { Machine } from "@hmmkit/core";
import type { Platform } from "@hmmkit/device-emu";

/**
 * Counters a driver reports (all cumulative page or event counts; 0 when a driver has no such
 * mechanism). Names follow UVM's event vocabulary (reference §1.10).
 */
export interface DriverCounters {
  /** Pages migrated system memory → a GPU (fault-driven, prefetch and access counters). */
  readonly pagesToGpu: number;
  /** Pages migrated a GPU → system memory (CPU faults, `migrateToRam`, and evictions). */
  readonly pagesToCpu: number;
  /** Pages migrated GPU → GPU (peer copies, or staged through system memory). */
  readonly pagesGpuToGpu: number;
  /** Pages evicted from VRAM (a subset of `pagesToCpu`). */
  readonly pagesEvicted: number;
  /** Pages detected as thrashing (UVM `num_thrashing`). */
  readonly thrashingEvents: number;
  /** Faults serviced by a remote mapping instead of a migration (UVM MapRemote events). */
  readonly remoteMaps: number;
  /** Any further driver-specific counters, by name. */
  readonly extra?: Readonly<Record<string, number>>;
}

/** Per-GPU metrics. */
export interface GpuMetrics {
  /** GPU index. */
  readonly gpu: number;
  /** GPU name. */
  readonly name: string;
  /** Accesses executed by the compute engine. */
  readonly accesses: number;
  /** Replayable faults written to the fault buffer (refaults after a replay count again). */
  readonly faults: number;
  /** Faults lost to a full buffer. */
  readonly faultsDropped: number;
  /** Faults fetched that were merged into another (coalesced duplicates). */
  readonly faultsCoalesced: number;
  /** Fault batches serviced. */
  readonly faultBatches: number;
  /** Replays issued. */
  readonly replays: number;
  /** Remote accesses counted by the access counters (to system memory or a peer's VRAM). */
  readonly remoteAccesses: number;
  /** Access-counter notifications raised. */
  readonly accessCounterNotifications: number;
  /** Copy-engine batches completed. */
  readonly copyBatches: number;
  /** Bytes moved by the copy engines. */
  readonly copyBytes: number;
  /** Mean busy fraction of this GPU's copy engines over the run (0..1). */
  readonly copyEngineUtilisation: number;
  /** VRAM frames in use at the end. */
  readonly vramPagesInUse: number;
}

/** Whole-run metrics. */
export interface RunMetrics {
  /** Virtual time from the first phase to the end of the last, ns. */
  readonly simTimeNs: number;
  /** Accesses executed (GPU and CPU). */
  readonly accesses: number;
  /** GPU faults (sum over GPUs). */
  readonly gpuFaults: number;
  /** GPU fault batches (sum over GPUs). */
  readonly faultBatches: number;
  /** CPU page faults (`pgfault`). */
  readonly cpuFaults: number;
  /** Pages migrated to GPUs. */
  readonly pagesToGpu: number;
  /** Pages migrated to system memory. */
  readonly pagesToCpu: number;
  /** Pages migrated between GPUs. */
  readonly pagesGpuToGpu: number;
  /** Pages evicted from VRAM. */
  readonly evictions: number;
  /** Thrashing detections. */
  readonly thrashingEvents: number;
  /** Faults serviced by remote mapping. */
  readonly remoteMaps: number;
  /** Remote accesses (sum over GPUs). */
  readonly remoteAccesses: number;
  /** Mean copy-engine utilisation over all GPUs' engines (0..1). */
  readonly copyEngineUtilisation: number;
  /** Bytes per link direction (`gpu0.h2d`, `gpu0.d2h`, `gpu0->gpu1`, …), host and peer links. */
  readonly linkBytes: Readonly<Record<string, number>>;
  /** Per GPU. */
  readonly gpus: readonly GpuMetrics[];
  /** The driver's counters, including its extras (sorted by name). */
  readonly driver: Readonly<Record<string, number>>;
  /** Selected /proc/vmstat counters. */
  readonly vmstat: Readonly<Record<string, number>>;
}

/** Series sampled over simulated time (per-bucket deltas). */
export interface RunSeries {
  /** Bucket width in ns. */
  readonly bucketNs: number;
  /** Bucket start times, ns. */
  readonly t: readonly number[];
  /** GPU faults per bucket (all GPUs). */
  readonly faults: readonly number[];
  /** Fault batches per bucket. */
  readonly batches: readonly number[];
  /** Interconnect bytes per bucket (host and peer links, both directions). */
  readonly bytes: readonly number[];
  /** Pages migrated per bucket (all directions, from the driver's counters). */
  readonly migrated: readonly number[];
  /** CPU faults per bucket. */
  readonly cpuFaults: readonly number[];
}

/** The /proc/vmstat counters reported. */
export const REPORTED_VMSTAT = [
  "pgfault",
  "pgmigrate_success",
  "pgmigrate_fail",
  "thp_migration_success",
  "thp_migration_split",
  "thp_fault_alloc",
  "thp_fault_fallback",
  "nr_anon_pages",
] as const;

/** No driver (CPU-only runs). */
export const NO_DRIVER_COUNTERS: DriverCounters = {
  pagesToGpu: 0,
  pagesToCpu: 0,
  pagesGpuToGpu: 0,
  pagesEvicted: 0,
  thrashingEvents: 0,
  remoteMaps: 0,
};

const N_SERIES = 5;

/** Round to 6 significant decimals (stable, compact JSON for ratios). @param x - value. @returns rounded. */
export function round6(x: number): number {
  return Math.round(x * 1e6) / 1e6;
}

/**
 * Samples cumulative counters on the machine's clock into a bounded series.
 *
 * Context: `start` schedules its first event; the sampler stops rescheduling itself when it finds
 * no other event queued at two consecutive samples (so a stuck run still ends in the clock's
 * deadlock error) and at `stop`; `resume` re-arms it at the start of a phase.
 */
export class MetricsSampler {
  private bucketNs: number;
  private readonly maxBuckets: number;
  private readonly rows: number[][] = [];
  private last: number[] = [0, 0, 0, 0, 0];
  private ev: ReturnType<Machine["clock"]["schedule"]> | null = null;
  private t0 = 0;
  private stopped = false;
  private idleFires = 0;

  /**
   * @param machine - the machine (clock).
   * @param read - returns the cumulative [faults, batches, bytes, migrated, cpuFaults] now.
   * @param buckets - target number of buckets (the series holds between buckets/2 and buckets).
   * @param initialBucketNs - first bucket width. Default 1 µs.
   */
  constructor(
    private readonly machine: Machine,
    private readonly read: () => number[],
    buckets: number,
    initialBucketNs = 1000,
  ) {
    this.maxBuckets = buckets;
    this.bucketNs = initialBucketNs;
  }

  /** Begin sampling now. */
  start(): void {
    this.t0 = this.machine.clock.now;
    this.last = this.read();
    this.arm();
  }

  /**
   * Re-arm after a pause (see the class comment); the runner calls it at the start of each phase. Buckets that elapsed while paused
   * are recorded (the first with what happened, the others empty).
   */
  resume(): void {
    this.idleFires = 0;
    if (!this.stopped && this.ev === null) this.arm();
  }

  /**
   * Stop sampling; the partial last bucket is recorded.
   * @returns the series.
   */
  stop(): RunSeries {
    if (!this.stopped) {
      this.stopped = true;
      if (this.ev !== null) this.machine.clock.cancel(this.ev);
      this.ev = null;
      this.catchUp();
      if (this.machine.clock.now > this.t0 + this.rows.length * this.bucketNs || this.rows.length === 0) this.sample();
    }
    const t = this.rows.map((_, i) => i * this.bucketNs);
    const col = (k: number) => this.rows.map((r) => r[k] as number);
    return { bucketNs: this.bucketNs, t, faults: col(0), batches: col(1), bytes: col(2), migrated: col(3), cpuFaults: col(4) };
  }

  /** Record every bucket that ended at or before now. */
  private catchUp(): void {
    const now = this.machine.clock.now;
    while (this.t0 + (this.rows.length + 1) * this.bucketNs <= now) this.sample();
  }

  private arm(): void {
    const clock = this.machine.clock;
    this.catchUp();
    this.ev = clock.at(this.t0 + (this.rows.length + 1) * this.bucketNs, () => {
      this.ev = null;
      this.sample();
      // Nothing else queued can be a gap between an event and the promise chain that schedules
      // the next one; twice in a row (a whole bucket later) means the machine is idle.
      this.idleFires = clock.pending === 0 ? this.idleFires + 1 : 0;
      if (!this.stopped && this.idleFires < 2) this.arm();
    });
  }

  private sample(): void {
    const cur = this.read();
    const row = new Array<number>(N_SERIES);
    for (let k = 0; k < N_SERIES; k++) row[k] = (cur[k] as number) - (this.last[k] as number);
    this.last = cur;
    this.rows.push(row);
    if (this.rows.length >= this.maxBuckets) {
      // Merge pairs, double the width.
      const merged: number[][] = [];
      for (let i = 0; i < this.rows.length; i += 2) {
        const a = this.rows[i] as number[];
        const b = this.rows[i + 1];
        merged.push(b === undefined ? a : a.map((x, k) => x + (b[k] as number)));
      }
      this.rows.length = 0;
      this.rows.push(...merged);
      this.bucketNs *= 2;
    }
  }
}

/**
 * Total interconnect bytes (host and peer links, both directions) on a platform.
 * @param platform - the platform.
 * @returns bytes.
 */
export function interconnectBytes(platform: Platform): number {
  let b = 0;
  for (const l of platform.hostLinks) b += l.forward.bytes + l.reverse.bytes;
  for (const l of platform.peerLinks) b += l.forward.bytes + l.reverse.bytes;
  return b;
}

/**
 * Collect the run's metrics from the hardware, the kernel and the driver.
 * @param machine - the machine.
 * @param platform - its platform (or undefined for a CPU-only run).
 * @param driver - the driver's counters.
 * @param simTimeNs - the run's simulated duration.
 * @param cpuAccesses - accesses executed by CPU phases.
 * @returns the metrics (plain data, JSON-stable).
 */
export function collectMetrics(
  machine: Machine,
  platform: Platform | undefined,
  driver: DriverCounters,
  simTimeNs: number,
  cpuAccesses: number,
): RunMetrics {
  const gpus: GpuMetrics[] = [];
  let engines = 0;
  let busy = 0;
  const linkBytes: Record<string, number> = {};
  if (platform !== undefined) {
    for (const g of platform.gpus) {
      const st = g.copy.stats;
      let b = 0;
      let bytes = 0;
      let batches = 0;
      for (const s of st) {
        b += s.busyNs;
        bytes += s.bytes;
        batches += s.batches;
      }
      engines += st.length;
      busy += b;
      const fb = g.faults;
      gpus.push({
        gpu: g.index,
        name: g.name,
        accesses: g.compute.accesses,
        faults: fb.faultsPosted,
        faultsDropped: fb.faultsDropped,
        faultsCoalesced: fb.faultsCoalesced,
        faultBatches: fb.batches,
        replays: fb.replays,
        remoteAccesses: g.accessCounters.accessesCounted,
        accessCounterNotifications: g.accessCounters.notifications,
        copyBatches: batches,
        copyBytes: bytes,
        copyEngineUtilisation: simTimeNs > 0 ? round6(Math.min(1, b / (st.length * simTimeNs))) : 0,
        vramPagesInUse: g.vram.framesInUse,
      });
    }
    for (const l of [...platform.hostLinks, ...platform.peerLinks]) {
      linkBytes[l.forward.name] = l.forward.bytes;
      linkBytes[l.reverse.name] = l.reverse.bytes;
    }
  }
  const v = machine.vmstat.c as unknown as Record<string, number>;
  const vmstat: Record<string, number> = {};
  for (const k of REPORTED_VMSTAT) vmstat[k] = v[k] ?? 0;
  const drv: Record<string, number> = {
    pagesEvicted: driver.pagesEvicted,
    pagesGpuToGpu: driver.pagesGpuToGpu,
    pagesToCpu: driver.pagesToCpu,
    pagesToGpu: driver.pagesToGpu,
    remoteMaps: driver.remoteMaps,
    thrashingEvents: driver.thrashingEvents,
  };
  for (const k of Object.keys(driver.extra ?? {}).sort()) drv[k] = (driver.extra as Record<string, number>)[k] as number;
  const sum = (f: (g: GpuMetrics) => number) => gpus.reduce((a, g) => a + f(g), 0);
  return {
    simTimeNs,
    accesses: sum((g) => g.accesses) + cpuAccesses,
    gpuFaults: sum((g) => g.faults),
    faultBatches: sum((g) => g.faultBatches),
    cpuFaults: vmstat.pgfault ?? 0,
    pagesToGpu: driver.pagesToGpu,
    pagesToCpu: driver.pagesToCpu,
    pagesGpuToGpu: driver.pagesGpuToGpu,
    evictions: driver.pagesEvicted,
    thrashingEvents: driver.thrashingEvents,
    remoteMaps: driver.remoteMaps,
    remoteAccesses: sum((g) => g.remoteAccesses),
    copyEngineUtilisation: engines > 0 && simTimeNs > 0 ? round6(Math.min(1, busy / (engines * simTimeNs))) : 0,
    linkBytes,
    gpus,
    driver: drv,
    vmstat,
  };
}
