/**
 * The migration-policy interface of the nouveau-like driver, and NVIDIA UVM's defaults.
 *
 * Theory of operation. The driver ({@link ../nouveau-svm}) does the mechanics — fault-batch
 * fetching, migrate_vma, copy-engine DMA, IOMMU and GPU page-table updates, eviction with
 * migrate_device_range — and asks a {@link MigrationPolicy} only for decisions, the way UVM's
 * perf modules (`uvm_perf_prefetch.c`, `uvm_perf_thrashing.c`) and the residency selection of
 * `uvm_va_block.c` sit beside its servicing code, or the BPF struct_ops hooks of the gpu_ext fork
 * (`uvm_bpf_struct_ops.h`: prefetch, block activate/access, evict prepare) sit inside it:
 *
 * | hook | when | decides |
 * |---|---|---|
 * | {@link MigrationPolicy.onFaultBatch} | every coalesced fault batch | per fault: migrate to this GPU, map remotely, or pin |
 * | {@link MigrationPolicy.prefetch} | per 2 MiB VA block with migrating faults | extra pages of the block to migrate |
 * | {@link MigrationPolicy.onAccessCounters} | every access-counter notification batch | which notified regions to migrate |
 * | {@link MigrationPolicy.selectEvictionVictim} | VRAM is full | which chunk (or pages) to evict |
 * | {@link MigrationPolicy.onThrashing} | a page reached the thrashing threshold | (policy state: pins) |
 *
 * Every hook is synchronous and receives typed arrays that the driver reuses: a policy copies
 * what it keeps. Hooks run in the driver's synchronous sections, so a policy needs no locking,
 * and since they see only virtual time ({@link PolicyContext.now}) a policy is deterministic if it
 * draws randomness only from {@link PolicyContext.random}.
 *
 * A policy is one object per GPU: the driver takes a {@link MigrationPolicy} (shared by every
 * GPU) or a {@link PolicyFactory} (called once per GPU). Built-ins live in `./policies/`.
 *
 * @see NVIDIA open-gpu-kernel-modules kernel-open/nvidia-uvm/uvm_va_block.c
 *      (block_select_processor_residency), uvm_perf_prefetch.c, uvm_perf_thrashing.c,
 *      uvm_gpu_access_counters.c, uvm_pmm_gpu.c (pick_root_chunk_to_evict);
 *      eunomia-bpf/open-gpu-kernel-modules uvm_bpf_struct_ops.h; reference/uvm-policies.md §0–1
 */
import { einval } from "@hmmkit/core";

/** Decision: migrate the page to the faulting GPU's VRAM (UVM's default "migrate on touch", rule 11). */
export const POLICY_MIGRATE = 0;
/**
 * Decision: leave the page where it is and map it remotely — system memory through the GPU's
 * IOMMU, or a peer GPU's VRAM over a peer link when both GPUs share an owner group (a page on a
 * GPU outside the group is first brought to system memory by its driver's migrateToRam).
 * UVM: `accessed_by` / "stay put and add a mapping" (rule 7).
 */
export const POLICY_REMOTE = 1;
/**
 * Decision: as {@link POLICY_REMOTE}, counted as a thrashing pin (`num_pin_remote`): the page is
 * pinned where it lives and this GPU gets a remote mapping. UVM: thrashing hint PIN (rule 5).
 */
export const POLICY_PIN = 2;

/** A per-fault decision: {@link POLICY_MIGRATE}, {@link POLICY_REMOTE} or {@link POLICY_PIN}. */
export type PolicyDecision = typeof POLICY_MIGRATE | typeof POLICY_REMOTE | typeof POLICY_PIN;

/** Residency of a page: not populated anywhere yet (pte_none, or the zero page). */
export const RESIDENCY_NONE = -2;
/** Residency of a page: system memory (CPU). */
export const RESIDENCY_CPU = -1;

/**
 * NVIDIA UVM's defaults that the driver and the built-in policies use, with their sources
 * (`NVIDIA/open-gpu-kernel-modules` tag 595.45.04, `kernel-open/nvidia-uvm/`; reference/uvm-policies.md
 * §0 and §1.11). Times are in ns of virtual time.
 */
