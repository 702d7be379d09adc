import { describe, expect, it } from "vitest";
import { formatThpForkTable, runThpFork, thpForkCharts, validateThpFork } from "../experiments/thp-fork";
import { errArg, expectWellFormed } from "./helpers";

describe("THP reservations fork experiment", () => {
  it("counts children per mode; reservations fit more children than THP always-on", async () => {
    const r = await runThpFork({ ramMiB: 32, chunkMiB: 4, threshold: 64 });
    const [always, res, never] = r.rows;
    expect(always?.children).toBeGreaterThan(0);
    expect(res?.children).toBeGreaterThan(always?.children as number);
    expect(never?.children).toBeGreaterThanOrEqual(res?.children as number);
    expect(always?.promotions).toBeGreaterThan(0);
    expect(never?.promotions).toBe(0);
    expect(always?.meanFaultNs).toBeGreaterThan(never?.meanFaultNs as number);
    expect(formatThpForkTable(r)).toContain("mean fault");
    for (const svg of thpForkCharts(r)) expectWellFormed(svg);
    expect(JSON.stringify(await runThpFork({ ramMiB: 32, chunkMiB: 4, threshold: 64 }))).toBe(JSON.stringify(r));
  });

  it.each([
    [{ ramMiB: 7 }, "thpFork.ramMiB"],
    [{ ramMiB: 33 }, "thpFork.ramMiB"],
    [{ chunkMiB: 3 }, "thpFork.chunkMiB"],
    [{ threshold: 1 }, "thpFork.threshold"],
    [{ touch: 0 }, "thpFork.touch"],
    [{ nope: 1 }, "thpFork.nope"],
  ])("rejects %j", (p, path) => {
    expect(errArg(() => validateThpFork(p))).toBe(path);
  });
});
