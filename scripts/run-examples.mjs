#!/usr/bin/env node
/**
 * `pnpm examples`: run every example (each .ts file under examples/ except tests, declarations and helpers
 * under examples/lib/) in its own child process with tsx, one after another, and fail if any exits
 * non-zero or runs longer than the timeout.
 *
 * Usage: node scripts/run-examples.mjs [filter...] [--timeout=SECONDS]   (default timeout 300 s)
 */
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import path from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const EXAMPLES = path.join(ROOT, "examples");
const SKIP_DIRS = new Set(["node_modules", "lib", "fixtures", "__tests__", "out", "dist"]);

function find(dir, out) {
  if (!existsSync(dir)) return out;
  for (const ent of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, ent.name);
    if (ent.isDirectory()) {
      if (!SKIP_DIRS.has(ent.name)) find(p, out);
    } else if (/\.m?ts$/.test(ent.name) && !/\.(test|spec|d)\.m?ts$/.test(ent.name)) {
      out.push(p);
    }
  }
  return out;
}

const args = process.argv.slice(2);
const timeoutArg = args.find((a) => a.startsWith("--timeout="));
const timeoutMs = (timeoutArg ? Number(timeoutArg.slice("--timeout=".length)) : 300) * 1000;
const filters = args.filter((a) => !a.startsWith("--"));
const files = find(EXAMPLES, [])
  .map((f) => path.relative(ROOT, f))
  .filter((f) => filters.length === 0 || filters.some((s) => f.includes(s)))
  .sort();

if (files.length === 0) {
  console.log(
    filters.length ? `examples: none matches ${filters.join(", ")}` : "examples: no examples yet (examples/*.ts); nothing to run",
  );
  process.exit(filters.length ? 1 : 0);
}

const tsx = path.join(ROOT, "node_modules", "tsx", "dist", "cli.mjs");
const failed = [];
for (const f of files) {
  console.log(`\n── example: ${f}`);
  const t0 = Date.now();
  const r = spawnSync(process.execPath, [tsx, f], { cwd: ROOT, stdio: "inherit", timeout: timeoutMs });
  const secs = ((Date.now() - t0) / 1000).toFixed(1);
  if (r.error || r.status !== 0) {
    const why = r.error ? r.error.message : r.signal ? `signal ${r.signal}` : `exit code ${r.status}`;
    console.error(`── FAILED ${f} (${why}, ${secs} s)`);
    failed.push(f);
  } else {
    console.log(`── ok ${f} (${secs} s)`);
  }
}
console.log(`\nexamples: ${files.length - failed.length}/${files.length} passed`);
if (failed.length > 0) {
  console.error(`examples failed: ${failed.join(", ")}`);
  process.exit(1);
}
