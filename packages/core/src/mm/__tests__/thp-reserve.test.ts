import { describe, expect, it } from "vitest";
import {
  isHuge,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  Machine,
  type MachineConfig,
  MREMAP_FIXED,
  MREMAP_MAYMOVE,
  PMD_SIZE,
  PROT_READ,
  PROT_WRITE,
} from "../../index";

const RW = PROT_READ | PROT_WRITE;
const ANON = MAP_PRIVATE | MAP_ANONYMOUS;

function boot(cfg: MachineConfig = {}) {
  return Machine.create({ ramMiB: [64], thp: "always", thpPromotionThreshold: 4, thpPromotion: "fault", ...cfg });
}

describe("THP reservations (seed 002)", () => {
  it("the first write fault reserves an aligned block; later faults map from it", async () => {
    const m = boot();
    const t = m.mm.spawn();
    const va = t.mm.mmap(0, 4 << 20, RW, ANON);
    await m.mm.write(t, va + 5 * 4096, new Uint8Array([1]));
    const v = m.vmstat.c;
    expect([v.thp_res_alloc, v.nr_thp_reserved, v.thp_fault_alloc]).toEqual([1, 511, 0]);
    const res = [...m.mm.thpRes.of(t.mm).values()][0];
    expect(res?.haddr).toBe(va);
    expect(res!.base % 512).toBe(0);
    expect(m.mm.fault.followPte(t.mm, va + 5 * 4096, false)).toBe(res!.base + 5);
    await m.mm.write(t, va + 9 * 4096, new Uint8Array([2]));
    expect(m.mm.fault.followPte(t.mm, va + 9 * 4096, false)).toBe(res!.base + 9);
    expect([v.thp_res_alloc, v.nr_thp_reserved]).toEqual([1, 510]);
    m.dispose();
  });

  it("read faults map the zero page and reserve nothing", async () => {
    const m = boot({ useZeroPage: true });
    const t = m.mm.spawn();
    const va = t.mm.mmap(0, 2 << 20, RW, ANON);
    expect((await m.mm.read(t, va + 100, 1))[0]).toBe(0);
    expect(m.vmstat.c.thp_res_alloc).toBe(0);
    expect(m.vmstat.c.nr_thp_reserved).toBe(0);
    m.dispose();
  });

  it("promotes in place at the threshold: one PMD, same block, data kept, counters exact", async () => {
    const m = boot();
    const t = m.mm.spawn();
    const va = t.mm.mmap(0, 2 << 20, RW, ANON);
    for (let i = 0; i < 3; i++) await m.mm.write(t, va + i * 8192, new Uint8Array([10 + i]));
    const base = [...m.mm.thpRes.of(t.mm).values()][0]!.base;
    expect(isHuge(t.mm.pt.getPmd(va))).toBe(false);
    await m.mm.write(t, va + 100 * 4096, new Uint8Array([99]));
    const v = m.vmstat.c;
    expect(v.res_pages_collapsed).toBe(1);
    expect(isHuge(t.mm.pt.getPmd(va))).toBe(true);
    expect(m.mm.fault.followPte(t.mm, va, false)).toBe(base);
    expect([v.nr_thp_reserved, v.nr_anon_transparent_hugepages, v.nr_anon_pages]).toEqual([0, 1, 512]);
    expect(t.mm.rssAnon).toBe(512);
    expect(Array.from(await m.mm.read(t, va, 1))).toEqual([10]);
    expect(Array.from(await m.mm.read(t, va + 4 * 4096, 1))).toEqual([12]);
    expect(Array.from(await m.mm.read(t, va + 100 * 4096, 1))).toEqual([99]);
    expect(Array.from(await m.mm.read(t, va + 4096, 1))).toEqual([0]); // an unused reserved page, zeroed
    expect([m.pages.refcount[base], m.mm.rmap.entireMapcount(base)]).toEqual([1, 1]);
    const free0 = m.alloc.nrFreePages;
    m.mm.exit(t);
    expect(m.alloc.nrFreePages).toBe(free0 + 512);
    m.dispose();
  });

  it("khugepaged promotes on the clock, not at the fault", async () => {
    const m = boot({ thpPromotion: "khugepaged", khugepagedScanSleepMs: 10 });
    const t = m.mm.spawn();
    const va = t.mm.mmap(0, 2 << 20, RW, ANON);
    for (let i = 0; i < 4; i++) await m.mm.write(t, va + i * 4096, new Uint8Array([1 + i]));
    expect(m.vmstat.c.res_pages_collapsed).toBe(0);
    await m.clock.runUntil(11e6);
    expect(m.vmstat.c.res_pages_collapsed).toBe(1);
    expect(isHuge(t.mm.pt.getPmd(va))).toBe(true);
    expect(Array.from(await m.mm.read(t, va, 4))).toEqual([1, 0, 0, 0]);
    m.dispose();
  });

  it("memory pressure drops every reservation and the allocation then succeeds", async () => {
    const m = boot({ ramMiB: [16], thpPromotionThreshold: 512 });
    const t = m.mm.spawn();
    const va = t.mm.mmap(0, 8 << 20, RW, ANON);
    for (let r = 0; r < 4; r++) await m.mm.write(t, va + r * PMD_SIZE, new Uint8Array([r]));
    expect(m.vmstat.c.nr_thp_reserved).toBe(4 * 511);
    // Eat the rest of memory with another task's base pages; the allocator's slow path must release reservations.
    const u = m.mm.spawn();
    const big = u.mm.mmap(0, 14 << 20, RW, MAP_PRIVATE | MAP_ANONYMOUS);
    let touched = 0;
    try {
      for (; touched < (14 << 20) / 4096; touched++) await m.mm.write(u, big + touched * 4096, new Uint8Array([1]));
    } catch (e) {
      expect((e as { code: string }).code).toBe("ENOMEM");
    }
    expect(m.vmstat.c.nr_thp_reserved).toBe(0);
    expect(m.mm.thpRes.of(t.mm).size).toBe(0);
    expect(touched).toBeGreaterThan(1000);
    for (let r = 0; r < 4; r++) expect((await m.mm.read(t, va + r * PMD_SIZE, 1))[0]).toBe(r);
    m.dispose();
  });

  it("after fork the reservation stays with the parent; the child's COW never uses it", async () => {
    const m = boot({ thpPromotionThreshold: 8 });
    const p = m.mm.spawn();
    const va = p.mm.mmap(0, 2 << 20, RW, ANON);
    await m.mm.write(p, va, new Uint8Array([5]));
    const base = [...m.mm.thpRes.of(p.mm).values()][0]!.base;
    const c = m.mm.fork(p);
    expect(m.mm.thpRes.of(c.mm).size).toBe(0);
    await m.mm.write(c, va + 4096, new Uint8Array([6]));
    await m.mm.write(c, va, new Uint8Array([7]));
    const childPfns = [m.mm.fault.followPte(c.mm, va, false), m.mm.fault.followPte(c.mm, va + 4096, false)];
    for (const pfn of childPfns) expect(pfn >= base && pfn < base + 512).toBe(false);
    // The parent keeps its reservation (one page used); the child's own new faults may reserve a block of its own.
    expect([...m.mm.thpRes.of(p.mm).values()].map((r) => [r.base, r.nrUsed])).toEqual([[base, 1]]);
    expect((await m.mm.read(p, va, 1))[0]).toBe(5);
    m.dispose();
  });

  it("munmap of a reserved range releases it; exit leaves no page behind", async () => {
    const m = boot();
    const free0 = m.alloc.nrFreePages;
    const t = m.mm.spawn();
    const va = t.mm.mmap(0, 4 << 20, RW, ANON);
    await m.mm.write(t, va, new Uint8Array([1]));
    await m.mm.write(t, va + PMD_SIZE, new Uint8Array([1]));
    expect(m.vmstat.c.nr_thp_reserved).toBe(1022);
    t.mm.munmap(va, 4096);
    expect(m.vmstat.c.nr_thp_reserved).toBe(511);
    m.mm.exit(t);
    expect(m.vmstat.c.nr_thp_reserved).toBe(0);
    expect(m.alloc.nrFreePages).toBe(free0);
    m.dispose();
  });

  it("mremap drops the moved range's reservation (the RFC: mremap releases it); data moves intact", async () => {
    const m = boot({ thpPromotionThreshold: 8 });
    const free0 = m.alloc.nrFreePages;
    const t = m.mm.spawn();
    const va = t.mm.mmap(0, 2 << 20, RW, ANON);
    await m.mm.write(t, va + 4096, new Uint8Array([77]));
    expect(m.vmstat.c.nr_thp_reserved).toBe(511);
    const nva = t.mm.mremap(va, 2 << 20, 2 << 20, MREMAP_MAYMOVE | MREMAP_FIXED, va + 8 * PMD_SIZE);
    expect(m.vmstat.c.nr_thp_reserved).toBe(0);
    expect(m.mm.thpRes.of(t.mm).size).toBe(0);
    expect((await m.mm.read(t, nva + 4096, 1))[0]).toBe(77);
    m.mm.exit(t);
    expect(m.alloc.nrFreePages).toBe(free0);
    m.dispose();
  });
});
