/**
 * Child of `bench/run.ts`: run one bench module in this process, which {@link runFresh} started
 * for it alone, and print its results for the parent.
 *
 * Usage (by the runner only): `node --expose-gc --import tsx bench/module-child.ts <module>`, the
 * module path relative to the repository root. Validation of the results is the parent's.
 */
import path from "node:path";
import process from "node:process";
import { pathToFileURL } from "node:url";
import { emitResults, REPO_ROOT } from "./lib";

const mod = process.argv[2];
if (mod === undefined) throw new Error("module-child: no module given");
const m = (await import(pathToFileURL(path.join(REPO_ROOT, mod)).href)) as { run?: unknown };
if (typeof m.run !== "function") throw new Error(`${mod} does not export run()`);
const out = (await (m.run as () => Promise<unknown>)()) as unknown;
if (!Array.isArray(out)) throw new Error(`${mod}: run() must resolve to an array`);
emitResults(out);
