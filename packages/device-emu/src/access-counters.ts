/**
 * Access counters: per-region counts of a GPU's accesses to memory that is not its own (system
 * memory through the host link, a peer's VRAM over a peer link), notifying the driver when a
 * region's count reaches the threshold.
 *
 * Theory of operation. The virtual address space of each GPU VA space is divided into tracking
 * regions of `granularity` bytes (default 2 MiB; 64 KiB, 16 MiB and 16 GiB also exist on the
 * hardware). Every remote access the compute engine executes increments its region's counter and
 * sets one bit of a 32-bit sub-region mask (granularity / 32 per bit: 64 KiB sub-regions for a
 * 2 MiB region). Local VRAM accesses are not counted. When a counter reaches `threshold` (default
 * 256, range 1..65535) the hardware writes a notification (instance, region base address,
 * granularity, sub-region mask, aperture of the last access, count) into the notification buffer
 * and resets that counter and mask. Counters live in typed arrays (slot per touched region, found
 * through a Map per VA space); nothing is allocated per access.
 *
 * Delivery mirrors the fault buffer: a non-empty notification buffer raises an interrupt; after
 * `interruptLatencyNs` the driver's {@link GpuDriverOps.serviceAccessCounters} receives batches
 * of up to `batchSize` (default 256) notifications, one batch at a time, until the buffer is
 * empty. When the buffer (capacity `bufferEntries`) is full, further notifications are dropped
 * and counted in `notificationsDropped` (the hardware sets its overflow bit). Whether to migrate
 * is the driver's policy (UVM: `uvm_perf_access_counter_migration_enable`, off on x86+PCIe).
 *
 * Defaults and ranges: reference §1.6 and §1.11 (`uvm_perf_access_counter_threshold` 256,
 * `uvm_perf_access_counter_batch_count` 256, granularity 2 MiB).
 *
 * @see NVIDIA uvm_gpu_access_counters.c (access_counter_buffer, notification fetch and
 *      service_va_block_locked, clear_all/clear_targeted), uvm_maxwell_access_counter_buffer.c
 */
import type { SimClock, TraceBus } from "@hmmkit/core/sim";
import type { DeviceEvents } from "./events";

/** Valid tracking granularities in bytes: 64 KiB, 2 MiB, 16 MiB, 16 GiB. */
export const ACCESS_COUNTER_GRANULARITIES = [65536, 2097152, 16777216, 17179869184] as const;

/** Access-counter configuration (validated by the platform). */
export interface AccessCounterConfig {
  /** Counting enabled. */
  readonly enabled: boolean;
  /** Region size in bytes (one of {@link ACCESS_COUNTER_GRANULARITIES}). */
  readonly granularity: number;
  /** Count that triggers a notification (1..65535). */
  readonly threshold: number;
  /** Notifications per batch delivered to the driver. */
  readonly batchSize: number;
  /** Notification buffer capacity. */
  readonly bufferEntries: number;
  /** Interrupt latency before a batch is delivered, ns. */
  readonly interruptLatencyNs: number;
}

/**
 * A batch of access-counter notifications. Arrays hold `count` entries and are reused by the next
 * batch.
 * @see uvm_access_counter_buffer_entry_t
 */
export interface AccessCounterBatch {
  /** The GPU. */
  readonly gpu: number;
  /** Number of notifications. */
  readonly count: number;
  /** Per notification: GPU VA space id. */
  readonly instance: Uint32Array;
  /** Per notification: base virtual address of the region. */
  readonly address: Float64Array;
  /** Per notification: region size in bytes. */
  readonly granularity: number;
  /** Per notification: accessed sub-regions (bit i = [address + i*g/32, +g/32)). */
  readonly subMask: Uint32Array;
  /** Per notification: aperture of the last counted access (APERTURE_SYS or aperturePeer(k)). */
  readonly aperture: Uint8Array;
  /** Per notification: counter value when it fired (= threshold). */
  readonly counterValue: Uint32Array;
}

