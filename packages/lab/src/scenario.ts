/**
 * Scenario files: the JSON that fixes one lab run — machine, platform, driver, migration policy with
 * its parameters, workload and seed — and their validation.
 *
 * Theory of operation. {@link validateScenario} checks a parsed JSON value field by field and
 * returns a {@link ResolvedScenario} with every default filled in; the first bad or unknown field
 * throws HmmError EINVAL whose `arg` is its full path (`scenario.workload.workingSetMiB`,
 * `scenario.platform.gpus[1].vramMiB`). The platform's own fields are checked by device-emu's
 * `Platform.create` when the run starts; the runner re-prefixes those errors with `scenario.` so a
 * user sees one naming scheme. The working set is either explicit (`workingSetMiB`) or an
 * oversubscription level of the VRAM of the workload's GPUs (`oversubscription: 125` → 1.25 × the
 * VRAM they have together, so each GPU of a data-parallel split sees 125 %), the way
 * UVMSmart sets `gddr_size = WS / ratio` (reference/uvm-policies.md §2.5).
 *
 * The same resolved scenario and seed give the same run, byte for byte (DESIGN.md, Determinism).
 *
 * @see reference/uvm-policies.md §2.5 (oversubscription levels 110/125/150 %), §0 (defaults)
 */
import { einval, HmmError, type MachineConfig } from "@hmmkit/core";
import type { PlatformConfig } from "@hmmkit/device-emu";
import { boolAt, describe, intAt, isObject, type JsonObject, numAt, objectAt, oneOfAt, strAt } from "./validate";

/** The workload generators and the trace importer. */
export const WORKLOAD_KINDS = ["stream", "stencil", "random", "bfs", "pingpong", "trace"] as const;

/** A workload kind: see {@link WORKLOAD_KINDS}. */
export type WorkloadKind = (typeof WORKLOAD_KINDS)[number];

/** Oversubscription levels used by UVMSmart's evaluation, in percent of VRAM (reference §2.5). */
export const OVERSUBSCRIPTION_LEVELS = [110, 125, 150] as const;

/** The workload part of a scenario file. */
export interface WorkloadSpec {
  /** Generator: `stream`, `stencil`, `random`, `bfs`, `pingpong`, or `trace` (valgrind lackey import). */
  readonly kind: WorkloadKind;
  /** Working set in MiB (0.0625..1048576). Exclusive with `oversubscription`. Ignored by `trace`. */
  readonly workingSetMiB?: number;
  /** Working set as a percentage of the VRAM of the workload's GPUs together (1..1000), e.g. 110, 125, 150; for a one-GPU workload, of that GPU's VRAM. */
  readonly oversubscription?: number;
  /** Where the accesses run: `"gpu"` (compute-engine kernels, default) or `"cpu"` (a task's loads/stores). */
  readonly on?: "gpu" | "cpu";
  /** GPUs that run kernels (indices into platform.gpus). Default `[0]`; `pingpong` defaults to `[0, 1]`. */
  readonly gpus?: readonly number[];
  /** Iterations (passes, time steps, BFS runs, ping-pong rounds), 1..1000. Default per kind (2, 4, 1, 1, 6). */
  readonly iterations?: number;
  /** Warps per GPU (1..4096). Default 32. */
  readonly warps?: number;
  /** Bytes per coalesced access, a power of two in 4..4096. Default 256. */
  readonly accessBytes?: number;
  /** `bfs`: mean out-degree of the generated graph (1..64). Default 8. */
  readonly degree?: number;
  /** `pingpong`: fraction of the buffer both GPUs touch each round (0..1). Default 0.25. */
  readonly sharedFraction?: number;
  /** `random`: fraction of accesses that are read-modify-write updates (0..1). Default 1 (HPCC RandomAccess). */
  readonly writeFraction?: number;
  /** `trace`: path of a `valgrind --tool=lackey --trace-mem=yes` log (relative to the scenario file). */
  readonly trace?: string;
  /** `trace`: include instruction fetches (`I` lines) as reads. Default false. */
  readonly traceInstructions?: boolean;
  /** Before the GPU phases, the CPU writes every page of the buffer (host initialisation of managed memory, as the Rodinia/UVMSmart benchmarks do). Default true for GPU workloads, false on the CPU. */
  readonly cpuInit?: boolean;
  /** After the GPU phases, the CPU reads the whole working set back (CPU faults, migrate_to_ram). Default false. */
  readonly cpuReadback?: boolean;
}

