/**
 * nouveau_drm: probe every GPU of a platform with the nouveau-like driver, form owner groups,
 * share thrashing detection, aggregate counters, tear down.
 *
 * Theory of operation. {@link NouveauModule.probe} validates its options, then for each GPU:
 * picks the pgmap owner — one identity per GPU, or one shared by every GPU of an owner group (as
 * drm_pagemap_acquire_owner groups peers with a fast interconnect) — registers its VRAM
 * (NouveauDmem), builds its policy and binds the fault/access-counter handlers to the device.
 * Owner groups must be cliques of peer links: with a shared owner, hmm_range_fault hands a GPU
 * its peers' pages as mappable and migrate_vma collects them, which is only usable over a link.
 * `"auto"` takes every connected component of the peer-link graph that is a clique.
 *
 * All GPUs share one {@link ThrashingTracker}: a migration by any of them (or a CPU fault served
 * by any of them) is an event on that page; a thrashing report goes to the policy of every GPU
 * with a VA space on the address space.
 *
 * Teardown ({@link NouveauModule.remove}) closes every VA space, evicts all VRAM back to system
 * memory with the copy engines, unregisters the pgmaps and unbinds the drivers.
 *
 * @see drivers/gpu/drm/nouveau/nouveau_drm.c (nouveau_drm_probe, nouveau_drm_device_remove),
 *      drivers/gpu/drm/drm_pagemap_util.c (drm_pagemap_acquire_owner), NVIDIA uvm_perf_thrashing.c
 */
import { einval, HmmError, type Machine, type Task, TraceBus } from "@hmmkit/core";
import type { Platform } from "@hmmkit/device-emu";
import { type NouveauStats, zeroNouveauStats } from "./nouveau-dmem";
import { NouveauDriver, type NouveauEvents, type NouveauModuleHost, type NouveauSvmm } from "./nouveau-svm";
import { firstTouchPolicy } from "./policies/first-touch";
import type { MigrationPolicy, PolicyFactory, ThrashingParams } from "./policy";
import { resolveThrashing, ThrashingTracker } from "./thrashing";

/** Options of {@link NouveauModule.probe}. */
export interface NouveauOptions {
  /**
   * The policy: one object shared by every GPU, or a factory called once per GPU (preferred for
   * stateful policies). Default: {@link firstTouchPolicy} per GPU.
   */
  readonly policy?: MigrationPolicy | PolicyFactory;
  /**
   * Owner groups: `"auto"` (default; every connected component of the peer-link graph that is a
   * clique shares one owner), `"none"` (one owner per GPU: device-to-device migration goes
   * through system memory), or explicit groups of GPU indices (each group a clique of peer links,
   * each GPU in at most one group).
   */
  readonly ownerGroups?: "auto" | "none" | readonly (readonly number[])[];
  /** Thrashing detection parameters (over the policy's, over UVM's defaults). */
  readonly thrashing?: Partial<ThrashingParams>;
}

/** A pgmap owner identity (opaque; compared by reference). */
export interface NouveauOwner {
  /** Label: `nouveau0` or `nouveau-group-0-1`. */
  readonly name: string;
  /** The GPUs sharing it. */
  readonly gpus: readonly number[];
}

function resolveGroups(platform: Platform, g: NouveauOptions["ownerGroups"]): number[][] {
  const n = platform.gpus.length;
  const linked = (a: number, b: number) => platform.peerLink(a, b) !== undefined;
  const clique = (grp: number[]) => grp.every((a, i) => grp.every((b, j) => i === j || linked(a, b)));
  if (g === undefined || g === "auto") {
    const seen = new Uint8Array(n);
    const out: number[][] = [];
    for (let s = 0; s < n; s++) {
      if (seen[s]) continue;
      const comp: number[] = [];
      const stack = [s];
      seen[s] = 1;
      while (stack.length > 0) {
        const a = stack.pop() as number;
        comp.push(a);
        for (let b = 0; b < n; b++) {
          if (seen[b] || !linked(a, b)) continue;
          seen[b] = 1;
          stack.push(b);
        }
      }
      comp.sort((x, y) => x - y);
      if (comp.length > 1 && clique(comp)) out.push(comp);
      else for (const a of comp) out.push([a]);
    }
    return out;
  }
  if (g === "none") return Array.from({ length: n }, (_, i) => [i]);
  if (!Array.isArray(g)) einval("opts.ownerGroups", `"auto", "none" or an array of GPU index arrays`);
  const used = new Uint8Array(n);
  const out: number[][] = [];
  g.forEach((grp, i) => {
    const path = `opts.ownerGroups[${i}]`;
    if (!Array.isArray(grp) || grp.length === 0) einval(path, "a non-empty array of GPU indices");
    for (const x of grp) {
      if (!Number.isInteger(x) || x < 0 || x >= n) einval(path, `GPU indices in 0..${n - 1}, got ${String(x)}`);
      if (used[x]) einval(path, `each GPU in at most one group; gpu${x} is in two`);
      used[x] = 1;
    }
    const sorted = [...grp].sort((x, y) => x - y);
    if (!clique(sorted)) einval(path, `GPUs all linked pairwise by peer links, got [${sorted.join(", ")}]`);
    out.push(sorted);
  });
  for (let i = 0; i < n; i++) if (!used[i]) out.push([i]);
  out.sort((a, b) => (a[0] as number) - (b[0] as number));
  return out;
}

