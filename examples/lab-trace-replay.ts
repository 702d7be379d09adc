/**
 * Replay a real valgrind Lackey trace (packages/lab/fixtures/stencil2d.lackey, recorded from
 * packages/lab/fixtures/stencil2d.c) on the CPU, then on two GPUs under two policies.
 *
 * Run: `npx tsx examples/lab-trace-replay.ts` (or `hmmkit trace packages/lab/fixtures/stencil2d.lackey`).
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { comparePolicies, formatResultTable, parseLackey, runScenario, validateScenario } from "@hmmkit/lab";

const file = path.join(path.dirname(fileURLToPath(import.meta.url)), "../packages/lab/fixtures/stencil2d.lackey");
const trace = parseLackey(readFileSync(file), { source: "stencil2d.lackey" });
console.log(`${trace.count} records: I ${trace.counts[0]}, L ${trace.counts[1]}, S ${trace.counts[2]}, M ${trace.counts[3]}`);

const onCpu = await runScenario(
  validateScenario({ name: "stencil2d-cpu", workload: { kind: "trace", trace: "stencil2d.lackey", on: "cpu" } }),
  {
    trace: { trace, name: "stencil2d.lackey" },
  },
);
console.log(`CPU replay: ${onCpu.metrics.accesses} accesses, ${onCpu.metrics.cpuFaults} CPU faults\n`);

const onGpus = validateScenario({
  name: "stencil2d-gpus",
  platform: { gpus: [{ vramMiB: 8 }, { vramMiB: 8 }], peerLinks: [{ gpus: [0, 1], preset: "nvlink3" }] },
  workload: { kind: "trace", trace: "stencil2d.lackey", gpus: [0, 1], warps: 8, iterations: 2, cpuReadback: true },
});
const r = await comparePolicies(onGpus, ["first-touch", "uvm"], { trace: { trace, name: "stencil2d.lackey" } });
console.log(formatResultTable(r));
