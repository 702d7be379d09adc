/**
 * Import of valgrind Lackey memory traces (`valgrind --tool=lackey --trace-mem=yes prog`).
 *
 * Format (lackey/lk_main.c, printf formats):
 * ```
 * "I  %08lx,%lu\n"   instruction fetch (capital I, two spaces)
 * " L %08lx,%lu\n"   data load         (one leading space)
 * " S %08lx,%lu\n"   data store
 * " M %08lx,%lu\n"   data modify (load + store of the same address)
 * ```
 * The address is hexadecimal without `0x`, zero-padded to at least 8 digits; the size is decimal
 * bytes. Valgrind's own messages (`==1234== ...`) share the log and are skipped, as are empty
 * lines. Anything else is malformed: {@link parseLackey} throws HmmError EINVAL naming the line
 * number and what was expected (or, with `lenient`, counts and skips it).
 *
 * Theory of operation. One pass over the bytes (no string splitting, no regular expression, no
 * object per record) fills growable typed arrays: address (Float64Array), size (Uint32Array) and
 * op (Uint8Array, {@link LACKEY_OP}). Addresses are parsed exactly in two 32-bit halves; the rare
 * address at or above 2^53 (the x86-64 vsyscall page, `ffffffffff600000`) is folded to
 * `(hi mod 2^21)·2^32 + lo`, which stays exact and far above any user address (< 2^47).
 *
 * @see valgrind lackey/lk_main.c (trace_instr, trace_load, trace_store, trace_modify);
 *      reference/uvm-policies.md §4.1
 */
import { HmmError } from "@hmmkit/core";

/** Record kinds, in the order of {@link LackeyTrace.op}. */
export const LACKEY_OP = {
  /** `I`: instruction fetch. */
  INSTR: 0,
  /** `L`: data load. */
  LOAD: 1,
  /** `S`: data store. */
  STORE: 2,
  /** `M`: data modify (load then store). */
  MODIFY: 3,
} as const;

/** A parsed Lackey trace: struct-of-arrays, `count` records in file order. */
export interface LackeyTrace {
  /** Records parsed. */
  readonly count: number;
  /** Address of each record (exact; see the file comment for addresses ≥ 2^53). */
  readonly addr: Float64Array;
  /** Size in bytes of each record (≥ 1). */
  readonly size: Uint32Array;
  /** Kind of each record ({@link LACKEY_OP}). */
  readonly op: Uint8Array;
  /** Records per kind: [I, L, S, M]. */
  readonly counts: readonly [number, number, number, number];
  /** Lines read (including comments and skipped lines). */
  readonly lines: number;
  /** `==pid==` comment lines skipped. */
  readonly comments: number;
  /** Malformed lines skipped (lenient mode only; 0 otherwise). */
  readonly skipped: number;
}

/** Options of {@link parseLackey}. */
export interface LackeyParseOptions {
  /** Skip malformed lines instead of throwing (counted in `skipped`). Default false. */
  readonly lenient?: boolean;
  /** Name of the source in error messages. Default `"trace"`. */
  readonly source?: string;
}

const NL = 10;
const CR = 13;
const SP = 32;
const TAB = 9;
const COMMA = 44;
const EQ = 61;
const TWO32 = 4294967296;
const TWO21 = 2097152;
/** Hex digit value per byte, -1 for a non-hex byte. */
const HEX = new Int8Array(256).fill(-1);
for (let c = 0; c < 10; c++) HEX[48 + c] = c;
for (let c = 0; c < 6; c++) {
  HEX[65 + c] = 10 + c;
  HEX[97 + c] = 10 + c;
}

/**
 * Parse a Lackey log.
 * @param input - the log's bytes (a Buffer or Uint8Array) or text.
 * @param options - see {@link LackeyParseOptions}.
 * @returns the trace.
 * @throws HmmError EINVAL `"<source>:<line>: ..."` (with `arg` `"<source>:<line>"`) for the first
 *   malformed line: a bad prefix, a missing or non-hex address, a missing comma, a missing, zero or
 *   non-decimal size, or trailing garbage.
 * Context: synchronous; about 10^7 records per second.
 * @see lackey/lk_main.c
 * @example
 * ```ts
 * const t = parseLackey(readFileSync("lackey.out"));
 * console.log(t.count, t.counts);
 * ```
 */
