/** A target from bench/targets.json. */
export interface BenchTarget {
  op: ">=" | "<=" | "report";
  value?: number;
  unit: string;
}
/** One stored result. */
export interface StoredResult {
  id: string;
  value: number;
  unit: string;
}
export const ID_PATTERN: RegExp;
export function roundValue(v: number): number;
export function formatValue(v: number): string;
export function formatTarget(t: BenchTarget | undefined): string;
export function meetsTarget(t: BenchTarget | undefined, value: number): boolean | undefined;
export function loadTargets(root: string): Record<string, BenchTarget>;
export function loadResults(root: string): StoredResult[];
export function serializeResults(results: readonly StoredResult[]): string;
