/**
 * The THP-reservations fork experiment of seed 002 (the RFC's test), as a lab scenario with a
 * table and a chart.
 *
 * A parent forks children one after another; each child maps a chunk of C MiB and writes one page
 * (or 1..k random pages) in every 2 MiB region, and stays alive. The experiment counts the
 * children that fit before one fails with ENOMEM, in three modes:
 * - `thp=always`: a 2 MiB THP at the first write fault of each region (mainline);
 * - `reservations`: `promotion_threshold` T — an aligned block reserved at the first write,
 *   promoted when T base pages are mapped, released under memory pressure (the RFC, with the
 *   review's whole-address-space release);
 * - `thp=never`: base pages only.
 * The RFC saw 17 (THP) vs 118 (reservations) children on a 256 GB machine with 16 GB chunks.
 *
 * Metrics per mode, as the review asked: children; memory consumed at the end; successful
 * promotions (`thp_fault_alloc` + `res_pages_collapsed`); fault latency in simulated time from a
 * stated cost model — `faultBaseNs` per fault plus `clearPageNs` per 4 KiB page zeroed inside the
 * fault. The two costs are assumptions (parameters, printed with the results); the counts they
 * multiply are measured by the emulator.
 *
 * @see shared/seeds/002 (THP reservations RFC and review), mm/huge_memory.c, examples/thp-reservations-fork.ts
 */
import { HmmError, MAP_ANONYMOUS, MAP_PRIVATE, Machine, type MachineConfig, PMD_SIZE, PROT_READ, PROT_WRITE } from "@hmmkit/core";
import { fmtInt, fmtNs } from "../report/format";
import { type HtmlSection, htmlPage, htmlTable } from "../report/html";
import { barChartSvg } from "../report/svg";
import { renderTable, type TextTable } from "../report/table";
import { intAt, numAt, objectAt } from "../validate";

/** Parameters of the fork experiment. */
export interface ThpForkParams {
  /** System RAM in MiB (even, 8..65536). Default 256. */
  readonly ramMiB?: number;
  /** Chunk each child maps, MiB (2..65536, a multiple of 2). Default 16. */
  readonly chunkMiB?: number;
  /** Pages written per 2 MiB region: 1 = the first page; k > 1 = 1..k random pages (1..512). Default 1. */
  readonly touch?: number;
  /** `promotion_threshold` of the reservations mode (2..512). Default 256. */
  readonly threshold?: number;
  /** Assumed fixed cost of a fault, ns (0..10^9). Default 1000. */
  readonly faultBaseNs?: number;
  /** Assumed cost of zeroing one 4 KiB page, ns (0..10^9). Default 400. */
  readonly clearPageNs?: number;
  /** Seed (0..2^32-1). Default 1. */
  readonly seed?: number;
  /** Stop after this many children per mode (1..10^6). Default 100000. */
  readonly maxChildren?: number;
}

/** One mode's row. */
export interface ThpForkRow {
  /** Mode label. */
  readonly mode: string;
  /** Children that fit before ENOMEM. */
  readonly children: number;
  /** Whether the run stopped at `maxChildren` rather than at ENOMEM. */
  readonly capped: boolean;
  /** Memory consumed at the end, MiB. */
  readonly usedMiB: number;
  /** Page faults (`pgfault`). */
  readonly faults: number;
  /** Pages zeroed inside faults. */
  readonly pagesZeroedAtFault: number;
  /** Mean fault latency under the cost model, ns. */
  readonly meanFaultNs: number;
  /** Successful promotions (`thp_fault_alloc` + `res_pages_collapsed`). */
  readonly promotions: number;
  /** Reservations allocated (`thp_res_alloc`). */
  readonly reservations: number;
}

/** The experiment's result. */
export interface ThpForkResult {
  /** Schema tag. */
  readonly schema: "hmmkit-lab-thp-fork/1";
  /** Resolved parameters. */
  readonly params: Required<ThpForkParams>;
  /** One row per mode: thp=always, reservations, thp=never. */
  readonly rows: readonly ThpForkRow[];
}

