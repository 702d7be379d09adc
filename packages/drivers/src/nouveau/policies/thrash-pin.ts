/**
 * Thrashing mitigation by pinning, as UVM's uvm_perf_thrashing.c.
 *
 * The driver detects thrashing (a page migrated back and forth `threshold` times, 3 by default,
 * each within the 500 µs lapse) and reports it; this policy then pins the page where it lives for
 * `pinNs` (300 × lapse = 150 ms by default): while pinned, this GPU's faults on it are served by
 * a remote mapping (POLICY_PIN: system memory through the IOMMU, or the peer's VRAM), so the
 * ping-pong stops. When the pin expires the next fault may migrate again (UVM tears the remote
 * mappings down at expiry; here they stay until an invalidation, which only saves a refault).
 *
 * Difference from UVM, deliberate: no throttling phase. UVM first throttles a thrashing page
 * (`uvm_perf_thrashing_nap`, faults left unserviced) and pins after
 * `uvm_perf_thrashing_pin_threshold` (10) throttles; here the pin comes at detection.
 * Otherwise the policy migrates on first touch; compose it after a prefetch policy to get both.
 *
 * @see NVIDIA uvm_perf_thrashing.c (uvm_perf_thrashing_get_hint, thrashing_pin_page),
 *      reference/uvm-policies.md §1.5
 */
import { einval } from "@hmmkit/core";
import { type MigrationPolicy, POLICY_MIGRATE, POLICY_PIN, UVM_DEFAULTS } from "../policy";

/** A thrash-pinning policy, with a query of its live pins. */
export interface ThrashPinPolicy extends MigrationPolicy {
  /**
   * Pages pinned (mapped in place) at `now`.
   * @param now - virtual time in ns. @returns the number of live pins.
   */
  pinnedPages(now: number): number;
}

/** Options of {@link thrashPinPolicy}. */
export interface ThrashPinOptions {
  /** Pin duration, ns (1..10^12). Default 150 ms (`uvm_perf_thrashing_pin` × lapse). */
  readonly pinNs?: number;
  /** Also decide POLICY_MIGRATE for unpinned faults (default true; false leaves earlier decisions). */
  readonly migrateUnpinned?: boolean;
}

/**
 * Build a thrash-pinning policy.
 * @param opts - see {@link ThrashPinOptions}.
 * @returns a policy named `"thrash-pin"`; `pinnedPages()` reports the live pins.
 * @throws HmmError EINVAL for a bad option.
 * Context: keeps a map of pinned pages (key: VA space id and page).
 * @see uvm_perf_thrashing_get_hint
 * @example
 * ```ts
 * const policy = (g: number) => composePolicies("prefetch+pin", [treePrefetchPolicy(), thrashPinPolicy()]);
 * ```
 */
export function thrashPinPolicy(opts: ThrashPinOptions = {}): ThrashPinPolicy {
  const pinNs = opts.pinNs ?? UVM_DEFAULTS.thrashingPinNs;
  if (!(pinNs >= 1 && pinNs <= 1e12)) einval("opts.pinNs", `a duration in ns in 1..10^12, got ${pinNs}`);
  const migrateUnpinned = opts.migrateUnpinned ?? true;
  const pins = new Map<number, number>();
  const key = (instance: number, address: number) => (address / 4096) * 4096 + (instance % 4096);
  return {
    name: "thrash-pin",
    onThrashing(ctx, ev) {
      if (ev.instance !== 0) pins.set(key(ev.instance, ev.address), ctx.now + pinNs);
    },
    onFaultBatch(ctx, b) {
      for (let i = 0; i < b.count; i++) {
        const k = key(b.instance[i] as number, b.address[i] as number);
        const until = pins.get(k);
        if (until !== undefined && until > ctx.now) b.decision[i] = POLICY_PIN;
        else {
          if (until !== undefined) pins.delete(k);
          if (migrateUnpinned) b.decision[i] = POLICY_MIGRATE;
        }
      }
    },
    pinnedPages(now: number) {
      let n = 0;
      for (const u of pins.values()) if (u > now) n++;
      return n;
    },
  };
}
