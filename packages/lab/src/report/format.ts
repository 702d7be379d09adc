/**
 * Number formatting shared by the terminal table and the HTML report (fixed rules, no locale, so
 * output is the same on every machine).
 */

/**
 * An integer with comma grouping (`1,234,567`).
 * @param n - the number (rounded).
 * @returns the text.
 */
export function fmtInt(n: number): string {
  const s = Math.round(n).toString();
  const neg = s.startsWith("-");
  const d = neg ? s.slice(1) : s;
  let out = "";
  for (let i = 0; i < d.length; i++) {
    if (i > 0 && (d.length - i) % 3 === 0) out += ",";
    out += d[i];
  }
  return neg ? `-${out}` : out;
}

/**
 * Nanoseconds as a human time (`812 ns`, `45.2 µs`, `12.34 ms`, `1.203 s`).
 * @param ns - nanoseconds.
 * @returns the text.
 */
export function fmtNs(ns: number): string {
  if (ns < 1e3) return `${Math.round(ns)} ns`;
  if (ns < 1e6) return `${(ns / 1e3).toFixed(1)} µs`;
  if (ns < 1e9) return `${(ns / 1e6).toFixed(2)} ms`;
  return `${(ns / 1e9).toFixed(3)} s`;
}

/**
 * Bytes in binary units (`512 B`, `4.0 KiB`, `12.50 MiB`, `1.25 GiB`).
 * @param b - bytes.
 * @returns the text.
 */
export function fmtBytes(b: number): string {
  if (b < 1024) return `${Math.round(b)} B`;
  if (b < 1024 ** 2) return `${(b / 1024).toFixed(1)} KiB`;
  if (b < 1024 ** 3) return `${(b / 1024 ** 2).toFixed(2)} MiB`;
  return `${(b / 1024 ** 3).toFixed(2)} GiB`;
}

/**
 * A ratio as a percentage (`37.5 %`).
 * @param r - 0..1.
 * @returns the text.
 */
export function fmtPct(r: number): string {
  return `${(r * 100).toFixed(1)} %`;
}