export const UVM_DEFAULTS = {
  /** Fault entries fetched and serviced per batch, `uvm_perf_fault_batch_count` (uvm_gpu_replayable_faults.c). Applied by device-emu's fault buffer. */
  faultBatchCount: 256,
  /** 2 MiB VA block, the migration/tracking unit: `UVM_VA_BLOCK_SIZE` (uvm_va_block_types.h). */
  vaBlockSize: 2 * 1024 * 1024,
  /** Big-page size: faulted pages grow to their 64 KiB big page before the tree walk (`UVM_BIG_PAGE_SIZE`, uvm_perf_prefetch.c grow_fault_granularity). */
  bigPageSize: 64 * 1024,
  /** Tree-prefetch density threshold in percent: a subtree is prefetched when more than 51 % of it is resident or faulted (`uvm_perf_prefetch_threshold`, 1..100). */
  prefetchThreshold: 51,
  /** Faults migrated to the block's last processor before prefetch applies (`uvm_perf_prefetch_min_faults`, 1..20). */
  prefetchMinFaults: 1,
  /** Thrashing events on a page (two migrations within the lapse) that mark it thrashing (`uvm_perf_thrashing_threshold`, 1..7). */
  thrashingThreshold: 3,
  /** Throttles before a thrashing page is pinned (`uvm_perf_thrashing_pin_threshold`). The built-in thrash policy pins at detection and does not throttle; see policies/thrash-pin.ts. */
  thrashingPinThreshold: 10,
  /** Lapse within which two events on a page count as thrashing: 500 µs (`uvm_perf_thrashing_lapse_usec`). */
  thrashingLapseNs: 500_000,
  /** Pin duration: 300 × lapse = 150 ms (`uvm_perf_thrashing_pin`). */
  thrashingPinNs: 300 * 500_000,
  /** Quiet time after which a page's thrashing state resets: 2000 × lapse = 1 s (`uvm_perf_thrashing_epoch`). */
  thrashingEpochNs: 2000 * 500_000,
  /** Access-counter tracking granularity: 2 MiB (uvm_gpu_access_counters.c). Applied by device-emu. */
  accessCounterGranularity: 2 * 1024 * 1024,
  /** Remote accesses that trigger a notification (`uvm_perf_access_counter_threshold`, 1..65535). Applied by device-emu. */
  accessCounterThreshold: 256,
  /** Notifications per batch (`uvm_perf_access_counter_batch_count`). Applied by device-emu. */
  accessCounterBatchCount: 256,
  /** GPU root chunk, the eviction unit: 2 MiB (`UVM_CHUNK_SIZE_MAX`, uvm_pmm_gpu.h). Also nouveau's `DMEM_CHUNK_SIZE` (HPAGE_PMD_SIZE). */
  evictionChunkSize: 2 * 1024 * 1024,
} as const;

/** The driver services a policy sees (read-only views and helpers). */
export interface PolicyContext {
  /** The GPU this policy instance serves. */
  readonly gpu: number;
  /** Number of GPUs on the platform. */
  readonly gpuCount: number;
  /** Current virtual time in ns. */
  readonly now: number;
  /** VRAM chunks (2 MiB) of this GPU. */
  readonly vramChunks: number;
  /** VRAM pages (4 KiB) currently free on this GPU. */
  readonly vramFreePages: number;
  /**
   * The machine's seeded PRNG (the only randomness a deterministic policy may use).
   * @returns a float in [0, 1).
   */
  random(): number;
  /**
   * Fill `out[i]` (512 entries) with 1 for each page of the 2 MiB block at `blockVa` resident in
   * this GPU's VRAM and mapped in the VA space `instance`, else 0.
   * @param instance - GPU VA space id (a fault's instance).
   * @param blockVa - 2 MiB-aligned address.
   * @param out - 512 entries.
   */
  residentMask(instance: number, blockVa: number, out: Uint8Array): void;
  /**
   * Fill `out[i]` (512 entries) with the VRAM pfn backing page i of the 2 MiB block at `blockVa`
   * in VA space `instance` when it is resident here and mapped, else -1.
   * @param instance - GPU VA space id.
   * @param blockVa - 2 MiB-aligned address.
   * @param out - 512 entries.
   */
  residentPfns(instance: number, blockVa: number, out: Float64Array): void;
}