/**
 * One GPU's access counters and notification buffer.
 *
 * Context: {@link AccessCounters.count} is synchronous and on the compute engine's hot path; the
 * delivery loop is async and awaits the driver's handler.
 * @see uvm_gpu_access_counters.c
 */
export class AccessCounters {
  private counts = new Uint32Array(64);
  private masks = new Uint32Array(64);
  private slots: Map<number, number>[] = [];
  private nextSlot = 0;
  private lastInst = -1;
  private lastRegion = -1;
  private lastSlot = -1;
  private readonly subShift: number;
  // Notification ring.
  private readonly nInstance: Uint32Array;
  private readonly nAddress: Float64Array;
  private readonly nMask: Uint32Array;
  private readonly nAperture: Uint8Array;
  private readonly nValue: Uint32Array;
  private head = 0;
  private tail = 0;
  private readonly batch: {
    gpu: number;
    count: number;
    instance: Uint32Array;
    address: Float64Array;
    granularity: number;
    subMask: Uint32Array;
    aperture: Uint8Array;
    counterValue: Uint32Array;
  };
  private armed = false;
  private servicing = false;

  /** Remote accesses counted. */
  accessesCounted = 0;
  /** Notifications written. */
  notifications = 0;
  /** Notifications dropped (buffer full). */
  notificationsDropped = 0;
  /** Batches delivered. */
  batches = 0;

  /**
   * @param gpu - GPU index.
   * @param cfg - validated configuration.
   * @param clock - the machine's clock.
   * @param bus - the platform's trace bus.
   * @param handler - returns the driver's notification handler, if bound.
   */
  constructor(
    readonly gpu: number,
    private cfg: AccessCounterConfig,
    private readonly clock: SimClock,
    private readonly bus: TraceBus<DeviceEvents>,
    private readonly handler: () => ((batch: AccessCounterBatch) => Promise<void> | void) | undefined,
  ) {
    this.subShift = Math.log2(cfg.granularity / 32);
    const n = cfg.bufferEntries;
    this.nInstance = new Uint32Array(n);
    this.nAddress = new Float64Array(n);
    this.nMask = new Uint32Array(n);
    this.nAperture = new Uint8Array(n);
    this.nValue = new Uint32Array(n);
    const b = cfg.batchSize;
    this.batch = {
      gpu,
      count: 0,
      instance: new Uint32Array(b),
      address: new Float64Array(b),
      granularity: cfg.granularity,
      subMask: new Uint32Array(b),
      aperture: new Uint8Array(b),
      counterValue: new Uint32Array(b),
    };
  }

  /** The configuration in force. */
  get config(): AccessCounterConfig {
    return this.cfg;
  }

  /** Notifications waiting in the buffer. */
  get pending(): number {
    return this.tail - this.head;
  }

  /** Whether delivery is armed or running. */
  get busy(): boolean {
    return this.armed || this.servicing;
  }

  /**
   * Count one remote access (the hardware's side).
   * @param instance - GPU VA space id.
   * @param va - accessed virtual address.
   * @param aperture - APERTURE_SYS or aperturePeer(k).
   * Context: synchronous, hot path.
   */
  count(instance: number, va: number, aperture: number): void {
    if (!this.cfg.enabled) return;
    const g = this.cfg.granularity;
    const region = Math.floor(va / g);
    let slot: number;
    if (instance === this.lastInst && region === this.lastRegion) slot = this.lastSlot;
    else {
      let m = this.slots[instance];
      if (m === undefined) {
        m = new Map();
        this.slots[instance] = m;
      }
      const s = m.get(region);
      if (s === undefined) {
        slot = this.nextSlot++;
        if (slot >= this.counts.length) this.grow();
        m.set(region, slot);
      } else slot = s;
      this.lastInst = instance;
      this.lastRegion = region;
      this.lastSlot = slot;
    }
    this.accessesCounted++;
    const c = (this.counts[slot] as number) + 1;
    this.masks[slot] = (this.masks[slot] as number) | (1 << Math.floor((va - region * g) / 2 ** this.subShift));
    if (c >= this.cfg.threshold) {
      this.notify(instance, region * g, this.masks[slot] as number, aperture, c);
      this.counts[slot] = 0;
      this.masks[slot] = 0;
    } else this.counts[slot] = c;
  }

