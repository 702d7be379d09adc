// Shared by bench/run.ts and scripts/readme-bench.mjs: targets, rounding and number formatting, so
// the terminal table, bench/results.json and the README table agree. Types: format.d.mts.
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";

/** Ids are dotted lower-case words: `core.fault.first_touch_per_s`. */
export const ID_PATTERN = /^[a-z0-9_]+(\.[a-z0-9_]+)+$/;

/** Round a measured value for storage: integers from 1000 up, 4 significant digits below. */
export function roundValue(v) {
  if (!Number.isFinite(v)) throw new Error(`bench value must be finite, got ${v}`);
  return Math.abs(v) >= 1000 ? Math.round(v) : Number(v.toPrecision(4));
}

/** Format a value for tables: thousands separators, at most 3 decimals. */
export function formatValue(v) {
  const digits = Math.abs(v) >= 100 ? 0 : 3;
  return v.toLocaleString("en-US", { maximumFractionDigits: digits, useGrouping: true });
}

/** "report", or e.g. ">= 1,000,000 faults/s". */
export function formatTarget(t) {
  if (!t) return "";
  if (t.op === "report") return "report";
  return t.unit === "ratio" ? `${t.op} ${formatValue(t.value)}` : `${t.op} ${formatValue(t.value)} ${t.unit}`;
}

/** true / false when the target has a bound, undefined for "report" or no target. */
export function meetsTarget(t, value) {
  if (!t || t.op === "report") return undefined;
  if (t.op === ">=") return value >= t.value;
  if (t.op === "<=") return value <= t.value;
  throw new Error(`unknown target op ${t.op}`);
}

/** bench/targets.json: id -> { op: ">=" | "<=" | "report", value?, unit }. */
export function loadTargets(root) {
  const file = path.join(root, "bench", "targets.json");
  if (!existsSync(file)) return {};
  const t = JSON.parse(readFileSync(file, "utf8"));
  for (const [id, v] of Object.entries(t)) {
    if (!ID_PATTERN.test(id)) throw new Error(`bench/targets.json: bad id ${id}`);
    if (!["<=", ">=", "report"].includes(v.op)) throw new Error(`bench/targets.json: ${id}: op must be >=, <= or report`);
    if (v.op !== "report" && typeof v.value !== "number") throw new Error(`bench/targets.json: ${id}: value must be a number`);
    if (typeof v.unit !== "string") throw new Error(`bench/targets.json: ${id}: unit must be a string`);
  }
  return t;
}

/** bench/results.json as an array of { id, value, unit } ([] when absent). */
export function loadResults(root) {
  const file = path.join(root, "bench", "results.json");
  if (!existsSync(file)) return [];
  const r = JSON.parse(readFileSync(file, "utf8"));
  if (!Array.isArray(r)) throw new Error("bench/results.json must be an array");
  return r;
}

/** Canonical text of bench/results.json: sorted by id, keys in order id, value, unit, one entry per line. */
export function serializeResults(results) {
  const sorted = [...results].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const lines = sorted.map((r) => `  ${JSON.stringify({ id: r.id, value: r.value, unit: r.unit })}`);
  return lines.length === 0 ? "[]\n" : `[\n${lines.join(",\n")}\n]\n`;
}
