#!/usr/bin/env node
/**
 * `hmmkit` executable: loads the TypeScript CLI (packages/lab/src/cli.ts) through tsx's ESM loader,
 * so the workspace runs from source without a build step.
 */
import path from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { register } from "tsx/esm/api";

// The repository's tsconfig (experimentalDecorators for tsyringe), wherever the command runs from.
register({ tsconfig: path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../../tsconfig.json") });
const { main } = await import("../src/cli.ts");
process.exitCode = await main(process.argv.slice(2));
