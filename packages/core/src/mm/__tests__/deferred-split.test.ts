import { describe, expect, it } from "vitest";
import { MADV_HUGEPAGE, MAP_ANONYMOUS, MAP_PRIVATE, Machine, PMD_SIZE, PROT_READ, PROT_WRITE } from "../../index";

describe("deferred split of partly unmapped THPs", () => {
  async function partlyUnmapped(ramMiB = 64) {
    const m = Machine.create({ ramMiB: [ramMiB] });
    const free0 = m.alloc.nrFreePages;
    const t = m.mm.spawn();
    const va = t.mm.mmap(0, PMD_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
    t.mm.madvise(va, PMD_SIZE, MADV_HUGEPAGE);
    const data = new Uint8Array(PMD_SIZE).map((_, i) => (i * 31) & 0xff);
    await m.mm.write(t, va, data);
    expect(m.vmstat.c.thp_fault_alloc).toBe(1);
    t.mm.munmap(va + PMD_SIZE / 2, PMD_SIZE / 2);
    return { m, t, va, data, free0 };
  }

  it("a partial munmap queues the THP; its unmapped half stays allocated until the shrinker splits it", async () => {
    const { m, t, va, data, free0 } = await partlyUnmapped();
    expect(m.vmstat.c.thp_deferred_split_page).toBe(1);
    const before = m.alloc.nrFreePages;
    expect(free0 - before).toBe(512); // the whole folio is still allocated
    expect(m.mm.huge.deferredSplitScan()).toBe(256);
    expect(m.vmstat.c.thp_split_page).toBe(1);
    expect(m.alloc.nrFreePages).toBe(before + 256);
    expect(await m.mm.read(t, va, PMD_SIZE / 2)).toEqual(data.subarray(0, PMD_SIZE / 2));
    m.mm.exit(t);
    expect(m.alloc.nrFreePages).toBe(free0);
    m.dispose();
  });

  it("memory pressure runs the split: an allocation that would fail succeeds", async () => {
    const { m, t, va, data } = await partlyUnmapped(16);
    // Use up free memory, then ask for more: the slow path's shrinkers split the queued THP.
    const u = m.mm.spawn();
    const len = 14 << 20;
    const big = u.mm.mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
    // 14 MiB fits only if the unmapped half of the THP (1 MiB) is given back.
    await m.mm.touch(u, big, len, true);
    expect(m.vmstat.c.thp_split_page).toBe(1);
    expect(await m.mm.read(t, va, PMD_SIZE / 2)).toEqual(data.subarray(0, PMD_SIZE / 2));
    m.dispose();
  });
});