/**
 * The nouveau-like driver on every GPU of a platform.
 *
 * Context: `probe`, `bind`, `stats` are synchronous; `remove` is async (evicts with DMA).
 * @see nouveau_drm.c
 * @example
 * ```ts
 * const m = Machine.create({ ramMiB: [256], seed: 1 });
 * const platform = Platform.create(m, { gpus: [{ vramMiB: 64 }, { vramMiB: 64 }], peerLinks: [{ gpus: [0, 1], preset: "nvlink3" }] });
 * const mod = NouveauModule.probe(m, platform, { policy: () => treePrefetchPolicy() });
 * const t = m.mm.spawn();
 * const va = t.mm.mmap(0, 8 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
 * const gpu0 = mod.bind(t, 0);
 * const k = gpu0.launch([{ addr, size, flags }]);
 * await m.settle(k.fence.promise);
 * console.log(mod.stats());
 * await m.settle(mod.remove());
 * ```
 */
export class NouveauModule implements NouveauModuleHost {
  /** The per-GPU drivers, by GPU index. */
  readonly drivers: NouveauDriver[] = [];
  /** The owner of each GPU's pgmaps. */
  readonly owners: NouveauOwner[] = [];
  /** Shared thrashing detection. */
  readonly tracker: ThrashingTracker;
  /** The driver's tracepoints. */
  readonly bus = new TraceBus<NouveauEvents>();
  private readonly pgmapGpu = new Map<number, number>();
  private removed = false;

  private constructor(
    /** The machine. */
    readonly machine: Machine,
    /** The platform. */
    readonly platform: Platform,
    thrashing: ThrashingParams,
  ) {
    this.tracker = new ThrashingTracker(thrashing);
  }

  /**
   * Probe every GPU of `platform` (built on `machine`'s PhysContext).
   * @param machine - the machine. @param platform - its platform. @param opts - see {@link NouveauOptions}.
   * @returns the module.
   * @throws HmmError EINVAL naming a bad option (`opts.ownerGroups[1]`, `opts.thrashing.threshold`,
   *   `opts.policy`), or a platform built on another machine; EBUSY if a GPU already has a driver.
   *   Nothing is registered when it throws.
   * Context: synchronous.
   * @see nouveau_drm_probe, nouveau_dmem_init, nouveau_svm_init
   */
  static probe(machine: Machine, platform: Platform, opts: NouveauOptions = {}): NouveauModule {
    if (opts === null || typeof opts !== "object") einval("opts", "a NouveauOptions object");
    const n = platform.gpus.length;
    for (let i = 0; i < n; i++) {
      const g = platform.gpu(i);
      if (machine.pages.regionOf(g.vram.basePfn) !== g.vram.region) einval("platform", "a platform built on this machine's PhysContext");
      if (g.driver !== undefined) throw new HmmError("EBUSY", `platform.gpus[${i}]: a driver is already bound`, "platform");
    }
    const p = opts.policy;
    if (p !== undefined && typeof p !== "function" && (typeof p !== "object" || p === null || typeof p.name !== "string")) {
      einval("opts.policy", "a MigrationPolicy object or a factory (gpu) => MigrationPolicy");
    }
    const policies: MigrationPolicy[] = [];
    for (let i = 0; i < n; i++) policies.push(p === undefined ? firstTouchPolicy() : typeof p === "function" ? p(i) : p);
    const thr = resolveThrashing({ ...(policies[0]?.thrashing ?? {}), ...(opts.thrashing ?? {}) }, "opts.thrashing");
    const groups = resolveGroups(platform, opts.ownerGroups);
    const mod = new NouveauModule(machine, platform, thr);
    const ownerOf: NouveauOwner[] = [];
    for (const grp of groups) {
      const o: NouveauOwner = { name: grp.length === 1 ? `nouveau${grp[0]}` : `nouveau-group-${grp.join("-")}`, gpus: grp };
      for (const x of grp) ownerOf[x] = o;
    }
    for (let i = 0; i < n; i++) {
      const o = ownerOf[i] as NouveauOwner;
      const d = new NouveauDriver(mod, i, o, o.gpus.length > 1, policies[i] as MigrationPolicy);
      mod.drivers.push(d);
      mod.owners.push(o);
      for (const pg of d.dmem.pgmaps) mod.pgmapGpu.set(pg.id, i);
    }
    for (const d of mod.drivers) {
      d.gpu.bindDriver({
        serviceFaults: (b) => d.serviceFaults(b),
        serviceAccessCounters: (b) => d.serviceAccessCounters(b),
      });
    }
    return mod;
  }

