/**
 * The lab runner: builds a machine from a scenario, runs its workload phase by phase under a
 * driver and policy, and returns metrics and over-time series; comparisons run one scenario under
 * several policies.
 *
 * Theory of operation. {@link runScenario}:
 * 1. `Machine.create(scenario.machine)` and `Platform.create(machine, scenario.platform)`; their
 *    validation errors are re-prefixed (`scenario.machine.ramMiB`, `scenario.platform.gpus[0].vramMiB`);
 * 2. the workload: a generator seeded with `machine.rng.fork("workload")`, or a Lackey trace;
 * 3. a task maps the workload's buffer (anonymous, private, 2 MiB-aligned); for GPU workloads the
 *    driver named by the scenario probes the GPUs with the policy and mirrors the task on the
 *    workload's GPUs;
 * 4. (unless `cpuInit` is false) the CPU writes every page of the buffer, as a program fills its
 *    managed inputs on the host; then phases run one after another: a GPU phase launches one kernel per GPU and settles the clock
 *    until every kernel's fence signals; a CPU phase replays its accesses synchronously, awaiting
 *    only faults that wait (see trace/replay.ts);
 * 5. the sampler is stopped, metrics are collected, and the driver and machine are torn down; a
 *    platform that is not quiescent after the driver's teardown (VRAM claimed, DMA mappings,
 *    copies in flight) is a BugError `lab-leak`.
 *
 * Nothing reads wall time or `Math.random`; the result ({@link RunResult}) is plain data, so the
 * same scenario and seed serialise to the same bytes (report/json.ts).
 *
 * @see DESIGN.md "Lab"; reference/uvm-policies.md §2.6 (what UVM studies measure)
 */
import { BugError, HmmError, MAP_ANONYMOUS, MAP_PRIVATE, Machine, PROT_READ, PROT_WRITE } from "@hmmkit/core";
import { type GpuVaSpace, Platform } from "@hmmkit/device-emu";
import { type LabDriverInstance, type LabDriverRegistry, resolveDriver } from "./driver-binding";
import { defaultDrivers } from "./drivers";
import {
  collectMetrics,
  type DriverCounters,
  interconnectBytes,
  MetricsSampler,
  NO_DRIVER_COUNTERS,
  type RunMetrics,
  type RunSeries,
} from "./metrics";
import { autoRamMiB, type ResolvedScenario, rethrowWithPath, withPolicy } from "./scenario";
import type { LackeyTrace } from "./trace/lackey";
import { createTraceWorkload } from "./trace/map";
import { replayCpu } from "./trace/replay";
import { createWorkload } from "./workloads/index";
import { cpuInitPhase, cpuReadbackPhase, type Phase, type Workload } from "./workloads/workload";

/** Schema tag of a run result. */
export const RUN_SCHEMA = "hmmkit-lab-run/1";
/** Schema tag of a comparison result. */
export const COMPARISON_SCHEMA = "hmmkit-lab-comparison/1";

/** Progress of a run (for a progress bar). */
export interface RunProgress {
  /** Scenario name. */
  readonly scenario: string;
  /** Policy name. */
  readonly policy: string;
  /** Phases completed. */
  readonly phasesDone: number;
  /** Phases in all, when the workload knows in advance (BFS does not: its levels depend on the graph). */
  readonly phasesTotal: number | undefined;
  /** Label of the running phase. */
  readonly phase: string;
  /** Virtual time since the run started, ns. */
  readonly simTimeNs: number;
  /** GPU faults so far. */
  readonly gpuFaults: number;
  /** True on the final call. */
  readonly done: boolean;
}

/** A parsed trace and the name it is reported under. */
export interface LoadedTrace {
  /** The parsed trace. */
  readonly trace: LackeyTrace;
  /** Its name (usually the file's base name). */
  readonly name: string;
}

