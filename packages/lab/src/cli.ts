/**
 * `hmmkit`: the lab's command line.
 *
 * ```
 * hmmkit run <scenario.json>                       run a scenario, print its table, write out/<name>.{json,html}
 * hmmkit compare <scenario.json> --policies a,b,c  the same scenario under several policies
 *        [--oversubscription 110,125,150]          ... and at several oversubscription levels
 * hmmkit trace <lackey.out> [--scenario s.json]    replay a valgrind lackey trace (CPU by default)
 * hmmkit thp-fork [thp-fork.json]                  the THP-reservations fork experiment (seed 002)
 * hmmkit flagship                                  the built-in policies compared on two GPUs (`pnpm start`)
 * hmmkit policies [--driver nouveau]               list drivers and their built-in policies
 * ```
 * Common options: `--out DIR` (default `out`; `--no-report` writes nothing), `--json` (print the
 * JSON result instead of the table), `--progress` (progress on stderr even when it is not a
 * terminal; on a terminal it is shown anyway), `--seed N` (override the scenario's seed).
 *
 * Theory of operation. {@link main} parses arguments strictly (an unknown option, a missing
 * value or a missing file is a usage error: exit code 2 with a one-line reason and the usage on
 * stderr); errors from the lab (a bad scenario field, an unavailable driver, a malformed trace
 * line) print `hmmkit: <message>` and exit 1. All file and terminal access goes through a
 * {@link CliIo}, so tests run the CLI in-process.
 *
 * @see valgrind --tool=lackey (trace input), reference/uvm-policies.md §4.1
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import process from "node:process";
import { fileURLToPath, pathToFileURL } from "node:url";
import { HmmError } from "@hmmkit/core";
import type { LabDriverRegistry } from "./driver-binding";
import { defaultDrivers } from "./drivers";
import { formatThpForkTable, runThpFork, thpForkHtml, validateThpFork } from "./experiments/thp-fork";
import { REPORT_GITIGNORE } from "./report/files";
import { htmlReport } from "./report/html";
import { toJson } from "./report/json";
import { formatResultTable } from "./report/table";
import {
  type ComparisonResult,
  comparePolicies,
  type RunOptions,
  type RunProgress,
  type RunResult,
  runScenario,
  sweepOversubscription,
} from "./runner";
import { parseScenario, type ResolvedScenario, validateScenario } from "./scenario";
import { parseLackey } from "./trace/lackey";
import { isObject, objectAt } from "./validate";

/** The usage text. */
export const USAGE = `usage: hmmkit <command> [options]

commands:
  run <scenario.json>                        run a scenario; print its table; write out/<name>.json and .html
  compare <scenario.json> --policies a,b,c   run the scenario once per policy and compare them
        [--oversubscription 110,125,150]     ... at each oversubscription level (% of VRAM)
  trace <lackey.out> [--scenario s.json]     replay a valgrind --tool=lackey --trace-mem=yes log
        [--on cpu|gpu] [--lenient] [--policies a,b]
  thp-fork [thp-fork.json] [--ram MiB] [--chunk MiB] [--touch N]
           [--threshold T] [--fault-base-ns N] [--clear-page-ns N]
                                             the THP-reservations fork experiment (seed 002)
  flagship                                   compare the built-in policies on two GPUs (pnpm start)
  policies [--driver NAME]                   list the drivers and their built-in policies
  help                                       this text

options:
  --out DIR      directory for reports (default "out"); --no-report writes nothing
  --json         print the JSON result instead of the table
  --progress     report progress on stderr even when it is not a terminal
  --seed N       override the scenario's seed`;

/** What the CLI touches outside itself (files, streams, the terminal). */
export interface CliIo {
  /** Write to standard output. */
  stdout(text: string): void;
  /** Write to standard error. */
  stderr(text: string): void;
  /** Whether standard error is a terminal (progress is shown on a terminal by default). */
  readonly stderrIsTTY: boolean;
  /** Working directory for relative paths. */
  readonly cwd: string;
  /** Read a file. */
  readFile(p: string): Uint8Array;
  /** Whether a file exists. */
  exists(p: string): boolean;
  /** Write a file, creating its directory. */
  writeFile(p: string, data: string): void;
  /** Wall-clock milliseconds, used only to throttle the progress display (never by the simulation). */
  nowMs(): number;
}

/** The process's real I/O. */
export function processIo(): CliIo {
  return {
    stdout: (t) => process.stdout.write(t),
    stderr: (t) => process.stderr.write(t),
    stderrIsTTY: process.stderr.isTTY === true,
    cwd: process.cwd(),
    readFile: (p) => readFileSync(p),
    exists: (p) => existsSync(p),
    writeFile: (p, d) => {
      mkdirSync(path.dirname(p), { recursive: true });
      writeFileSync(p, d);
    },
    nowMs: () => performance.now(),
  };
}

