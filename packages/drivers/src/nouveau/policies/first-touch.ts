/**
 * First-touch migration: every GPU fault migrates its page to the faulting GPU's VRAM.
 *
 * This is UVM's default residency choice for a page with no policy set ("migrate to the faulting
 * processor", rule 11 of block_select_processor_residency; rule 6 for a page resident nowhere),
 * without the prefetcher. Pages move one 4 KiB page per fault: the baseline the prefetchers are
 * measured against (512 faults for a sequential scan of a 2 MiB block, reference §1.4).
 *
 * @see NVIDIA uvm_va_block.c block_select_processor_residency; reference/uvm-policies.md §1.3
 */
import { type MigrationPolicy, POLICY_MIGRATE } from "../policy";

/**
 * Build a first-touch policy.
 * @returns a policy named `"first-touch"` that decides {@link POLICY_MIGRATE} for every fault.
 * Context: pure; stateless.
 * @see block_select_processor_residency (UVM_ID_CPU → faulting processor)
 * @example
 * ```ts
 * NouveauModule.probe(m, platform, { policy: () => firstTouchPolicy() });
 * ```
 */
export function firstTouchPolicy(): MigrationPolicy {
  return {
    name: "first-touch",
    onFaultBatch(_ctx, b) {
      b.decision.fill(POLICY_MIGRATE, 0, b.count);
    },
  };
}
