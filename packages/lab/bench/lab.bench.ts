/**
 * Lab benchmarks.
 *
 * - `lab.trace_replay_accesses_per_s`: accesses of a parsed valgrind-lackey trace replayed per
 *   wall second by a CPU task (`hmmkit trace`'s path: map the touched 2 MiB regions, build the
 *   stream, run it through the MMU walk and the fault handler). Target >= 5,000,000 (issue 5).
 * - `lab.trace_parse_records_per_s`: Lackey records parsed per wall second (reported).
 *
 * The trace is synthesised in Lackey's exact format (lk_main.c printf formats) from a 2D 5-point
 * stencil over two 1 MiB float grids (3 instruction fetches, 5 loads and 1 store per cell, two
 * sweeps: about 4.7 million records), the shape of a real `valgrind --tool=lackey` log of
 * `fixtures/stencil2d.c`. Best of 3 after a warm-up.
 *
 * @see valgrind lackey/lk_main.c; reference/uvm-policies.md §4.1
 */
import process from "node:process";
import { type BenchResult, secondsSince } from "../../../bench/lib";
import { parseLackey, runScenario, validateScenario } from "../src/index";

const N = 512;
const SWEEPS = 2;

/** The synthetic trace's bytes. */
function synthesise(): Uint8Array {
  const lines: string[] = [];
  const hex = (a: number) => a.toString(16).padStart(8, "0");
  const code = 0x401000;
  const a = 0x4a0000;
  const b = a + N * N * 4;
  lines.push("==4242== Lackey, an example Valgrind tool");
  lines.push("==4242== Command: ./stencil2d");
  for (let s = 0; s < SWEEPS; s++) {
    const src = s % 2 === 0 ? a : b;
    const dst = s % 2 === 0 ? b : a;
    for (let r = 1; r < N - 1; r++) {
      for (let c = 1; c < N - 1; c++) {
        const e = (r * N + c) * 4;
        lines.push(
          `I  ${hex(code)},4\n L ${hex(src + e)},4\n L ${hex(src + e - N * 4)},4\nI  ${hex(code + 4)},5\n L ${hex(src + e + N * 4)},4\n L ${hex(src + e - 4)},4\nI  ${hex(code + 9)},4\n L ${hex(src + e + 4)},4\n S ${hex(dst + e)},4`,
        );
      }
    }
  }
  lines.push("==4242== Exit code:       0");
  return new TextEncoder().encode(`${lines.join("\n")}\n`);
}

/** Run the lab benchmarks. @returns the results. */
export async function run(): Promise<BenchResult[]> {
  const bytes = synthesise();
  let parseBest = Number.POSITIVE_INFINITY;
  let trace = parseLackey(bytes);
  for (let i = 0; i < 4; i++) {
    const t0 = process.hrtime.bigint();
    trace = parseLackey(bytes);
    const dt = secondsSince(t0);
    if (i > 0) parseBest = Math.min(parseBest, dt);
  }
  const scenario = validateScenario({
    name: "bench-trace",
    seed: 1,
    workload: { kind: "trace", trace: "synthetic", on: "cpu", traceInstructions: true },
  });
  let replayBest = Number.POSITIVE_INFINITY;
  let accesses = 0;
  for (let i = 0; i < 4; i++) {
    const t0 = process.hrtime.bigint();
    const r = await runScenario(scenario, { trace: { trace, name: "synthetic" } });
    const dt = secondsSince(t0);
    accesses = r.metrics.accesses;
    if (r.metrics.accesses < trace.count) throw new Error(`replayed ${r.metrics.accesses} of ${trace.count} records`);
    if (i > 0) replayBest = Math.min(replayBest, dt);
  }
  return [
    { id: "lab.trace_replay_accesses_per_s", value: accesses / replayBest, unit: "accesses/s" },
    { id: "lab.trace_parse_records_per_s", value: trace.count / parseBest, unit: "records/s" },
  ];
}