/** A command-line usage error (exit code 2). */
export class UsageError extends Error {
  /** @param message - the reason. */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** Parsed command-line arguments. */
export interface ParsedArgs {
  /** Arguments that are not options, in order. */
  positional: string[];
  /** Options by name (without `--`): their value, or true for a boolean option. */
  flags: Map<string, string | true>;
}

type Parsed = ParsedArgs;

const VALUE_FLAGS = new Set([
  "out",
  "policies",
  "scenario",
  "seed",
  "on",
  "driver",
  "ram",
  "chunk",
  "touch",
  "threshold",
  "fault-base-ns",
  "clear-page-ns",
  "max-children",
  "oversubscription",
]);
const BOOL_FLAGS = new Set(["json", "progress", "no-report", "lenient", "help"]);

/**
 * Parse arguments: positionals and `--flag value` / `--flag=value` / `--bool`.
 * @param argv - arguments after the program name.
 * @param allowed - flags the command accepts.
 * @returns positionals and flags.
 * @throws UsageError for an unknown flag or a missing value.
 */
export function parseArgs(argv: readonly string[], allowed: readonly string[]): ParsedArgs {
  const positional: string[] = [];
  const flags = new Map<string, string | true>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (!a.startsWith("--")) {
      positional.push(a);
      continue;
    }
    const eq = a.indexOf("=");
    const name = eq < 0 ? a.slice(2) : a.slice(2, eq);
    if (!allowed.includes(name)) throw new UsageError(`unknown option --${name}`);
    if (VALUE_FLAGS.has(name)) {
      const v = eq >= 0 ? a.slice(eq + 1) : argv[++i];
      if (v === undefined || v === "" || (eq < 0 && v.startsWith("--"))) throw new UsageError(`option --${name} needs a value`);
      flags.set(name, v);
    } else if (BOOL_FLAGS.has(name)) {
      if (eq >= 0) throw new UsageError(`option --${name} takes no value`);
      flags.set(name, true);
    } else {
      throw new UsageError(`unknown option --${name}`);
    }
  }
  return { positional, flags };
}

function num(p: Parsed, name: string): number | undefined {
  const v = p.flags.get(name);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (typeof v !== "string" || !Number.isFinite(n)) throw new UsageError(`option --${name} needs a number, got ${String(v)}`);
  return n;
}

function str(p: Parsed, name: string): string | undefined {
  const v = p.flags.get(name);
  return typeof v === "string" ? v : undefined;
}

const COMMON = ["out", "no-report", "json", "progress", "seed", "help"];

/** The flagship scenario: the built-in policies compared on two GPUs (see scenarios/flagship.json). */
export const FLAGSHIP_SCENARIO = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "scenarios", "flagship.json");

interface Ctx {
  io: CliIo;
  drivers: LabDriverRegistry;
}

function progressSink(ctx: Ctx, p: Parsed): ((x: RunProgress) => void) | undefined {
  const tty = ctx.io.stderrIsTTY;
  if (!tty && !p.flags.has("progress")) return undefined;
  let last = Number.NEGATIVE_INFINITY;
  const every = tty ? 100 : 1000;
  return (x) => {
    const now = ctx.io.nowMs();
    if (!x.done && now - last < every) return;
    last = now;
    const n = x.phasesDone + (x.done ? 0 : 1);
    const bar =
      x.phasesTotal === undefined
        ? `phase ${n}`
        : `[${"#".repeat(Math.round((20 * x.phasesDone) / Math.max(1, x.phasesTotal))).padEnd(20, "-")}] phase ${Math.min(n, x.phasesTotal)}/${x.phasesTotal}`;
    const text = `[${x.scenario} · ${x.policy}] ${bar}${x.phase ? ` (${x.phase})` : ""} · sim ${(x.simTimeNs / 1e6).toFixed(3)} ms · ${x.gpuFaults} GPU faults${x.done ? " · done" : ""}`;
    if (tty) ctx.io.stderr(`\r\x1b[K${text}${x.done ? "\n" : ""}`);
    else ctx.io.stderr(`${text}\n`);
  };
}

function loadScenario(ctx: Ctx, file: string, p: Parsed): { scenario: ResolvedScenario; dir: string } {
  const abs = path.resolve(ctx.io.cwd, file);
  if (!ctx.io.exists(abs)) throw new UsageError(`scenario file not found: ${file}`);
  let s = parseScenario(new TextDecoder().decode(ctx.io.readFile(abs)), file);
  const seed = num(p, "seed");
  if (seed !== undefined) s = validateScenario({ ...toInput(s), seed });
  return { scenario: s, dir: path.dirname(abs) };
}

