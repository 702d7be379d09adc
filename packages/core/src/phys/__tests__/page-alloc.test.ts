import { describe, expect, it } from "vitest";
import { BugError, HmmError } from "../../sim/errors";
import { VmStat } from "../../sim/vmstat";
import { Contents } from "../contents";
import { GFP, PageAllocator } from "../page-alloc";
import { MAX_PAGE_ORDER, PAGE_SIZE, PageState, PG } from "../page-state";

/** A 64 MiB node: 16384 pages = 16 order-10 blocks; min watermark sqrt(65536 KiB * 16) = 1024 KiB = 256 pages. */
function mk(npages = 16384) {
  const ps = new PageState();
  const vm = new VmStat();
  const contents = new Contents(ps);
  const alloc = new PageAllocator(ps, vm, contents);
  const region = ps.addRegion("ram", npages, 0, "node0");
  const zone = alloc.addZone(region);
  return { ps, vm, alloc, zone, region, contents };
}

const nrFree = (z: { nrFree: Float64Array }) => Array.from(z.nrFree);

function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (e) {
    return e;
  }
  throw new Error("expected a throw");
}

/** Sum of block sizes on the free lists, walked through the lruNext links. */
function walkFreeLists(ps: PageState, z: { freeHead: Float64Array }): { pages: number; blocks: number[] } {
  let pages = 0;
  const blocks = new Array<number>(MAX_PAGE_ORDER + 1).fill(0);
  for (let o = 0; o <= MAX_PAGE_ORDER; o++) {
    for (let h = z.freeHead[o] as number; h !== 0; h = ps.lruNext[h - 1] as number) {
      const pfn = h - 1;
      expect((ps.flags[pfn] as number) & PG.buddy).toBe(PG.buddy);
      expect(ps.order[pfn]).toBe(o);
      expect(pfn % 2 ** o).toBe(0);
      pages += 2 ** o;
      blocks[o] = (blocks[o] as number) + 1;
    }
  }
  return { pages, blocks };
}

