#!/usr/bin/env node
/**
 * check-layers: enforce the package layering of shared/DESIGN.md on import statements.
 *
 * Every `.ts`/`.mts`/`.tsx` file under packages/<pkg>/{src,test,bench} and examples/ is parsed with
 * the TypeScript parser (so comments, strings and half-written files don't confuse it), and every
 * module reference is checked: `import`, `import type`, `export ... from`, `import x = require()`,
 * `require()`, dynamic `import()` and `import("...")` types.
 *
 * Rules (see RULES below):
 *   1. A workspace package may import only the @hmmkit packages its layer allows, and only through a
 *      subpath listed in that package's package.json `exports` (never `@hmmkit/core/src/...`).
 *      device-emu may import only `@hmmkit/core/sim` and `@hmmkit/core/phys`.
 *   2. It must also declare that package in its package.json dependencies.
 *   3. A relative import must not leave its own package (or examples/); only packages/<pkg>/bench
 *      may reach the repository's bench/ harness (bench/lib.ts).
 *   4. A package's src/ must not import itself by name (its test/ and bench/ may, through `exports`).
 *   5. Inside packages/core/src (library code; unit tests under __tests__ are exempt): sim imports
 *      only sim; phys imports only sim and phys; no layer directory imports the package barrel
 *      (src/index.ts) or the composition root (src/machine.ts).
 *
 * Usage: node scripts/check-layers.mjs [--self-test]. Prints `file:line:col message` per violation
 * and exits 1 if there is any.
 */
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import ts from "typescript";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

/**
 * Which @hmmkit packages each importer may use, and through which subpaths ("*" = any subpath
 * listed in the target's `exports`).
 */
const RULES = {
  "@hmmkit/core": {},
  "@hmmkit/device-emu": { "@hmmkit/core": ["./sim", "./phys"] },
  "@hmmkit/drivers": { "@hmmkit/core": "*", "@hmmkit/device-emu": "*" },
  "@hmmkit/lab": { "@hmmkit/core": "*", "@hmmkit/device-emu": "*", "@hmmkit/drivers": "*" },
  "@hmmkit/examples": { "@hmmkit/core": "*", "@hmmkit/device-emu": "*", "@hmmkit/drivers": "*", "@hmmkit/lab": "*" },
};

/**
 * Layers inside one package's src/: a file in directory `dir` may import (relatively) only from the
 * directories listed. Directories not listed here are unconstrained (apart from `forbidRoot`).
 */
const INTERNAL_LAYERS = {
  "@hmmkit/core": {
    allow: { sim: ["sim"], phys: ["sim", "phys"] },
    /** Files at src/ root that layer directories must never import (barrel, composition root). */
    forbidRoot: ["index", "machine"],
  },
};

const SOURCE_EXT = /\.(c|m)?tsx?$/;
const SKIP_DIRS = new Set(["node_modules", "dist", "out", ".git", "coverage"]);

function walk(dir, out) {
  if (!existsSync(dir)) return out;
  for (const ent of readdirSync(dir, { withFileTypes: true })) {
    if (ent.isDirectory()) {
      if (!SKIP_DIRS.has(ent.name)) walk(path.join(dir, ent.name), out);
    } else if (SOURCE_EXT.test(ent.name) && !ent.name.endsWith(".d.ts")) {
      out.push(path.join(dir, ent.name));
    }
  }
  return out;
}

/** Load every workspace unit (packages/* and examples/) with its name, dir, exports and deps. */
function loadUnits(root) {
  const units = [];
  const dirs = [];
  const pkgsDir = path.join(root, "packages");
  if (existsSync(pkgsDir)) {
    for (const d of readdirSync(pkgsDir).sort()) dirs.push(path.join(pkgsDir, d));
  }
  dirs.push(path.join(root, "examples"));
  for (const dir of dirs) {
    const pj = path.join(dir, "package.json");
    if (!existsSync(pj) || !statSync(dir).isDirectory()) continue;
    const meta = JSON.parse(readFileSync(pj, "utf8"));
    const exp = meta.exports;
    let subpaths;
    if (exp === undefined) subpaths = ["."];
    else if (typeof exp === "string") subpaths = ["."];
    else {
      const keys = Object.keys(exp);
      subpaths = keys.length > 0 && keys.every((k) => k.startsWith(".")) ? keys : ["."];
    }
    const deps = new Set([
      ...Object.keys(meta.dependencies ?? {}),
      ...Object.keys(meta.devDependencies ?? {}),
      ...Object.keys(meta.peerDependencies ?? {}),
    ]);
    units.push({ name: meta.name, dir, exports: subpaths, deps });
  }
  return units;
}