/**
 * Validate the experiment's parameters.
 * @param input - parameters (e.g. the `thpFork` object of a scenario file, or CLI flags).
 * @returns resolved parameters.
 * @param root - field path prefix for errors. Default `"thpFork"` (a scenario file's `thpFork` object).
 * @throws HmmError EINVAL naming `thpFork.<field>`.
 */
export function validateThpFork(input: unknown = {}, root = "thpFork"): Required<ThpForkParams> {
  const P = root;
  const o = objectAt(input ?? {}, P, ["ramMiB", "chunkMiB", "touch", "threshold", "faultBaseNs", "clearPageNs", "seed", "maxChildren"]);
  const ramMiB = intAt(o.ramMiB, `${P}.ramMiB`, 8, 65536, 256);
  if (ramMiB % 2 !== 0) throw new HmmError("EINVAL", `${P}.ramMiB: an even number of MiB, got ${ramMiB}`, `${P}.ramMiB`);
  const chunkMiB = intAt(o.chunkMiB, `${P}.chunkMiB`, 2, 65536, 16);
  if (chunkMiB % 2 !== 0) throw new HmmError("EINVAL", `${P}.chunkMiB: a multiple of 2 MiB, got ${chunkMiB}`, `${P}.chunkMiB`);
  return {
    ramMiB,
    chunkMiB,
    touch: intAt(o.touch, `${P}.touch`, 1, 512, 1),
    threshold: intAt(o.threshold, `${P}.threshold`, 2, 512, 256),
    faultBaseNs: numAt(o.faultBaseNs, `${P}.faultBaseNs`, 0, 1e9, 1000),
    clearPageNs: numAt(o.clearPageNs, `${P}.clearPageNs`, 0, 1e9, 400),
    seed: intAt(o.seed, `${P}.seed`, 0, 0xffffffff, 1),
    maxChildren: intAt(o.maxChildren, `${P}.maxChildren`, 1, 1_000_000, 100_000),
  };
}

