/**
 * `pnpm bench [filter...] [--check] [--list]`: discover and run the benchmark modules, print a
 * table, and merge the results into `bench/results.json`.
 *
 * Modules are `packages/<pkg>/bench/*.bench.ts` and `bench/*.bench.ts`; each exports
 * `run(): Promise<BenchResult[]>` (see bench/lib.ts) and runs in a process of its own
 * (`bench/module-child.ts` through `runFresh`), so that no module inherits the heap, the garbage or
 * the JIT state of the ones before it: a module's numbers do not depend on which others ran.
 * Filters are substrings of the module path relative to the repository root (any one matching
 * selects the module). Ids that were not re-run keep their stored values. `--check` exits 1 when a result misses its target (bench/targets.json);
 * a module that throws always makes the run exit 1, after the other modules' results are saved.
 */
import { existsSync, readdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import process from "node:process";
import {
  type BenchTarget,
  formatTarget,
  formatValue,
  ID_PATTERN,
  loadResults,
  loadTargets,
  meetsTarget,
  roundValue,
  type StoredResult,
  serializeResults,
} from "./format.mjs";
import { type BenchResult, REPO_ROOT, runFresh, secondsSince } from "./lib";

/** A module that runs longer than this is killed and counted as failed. */
const MODULE_TIMEOUT_MS = 20 * 60 * 1000;

function discover(root: string): string[] {
  const found: string[] = [];
  const scan = (dir: string) => {
    if (!existsSync(dir)) return;
    for (const f of readdirSync(dir)) if (f.endsWith(".bench.ts")) found.push(path.join(dir, f));
  };
  const pkgs = path.join(root, "packages");
  if (existsSync(pkgs)) for (const p of readdirSync(pkgs).sort()) scan(path.join(pkgs, p, "bench"));
  scan(path.join(root, "bench"));
  return found.map((f) => path.relative(root, f)).sort();
}

function validate(mod: string, r: unknown): BenchResult {
  const x = r as Partial<BenchResult> | null;
  if (!x || typeof x.id !== "string" || !ID_PATTERN.test(x.id)) throw new Error(`${mod}: bad result id ${JSON.stringify(x?.id)}`);
  if (typeof x.value !== "number" || !Number.isFinite(x.value)) throw new Error(`${mod}: ${x.id}: value must be a finite number`);
  if (typeof x.unit !== "string" || x.unit === "") throw new Error(`${mod}: ${x.id}: unit must be a non-empty string`);
  return { id: x.id, value: x.value, unit: x.unit, ...(typeof x.target === "string" ? { target: x.target } : {}) };
}

function table(rows: string[][]): string {
  const widths = rows[0]?.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? "").length))) ?? [];
  const line = (r: string[]) =>
    r
      .map((cell, c) => (c === 1 ? cell.padStart(widths[c] ?? 0) : cell.padEnd(widths[c] ?? 0)))
      .join("  ")
      .trimEnd();
  const [head, ...body] = rows;
  return [line(head ?? []), widths.map((w) => "-".repeat(w)).join("  "), ...body.map(line)].join("\n");
}

async function main(): Promise<number> {
  const argv = process.argv.slice(2);
  const check = argv.includes("--check");
  const list = argv.includes("--list");
  const filters = argv.filter((a) => !a.startsWith("--"));
  const modules = discover(REPO_ROOT).filter((m) => filters.length === 0 || filters.some((f) => m.includes(f)));
  if (list) {
    for (const m of modules) console.log(m);
    return 0;
  }
  if (modules.length === 0) {
    console.log(filters.length ? `bench: no module matches ${filters.join(", ")}` : "bench: no *.bench.ts modules yet");
    return filters.length ? 1 : 0;
  }

  const targets: Record<string, BenchTarget> = loadTargets(REPO_ROOT);
  const fresh: BenchResult[] = [];
  const failures: string[] = [];
  for (const mod of modules) {
    process.stdout.write(`bench: ${mod} ... `);
    const t0 = process.hrtime.bigint();
    try {
      const out: unknown[] = await runFresh("bench/module-child.ts", { args: [mod], timeoutMs: MODULE_TIMEOUT_MS });
      const rs = out.map((r) => validate(mod, r));
      for (const r of rs) {
        if (fresh.some((f) => f.id === r.id)) throw new Error(`${mod}: id ${r.id} reported twice`);
        fresh.push(r);
      }
      console.log(`${rs.length} result(s) in ${secondsSince(t0).toFixed(1)} s`);
    } catch (e) {
      console.log("FAILED");
      console.error(e instanceof Error ? (e.stack ?? e.message) : e);
      failures.push(mod);
    }
  }

  const rows = [["id", "value", "unit", "target", "status"]];
  const missed: string[] = [];
  for (const r of [...fresh].sort((a, b) => (a.id < b.id ? -1 : 1))) {
    const t = targets[r.id];
    const ok = meetsTarget(t, r.value);
    if (ok === false) missed.push(r.id);
    rows.push([
      r.id,
      formatValue(roundValue(r.value)),
      r.unit,
      t ? formatTarget(t) : (r.target ?? ""),
      ok === undefined ? "" : ok ? "ok" : "MISSED",
    ]);
  }
  if (fresh.length > 0) console.log(`\n${table(rows)}\n`);

  const merged = new Map<string, StoredResult>(loadResults(REPO_ROOT).map((r) => [r.id, r]));
  for (const r of fresh) merged.set(r.id, { id: r.id, value: roundValue(r.value), unit: r.unit });
  if (fresh.length > 0) {
    writeFileSync(path.join(REPO_ROOT, "bench", "results.json"), serializeResults([...merged.values()]));
    console.log(`bench: wrote bench/results.json (${merged.size} ids); \`node scripts/readme-bench.mjs\` updates the README table`);
  }
  if (failures.length > 0) console.error(`bench: ${failures.length} module(s) failed: ${failures.join(", ")}`);
  if (check && missed.length > 0) console.error(`bench: missed target(s): ${missed.join(", ")}`);
  return failures.length > 0 || (check && missed.length > 0) ? 1 : 0;
}

process.exitCode = await main();
