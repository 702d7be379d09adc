import path from "node:path";
import { describe, expect, it } from "vitest";
import { main, parseArgs, UsageError } from "../cli";
import { formatLackey, LACKEY_OP } from "../trace/lackey";
import { MemIo } from "./helpers";

const small = {
  name: "tiny",
  seed: 2,
  platform: { gpus: [{ vramMiB: 4 }, { vramMiB: 4 }], peerLinks: [{ gpus: [0, 1] }] },
  policy: { name: "first-touch" },
  workload: { kind: "stream", workingSetMiB: 2, warps: 2, iterations: 1 },
};

describe("hmmkit CLI: usage errors (exit 2)", () => {
  it.each([
    [[], "missing command"],
    [["frobnicate"], 'unknown command "frobnicate"'],
    [["run"], "run: expected one scenario file, got none"],
    [["run", "a.json", "b.json"], "run: expected one scenario file"],
    [["run", "missing.json"], "scenario file not found: missing.json"],
    [["run", "s.json", "--bogus"], "unknown option --bogus"],
    [["run", "s.json", "--out"], "option --out needs a value"],
    [["run", "s.json", "--json=1"], "option --json takes no value"],
    [["run", "s.json", "--seed", "x"], "option --seed needs a number"],
    [["compare", "s.json"], "compare: --policies a,b,c is required"],
    [["compare", "s.json", "--policies", ","], "option --policies needs a comma-separated list"],
    [["trace"], "trace: expected one lackey log file"],
    [["trace", "t.out", "--on", "tpu"], 'option --on needs "cpu" or "gpu"'],
    [["thp-fork", "a.json", "extra"], "thp-fork: unexpected argument extra"],
    [["thp-fork", "nope.json"], "scenario file not found: nope.json"],
    [["flagship", "x.json"], "unexpected argument x.json"],
  ])("%j → %s", async (argv, msg) => {
    const io = new MemIo();
    io.put("/w/s.json", small);
    io.put("/w/t.out", "I  10,1\n");
    expect(await main(argv as string[], io)).toBe(2);
    expect(io.err).toContain(`hmmkit: ${msg}`);
    expect(io.err).toContain("usage: hmmkit <command>");
    expect(io.out).toBe("");
  });

  it("parseArgs accepts --flag value and --flag=value", () => {
    const p = parseArgs(["a", "--out", "d", "--seed=3", "--json"], ["out", "seed", "json"]);
    expect(p.positional).toEqual(["a"]);
    expect([...p.flags]).toEqual([
      ["out", "d"],
      ["seed", "3"],
      ["json", true],
    ]);
    expect(() => parseArgs(["--policies"], ["policies"])).toThrow(UsageError);
  });

  it("help prints the usage", async () => {
    const io = new MemIo();
    expect(await main(["help"], io)).toBe(0);
    expect(io.out).toContain("compare <scenario.json> --policies a,b,c");
  });
});

describe("hmmkit CLI: lab errors (exit 1)", () => {
  it("a bad scenario field is reported with its path", async () => {
    const io = new MemIo();
    io.put("/w/s.json", { ...small, workload: { kind: "stream", workingSetMiB: -1 } });
    expect(await main(["run", "s.json"], io)).toBe(1);
    expect(io.err).toBe("hmmkit: EINVAL: scenario.workload.workingSetMiB: a number in 0.0625..1048576, got -1\n");
  });

  it("a malformed trace line is reported with its line number", async () => {
    const io = new MemIo();
    io.put("/w/t.out", "==1== Lackey\nI  00401000,4\n L 7ff0,8\n Q 1234,4\n");
    expect(await main(["trace", "t.out"], io)).toBe(1);
    expect(io.err).toMatch(/^hmmkit: EINVAL: t\.out:4: unknown record prefix/);
  });

  it("an unknown policy lists the built-ins", async () => {
    const io = new MemIo();
    io.put("/w/s.json", small);
    expect(await main(["compare", "s.json", "--policies", "first-touch,nope", "--no-report"], io)).toBe(1);
    expect(io.err).toContain('scenario.policy.name: driver "nouveau" has no policy "nope"');
  });
});

