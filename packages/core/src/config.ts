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
  return { seed, ramMiB: [...ramMiB], thp, useZeroPage };
}
