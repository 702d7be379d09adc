/**
 * SVG charts written by hand (no charting dependency): a line chart of series over an x axis and a
 * grouped bar chart. Output is a standalone `<svg>` element with `viewBox`, inline styles, a title,
 * axes with "nice" ticks (1-2-5 steps), and a legend; every text is XML-escaped. Coordinates are
 * rounded to 0.1 px so the same data give the same bytes.
 *
 * @see W3C SVG 1.1 (path, text, g elements); Heckbert, "Nice numbers for graph labels" (Graphics Gems, 1990)
 */

/** One line of a line chart. */
export interface LineSeries {
  /** Legend name (also `data-series` attribute of its path). */
  readonly name: string;
  /** X values (ascending). */
  readonly x: readonly number[];
  /** Y values (same length). */
  readonly y: readonly number[];
}

/** A line chart. */
export interface LineChart {
  /** Title above the plot. */
  readonly title: string;
  /** X-axis label. */
  readonly xLabel: string;
  /** Y-axis label. */
  readonly yLabel: string;
  /** The lines. */
  readonly series: readonly LineSeries[];
  /** Width in px. Default 720. */
  readonly width?: number;
  /** Height in px. Default 360. */
  readonly height?: number;
  /** Tick label formatter for y. Default {@link compactNumber}. */
  readonly yFormat?: (v: number) => string;
  /** Start the x axis at the data's minimum instead of 0. Default false. */
  readonly xFromData?: boolean;
  /** Draw a dot at every point. Default false. */
  readonly markers?: boolean;
}

/** One series of a bar chart. */
export interface BarSeries {
  /** Legend name (also `data-series` attribute of its bars). */
  readonly name: string;
  /** One value per category. */
  readonly values: readonly number[];
}

/** A grouped bar chart: one group per category, one bar per series. */
export interface BarChart {
  /** Title. */
  readonly title: string;
  /** Y-axis label. */
  readonly yLabel: string;
  /** Category names (x axis). */
  readonly categories: readonly string[];
  /** Series: name and one value per category. */
  readonly series: readonly BarSeries[];
  /** Width in px. Default 720. */
  readonly width?: number;
  /** Height in px. Default 360. */
  readonly height?: number;
  /** Tick label formatter. Default {@link compactNumber}. */
  readonly yFormat?: (v: number) => string;
}

/** Line and bar colours (Okabe–Ito colour-blind-safe palette). */
export const PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"] as const;

/**
 * Escape text for XML content and attributes.
 * @param s - text.
 * @returns escaped text.
 */
export function escapeXml(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;").replace(/'/g, "&#39;");
}

/**
 * A number in compact form for tick labels (`0`, `250`, `1.5k`, `12M`, `3G`).
 * @param v - value.
 * @returns the text.
 */
export function compactNumber(v: number): string {
  const a = Math.abs(v);
  const f = (x: number, s: string) => `${Number.parseFloat(x.toPrecision(3))}${s}`;
  if (a >= 1e9) return f(v / 1e9, "G");
  if (a >= 1e6) return f(v / 1e6, "M");
  if (a >= 1e3) return f(v / 1e3, "k");
  return `${Number.parseFloat(v.toPrecision(3))}`;
}

/**
 * "Nice" axis ticks covering [lo, hi] with about `n` steps of 1, 2 or 5 × 10^k.
 * @param lo - data minimum. @param hi - data maximum. @param n - desired tick count.
 * @returns ascending tick values, the first ≤ lo and the last ≥ hi.
 */
export function niceTicks(lo: number, hi: number, n = 5): number[] {
  if (!(hi > lo)) hi = lo + 1;
  const raw = (hi - lo) / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / mag;
  const step = (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 5 ? 5 : 10) * mag;
  const start = Math.floor(lo / step) * step;
  const out: number[] = [];
  for (let v = start; v < hi + step * 0.5; v += step) out.push(Number.parseFloat(v.toPrecision(12)));
  if ((out[out.length - 1] as number) < hi) out.push(Number.parseFloat((start + out.length * step).toPrecision(12)));
  return out;
}

const r1 = (x: number): string => (Math.round(x * 10) / 10).toString();

interface Frame {
  w: number;
  h: number;
  left: number;
  right: number;
  top: number;
  bottom: number;
}