describe("hmmkit CLI: commands", () => {
  it("run prints the table and writes JSON and HTML reports under --out, keeping them out of git", async () => {
    const io = new MemIo();
    io.put("/w/s.json", small);
    expect(await main(["run", "s.json", "--out", "rep"], io)).toBe(0);
    expect(io.out).toMatch(/^tiny: STREAM triad/);
    expect(io.out).toContain("report: rep/tiny-first-touch.html");
    const json = JSON.parse(io.text("/w/rep/tiny-first-touch.json"));
    expect(json.schema).toBe("hmmkit-lab-run/1");
    expect(json.metrics.gpuFaults).toBeGreaterThan(0);
    expect(io.text("/w/rep/tiny-first-touch.html")).toContain("<svg");
    expect(io.text("/w/rep/.gitignore")).toContain("*");
    expect(io.err).toBe("");
  });

  it("--json prints the JSON result, and --seed overrides the scenario's seed", async () => {
    const io = new MemIo();
    io.put("/w/s.json", small);
    expect(await main(["run", "s.json", "--json", "--no-report", "--seed", "9"], io)).toBe(0);
    const r = JSON.parse(io.out);
    expect(r.scenario.seed).toBe(9);
    expect(r.scenario.machine.seed).toBe(9);
    expect(io.files.size).toBe(1);
  });

  it("compare writes one comparison report; --progress reports on stderr", async () => {
    const io = new MemIo();
    io.put("/w/s.json", small);
    expect(await main(["compare", "s.json", "--policies", "first-touch,tree-prefetch", "--progress"], io)).toBe(0);
    expect(io.out).toMatch(/first-touch .*\n.*tree-prefetch/);
    expect(JSON.parse(io.text("/w/out/tiny-comparison.json")).runs.length).toBe(2);
    expect(io.err).toContain("[tiny · tree-prefetch]");
    expect(io.err).toContain("done");
  });

  it("on a terminal, progress is drawn in place without --progress", async () => {
    const io = new MemIo("/w", true);
    io.put("/w/s.json", small);
    expect(await main(["run", "s.json", "--no-report"], io)).toBe(0);
    expect(io.err).toContain("\r\x1b[K[tiny · first-touch] [");
    expect(io.err.endsWith("done\n")).toBe(true);
  });

  it("trace replays a lackey log on the CPU by default and on GPUs with --scenario", async () => {
    const io = new MemIo();
    const recs = Array.from(
      { length: 200 },
      (_, i) => [i % 2 ? LACKEY_OP.STORE : LACKEY_OP.LOAD, 0x500000 + i * 512, 8] as [number, number, number],
    );
    io.put("/w/app.lackey", `==7== Lackey\n${formatLackey(recs)}`);
    io.put("/w/s.json", small);
    expect(await main(["trace", "app.lackey", "--no-report"], io)).toBe(0);
    expect(io.out).toContain("200 records parsed (1 comment lines)");
    expect(io.out).toMatch(/app\.lackey\s+0 ns\s+200\s+/);
    const io2 = new MemIo();
    io2.files.set("/w/app.lackey", io.readFile("/w/app.lackey"));
    io2.put("/w/s.json", small);
    expect(await main(["trace", "app.lackey", "--scenario", "s.json", "--on", "gpu", "--json", "--no-report"], io2)).toBe(0);
    expect(JSON.parse(io2.out).metrics.gpuFaults).toBeGreaterThan(0);
  });

  it("run resolves a scenario's trace relative to the scenario file", async () => {
    const io = new MemIo();
    io.put("/w/sc/app.lackey", formatLackey([[LACKEY_OP.LOAD, 0x1000, 4]]));
    io.put("/w/sc/s.json", { name: "t", workload: { kind: "trace", trace: "app.lackey", on: "cpu" } });
    expect(await main(["run", path.join("sc", "s.json"), "--json", "--no-report"], io)).toBe(0);
    expect(JSON.parse(io.out).metrics.accesses).toBe(1);
  });

  it("compare --oversubscription sweeps levels and charts simulated time by level", async () => {
    const io = new MemIo();
    io.put("/w/s.json", { ...small, workload: { kind: "stream", oversubscription: 100, warps: 2, iterations: 1 } });
    expect(await main(["compare", "s.json", "--policies", "first-touch,tree-prefetch", "--oversubscription", "110,150"], io)).toBe(0);
    expect(io.out).toContain("tiny: stream at 2 sizes (oversubscription sweep)");
    expect(io.out).toMatch(/tree-prefetch @ 150 %/);
    expect(io.text("/w/out/tiny-sweep.html")).toContain("<title>Simulated time by oversubscription level</title>");
    const bad = new MemIo();
    bad.put("/w/s.json", small);
    expect(await main(["compare", "s.json", "--policies", "first-touch", "--oversubscription", "110,x"], bad)).toBe(2);
  });

  it("policies lists the drivers' built-ins", async () => {
    const io = new MemIo();
    expect(await main(["policies"], io)).toBe(0);
    expect(io.out).toContain("nouveau:");
    expect(io.out).toContain("first-touch, tree-prefetch, access-counters, thrash-pin, tree-prefetch+tree-eviction, uvm");
  });

  it("thp-fork runs the experiment and writes its report", async () => {
    const io = new MemIo();
    expect(await main(["thp-fork", "--ram", "32", "--chunk", "4", "--threshold", "64"], io)).toBe(0);
    expect(io.out).toContain("THP reservations fork experiment");
    expect(io.out).toMatch(/thp=always/);
    expect(io.out).toMatch(/reservations \(T=64\)/);
    expect(io.text("/w/out/thp-fork.html")).toContain("Children forked before OOM");
    const r = JSON.parse(io.text("/w/out/thp-fork.json"));
    expect(r.rows.map((x: { mode: string }) => x.mode)).toEqual(["thp=always", "reservations (T=64)", "thp=never"]);
  });
});
