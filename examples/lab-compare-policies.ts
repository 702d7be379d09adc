/**
 * Compare migration policies on one GPU at 125 % oversubscription, including a policy written from
 * scratch in one file (examples/policy/write-migrates.ts) registered with the lab next to the
 * nouveau-like driver's built-ins.
 *
 * The workload is the STREAM triad over a working set of 1.25 × VRAM (UVMSmart's oversubscription
 * method, reference/uvm-policies.md §2.5). Expect first-touch to fault once per 4 KiB page, the
 * 51 % tree prefetch to cut faults by more than an order of magnitude, and the user policy (migrate
 * written pages, map read-only ones remotely) to trade migrations for remote accesses.
 *
 * Run: `npx tsx examples/lab-compare-policies.ts` (writes out/lab-compare-policies.html).
 */
import { comparePolicies, createNouveauLabDriver, formatResultTable, validateScenario, writeReport } from "@hmmkit/lab";
// A policy written from scratch in one file, as a user would (see examples/custom-policy.ts).
import { writeMigrates } from "./policy/write-migrates";

const scenario = validateScenario({
  name: "lab-compare-policies",
  seed: 1,
  platform: { gpus: [{ vramMiB: 16, hostLink: { preset: "pcie3" } }] },
  workload: { kind: "stream", oversubscription: 125, warps: 16, iterations: 2 },
});
const drivers = new Map([["nouveau", createNouveauLabDriver({ "write-migrates": () => writeMigrates })]]);
const result = await comparePolicies(scenario, ["first-touch", "tree-prefetch", "uvm", "write-migrates"], { drivers });
console.log(formatResultTable(result));

const [firstTouch, prefetch] = result.runs;
if (firstTouch === undefined || prefetch === undefined || prefetch.metrics.gpuFaults * 10 > firstTouch.metrics.gpuFaults) {
  console.error("expected the tree prefetch to cut GPU faults at least tenfold");
  process.exit(1);
}
const files = writeReport("out", "lab-compare-policies", result);
console.log(`report: ${files.html}`);
