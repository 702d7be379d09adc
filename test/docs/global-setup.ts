/**
 * Global setup of the docs tests: make sure the API site exists. Reuses docs/api when it was built
 * (CI's docs step runs `pnpm run docs` just before), builds it otherwise (about a minute), and
 * always rebuilds when HMMKIT_DOCS_REBUILD=1.
 */
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

export default function setup(): void {
  const built =
    existsSync(path.join(ROOT, "docs/api/index.html")) &&
    existsSync(path.join(ROOT, "docs/api/documents/Kernel_symbol_index.html")) &&
    existsSync(path.join(ROOT, "docs/generated/kernel-symbols.json"));
  if (built && process.env.HMMKIT_DOCS_REBUILD !== "1") return;
  console.log("docs tests: building the site (node scripts/docs-symbols.mjs && typedoc)");
  for (const [cmd, args] of [
    [process.execPath, [path.join(ROOT, "scripts/docs-symbols.mjs")]],
    [process.execPath, [path.join(ROOT, "node_modules/typedoc/bin/typedoc")]],
  ] as const) {
    const r = spawnSync(cmd, args, { cwd: ROOT, stdio: "inherit" });
    if (r.status !== 0) throw new Error(`docs tests: ${path.basename(args[0])} failed (exit ${r.status})`);
  }
}
