/**
 * Writing report files: `<dir>/<name>.json` and `<dir>/<name>.html`, with a `.gitignore` of `*` in a
 * directory the lab creates, so generated reports never show up as sources in a repository.
 */
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import type { ComparisonResult, RunResult } from "../runner";
import { htmlReport } from "./html";
import { toJson } from "./json";

/** Contents of the `.gitignore` written into report directories. */
export const REPORT_GITIGNORE = "# written by hmmkit: reports are not sources\n*\n";

/** Paths of the files {@link writeReport} wrote. */
export interface ReportFiles {
  /** The JSON result. */
  readonly json: string;
  /** The HTML report. */
  readonly html: string;
}

/**
 * Write a result's JSON and HTML reports.
 * @param dir - directory (created if needed, with a `.gitignore` of `*` when it has none).
 * @param name - base file name (without extension).
 * @param result - a run or a comparison.
 * @returns the paths written: `{ json, html }`.
 * Context: synchronous file I/O.
 */
export function writeReport(dir: string, name: string, result: RunResult | ComparisonResult): ReportFiles {
  mkdirSync(dir, { recursive: true });
  const gi = path.join(dir, ".gitignore");
  if (!existsSync(gi)) writeFileSync(gi, REPORT_GITIGNORE);
  const json = path.join(dir, `${name}.json`);
  const html = path.join(dir, `${name}.html`);
  writeFileSync(json, toJson(result));
  writeFileSync(html, htmlReport(result));
  return { json, html };
}
