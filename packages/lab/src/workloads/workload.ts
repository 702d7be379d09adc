/**
 * The workload contract: a generator of phases over one buffer of virtual memory, each phase a set
 * of GPU kernels launched together (one {@link AccessStream} per warp) or a run of CPU accesses.
 *
 * Theory of operation. The runner maps `bytes` of anonymous memory in a task, then pulls phases
 * one at a time from {@link Workload.phases} (streams are generated lazily, so a long run holds one
 * phase in memory) and runs each to completion before the next. Work is split over *agents*: the
 * workload's GPUs × warps, in that order, each agent owning a contiguous share of the iteration
 * space, like a CUDA grid's blocks. When the workload runs on the CPU, the agents' streams are
 * concatenated into one task's program order. All randomness comes from a stream forked from the
 * machine's {@link Rng}; the same seed gives the same phases.
 *
 * @see reference/uvm-policies.md §2.5 (the Rodinia/Polybench/HPCC workloads UVM studies use)
 */
import type { Rng } from "@hmmkit/core";
import type { AccessStream } from "@hmmkit/device-emu";
import type { ResolvedWorkload } from "../scenario";
import { concatStreams, StreamBuilder } from "./stream-builder";

/** Kernels launched on one GPU in a phase. */
export interface GpuLaunch {
  /** GPU index. */
  readonly gpu: number;
  /** One stream per warp. */
  readonly streams: readonly AccessStream[];
}

/** One phase: GPU kernels launched together, or CPU accesses by the workload's task. */
export interface Phase {
  /** Label for progress and reports, e.g. `"triad pass 1"`. */
  readonly label: string;
  /** Kernels (empty for a CPU phase). */
  readonly launches: readonly GpuLaunch[];
  /** CPU accesses in program order, or undefined for a GPU phase. */
  readonly cpu?: AccessStream;
}

/** A workload bound to its parameters. */
export interface Workload {
  /** Kind (`stream`, `stencil`, …). */
  readonly kind: string;
  /** One-line description with sizes, for reports. */
  readonly description: string;
  /** Bytes of virtual memory to map (a multiple of 4 KiB). */
  readonly bytes: number;
  /** Number of phases {@link Workload.phases} yields, when known in advance (for progress bars). */
  readonly phaseCount?: number;
  /**
   * The phases, generated lazily.
   * @param base - virtual address of the mapped buffer (4 KiB-aligned).
   * @returns an iterator of phases.
   */
  phases(base: number): Iterable<Phase>;
}

/** What a generator receives: the resolved workload and its random stream. */
export interface WorkloadInit {
  /** The resolved workload settings. */
  readonly spec: ResolvedWorkload;
  /** A stream forked from the machine's Rng (`rng.fork("workload")`). */
  readonly rng: Rng;
}

/** Round up to a multiple of 4 KiB. @param n - bytes. @returns the rounded size. */
export function pageAlign(n: number): number {
  return Math.ceil(n / 4096) * 4096;
}

/**
 * Build one phase by letting every agent (GPU × warp) fill its own stream.
 * @param spec - the resolved workload (its `on`, `gpus` and `warps` decide the agents).
 * @param label - phase label.
 * @param fill - called once per agent in order with (agent index, agent count, builder).
 * @param gpus - override of the GPUs taking part (default `spec.gpus`).
 * @returns the phase: one launch per GPU, or one CPU stream.
 */
export function buildPhase(
  spec: ResolvedWorkload,
  label: string,
  fill: (agent: number, agents: number, b: StreamBuilder) => void,
  gpus: readonly number[] = spec.gpus,
): Phase {
  const groups = spec.on === "cpu" ? 1 : gpus.length;
  const agents = groups * spec.warps;
  const launches: GpuLaunch[] = [];
  const all: AccessStream[] = [];
  for (let g = 0; g < groups; g++) {
    const streams: AccessStream[] = [];
    for (let w = 0; w < spec.warps; w++) {
      const b = new StreamBuilder(1024);
      fill(g * spec.warps + w, agents, b);
      if (b.length > 0) streams.push(b.build());
    }
    if (spec.on === "cpu") all.push(...streams);
    else if (streams.length > 0) launches.push({ gpu: gpus[g] as number, streams });
  }
  return spec.on === "cpu" ? { label, launches: [], cpu: concatStreams(all) } : { label, launches };
}

/**
 * The share `[lo, hi)` of `n` items owned by agent `a` of `agents` (contiguous blocks).
 * @param n - items. @param a - agent. @param agents - agent count.
 * @returns [lo, hi).
 */
export function share(n: number, a: number, agents: number): [number, number] {
  return [Math.floor((n * a) / agents), Math.floor((n * (a + 1)) / agents)];
}

/**
 * A phase in which the CPU reads the whole buffer back (one read per page, as `memcmp` of the
 * results would fault each page in).
 * @param base - buffer address. @param bytes - buffer size.
 * @returns the CPU phase.
 */
export function cpuReadbackPhase(base: number, bytes: number): Phase {
  const b = new StreamBuilder(bytes / 4096);
  for (let off = 0; off < bytes; off += 4096) b.read(base + off, 64);
  return { label: "cpu read-back", launches: [], cpu: b.build() };
}

/**
 * A phase in which the CPU writes every page of the buffer once (host initialisation of managed
 * memory before the first kernel, as `cudaMallocManaged` programs fill their inputs on the host).
 * @param base - buffer address. @param bytes - buffer size.
 * @returns the CPU phase.
 */
export function cpuInitPhase(base: number, bytes: number): Phase {
  const b = new StreamBuilder(bytes / 4096);
  for (let off = 0; off < bytes; off += 4096) b.write(base + off, 64);
  return { label: "cpu init", launches: [], cpu: b.build() };
}