export function parseLackey(input: Uint8Array | string, options: LackeyParseOptions = {}): LackeyTrace {
  const buf = typeof input === "string" ? new TextEncoder().encode(input) : input;
  const lenient = options.lenient ?? false;
  const source = options.source ?? "trace";
  const len = buf.length;
  // Capacity estimate: a record line is at least 12 bytes.
  let cap = Math.max(1024, Math.ceil(len / 16));
  let addr = new Float64Array(cap);
  let size = new Uint32Array(cap);
  let op = new Uint8Array(cap);
  let n = 0;
  let line = 0;
  let comments = 0;
  let skipped = 0;
  const counts: [number, number, number, number] = [0, 0, 0, 0];
  let i = 0;
  const fail = (why: string, at: number): void => {
    if (lenient) {
      skipped++;
      while (i < len && buf[i] !== NL) i++;
      i++;
      return;
    }
    let e = at;
    while (e < len && buf[e] !== NL && buf[e] !== CR) e++;
    let s = at;
    while (s > 0 && buf[s - 1] !== NL) s--;
    const text = new TextDecoder().decode(buf.subarray(s, Math.min(e, s + 60)));
    const where = `${source}:${line}`;
    throw new HmmError(
      "EINVAL",
      `${where}: ${why} in ${JSON.stringify(text)} (expected "I  addr,size", " L addr,size", " S addr,size", " M addr,size" or a "==pid==" line)`,
      where,
    );
  };
  while (i < len) {
    line++;
    const c0 = buf[i] as number;
    // Empty line (LF or CRLF).
    if (c0 === NL) {
      i++;
      continue;
    }
    if (c0 === CR && buf[i + 1] === NL) {
      i += 2;
      continue;
    }
    // Valgrind message: "==pid== ..."
    if (c0 === EQ && buf[i + 1] === EQ) {
      comments++;
      while (i < len && buf[i] !== NL) i++;
      i++;
      continue;
    }
    let kind: number;
    const c1 = buf[i + 1];
    const c2 = buf[i + 2];
    if (c0 === 73 /* I */ && c1 === SP && c2 === SP) kind = LACKEY_OP.INSTR;
    else if (c0 === SP && c2 === SP && c1 === 76 /* L */) kind = LACKEY_OP.LOAD;
    else if (c0 === SP && c2 === SP && c1 === 83 /* S */) kind = LACKEY_OP.STORE;
    else if (c0 === SP && c2 === SP && c1 === 77 /* M */) kind = LACKEY_OP.MODIFY;
    else {
      fail("unknown record prefix", i);
      continue;
    }
    let j = i + 3;
    // Address: hex digits. Up to 13 digits (< 2^52) accumulate exactly in a double; longer ones
    // are re-read in two exact 32-bit halves.
    let v = 0;
    const a0 = j;
    for (; j < len; j++) {
      const d = HEX[buf[j] as number] as number;
      if (d < 0) break;
      v = v * 16 + d;
    }
    const nd = j - a0;
    if (nd === 0 || nd > 16) {
      fail(nd === 0 ? "missing hexadecimal address" : "address longer than 16 hex digits", i);
      continue;
    }
    if (nd > 13) {
      let hi = 0;
      let lo = 0;
      for (let k = a0; k < j; k++) {
        hi = hi * 16 + Math.floor(lo / 268435456);
        lo = (lo % 268435456) * 16 + (HEX[buf[k] as number] as number);
      }
      v = (hi >= TWO21 ? hi % TWO21 : hi) * TWO32 + lo;
    }
    if (buf[j] !== COMMA) {
      fail("expected ',' after the address", i);
      continue;
    }
    j++;
    let sz = 0;
    const s0 = j;
    for (; j < len; j++) {
      const c = buf[j] as number;
      if (c < 48 || c > 57) break;
      sz = sz * 10 + (c - 48);
    }
    if (j === s0 || j - s0 > 9 || sz === 0) {
      fail(j === s0 ? "missing decimal size" : "size must be 1..999999999", i);
      continue;
    }
    // Trailing blanks, then end of line.
    while (j < len && (buf[j] === SP || buf[j] === TAB || buf[j] === CR)) j++;
    if (j < len && buf[j] !== NL) {
      fail("unexpected characters after the size", i);
      continue;
    }
    if (n === cap) {
      cap *= 2;
      const a2 = new Float64Array(cap);
      a2.set(addr);
      addr = a2;
      const s2 = new Uint32Array(cap);
      s2.set(size);
      size = s2;
      const o2 = new Uint8Array(cap);
      o2.set(op);
      op = o2;
    }
    addr[n] = v;
    size[n] = sz;
    op[n] = kind;
    counts[kind] = (counts[kind] as number) + 1;
    n++;
    i = j + 1;
  }
  return { count: n, addr: addr.subarray(0, n), size: size.subarray(0, n), op: op.subarray(0, n), counts, lines: line, comments, skipped };
}

/**
 * Format records in Lackey's exact output format (for fixtures and round-trip tests).
 * @param records - [op, address, size] triples; addresses must be integers below 2^53.
 * @returns the log text, one record per line.
 * @see lackey/lk_main.c (the printf formats)
 */
export function formatLackey(records: ReadonlyArray<readonly [number, number, number]>): string {
  const pre = ["I  ", " L ", " S ", " M "];
  let out = "";
  for (const [o, a, s] of records) out += `${pre[o]}${a.toString(16).padStart(8, "0")},${s}\n`;
  return out;
}
