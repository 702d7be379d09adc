/**
 * Field validators for JSON input (scenario files): each names the full field path in its error,
 * e.g. `scenario.workload.workingSetMiB`, as the kernel's `sysfs` store handlers reject a bad value
 * with -EINVAL and leave the old one in place.
 *
 * Every helper returns the validated value or throws {@link HmmError} EINVAL whose `arg` is the
 * path; nothing is half-applied because the callers build a fresh resolved object.
 *
 * @see include/uapi/asm-generic/errno-base.h (EINVAL)
 */
import { einval } from "@hmmkit/core";

/** A plain JSON object. */
export type JsonObject = Record<string, unknown>;

/**
 * Whether a value is a plain (non-array, non-null) object.
 * @param v - any value.
 * @returns true for `{...}`.
 */
export function isObject(v: unknown): v is JsonObject {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

/**
 * Require an object and reject unknown keys.
 * @param v - the value.
 * @param path - its field path.
 * @param allowed - known keys.
 * @returns the object.
 * @throws HmmError EINVAL naming `path` (not an object) or `path.key` (unknown key).
 */
export function objectAt(v: unknown, path: string, allowed: readonly string[]): JsonObject {
  if (!isObject(v)) einval(path, `an object, got ${describe(v)}`);
  for (const k of Object.keys(v)) if (!allowed.includes(k)) einval(`${path}.${k}`, `a known field (${allowed.join(", ")})`);
  return v;
}

/**
 * An optional integer in a range.
 * @param v - the value (undefined → `dflt`).
 * @param path - field path.
 * @param min - smallest allowed.
 * @param max - largest allowed.
 * @param dflt - default when absent.
 * @returns the integer.
 * @throws HmmError EINVAL naming `path`.
 */
export function intAt(v: unknown, path: string, min: number, max: number, dflt?: number): number {
  if (v === undefined) {
    if (dflt === undefined) einval(path, `an integer in ${min}..${max} (required)`);
    return dflt;
  }
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) einval(path, `an integer in ${min}..${max}, got ${describe(v)}`);
  return v;
}

/**
 * An optional finite number in a range.
 * @param v - the value (undefined → `dflt`).
 * @param path - field path.
 * @param min - smallest allowed.
 * @param max - largest allowed.
 * @param dflt - default when absent.
 * @returns the number.
 * @throws HmmError EINVAL naming `path`.
 */
export function numAt(v: unknown, path: string, min: number, max: number, dflt?: number): number {
  if (v === undefined) {
    if (dflt === undefined) einval(path, `a number in ${min}..${max} (required)`);
    return dflt;
  }
  if (typeof v !== "number" || !Number.isFinite(v) || v < min || v > max) einval(path, `a number in ${min}..${max}, got ${describe(v)}`);
  return v;
}

/**
 * An optional boolean.
 * @param v - the value.
 * @param path - field path.
 * @param dflt - default.
 * @returns the boolean.
 * @throws HmmError EINVAL naming `path`.
 */
export function boolAt(v: unknown, path: string, dflt: boolean): boolean {
  if (v === undefined) return dflt;
  if (typeof v !== "boolean") einval(path, `a boolean, got ${describe(v)}`);
  return v;
}

/**
 * An optional non-empty string.
 * @param v - the value.
 * @param path - field path.
 * @param dflt - default (undefined: required).
 * @returns the string.
 * @throws HmmError EINVAL naming `path`.
 */
export function strAt(v: unknown, path: string, dflt?: string): string {
  if (v === undefined) {
    if (dflt === undefined) einval(path, "a non-empty string (required)");
    return dflt;
  }
  if (typeof v !== "string" || v.length === 0) einval(path, `a non-empty string, got ${describe(v)}`);
  return v;
}

/**
 * An optional string among fixed choices.
 * @param v - the value.
 * @param path - field path.
 * @param allowed - the choices.
 * @param dflt - default (undefined: required).
 * @returns the choice.
 * @throws HmmError EINVAL naming `path` and listing the choices.
 */
export function oneOfAt<T extends string>(v: unknown, path: string, allowed: readonly T[], dflt?: T): T {
  if (v === undefined) {
    if (dflt === undefined) einval(path, `one of ${allowed.map((a) => `"${a}"`).join(", ")} (required)`);
    return dflt;
  }
  if (typeof v !== "string" || !(allowed as readonly string[]).includes(v)) {
    einval(path, `one of ${allowed.map((a) => `"${a}"`).join(", ")}, got ${describe(v)}`);
  }
  return v as T;
}

/**
 * A short description of a value for error messages (`"abc"`, `12`, `an array`, `null`).
 * @param v - any value.
 * @returns the description.
 */
export function describe(v: unknown): string {
  if (v === undefined) return "nothing";
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  if (typeof v === "string") return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v);
  if (typeof v === "object") return "an object";
  return String(v);
}