/** Every module reference in a source text: { spec, line, col, kind }. */
export function findImports(fileName, text) {
  const sf = ts.createSourceFile(fileName, text, ts.ScriptTarget.Latest, true, ts.ScriptKind.TSX);
  const refs = [];
  const add = (node, spec, kind) => {
    const { line, character } = sf.getLineAndCharacterOfPosition(node.getStart(sf));
    refs.push({ spec, line: line + 1, col: character + 1, kind });
  };
  const literal = (n) => (n && (ts.isStringLiteral(n) || ts.isNoSubstitutionTemplateLiteral(n)) ? n.text : undefined);
  const visit = (node) => {
    if (ts.isImportDeclaration(node)) {
      const s = literal(node.moduleSpecifier);
      const typeOnly = node.importClause?.isTypeOnly === true;
      if (s !== undefined) add(node, s, typeOnly ? "import type" : "import");
    } else if (ts.isExportDeclaration(node)) {
      const s = literal(node.moduleSpecifier);
      if (s !== undefined) add(node, s, node.isTypeOnly ? "export type" : "export from");
    } else if (ts.isImportEqualsDeclaration(node) && ts.isExternalModuleReference(node.moduleReference)) {
      const s = literal(node.moduleReference.expression);
      if (s !== undefined) add(node, s, "import =");
    } else if (ts.isCallExpression(node)) {
      const isDynamic = node.expression.kind === ts.SyntaxKind.ImportKeyword;
      const isRequire = ts.isIdentifier(node.expression) && node.expression.text === "require" && node.arguments.length === 1;
      if (isDynamic || isRequire) {
        const s = literal(node.arguments[0]);
        if (s !== undefined) add(node, s, isDynamic ? "import()" : "require()");
      }
    } else if (ts.isImportTypeNode(node)) {
      const arg = node.argument;
      if (ts.isLiteralTypeNode(arg)) {
        const s = literal(arg.literal);
        if (s !== undefined) add(node, s, "import() type");
      }
    }
    ts.forEachChild(node, visit);
  };
  visit(sf);
  return refs;
}

function isInside(child, parent) {
  const rel = path.relative(parent, child);
  return rel === "" || (!rel.startsWith("..") && !path.isAbsolute(rel));
}

/** Strip a TS/JS extension and a trailing /index, for comparing module identities. */
function moduleId(p) {
  return p.replace(/\.(c|m)?(t|j)sx?$/, "").replace(/[\\/]index$/, "");
}

/**
 * Check the references of one file. Returns violations { line, col, message }.
 * @param unit the workspace unit owning the file
 * @param units every workspace unit (to resolve @hmmkit/* and relative targets)
 * @param root repository root (bench modules may import the harness in <root>/bench)
 */
export function checkFile(file, refs, unit, units, root = ROOT) {
  const out = [];
  const byName = new Map(units.map((u) => [u.name, u]));
  const allowed = RULES[unit.name];
  const srcDir = path.join(unit.dir, "src");
  const internal = INTERNAL_LAYERS[unit.name];
  const fileLayer = isInside(file, srcDir) ? path.relative(srcDir, file).split(path.sep) : undefined;
  // Unit tests (src/**/__tests__) may assemble a machine from any layer; layering binds library code.
  const isUnitTest = fileLayer?.includes("__tests__") === true;
  const layerDir = fileLayer && fileLayer.length > 1 && !isUnitTest ? fileLayer[0] : undefined;

  for (const r of refs) {
    const v = (message) => out.push({ line: r.line, col: r.col, message: `${r.kind} "${r.spec}": ${message}` });
    if (r.spec.startsWith("@hmmkit/")) {
      const parts = r.spec.split("/");
      const target = `${parts[0]}/${parts[1]}`;
      const sub = parts.length > 2 ? `./${parts.slice(2).join("/")}` : ".";
      const tu = byName.get(target);
      if (!tu) {
        v(`unknown workspace package ${target}`);
        continue;
      }
      if (target === unit.name) {
        // test/ and bench/ may use their own package's public entry, as a user would; src/ may not.
        if (fileLayer !== undefined) v(`a package's src/ must not import itself by name; use a relative path`);
        else if (!tu.exports.includes(sub)) v(`deep import: ${target} exports only ${tu.exports.join(", ")}`);
        continue;
      }
      if (allowed === undefined) {
        v(`${unit.name} has no layering rule; add it to RULES in scripts/check-layers.mjs`);
        continue;
      }
      const subs = allowed[target];
      if (subs === undefined) {
        const ok = Object.keys(allowed);
        v(`${unit.name} must not depend on ${target} (allowed: ${ok.length ? ok.join(", ") : "no @hmmkit package"})`);
        continue;
      }
      if (!tu.exports.includes(sub)) {
        v(`deep import: ${target} exports only ${tu.exports.map((s) => (s === "." ? target : target + s.slice(1))).join(", ")}`);
        continue;
      }
      if (subs !== "*" && !subs.includes(sub)) {
        v(`${unit.name} may import ${target} only through ${subs.map((s) => (s === "." ? target : target + s.slice(1))).join(", ")}`);
        continue;
      }
      if (!unit.deps.has(target))
        v(`${target} is not declared in ${path.relative(ROOT, path.join(unit.dir, "package.json"))} dependencies`);
      continue;
    }
    if (r.spec.startsWith(".") || r.spec.startsWith("/")) {
      const resolved = path.resolve(path.dirname(file), r.spec);
      const isBench = isInside(file, path.join(unit.dir, "bench"));
      if (isBench && isInside(resolved, path.join(root, "bench"))) continue; // the bench harness
      if (!isInside(resolved, unit.dir)) {
        const other = units.find((u) => isInside(resolved, u.dir));
        v(
          other
            ? `relative import into ${other.name}; import it by package name through its exports`
            : `relative import leaves ${unit.name} (${path.relative(ROOT, resolved) || "."})`,
        );
        continue;
      }
      if (internal && layerDir !== undefined && isInside(resolved, srcDir)) {
        const tparts = path.relative(srcDir, resolved).split(path.sep);
        if (tparts.length === 1) {
          const id = moduleId(tparts[0]);
          if (id === "" || internal.forbidRoot.includes(id)) {
            v(`src/${layerDir}/ must not import src/${id || "index"}.ts (barrel or composition root: import cycle)`);
          }
          continue;
        }
        const targetDir = tparts[0];
        const allowDirs = internal.allow[layerDir];
        if (allowDirs && !allowDirs.includes(targetDir)) {
          v(`layer src/${layerDir} may import only ${allowDirs.map((d) => `src/${d}`).join(", ")} (not src/${targetDir})`);
        }
      }
    }
  }
  return out;
}

