import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { HmmError } from "@hmmkit/core";
import { describe, expect, it } from "vitest";
import { formatLackey, LACKEY_OP, parseLackey } from "../trace/lackey";
import { traceRegions, traceStreams } from "../trace/map";

const FIXTURE = path.join(path.dirname(fileURLToPath(import.meta.url)), "../../fixtures/stencil2d.lackey");

/** The example in the header comment of valgrind's lackey/lk_main.c. */
const LK_MAIN_EXAMPLE = `I  0023C790,2
I  0023C792,5
 S BE80199C,4
I  0025242B,3
 L BE801950,4
I  0023D476,7
 M 0025747C,1
`;

function lineOfError(text: string): { line: string | undefined; message: string } {
  try {
    parseLackey(text, { source: "t.out" });
  } catch (e) {
    if (e instanceof HmmError) return { line: e.arg, message: e.message };
    throw e;
  }
  throw new Error("expected EINVAL");
}

describe("lackey parser", () => {
  it("parses lk_main.c's example exactly", () => {
    const t = parseLackey(LK_MAIN_EXAMPLE);
    expect(t.count).toBe(7);
    expect([...t.op]).toEqual([0, 0, 2, 0, 1, 0, 3]);
    expect([...t.addr]).toEqual([0x0023c790, 0x0023c792, 0xbe80199c, 0x0025242b, 0xbe801950, 0x0023d476, 0x0025747c]);
    expect([...t.size]).toEqual([2, 5, 4, 3, 4, 7, 1]);
    expect(t.counts).toEqual([4, 1, 1, 1]);
  });

  it("skips ==pid== lines and empty lines, accepts CRLF and lower-case hex", () => {
    const t = parseLackey("==123== Lackey, an example Valgrind tool\r\n\r\n L 7ff000abcd,8\r\n==123== \n S deadbeef,4  \n");
    expect(t.count).toBe(2);
    expect(t.comments).toBe(2);
    expect(t.addr[0]).toBe(0x7ff000abcd);
    expect(t.addr[1]).toBe(0xdeadbeef);
  });

  it("reads 16-digit addresses exactly and folds those at or above 2^53", () => {
    const t = parseLackey(" L 00007fff12345678,8\n L ffffffffff600000,8\n L 001fffffffffffff,1\n");
    expect(t.addr[0]).toBe(0x7fff12345678);
    expect(t.addr[1]).toBe((0xffffffff % 2 ** 21) * 2 ** 32 + 0xff600000);
    expect(t.addr[1]).toBeGreaterThan(2 ** 47);
    expect(t.addr[2]).toBe(2 ** 53 - 1);
  });

  it.each([
    ["X  0023C790,2", 1, "unknown record prefix"],
    ["I 0023C790,2", 1, "unknown record prefix"],
    ["L 0023C790,2", 1, "unknown record prefix"],
    [" l 0023C790,2", 1, "unknown record prefix"],
    ["I  0023C790,2\n L 0023C790", 2, "expected ','"],
    ["I  0023C790,2\nI  0023C792,5\n L ,4", 3, "missing hexadecimal address"],
    [" L 0x23C790,4", 1, "expected ','"],
    [" L 0023G790,4", 1, "expected ','"],
    [" L 0023C790,", 1, "missing decimal size"],
    [" L 0023C790,0", 1, "size must be"],
    [" L 0023C790,4x", 1, "unexpected characters"],
    [" L 0023C790,4,5", 1, "unexpected characters"],
    [" L 11112222333344445,4", 1, "address longer than 16"],
    ["==1== ok\n\n S 10,4\n garbage", 4, "unknown record prefix"],
  ])("rejects %j at line %i", (text, line, why) => {
    const e = lineOfError(text);
    expect(e.line).toBe(`t.out:${line}`);
    expect(e.message).toContain(`t.out:${line}: ${why}`);
    expect(e.message).toMatch(/^EINVAL: /);
  });

  it("skips malformed lines in lenient mode and counts them", () => {
    const t = parseLackey("I  10,1\nprogram output\n L 20,4\n", { lenient: true });
    expect(t.count).toBe(2);
    expect(t.skipped).toBe(1);
    expect(t.lines).toBe(3);
  });

  it("round-trips through formatLackey", () => {
    const recs: [number, number, number][] = [
      [LACKEY_OP.INSTR, 0x401000, 4],
      [LACKEY_OP.LOAD, 0x7ffd1234, 8],
      [LACKEY_OP.STORE, 0x10, 1],
      [LACKEY_OP.MODIFY, 0x123456789ab, 2],
    ];
    const text = formatLackey(recs);
    expect(text.split("\n")[0]).toBe("I  00401000,4");
    expect(text.split("\n")[2]).toBe(" S 00000010,1");
    const t = parseLackey(text);
    expect(recs.map((_, i) => [t.op[i], t.addr[i], t.size[i]])).toEqual(recs);
  });

  it("parses the real valgrind log of fixtures/stencil2d.c", () => {
    const t = parseLackey(readFileSync(FIXTURE), { source: "stencil2d.lackey" });
    expect(t.count).toBe(99338);
    expect(t.counts).toEqual([80978, 13806, 4529, 25]);
    expect(t.comments).toBe(25);
    expect(t.skipped).toBe(0);
  });
});

describe("trace mapping", () => {
  it("compacts 2 MiB regions, keeps offsets, and splits page-crossing records", () => {
    const t = parseLackey(" L 00400ffe,4\n S 7ffc00001000,8\n L 00400010,4\n");
    const r = traceRegions(t, false);
    expect([...r.regions]).toEqual([2, Math.floor(0x7ffc00001000 / 2 ** 21)]);
    expect(r.pages).toBe(3);
    const [s] = traceStreams(t, r, 0x40000000, 1, false);
    expect(s?.count).toBe(4);
    expect([...(s?.addr ?? [])]).toEqual([0x40000ffe, 0x40001000, 0x40200000 + 0x1000, 0x40000010]);
    expect([...(s?.size ?? [])]).toEqual([2, 2, 8, 4]);
  });

  it("cuts the trace into contiguous segments, one per warp", () => {
    const t = parseLackey(formatLackey(Array.from({ length: 10 }, (_, i) => [LACKEY_OP.LOAD, 0x1000 * i, 4] as [number, number, number])));
    const r = traceRegions(t, false);
    const ss = traceStreams(t, r, 0, 3, false);
    expect(ss.map((s) => s.count)).toEqual([3, 3, 4]);
    expect(ss[1]?.addr[0]).toBe(0x3000);
  });

  it("drops instruction fetches unless asked", () => {
    const t = parseLackey(LK_MAIN_EXAMPLE);
    expect(traceRegions(t, false).records).toBe(3);
    expect(traceRegions(t, true).records).toBe(7);
  });
});
