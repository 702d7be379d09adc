/**
 * Determinism: the same scenario and seed give identical trace event logs, notifier callbacks,
 * vmstat counters and bytes, byte for byte, for two machines living in one process (even run
 * concurrently); a different seed changes what a seeded workload does.
 */
import { describe, expect, it } from "vitest";
import {
  type CoreEvents,
  HMM_PFN,
  HmmError,
  hmmRangeFault,
  MADV_HUGEPAGE,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  Machine,
  mmuIntervalNotifierInsert,
  mmuIntervalReadBegin,
  mmuIntervalSetSeq,
  PROT_READ,
  PROT_WRITE,
  type Task,
} from "../src/index";
import { findLeaks, leakBaseline } from "./leak-guard";

const MiB = 1 << 20;
const TRACEPOINTS: Array<keyof CoreEvents> = [
  "page_fault_user",
  "mm_page_alloc",
  "mm_page_free",
  "mm_migrate_pages",
  "hmm_range_fault",
  "mm_split_huge_page",
  "didDetectBug",
];

interface RunResult {
  log: string[];
  vmstat: Record<string, number>;
  digest: number;
  clock: number;
}

/** A seeded workload: layout, faults (base + THP), fork/COW, partial munmap, mprotect, hmm mirroring, exit. */
async function scenario(seed: number): Promise<RunResult> {
  const m = Machine.create({ ramMiB: [64], seed, thp: "madvise" });
  const base = leakBaseline(m);
  const log: string[] = [];
  for (const name of TRACEPOINTS) m.bus.on(name, ((e: unknown) => log.push(`${name} ${JSON.stringify(e)}`)) as never);
  const rng = m.rng.fork("workload");
  const tasks: Task[] = [m.mm.spawn()];
  const regions: Array<[number, number]> = [];
  const root = tasks[0] as Task;
  for (let i = 0; i < 4; i++) {
    const len = (1 + rng.int(4)) * MiB;
    const va = root.mm.mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
    if (rng.int(2) === 0) root.mm.madvise(va, len, MADV_HUGEPAGE);
    regions.push([va, va + len]);
  }
  const [ms, me] = regions[0] as [number, number];
  const sub = mmuIntervalNotifierInsert(root.mm, ms, me - ms, {
    invalidate(s, r, cur) {
      log.push(`invalidate ${r.event} ${r.start - ms} ${r.end - ms} ${cur}`);
      mmuIntervalSetSeq(s, cur);
      return true;
    },
  });
  let digest = 0;
  for (let step = 0; step < 300; step++) {
    const t = tasks[rng.int(tasks.length)] as Task;
    const [s, e] = regions[rng.int(regions.length)] as [number, number];
    const va = s + rng.int(e - s - 64);
    const what = rng.int(100);
    try {
      if (what < 45) {
        const data = new Uint8Array(1 + rng.int(64));
        for (let i = 0; i < data.length; i++) data[i] = rng.int(256);
        await m.mm.write(t, va, data);
      } else if (what < 80) {
        const got = await m.mm.read(t, va, 32);
        for (const b of got) digest = (Math.imul(digest, 31) + b) >>> 0;
      } else if (what < 85 && tasks.length < 4) {
        tasks.push(m.mm.fork(t));
      } else if (what < 88 && tasks.length > 1 && t !== root) {
        m.mm.exit(t);
        tasks.splice(tasks.indexOf(t), 1);
      } else if (what < 92) {
        t.mm.munmap(va - (va % 4096), 4096 * (1 + rng.int(3)));
      } else if (what < 96) {
        t.mm.mprotect(s, 4096 * (1 + rng.int(8)), rng.int(2) ? PROT_READ : PROT_READ | PROT_WRITE);
      } else {
        const hmmPfns = new Float64Array(16);
        const start = ms + 4096 * rng.int((me - ms) / 4096 - 16);
        const r = await hmmRangeFault(m.mm, {
          notifier: sub,
          notifierSeq: mmuIntervalReadBegin(sub),
          start,
          end: start + 16 * 4096,
          hmmPfns,
          defaultFlags: HMM_PFN.REQ_FAULT,
          pfnFlagsMask: 0,
          devPrivateOwner: undefined,
        });
        log.push(`hmm ${r} ${Array.from(hmmPfns, (x) => x % 256).join(",")}`);
      }
    } catch (err) {
      if (!(err instanceof HmmError)) throw err;
      log.push(`error ${err.code}`);
    }
  }
  // Digest every readable page of every task.
  for (const t of tasks) {
    for (const [s, e] of regions) {
      for (let va = s; va < e; va += 4096) {
        const got = await m.mm.read(t, va, 4096).catch(() => undefined);
        if (got === undefined) continue;
        for (let i = 0; i < got.length; i += 7) digest = (Math.imul(digest, 31) + (got[i] as number) + 1) >>> 0;
      }
    }
  }
  for (const t of tasks) m.mm.exit(t);
  expect(findLeaks(base)).toEqual([]);
  const res = { log, vmstat: { ...m.vmstat.snapshot() }, digest, clock: m.clock.now };
  m.dispose();
  return res;
}

describe("determinism", () => {
  it("same seed, two machines in one process (run concurrently): identical traces, counters and bytes", async () => {
    const [a, b] = await Promise.all([scenario(7), scenario(7)]);
    expect(a.log.length).toBeGreaterThan(300);
    expect(a.log.some((l) => l.startsWith("page_fault_user"))).toBe(true);
    expect(a.log.some((l) => l.startsWith("invalidate"))).toBe(true);
    expect(a.log.some((l) => l.startsWith("hmm_range_fault"))).toBe(true);
    expect(a.vmstat.pgfault).toBeGreaterThan(50);
    expect(b.log).toEqual(a.log);
    expect(b.vmstat).toEqual(a.vmstat);
    expect(b.digest).toBe(a.digest);
    expect(b.clock).toBe(a.clock);
  });

  it("same seed again later in the process: still identical (no module-level state)", async () => {
    const a = await scenario(7);
    const c = await scenario(7);
    expect(c.log).toEqual(a.log);
    expect(c.vmstat).toEqual(a.vmstat);
  });

  it("a different seed changes what the seeded workload does", async () => {
    const a = await scenario(7);
    const d = await scenario(8);
    expect(d.log).not.toEqual(a.log);
    expect(d.digest).not.toBe(a.digest);
    const faultsA = a.log.filter((l) => l.startsWith("page_fault_user"));
    const faultsD = d.log.filter((l) => l.startsWith("page_fault_user"));
    expect(faultsD.slice(0, 20)).not.toEqual(faultsA.slice(0, 20));
  });
});
