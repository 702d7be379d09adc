import { describe, expect, it } from "vitest";
import type { LabDriverRegistry } from "../driver-binding";
import { toJson } from "../report/json";
import { comparePolicies, runScenario, sweepOversubscription } from "../runner";
import { validateScenario } from "../scenario";
import { parseLackey } from "../trace/lackey";
import { rejection, smallGpuScenario } from "./helpers";

describe("runner: determinism", () => {
  it("the same GPU scenario and seed give byte-identical JSON", async () => {
    const s = smallGpuScenario({ workload: { kind: "pingpong", workingSetMiB: 6, warps: 4, iterations: 2 } });
    const a = toJson(await runScenario(s));
    const b = toJson(await runScenario(s));
    expect(a).toBe(b);
    expect(a.length).toBeGreaterThan(1000);
  });

  it("a comparison is byte-identical too, and a seed changes a random workload's run", async () => {
    const mk = (seed: number) =>
      smallGpuScenario({ seed, policy: { name: "first-touch" }, workload: { kind: "random", workingSetMiB: 2, warps: 4, iterations: 1 } });
    const a = toJson(await comparePolicies(mk(3), ["first-touch", "access-counters"]));
    const b = toJson(await comparePolicies(mk(3), ["first-touch", "access-counters"]));
    expect(a).toBe(b);
    const c = toJson(await comparePolicies(mk(4), ["first-touch", "access-counters"]));
    expect(c).not.toBe(a);
  });

  it("CPU runs are deterministic and need no driver", async () => {
    const s = validateScenario({ seed: 5, workload: { kind: "bfs", workingSetMiB: 1, on: "cpu", warps: 2 } });
    const a = toJson(await runScenario(s, { drivers: new Map() }));
    expect(toJson(await runScenario(s, { drivers: new Map() }))).toBe(a);
  });
});

describe("runner: metrics", () => {
  it("measures faults, migrations, link bytes, copy-engine time and series on two GPUs", async () => {
    const r = await runScenario(
      smallGpuScenario({ workload: { kind: "stream", oversubscription: 150, warps: 4, gpus: [0, 1], cpuReadback: true } }),
    );
    const m = r.metrics;
    expect(m.gpuFaults).toBeGreaterThan(0);
    expect(m.faultBatches).toBeGreaterThan(0);
    expect(m.faultBatches).toBeLessThanOrEqual(m.gpuFaults);
    expect(m.pagesToGpu).toBeGreaterThan(0);
    expect(m.evictions).toBeGreaterThan(0); // 150 % of 2 × 4 MiB
    expect(m.pagesToCpu).toBeGreaterThan(m.evictions); // the CPU read-back brings pages home
    expect(m.linkBytes["gpu0.h2d"]).toBeGreaterThan(0);
    expect(m.copyEngineUtilisation).toBeGreaterThan(0);
    expect(m.copyEngineUtilisation).toBeLessThanOrEqual(1);
    expect(m.simTimeNs).toBeGreaterThan(0);
    expect(m.gpus.map((g) => g.name)).toEqual(["gpu0", "gpu1"]);
    expect(m.driver.pagesToVram).toBeGreaterThan(0);
    const sum = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0);
    expect(sum(r.series.faults)).toBe(m.gpuFaults);
    expect(sum(r.series.batches)).toBe(m.faultBatches);
    expect(sum(r.series.migrated)).toBe(m.pagesToGpu + m.pagesToCpu + m.pagesGpuToGpu);
    expect(r.series.t.length).toBeLessThanOrEqual(r.scenario.report.buckets);
    expect(r.series.t.length * r.series.bucketNs).toBeGreaterThanOrEqual(m.simTimeNs);
  });

  it("replays a lackey trace on a GPU and on the CPU", async () => {
    const text = Array.from(
      { length: 600 },
      (_, i) => ` ${i % 3 === 0 ? "S" : "L"} ${(0x7ff000000000 + i * 4096 * 3).toString(16)},8`,
    ).join("\n");
    const trace = { trace: parseLackey(text), name: "t" };
    const gpu = smallGpuScenario({ policy: { name: "first-touch" }, workload: { kind: "trace", trace: "t", warps: 2 } });
    const rg = await runScenario(gpu, { trace });
    expect(rg.metrics.gpuFaults).toBeGreaterThanOrEqual(600);
    expect(rg.metrics.accesses).toBe(600);
    const rc = await runScenario(validateScenario({ workload: { kind: "trace", trace: "t", on: "cpu" } }), { trace });
    expect(rc.metrics.accesses).toBe(600);
    expect(rc.metrics.cpuFaults).toBe(600);
  });
});