/**
 * One coalesced fault batch, as the policy sees it (indices 0..count-1, sorted by VA space and
 * address). `decision` is pre-filled with {@link POLICY_MIGRATE}; the policy overwrites entries.
 * @see uvm_fault_service_batch_context_t
 */
export interface PolicyFaultBatch {
  /** Number of faults. */
  readonly count: number;
  /** GPU VA space id (instance) per fault. */
  readonly instance: Uint32Array;
  /** 4 KiB-aligned faulting address per fault (GPU VA == CPU VA). */
  readonly address: Float64Array;
  /** Most intrusive access type per fault (FAULT_ACCESS_READ/WRITE/ATOMIC of device-emu). */
  readonly accessType: Uint8Array;
  /** Raw fault entries merged into each fault. */
  readonly numInstances: Uint32Array;
  /**
   * Where each page lives before servicing: {@link RESIDENCY_NONE}, {@link RESIDENCY_CPU}, or a
   * GPU index (this GPU when resident but not mapped, e.g. after fork write-protected it).
   */
  readonly residency: Int8Array;
  /** Out: one {@link PolicyDecision} per fault. */
  readonly decision: Uint8Array;
}

/**
 * A prefetch request for one 2 MiB VA block that has faults being migrated to this GPU.
 * Page i of the block is `blockVa + i * 4096`. Only pages in `[first, end)` (the block clipped to
 * the VMA: UVM's `max_prefetch_region`, clipped as `uvm_hmm_get_prefetch_region` does) may be
 * marked.
 * @see uvm_perf_prefetch_get_hint_va_block
 */
export interface PrefetchRequest {
  /** GPU VA space id. */
  readonly instance: number;
  /** 2 MiB-aligned VA of the block. */
  readonly blockVa: number;
  /** First page index the VMA allows. */
  readonly first: number;
  /** One past the last page index the VMA allows. */
  readonly end: number;
  /** 512 entries: 1 = resident on this GPU before this batch. */
  readonly resident: Uint8Array;
  /** 512 entries: 1 = faulted in this batch and decided {@link POLICY_MIGRATE}. */
  readonly faulted: Uint8Array;
  /** Out, 512 entries (zeroed): set 1 for every extra page to migrate with the faults. */
  readonly prefetch: Uint8Array;
}

/**
 * A batch of access-counter notifications (remote accesses by this GPU reached the threshold).
 * @see uvm_access_counter_buffer_entry_t, service_va_block_locked
 */
export interface PolicyAccessCounterBatch {
  /** Number of notifications. */
  readonly count: number;
  /** GPU VA space id per notification. */
  readonly instance: Uint32Array;
  /** Region base address per notification. */
  readonly address: Float64Array;
  /** Region size in bytes (2 MiB by default). */
  readonly granularity: number;
  /** Accessed sub-regions per notification (bit i = [address + i*g/32, +g/32)). */
  readonly subMask: Uint32Array;
  /** Counter value that triggered each notification. */
  readonly counterValue: Uint32Array;
  /** Out (zeroed): set 1 to migrate the notified sub-regions of entry i to this GPU. */
  readonly migrate: Uint8Array;
}

/**
 * The chunks the driver could evict, for {@link MigrationPolicy.selectEvictionVictim}. Chunk c's
 * pages are VRAM pfns `chunkBasePfn + c * 512 .. + 511`.
 * @see uvm_pmm_gpu.c alloc_list[UNUSED, DISCARDED, USED], pick_root_chunk_to_evict
 */
export interface EvictionCandidates {
  /** Number of candidate chunks. */
  readonly count: number;
  /** Chunk index per candidate (ascending). */
  readonly chunk: Uint32Array;
  /** Per candidate: allocation sequence of the chunk's most recent page (LRU by allocation, as UVM's USED list). */
  readonly lastAllocSeq: Float64Array;
  /** Per candidate: virtual time of that allocation. */
  readonly lastAllocNs: Float64Array;
  /** Per candidate: pages of the chunk in use. */
  readonly usedPages: Uint16Array;
  /** First VRAM pfn of chunk 0. */
  readonly chunkBasePfn: number;
  /**
   * Per VRAM page (index pfn - chunkBasePfn): the VA it backs, or -1 when free. Lets tree
   * policies look at the VA neighbourhood of a chunk's pages.
   */
  readonly pageVa: Float64Array;
  /** Per VRAM page: the GPU VA space id of the mapping that made it resident, or 0. */
  readonly pageInstance: Uint32Array;
}

