/**
 * Tree-based density prefetch, as UVM's uvm_perf_prefetch.c (and UVMSmart's TBNp).
 *
 * For each 2 MiB VA block with faults migrating to this GPU, a bitmap over its 512 pages holds
 * the pages resident here or faulted now. First every faulted page grows to its whole 64 KiB big
 * page (grow_fault_granularity). Then, for each faulted page, the tree of power-of-two aligned
 * subregions above it (4 KiB … 2 MiB) is walked upwards and the largest subregion whose density
 * is above the threshold (`count * 100 > pages * threshold`, default 51) is prefetched whole. A
 * sequential scan of one block thus faults 6 times, moving 64, 64, 128, 256, 512 and 1024 KiB
 * (reference §1.4) instead of 512 times. Subregions are clipped to the VMA
 * (uvm_hmm_get_prefetch_region); the clipped size is the denominator.
 *
 * Differences: thrashing pages are not excluded (the thrash policy pins them instead), and the
 * "first touch to the preferred location prefetches the whole block" rule does not apply (no
 * preferred locations here).
 *
 * @see NVIDIA uvm_perf_prefetch.c (uvm_perf_prefetch_get_hint_va_block, grow_fault_granularity,
 *      compute_prefetch_region), UVMSmart gpu-sim.cc traverse_and_fill_lp_tree; reference §1.4, §2.2
 */
import { einval } from "@hmmkit/core";
import { type MigrationPolicy, POLICY_MIGRATE, UVM_DEFAULTS } from "../policy";

/** Options of {@link treePrefetchPolicy}. */
export interface TreePrefetchOptions {
  /** Density threshold in percent (1..100). Default 51 (`uvm_perf_prefetch_threshold`). */
  readonly threshold?: number;
  /** Big-page growth in bytes (4096..2 MiB, a power of two). Default 64 KiB (`UVM_BIG_PAGE_SIZE`). */
  readonly bigPageSize?: number;
}

/**
 * Build a tree-prefetch policy (first-touch decisions plus the prefetch hook).
 * @param opts - see {@link TreePrefetchOptions}.
 * @returns a policy named `"tree-prefetch"`.
 * @throws HmmError EINVAL naming a bad option.
 * Context: pure; the hook keeps only scratch arrays.
 * @see uvm_perf_prefetch_get_hint_va_block
 * @example
 * ```ts
 * NouveauModule.probe(m, platform, { policy: () => treePrefetchPolicy({ threshold: 51 }) });
 * ```
 */
export function treePrefetchPolicy(opts: TreePrefetchOptions = {}): MigrationPolicy {
  const threshold = opts.threshold ?? UVM_DEFAULTS.prefetchThreshold;
  const big = opts.bigPageSize ?? UVM_DEFAULTS.bigPageSize;
  if (!Number.isInteger(threshold) || threshold < 1 || threshold > 100)
    einval("opts.threshold", `an integer percent in 1..100, got ${threshold}`);
  if (!Number.isInteger(big) || big < 4096 || big > UVM_DEFAULTS.vaBlockSize || (big & (big - 1)) !== 0) {
    einval("opts.bigPageSize", `a power of two in 4096..2097152, got ${big}`);
  }
  const bigPages = big / 4096;
  const bits = new Uint8Array(512);
  const prefix = new Int32Array(513);
  return {
    name: "tree-prefetch",
    onFaultBatch(_ctx, b) {
      b.decision.fill(POLICY_MIGRATE, 0, b.count);
    },
    prefetch(_ctx, r) {
      const { first, end, resident, faulted, prefetch } = r;
      for (let i = 0; i < 512; i++) bits[i] = resident[i] === 1 || faulted[i] === 1 ? 1 : 0;
      // grow_fault_granularity: faulted big pages fill up (clipped to the VMA).
      for (let i = first; i < end; i++) {
        if (faulted[i] !== 1) continue;
        const s = Math.max(first, i - (i % bigPages));
        const e = Math.min(end, s - (s % bigPages) + bigPages);
        for (let k = s; k < e; k++) {
          bits[k] = 1;
          if (resident[k] !== 1 && faulted[k] !== 1) prefetch[k] = 1;
        }
        i = e - 1;
      }
      prefix[0] = 0;
      for (let i = 0; i < 512; i++) prefix[i + 1] = (prefix[i] as number) + (i >= first && i < end ? (bits[i] as number) : 0);
      for (let i = first; i < end; i++) {
        if (faulted[i] !== 1) continue;
        let bestS = -1;
        let bestE = -1;
        for (let size = 1; size <= 512; size *= 2) {
          const s = Math.max(first, i - (i % size));
          const e = Math.min(end, i - (i % size) + size);
          const count = (prefix[e] as number) - (prefix[s] as number);
          if (count * 100 > (e - s) * threshold) {
            bestS = s;
            bestE = e;
          }
        }
        for (let k = bestS; k >= 0 && k < bestE; k++) if (resident[k] !== 1 && faulted[k] !== 1) prefetch[k] = 1;
      }
    },
  };
}
