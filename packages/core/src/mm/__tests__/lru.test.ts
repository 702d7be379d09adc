import { describe, expect, it } from "vitest";
import { Machine } from "../../machine";
import { LRU_ACTIVE_ANON, LRU_INACTIVE_ANON } from "../lru";

describe("Lru", () => {
  it("keeps each node's folios on that node's lists, with lookups alternating between nodes", () => {
    const m = Machine.create({ ramMiB: [8, 8], seed: 1 });
    const lru = m.mm.lru;
    const before = [0, 1].map((nid) => lru.vecs[nid]?.nrPages[LRU_INACTIVE_ANON] ?? 0);
    const pages: [number, number][] = [];
    for (let i = 0; i < 6; i++) {
      const nid = i % 2;
      const pfn = m.alloc.allocPages(0, 0, nid);
      expect(m.alloc.zoneOf(pfn)?.nid).toBe(nid);
      lru.add(pfn, i === 5);
      pages.push([pfn, nid]);
    }
    expect(lru.vecs[0]?.nrPages[LRU_INACTIVE_ANON]).toBe((before[0] as number) + 3);
    expect(lru.vecs[1]?.nrPages[LRU_INACTIVE_ANON]).toBe((before[1] as number) + 2);
    expect(lru.vecs[1]?.nrPages[LRU_ACTIVE_ANON]).toBe(1);
    // The newest inactive folio of each node heads its list; its neighbour is the node's previous one.
    expect((lru.vecs[0]?.head[LRU_INACTIVE_ANON] as number) - 1).toBe(pages[4]?.[0]);
    expect((lru.vecs[1]?.head[LRU_INACTIVE_ANON] as number) - 1).toBe(pages[3]?.[0]);
    expect(lru.prevOf(pages[2]?.[0] as number)).toBe(pages[4]?.[0]);
    for (const [pfn] of pages) lru.del(pfn);
    expect(lru.vecs[0]?.nrPages[LRU_INACTIVE_ANON]).toBe(before[0]);
    expect(lru.vecs[1]?.nrPages[LRU_INACTIVE_ANON]).toBe(before[1]);
    expect(lru.vecs[1]?.nrPages[LRU_ACTIVE_ANON]).toBe(0);
    m.dispose();
  });
});
