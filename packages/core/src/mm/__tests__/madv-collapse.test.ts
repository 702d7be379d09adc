import { describe, expect, it } from "vitest";
import { isHuge, MADV_COLLAPSE, MADV_NOHUGEPAGE, MAP_ANONYMOUS, MAP_PRIVATE, Machine, PMD_SIZE, PROT_READ, PROT_WRITE } from "../../index";

describe("MADV_COLLAPSE", () => {
  it("collapses a sparsely populated range into one THP with the same bytes, regardless of THP mode", async () => {
    const m = Machine.create({ ramMiB: [64], thp: "never", khugepagedMaxPtesNone: 0 });
    const t = m.mm.spawn();
    const va = t.mm.mmap(0, 2 * PMD_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
    for (const off of [0, 4096 * 7, 4096 * 300]) await m.mm.write(t, va + off, new Uint8Array([1, 2, 3]));
    expect(isHuge(t.mm.pt.getPmd(va))).toBe(false);
    const anon0 = m.vmstat.c.nr_anon_pages;
    t.mm.madvise(va, PMD_SIZE, MADV_COLLAPSE);
    expect(isHuge(t.mm.pt.getPmd(va))).toBe(true);
    expect(m.vmstat.c.thp_collapse_alloc).toBe(1);
    expect(m.vmstat.c.nr_anon_pages).toBe(anon0 - 3 + 512);
    for (const off of [0, 4096 * 7, 4096 * 300]) expect(Array.from(await m.mm.read(t, va + off, 3))).toEqual([1, 2, 3]);
    expect(Array.from(await m.mm.read(t, va + 4096, 2))).toEqual([0, 0]);
    m.dispose();
  });

  it("refuses NOHUGEPAGE ranges with EINVAL and pages it cannot collapse with EAGAIN", async () => {
    const m = Machine.create({ ramMiB: [64] });
    const t = m.mm.spawn();
    const va = t.mm.mmap(0, PMD_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
    await m.mm.write(t, va, new Uint8Array([5]));
    const c = m.mm.fork(t); // the page is now shared with the child: not exclusive, not collapsible
    expect(() => t.mm.madvise(va, PMD_SIZE, MADV_COLLAPSE)).toThrow(expect.objectContaining({ code: "EAGAIN" }));
    m.mm.exit(c);
    t.mm.madvise(va, PMD_SIZE, MADV_NOHUGEPAGE);
    expect(() => t.mm.madvise(va, PMD_SIZE, MADV_COLLAPSE)).toThrow(expect.objectContaining({ code: "EINVAL" }));
    m.dispose();
  });
});