/** Where to write an eviction choice. */
export interface EvictionChoice {
  /**
   * Out: VRAM pfns to evict. Leave `count` at 0 and return a candidate index to evict a whole
   * chunk; or fill pfns (any pages of any chunks) and return -1.
   */
  readonly pfns: Float64Array;
  /** Out: number of entries of `pfns` used. */
  count: number;
}

/** A page of one address space reached the thrashing threshold. @see uvm_perf_thrashing.c thrashing_detected */
export interface ThrashingEvent {
  /** GPU VA space id on this GPU (0 when the address space has no VA space on this GPU). */
  readonly instance: number;
  /** Address space id (core `Mm.id`). */
  readonly mm: number;
  /** 4 KiB-aligned address. */
  readonly address: number;
  /** Thrashing events counted on the page (>= threshold). */
  readonly events: number;
  /** Bit mask of processors that migrated it within the lapse: bit 0 = CPU, bit 1 + g = GPU g. */
  readonly processors: number;
  /** Virtual time of detection. */
  readonly now: number;
}

/** Thrashing detection parameters (the driver detects; the policy mitigates). */
export interface ThrashingParams {
  /** Detection on. Default true (`uvm_perf_thrashing_enable`). */
  readonly enabled: boolean;
  /** Events to mark a page thrashing. Default {@link UVM_DEFAULTS}.thrashingThreshold (3), range 1..7. */
  readonly threshold: number;
  /** Lapse in ns. Default 500 µs. Range 1..10^12. */
  readonly lapseNs: number;
  /** Quiet time after which a page's count resets, ns. Default 1 s. */
  readonly epochNs: number;
}

/**
 * A migration policy: what a user implements, in one file, to try a placement strategy.
 * Only `name` is required; a missing hook means "the driver's default": migrate every fault
 * (first-touch), no prefetch, ignore access counters, evict the least recently allocated chunk,
 * ignore thrashing.
 *
 * Context: every hook is synchronous, called from the driver's service loop with no lock to
 * take; it must not call back into the driver. Arrays are reused between calls.
 * @see uvm_bpf_struct_ops.h (gpu_ext), uvm_va_block.c block_select_processor_residency
 * @example
 * ```ts
 * // Migrate written pages, map read-only ones remotely.
 * export const writeMigrates: MigrationPolicy = {
 *   name: "write-migrates",
 *   onFaultBatch(_ctx, b) {
 *     for (let i = 0; i < b.count; i++) b.decision[i] = b.accessType[i] === FAULT_ACCESS_READ ? POLICY_REMOTE : POLICY_MIGRATE;
 *   },
 * };
 * ```
 */
export interface MigrationPolicy {
  /** Short name for reports (`"first-touch"`, `"tree-prefetch"`, …). */
  readonly name: string;
  /**
   * Thrashing detection parameters this policy wants (merged over the defaults).
   */
  readonly thrashing?: Partial<ThrashingParams>;
  /**
   * Decide, per fault of a batch, whether to migrate, map remotely or pin.
   * @param ctx - driver services.
   * @param batch - the batch; write `batch.decision[i]`.
   * @see block_select_processor_residency, service_fault_batch_block_locked
   */
  onFaultBatch?(ctx: PolicyContext, batch: PolicyFaultBatch): void;
  /**
   * Choose extra pages of a block to migrate together with its faults.
   * @param ctx - driver services.
   * @param req - the block; write `req.prefetch[i] = 1`.
   * @see uvm_perf_prefetch_get_hint_va_block
   */
  prefetch?(ctx: PolicyContext, req: PrefetchRequest): void;
  /**
   * Decide which notified regions to migrate to this GPU (the pages of the flagged sub-regions
   * not already here are migrated). Default: none (UVM's default on x86 + PCIe).
   * @param ctx - driver services.
   * @param batch - the notifications; write `batch.migrate[i] = 1`.
   * @see uvm_gpu_access_counters.c service_va_block_locked, uvm_perf_access_counter_migration_enable
   */
  onAccessCounters?(ctx: PolicyContext, batch: PolicyAccessCounterBatch): void;
  /**
   * Pick what to evict when VRAM is full.
   * @param ctx - driver services.
   * @param candidates - the chunks holding pages.
   * @param choice - for page-granular eviction: fill `choice.pfns`/`choice.count`.
   * @returns a candidate index (whole chunk), or -1 with `choice` filled; -1 with `choice.count`
   *   0 means "default" (the least recently allocated chunk).
   * @see pick_root_chunk_to_evict, gpu_evict_prepare
   */
  selectEvictionVictim?(ctx: PolicyContext, candidates: EvictionCandidates, choice: EvictionChoice): number;
  /**
   * A page is thrashing (migrated back and forth within the lapse `threshold` times).
   * @param ctx - driver services.
   * @param ev - the page and its history.
   * @see uvm_perf_thrashing_get_hint, thrashing_detected
   */
  onThrashing?(ctx: PolicyContext, ev: ThrashingEvent): void;
}

