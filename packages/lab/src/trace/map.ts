/**
 * Mapping a Lackey trace onto the emulated machine: the trace's scattered address space (text at
 * 0x400000, heap, stacks near 2^47, the vsyscall page) is compacted onto one buffer, 2 MiB region
 * by 2 MiB region, preserving every offset inside a region, so page- and huge-page-level locality
 * (what migration policies see) is exactly the program's, while the mapped size is only the
 * regions it touched.
 *
 * Theory of operation. {@link traceRegions} walks the records once and collects the distinct
 * 2 MiB regions (with a one-entry cache: traces are local), sorted by original address, so region
 * k is mapped at `base + k·2 MiB`. {@link createTraceWorkload} then builds the phases: on the CPU,
 * the records in program order; on GPUs, the record sequence cut into contiguous segments, one per
 * warp (GPUs × warps agents), since a Lackey trace has no thread ids (reference §4.1: "an importer
 * must assign a processor per trace file or segment"). Records crossing a 4 KiB page are split in
 * two accesses; `M` is a read-modify-write; `I` records are dropped unless `traceInstructions`.
 *
 * @see reference/uvm-policies.md §4.1, §4.6 (L→R, S→W, M→R+W, I dropped or kept)
 */
import { ACCESS_READ, ACCESS_WRITE, type AccessStream } from "@hmmkit/device-emu";
import type { ResolvedWorkload } from "../scenario";
import { concatStreams } from "../workloads/stream-builder";
import { type GpuLaunch, type Phase, share, type Workload } from "../workloads/workload";
import { LACKEY_OP, type LackeyTrace } from "./lackey";

/** 2 MiB: the compaction unit (UVM's VA block). */
export const TRACE_REGION = 2097152;

/** The regions a trace touches. */
export interface TraceRegions {
  /** Original region numbers (address / 2 MiB), ascending. */
  readonly regions: Float64Array;
  /** Records included (I records only with instructions). */
  readonly records: number;
  /** Distinct 4 KiB pages touched. */
  readonly pages: number;
}

const INV_REGION = 1 / TRACE_REGION;
const INV_PAGE = 1 / 4096;
const INV_512 = 1 / 512;
const ACCESS_OF_OP = [ACCESS_READ, ACCESS_READ, ACCESS_WRITE, ACCESS_READ | ACCESS_WRITE];

/**
 * Collect the distinct 2 MiB regions and 4 KiB pages a trace touches.
 * @param t - the trace.
 * @param instructions - include `I` records.
 * @returns the regions (sorted) and counts.
 */
export function traceRegions(t: LackeyTrace, instructions: boolean): TraceRegions {
  // One pass: a 512-entry page bitmap per touched region, found through a one-entry cache.
  const maps = new Map<number, Uint8Array>();
  const { addr, size, op } = t;
  let lastR = -1;
  let bits: Uint8Array = new Uint8Array(0);
  let records = 0;
  let pages = 0;
  let plo = -8192;
  for (let i = 0; i < t.count; i++) {
    if (!instructions && op[i] === LACKEY_OP.INSTR) continue;
    records++;
    const a = addr[i] as number;
    const e = a + (size[i] as number);
    if (a >= plo && e <= plo + 4096) continue; // same page as the previous record: already counted
    const p0 = Math.floor(a * INV_PAGE);
    const p1 = Math.floor((e - 1) * INV_PAGE);
    plo = p1 * 4096;
    for (let p = p0; p <= p1; p++) {
      const r = Math.floor(p * INV_512);
      if (r !== lastR) {
        lastR = r;
        let b = maps.get(r);
        if (b === undefined) {
          b = new Uint8Array(512);
          maps.set(r, b);
        }
        bits = b;
      }
      const k = p - r * 512;
      if (bits[k] === 0) {
        bits[k] = 1;
        pages++;
      }
    }
  }
  const regions = Float64Array.from(maps.keys()).sort();
  return { regions, records, pages };
}

/**
 * Build the access streams of a trace, mapped at `base`, cut into `agents` contiguous segments.
 * @param t - the trace.
 * @param regions - its regions ({@link traceRegions}).
 * @param base - buffer address (2 MiB-aligned for exact huge-page locality).
 * @param agents - number of segments.
 * @param instructions - include `I` records as reads.
 * @returns one stream per segment (empty segments omitted).
 */