/** A migration policy and its parameters, as named by the driver's policy registry. */
export interface PolicySpec {
  /** Policy name (e.g. `first-touch`); checked against the driver's built-ins when the run starts. */
  readonly name: string;
  /** Parameters (numbers, strings or booleans), checked by the policy. Default `{}`. */
  readonly params?: Readonly<Record<string, number | string | boolean>>;
}

/** The driver servicing the GPUs. */
export interface DriverSpec {
  /** Driver name. Default `"nouveau"`. */
  readonly name?: string;
  /** Driver options, passed through. Default `{}`. */
  readonly options?: Readonly<Record<string, unknown>>;
}

/** Report settings. */
export interface ReportSpec {
  /** Number of time buckets of the over-time series (10..2000). Default 120. */
  readonly buckets?: number;
}

/** A scenario file. */
export interface Scenario {
  /** Name shown in reports. Default `"scenario"`. */
  readonly name?: string;
  /** Seed of the machine's PRNG (0..2^32-1). Default 1. */
  readonly seed?: number;
  /** Machine (system RAM, THP); `seed` comes from the scenario. Default RAM: twice the working set + 128 MiB. */
  readonly machine?: Omit<MachineConfig, "seed">;
  /** Host and GPUs (device-emu's PlatformConfig). Default one GPU of 64 MiB. */
  readonly platform?: PlatformConfig;
  /** GPU driver. */
  readonly driver?: DriverSpec;
  /** Migration policy. Default `{ name: "first-touch" }`. */
  readonly policy?: PolicySpec;
  /** What runs. */
  readonly workload: WorkloadSpec;
  /** Report settings. */
  readonly report?: ReportSpec;
}

/** A workload with every default resolved. */
export interface ResolvedWorkload {
  /** Kind. */
  readonly kind: WorkloadKind;
  /** Working set in bytes (a multiple of 4 KiB; 0 for `trace`, known after import). */
  readonly workingSetBytes: number;
  /** Oversubscription in percent of the workload GPUs' VRAM, or null when the size was explicit. */
  readonly oversubscription: number | null;
  /** Where accesses run. */
  readonly on: "gpu" | "cpu";
  /** GPUs running kernels (empty when `on` is `"cpu"`). */
  readonly gpus: readonly number[];
  /** Iterations. */
  readonly iterations: number;
  /** Warps per GPU. */
  readonly warps: number;
  /** Bytes per access. */
  readonly accessBytes: number;
  /** BFS mean degree. */
  readonly degree: number;
  /** Ping-pong shared fraction. */
  readonly sharedFraction: number;
  /** Random-access update fraction. */
  readonly writeFraction: number;
  /** Trace path, or null. */
  readonly trace: string | null;
  /** Include instruction fetches of a trace. */
  readonly traceInstructions: boolean;
  /** CPU initialisation before the GPU phases. */
  readonly cpuInit: boolean;
  /** CPU read-back after the GPU phases. */
  readonly cpuReadback: boolean;
}

/** A scenario with every default resolved (what the runner consumes and what reports echo). */
export interface ResolvedScenario {
  /** Name. */
  readonly name: string;
  /** Seed. */
  readonly seed: number;
  /** Machine configuration (with `seed`; `ramMiB` is absent for a trace until it is imported). */
  readonly machine: MachineConfig;
  /** Platform configuration (validated by device-emu at run start). */
  readonly platform: PlatformConfig;
  /** Driver. */
  readonly driver: ResolvedDriver;
  /** Policy. */
  readonly policy: ResolvedPolicy;
  /** Workload. */
  readonly workload: ResolvedWorkload;
  /** Report settings. */
  readonly report: ResolvedReport;
}

/** A resolved driver choice. */
export interface ResolvedDriver {
  /** Driver name. */
  readonly name: string;
  /** Options, passed to the driver. */
  readonly options: Readonly<Record<string, unknown>>;
}