function sourceFilesOf(unit) {
  if (unit.name === "@hmmkit/examples") return walk(unit.dir, []);
  const files = [];
  for (const d of ["src", "test", "bench"]) walk(path.join(unit.dir, d), files);
  return files;
}

function main() {
  const units = loadUnits(ROOT);
  let nFiles = 0;
  let nRefs = 0;
  const violations = [];
  for (const unit of units) {
    for (const file of sourceFilesOf(unit).sort()) {
      nFiles++;
      const refs = findImports(file, readFileSync(file, "utf8"));
      nRefs += refs.length;
      for (const x of checkFile(file, refs, unit, units)) violations.push(`${path.relative(ROOT, file)}:${x.line}:${x.col} ${x.message}`);
    }
  }
  for (const line of violations) console.error(line);
  if (violations.length > 0) {
    console.error(`check-layers: ${violations.length} violation(s) in ${nFiles} files (layering: shared/DESIGN.md)`);
    process.exit(1);
  }
  console.log(`check-layers: ${nFiles} files, ${nRefs} imports, no violations`);
}

/** Fixture-based test of the rules, independent of the repository's current sources. */
function selfTest() {
  const root = "/fx";
  const mk = (name, dir, exports, deps = []) => ({ name, dir: `${root}/${dir}`, exports, deps: new Set(deps) });
  const units = [
    mk("@hmmkit/core", "packages/core", [".", "./sim", "./phys"]),
    mk("@hmmkit/device-emu", "packages/device-emu", ["."], ["@hmmkit/core"]),
    mk("@hmmkit/drivers", "packages/drivers", ["."], ["@hmmkit/core", "@hmmkit/device-emu"]),
    mk("@hmmkit/lab", "packages/lab", ["."], ["@hmmkit/core", "@hmmkit/device-emu", "@hmmkit/drivers"]),
    mk("@hmmkit/examples", "examples", ["."], ["@hmmkit/core", "@hmmkit/device-emu", "@hmmkit/drivers", "@hmmkit/lab"]),
  ];
  const u = Object.fromEntries(units.map((x) => [x.name.split("/")[1], x]));
  const cases = [
    // [unit, file relative to unit dir, source, expected violation count]
    [u.core, "src/sim/clock.ts", `import { x } from "./errors";\nimport EventEmitter from "eventemitter3";`, 0],
    [u.core, "src/sim/clock.ts", `import type { PageState } from "../phys/page-state";`, 1],
    [u.core, "src/sim/clock.ts", `export { Mm } from "../mm/mm";`, 1],
    [u.core, "src/sim/clock.ts", `const m = await import("../mm/mm");`, 1],
    [u.core, "src/sim/clock.ts", `let t: import("../mm/mm").Mm;`, 1],
    [u.core, "src/sim/clock.ts", `// import { Mm } from "../mm/mm";\nconst s = "import '../mm/mm'";`, 0],
    [u.core, "src/phys/contents.ts", `import { BugError } from "../sim/errors";\nimport { PG } from "./page-state";`, 0],
    [u.core, "src/phys/contents.ts", `import { Vma } from "../mm/vma";`, 1],
    [u.core, "src/phys/contents.ts", `import { Machine } from "../machine";`, 1],
    [u.core, "src/mm/fault.ts", `import { PG } from "../phys/page-state";\nimport { DevPagemap } from "../memremap/memremap";`, 0],
    [u.core, "src/mm/fault.ts", `import { PG } from "..";`, 1],
    [u.core, "src/machine.ts", `import { MmCore } from "./mm/mm-core";`, 0],
    [u.core, "src/sim/__tests__/determinism.test.ts", `import { Machine } from "../../machine";\nimport { Mm } from "../../mm/mm";`, 0],
    [u.core, "src/sim/__tests__/determinism.test.ts", `import { GpuDevice } from "@hmmkit/device-emu";`, 1],
    [u.core, "src/sim/rng.ts", `import { Machine } from "@hmmkit/core";`, 1],
    [u.core, "test/fork.test.ts", `import { Machine } from "@hmmkit/core";\nimport { x } from "../src/mm/fork";`, 0],
    [u.core, "bench/fault.bench.ts", `import { x } from "@hmmkit/core/src/mm/fault";`, 1],
    [u.core, "bench/fault.bench.ts", `import { runFresh } from "../../../bench/lib";`, 0],
    [u.core, "src/mm/fault.ts", `import { runFresh } from "../../../../bench/lib";`, 1],
    [u.core, "src/index.ts", `import { x } from "@hmmkit/device-emu";`, 1],
    [u.core, "src/index.ts", `import { x } from "../../device-emu/src/gpu";`, 1],
    [u["device-emu"], "src/gpu.ts", `import { SimClock } from "@hmmkit/core/sim";\nimport type { PageState } from "@hmmkit/core/phys";`, 0],
    [u["device-emu"], "src/gpu.ts", `import { Machine } from "@hmmkit/core";`, 1],
    [u["device-emu"], "src/gpu.ts", `import { Mm } from "@hmmkit/core/src/mm/mm";`, 1],
    [u["device-emu"], "src/gpu.ts", `import { Mm } from "@hmmkit/core/mm";`, 1],
    [u["device-emu"], "src/gpu.ts", `import { Mm } from "../../core/src/mm/mm";`, 1],
    [u["device-emu"], "src/gpu.ts", `import { X } from "@hmmkit/drivers";`, 1],
    [
      u.drivers,
      "src/dmirror/dmirror.ts",
      `import { Machine } from "@hmmkit/core";\nimport { SimClock } from "@hmmkit/core/sim";\nimport { GpuDevice } from "@hmmkit/device-emu";`,
      0,
    ],
    [u.drivers, "src/dmirror/dmirror.ts", `import { Lab } from "@hmmkit/lab";`, 1],
    [u.drivers, "src/dmirror/dmirror.ts", `export * from "@hmmkit/core/src/index";`, 1],
    [u.lab, "src/runner.ts", `import { Machine } from "@hmmkit/core";\nimport { Dmirror } from "@hmmkit/drivers";`, 0],
    [u.lab, "src/runner.ts", `import { Lab } from "@hmmkit/lab";`, 1],
    [u.lab, "src/runner.ts", `import { Nope } from "@hmmkit/nope";`, 1],
    [{ ...u.lab, deps: new Set() }, "src/runner.ts", `import { Machine } from "@hmmkit/core";`, 1],
    [u.examples, "tour.ts", `import { Machine } from "@hmmkit/core";\nimport { Lab } from "@hmmkit/lab";`, 0],
    [u.examples, "tour.ts", `import { Machine } from "../packages/core/src/machine";`, 1],
    [u.examples, "tour.ts", `const fs = require("node:fs");\nconst c = require("../packages/core/src");`, 1],
  ];
  let failed = 0;
  for (const [unit, rel, src, expected] of cases) {
    const file = `${unit.dir}/${rel}`;
    const got = checkFile(file, findImports(file, src), unit, units, root);
    if (got.length !== expected) {
      failed++;
      console.error(`FAIL ${unit.name} ${rel}: expected ${expected}, got ${got.length}\n  ${src.replace(/\n/g, "\n  ")}`);
      for (const g of got) console.error(`  -> ${g.line}:${g.col} ${g.message}`);
    }
  }
  if (failed > 0) {
    console.error(`check-layers self-test: ${failed}/${cases.length} failed`);
    process.exit(1);
  }
  console.log(`check-layers self-test: ${cases.length} cases passed`);
}

if (process.argv.includes("--self-test")) selfTest();
else main();