  /**
   * A GPU's driver.
   * @param gpu - index. @returns the driver.
   * @throws HmmError EINVAL for a bad index.
   */
  driver(gpu: number): NouveauDriver {
    const d = this.drivers[gpu];
    if (d === undefined) einval("gpu", `a GPU index in 0..${this.drivers.length - 1}, got ${gpu}`);
    return d;
  }

  /**
   * Bind a task's address space to a GPU (a GPU VA space mirroring it, GPU VA == CPU VA).
   * @param task - a live task. @param gpu - GPU index.
   * @returns the VA space.
   * @throws HmmError EINVAL (exited task, bad index, module removed), EBUSY (already bound).
   * Context: synchronous.
   * @see nouveau_svmm_init
   */
  bind(task: Task, gpu: number): NouveauSvmm {
    if (this.removed) einval("module", "a module that was not removed");
    return this.driver(gpu).svmmInit(task);
  }

  /** @inheritDoc */
  gpuOfPfn(pfn: number): number {
    const id = this.machine.pages.pgmap[pfn] as number;
    if (id === 0) return -1;
    const g = this.pgmapGpu.get(id);
    return g === undefined ? -1 : g;
  }

  /** @inheritDoc */
  recordMigration(mmId: number, va: number, npages: number, proc: number): void {
    this.tracker.record(mmId, va, npages, proc, this.machine.clock.now, (addr, events, procs) => {
      const now = this.machine.clock.now;
      this.trace("didDetectThrashing", { mm: mmId, address: addr, events, processors: procs, now });
      for (const d of this.drivers) {
        const s = d.svmmOf(mmId);
        if (s === undefined) continue;
        d.stats.thrashingEvents++;
        d.policy.onThrashing?.(d.ctx, { instance: s.instance, mm: mmId, address: addr, events, processors: procs, now });
      }
    });
  }

  /** @inheritDoc */
  trace(name: keyof NouveauEvents, payload: NouveauEvents[keyof NouveauEvents][0]): void {
    if (this.bus.wants(name)) (this.bus.emit as (n: string, p: unknown) => boolean)(name, payload);
  }

  /**
   * Counters: one GPU's, or the sum over all GPUs.
   * @param gpu - a GPU index, or undefined for the total.
   * @returns a copy of the counters.
   */
  stats(gpu?: number): NouveauStats {
    if (gpu !== undefined) return { ...this.driver(gpu).stats };
    const t = zeroNouveauStats();
    for (const d of this.drivers) for (const k of Object.keys(t) as (keyof NouveauStats)[]) t[k] += d.stats[k];
    return t;
  }

  /**
   * Bytes moved per link direction and VRAM port (device-emu's counters).
   * @returns resource name → bytes (`gpu0.h2d`, `gpu0.d2h`, `gpu0->gpu1`, `gpu0.vram`, …).
   */
  linkBytes(): Record<string, number> {
    return this.platform.linkBytes();
  }

  /**
   * What is still held or in flight (drivers, devices), for leak guards.
   * @returns problems; empty when quiescent.
   */
  quiescent(): string[] {
    const out: string[] = [];
    for (const d of this.drivers) out.push(...d.quiescent());
    out.push(...this.platform.quiescent());
    return out;
  }

  /**
   * Tear down: close every VA space, evict all VRAM to system memory, unregister the pgmaps,
   * unbind the drivers. Idempotent.
   * @returns resolves when done.
   * @throws BugError `nouveau-remove-busy` if VRAM pages could not be evicted (still locked).
   * Context: async; the clock must run (`machine.settle(mod.remove())`). Kernels should be done.
   * @see nouveau_drm_device_remove, nouveau_dmem_fini, nouveau_svm_fini
   */
  async remove(): Promise<void> {
    if (this.removed) return;
    this.removed = true;
    for (const d of this.drivers) for (const s of [...d.vaSpaces.values()]) s.close();
    for (const d of this.drivers) {
      const left = await d.dmem.fini();
      if (left > 0) throw new HmmError("EBUSY", `nouveau${d.index}: ${left} VRAM page(s) could not be evicted`, "module");
      d.gpu.unbindDriver();
    }
  }
}
