/**
 * `Machine`: one emulated computer, a tsyringe child container holding every service.
 *
 * Many machines live side by side in one process (tests, sweeps); they share nothing: there is no
 * module-level mutable state anywhere in hmmkit. A machine is built from a validated
 * {@link MachineConfig}; services are created in dependency order and torn down by `dispose()`.
 *
 * @see init/main.c (start_kernel: the order in which the kernel brings these subsystems up)
 */
import "reflect-metadata";
import { container, type DependencyContainer } from "tsyringe";
import { type MachineConfig, type MachineConfigResolved, validateMachineConfig } from "./config";
import type { Memremap } from "./memremap/memremap";
import type { MigrateDevice } from "./migrate/migrate-device";
import { MmCore } from "./mm/mm-core";
import { Contents } from "./phys/contents";
import { PageAllocator } from "./phys/page-alloc";
import { PageState } from "./phys/page-state";
import { SimClock } from "./sim/clock";
import { TraceBus } from "./sim/events";
import { Rng } from "./sim/rng";
import { VmStat } from "./sim/vmstat";
import { TOKENS } from "./tokens";

/**
 * One emulated computer.
 *
 * @example
 * ```ts
 * const m = Machine.create({ ramMiB: [512], seed: 7 });
 * const t = m.mm.spawn();
 * const va = t.mm.mmap(0, 4 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
 * await m.mm.write(t, va, new Uint8Array([1, 2, 3]));
 * m.dispose();
 * ```
 */
export class Machine {
  /** The machine's DI container (a child of tsyringe's root; nothing is registered globally). */
  readonly container: DependencyContainer;
  /** The validated configuration. */
  readonly config: Readonly<MachineConfigResolved>;
  /** Virtual time. */
  readonly clock: SimClock;
  /** The machine's only source of randomness. */
  readonly rng: Rng;
  /** Tracepoints. */
  readonly bus: TraceBus;
  /** /proc/vmstat counters. */
  readonly vmstat: VmStat;
  /** Per-page state (`struct page` as typed arrays). */
  readonly pages: PageState;
  /** Page contents. */
  readonly contents: Contents;
  /** The buddy allocator. */
  readonly alloc: PageAllocator;
  /** The mm layer: tasks, address spaces, faults, CPU access. */
  readonly mm: MmCore;
  private disposed = false;

  private constructor(cfg: MachineConfigResolved) {
    this.config = cfg;
    this.container = container.createChildContainer();
    this.clock = new SimClock();
    this.rng = new Rng(cfg.seed);
    this.bus = new TraceBus();
    this.vmstat = new VmStat();
    this.pages = new PageState();
    this.contents = new Contents(this.pages);
    this.alloc = new PageAllocator(this.pages, this.vmstat, this.contents, this.bus);
    cfg.ramMiB.forEach((mib, nid) => {
      const region = this.pages.addRegion("ram", (mib * 1024 * 1024) / 4096, nid, `node${nid}`);
      this.alloc.addZone(region);
    });
    const c = this.container;
    c.register(TOKENS.config, { useValue: cfg });
    c.register(TOKENS.clock, { useValue: this.clock });
    c.register(TOKENS.rng, { useValue: this.rng });
    c.register(TOKENS.bus, { useValue: this.bus });
    c.register(TOKENS.vmstat, { useValue: this.vmstat });
    c.register(TOKENS.pages, { useValue: this.pages });
    c.register(TOKENS.contents, { useValue: this.contents });
    c.register(TOKENS.alloc, { useValue: this.alloc });
    this.mm = c.resolve(MmCore);
    this.mm.boot();
  }

  /**
   * Build a machine.
   * @param config - see {@link MachineConfig}; omitted fields take their defaults.
   * @returns the booted machine.
   * @throws HmmError EINVAL naming the first bad field (`config.ramMiB[1]`, …).
   */
  static create(config: MachineConfig = {}): Machine {
    return new Machine(validateMachineConfig(config));
  }

  /**
   * Run the clock until no event is pending.
   * @returns resolves when the machine is idle.
   */
  run(): Promise<void> {
    return this.clock.run();
  }

  /**
   * Run the clock until `p` settles.
   * @param p - an operation that depends on simulated time (a DMA fence, a device fault).
   * @returns p's value.
   */
  settle<T>(p: Promise<T>): Promise<T> {
    return this.clock.settle(p);
  }

  /** ZONE_DEVICE registry: memremapPages / memunmapPages. @see mm/memremap.c */
  get memremap(): Memremap {
    return this.mm.memremap;
  }

  /** Device migration: migrate_vma_* and migrate_device_*. @see mm/migrate_device.c */
  get migrate(): MigrateDevice {
    return this.mm.migrate;
  }

  /** Whether {@link Machine.dispose} ran. */
  get isDisposed(): boolean {
    return this.disposed;
  }

  /**
   * Tear the machine down: exit every task, drop listeners, dispose the container.
   * Idempotent.
   */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.mm.shutdown();
    this.bus.removeAllListeners();
    void this.container.dispose();
  }
}