/** A resolved policy choice. */
export interface ResolvedPolicy {
  /** Policy name. */
  readonly name: string;
  /** Parameters, sorted by name. */
  readonly params: Readonly<Record<string, number | string | boolean>>;
}

/** Resolved report settings. */
export interface ResolvedReport {
  /** Buckets of the over-time series. */
  readonly buckets: number;
}

const MIB = 1024 * 1024;
const PAGE = 4096;
const DEFAULT_ITERATIONS: Record<WorkloadKind, number> = { stream: 2, stencil: 4, random: 1, bfs: 1, pingpong: 6, trace: 1 };

/**
 * Validate a parsed scenario file and fill in its defaults.
 * @param input - the parsed JSON.
 * @returns the resolved scenario.
 * @throws HmmError EINVAL naming the first bad or unknown field by its path from `scenario`
 *   (e.g. `scenario.workload.workingSetMiB`).
 * Context: synchronous, pure.
 * @example
 * ```ts
 * const s = validateScenario(JSON.parse(readFileSync("flagship.json", "utf8")));
 * ```
 */
export function validateScenario(input: unknown): ResolvedScenario {
  const s = objectAt(input, "scenario", ["$schema", "name", "seed", "machine", "platform", "driver", "policy", "workload", "report"]);
  const name = strAt(s.name, "scenario.name", "scenario");
  const seed = intAt(s.seed, "scenario.seed", 0, 0xffffffff, 1);
  const platform = resolvePlatformShape(s.platform);
  const workload = resolveWorkload(s.workload, platform);
  const machine = resolveMachine(s.machine, seed, workload);
  const driver = resolveDriver(s.driver);
  const policy = resolvePolicy(s.policy);
  const r = s.report === undefined ? {} : objectAt(s.report, "scenario.report", ["buckets"]);
  const report = { buckets: intAt(r.buckets, "scenario.report.buckets", 10, 2000, 120) };
  return { name, seed, machine, platform, driver, policy, workload, report };
}

/**
 * Parse and validate a scenario file's text.
 * @param text - JSON text.
 * @param file - file name for messages.
 * @returns the resolved scenario.
 * @throws HmmError EINVAL for malformed JSON (naming the file) or a bad field (naming its path).
 */
export function parseScenario(text: string, file = "scenario.json"): ResolvedScenario {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new HmmError("EINVAL", `${file}: not valid JSON (${(e as Error).message})`, "scenario");
  }
  return validateScenario(v);
}

/**
 * Re-throw an error from a lower layer's validator (`platform.gpus[0].vramMiB`, `config.ramMiB`)
 * with the scenario's path prefix (`scenario.platform.gpus[0].vramMiB`, `scenario.machine.ramMiB`).
 * @param e - the caught error.
 * @param from - the lower layer's root name (`platform`, `config`).
 * @param to - the scenario path that replaces it.
 * @returns never; always throws.
 * @throws HmmError the rewritten error, or `e` unchanged when it is not an HmmError.
 */
export function rethrowWithPath(e: unknown, from: string, to: string): never {
  if (!(e instanceof HmmError) || e.arg === undefined) throw e;
  const arg =
    e.arg === from || e.arg.startsWith(`${from}.`) || e.arg.startsWith(`${from}[`) ? to + e.arg.slice(from.length) : `${to}.${e.arg}`;
  const body = e.message.slice(e.code.length + 2);
  const rest = body.startsWith(`${e.arg}: `) ? body.slice(e.arg.length + 2) : body;
  throw new HmmError(e.code, `${arg}: ${rest}`, arg);
}

function resolvePlatformShape(v: unknown): PlatformConfig {
  if (v === undefined) return { gpus: [{ vramMiB: 64 }] };
  const p = objectAt(v, "scenario.platform", ["gpus", "peerLinks"]);
  if (!Array.isArray(p.gpus) || p.gpus.length === 0)
    einval("scenario.platform.gpus", `an array of 1..16 GPU configurations, got ${describe(p.gpus)}`);
  p.gpus.forEach((g: unknown, i: number) => {
    const path = `scenario.platform.gpus[${i}]`;
    if (!isObject(g)) einval(path, `a GPU configuration object, got ${describe(g)}`);
    const mib = intAt(g.vramMiB, `${path}.vramMiB`, 2, 1048576);
    if (mib % 2 !== 0) einval(`${path}.vramMiB`, `an even number of MiB, got ${mib}`);
  });
  return structuredClone(p) as unknown as PlatformConfig;
}