/** A resolved scenario back in scenario-file form (for re-validation with overrides). */
function toInput(s: ResolvedScenario): Record<string, unknown> {
  const w = s.workload;
  const workload: Record<string, unknown> = {
    kind: w.kind,
    on: w.on,
    iterations: w.iterations,
    warps: w.warps,
    accessBytes: w.accessBytes,
    degree: w.degree,
    sharedFraction: w.sharedFraction,
    writeFraction: w.writeFraction,
    traceInstructions: w.traceInstructions,
    cpuInit: w.cpuInit,
    cpuReadback: w.cpuReadback,
  };
  if (w.on === "gpu") workload.gpus = [...w.gpus];
  if (w.kind === "trace") workload.trace = w.trace;
  else if (w.oversubscription !== null) workload.oversubscription = w.oversubscription;
  else workload.workingSetMiB = w.workingSetBytes / 1048576;
  const { seed: _seed, ...machine } = s.machine;
  return { name: s.name, seed: s.seed, machine, platform: s.platform, driver: s.driver, policy: s.policy, workload, report: s.report };
}

function emit(ctx: Ctx, p: Parsed, name: string, result: RunResult | ComparisonResult, table: string, html: string): void {
  const json = toJson(result);
  if (p.flags.has("json")) ctx.io.stdout(json);
  else ctx.io.stdout(`${table}\n`);
  if (p.flags.has("no-report")) return;
  const dir = path.resolve(ctx.io.cwd, str(p, "out") ?? "out");
  writeOutDir(ctx, dir);
  const base = path.join(dir, safeName(name));
  ctx.io.writeFile(`${base}.json`, json);
  ctx.io.writeFile(`${base}.html`, html);
  if (!p.flags.has("json"))
    ctx.io.stdout(
      `report: ${path.relative(ctx.io.cwd, `${base}.html`) || `${base}.html`} (JSON: ${path.relative(ctx.io.cwd, `${base}.json`)})\n`,
    );
}

function writeOutDir(ctx: Ctx, dir: string): void {
  // Reports are build outputs: keep them out of git without touching the repository's .gitignore.
  const gi = path.join(dir, ".gitignore");
  if (!ctx.io.exists(gi)) ctx.io.writeFile(gi, REPORT_GITIGNORE);
}

function safeName(s: string): string {
  return s.replace(/[^A-Za-z0-9._-]+/g, "-").replace(/^-+|-+$/g, "") || "report";
}

function policiesOf(p: Parsed): string[] | undefined {
  const v = str(p, "policies");
  if (v === undefined) return undefined;
  const list = v
    .split(",")
    .map((x) => x.trim())
    .filter((x) => x.length > 0);
  if (list.length === 0) throw new UsageError("option --policies needs a comma-separated list of policy names");
  return list;
}

/** The trace a `trace` scenario names, resolved relative to the scenario file's directory. */
function traceOf(ctx: Ctx, s: ResolvedScenario, dir: string, p: Parsed): RunOptions["trace"] {
  if (s.workload.kind !== "trace" || s.workload.trace === null) return undefined;
  const abs = path.resolve(dir, s.workload.trace);
  if (!ctx.io.exists(abs))
    throw new HmmError(
      "EINVAL",
      `scenario.workload.trace: file not found: ${s.workload.trace} (relative to ${dir})`,
      "scenario.workload.trace",
    );
  return {
    trace: parseLackey(ctx.io.readFile(abs), { lenient: p.flags.has("lenient"), source: s.workload.trace }),
    name: path.basename(abs),
  };
}

async function cmdRun(ctx: Ctx, argv: string[]): Promise<number> {
  const p = parseArgs(argv, [...COMMON, "lenient"]);
  if (p.positional.length !== 1)
    throw new UsageError(`run: expected one scenario file, got ${p.positional.length === 0 ? "none" : p.positional.join(" ")}`);
  const { scenario, dir } = loadScenario(ctx, p.positional[0] as string, p);
  const r = await runScenario(scenario, { drivers: ctx.drivers, onProgress: progressSink(ctx, p), trace: traceOf(ctx, scenario, dir, p) });
  emit(ctx, p, `${scenario.name}-${scenario.policy.name}`, r, formatResultTable(r), htmlReport(r));
  return 0;
}