/** What a run's workload was. */
export interface RunWorkload {
  /** Kind (`stream`, …, `trace`). */
  readonly kind: string;
  /** One-line description with sizes. */
  readonly description: string;
  /** Bytes mapped. */
  readonly bytes: number;
  /** Phases run (including CPU initialisation and read-back). */
  readonly phases: number;
}

/** Options of {@link runScenario}. */
export interface RunOptions {
  /** Drivers available (default {@link defaultDrivers}). */
  readonly drivers?: LabDriverRegistry;
  /** The trace of a `trace` workload (parsed by the caller, which knows where the file is). */
  readonly trace?: LoadedTrace;
  /** Progress callback: after each phase and at every sample of the series. */
  readonly onProgress?: (p: RunProgress) => void;
}

/** The outcome of one run. */
export interface RunResult {
  /** {@link RUN_SCHEMA}. */
  readonly schema: typeof RUN_SCHEMA;
  /** The resolved scenario that ran. */
  readonly scenario: ResolvedScenario;
  /** The workload actually generated. */
  readonly workload: RunWorkload;
  /** Metrics. */
  readonly metrics: RunMetrics;
  /** Over-time series. */
  readonly series: RunSeries;
}

/** The outcome of a comparison. */
export interface ComparisonResult {
  /** {@link COMPARISON_SCHEMA}. */
  readonly schema: typeof COMPARISON_SCHEMA;
  /** Scenario name. */
  readonly name: string;
  /** One run per policy, in the order asked. */
  readonly runs: readonly RunResult[];
}

/**
 * Run a scenario to completion.
 * @param scenario - a resolved scenario ({@link validateScenario}).
 * @param options - drivers, trace, progress.
 * @returns metrics and series.
 * @throws HmmError EINVAL naming `scenario.*` fields rejected by core or device-emu; ENODEV
 *   (`scenario.driver.name`) or EINVAL (`scenario.policy.name`) for an unavailable driver or policy;
 *   EINVAL when a `trace` workload has no trace; a kernel's fatal fault (EFAULT/EIO) as raised.
 * Context: async; owns its machine from creation to disposal (nothing leaks on error).
 * @see DESIGN.md "Lab"
 * @example
 * ```ts
 * const r = await runScenario(validateScenario(json));
 * console.log(r.metrics.gpuFaults, r.metrics.simTimeNs);
 * ```
 */