describe("buddy allocator", () => {
  it("boots with every page free in maximal aligned blocks and kernel-style watermarks", () => {
    const { alloc, zone, vm, ps } = mk();
    expect(alloc.nrFreePages).toBe(16384);
    expect(alloc.totalPages).toBe(16384);
    expect(vm.c.nr_free_pages).toBe(16384);
    expect(nrFree(zone)).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 16]);
    expect(zone.watermark).toEqual({ min: 256, low: 320, high: 384 });
    expect(walkFreeLists(ps, zone)).toEqual({ pages: 16384, blocks: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 16] });
  });

  it("an odd-sized zone is carved into naturally aligned blocks", () => {
    const { zone, ps } = mk(1536); // 1024 + 512
    expect(nrFree(zone)).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1]);
    expect(walkFreeLists(ps, zone).pages).toBe(1536);
  });

  it("splits exactly: an order-0 allocation leaves one free block of each lower order", () => {
    const { alloc, zone, ps, vm } = mk();
    const pfn = alloc.allocPages(0);
    expect(pfn).toBeGreaterThanOrEqual(0);
    expect(pfn % 1024).toBe(0);
    expect(nrFree(zone)).toEqual([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 15]);
    expect(alloc.nrFreePages).toBe(16383);
    expect(vm.c.nr_free_pages).toBe(16383);
    expect(vm.c.pgalloc_normal).toBe(1);
    expect(ps.refcount[pfn]).toBe(1);
    expect(ps.flags[pfn]).toBe(0);
    expect(alloc.isFree(pfn)).toBe(false);
    expect(alloc.isFree(pfn + 1)).toBe(true);
    // Next order-0 is the buddy; next order-1 is the order-1 buddy block.
    const b = alloc.allocPages(0);
    expect(b).toBe(pfn + 1);
    const c = alloc.allocPages(1);
    expect(c).toBe(pfn + 2);
    expect(nrFree(zone)).toEqual([0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 15]);
    expect(walkFreeLists(ps, zone).pages).toBe(16384 - 4);
  });

  it("merges exactly: freeing in any order restores the original blocks", () => {
    const { alloc, zone, ps, vm } = mk();
    const pfns = [alloc.allocPages(0), alloc.allocPages(3), alloc.allocPages(0), alloc.allocPages(9), alloc.allocPages(2)];
    expect(pfns.every((p) => p >= 0)).toBe(true);
    const orders = [0, 3, 0, 9, 2];
    expect(alloc.nrFreePages).toBe(16384 - 1 - 8 - 1 - 512 - 4);
    for (const i of [3, 0, 4, 2, 1]) {
      ps.refcount[pfns[i] as number] = 0;
      alloc.freePages(pfns[i] as number, orders[i] as number);
    }
    expect(nrFree(zone)).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 16]);
    expect(alloc.nrFreePages).toBe(16384);
    expect(vm.c.pgfree).toBe(526);
    expect(vm.c.pgalloc_normal).toBe(526);
    expect(walkFreeLists(ps, zone)).toEqual({ pages: 16384, blocks: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 16] });
  });

  it("does not merge with a buddy of a different order", () => {
    const { alloc, zone, ps } = mk(1024);
    const a = alloc.allocPages(0); // 0
    const b = alloc.allocPages(0); // 1
    const c = alloc.allocPages(1); // 2..3
    expect([a, b, c]).toEqual([0, 1, 2]);
    expect(nrFree(zone)).toEqual([0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0]);
    ps.refcount[a] = 0;
    alloc.freePages(a, 0);
    // 0 is free at order 0; its buddy 1 is allocated: no merge.
    expect(nrFree(zone)).toEqual([1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0]);
    ps.refcount[c] = 0;
    alloc.freePages(c, 1);
    // 2..3 free at order 1; its buddy 0..1 is not a free order-1 block.
    expect(nrFree(zone)).toEqual([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0]);
    ps.refcount[b] = 0;
    alloc.freePages(b, 0);
    expect(nrFree(zone)).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
  });

  it("refuses allocations that would go below the min watermark, unless GFP.HIGH (to min/2)", () => {
    const { alloc, zone } = mk();
    let n = 0;
    while (alloc.allocPages(0) >= 0) n++;
    expect(n).toBe(16384 - 256);
    expect(alloc.nrFreePages).toBe(256);
    expect(zone.freePages).toBe(zone.watermark.min);
    let h = 0;
    while (alloc.allocPages(0, GFP.HIGH) >= 0) h++;
    expect(h).toBe(128);
    expect(alloc.nrFreePages).toBe(128);
  });

  it("an order-9 allocation needs 512 pages above min", () => {
    const { alloc } = mk(2048);
    // 2048 pages: min = sqrt(8192*16) KiB = 362 KiB -> 90 pages.
    const z = alloc.zones[0];
    expect(z?.watermark.min).toBe(90);
    expect(alloc.allocPages(9)).toBeGreaterThanOrEqual(0);
    expect(alloc.allocPages(9)).toBeGreaterThanOrEqual(0);
    expect(alloc.allocPages(9)).toBeGreaterThanOrEqual(0);
    expect(alloc.nrFreePages).toBe(512);
    expect(alloc.allocPages(9)).toBe(-1); // 512 - 512 < 90
    expect(alloc.nrFreePages).toBe(512);
    expect(alloc.allocPages(8)).toBeGreaterThanOrEqual(0); // 256 left >= 90
  });

  it("calls the low-watermark hook and retries once after onAllocFail", () => {
    const { alloc, ps } = mk();
    const lows: number[] = [];
    const held: number[] = [];
    let fails = 0;
    alloc.hooks = {
      onLowWatermark: (z) => lows.push(z.freePages),
      onAllocFail: () => {
        fails++;
        const p = held.pop();
        if (p === undefined) return false;
        ps.refcount[p] = 0;
        alloc.freePages(p, 0);
        return true;
      },
    };
    for (;;) {
      const p = alloc.allocPages(0, GFP.NORETRY);
      if (p < 0) break;
      held.push(p);
    }
    expect(fails).toBe(0); // NORETRY skips the slow path
    expect(lows[0]).toBe(319); // first allocation that left the zone below low = 320
    expect(lows.length).toBe(320 - 256);
    const p = alloc.allocPages(0);
    expect(p).toBeGreaterThanOrEqual(0);
    expect(fails).toBe(1);
    expect(alloc.nrFreePages).toBe(256);
  });

  it("fragmentation: scattered order-0 pages make order 9 fail although plenty is free", () => {
    const { alloc, zone, ps } = mk();
    const got: number[] = [];
    for (;;) {
      const p = alloc.allocPages(0);
      if (p < 0) break;
      got.push(p);
    }
    got.sort((a, b) => a - b);
    let freed = 0;
    for (const p of got) {
      if (p % 2 === 0) {
        ps.refcount[p] = 0;
        alloc.freePages(p, 0);
        freed++;
      }
    }
    expect(freed).toBeGreaterThan(8000);
    expect(alloc.nrFreePages).toBe(256 + freed);
    expect(alloc.nrFreePages).toBeGreaterThan(512 + zone.watermark.min);
    expect(zone.nrFree[9]).toBe(0);
    expect(zone.nrFree[10]).toBe(0);
    expect(alloc.allocPages(9)).toBe(-1);
    expect(alloc.allocPages(9, GFP.HIGH)).toBe(-1);
    // Order 0 still works.
    const q = alloc.allocPages(0);
    expect(q).toBeGreaterThanOrEqual(0);
    ps.refcount[q] = 0;
    alloc.freePages(q, 0);
    // Freeing the odd pages defragments completely.
    for (const p of got) {
      if (p % 2 === 1) {
        ps.refcount[p] = 0;
        alloc.freePages(p, 0);
      }
    }
    expect(nrFree(zone)).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 16]);
  });

  it("double free and bad-page frees are bugs, and change nothing", () => {
    const { alloc, zone, ps } = mk();
    const p = alloc.allocPages(2, GFP.COMP);
    ps.refcount[p] = 0;
    alloc.freePages(p, 2);
    const before = nrFree(zone);
    const e = thrown(() => alloc.freePages(p, 2));
    expect(e).toBeInstanceOf(BugError);
    expect((e as BugError).check).toBe("double-free");
    expect(thrown(() => alloc.freePages(p + 1, 0))).toMatchObject({ check: "double-free" });
    expect(nrFree(zone)).toEqual(before);
    expect(alloc.nrFreePages).toBe(16384);

    const q = alloc.allocPages(0);
    expect(thrown(() => alloc.freePages(q, 0))).toMatchObject({ check: "bad-page" }); // refcount 1
    ps.refcount[q] = 0;
    ps.mapcount[q] = 1;
    expect(thrown(() => alloc.freePages(q, 0))).toMatchObject({ check: "bad-page" });
    ps.mapcount[q] = 0;
    ps.flags[q] = PG.locked;
    expect(thrown(() => alloc.freePages(q, 0))).toMatchObject({ check: "bad-page" });
    ps.flags[q] = 0;
    expect(alloc.nrFreePages).toBe(16383);
    alloc.freePages(q, 0);
    expect(alloc.nrFreePages).toBe(16384);
    expect(thrown(() => alloc.freePages(16384 + 5, 0))).toMatchObject({ check: "bad-page" });
  });

  it("a bad tail page of a compound block is reported by pfn, and the free changes nothing", () => {
    const { alloc, zone, ps } = mk();
    const p = alloc.allocPages(9, GFP.COMP);
    ps.refcount[p] = 0;
    const before = nrFree(zone);
    ps.mapcount[p + 300] = 1; // a subpage still mapped
    const e = thrown(() => alloc.freePages(p, 9));
    expect(e).toMatchObject({ check: "bad-page" });
    expect((e as BugError).message).toContain(`pfn ${p + 300} `);
    expect(nrFree(zone)).toEqual(before);
    expect((ps.flags[p + 300] as number) & PG.tail).toBe(PG.tail); // not dissolved
    ps.mapcount[p + 300] = 0;
    ps.refcount[p + 511] = 2; // a reference taken on a tail
    expect((thrown(() => alloc.freePages(p, 9)) as BugError).message).toContain(`pfn ${p + 511} `);
    ps.refcount[p + 511] = 0;
    alloc.freePages(p, 9);
    expect(alloc.nrFreePages).toBe(16384);
  });

  it("GFP.COMP makes a compound folio; free undoes it", () => {
    const { alloc, ps } = mk();
    const p = alloc.allocPages(3, GFP.COMP);
    expect((ps.flags[p] as number) & PG.head).toBe(PG.head);
    for (let i = 1; i < 8; i++) {
      expect((ps.flags[p + i] as number) & PG.tail).toBe(PG.tail);
      expect(ps.compoundHead(p + i)).toBe(p);
      expect(ps.refcount[p + i]).toBe(0);
    }
    expect(ps.folioNrPages(p)).toBe(8);
    expect(ps.refcount[p]).toBe(1);
    ps.refcount[p] = 0;
    alloc.freePages(p, 3);
    for (let i = 0; i < 8; i++) expect((ps.flags[p + i] as number) & (PG.head | PG.tail)).toBe(0);
    const q = alloc.allocPages(3);
    expect((ps.flags[q] as number) & PG.head).toBe(0);
    expect(ps.folioNrPages(q)).toBe(1);
  });

  it("rejects a bad order with EINVAL naming it", () => {
    const { alloc } = mk();
    for (const o of [-1, 11, 1.5, Number.NaN]) {
      const e = thrown(() => alloc.allocPages(o));
      expect(e).toBeInstanceOf(HmmError);
      expect(e).toMatchObject({ code: "EINVAL", arg: "order" });
    }
    expect(alloc.nrFreePages).toBe(16384);
  });

  it("allocRange takes a specific block out of a larger free block and carves the rest", () => {
    const { alloc, zone, ps } = mk();
    expect(alloc.allocRange(1032, 3)).toBe(true);
    expect(ps.refcount[1032]).toBe(1);
    for (let p = 1032; p < 1040; p++) expect(alloc.isFree(p)).toBe(false);
    expect(alloc.isFree(1031)).toBe(true);
    expect(alloc.isFree(1040)).toBe(true);
    expect(alloc.nrFreePages).toBe(16384 - 8);
    // The order-10 block at 1024 is carved in halves around 1032..1039: free blocks 1024 o3,
    // 1040 o4, 1056 o5, 1088 o6, 1152 o7, 1280 o8, 1536 o9.
    expect(nrFree(zone)).toEqual([0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 15]);
    expect(walkFreeLists(ps, zone).pages).toBe(16384 - 8);
    // Overlapping an allocated page: refused, nothing changes.
    expect(alloc.allocRange(1024, 4)).toBe(false);
    expect(alloc.nrFreePages).toBe(16384 - 8);
    expect(alloc.allocRange(16384, 0)).toBe(false);
    ps.refcount[1032] = 0;
    alloc.freePages(1032, 3);
    expect(nrFree(zone)).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 16]);
  });

  it("allocRange spanning two free blocks", () => {
    const { alloc, zone, ps } = mk();
    expect(alloc.allocRange(1024 - 4, 3) /* unaligned: 1020..1027 */).toBe(true);
    expect(alloc.nrFreePages).toBe(16384 - 8);
    for (let p = 1020; p < 1028; p++) expect(alloc.isFree(p)).toBe(false);
    expect(alloc.isFree(1019)).toBe(true);
    expect(alloc.isFree(1028)).toBe(true);
    expect(walkFreeLists(ps, zone).pages).toBe(16384 - 8);
  });
});

describe("allocPages(GFP.ZERO)", () => {
  it("returns zeroed pages (__GFP_ZERO), even when the page held data before", () => {
    const { alloc, ps, contents } = mk(1024);
    const p = alloc.allocPages(0);
    contents.write(p, 0, new Uint8Array(PAGE_SIZE).fill(0x5a));
    ps.refcount[p] = 0;
    alloc.freePages(p, 0);
    const q = alloc.allocPages(0, GFP.ZERO);
    expect(q).toBe(p); // LIFO: the same page comes back
    const buf = new Uint8Array(16);
    contents.read(q, 0, buf);
    expect(Array.from(buf)).toEqual(new Array(16).fill(0));
  });
});