export function traceStreams(t: LackeyTrace, regions: TraceRegions, base: number, agents: number, instructions: boolean): AccessStream[] {
  const slot = new Map<number, number>();
  regions.regions.forEach((r, k) => {
    slot.set(r, k);
  });
  const { addr: ta, size: ts, op: top } = t;
  const out: AccessStream[] = [];
  const m = regions.records;
  let i = 0;
  let rlo = 1;
  let rhi = 0;
  let lastBase = 0;
  for (let ag = 0; ag < agents; ag++) {
    const [lo, hi] = share(m, ag, agents);
    if (hi === lo) continue;
    let cap = hi - lo + 64;
    let addr = new Float64Array(cap);
    let size = new Uint16Array(cap);
    let flags = new Uint8Array(cap);
    let n = 0;
    for (let k = lo; k < hi; k++) {
      while (!instructions && top[i] === LACKEY_OP.INSTR) i++;
      let a = ta[i] as number;
      let z = ts[i] as number;
      const f = ACCESS_OF_OP[top[i] as number] as number;
      i++;
      while (z > 0) {
        if (!(a >= rlo && a < rhi)) {
          const r = Math.floor(a * INV_REGION);
          rlo = r * TRACE_REGION;
          rhi = rlo + TRACE_REGION;
          lastBase = base + (slot.get(r) as number) * TRACE_REGION;
        }
        // Offsets inside a 2 MiB region fit 21 bits: integer arithmetic is exact.
        const off = a - rlo;
        const pageOff = off & 4095;
        const c = Math.min(z, 4096 - pageOff);
        if (n === cap) {
          cap *= 2;
          const a2 = new Float64Array(cap);
          a2.set(addr);
          addr = a2;
          const s2 = new Uint16Array(cap);
          s2.set(size);
          size = s2;
          const f2 = new Uint8Array(cap);
          f2.set(flags);
          flags = f2;
        }
        addr[n] = lastBase + off;
        size[n] = c;
        flags[n] = f;
        n++;
        a += c;
        z -= c;
      }
    }
    out.push({ addr: addr.subarray(0, n), size: size.subarray(0, n), flags: flags.subarray(0, n), count: n });
  }
  return out;
}

/**
 * A workload that replays a trace (`iterations` times) on the CPU or on the scenario's GPUs.
 * @param t - the trace.
 * @param spec - the resolved workload (`on`, `gpus`, `warps`, `iterations`, `traceInstructions`).
 * @param name - trace name for the description.
 * @returns the workload; `bytes` is the touched regions' span.
 */
export function createTraceWorkload(t: LackeyTrace, spec: ResolvedWorkload, name = "trace"): Workload {
  const ins = spec.traceInstructions;
  const regions = traceRegions(t, ins);
  const bytes = Math.max(1, regions.regions.length) * TRACE_REGION;
  return {
    kind: "trace",
    description: `lackey trace ${name}: ${regions.records} records (${t.counts[1]} L, ${t.counts[2]} S, ${t.counts[3]} M${ins ? `, ${t.counts[0]} I` : ""}), ${regions.pages} pages in ${regions.regions.length} × 2 MiB regions`,
    bytes,
    phaseCount: spec.iterations,
    *phases(base: number): Generator<Phase> {
      const gpus = spec.on === "cpu" ? [] : spec.gpus;
      const agents = spec.on === "cpu" ? 1 : gpus.length * spec.warps;
      const streams = traceStreams(t, regions, base, agents, ins);
      for (let it = 0; it < spec.iterations; it++) {
        const label = `trace replay ${it + 1}`;
        if (spec.on === "cpu") {
          yield { label, launches: [], cpu: streams.length === 1 ? (streams[0] as AccessStream) : concatStreams(streams) };
          continue;
        }
        const launches: GpuLaunch[] = [];
        gpus.forEach((gpu, g) => {
          const mine = streams.slice(g * spec.warps, (g + 1) * spec.warps);
          if (mine.length > 0) launches.push({ gpu, streams: mine });
        });
        yield { label, launches };
      }
    },
  };
}
