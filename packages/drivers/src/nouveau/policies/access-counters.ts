/**
 * Access-counter migration: map remotely on fault, migrate only what the GPU's access counters
 * show to be used often.
 *
 * A GPU fault on a page in system memory (or nowhere yet, or on another GPU) maps it remotely
 * instead of migrating it (UVM's `accessed_by` behaviour, rule 7). The GPU's access counters
 * then count its remote accesses per 2 MiB region; when a region reaches the hardware threshold
 * (256 by default, `uvm_perf_access_counter_threshold`) a notification arrives and the policy
 * migrates the pages of the notified 64 KiB sub-regions to the GPU (expand_notification_block).
 * Pages used sparsely never reach the threshold and stay in system memory: no migration traffic
 * for them. Pages already resident on this GPU but unmapped are mapped in place.
 *
 * UVM enables this migration by default only on ATS systems (`uvm_perf_access_counter_migration_enable`
 * = -1); this policy turns it on, as `=1` does.
 *
 * @see NVIDIA uvm_gpu_access_counters.c (service_va_block_locked, expand_notification_block),
 *      UVMSmart delayed migration (`-enable_dma`); reference/uvm-policies.md §1.6, §2.2
 */
import { einval } from "@hmmkit/core";
import { type MigrationPolicy, POLICY_MIGRATE, POLICY_REMOTE } from "../policy";

/** Options of {@link accessCounterPolicy}. */
export interface AccessCounterPolicyOptions {
  /**
   * Minimum counter value a notification must carry to migrate (1..65535). Default 1: the
   * hardware threshold (device-emu's `accessCounters.threshold`, UVM's 256) already applies.
   */
  readonly minCount?: number;
}

/**
 * Build an access-counter migration policy.
 * @param opts - see {@link AccessCounterPolicyOptions}.
 * @returns a policy named `"access-counters"`.
 * @throws HmmError EINVAL for a bad option.
 * Context: pure; stateless.
 * @see uvm_perf_access_counter_migration_enable
 * @example
 * ```ts
 * NouveauModule.probe(m, platform, { policy: () => accessCounterPolicy() });
 * ```
 */
export function accessCounterPolicy(opts: AccessCounterPolicyOptions = {}): MigrationPolicy {
  const min = opts.minCount ?? 1;
  if (!Number.isInteger(min) || min < 1 || min > 65535) einval("opts.minCount", `an integer in 1..65535, got ${min}`);
  return {
    name: "access-counters",
    onFaultBatch(ctx, b) {
      for (let i = 0; i < b.count; i++) b.decision[i] = b.residency[i] === ctx.gpu ? POLICY_MIGRATE : POLICY_REMOTE;
    },
    onAccessCounters(_ctx, b) {
      for (let i = 0; i < b.count; i++) b.migrate[i] = (b.counterValue[i] as number) >= min ? 1 : 0;
    },
  };
}