async function cmdCompare(ctx: Ctx, argv: string[], fixedFile?: string): Promise<number> {
  const p = parseArgs(argv, [...COMMON, "policies", "lenient", "oversubscription"]);
  const file = fixedFile ?? p.positional[0];
  if (fixedFile === undefined && p.positional.length !== 1) throw new UsageError("compare: expected one scenario file");
  if (fixedFile !== undefined && p.positional.length !== 0) throw new UsageError(`unexpected argument ${p.positional[0]}`);
  const { scenario, dir } = loadScenario(ctx, file as string, p);
  let policies = policiesOf(p);
  if (policies === undefined) {
    const d = ctx.drivers.get(scenario.driver.name);
    if (fixedFile === undefined || d === undefined) throw new UsageError("compare: --policies a,b,c is required");
    policies = [...d.policies];
  }
  const opts = { drivers: ctx.drivers, onProgress: progressSink(ctx, p), trace: traceOf(ctx, scenario, dir, p) };
  const levels = str(p, "oversubscription");
  if (levels !== undefined) {
    const list = levels.split(",").map((x) => Number(x.trim()));
    if (list.some((x) => !Number.isFinite(x)))
      throw new UsageError(`option --oversubscription needs comma-separated percentages, got ${levels}`);
    const r = await sweepOversubscription(scenario, list, policies, opts);
    emit(ctx, p, `${scenario.name}-sweep`, r, formatResultTable(r), htmlReport(r));
    return 0;
  }
  const r = await comparePolicies(scenario, policies, opts);
  emit(ctx, p, `${scenario.name}-comparison`, r, formatResultTable(r), htmlReport(r));
  return 0;
}

async function cmdTrace(ctx: Ctx, argv: string[]): Promise<number> {
  const p = parseArgs(argv, [...COMMON, "scenario", "on", "lenient", "policies"]);
  if (p.positional.length !== 1) throw new UsageError("trace: expected one lackey log file");
  const file = p.positional[0] as string;
  const abs = path.resolve(ctx.io.cwd, file);
  if (!ctx.io.exists(abs)) throw new UsageError(`trace file not found: ${file}`);
  const on = str(p, "on");
  if (on !== undefined && on !== "cpu" && on !== "gpu") throw new UsageError(`option --on needs "cpu" or "gpu", got ${on}`);
  const sFile = str(p, "scenario");
  let input: Record<string, unknown>;
  if (sFile !== undefined) input = toInput(loadScenario(ctx, sFile, p).scenario);
  else input = { name: "trace", seed: num(p, "seed") ?? 1, workload: { kind: "trace", trace: file, on: on ?? "cpu" } };
  const w = { ...(input.workload as Record<string, unknown>) };
  const target = on ?? (sFile !== undefined ? (w.on as string) : "cpu");
  const wl: Record<string, unknown> = { kind: "trace", trace: file, on: target };
  for (const k of ["iterations", "warps", "traceInstructions", "cpuReadback"]) if (w[k] !== undefined) wl[k] = w[k];
  if (target === "gpu" && w.gpus !== undefined) wl.gpus = w.gpus;
  const name = sFile !== undefined ? `${String(input.name)}-trace` : safeName(path.basename(file));
  const scenario = validateScenario({ ...input, name, workload: wl, machine: sFile !== undefined ? input.machine : undefined });
  const trace = parseLackey(ctx.io.readFile(abs), { lenient: p.flags.has("lenient"), source: file });
  const opts = { drivers: ctx.drivers, onProgress: progressSink(ctx, p), trace: { trace, name: path.basename(file) } };
  const policies = policiesOf(p);
  const r = policies === undefined ? await runScenario(scenario, opts) : await comparePolicies(scenario, policies, opts);
  const note = `${trace.count} records parsed (${trace.comments} comment lines${trace.skipped > 0 ? `, ${trace.skipped} malformed lines skipped` : ""})`;
  emit(ctx, p, name, r, `${formatResultTable(r)}\n${note}`, htmlReport(r));
  return 0;
}

