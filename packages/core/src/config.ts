/**
 * Machine configuration and its validation.
 * @see Documentation/admin-guide/mm/transhuge.rst (THP modes)
 */
import { einval } from "./sim/errors";

/** Transparent hugepage mode. @see /sys/kernel/mm/transparent_hugepage/enabled */
export type ThpMode = "always" | "madvise" | "never";

/** A machine's configuration; every field is validated by {@link validateMachineConfig}. */
export interface MachineConfig {
  /** Seed of the machine's PRNG (32-bit unsigned integer). Default 1. */
  seed?: number;
  /** System RAM per NUMA node in MiB; each an even number in 4..1048576. Default `[256]`. */
  ramMiB?: number[];
  /** THP mode. Default `"madvise"`. @see /sys/kernel/mm/transparent_hugepage/enabled */
  thp?: ThpMode;
  /** Map the (huge) zero page on read faults. Default true.
   *  @see /sys/kernel/mm/transparent_hugepage/use_zero_page */
  useZeroPage?: boolean;
  /**
   * THP reservations (seed 002): base pages of a reservation that must be mapped before it is
   * promoted to a huge page in place. 1 disables reservations (THP on first fault, as mainline);
   * 2..512 reserve an aligned order-9 block on the first write fault instead. Default 1.
   * @see /sys/kernel/mm/transparent_hugepage/promotion_threshold (RFC)
   */
  thpPromotionThreshold?: number;
  /** Where promotion happens: `"fault"` (synchronously, at the fault that reaches the threshold)
   *  or `"khugepaged"` (by the scanner on the clock). Default `"khugepaged"`, as the RFC. */
  thpPromotion?: "fault" | "khugepaged";
  /** khugepaged's sleep between scans, in ms of virtual time. Default 10000.
   *  @see /sys/kernel/mm/transparent_hugepage/khugepaged/scan_sleep_millisecs */
  khugepagedScanSleepMs?: number;
  /** PTEs khugepaged scans per pass. Default 4096. @see khugepaged/pages_to_scan */
  khugepagedPagesToScan?: number;
  /** Collapse a range only if at most this many of its PTEs are none/zero. Default 511 (0..511).
   *  @see /sys/kernel/mm/transparent_hugepage/khugepaged/max_ptes_none */
  khugepagedMaxPtesNone?: number;
  /** CMA area reserved at boot at the bottom of node 0, in MiB: 0 (none) or an even number smaller
   *  than node 0. Default 0. @see the `cma=` kernel parameter */
  cmaMiB?: number;
  /** Size of the emulated swap device in MiB: 0 (no swap: anonymous pages are never reclaimed)
   *  or 1..65536. Default 0. @see swapon(8), /proc/swaps */
  swapMiB?: number;
  /** HugeTLB pool pages (2 MiB each) allocated at boot: 0..1048576. Default 0. The pool may come
   *  out smaller when RAM runs short. @see the `hugepages=` kernel parameter, /proc/sys/vm/nr_hugepages */
  hugepages?: number;
}

/** A configuration with every default filled in. */
export type MachineConfigResolved = Required<MachineConfig>;

/**
 * Validate a configuration and fill in defaults.
 * @param cfg - the user's configuration.
 * @returns a resolved copy.
 * @throws HmmError EINVAL naming the first bad field (`config.ramMiB[1]`, …).
 */
export function validateMachineConfig(cfg: MachineConfig): MachineConfigResolved {
  if (cfg === null || typeof cfg !== "object") einval("config", "an object");
  const seed = cfg.seed ?? 1;
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) einval("config.seed", `an integer in 0..2^32-1, got ${seed}`);
  const ramMiB = cfg.ramMiB ?? [256];
  if (!Array.isArray(ramMiB) || ramMiB.length === 0 || ramMiB.length > 8) einval("config.ramMiB", "an array of 1..8 node sizes in MiB");
  ramMiB.forEach((m, i) => {
    if (!Number.isInteger(m) || m < 4 || m % 2 !== 0 || m > 1024 * 1024) {
      einval(`config.ramMiB[${i}]`, `an even number of MiB in 4..1048576, got ${m}`);
    }
  });
  const thp = cfg.thp ?? "madvise";
  if (thp !== "always" && thp !== "madvise" && thp !== "never") einval("config.thp", `"always", "madvise" or "never", got ${String(thp)}`);
  const useZeroPage = cfg.useZeroPage ?? true;
  if (typeof useZeroPage !== "boolean") einval("config.useZeroPage", "a boolean");
  const thpPromotionThreshold = cfg.thpPromotionThreshold ?? 1;
  if (!Number.isInteger(thpPromotionThreshold) || thpPromotionThreshold < 1 || thpPromotionThreshold > 512) {
    einval("config.thpPromotionThreshold", `an integer in 1..512, got ${thpPromotionThreshold}`);
  }
  const thpPromotion = cfg.thpPromotion ?? "khugepaged";
  if (thpPromotion !== "fault" && thpPromotion !== "khugepaged")
    einval("config.thpPromotion", `"fault" or "khugepaged", got ${String(thpPromotion)}`);
  const khugepagedScanSleepMs = cfg.khugepagedScanSleepMs ?? 10000;
  if (!Number.isInteger(khugepagedScanSleepMs) || khugepagedScanSleepMs < 1 || khugepagedScanSleepMs > 3_600_000) {
    einval("config.khugepagedScanSleepMs", `an integer in 1..3600000, got ${khugepagedScanSleepMs}`);
  }
  const khugepagedPagesToScan = cfg.khugepagedPagesToScan ?? 4096;
  if (!Number.isInteger(khugepagedPagesToScan) || khugepagedPagesToScan < 512 || khugepagedPagesToScan > 1 << 24) {
    einval("config.khugepagedPagesToScan", `an integer in 512..16777216, got ${khugepagedPagesToScan}`);
  }
  const khugepagedMaxPtesNone = cfg.khugepagedMaxPtesNone ?? 511;
  if (!Number.isInteger(khugepagedMaxPtesNone) || khugepagedMaxPtesNone < 0 || khugepagedMaxPtesNone > 511) {
    einval("config.khugepagedMaxPtesNone", `an integer in 0..511, got ${khugepagedMaxPtesNone}`);
  }
  const cmaMiB = cfg.cmaMiB ?? 0;
  if (!Number.isInteger(cmaMiB) || cmaMiB < 0 || cmaMiB % 2 !== 0 || cmaMiB >= (ramMiB[0] as number)) {
    einval("config.cmaMiB", `0 or an even number of MiB smaller than node 0 (${ramMiB[0]} MiB), got ${cmaMiB}`);
  }
  const swapMiB = cfg.swapMiB ?? 0;
  if (!Number.isInteger(swapMiB) || swapMiB < 0 || swapMiB > 65536)
    einval("config.swapMiB", `an integer number of MiB in 0..65536, got ${swapMiB}`);
  const hugepages = cfg.hugepages ?? 0;
  if (!Number.isInteger(hugepages) || hugepages < 0 || hugepages > 1048576)
    einval("config.hugepages", `an integer number of 2 MiB pages in 0..1048576, got ${hugepages}`);
  return {
    cmaMiB,
    swapMiB,
    hugepages,
    seed,
    ramMiB: [...ramMiB],
    thp,
    useZeroPage,
    thpPromotionThreshold,
    thpPromotion,
    khugepagedScanSleepMs,
    khugepagedPagesToScan,
    khugepagedMaxPtesNone,
  };
}