function resolveWorkload(v: unknown, platform: PlatformConfig): ResolvedWorkload {
  const P = "scenario.workload";
  if (v === undefined) einval(P, "a workload object (required)");
  const w = objectAt(v, P, [
    "kind",
    "workingSetMiB",
    "oversubscription",
    "on",
    "gpus",
    "iterations",
    "warps",
    "accessBytes",
    "degree",
    "sharedFraction",
    "writeFraction",
    "trace",
    "traceInstructions",
    "cpuInit",
    "cpuReadback",
  ]);
  const kind = oneOfAt(w.kind, `${P}.kind`, WORKLOAD_KINDS);
  const on = oneOfAt(w.on, `${P}.on`, ["gpu", "cpu"] as const, "gpu");
  const ngpu = platform.gpus.length;
  let gpus: number[] = [];
  if (on === "gpu") {
    const dflt = kind === "pingpong" ? [0, 1] : [0];
    const raw = w.gpus === undefined ? dflt : w.gpus;
    if (!Array.isArray(raw) || raw.length === 0 || raw.length > ngpu)
      einval(`${P}.gpus`, `an array of 1..${ngpu} GPU indices, got ${describe(raw)}`);
    gpus = raw.map((g: unknown, i: number) => intAt(g, `${P}.gpus[${i}]`, 0, ngpu - 1));
    if (new Set(gpus).size !== gpus.length) einval(`${P}.gpus`, "distinct GPU indices");
    if (kind === "pingpong" && gpus.length < 2) einval(`${P}.gpus`, `at least two GPUs for a ping-pong workload (platform has ${ngpu})`);
  } else if (w.gpus !== undefined) {
    einval(`${P}.gpus`, 'nothing when "on" is "cpu"');
  }
  if (kind === "pingpong" && on === "cpu") einval(`${P}.on`, '"gpu" for a ping-pong workload (it moves pages between GPUs)');
  let trace: string | null = null;
  let workingSetBytes = 0;
  let oversubscription: number | null = null;
  if (kind === "trace") {
    trace = strAt(w.trace, `${P}.trace`);
    if (w.workingSetMiB !== undefined) einval(`${P}.workingSetMiB`, "nothing for a trace (the trace defines its working set)");
    if (w.oversubscription !== undefined) einval(`${P}.oversubscription`, "nothing for a trace (size VRAM instead)");
  } else {
    if (w.trace !== undefined) einval(`${P}.trace`, `nothing for a ${kind} workload (only kind "trace" reads a trace)`);
    if (w.workingSetMiB !== undefined && w.oversubscription !== undefined) {
      einval(`${P}.workingSetMiB`, "either workingSetMiB or oversubscription, not both");
    }
    if (w.oversubscription !== undefined) {
      oversubscription = numAt(w.oversubscription, `${P}.oversubscription`, 1, 1000);
      const vram = (gpus.length > 0 ? gpus : [0]).reduce((a, g) => a + (platform.gpus[g] as { vramMiB: number }).vramMiB * MIB, 0);
      workingSetBytes = Math.max(PAGE, Math.round((vram * oversubscription) / 100 / PAGE) * PAGE);
    } else {
      if (w.workingSetMiB === undefined) einval(`${P}.workingSetMiB`, "a working set in MiB, or an oversubscription level (e.g. 125)");
      const mib = numAt(w.workingSetMiB, `${P}.workingSetMiB`, 1 / 16, 1048576);
      workingSetBytes = Math.max(PAGE, Math.round((mib * MIB) / PAGE) * PAGE);
    }
  }
  const accessBytes = intAt(w.accessBytes, `${P}.accessBytes`, 4, 4096, 256);
  if ((accessBytes & (accessBytes - 1)) !== 0) einval(`${P}.accessBytes`, `a power of two in 4..4096, got ${accessBytes}`);
  return {
    kind,
    workingSetBytes,
    oversubscription,
    on,
    gpus,
    iterations: intAt(w.iterations, `${P}.iterations`, 1, 1000, DEFAULT_ITERATIONS[kind]),
    warps: intAt(w.warps, `${P}.warps`, 1, 4096, 32),
    accessBytes,
    degree: intAt(w.degree, `${P}.degree`, 1, 64, 8),
    sharedFraction: numAt(w.sharedFraction, `${P}.sharedFraction`, 0, 1, 0.25),
    writeFraction: numAt(w.writeFraction, `${P}.writeFraction`, 0, 1, 1),
    trace,
    traceInstructions: boolAt(w.traceInstructions, `${P}.traceInstructions`, false),
    cpuInit: boolAt(w.cpuInit, `${P}.cpuInit`, on === "gpu" && kind !== "trace"),
    cpuReadback: boolAt(w.cpuReadback, `${P}.cpuReadback`, false),
  };
}

