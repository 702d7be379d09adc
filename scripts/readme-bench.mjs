#!/usr/bin/env node
/**
 * Regenerate the benchmark table of README.md (between `<!-- bench:start -->` and
 * `<!-- bench:end -->`) from bench/results.json and bench/targets.json.
 *
 * Usage: node scripts/readme-bench.mjs [--check]
 *   --check  change nothing; exit 1 if README.md is not what this script would write (CI).
 */
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { formatTarget, formatValue, loadResults, loadTargets, meetsTarget } from "../bench/format.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const README = path.join(ROOT, "README.md");
const START = "<!-- bench:start -->";
const END = "<!-- bench:end -->";

export function renderTable(results, targets) {
  const byId = new Map(results.map((r) => [r.id, r]));
  const ids = [...new Set([...Object.keys(targets), ...byId.keys()])].sort();
  const lines = ["| Benchmark | Value | Unit | Target | Status |", "| --- | ---: | --- | --- | --- |"];
  for (const id of ids) {
    const r = byId.get(id);
    const t = targets[id];
    const ok = r ? meetsTarget(t, r.value) : undefined;
    const status = !r ? "not measured" : ok === undefined ? "reported" : ok ? "ok" : "**missed**";
    lines.push(`| \`${id}\` | ${r ? formatValue(r.value) : "—"} | ${r?.unit ?? t?.unit ?? ""} | ${formatTarget(t)} | ${status} |`);
  }
  const note =
    results.length === 0
      ? "No results yet: run `pnpm bench`, then `node scripts/readme-bench.mjs`."
      : "Wall-clock numbers from the last `pnpm bench` run on the committer's machine (`bench/results.json`); regenerate with `node scripts/readme-bench.mjs`.";
  return `${note}\n\n${lines.join("\n")}\n`;
}

function main() {
  const check = process.argv.includes("--check");
  const text = readFileSync(README, "utf8");
  const a = text.indexOf(START);
  const b = text.indexOf(END);
  if (a < 0 || b < 0 || b < a) {
    console.error(`readme-bench: README.md must contain ${START} followed by ${END}`);
    process.exit(1);
  }
  const next = `${text.slice(0, a + START.length)}\n${renderTable(loadResults(ROOT), loadTargets(ROOT))}${text.slice(b)}`;
  if (next === text) {
    console.log("readme-bench: README.md benchmark table is up to date");
    return;
  }
  if (check) {
    console.error("readme-bench: README.md benchmark table is stale; run `node scripts/readme-bench.mjs`");
    process.exit(1);
  }
  writeFileSync(README, next);
  console.log("readme-bench: README.md benchmark table updated");
}

main();
