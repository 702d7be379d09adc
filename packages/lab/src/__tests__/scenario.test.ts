import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { OVERSUBSCRIPTION_LEVELS, parseScenario, validateScenario } from "../scenario";
import { errArg } from "./helpers";

const base = { workload: { kind: "stream", workingSetMiB: 8 } };

describe("scenario validation", () => {
  it("fills defaults", () => {
    const s = validateScenario(base);
    expect(s.name).toBe("scenario");
    expect(s.seed).toBe(1);
    expect(s.platform.gpus).toEqual([{ vramMiB: 64 }]);
    expect(s.driver).toEqual({ name: "nouveau", options: {} });
    expect(s.policy).toEqual({ name: "first-touch", params: {} });
    expect(s.workload).toMatchObject({ kind: "stream", on: "gpu", gpus: [0], iterations: 2, warps: 32, accessBytes: 256, cpuInit: true });
    expect(s.workload.workingSetBytes).toBe(8 << 20);
    expect(s.machine).toEqual({ seed: 1, ramMiB: [256] });
    expect(s.report.buckets).toBe(120);
  });

  it.each(OVERSUBSCRIPTION_LEVELS)("oversubscription %i %% sizes the working set from the workload GPUs' VRAM", (pct) => {
    const one = validateScenario({
      platform: { gpus: [{ vramMiB: 64 }, { vramMiB: 32 }] },
      workload: { kind: "random", oversubscription: pct },
    });
    expect(one.workload.workingSetBytes).toBe(Math.round((64 * 2 ** 20 * pct) / 100 / 4096) * 4096);
    expect(one.workload.oversubscription).toBe(pct);
    const two = validateScenario({
      platform: { gpus: [{ vramMiB: 64 }, { vramMiB: 32 }] },
      workload: { kind: "stencil", oversubscription: pct, gpus: [0, 1] },
    });
    expect(two.workload.workingSetBytes).toBe(Math.round((96 * 2 ** 20 * pct) / 100 / 4096) * 4096);
  });

  it.each([
    [null, "scenario"],
    [{ ...base, extra: 1 }, "scenario.extra"],
    [{ ...base, seed: -1 }, "scenario.seed"],
    [{ ...base, seed: 1.5 }, "scenario.seed"],
    [{ ...base, name: "" }, "scenario.name"],
    [{}, "scenario.workload"],
    [{ workload: { kind: "nope", workingSetMiB: 1 } }, "scenario.workload.kind"],
    [{ workload: { kind: "stream" } }, "scenario.workload.workingSetMiB"],
    [{ workload: { kind: "stream", workingSetMiB: 0 } }, "scenario.workload.workingSetMiB"],
    [{ workload: { kind: "stream", workingSetMiB: "8" } }, "scenario.workload.workingSetMiB"],
    [{ workload: { kind: "stream", workingSetMiB: 8, oversubscription: 125 } }, "scenario.workload.workingSetMiB"],
    [{ workload: { kind: "stream", oversubscription: 0 } }, "scenario.workload.oversubscription"],
    [{ workload: { kind: "stream", workingSetMiB: 8, on: "tpu" } }, "scenario.workload.on"],
    [{ workload: { kind: "stream", workingSetMiB: 8, gpus: [1] } }, "scenario.workload.gpus[0]"],
    [{ workload: { kind: "stream", workingSetMiB: 8, gpus: [] } }, "scenario.workload.gpus"],
    [{ workload: { kind: "stream", workingSetMiB: 8, on: "cpu", gpus: [0] } }, "scenario.workload.gpus"],
    [{ workload: { kind: "stream", workingSetMiB: 8, warps: 0 } }, "scenario.workload.warps"],
    [{ workload: { kind: "stream", workingSetMiB: 8, accessBytes: 100 } }, "scenario.workload.accessBytes"],
    [{ workload: { kind: "stream", workingSetMiB: 8, iterations: 1001 } }, "scenario.workload.iterations"],
    [{ workload: { kind: "pingpong", workingSetMiB: 8 } }, "scenario.workload.gpus"],
    [{ workload: { kind: "bfs", workingSetMiB: 8, degree: 0 } }, "scenario.workload.degree"],
    [{ workload: { kind: "random", workingSetMiB: 8, writeFraction: 2 } }, "scenario.workload.writeFraction"],
    [{ workload: { kind: "trace" } }, "scenario.workload.trace"],
    [{ workload: { kind: "trace", trace: "t.out", workingSetMiB: 2 } }, "scenario.workload.workingSetMiB"],
    [{ workload: { kind: "stream", workingSetMiB: 8, trace: "t.out" } }, "scenario.workload.trace"],
    [{ workload: { kind: "stream", workingSetMiB: 8, cpuReadback: "yes" } }, "scenario.workload.cpuReadback"],
    [{ ...base, platform: { gpus: [] } }, "scenario.platform.gpus"],
    [{ ...base, platform: { gpus: [{ vramMiB: 3 }] } }, "scenario.platform.gpus[0].vramMiB"],
    [{ ...base, platform: { gpus: [{}] } }, "scenario.platform.gpus[0].vramMiB"],
    [{ ...base, platform: { gpus: [{ vramMiB: 8 }], links: [] } }, "scenario.platform.links"],
    [{ ...base, machine: { seed: 3 } }, "scenario.machine.seed"],
    [{ ...base, driver: { name: 3 } }, "scenario.driver.name"],
    [{ ...base, driver: { options: [] } }, "scenario.driver.options"],
    [{ ...base, policy: {} }, "scenario.policy.name"],
    [{ ...base, policy: { name: "x", params: { threshold: null } } }, "scenario.policy.params.threshold"],
    [{ ...base, policy: { name: "x", params: { threshold: Number.NaN } } }, "scenario.policy.params.threshold"],
    [{ ...base, report: { buckets: 5 } }, "scenario.report.buckets"],
  ])("rejects %j naming %s", (input, path) => {
    expect(errArg(() => validateScenario(input))).toBe(path);
  });

  it("rejects malformed JSON naming the file", () => {
    expect(() => parseScenario("{ nope", "bad.json")).toThrow(/bad\.json: not valid JSON/);
  });

  it("is pure: the same input gives equal scenarios and the input is not aliased", () => {
    const input = {
      platform: { gpus: [{ vramMiB: 8 }] },
      policy: { name: "p", params: { b: 1, a: true } },
      workload: { kind: "bfs", workingSetMiB: 2 },
    };
    const a = validateScenario(input);
    const b = validateScenario(JSON.parse(JSON.stringify(input)));
    expect(JSON.stringify(a)).toBe(JSON.stringify(b));
    expect(Object.keys(a.policy.params)).toEqual(["a", "b"]);
    (input.platform.gpus[0] as { vramMiB: number }).vramMiB = 2;
    expect(a.platform.gpus[0]?.vramMiB).toBe(8);
  });
});

describe("shipped scenario files", () => {
  const dir = path.join(path.dirname(fileURLToPath(import.meta.url)), "../../scenarios");
  const files = readdirSync(dir).filter((f) => f.endsWith(".json") && f !== "thp-fork.json");
  it.each(files)("%s validates", (f) => {
    const s = parseScenario(readFileSync(path.join(dir, f), "utf8"), f);
    expect(s.name.length).toBeGreaterThan(0);
  });

  it("the flagship compares the built-in policies on two GPUs", () => {
    const s = parseScenario(readFileSync(path.join(dir, "flagship.json"), "utf8"));
    expect(s.platform.gpus.length).toBe(2);
    expect(s.workload.gpus).toEqual([0, 1]);
  });
});
