/**
 * JSON output of runs and comparisons: plain data, keys in construction order, two-space
 * indentation, a trailing newline. Every value comes from virtual time and the seeded PRNG, so the
 * same scenario and seed give the same bytes (a test holds the lab to it).
 *
 * @see DESIGN.md "Determinism"
 */
import type { ComparisonResult, RunResult } from "../runner";

/**
 * Serialise a run or a comparison.
 * @param result - the result.
 * @returns JSON text ending in a newline.
 * @throws HmmError never; a non-finite number (a bug) would serialise as `null`, which the
 *   determinism test would catch.
 */
export function toJson(result: RunResult | ComparisonResult | object): string {
  return `${JSON.stringify(result, null, 2)}\n`;
}