  /**
   * Current counter of the region containing `va`.
   * @param instance - GPU VA space id.
   * @param va - any address in the region.
   * @returns the count since the last notification or clear.
   */
  counterOf(instance: number, va: number): number {
    const s = this.slots[instance]?.get(Math.floor(va / this.cfg.granularity));
    return s === undefined ? 0 : (this.counts[s] as number);
  }

  /**
   * Reset every counter (and sub-region mask) to zero.
   * Context: any; synchronous.
   * @see access_counter_clear_all / UVM_ACCESS_COUNTER_CLEAR_OP_ALL
   */
  clearAll(): void {
    this.counts.fill(0);
    this.masks.fill(0);
  }

  /**
   * Reset the counter of one region.
   * @param instance - GPU VA space id.
   * @param va - any address in the region.
   * Context: any; synchronous.
   * @see access_counter_clear_targeted / UVM_ACCESS_COUNTER_CLEAR_OP_TARGETED
   */
  clear(instance: number, va: number): void {
    const s = this.slots[instance]?.get(Math.floor(va / this.cfg.granularity));
    if (s !== undefined) {
      this.counts[s] = 0;
      this.masks[s] = 0;
    }
  }

  /**
   * Turn counting on or off (counters keep their values).
   * @param enabled - the new state.
   * @see uvm_gpu_access_counters_enable / _disable
   */
  setEnabled(enabled: boolean): void {
    this.cfg = { ...this.cfg, enabled };
  }

  /**
   * Start delivery if notifications are pending (after binding a driver).
   * Context: any.
   */
  kick(): void {
    if (this.pending > 0) this.arm();
  }

  private notify(instance: number, address: number, mask: number, aperture: number, value: number): void {
    const cap = this.cfg.bufferEntries;
    if (this.tail - this.head >= cap) {
      this.notificationsDropped++;
      return;
    }
    const i = this.tail % cap;
    this.nInstance[i] = instance;
    this.nAddress[i] = address;
    this.nMask[i] = mask;
    this.nAperture[i] = aperture;
    this.nValue[i] = value;
    this.tail++;
    this.notifications++;
    this.arm();
  }

  private arm(): void {
    if (this.armed || this.servicing || this.handler() === undefined) return;
    this.armed = true;
    this.clock.schedule(this.cfg.interruptLatencyNs, () => {
      this.armed = false;
      void this.service();
    });
  }

  private async service(): Promise<void> {
    const h = this.handler();
    if (h === undefined || this.servicing) return;
    this.servicing = true;
    try {
      while (this.pending > 0) {
        const b = this.batch;
        const cap = this.cfg.bufferEntries;
        let n = 0;
        while (this.head < this.tail && n < this.cfg.batchSize) {
          const i = this.head % cap;
          b.instance[n] = this.nInstance[i] as number;
          b.address[n] = this.nAddress[i] as number;
          b.subMask[n] = this.nMask[i] as number;
          b.aperture[n] = this.nAperture[i] as number;
          b.counterValue[n] = this.nValue[i] as number;
          n++;
          this.head++;
        }
        b.count = n;
        this.batches++;
        if (this.bus.wants("didNotifyAccessCounters")) this.bus.emit("didNotifyAccessCounters", { gpu: this.gpu, notifications: n });
        await h(b);
      }
    } finally {
      this.servicing = false;
    }
    if (this.pending > 0) this.arm();
  }

  private grow(): void {
    const c = new Uint32Array(this.counts.length * 2);
    c.set(this.counts);
    const m = new Uint32Array(this.masks.length * 2);
    m.set(this.masks);
    this.counts = c;
    this.masks = m;
  }
}
