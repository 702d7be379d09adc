/**
 * Benchmark harness helpers shared by every bench module (`packages/<pkg>/bench/*.bench.ts`,
 * `bench/*.bench.ts`).
 *
 * A bench module exports `run(): Promise<BenchResult[]>`. `bench/run.ts` discovers and runs it and
 * merges its results into `bench/results.json`. Measurements that need a pristine process (RSS,
 * heap) run a child script through {@link runFresh}; the child reports with {@link emitResults}.
 *
 * Wall time is fine here: benchmarks measure the emulator, not the simulation.
 */
import { spawn } from "node:child_process";
import path from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";

/** One measurement produced by a bench module. */
export interface BenchResult {
  /** Stable dotted id, e.g. `core.fault.first_touch_per_s` (`[a-z0-9_.]+`). */
  id: string;
  /** The measured value (finite). */
  value: number;
  /** Unit as shown in tables, e.g. `faults/s`, `bytes`, `MiB`, `ratio`. */
  unit: string;
  /** Optional human-readable target; `bench/targets.json` takes precedence when it has the id. */
  target?: string;
}

/** The contract of a bench module. */
export interface BenchModule {
  run(): Promise<BenchResult[]>;
}

/** Repository root (the directory holding `bench/`). */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

const RESULT_MARKER = "@@hmmkit-bench-results@@";

/** Seconds elapsed since `start` (a `process.hrtime.bigint()` reading). */
export function secondsSince(start: bigint): number {
  return Number(process.hrtime.bigint() - start) / 1e9;
}

/** Options of {@link timeBest}. */
export interface TimeOptions {
  /** Untimed warm-up runs (JIT). Default 1. */
  warmup?: number;
  /** Timed runs; the fastest is returned. Default 5. */
  runs?: number;
}

/**
 * Run `fn` `warmup` times untimed, then `runs` times timed; return the fastest run in seconds.
 * `setup` (untimed) runs before every call and its result is passed to `fn`.
 */
export async function timeBest<S>(fn: (s: S) => unknown, setup: () => S | Promise<S>, opts: TimeOptions = {}): Promise<number> {
  const warmup = opts.warmup ?? 1;
  const runs = opts.runs ?? 5;
  let best = Number.POSITIVE_INFINITY;
  for (let i = 0; i < warmup + runs; i++) {
    const s = await setup();
    const t0 = process.hrtime.bigint();
    await fn(s);
    const dt = secondsSince(t0);
    if (i >= warmup && dt < best) best = dt;
  }
  return best;
}

/**
 * Time of a plain copy of `bytes` bytes between two preallocated, already-touched buffers
 * (`Uint8Array.prototype.set`), best of `runs`, in seconds. The denominator of the
 * `*.ratio_to_memcpy` benchmarks.
 */
export function memcpySeconds(bytes: number, runs = 7): number {
  const src = new Uint8Array(bytes);
  const dst = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i += 4096) src[i] = i & 0xff;
  dst.set(src); // touch the destination's pages before timing
  let best = Number.POSITIVE_INFINITY;
  for (let r = 0; r < runs; r++) {
    src[r] = r;
    const t0 = process.hrtime.bigint();
    dst.set(src);
    const dt = secondsSince(t0);
    if (dt < best) best = dt;
  }
  if (dst[0] !== src[0]) throw new Error("memcpySeconds: copy check failed");
  return best;
}

/** Run the garbage collector if the process was started with `--expose-gc` (see {@link runFresh}). */
export function gcIfExposed(): void {
  const g = (globalThis as { gc?: () => void }).gc;
  if (g) {
    g();
    g();
  }
}

/** Resident set size of this process in MiB. */
export function rssMiB(): number {
  return process.memoryUsage.rss() / (1024 * 1024);
}

/**
 * RSS growth in MiB caused by `build()`: GC, read RSS, build, GC, read RSS. The built value stays
 * reachable until after the second reading, then is passed to `dispose`.
 */
export async function rssGrowthMiB<T>(build: () => T | Promise<T>, dispose?: (v: T) => void | Promise<void>): Promise<number> {
  gcIfExposed();
  const before = rssMiB();
  const v = await build();
  gcIfExposed();
  const after = rssMiB();
  if (dispose) await dispose(v);
  return after - before;
}

/**
 * In a child started by {@link runFresh}: print the results on stdout in the form the parent parses.
 * Call once, at the end of the child script.
 */
export function emitResults(results: BenchResult[]): void {
  process.stdout.write(`\n${RESULT_MARKER}${JSON.stringify(results)}\n`);
}

/** Options of {@link runFresh}. */
export interface FreshOptions {
  /** Extra arguments passed to the child script. */
  args?: string[];
  /** Extra node flags (before `--import tsx`). `--expose-gc` is always passed. */
  nodeFlags?: string[];
  /** Kill the child after this many milliseconds. Default 10 minutes. */
  timeoutMs?: number;
}

/**
 * Run a TypeScript file in a fresh Node process (`node --expose-gc --import tsx <file>`, cwd = repo
 * root) and return the results it printed with {@link emitResults}. Throws if the child fails,
 * times out or prints no results; the child's output is included in the error.
 *
 * @param file path of the child script, absolute or relative to the repository root; child scripts
 *   must not end in `.bench.ts` (the runner would pick them up as modules)
 */
export function runFresh(file: string, opts: FreshOptions = {}): Promise<BenchResult[]> {
  const abs = path.resolve(REPO_ROOT, file);
  const argv = ["--expose-gc", ...(opts.nodeFlags ?? []), "--import", "tsx", abs, ...(opts.args ?? [])];
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, argv, { cwd: REPO_ROOT, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => {
      out += d;
    });
    child.stderr.setEncoding("utf8").on("data", (d: string) => {
      err += d;
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 600_000);
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      const rel = path.relative(REPO_ROOT, abs);
      if (code !== 0) {
        reject(new Error(`runFresh(${rel}) exited with ${signal ?? code}\n${out}${err}`));
        return;
      }
      const line = out
        .split("\n")
        .reverse()
        .find((l) => l.startsWith(RESULT_MARKER));
      if (line === undefined) {
        reject(new Error(`runFresh(${rel}) printed no results (call emitResults)\n${out}${err}`));
        return;
      }
      resolve(JSON.parse(line.slice(RESULT_MARKER.length)) as BenchResult[]);
    });
  });
}
