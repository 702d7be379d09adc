/**
 * Workload registry: the generator for each {@link WorkloadKind} (the trace importer is in
 * `trace/`).
 * @see reference/uvm-policies.md §2.5
 */
import { einval } from "@hmmkit/core";
import type { WorkloadKind } from "../scenario";
import { bfsWorkload } from "./bfs";
import { pingpongWorkload } from "./pingpong";
import { randomWorkload } from "./random";
import { stencilWorkload } from "./stencil";
import { streamWorkload } from "./stream";
import type { Workload, WorkloadInit } from "./workload";

/** Generators by kind (every kind but `trace`). */
export const WORKLOADS: Readonly<Record<Exclude<WorkloadKind, "trace">, (init: WorkloadInit) => Workload>> = {
  stream: streamWorkload,
  stencil: stencilWorkload,
  random: randomWorkload,
  bfs: bfsWorkload,
  pingpong: pingpongWorkload,
};

/**
 * Create the generator workload a resolved scenario names.
 * @param init - resolved settings and random stream.
 * @returns the workload.
 * @throws HmmError EINVAL (`scenario.workload.kind`) for `trace`, which needs the trace importer.
 */
export function createWorkload(init: WorkloadInit): Workload {
  const k = init.spec.kind;
  if (k === "trace") einval("scenario.workload.kind", 'a generator kind; "trace" workloads are built by createTraceWorkload');
  return WORKLOADS[k](init);
}