/**
 * A policy factory: the driver calls it once per GPU, so per-GPU state stays in its instance.
 * @param gpu - the GPU index.
 * @returns the policy of that GPU.
 */
export type PolicyFactory = (gpu: number) => MigrationPolicy;

/**
 * Combine policies into one: fault decisions are applied in order (a later policy sees and may
 * overwrite an earlier one's decisions); prefetch, access-counter and thrashing hooks all run (a
 * page is prefetched/migrated if any part asks); eviction asks each part in order and takes the
 * first that chooses. Thrashing parameters are merged in order.
 * @param name - the combined policy's name.
 * @param parts - the policies, in order.
 * @returns the combined policy.
 * @throws HmmError EINVAL if `parts` is empty.
 * Context: pure; no state of its own.
 * @see uvm_perf_module_t (UVM chains its perf modules the same way)
 * @example
 * ```ts
 * const uvm = composePolicies("uvm", [treePrefetchPolicy(), thrashPinPolicy(), lruEvictionPolicy()]);
 * ```
 */
export function composePolicies(name: string, parts: readonly MigrationPolicy[]): MigrationPolicy {
  if (!Array.isArray(parts) || parts.length === 0) einval("parts", "at least one MigrationPolicy");
  let thrashing: Partial<ThrashingParams> | undefined;
  for (const p of parts) if (p.thrashing !== undefined) thrashing = { ...thrashing, ...p.thrashing };
  const fault = parts.filter((p) => p.onFaultBatch !== undefined);
  const pre = parts.filter((p) => p.prefetch !== undefined);
  const acc = parts.filter((p) => p.onAccessCounters !== undefined);
  const ev = parts.filter((p) => p.selectEvictionVictim !== undefined);
  const thr = parts.filter((p) => p.onThrashing !== undefined);
  const out: MigrationPolicy = {
    name,
    ...(thrashing === undefined ? {} : { thrashing }),
    ...(fault.length === 0
      ? {}
      : {
          onFaultBatch: (ctx, b) => {
            for (const p of fault) p.onFaultBatch?.(ctx, b);
          },
        }),
    ...(pre.length === 0
      ? {}
      : {
          prefetch: (ctx, r) => {
            for (const p of pre) p.prefetch?.(ctx, r);
          },
        }),
    ...(acc.length === 0
      ? {}
      : {
          onAccessCounters: (ctx, b) => {
            for (const p of acc) p.onAccessCounters?.(ctx, b);
          },
        }),
    ...(thr.length === 0
      ? {}
      : {
          onThrashing: (ctx, e) => {
            for (const p of thr) p.onThrashing?.(ctx, e);
          },
        }),
    ...(ev.length === 0
      ? {}
      : {
          selectEvictionVictim: (ctx, c, choice) => {
            for (const p of ev) {
              choice.count = 0;
              const r = p.selectEvictionVictim?.(ctx, c, choice) ?? -1;
              if (r >= 0 || choice.count > 0) return r;
            }
            return -1;
          },
        }),
  };
  return out;
}
