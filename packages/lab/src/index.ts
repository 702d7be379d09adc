/**
 * `@hmmkit/lab`: scenarios, workload generators, valgrind-lackey trace import, the runner and its
 * metrics, policy comparisons, terminal/JSON/HTML+SVG reports, the THP-reservations fork
 * experiment, and the `hmmkit` CLI.
 *
 * @packageDocumentation
 */

export {
  type CliIo,
  FLAGSHIP_SCENARIO,
  main,
  type ParsedArgs,
  parseArgs,
  processIo,
  USAGE,
  UsageError,
} from "./cli";
export {
  type LabDriverEnv,
  type LabDriverFactory,
  type LabDriverInstance,
  type LabDriverRegistry,
  resolveDriver,
} from "./driver-binding";
export { defaultDrivers } from "./drivers";
export {
  createNouveauLabDriver,
  NOUVEAU_POLICIES,
  NOUVEAU_POLICY_ALIASES,
  NOUVEAU_POLICY_PARTS,
  type NouveauPolicyPart,
  nouveauCounters,
  nouveauLabDriver,
  nouveauPolicy,
  type PolicyParams,
  type UserPolicyBuilder,
} from "./drivers/nouveau";
export {
  formatThpForkTable,
  runThpFork,
  type ThpForkParams,
  type ThpForkResult,
  type ThpForkRow,
  thpForkCharts,
  thpForkHtml,
  thpForkTable,
  validateThpFork,
} from "./experiments/thp-fork";
export {
  collectMetrics,
  type DriverCounters,
  type GpuMetrics,
  interconnectBytes,
  MetricsSampler,
  NO_DRIVER_COUNTERS,
  REPORTED_VMSTAT,
  type RunMetrics,
  type RunSeries,
  round6,
} from "./metrics";
export { REPORT_GITIGNORE, type ReportFiles, writeReport } from "./report/files";
export { fmtBytes, fmtInt, fmtNs, fmtPct } from "./report/format";
export { type HtmlSection, htmlPage, htmlReport, htmlTable, summaryCharts, sweepChart, timeCharts } from "./report/html";
export { toJson } from "./report/json";
export {
  type BarChart,
  type BarSeries,
  barChartSvg,
  compactNumber,
  escapeXml,
  type LineChart,
  type LineSeries,
  lineChartSvg,
  niceTicks,
  PALETTE,
} from "./report/svg";
export {
  CPU_RUN_COLUMNS,
  cpuRunsTable,
  formatResultTable,
  RUN_COLUMNS,
  renderTable,
  runLabel,
  runsTable,
  type TextTable,
} from "./report/table";
export {
  COMPARISON_SCHEMA,
  type ComparisonResult,
  comparePolicies,
  type LoadedTrace,
  RUN_SCHEMA,
  type RunOptions,
  type RunProgress,
  type RunResult,
  type RunWorkload,
  runScenario,
  sweepOversubscription,
} from "./runner";
export {
  autoRamMiB,
  type DriverSpec,
  OVERSUBSCRIPTION_LEVELS,
  type PolicySpec,
  parseScenario,
  type ReportSpec,
  type ResolvedDriver,
  type ResolvedPolicy,
  type ResolvedReport,
  type ResolvedScenario,
  type ResolvedWorkload,
  rethrowWithPath,
  type Scenario,
  validateScenario,
  WORKLOAD_KINDS,
  type WorkloadKind,
  type WorkloadSpec,
  withPolicy,
} from "./scenario";
export { formatLackey, LACKEY_OP, type LackeyParseOptions, type LackeyTrace, parseLackey } from "./trace/lackey";
export { createTraceWorkload, TRACE_REGION, type TraceRegions, traceRegions, traceStreams } from "./trace/map";
export { type CpuReplayStats, replayCpu } from "./trace/replay";
export { type CsrGraph, randomGraph } from "./workloads/bfs";
export { createWorkload, WORKLOADS } from "./workloads/index";
export { pingpongWorkload } from "./workloads/pingpong";
export { RANDOM_UPDATES_PER_PAGE, randomWorkload } from "./workloads/random";
export { stencilWorkload } from "./workloads/stencil";
export { streamWorkload } from "./workloads/stream";
export { concatStreams, StreamBuilder } from "./workloads/stream-builder";
export {
  buildPhase,
  cpuInitPhase,
  cpuReadbackPhase,
  type GpuLaunch,
  type Phase,
  pageAlign,
  share,
  type Workload,
  type WorkloadInit,
} from "./workloads/workload";

/** Version of @hmmkit/lab, kept equal to the `version` field of its package.json. */
export const VERSION = "0.1.0";
