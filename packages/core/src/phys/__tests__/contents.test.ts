import { describe, expect, it } from "vitest";
import { BugError } from "../../sim/errors";
import { Contents } from "../contents";
import { PAGE_SIZE, PageState } from "../page-state";

function setup() {
  const ps = new PageState();
  ps.addRegion("ram", 2048, 0, "node0");
  const vram = ps.addRegion("device", 512, -1, "gpu0-vram");
  const c = new Contents(ps);
  return { ps, c, vram };
}

const pattern = (seed: number) => {
  const b = new Uint8Array(PAGE_SIZE);
  for (let i = 0; i < PAGE_SIZE; i++) b[i] = (i * 31 + seed * 7 + 1) & 0xff;
  return b;
};

function readPage(c: Contents, pfn: number): Uint8Array {
  const b = new Uint8Array(PAGE_SIZE);
  c.read(pfn, 0, b);
  return b;
}

describe("Contents", () => {
  it("never-written pages read as zeros and cost nothing", () => {
    const { c } = setup();
    const b = new Uint8Array(64).fill(9);
    c.read(1000, 100, b);
    expect(b.every((x) => x === 0)).toBe(true);
    expect(c.slabCount).toBe(0);
    expect(c.bytesAllocated).toBe(0);
    expect(c.isBacked(1000)).toBe(false);
    c.clearPages(0, 2048);
    expect(c.slabCount).toBe(0);
    expect(c.isZero(5)).toBe(true);
    expect(c.sameFilled(5)).toBe(0);
  });

  it("writing allocates one 1 MiB slab per 256 pages; bytes round-trip at any offset", () => {
    const { c } = setup();
    c.write(
      300,
      4000,
      new Uint8Array([
        1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35,
        36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68,
        69, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95, 96,
      ]),
    );
    expect(c.slabCount).toBe(1);
    expect(c.bytesAllocated).toBe(1 << 20);
    expect(c.isBacked(256)).toBe(true);
    expect(c.isBacked(511)).toBe(true);
    expect(c.isBacked(255)).toBe(false);
    expect(c.isBacked(512)).toBe(false);
    const b = new Uint8Array(96);
    c.read(300, 4000, b);
    expect(b[0]).toBe(1);
    expect(b[95]).toBe(96);
    // neighbours in the same slab are still zero
    expect(readPage(c, 299).every((x) => x === 0)).toBe(true);
    expect(readPage(c, 301).every((x) => x === 0)).toBe(true);
    expect(c.isZero(300)).toBe(false);
  });

  it("copyPages copies runs that cross slab boundaries on both sides", () => {
    const { c } = setup();
    // src 250..260 crosses slab 0/1, dst 1020..1030 crosses slab 3/4 at a different phase.
    for (let i = 0; i < 11; i++) c.write(250 + i, 0, pattern(i));
    c.write(1019, 0, pattern(99));
    c.write(1031, 0, pattern(98));
    c.copyPages(1020, 250, 11);
    for (let i = 0; i < 11; i++) expect(readPage(c, 1020 + i)).toEqual(pattern(i));
    expect(readPage(c, 1019)).toEqual(pattern(99));
    expect(readPage(c, 1031)).toEqual(pattern(98));
    // sources untouched
    for (let i = 0; i < 11; i++) expect(readPage(c, 250 + i)).toEqual(pattern(i));
  });

  it("copyPages of runs longer than one host memmove piece moves every page (a 2 MiB folio, an unaligned 600-page run)", () => {
    const { c } = setup();
    for (let i = 0; i < 600; i++) c.write(3 + i, 0, pattern(i));
    c.copyPages(1024, 3, 512); // folio-sized: two slabs, several pieces each
    for (let i = 0; i < 512; i++) expect(readPage(c, 1024 + i)).toEqual(pattern(i));
    c.write(1023, 0, pattern(700));
    c.copyPages(1100, 3, 600); // pieces end at slab edges at a different phase on each side
    for (let i = 0; i < 600; i++) expect(readPage(c, 1100 + i)).toEqual(pattern(i));
    expect(readPage(c, 1023)).toEqual(pattern(700));
    expect(c.isZero(1700)).toBe(true);
  });

  it("copyPages from unbacked pages zeroes the destination without backing the source", () => {
    const { c } = setup();
    for (let i = 0; i < 4; i++) c.write(10 + i, 0, pattern(i));
    const before = c.slabCount;
    c.copyPages(10, 1500, 4); // slab of 1500 never written
    for (let i = 0; i < 4; i++) expect(c.isZero(10 + i)).toBe(true);
    expect(c.isBacked(1500)).toBe(false);
    expect(c.slabCount).toBe(before);
  });

  it("copyPages of a partly backed run (source straddles a backed and an unbacked slab)", () => {
    const { c } = setup();
    c.write(254, 0, pattern(1));
    c.write(255, 0, pattern(2));
    for (let i = 0; i < 4; i++) c.write(1800 + i, 0, pattern(50 + i));
    c.copyPages(1800, 254, 4); // 254, 255 backed; 256, 257 in slab 1 (unbacked)
    expect(readPage(c, 1800)).toEqual(pattern(1));
    expect(readPage(c, 1801)).toEqual(pattern(2));
    expect(c.isZero(1802)).toBe(true);
    expect(c.isZero(1803)).toBe(true);
  });

  it("clearPages zeroes exactly the pages asked for", () => {
    const { c } = setup();
    for (let i = 0; i < 6; i++) c.write(253 + i, 0, pattern(i));
    c.clearPages(254, 4);
    expect(readPage(c, 253)).toEqual(pattern(0));
    for (let i = 254; i < 258; i++) expect(c.isZero(i)).toBe(true);
    expect(readPage(c, 258)).toEqual(pattern(5));
  });

  it("sameFilled recognises a repeated word", () => {
    const { c } = setup();
    const b = new Uint8Array(PAGE_SIZE);
    new Uint32Array(b.buffer).fill(0xdeadbeef);
    c.write(7, 0, b);
    expect(c.sameFilled(7)).toBe(0xdeadbeef);
    c.write(7, 100, new Uint8Array([1]));
    expect(c.sameFilled(7)).toBeUndefined();
  });

  it("the CPU path refuses device-private memory; the unchecked (DMA) path does not", () => {
    const { c, vram } = setup();
    const dev = vram.basePfn + 3;
    expect(vram.basePfn).toBe(2048);
    c.write(dev, 0, new Uint8Array([42])); // DMA engine write
    const b = new Uint8Array(1);
    c.read(dev, 0, b);
    expect(b[0]).toBe(42);
    let e: unknown;
    try {
      c.cpuRead(dev, 0, new Uint8Array(1));
    } catch (x) {
      e = x;
    }
    expect(e).toBeInstanceOf(BugError);
    expect((e as BugError).check).toBe("cpu-access-device-private");
    expect((e as BugError).message).toContain("gpu0-vram");
    expect(() => c.cpuWrite(dev, 0, new Uint8Array([1]))).toThrow(BugError);
    c.read(dev, 0, b);
    expect(b[0]).toBe(42); // the refused store changed nothing
    // A pfn in no region at all is refused too.
    expect(() => c.cpuRead(1_000_000, 0, new Uint8Array(1))).toThrow(BugError);
    // RAM is fine, and a coherent region becomes CPU-accessible.
    c.cpuWrite(5, 0, new Uint8Array([3]));
    c.cpuRead(5, 0, b);
    expect(b[0]).toBe(3);
    vram.cpuAccessible = true;
    c.cpuRead(dev, 0, b);
    expect(b[0]).toBe(42);
  });
});

