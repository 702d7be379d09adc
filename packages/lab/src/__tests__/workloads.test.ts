import { Machine } from "@hmmkit/core";
import type { AccessStream } from "@hmmkit/device-emu";
import { describe, expect, it } from "vitest";
import { type ResolvedWorkload, validateScenario, WORKLOAD_KINDS } from "../scenario";
import { createWorkload } from "../workloads/index";
import type { Phase } from "../workloads/workload";

const KINDS = WORKLOAD_KINDS.filter((k) => k !== "trace");

function spec(kind: string, over: Record<string, unknown> = {}): ResolvedWorkload {
  return validateScenario({
    platform: { gpus: [{ vramMiB: 4 }, { vramMiB: 4 }] },
    workload: { kind, workingSetMiB: 2, warps: 3, iterations: 2, ...(kind === "pingpong" ? {} : {}), ...over },
  }).workload;
}

function digest(phases: Iterable<Phase>): string {
  let h = 0x811c9dc5;
  const mix = (x: number) => {
    h = Math.imul(h ^ (x >>> 0), 0x01000193) >>> 0;
    h = Math.imul(h ^ Math.floor(x / 2 ** 32), 0x01000193) >>> 0;
  };
  let n = 0;
  for (const p of phases) {
    const streams: AccessStream[] = p.cpu !== undefined ? [p.cpu] : p.launches.flatMap((l) => l.streams);
    for (const s of streams) {
      const c = s.count ?? s.addr.length;
      n += c;
      for (let i = 0; i < c; i++) {
        mix(s.addr[i] as number);
        mix(s.size[i] as number);
        mix(s.flags[i] as number);
      }
    }
  }
  return `${n}:${h}`;
}

function gen(kind: string, seed: number, over: Record<string, unknown> = {}): string {
  const m = Machine.create({ ramMiB: [16], seed });
  try {
    const w = createWorkload({ spec: spec(kind, over), rng: m.rng.fork("workload") });
    return digest(w.phases(0x40000000));
  } finally {
    m.dispose();
  }
}

describe("workload generators", () => {
  it.each(KINDS)("%s is deterministic for a seed", (kind) => {
    expect(gen(kind, 11)).toBe(gen(kind, 11));
  });

  it.each(["random", "bfs"])("%s depends on the seed", (kind) => {
    expect(gen(kind, 11)).not.toBe(gen(kind, 12));
  });

  it.each(["stream", "stencil", "pingpong"])("%s does not depend on the seed (no randomness)", (kind) => {
    expect(gen(kind, 11)).toBe(gen(kind, 12));
  });

  it.each(KINDS)("%s stays inside its buffer and the working set, with valid accesses", (kind) => {
    const m = Machine.create({ ramMiB: [16], seed: 3 });
    const s = spec(kind);
    const w = createWorkload({ spec: s, rng: m.rng.fork("workload") });
    expect(w.bytes % 4096).toBe(0);
    expect(w.bytes).toBeLessThanOrEqual(s.workingSetBytes + 4 * 4096);
    expect(w.bytes).toBeGreaterThan(s.workingSetBytes * 0.5);
    const base = 0x40000000;
    let phases = 0;
    const pages = new Set<number>();
    for (const p of w.phases(base)) {
      phases++;
      expect(p.cpu).toBeUndefined();
      for (const l of p.launches) {
        expect(s.gpus).toContain(l.gpu);
        expect(l.streams.length).toBeLessThanOrEqual(s.warps);
        let bad = 0;
        for (const st of l.streams) {
          for (let i = 0; i < (st.count ?? st.addr.length); i++) {
            const a = st.addr[i] as number;
            const z = st.size[i] as number;
            if (!(a >= base && a + z <= base + w.bytes) || !(z >= 1 && (a % 4096) + z <= 4096) || st.flags[i] === 0) bad++;
            pages.add(Math.floor(a / 4096));
          }
        }
        expect(bad).toBe(0);
      }
    }
    expect(phases).toBeGreaterThan(0);
    expect(pages.size).toBeGreaterThan(0);
    m.dispose();
  });

  it("stream touches every page of its arrays, once per pass, in address order per warp", () => {
    const m = Machine.create({ ramMiB: [16], seed: 1 });
    const w = createWorkload({ spec: spec("stream", { warps: 1, iterations: 1 }), rng: m.rng.fork("workload") });
    const [p] = [...w.phases(0)];
    const st = p?.launches[0]?.streams[0] as AccessStream;
    const pages = new Set<number>();
    for (let i = 0; i < (st.count as number); i++) pages.add(Math.floor((st.addr[i] as number) / 4096));
    expect(pages.size).toBe(w.bytes / 4096);
    m.dispose();
  });

  it("on the CPU, a phase is one stream with the agents' accesses in order", () => {
    const m = Machine.create({ ramMiB: [16], seed: 1 });
    const s = validateScenario({ workload: { kind: "stencil", workingSetMiB: 1, on: "cpu", warps: 2, iterations: 1 } }).workload;
    const [p] = [...createWorkload({ spec: s, rng: m.rng.fork("workload") }).phases(0)];
    expect(p?.launches).toEqual([]);
    expect(p?.cpu?.count).toBeGreaterThan(0);
    m.dispose();
  });

  it("pingpong gives every GPU the shared region", () => {
    const m = Machine.create({ ramMiB: [16], seed: 1 });
    const s = spec("pingpong", { sharedFraction: 0.5, iterations: 1 });
    const w = createWorkload({ spec: s, rng: m.rng.fork("workload") });
    const [p] = [...w.phases(0)];
    const shared = Math.ceil((s.workingSetBytes * 0.5) / 4096) * 4096;
    const touched = p?.launches.map((l) => l.streams.some((st) => [...st.addr].some((a) => a < shared)));
    expect(p?.launches.map((l) => l.gpu)).toEqual([0, 1]);
    expect(touched).toEqual([true, true]);
    m.dispose();
  });
});