async function cmdThpFork(ctx: Ctx, argv: string[]): Promise<number> {
  const p = parseArgs(argv, [...COMMON, "ram", "chunk", "touch", "threshold", "fault-base-ns", "clear-page-ns", "max-children"]);
  if (p.positional.length > 1) throw new UsageError(`thp-fork: unexpected argument ${p.positional[1]}`);
  let params: Record<string, unknown> = {};
  const file = p.positional[0];
  if (file !== undefined) {
    // A scenario file for the experiment: { "name"?, "thpFork": { ramMiB, chunkMiB, ... } }.
    const abs = path.resolve(ctx.io.cwd, file);
    if (!ctx.io.exists(abs)) throw new UsageError(`scenario file not found: ${file}`);
    let json: unknown;
    try {
      json = JSON.parse(new TextDecoder().decode(ctx.io.readFile(abs)));
    } catch (e) {
      throw new HmmError("EINVAL", `${file}: not valid JSON (${(e as Error).message})`, "scenario");
    }
    const o = objectAt(json, "scenario", ["$schema", "name", "thpFork"]);
    params = { ...objectAt(o.thpFork ?? {}, "scenario.thpFork", Object.keys(isObject(o.thpFork) ? o.thpFork : {})) };
  }
  const map: [string, string][] = [
    ["ram", "ramMiB"],
    ["chunk", "chunkMiB"],
    ["touch", "touch"],
    ["threshold", "threshold"],
    ["fault-base-ns", "faultBaseNs"],
    ["clear-page-ns", "clearPageNs"],
    ["seed", "seed"],
    ["max-children", "maxChildren"],
  ];
  for (const [flag, key] of map) {
    const v = num(p, flag);
    if (v !== undefined) params[key] = v;
  }
  const r = await runThpFork(validateThpFork(params, file !== undefined ? "scenario.thpFork" : "thpFork"));
  const json = toJson(r);
  if (p.flags.has("json")) ctx.io.stdout(json);
  else ctx.io.stdout(`${formatThpForkTable(r)}\n`);
  if (!p.flags.has("no-report")) {
    const dir = path.resolve(ctx.io.cwd, str(p, "out") ?? "out");
    writeOutDir(ctx, dir);
    ctx.io.writeFile(path.join(dir, "thp-fork.json"), json);
    ctx.io.writeFile(path.join(dir, "thp-fork.html"), thpForkHtml(r));
    if (!p.flags.has("json")) ctx.io.stdout(`report: ${path.relative(ctx.io.cwd, path.join(dir, "thp-fork.html"))}\n`);
  }
  return 0;
}

function cmdPolicies(ctx: Ctx, argv: string[]): number {
  const p = parseArgs(argv, ["driver", "help"]);
  const only = str(p, "driver");
  const list = [...ctx.drivers.values()].filter((d) => only === undefined || d.name === only);
  if (only !== undefined && list.length === 0) throw new HmmError("ENODEV", `--driver: no driver "${only}" is available`, "driver");
  if (list.length === 0) ctx.io.stdout("no GPU driver is registered with the lab (CPU workloads and traces still run)\n");
  for (const d of list) ctx.io.stdout(`${d.name}: ${d.description}\n  policies: ${d.policies.join(", ")}\n`);
  return 0;
}

/**
 * Run the CLI.
 * @param argv - arguments after the program name.
 * @param io - I/O (default: the process's).
 * @param drivers - drivers available (default {@link defaultDrivers}).
 * @returns the exit code: 0 success, 1 a lab error (bad scenario field, unavailable driver,
 *   malformed trace line, fatal GPU fault), 2 a usage error.
 * Context: async; never calls `process.exit`.
 * @example
 * ```ts
 * process.exitCode = await main(["compare", "scenarios/flagship.json", "--policies", "first-touch,tree-prefetch"]);
 * ```
 */
export async function main(
  argv: readonly string[],
  io: CliIo = processIo(),
  drivers: LabDriverRegistry = defaultDrivers(),
): Promise<number> {
  const ctx: Ctx = { io, drivers };
  const [cmd, ...rest] = argv;
  try {
    if (rest.includes("--help")) {
      io.stdout(`${USAGE}\n`);
      return 0;
    }
    switch (cmd) {
      case "run":
        return await cmdRun(ctx, rest);
      case "compare":
        return await cmdCompare(ctx, rest);
      case "trace":
        return await cmdTrace(ctx, rest);
      case "thp-fork":
        return await cmdThpFork(ctx, rest);
      case "flagship":
        return await cmdCompare(ctx, rest, FLAGSHIP_SCENARIO);
      case "policies":
        return cmdPolicies(ctx, rest);
      case "help":
      case "--help":
      case "-h":
        io.stdout(`${USAGE}\n`);
        return 0;
      case undefined:
        throw new UsageError("missing command");
      default:
        throw new UsageError(`unknown command "${cmd}"`);
    }
  } catch (e) {
    if (e instanceof UsageError) {
      io.stderr(`hmmkit: ${e.message}\n\n${USAGE}\n`);
      return 2;
    }
    if (e instanceof HmmError) {
      io.stderr(`hmmkit: ${e.message}\n`);
      return 1;
    }
    throw e;
  }
}

const invoked = process.argv[1];
if (invoked !== undefined && import.meta.url === pathToFileURL(path.resolve(invoked)).href) {
  process.exitCode = await main(process.argv.slice(2));
}