export async function runScenario(scenario: ResolvedScenario, options: RunOptions = {}): Promise<RunResult> {
  const w = scenario.workload;
  // A trace is imported before the machine exists: its size decides the default RAM.
  let traceWorkload: Workload | undefined;
  if (w.kind === "trace") {
    if (options.trace === undefined)
      throw new HmmError("EINVAL", `scenario.workload.trace: the trace "${w.trace}" was not loaded`, "scenario.workload.trace");
    traceWorkload = createTraceWorkload(options.trace.trace, w, options.trace.name);
  }
  const mcfg = { ...scenario.machine, ramMiB: scenario.machine.ramMiB ?? [autoRamMiB(traceWorkload?.bytes ?? 0)] };
  let machine: Machine;
  try {
    machine = Machine.create(mcfg);
  } catch (e) {
    rethrowWithPath(e, "config", "scenario.machine");
  }
  let platform: Platform | undefined;
  let driver: LabDriverInstance | undefined;
  try {
    try {
      platform = Platform.create(machine, scenario.platform);
    } catch (e) {
      rethrowWithPath(e, "platform", "scenario.platform");
    }
    const workload = traceWorkload ?? createWorkload({ spec: w, rng: machine.rng.fork("workload") });
    const task = machine.mm.spawn();
    const len = Math.ceil(workload.bytes / 2097152) * 2097152;
    const raw = task.mm.mmap(0, len + 2097152, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
    const base = Math.ceil(raw / 2097152) * 2097152;
    const spaces = new Map<number, GpuVaSpace>();
    if (w.on === "gpu") {
      const f = resolveDriver(options.drivers ?? defaultDrivers(), scenario.driver.name, scenario.policy.name);
      driver = f.create({
        machine,
        platform,
        policy: scenario.policy.name,
        params: scenario.policy.params,
        options: scenario.driver.options,
      });
      const vs = await machine.settle(Promise.resolve(driver.attach(task, w.gpus)));
      w.gpus.forEach((g, i) => {
        spaces.set(g, vs[i] as GpuVaSpace);
      });
    }
    const counters = (): DriverCounters => driver?.counters() ?? NO_DRIVER_COUNTERS;
    const p = platform;
    const t0 = machine.clock.now;
    const phasesTotal = workload.phaseCount === undefined ? undefined : workload.phaseCount + (w.cpuInit ? 1 : 0) + (w.cpuReadback ? 1 : 0);
    let phasesDone = 0;
    let phaseLabel = "";
    const gpuFaults = (): number => p.gpus.reduce((a, g) => a + g.faults.faultsPosted, 0);
    const progress = (done: boolean) =>
      options.onProgress?.({
        scenario: scenario.name,
        policy: scenario.policy.name,
        phasesDone,
        phasesTotal,
        phase: phaseLabel,
        simTimeNs: machine.clock.now - t0,
        gpuFaults: gpuFaults(),
        done,
      });
    const sampler = new MetricsSampler(
      machine,
      () => {
        const c = counters();
        if (options.onProgress !== undefined) progress(false);
        return [
          gpuFaults(),
          p.gpus.reduce((a, g) => a + g.faults.batches, 0),
          interconnectBytes(p),
          c.pagesToGpu + c.pagesToCpu + c.pagesGpuToGpu,
          machine.vmstat.c.pgfault,
        ];
      },
      scenario.report.buckets,
    );
    sampler.start();
    let cpuAccesses = 0;
    const runPhase = async (ph: Phase): Promise<void> => {
      phaseLabel = ph.label;
      sampler.resume();
      if (ph.cpu !== undefined) {
        const st = await machine.settle(replayCpu(machine.mm, task, ph.cpu));
        cpuAccesses += st.accesses;
      }
      if (ph.launches.length > 0) {
        const handles = ph.launches.map((l) => p.gpu(l.gpu).compute.launch(spaces.get(l.gpu) as GpuVaSpace, l.streams));
        const errors = await machine.settle(Promise.all(handles.map((h) => h.fence.wait())));
        const err = errors.find((e) => e !== undefined);
        if (err !== undefined) throw err;
      }
      phasesDone++;
      progress(false);
    };
    if (w.cpuInit) await runPhase(cpuInitPhase(base, workload.bytes));
    for (const ph of workload.phases(base)) await runPhase(ph);
    if (w.cpuReadback) await runPhase(cpuReadbackPhase(base, workload.bytes));
    const simTimeNs = machine.clock.now - t0;
    const series = sampler.stop();
    progress(true);
    const metrics = collectMetrics(machine, platform, counters(), simTimeNs, cpuAccesses);
    if (driver !== undefined) {
      const d = driver;
      driver = undefined;
      await machine.settle(Promise.resolve(d.shutdown()));
      // Leak guard: after the driver's teardown the hardware must be idle and empty.
      const left = platform.quiescent();
      if (left.length > 0) throw new BugError("lab-leak", `after ${scenario.driver.name} shut down: ${left.join("; ")}`);
    }
    return {
      schema: RUN_SCHEMA,
      scenario: scenario.machine.ramMiB === undefined ? { ...scenario, machine: mcfg } : scenario,
      workload: { kind: workload.kind, description: workload.description, bytes: workload.bytes, phases: phasesDone },
      metrics,
      series,
    };
  } finally {
    if (driver !== undefined) {
      try {
        await machine.settle(Promise.resolve(driver.shutdown()));
      } catch {
        // The run already failed; its error is the one to report.
      }
    }
    platform?.dispose();
    machine.dispose();
  }
}

/**
 * Run one scenario at several oversubscription levels under several policies (levels outer,
 * policies inner), one machine each: UVMSmart's 110/125/150 % sweeps.
 * @param scenario - the scenario (a generator workload; its working set is replaced by each level).
 * @param levels - percentages of the workload GPUs' VRAM (each 1..1000), e.g. {@link OVERSUBSCRIPTION_LEVELS}.
 * @param policies - policy names.
 * @param options - as {@link runScenario}.
 * @returns every run, labelled by policy and level in reports.
 * @throws HmmError EINVAL (`oversubscription`) for no level, a duplicate or a bad one, or a `trace`
 *   workload (a trace's size is its own); as {@link comparePolicies} otherwise.
 * @see reference/uvm-policies.md §2.5, §2.7 (slowdown at 110/125/150 %)
 */
export async function sweepOversubscription(
  scenario: ResolvedScenario,
  levels: readonly number[],
  policies: readonly string[],
  options: RunOptions = {},
): Promise<ComparisonResult> {
  if (scenario.workload.kind === "trace")
    throw new HmmError("EINVAL", "oversubscription: a generator workload (a trace's working set is its own)", "oversubscription");
  if (levels.length === 0 || new Set(levels).size !== levels.length) {
    throw new HmmError("EINVAL", `oversubscription: distinct levels in percent, got ${levels.join(",")}`, "oversubscription");
  }
  const runs: RunResult[] = [];
  for (const level of levels) {
    if (!(Number.isFinite(level) && level >= 1 && level <= 1000)) {
      throw new HmmError("EINVAL", `oversubscription: levels in 1..1000 %, got ${level}`, "oversubscription");
    }
    const w = scenario.workload;
    const vram = (w.gpus.length > 0 ? w.gpus : [0]).reduce((a, g) => a + (scenario.platform.gpus[g]?.vramMiB ?? 0) * 1048576, 0);
    const workingSetBytes = Math.max(4096, Math.round((vram * level) / 100 / 4096) * 4096);
    const ram = scenario.machine.ramMiB;
    const s: ResolvedScenario = {
      ...scenario,
      // Node 0 grows with the working set when the scenario's RAM would be too small for it.
      machine: { ...scenario.machine, ramMiB: [Math.max(autoRamMiB(workingSetBytes), ram?.[0] ?? 0), ...(ram?.slice(1) ?? [])] },
      workload: { ...w, workingSetBytes, oversubscription: level },
    };
    const c = await comparePolicies(s, policies, options);
    runs.push(...c.runs);
  }
  return { schema: COMPARISON_SCHEMA, name: `${scenario.name}-sweep`, runs };
}

/**
 * Run one scenario under several policies, one machine each, in order. The scenario's policy
 * parameters go to the policy of the same name only; the others run with their defaults.
 * @param scenario - the scenario (its own policy name only selects which run gets its parameters).
 * @param policies - policy names (each checked against the driver's built-ins).
 * @param options - as {@link runScenario}.
 * @returns one run per policy.
 * @throws as {@link runScenario}; EINVAL (`policies`) for an empty list or a duplicate.
 * Context: async, sequential (each run owns its machine).
 */
export async function comparePolicies(
  scenario: ResolvedScenario,
  policies: readonly string[],
  options: RunOptions = {},
): Promise<ComparisonResult> {
  if (policies.length === 0) throw new HmmError("EINVAL", "policies: at least one policy name", "policies");
  if (new Set(policies).size !== policies.length)
    throw new HmmError("EINVAL", `policies: each policy once, got ${policies.join(",")}`, "policies");
  const runs: RunResult[] = [];
  for (const name of policies) {
    const params = name === scenario.policy.name ? scenario.policy.params : {};
    runs.push(await runScenario(withPolicy(scenario, name, params), options));
  }
  return { schema: COMPARISON_SCHEMA, name: scenario.name, runs };
}
