/**
 * A migration policy written from scratch, as a user would: migrate pages the GPU writes, map
 * pages it only reads remotely (system memory through the IOMMU, or a peer's VRAM), and prefetch
 * the rest of a 64 KiB group once more than half of it is hot.
 *
 * Used by `examples/custom-policy.ts` and included in the "Write a migration policy" guide.
 */
// #region policy
import { FAULT_ACCESS_READ } from "@hmmkit/device-emu";
import { type MigrationPolicy, POLICY_MIGRATE, POLICY_REMOTE } from "@hmmkit/drivers";

/** Pages per prefetch group (64 KiB, UVM's big-page size). */
const GROUP = 16;

/** Read faults are mapped remotely; write faults migrate; dense 64 KiB groups migrate whole. */
export const writeMigrates: MigrationPolicy = {
  name: "write-migrates",
  onFaultBatch(_ctx, b) {
    for (let i = 0; i < b.count; i++) {
      b.decision[i] = b.accessType[i] === FAULT_ACCESS_READ ? POLICY_REMOTE : POLICY_MIGRATE;
    }
  },
  prefetch(_ctx, req) {
    for (let g = req.first - (req.first % GROUP); g < req.end; g += GROUP) {
      const lo = Math.max(g, req.first);
      const hi = Math.min(g + GROUP, req.end);
      let hot = 0;
      for (let i = lo; i < hi; i++) hot += (req.resident[i] as number) | (req.faulted[i] as number);
      if (hot * 2 <= hi - lo) continue;
      for (let i = lo; i < hi; i++) if (!req.resident[i] && !req.faulted[i]) req.prefetch[i] = 1;
    }
  },
};
// #endregion policy
