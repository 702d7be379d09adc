import { describe, expect, it } from "vitest";
import { useLeakGuard } from "../../../test/leak-guard";
import { GFP, HPAGE_PMD_ORDER, MADV_DONTNEED, type Machine, PG, type Task } from "../../index";
import { ringSubsystem } from "../../pinpage/__tests__/ring";
import { FOLL } from "../../pinpage/pinpage";
import { COMPACT } from "../compaction";
import { MiB, mapping, PRIV, pattern, RW, thrown } from "./helpers";

const boot = useLeakGuard();

/** Fill `mib` of private memory with a pattern, then drop all but one page in `keepEvery`. */
async function fragment(m: Machine, t: Task, mib: number, keepEvery: number): Promise<{ va: number; kept: number[] }> {
  const va = t.mm.mmap(0, mib * MiB, RW, PRIV);
  const n = (mib * MiB) / 4096;
  for (let i = 0; i < n; i++) await m.mm.write(t, va + i * 4096, pattern(64, i));
  // Keep one page in `keepEvery` by pfn, so that every pageblock keeps some.
  const kept: number[] = [];
  for (let i = 0; i < n; i++) {
    if (mapping(t, va + i * 4096)!.pfn % keepEvery === 0) kept.push(i);
    else t.mm.madvise(va + i * 4096, 4096, MADV_DONTNEED);
  }
  return { va, kept };
}

async function checkKept(m: Machine, t: Task, va: number, kept: number[]): Promise<void> {
  for (const i of kept) expect(Buffer.compare(await m.mm.read(t, va + i * 4096, 64), pattern(64, i)), `page ${i}`).toBe(0);
}

describe("compaction", () => {
  it("compactZone migrates scattered LRU pages and forms an order-9 block", async () => {
    const m = boot({ ramMiB: [32] });
    const t = m.mm.spawn();
    const { va, kept } = await fragment(m, t, 30, 16);
    const z = m.alloc.zones[0]!;
    expect(z.nrFree[9]! + z.nrFree[10]!).toBe(0);
    expect(m.alloc.allocPages(HPAGE_PMD_ORDER, GFP.TRANSHUGE | GFP.NORETRY)).toBe(-1);
    const r = m.mm.compaction.compactZone(z, HPAGE_PMD_ORDER);
    expect(r.status).toBe(COMPACT.SUCCESS);
    expect(r.migrated).toBeGreaterThan(0);
    expect(r.failed).toBe(0);
    expect(m.vmstat.c.compact_success).toBe(1);
    expect(m.vmstat.c.compact_migrate_scanned).toBe(r.migrateScanned);
    expect(m.vmstat.c.compact_free_scanned).toBe(r.freeScanned);
    expect(m.vmstat.c.compact_isolated).toBe(r.isolated);
    expect(m.vmstat.c.pgmigrate_success).toBe(r.migrated);
    const thp = m.alloc.allocPages(HPAGE_PMD_ORDER, GFP.TRANSHUGE | GFP.NORETRY);
    expect(thp).toBeGreaterThanOrEqual(0);
    m.mm.refs.putPage(thp);
    await checkKept(m, t, va, kept);
  });

  it("the allocator's slow path compacts for order > 0 (compact_stall)", async () => {
    const m = boot({ ramMiB: [32] });
    const t = m.mm.spawn();
    const { va, kept } = await fragment(m, t, 30, 16);
    const thp = m.alloc.allocPages(HPAGE_PMD_ORDER, GFP.TRANSHUGE);
    expect(thp).toBeGreaterThanOrEqual(0);
    expect(m.vmstat.c.compact_stall).toBeGreaterThanOrEqual(1);
    expect(m.vmstat.c.compact_success).toBeGreaterThanOrEqual(1);
    m.mm.refs.putPage(thp);
    await checkKept(m, t, va, kept);
  });

  it("skips DMA-pinned pages and counts them; they stay where they are", async () => {
    const m = boot({ ramMiB: [32] });
    const t = m.mm.spawn();
    const { va, kept } = await fragment(m, t, 30, 16);
    // Pin the kept page the migrate scanner meets first (the lowest pfn).
    const low = kept.reduce((a, b) => (mapping(t, va + b * 4096)!.pfn < mapping(t, va + a * 4096)!.pfn ? b : a));
    const pins = new Float64Array(1);
    await m.mm.pinpage.pinUserPages(t.mm, va + low * 4096, 1, FOLL.WRITE, pins);
    const r = m.mm.compaction.compactZone(m.alloc.zones[0]!, HPAGE_PMD_ORDER);
    expect(r.pinnedSkipped).toBe(1);
    expect(r.status).toBe(COMPACT.SUCCESS);
    expect(mapping(t, va + low * 4096)!.pfn).toBe(pins[0]);
    m.mm.pinpage.unpinUserPages(pins, 1);
    await checkKept(m, t, va, kept);
  });

  it("moves pinned-movable pages through their owner", async () => {
    const m = boot({ ramMiB: [32] });
    const t = m.mm.spawn();
    // Subsystem pages interleaved with user pages, in every pageblock.
    const ring = ringSubsystem(m, "ring", 0);
    const va = t.mm.mmap(0, 30 * MiB, RW, PRIV);
    for (let i = 0; i < 7680; i++) {
      await m.mm.write(t, va + i * 4096, pattern(16, i));
      if (i % 64 === 0) {
        const p = m.alloc.allocPages(0);
        m.contents.write(p, 0, pattern(4096, 100 + ring.slots.length));
        m.mm.pinpage.setPinpage(ring.sys, p, ring.slots.length);
        ring.slots.push(p);
      }
    }
    t.mm.madvise(va, 30 * MiB, MADV_DONTNEED);
    expect(m.alloc.allocPages(HPAGE_PMD_ORDER, GFP.TRANSHUGE | GFP.NORETRY)).toBe(-1);
    const r = m.mm.compaction.compactZone(m.alloc.zones[0]!, HPAGE_PMD_ORDER);
    expect(r.status).toBe(COMPACT.SUCCESS);
    expect(ring.state.migrations).toBeGreaterThan(0);
    ring.check();
    ring.release();
  });

  it("rejects a foreign zone and a bad order", () => {
    const m = boot({ ramMiB: [16] });
    const other = boot({ ramMiB: [16] });
    expect(thrown(() => m.mm.compaction.compactZone(other.alloc.zones[0]!, 9)).code).toBe("EINVAL");
    expect(thrown(() => m.mm.compaction.compactZone(m.alloc.zones[0]!, 11)).code).toBe("EINVAL");
  });
});