describe("PageState", () => {
  it("regions are 2 MiB aligned and pfns are global", () => {
    const ps = new PageState();
    const a = ps.addRegion("ram", 1024, 0, "node0");
    const b = ps.addRegion("ram", 512, 1, "node1");
    const d = ps.addRegion("device", 512, -1, "vram");
    expect([a.basePfn, b.basePfn, d.basePfn]).toEqual([0, 1024, 1536]);
    expect(ps.maxPfn).toBe(2048);
    expect(ps.regionOf(1023)?.name).toBe("node0");
    expect(ps.regionOf(1024)?.name).toBe("node1");
    expect(ps.regionOf(2047)?.name).toBe("vram");
    expect(ps.regionOf(2048)).toBeUndefined();
    expect(ps.pfnValid(2047)).toBe(true);
    expect(ps.pfnValid(2048)).toBe(false);
    expect(ps.pfnValid(-1)).toBe(false);
    expect(d.cpuAccessible).toBe(false);
    expect(a.cpuAccessible).toBe(true);
    expect(() => ps.addRegion("ram", 100, 0, "bad")).toThrow(expect.objectContaining({ code: "EINVAL", arg: "npages" }));
    expect(ps.maxPfn).toBe(2048);
  });

  it("the per-page typed arrays cost at most 48 bytes per page", () => {
    const ps = new PageState();
    ps.addRegion("ram", 4096, 0, "node0");
    const arrays = [
      ps.flags,
      ps.refcount,
      ps.mapcount,
      ps.pincount,
      ps.pgmap,
      ps.owner,
      ps.order,
      ps.zone,
      ps.lruPrev,
      ps.lruNext,
      ps.mapping,
      ps.index,
      ps.private,
    ];
    const bytes = arrays.reduce((s, a) => s + a.byteLength, 0);
    expect(bytes / 4096).toBe(46);
    expect(bytes / 4096).toBeLessThanOrEqual(48);
  });

  it("compoundHead is arithmetic on aligned folios", () => {
    const ps = new PageState();
    ps.addRegion("ram", 1024, 0, "node0");
    ps.prepCompound(512, 9);
    expect(ps.compoundHead(512 + 300)).toBe(512);
    expect(ps.compoundHead(512)).toBe(512);
    expect(ps.folioNrPages(512)).toBe(512);
    expect(ps.compoundHead(511)).toBe(511);
    expect(() => ps.prepCompound(8, 4)).toThrow(expect.objectContaining({ check: "compound-align" }));
    ps.clearCompound(512, 9);
    expect(ps.compoundHead(700)).toBe(700);
  });
});
