import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { BugError } from "../../sim/errors";
import { TraceBus } from "../../sim/events";
import { VmStat } from "../../sim/vmstat";
import { Contents } from "../contents";
import { PageAllocator } from "../page-alloc";
import { MAX_PAGE_ORDER, PageState } from "../page-state";

/** Two zones of 1536 pages: the second starts at pfn 1536, which is not 1024-aligned. */
function mk() {
  const ps = new PageState();
  const vm = new VmStat();
  const alloc = new PageAllocator(ps, vm, new Contents(ps));
  for (const nid of [0, 1]) alloc.addZone(ps.addRegion("ram", 1536, nid, `node${nid}`));
  return { ps, vm, alloc };
}

/** Everything the buddy allocator holds: each zone's free lists in list order, the counters, the page fields. */
function snapshot({ ps, vm, alloc }: ReturnType<typeof mk>) {
  const zones = alloc.zones.map((z) => {
    const lists: number[][] = [];
    for (let o = 0; o <= MAX_PAGE_ORDER; o++) {
      const l: number[] = [];
      for (let h = z.freeHead[o] as number; h !== 0; h = ps.lruNext[h - 1] as number) l.push(h - 1);
      lists.push(l);
    }
    return { lists, nrFree: Array.from(z.nrFree), freePages: z.freePages };
  });
  return {
    zones,
    flags: Array.from(ps.flags),
    order: Array.from(ps.order),
    counters: [vm.c.nr_free_pages, vm.c.pgfree, vm.c.pgalloc_normal],
  };
}

type Step = { kind: "free"; at: number } | { kind: "alloc"; order: number };

describe("PageAllocator free batches", () => {
  it("leave the allocator exactly as one free per block would: blocks, free-list order, counters", () => {
    fc.assert(
      fc.property(
        // What to allocate: runs of consecutive base pages (as a migration's sources) and larger blocks.
        fc.array(fc.oneof(fc.record({ run: fc.integer({ min: 1, max: 300 }) }), fc.record({ order: fc.constantFrom(1, 2, 9) })), {
          minLength: 1,
          maxLength: 24,
        }),
        // Per block: a sort key and whether it stays allocated (holes make runs start and end unaligned).
        fc.array(fc.tuple(fc.integer({ min: 0, max: 1_000_000 }), fc.integer({ min: 0, max: 9 })), { minLength: 64, maxLength: 64 }),
        fc.constantFrom("ascending", "shuffled", "runs-shuffled"),
        fc.array(fc.integer({ min: 0, max: 2 }), { maxLength: 3 }),
        (plan, keys, mode, midAllocs) => {
          const a = mk();
          const b = mk();
          const blocks: { pfn: number; order: number; group: number }[] = [];
          plan.forEach((item, group) => {
            const orders = "run" in item ? new Array<number>(item.run).fill(0) : [item.order];
            for (const o of orders) {
              const pa = a.alloc.allocPages(o);
              expect(b.alloc.allocPages(o)).toBe(pa);
              if (pa >= 0) blocks.push({ pfn: pa, order: o, group });
            }
          });
          const key = (i: number) => keys[i % keys.length] as [number, number];
          const freed = blocks.map((blk, i) => ({ ...blk, k: key(i)[0], gk: key(blk.group)[0] })).filter((_, i) => key(i)[1] !== 0);
          if (mode === "ascending") freed.sort((x, y) => x.pfn - y.pfn);
          else if (mode === "shuffled") freed.sort((x, y) => x.k - y.k);
          else freed.sort((x, y) => x.gk - y.gk || x.group - y.group || x.pfn - y.pfn);
          const steps: Step[] = freed.map((_, i) => ({ kind: "free", at: i }) as Step);
          midAllocs.forEach((o, j) => {
            steps.splice(Math.floor(((j + 1) * steps.length) / (midAllocs.length + 1)), 0, { kind: "alloc", order: o });
          });
          a.alloc.beginFreeBatch();
          const gotA: number[] = [];
          const gotB: number[] = [];
          for (const s of steps) {
            if (s.kind === "alloc") {
              gotA.push(a.alloc.allocPages(s.order));
              gotB.push(b.alloc.allocPages(s.order));
              continue;
            }
            const { pfn, order } = freed[s.at] as { pfn: number; order: number };
            for (const x of [a, b]) x.ps.refcount[pfn] = 0; // the last put, as freeFolio sees it
            a.alloc.freePages(pfn, order, true);
            b.alloc.freePages(pfn, order, true);
          }
          a.alloc.endFreeBatch();
          expect(gotA).toEqual(gotB);
          expect(snapshot(a)).toEqual(snapshot(b));
        },
      ),
      { seed: 20261123, numRuns: 200 },
    );
  });

  it("does not merge a run across the boundary between two zones", () => {
    const a = mk();
    const b = mk();
    // Pages 1024..2047: the upper half of zone 0's last order-10 block and the start of zone 1
    // (which begins at 1536, not on a 1024-page boundary).
    for (const x of [a, b]) for (let p = 1024; p < 2048; p++) expect(x.alloc.allocRange(p, 0)).toBe(true);
    a.alloc.beginFreeBatch();
    for (let p = 1024; p < 2048; p++) {
      for (const x of [a, b]) x.ps.refcount[p] = 0;
      a.alloc.freePages(p, 0, true);
      b.alloc.freePages(p, 0, true);
    }
    a.alloc.endFreeBatch();
    expect(snapshot(a)).toEqual(snapshot(b));
    expect(a.alloc.zones.map((z) => z.freePages)).toEqual([1536, 1536]);
  });

  it("frees one block per call while mm_page_free is traced", () => {
    const ps = new PageState();
    const bus = new TraceBus();
    const alloc = new PageAllocator(ps, new VmStat(), new Contents(ps), bus);
    alloc.addZone(ps.addRegion("ram", 1536, 0, "node0"));
    const pfns = [0, 1, 2, 3].map(() => alloc.allocPages(0));
    const frees: { pfn: number; order: number }[] = [];
    bus.on("mm_page_free", (e) => frees.push({ ...e }));
    alloc.beginFreeBatch();
    for (const p of pfns) {
      ps.refcount[p] = 0;
      alloc.freePages(p, 0, true);
    }
    expect(frees).toEqual(pfns.map((pfn) => ({ pfn, order: 0 }))); // at once, not at the end
    alloc.endFreeBatch();
    expect(frees.length).toBe(4);
  });

  it("merges a run freed in a batch into one block, and reports a bad page when the batch ends", () => {
    const x = mk();
    const pfns: number[] = [];
    for (let i = 0; i < 512; i++) pfns.push(x.alloc.allocPages(0));
    expect(pfns[511]).toBe((pfns[0] as number) + 511);
    const freeBefore = x.alloc.nrFreePages;
    x.alloc.beginFreeBatch();
    for (const p of pfns) {
      x.ps.refcount[p] = 0;
      x.alloc.freePages(p, 0, true);
    }
    x.alloc.endFreeBatch();
    expect(x.alloc.nrFreePages).toBe(freeBefore + 512);
    expect(x.alloc.isFree(pfns[0] as number)).toBe(true);

    const p = x.alloc.allocPages(0);
    x.alloc.beginFreeBatch();
    x.ps.refcount[p] = 0;
    x.ps.mapcount[p] = 1; // still mapped: a bad page
    x.alloc.freePages(p, 0, true);
    expect(() => x.alloc.endFreeBatch()).toThrow(BugError);
    expect(() => x.alloc.endFreeBatch()).toThrow(/free-batch-unbalanced|without beginFreeBatch/);
  });
});