function frameOf(width: number, height: number, legendRows: number, labelDrop = 0): Frame {
  return { w: width, h: height + 18 * legendRows + labelDrop, left: 64, right: 16, top: 36, bottom: 44 + 18 * legendRows + labelDrop };
}

/** Legend column width: the longest name at ~6.5 px per character plus the swatch. */
function legendColumn(names: readonly string[]): number {
  return Math.max(90, Math.ceil(Math.max(0, ...names.map((n) => n.length)) * 6.5) + 28);
}

function legendRows(width: number, names: readonly string[]): number {
  const perRow = Math.max(1, Math.floor((width - 80) / legendColumn(names)));
  return names.length === 0 ? 0 : Math.ceil(names.length / perRow);
}

function open(f: Frame, title: string, kind: string): string {
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${f.w} ${f.h}" width="${f.w}" height="${f.h}" role="img" aria-label="${escapeXml(title)}" data-chart="${kind}" font-family="system-ui, sans-serif" font-size="11">` +
    `<title>${escapeXml(title)}</title>` +
    `<rect x="0" y="0" width="${f.w}" height="${f.h}" fill="#ffffff"/>` +
    `<text x="${r1(f.w / 2)}" y="20" text-anchor="middle" font-size="14" font-weight="600">${escapeXml(title)}</text>`
  );
}

function yAxis(f: Frame, ticks: number[], y: (v: number) => number, fmt: (v: number) => string, label: string): string {
  let s = "";
  for (const t of ticks) {
    const yy = r1(y(t));
    s += `<line x1="${f.left}" x2="${f.w - f.right}" y1="${yy}" y2="${yy}" stroke="#e5e5e5"/>`;
    s += `<text x="${f.left - 6}" y="${yy}" text-anchor="end" dominant-baseline="middle" fill="#444">${escapeXml(fmt(t))}</text>`;
  }
  const midY = r1(f.top + (f.h - f.top - f.bottom) / 2);
  s += `<text x="14" y="${midY}" text-anchor="middle" transform="rotate(-90 14 ${midY})" fill="#222">${escapeXml(label)}</text>`;
  s += `<line x1="${f.left}" x2="${f.left}" y1="${f.top}" y2="${f.h - f.bottom}" stroke="#444"/>`;
  s += `<line x1="${f.left}" x2="${f.w - f.right}" y1="${f.h - f.bottom}" y2="${f.h - f.bottom}" stroke="#444"/>`;
  return s;
}

function legend(f: Frame, names: readonly string[], top: number): string {
  let s = `<g class="legend">`;
  const col = legendColumn(names);
  const perRow = Math.max(1, Math.floor((f.w - 80) / col));
  names.forEach((n, i) => {
    const x = f.left + (i % perRow) * col;
    const y = top + 12 + Math.floor(i / perRow) * 18;
    const c = PALETTE[i % PALETTE.length] as string;
    s += `<rect x="${x}" y="${y - 8}" width="12" height="10" fill="${c}"/><text x="${x + 16}" y="${y}" fill="#222">${escapeXml(n)}</text>`;
  });
  return `${s}</g>`;
}

/**
 * Render a line chart.
 * @param c - the chart.
 * @returns an `<svg>` element as text; each line is a `<path data-series="name">`.
 */
