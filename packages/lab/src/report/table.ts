/**
 * Terminal tables: one row per run (policy) with the headline metrics, aligned in monospace
 * columns, numbers right-aligned.
 *
 * @see UVMSmart's per-run metric lines (reference/uvm-policies.md §2.6), which these columns follow
 */
import type { ComparisonResult, RunResult } from "../runner";
import { fmtBytes, fmtInt, fmtNs, fmtPct } from "./format";

/** A table: header and rows of cells. */
export interface TextTable {
  /** Column titles. */
  readonly header: readonly string[];
  /** Rows (same length as the header). */
  readonly rows: readonly (readonly string[])[];
  /** Which columns are right-aligned (numbers). Default: all but the first. */
  readonly right?: readonly boolean[];
}

/**
 * Render a table as text with a rule under the header.
 * @param t - the table.
 * @returns lines joined with `\n` (no trailing newline).
 */
export function renderTable(t: TextTable): string {
  const all = [t.header, ...t.rows];
  const widths = t.header.map((_, c) => Math.max(...all.map((r) => [...(r[c] ?? "")].length)));
  const right = t.right ?? t.header.map((_, c) => c > 0);
  const line = (r: readonly string[]) =>
    r
      .map((cell, c) => {
        const pad = (widths[c] as number) - [...cell].length;
        return right[c] ? " ".repeat(pad) + cell : cell + " ".repeat(pad);
      })
      .join("  ")
      .trimEnd();
  return [line(t.header), widths.map((w) => "─".repeat(w)).join("  "), ...t.rows.map(line)].join("\n");
}

/**
 * A run's label in tables and chart legends: its policy, plus its oversubscription level when the
 * runs compared differ in it (an oversubscription sweep).
 * @param r - the run.
 * @param runs - all runs shown together.
 * @returns e.g. `"tree-prefetch"` or `"tree-prefetch @ 125 %"`.
 */
export function runLabel(r: RunResult, runs: readonly RunResult[]): string {
  const levels = new Set(runs.map((x) => x.scenario.workload.oversubscription));
  const o = r.scenario.workload.oversubscription;
  return levels.size > 1 && o !== null ? `${r.scenario.policy.name} @ ${o} %` : r.scenario.policy.name;
}

/** Column titles of {@link runsTable}. */
export const RUN_COLUMNS = [
  "policy",
  "sim time",
  "GPU faults",
  "batches",
  "→GPU pages",
  "→CPU pages",
  "GPU↔GPU",
  "evicted",
  "thrashing",
  "remote acc.",
  "host link",
  "peer links",
  "CE util",
] as const;

/**
 * The comparison table of runs: one row per run.
 * @param runs - the runs (e.g. one per policy).
 * @returns the table.
 */
export function runsTable(runs: readonly RunResult[]): TextTable {
  const rows = runs.map((r) => {
    const m = r.metrics;
    let host = 0;
    let peer = 0;
    for (const [k, v] of Object.entries(m.linkBytes)) {
      if (k.includes("->")) peer += v;
      else host += v;
    }
    return [
      runLabel(r, runs),
      fmtNs(m.simTimeNs),
      fmtInt(m.gpuFaults),
      fmtInt(m.faultBatches),
      fmtInt(m.pagesToGpu),
      fmtInt(m.pagesToCpu),
      fmtInt(m.pagesGpuToGpu),
      fmtInt(m.evictions),
      fmtInt(m.thrashingEvents),
      fmtInt(m.remoteAccesses),
      fmtBytes(host),
      fmtBytes(peer),
      fmtPct(m.copyEngineUtilisation),
    ];
  });
  return { header: [...RUN_COLUMNS], rows };
}

/** Column titles of {@link cpuRunsTable}. */
export const CPU_RUN_COLUMNS = ["run", "sim time", "accesses", "CPU faults", "THP faults", "pages migrated", "→CPU pages"] as const;

/**
 * The table of runs whose workload ran on the CPU (no GPU columns).
 * @param runs - the runs.
 * @returns the table.
 */
export function cpuRunsTable(runs: readonly RunResult[]): TextTable {
  return {
    header: [...CPU_RUN_COLUMNS],
    rows: runs.map((r) => [
      r.scenario.name,
      fmtNs(r.metrics.simTimeNs),
      fmtInt(r.metrics.accesses),
      fmtInt(r.metrics.cpuFaults),
      fmtInt(r.metrics.vmstat.thp_fault_alloc ?? 0),
      fmtInt(r.metrics.vmstat.pgmigrate_success ?? 0),
      fmtInt(r.metrics.pagesToCpu),
    ]),
  };
}

/**
 * A run's or comparison's table as text, with a title line naming the scenario and workload.
 * @param result - a run or a comparison.
 * @returns the text.
 */
export function formatResultTable(result: RunResult | ComparisonResult): string {
  const runs = "runs" in result ? result.runs : [result];
  const first = runs[0];
  const sizes = new Set(runs.map((r) => r.workload.description));
  const what =
    first === undefined
      ? ""
      : sizes.size > 1
        ? `${first.workload.kind} at ${sizes.size} sizes (oversubscription sweep)`
        : first.workload.description;
  const head = first === undefined ? "" : `${first.scenario.name}: ${what}${first.scenario.workload.on === "cpu" ? " (on the CPU)" : ""}\n`;
  const cpu = runs.length > 0 && runs.every((r) => r.scenario.workload.on === "cpu");
  return head + renderTable(cpu ? cpuRunsTable(runs) : runsTable(runs));
}
