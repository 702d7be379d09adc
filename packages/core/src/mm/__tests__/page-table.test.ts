import { describe, expect, it } from "vitest";
import { BugError } from "../../sim/errors";
import { TASK_SIZE } from "../mm";
import {
  entryBits,
  entryPayload,
  isHuge,
  isPresent,
  isWrite,
  mkPte,
  mkSwpEntry,
  PageTable,
  PMD_SIZE,
  PTE,
  PUD_SIZE,
  SWP,
  swpType,
  withBits,
} from "../page-table";

const PFNS = [
  0,
  1,
  255,
  256,
  2 ** 20 + 3,
  2 ** 32 - 1,
  2 ** 32,
  2 ** 32 + 1,
  2 ** 40 + 12345,
  2 ** 44 - 1,
  2 ** 44,
  2 ** 44 + 2 ** 43 + 7,
  2 ** 45 - 1,
];

describe("page-table entry encoding", () => {
  it("mkPte round-trips pfn and bits up to 2^45 (no 32-bit truncation)", () => {
    for (const pfn of PFNS) {
      for (const w of [false, true]) {
        const e = mkPte(pfn, w);
        expect(Number.isSafeInteger(e)).toBe(true);
        expect(entryPayload(e)).toBe(pfn);
        expect(isPresent(e)).toBe(true);
        expect(isWrite(e)).toBe(w);
        expect(swpType(e)).toBe(0);
        expect(isHuge(e)).toBe(false);
        expect(entryBits(e)).toBe(PTE.PRESENT | (w ? PTE.WRITE : 0));
        const h = e + PTE.HUGE;
        expect(isHuge(h)).toBe(true);
        expect(entryPayload(h)).toBe(pfn);
        expect(isPresent(h)).toBe(true);
      }
    }
  });

  it("mkSwpEntry round-trips type, payload and the write bit for every type", () => {
    for (const type of [SWP.SWAP, SWP.MIGRATION, SWP.DEVICE_PRIVATE, SWP.DEVICE_EXCLUSIVE, SWP.HWPOISON, SWP.TABLE]) {
      for (const pfn of PFNS) {
        for (const w of [false, true]) {
          const e = mkSwpEntry(type, pfn, w);
          expect(e).not.toBe(0);
          expect(isPresent(e)).toBe(false);
          expect(swpType(e)).toBe(type);
          expect(entryPayload(e)).toBe(pfn);
          expect(isWrite(e)).toBe(w);
          expect(isHuge(e)).toBe(false);
          const h = e + PTE.HUGE; // a non-present PMD leaf (device-private THP, PMD migration entry)
          expect(isHuge(h)).toBe(true);
          expect(swpType(h)).toBe(type);
          expect(entryPayload(h)).toBe(pfn);
        }
      }
    }
  });

  it("withBits sets and clears low bits without touching the pfn", () => {
    const pfn = 2 ** 44 + 99;
    const e = mkPte(pfn, true);
    const d = withBits(e, PTE.DIRTY | PTE.YOUNG, 0);
    expect(entryBits(d)).toBe(PTE.PRESENT | PTE.WRITE | PTE.DIRTY | PTE.YOUNG);
    const ro = withBits(d, 0, PTE.WRITE);
    expect(isWrite(ro)).toBe(false);
    expect(entryPayload(ro)).toBe(pfn);
    const hidden = withBits(ro, 0, PTE.PRESENT);
    expect(isPresent(hidden)).toBe(false);
    expect(swpType(hidden)).toBe(0);
    expect(entryPayload(hidden)).toBe(pfn);
    expect(withBits(hidden, PTE.PRESENT, 0)).toBe(withBits(d, 0, PTE.WRITE));
  });
});

describe("PageTable", () => {
  it("stores PTEs sparsely and allocates PTE tables on demand", () => {
    const pt = new PageTable();
    const va = 0x7f0000201000;
    expect(pt.getPte(va)).toBe(0);
    expect(pt.getPmd(va)).toBe(0);
    pt.setPte(va, mkPte(77, true));
    expect(pt.nrPteTables).toBe(1);
    expect(entryPayload(pt.getPte(va))).toBe(77);
    expect(pt.getPte(va + 4096)).toBe(0);
    expect(pt.getPte(va - 4096)).toBe(0);
    expect(swpType(pt.getPmd(va))).toBe(SWP.TABLE);
    // another 2 MiB region, another table; another 1 GiB region, another PUD
    pt.setPte(va + PMD_SIZE, mkPte(78, false));
    pt.setPte(va + PUD_SIZE, mkPte(79, false));
    expect(pt.nrPteTables).toBe(3);
    expect(entryPayload(pt.getPte(va + PUD_SIZE))).toBe(79);
    expect(entryPayload(pt.getPte(va))).toBe(77); // after the PUD cache moved
    expect(pt.populatedPmds()).toEqual([va, va + PMD_SIZE, va + PUD_SIZE].map((a) => Math.floor(a / PMD_SIZE)));
  });

  it("addresses up to TASK_SIZE work (47-bit VAs, beyond 32-bit arithmetic)", () => {
    const pt = new PageTable();
    const top = TASK_SIZE - 4096;
    pt.setPte(top, mkPte(2 ** 40, true));
    expect(entryPayload(pt.getPte(top))).toBe(2 ** 40);
    expect(pt.getPte(top - 4096)).toBe(0);
    pt.setPte(0x10000, mkPte(1, false));
    expect(entryPayload(pt.getPte(0x10000))).toBe(1);
    expect(entryPayload(pt.getPte(top))).toBe(2 ** 40);
  });

  it("refuses to leak or misuse PTE tables", () => {
    const pt = new PageTable();
    const va = 0x40000000;
    pt.setPte(va, mkPte(5, true));
    expect(() => pt.freePteTable(va)).toThrow(expect.objectContaining({ check: "pte-table-busy" }));
    expect(() => pt.setPmd(va, mkPte(512, true) + PTE.HUGE)).toThrow(BugError);
    expect(() => pt.setPmd(va, 0)).toThrow(expect.objectContaining({ check: "pmd-table-leak" }));
    expect(entryPayload(pt.getPte(va))).toBe(5);
    pt.setPte(va, 0);
    pt.freePteTable(va);
    expect(pt.nrPteTables).toBe(0);
    expect(pt.getPmd(va)).toBe(0);
    pt.setPmd(va, mkPte(512, true) + PTE.HUGE);
    expect(pt.pteTable(va)).toBeUndefined();
    expect(pt.getPte(va)).toBe(0);
    expect(() => pt.ensurePteTable(va)).toThrow(expect.objectContaining({ check: "pte-alloc-on-huge" }));
    // table ids are recycled
    pt.setPte(va + PMD_SIZE, mkPte(6, false));
    expect(pt.nrPteTables).toBe(1);
  });
});