describe("runner: errors name the scenario field", () => {
  it("re-prefixes device-emu's platform errors", async () => {
    const s = smallGpuScenario({ platform: { gpus: [{ vramMiB: 4, copyEngines: 0 }] } });
    const e = await rejection(runScenario(s));
    expect(e.arg).toBe("scenario.platform.gpus[0].copyEngines");
    expect(e.message).toMatch(/^EINVAL: scenario\.platform\.gpus\[0\]\.copyEngines: /);
  });

  it("re-prefixes core's machine errors", async () => {
    const e = await rejection(runScenario(smallGpuScenario({ machine: { ramMiB: [3] } })));
    expect(e.arg).toBe("scenario.machine.ramMiB[0]");
  });

  it("rejects an unavailable driver with ENODEV and an unknown policy with EINVAL", async () => {
    const none: LabDriverRegistry = new Map();
    const e1 = await rejection(runScenario(smallGpuScenario(), { drivers: none }));
    expect(e1.code).toBe("ENODEV");
    expect(e1.arg).toBe("scenario.driver.name");
    const e2 = await rejection(runScenario(smallGpuScenario({ policy: { name: "telepathy" } })));
    expect(e2.arg).toBe("scenario.policy.name");
    expect(e2.message).toContain("first-touch");
  });

  it("rejects a parameter no policy part takes, and a bad value, naming the parameter", async () => {
    const e1 = await rejection(runScenario(smallGpuScenario({ policy: { name: "first-touch", params: { threshold: 51 } } })));
    expect(e1.arg).toBe("scenario.policy.params.threshold");
    const e2 = await rejection(runScenario(smallGpuScenario({ policy: { name: "tree-prefetch", params: { threshold: 0 } } })));
    expect(e2.arg).toBe("scenario.policy.params.threshold");
    const e3 = await rejection(runScenario(smallGpuScenario({ driver: { name: "nouveau", options: { warp: 1 } } })));
    expect(e3.arg).toBe("scenario.driver.options.warp");
  });

  it("accepts compositions of policy parts", async () => {
    const r = await runScenario(
      smallGpuScenario({ policy: { name: "tree-prefetch+thrash-pin", params: { threshold: 60, pinNs: 1000000 } } }),
    );
    expect(r.scenario.policy.name).toBe("tree-prefetch+thrash-pin");
    expect(r.metrics.gpuFaults).toBeGreaterThan(0);
  });

  it("a trace workload without its trace is EINVAL", async () => {
    const e = await rejection(runScenario(validateScenario({ workload: { kind: "trace", trace: "x", on: "cpu" } })));
    expect(e.arg).toBe("scenario.workload.trace");
  });
});

describe("runner: oversubscription sweep", () => {
  it("runs every level × policy, sizing the working set from the VRAM of the workload's GPUs", async () => {
    const s = smallGpuScenario({ workload: { kind: "random", workingSetMiB: 1, warps: 2, iterations: 1 } });
    const r = await sweepOversubscription(s, [110, 150], ["first-touch", "access-counters"]);
    expect(r.runs.map((x) => [x.scenario.workload.oversubscription, x.scenario.policy.name])).toEqual([
      [110, "first-touch"],
      [110, "access-counters"],
      [150, "first-touch"],
      [150, "access-counters"],
    ]);
    expect(r.runs[0]?.scenario.workload.workingSetBytes).toBe(Math.round((4 * 2 ** 20 * 1.1) / 4096) * 4096);
    expect(r.runs[2]?.workload.bytes).toBeGreaterThan(r.runs[0]?.workload.bytes as number);
  });

  it("rejects no level, duplicates, out-of-range levels and trace workloads", async () => {
    const s = smallGpuScenario();
    expect((await rejection(sweepOversubscription(s, [], ["first-touch"]))).arg).toBe("oversubscription");
    expect((await rejection(sweepOversubscription(s, [110, 110], ["first-touch"]))).arg).toBe("oversubscription");
    expect((await rejection(sweepOversubscription(s, [0], ["first-touch"]))).arg).toBe("oversubscription");
    const t = smallGpuScenario({ workload: { kind: "trace", trace: "t" } });
    expect((await rejection(sweepOversubscription(t, [110], ["first-touch"]))).arg).toBe("oversubscription");
  });
});