/** Use every page above the CMA area, so that the next allocations land in it. */
async function fillAboveCma(m: Machine): Promise<Task> {
  const filler = m.mm.spawn();
  const n = m.alloc.zones[0]!.npages - m.mm.cma.area!.count - 1;
  const fva = filler.mm.mmap(0, n * 4096, RW, PRIV);
  await m.mm.touch(filler, fva, n * 4096, true);
  return filler;
}

describe("CMA and offlining", () => {
  it("validates cmaMiB", () => {
    expect(thrown(() => boot({ ramMiB: [16], cmaMiB: 3 })).arg).toBe("config.cmaMiB");
    expect(thrown(() => boot({ ramMiB: [16], cmaMiB: 16 })).arg).toBe("config.cmaMiB");
  });

  it("cmaAlloc migrates pinned-movable and LRU pages out of the area", async () => {
    const m = boot({ ramMiB: [32], cmaMiB: 8 });
    const area = m.mm.cma.area!;
    expect(area).toMatchObject({ basePfn: m.alloc.zones[0]!.startPfn, count: 2048 });
    const filler = await fillAboveCma(m);
    const ring = ringSubsystem(m, "ring", 8);
    expect(ring.slots.every((p) => m.mm.cma.isCmaPfn(p))).toBe(true);
    const t = m.mm.spawn();
    const va = t.mm.mmap(0, 4 * MiB, RW, PRIV);
    const data = pattern(4 * MiB, 11);
    await m.mm.write(t, va, data);
    expect(m.mm.cma.isCmaPfn(mapping(t, va)!.pfn)).toBe(true);
    m.mm.exit(filler);
    const pfn = m.mm.cma.cmaAlloc(2048, HPAGE_PMD_ORDER);
    expect(pfn).toBe(area.basePfn);
    expect(m.vmstat.c.cma_alloc_success).toBe(1);
    expect(ring.state.migrations).toBe(8);
    expect(ring.slots.some((p) => m.mm.cma.isCmaPfn(p))).toBe(false);
    for (let p = pfn; p < pfn + 2048; p++) expect(m.pages.refcount[p]).toBe(1);
    ring.check();
    expect(Buffer.compare(await m.mm.read(t, va, 4 * MiB), data)).toBe(0);
    for (let i = 0; i < 1024; i++) expect(m.mm.cma.isCmaPfn(mapping(t, va + i * 4096)!.pfn)).toBe(false);
    // The area is in use: a second allocation fails; release makes it available again.
    expect(m.mm.cma.cmaAlloc(512, 0)).toBe(-1);
    expect(m.vmstat.c.cma_alloc_fail).toBe(1);
    expect(m.mm.cma.cmaRelease(pfn, 2048)).toBe(true);
    expect(m.mm.cma.cmaRelease(pfn, 2048)).toBe(false);
    ring.release();
  });

  it("cmaAlloc cannot take a range holding a DMA-pinned page; it can once unpinned", async () => {
    const m = boot({ ramMiB: [32], cmaMiB: 8 });
    const filler = await fillAboveCma(m);
    const t = m.mm.spawn();
    const va = t.mm.mmap(0, 4096, RW, PRIV);
    await m.mm.write(t, va, new Uint8Array([5]));
    const pins = new Float64Array(1);
    await m.mm.pinpage.pinUserPages(t.mm, va, 1, FOLL.WRITE, pins);
    const pinned = pins[0] as number;
    expect(m.mm.cma.isCmaPfn(pinned)).toBe(true);
    m.mm.exit(filler);
    expect(m.mm.cma.cmaAlloc(2048, HPAGE_PMD_ORDER)).toBe(-1);
    expect(m.vmstat.c.cma_alloc_fail).toBe(1);
    expect(mapping(t, va)!.pfn).toBe(pinned);
    expect((await m.mm.read(t, va, 1))[0]).toBe(5);
    m.mm.pinpage.unpinUserPages(pins, 1);
    const pfn = m.mm.cma.cmaAlloc(2048, HPAGE_PMD_ORDER);
    expect(pfn).toBe(m.mm.cma.area!.basePfn);
    expect(mapping(t, va)!.pfn).not.toBe(pinned);
    expect((await m.mm.read(t, va, 1))[0]).toBe(5);
    m.mm.cma.cmaRelease(pfn, 2048);
  });

  it("offlinePages reports the pages it cannot move and offlines movable ranges", async () => {
    const m = boot({ ramMiB: [32] });
    const t = m.mm.spawn();
    const n = 600;
    const va = t.mm.mmap(0, n * 4096, RW, PRIV);
    await m.mm.write(t, va, pattern(n * 4096, 8));
    const pins = new Float64Array(1);
    await m.mm.pinpage.pinUserPages(t.mm, va, 1, FOLL.WRITE, pins);
    const pinned = pins[0] as number;
    const movable = mapping(t, va + (n - 1) * 4096)!.pfn;
    const kernel = m.alloc.allocPages(0);
    const block = (p: number) => p - (p % 512);
    expect(block(pinned)).not.toBe(block(movable));
    expect(block(kernel)).toBe(block(movable));
    const r = m.mm.cma.offlinePages(block(pinned), 512);
    expect(r.ret).toBe(-16);
    expect(r.busyPfns).toContain(pinned);
    expect(r.busyPfns).toContain(m.mm.zeroPfn);
    expect(m.mm.cma.offlinePages(block(movable), 512)).toEqual({ ret: -16, busyPfns: [kernel] });
    m.mm.pinpage.unpinUserPages(pins, 1);
    m.mm.refs.putPage(kernel);
    const free0 = m.alloc.nrFreePages;
    expect(m.mm.cma.offlinePages(block(movable), 512)).toEqual({ ret: 0, busyPfns: [] });
    expect(m.alloc.nrFreePages).toBe(free0 - 512);
    expect(m.pages.flags[movable]! & PG.reserved).toBeTruthy();
    expect(block(mapping(t, va + (n - 1) * 4096)!.pfn)).not.toBe(block(movable));
    expect(Buffer.compare(await m.mm.read(t, va, n * 4096), pattern(n * 4096, 8))).toBe(0);
    expect(thrown(() => m.mm.cma.offlinePages(block(movable), 512)).code).toBe("EINVAL");
    m.mm.cma.onlinePages(block(movable), 512);
    expect(m.alloc.nrFreePages).toBe(free0);
  });
});