async function runMode(mode: string, cfg: MachineConfig, p: Required<ThpForkParams>): Promise<ThpForkRow> {
  const m = Machine.create({ ramMiB: [p.ramMiB], seed: p.seed, ...cfg });
  try {
    const rng = m.rng.fork("fork-experiment");
    const parent = m.mm.spawn();
    const regions = (p.chunkMiB * 1048576) / PMD_SIZE;
    const one = new Uint8Array([1]);
    let children = 0;
    let capped = false;
    const free0 = m.alloc.nrFreePages;
    for (;;) {
      if (children >= p.maxChildren) {
        capped = true;
        break;
      }
      const c = m.mm.fork(parent);
      try {
        const va = c.mm.mmap(0, p.chunkMiB * 1048576, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
        for (let r = 0; r < regions; r++) {
          const n = p.touch === 1 ? 1 : 1 + rng.int(p.touch);
          for (let k = 0; k < n; k++) {
            const page = p.touch === 1 ? 0 : rng.int(512);
            await m.mm.write(c, va + r * PMD_SIZE + page * 4096, one);
          }
        }
        children++;
      } catch (e) {
        if (!(e instanceof HmmError) || e.code !== "ENOMEM") throw e;
        break;
      }
    }
    const v = m.vmstat.c;
    // Pages zeroed inside faults: a THP fault clears 512, any other write fault one.
    const thpFaults = v.thp_fault_alloc;
    const pagesZeroedAtFault = thpFaults * 512 + (v.pgfault - thpFaults);
    const meanFaultNs = v.pgfault === 0 ? 0 : (v.pgfault * p.faultBaseNs + pagesZeroedAtFault * p.clearPageNs) / v.pgfault;
    return {
      mode,
      children,
      capped,
      usedMiB: Math.round(((free0 - m.alloc.nrFreePages) * 4096) / 1048576),
      faults: v.pgfault,
      pagesZeroedAtFault,
      meanFaultNs: Math.round(meanFaultNs),
      promotions: v.thp_fault_alloc + v.res_pages_collapsed,
      reservations: v.thp_res_alloc,
    };
  } finally {
    m.dispose();
  }
}

/**
 * Run the experiment in its three modes.
 * @param params - parameters (validated with {@link validateThpFork}).
 * @returns the rows.
 * @throws HmmError EINVAL for bad parameters.
 * Context: async; one machine per mode, disposed at the end.
 * @example
 * ```ts
 * const r = await runThpFork({ ramMiB: 64, chunkMiB: 8 });
 * console.log(formatThpForkTable(r));
 * ```
 */
export async function runThpFork(params: ThpForkParams = {}): Promise<ThpForkResult> {
  const p = validateThpFork(params);
  const rows = [
    await runMode("thp=always", { thp: "always" }, p),
    await runMode(`reservations (T=${p.threshold})`, { thp: "always", thpPromotionThreshold: p.threshold, thpPromotion: "khugepaged" }, p),
    await runMode("thp=never", { thp: "never" }, p),
  ];
  return { schema: "hmmkit-lab-thp-fork/1", params: p, rows };
}

/**
 * The experiment's table.
 * @param r - the result.
 * @returns the table.
 */
export function thpForkTable(r: ThpForkResult): TextTable {
  return {
    header: ["mode", "children", "memory used", "faults", "pages zeroed", "mean fault", "promotions", "reservations"],
    rows: r.rows.map((x) => [
      x.mode,
      `${fmtInt(x.children)}${x.capped ? "+" : ""}`,
      `${fmtInt(x.usedMiB)} MiB`,
      fmtInt(x.faults),
      fmtInt(x.pagesZeroedAtFault),
      fmtNs(x.meanFaultNs),
      fmtInt(x.promotions),
      fmtInt(x.reservations),
    ]),
  };
}

/**
 * The experiment as terminal text: the setting, the cost model, the table.
 * @param r - the result.
 * @returns the text.
 */
export function formatThpForkTable(r: ThpForkResult): string {
  const p = r.params;
  const touch = p.touch === 1 ? "1 page" : `1..${p.touch} random pages`;
  return [
    `THP reservations fork experiment (seed 002): machine ${p.ramMiB} MiB, chunk ${p.chunkMiB} MiB per child, ${touch} written per 2 MiB region`,
    `fault cost model (assumed): ${p.faultBaseNs} ns per fault + ${p.clearPageNs} ns per 4 KiB page zeroed; the RFC saw 17 (THP) vs 118 (reservations) children at 256 GB / 16 GB`,
    renderTable(thpForkTable(r)),
  ].join("\n");
}

/**
 * The experiment's charts: children per mode, and memory / promotions per mode.
 * @param r - the result.
 * @returns SVG texts.
 */
export function thpForkCharts(r: ThpForkResult): string[] {
  const modes = r.rows.map((x) => x.mode);
  return [
    barChartSvg({
      title: "Children forked before OOM",
      yLabel: "children",
      categories: modes,
      series: [{ name: "children", values: r.rows.map((x) => x.children) }],
    }),
    barChartSvg({
      title: "Mean fault latency (cost model)",
      yLabel: "µs",
      categories: modes,
      series: [{ name: "mean fault latency", values: r.rows.map((x) => x.meanFaultNs / 1000) }],
    }),
    barChartSvg({
      title: "Promotions and reservations",
      yLabel: "count",
      categories: modes,
      series: [
        { name: "promotions", values: r.rows.map((x) => x.promotions) },
        { name: "reservations", values: r.rows.map((x) => x.reservations) },
      ],
    }),
  ];
}

/**
 * The experiment's HTML report.
 * @param r - the result.
 * @returns self-contained HTML.
 */
export function thpForkHtml(r: ThpForkResult): string {
  const sections: HtmlSection[] = [
    {
      title: "Setting",
      html: `<pre>${formatThpForkTable(r).split("\n").slice(0, 2).join("\n").replace(/&/g, "&amp;").replace(/</g, "&lt;")}</pre>`,
    },
    { title: "Results", html: htmlTable(thpForkTable(r)) },
    { title: "Charts", html: `<div class="charts">${thpForkCharts(r).join("")}</div>` },
  ];
  return htmlPage("hmmkit lab — THP reservations fork experiment", sections, r);
}