function resolveMachine(v: unknown, seed: number, w: ResolvedWorkload): MachineConfig {
  const P = "scenario.machine";
  const m =
    v === undefined
      ? {}
      : objectAt(v, P, [
          "ramMiB",
          "thp",
          "useZeroPage",
          "thpPromotionThreshold",
          "thpPromotion",
          "khugepagedScanSleepMs",
          "khugepagedPagesToScan",
          "khugepagedMaxPtesNone",
          "cmaMiB",
        ]);
  const out: MachineConfig = { ...(m as MachineConfig), seed };
  // A trace's working set is known once it is imported: the runner sizes RAM then.
  if (m.ramMiB === undefined && w.kind !== "trace") out.ramMiB = [autoRamMiB(w.workingSetBytes)];
  else if (m.ramMiB !== undefined) out.ramMiB = m.ramMiB as number[];
  return out;
}

/**
 * The default system RAM for a working set: twice the working set plus 128 MiB (room for the
 * pages evicted from VRAM and the kernel's own), at least 256 MiB, rounded up to an even number.
 * @param workingSetBytes - the workload's working set.
 * @returns MiB.
 */
export function autoRamMiB(workingSetBytes: number): number {
  const r = Math.max(256, 2 * Math.ceil(workingSetBytes / MIB) + 128);
  return r + (r % 2);
}

function resolveDriver(v: unknown): ResolvedScenario["driver"] {
  if (v === undefined) return { name: "nouveau", options: {} };
  const d = objectAt(v, "scenario.driver", ["name", "options"]);
  const name = strAt(d.name, "scenario.driver.name", "nouveau");
  const options = d.options === undefined ? {} : objectAt(d.options, "scenario.driver.options", Object.keys(d.options as JsonObject));
  return { name, options: structuredClone(options) };
}

function resolvePolicy(v: unknown): ResolvedScenario["policy"] {
  if (v === undefined) return { name: "first-touch", params: {} };
  const p = objectAt(v, "scenario.policy", ["name", "params"]);
  const name = strAt(p.name, "scenario.policy.name");
  const params: Record<string, number | string | boolean> = {};
  if (p.params !== undefined) {
    const raw = objectAt(p.params, "scenario.policy.params", Object.keys(isObject(p.params) ? p.params : {}));
    for (const k of Object.keys(raw).sort()) {
      const x = raw[k];
      if (typeof x === "number" ? !Number.isFinite(x) : typeof x !== "string" && typeof x !== "boolean") {
        einval(`scenario.policy.params.${k}`, `a number, string or boolean, got ${describe(x)}`);
      }
      params[k] = x as number | string | boolean;
    }
  }
  return { name, params };
}

/**
 * A copy of a resolved scenario with another policy (for comparisons).
 * @param s - the scenario.
 * @param name - policy name.
 * @param params - its parameters (default none).
 * @returns the new scenario; `s` is unchanged.
 */
export function withPolicy(
  s: ResolvedScenario,
  name: string,
  params: Readonly<Record<string, number | string | boolean>> = {},
): ResolvedScenario {
  return { ...s, policy: { name, params: { ...params } } };
}