export function lineChartSvg(c: LineChart): string {
  const names = c.series.map((x) => x.name);
  const f = frameOf(c.width ?? 720, c.height ?? 360, legendRows(c.width ?? 720, names));
  const fmt = c.yFormat ?? compactNumber;
  let xmax = 0;
  let xmin = Number.POSITIVE_INFINITY;
  let ymax = 0;
  for (const s of c.series) {
    for (const x of s.x) {
      xmax = Math.max(xmax, x);
      xmin = Math.min(xmin, x);
    }
    for (const y of s.y) ymax = Math.max(ymax, y);
  }
  const lo = c.xFromData === true && Number.isFinite(xmin) && xmin < xmax ? xmin : 0;
  const xt = niceTicks(lo, xmax > lo ? xmax : lo + 1, 6);
  const yt = niceTicks(0, ymax > 0 ? ymax : 1, 5);
  const x0 = xt[0] as number;
  const x1 = xt[xt.length - 1] as number;
  const y1 = yt[yt.length - 1] as number;
  const pw = f.w - f.left - f.right;
  const ph = f.h - f.top - f.bottom;
  const X = (v: number) => f.left + ((v - x0) / (x1 - x0)) * pw;
  const Y = (v: number) => f.top + ph - (v / y1) * ph;
  let s = open(f, c.title, "line") + yAxis(f, yt, Y, fmt, c.yLabel);
  for (const t of xt) {
    s += `<text x="${r1(X(t))}" y="${f.h - f.bottom + 14}" text-anchor="middle" fill="#444">${escapeXml(compactNumber(t))}</text>`;
  }
  s += `<text x="${r1(f.left + pw / 2)}" y="${f.h - f.bottom + 30}" text-anchor="middle" fill="#222">${escapeXml(c.xLabel)}</text>`;
  c.series.forEach((ser, i) => {
    const col = PALETTE[i % PALETTE.length] as string;
    let d = "";
    const n = Math.min(ser.x.length, ser.y.length);
    for (let k = 0; k < n; k++) d += `${k === 0 ? "M" : "L"}${r1(X(ser.x[k] as number))},${r1(Y(ser.y[k] as number))}`;
    if (d === "") d = `M${f.left},${r1(Y(0))}`;
    s += `<path data-series="${escapeXml(ser.name)}" d="${d}" fill="none" stroke="${col}" stroke-width="2" stroke-linejoin="round"/>`;
    if (c.markers === true) {
      for (let k = 0; k < n; k++) s += `<circle cx="${r1(X(ser.x[k] as number))}" cy="${r1(Y(ser.y[k] as number))}" r="3" fill="${col}"/>`;
    }
  });
  return `${s + legend(f, names, f.h - f.bottom + 40)}</svg>`;
}

/**
 * Render a grouped bar chart.
 * @param c - the chart.
 * @returns an `<svg>` element as text; each bar is a `<rect data-series="name" data-category="cat">`.
 */
export function barChartSvg(c: BarChart): string {
  const names = c.series.map((x) => x.name);
  const w = c.width ?? 720;
  const slot = (w - 80) / Math.max(1, c.categories.length);
  const longest = Math.max(0, ...c.categories.map((x) => x.length));
  // Category labels that do not fit their slot are rotated; the plot gets the room they need.
  const rotate = longest * 6.5 > slot;
  const drop = rotate ? Math.ceil(Math.min(longest * 6.5, 220) * 0.5) : 0;
  const f = frameOf(w, c.height ?? 360, c.series.length > 1 ? legendRows(w, names) : 0, drop);
  const fmt = c.yFormat ?? compactNumber;
  let ymax = 0;
  for (const s of c.series) for (const v of s.values) ymax = Math.max(ymax, v);
  const yt = niceTicks(0, ymax > 0 ? ymax : 1, 5);
  const y1 = yt[yt.length - 1] as number;
  const pw = f.w - f.left - f.right;
  const ph = f.h - f.top - f.bottom;
  const Y = (v: number) => f.top + ph - (v / y1) * ph;
  let s = open(f, c.title, "bar") + yAxis(f, yt, Y, fmt, c.yLabel);
  const nc = Math.max(1, c.categories.length);
  const gw = pw / nc;
  const ns = Math.max(1, c.series.length);
  const bw = (gw * 0.8) / ns;
  c.categories.forEach((cat, ci) => {
    const gx = f.left + ci * gw + gw * 0.1;
    c.series.forEach((ser, si) => {
      const v = ser.values[ci] ?? 0;
      const col = PALETTE[si % PALETTE.length] as string;
      const y = Y(v);
      s += `<rect data-series="${escapeXml(ser.name)}" data-category="${escapeXml(cat)}" x="${r1(gx + si * bw)}" y="${r1(y)}" width="${r1(Math.max(1, bw - 2))}" height="${r1(f.top + ph - y)}" fill="${col}"><title>${escapeXml(`${ser.name} · ${cat}: ${fmt(v)}`)}</title></rect>`;
    });
    const cx = r1(f.left + ci * gw + gw / 2);
    const cy = f.top + ph + 14;
    s += rotate
      ? `<text x="${cx}" y="${cy}" text-anchor="end" transform="rotate(-30 ${cx} ${cy})" fill="#444">${escapeXml(cat)}</text>`
      : `<text x="${cx}" y="${cy}" text-anchor="middle" fill="#444">${escapeXml(cat)}</text>`;
  });
  return `${s + (c.series.length > 1 ? legend(f, names, f.top + ph + 24 + drop) : "")}</svg>`;
}
