import { describe, expect, it } from "vitest";
import { useLeakGuard } from "../../../test/leak-guard";
import { validateMachineConfig } from "../../config";
import type { Machine } from "../../machine";
import { FOLL } from "../../pinpage/pinpage";
import { entryPayload, SWP, swpType } from "../page-table";
import { MiB, mapping, PRIV, pattern, RW, SHARED, thrown } from "./helpers";

const boot = useLeakGuard();

function swapEntryAt(m: Machine, t: ReturnType<Machine["mm"]["spawn"]>, va: number): number {
  const e = t.mm.pt.getPte(va);
  return swpType(e) === SWP.SWAP ? entryPayload(e) : -1;
}

function slotsInUse(m: Machine): number {
  return m.mm.swap.device?.inusePages ?? 0;
}

describe("swap: config", () => {
  it("swapMiB is validated, default 0 (no swap device)", () => {
    expect(validateMachineConfig({}).swapMiB).toBe(0);
    expect(thrown(() => validateMachineConfig({ swapMiB: -1 })).arg).toBe("config.swapMiB");
    expect(thrown(() => validateMachineConfig({ swapMiB: 1.5 })).code).toBe("EINVAL");
    const m = boot({ ramMiB: [8] });
    expect(m.mm.swap.device).toBeUndefined();
    expect(m.mm.swapIn).toBeUndefined();
  });
});

describe("swap-out and swap-in", () => {
  it("reclaimPages swaps a page out to the device and the next access swaps it back in", async () => {
    const m = boot({ ramMiB: [16], swapMiB: 4 });
    const t = m.mm.spawn();
    const va = t.mm.mmap(0, 4 * 4096, RW, PRIV);
    const data = pattern(4 * 4096, 3);
    await m.mm.write(t, va, data);
    const pfn = mapping(t, va + 4096)!.pfn;
    const free0 = m.alloc.nrFreePages;
    expect(m.mm.vmscan.reclaimPages([pfn])).toBe(1);
    expect(m.alloc.nrFreePages).toBe(free0 + 1);
    const slot = swapEntryAt(m, t, va + 4096);
    expect(slot).toBeGreaterThan(0);
    expect(m.mm.swap.device!.swapCount(slot)).toBe(1);
    expect(m.vmstat.c.pswpout).toBe(1);
    expect(t.mm.rssAnon).toBe(3);
    expect(Buffer.compare(await m.mm.read(t, va, data.length), data)).toBe(0);
    expect(m.vmstat.c.pswpin).toBe(1);
    expect(m.vmstat.c.pgmajfault).toBe(1);
    expect(slotsInUse(m)).toBe(0);
    // A single mapping comes back exclusive and writable: no COW on the next write.
    const back = mapping(t, va + 4096)!;
    expect(back.write).toBe(true);
    await m.mm.write(t, va + 4096, new Uint8Array([9]));
    expect(mapping(t, va + 4096)!.pfn).toBe(back.pfn);
  });

  it("memory pressure: direct reclaim swaps out and every byte comes back", async () => {
    const m = boot({ ramMiB: [16], swapMiB: 32 });
    const t = m.mm.spawn();
    const len = 24 * MiB;
    const va = t.mm.mmap(0, len, RW, PRIV);
    for (let off = 0; off < len; off += MiB) await m.mm.write(t, va + off, pattern(MiB, off / MiB));
    expect(m.vmstat.c.allocstall_normal).toBeGreaterThan(0);
    expect(m.vmstat.c.pgsteal_direct).toBeGreaterThan(0);
    expect(m.vmstat.c.pswpout).toBeGreaterThan(2048);
    for (let off = 0; off < len; off += MiB) {
      const got = await m.mm.read(t, va + off, MiB);
      expect(Buffer.compare(got, pattern(MiB, off / MiB)), `MiB ${off / MiB}`).toBe(0);
    }
    expect(m.vmstat.c.pswpin).toBeGreaterThan(0);
    expect(m.vmstat.c.pgmajfault).toBe(m.vmstat.c.pswpin);
    await m.run();
    m.mm.exit(t);
    expect(slotsInUse(m)).toBe(0);
  });

  it("kswapd wakes at the low watermark and reclaims on the clock up to the high watermark", async () => {
    const m = boot({ ramMiB: [16], swapMiB: 16 });
    const z = m.alloc.zones[0]!;
    const t = m.mm.spawn();
    const n = z.freePages - z.watermark.low + 8;
    const va = t.mm.mmap(0, n * 4096, RW, PRIV);
    await m.mm.write(t, va, pattern(n * 4096, 5));
    expect(z.freePages).toBeLessThan(z.watermark.low);
    expect(m.mm.vmscan.kswapdAwake(0)).toBe(true);
    expect(m.vmstat.c.pageoutrun).toBe(1);
    const t0 = m.clock.now;
    await m.run();
    expect(z.freePages).toBeGreaterThanOrEqual(z.watermark.high);
    expect(m.clock.now).toBeGreaterThan(t0);
    expect(m.vmstat.c.pgscan_kswapd).toBeGreaterThan(0);
    expect(m.vmstat.c.pgsteal_kswapd).toBeGreaterThan(0);
    expect(m.vmstat.c.pgsteal_kswapd).toBe(m.vmstat.c.pswpout);
    expect(Buffer.compare(await m.mm.read(t, va, n * 4096), pattern(n * 4096, 5))).toBe(0);
    await m.run();
    m.mm.exit(t);
    expect(slotsInUse(m)).toBe(0);
  });

  it("LRU aging: a page referenced twice is activated, an idle one is reclaimed", async () => {
    const m = boot({ ramMiB: [16], swapMiB: 4 });
    const t = m.mm.spawn();
    const va = t.mm.mmap(0, 2 * 4096, RW, PRIV);
    await m.mm.write(t, va, pattern(2 * 4096, 1));
    const hot = mapping(t, va)!.pfn;
    const cold = mapping(t, va + 4096)!.pfn;
    // First scan: both young (fault-time accessed bit) → marked referenced, kept.
    expect(m.mm.vmscan.shrinkInactiveList(0, 2, true)).toBe(0);
    await m.mm.read(t, va, 1); // touch the hot page again
    const act0 = m.vmstat.c.pgactivate;
    expect(m.mm.vmscan.shrinkInactiveList(0, 2, true)).toBe(1);
    expect(m.vmstat.c.pgactivate).toBe(act0 + 1);
    expect(mapping(t, va)!.pfn).toBe(hot);
    expect(swapEntryAt(m, t, va + 4096)).toBeGreaterThan(0);
    expect(m.pages.flags[hot]! & 0x10).toBeTruthy(); // PG_active
    expect(cold).not.toBe(hot);
    // Aging moves it back to the inactive list.
    expect(m.mm.vmscan.shrinkActiveList(0, 32)).toBe(1);
    expect(m.vmstat.c.pgdeactivate).toBe(1);
    m.mm.exit(t);
    expect(slotsInUse(m)).toBe(0);
  });

  it("fork sharing stays exact: swap count = mappings, both read the same bytes, counts back to 0", async () => {
    const m = boot({ ramMiB: [16], swapMiB: 4 });
    const parent = m.mm.spawn();
    const va = parent.mm.mmap(0, 8 * 4096, RW, PRIV);
    const data = pattern(8 * 4096, 7);
    await m.mm.write(parent, va, data);
    const child = m.mm.fork(parent);
    const pfns = Array.from({ length: 8 }, (_, i) => mapping(parent, va + i * 4096)!.pfn);
    expect(m.mm.vmscan.reclaimPages(pfns)).toBe(8);
    const dev = m.mm.swap.device!;
    for (let i = 0; i < 8; i++) {
      const s = swapEntryAt(m, parent, va + i * 4096);
      expect(swapEntryAt(m, child, va + i * 4096)).toBe(s);
      expect(dev.swapCount(s)).toBe(2);
    }
    // Fork of a swapped-out range duplicates the counts.
    const grandchild = m.mm.fork(child);
    expect(dev.swapCount(swapEntryAt(m, parent, va))).toBe(3);
    m.mm.exit(grandchild);
    expect(dev.swapCount(swapEntryAt(m, parent, va))).toBe(2);
    // The child's fault maps the page into both: one read, shared, read-only.
    expect(Buffer.compare(await m.mm.read(child, va, data.length), data)).toBe(0);
    expect(m.vmstat.c.pswpin).toBe(8);
    for (let i = 0; i < 8; i++) {
      const c = mapping(child, va + i * 4096)!;
      const p = mapping(parent, va + i * 4096)!;
      expect(c.pfn).toBe(p.pfn);
      expect(c.write || p.write).toBe(false);
      expect(m.pages.mapcount[c.pfn]).toBe(2);
      expect(m.pages.refcount[c.pfn]).toBe(2);
    }
    expect(Buffer.compare(await m.mm.read(parent, va, data.length), data)).toBe(0);
    expect(m.vmstat.c.pswpin).toBe(8);
    expect(slotsInUse(m)).toBe(0);
    // COW still separates them.
    await m.mm.write(child, va, new Uint8Array([0xee]));
    expect((await m.mm.read(parent, va, 1))[0]).toBe(data[0]);
    expect((await m.mm.read(child, va, 1))[0]).toBe(0xee);
    // Swap out again, exit one side while swapped: counts drop to 1, then 0.
    const again = Array.from({ length: 8 }, (_, i) => mapping(parent, va + i * 4096)!.pfn);
    m.mm.vmscan.reclaimPages(again);
    m.mm.exit(child);
    expect(Buffer.compare(await m.mm.read(parent, va, data.length), data)).toBe(0);
    m.mm.exit(parent);
    expect(slotsInUse(m)).toBe(0);
  });

  it("never swaps DMA-pinned pages, shmem pages or pages of a task without swap", async () => {
    const m = boot({ ramMiB: [16], swapMiB: 4 });
    const t = m.mm.spawn();
    const va = t.mm.mmap(0, 4 * 4096, RW, PRIV);
    await m.mm.write(t, va, pattern(4 * 4096, 2));
    const pins = new Float64Array(2);
    expect(await m.mm.pinpage.pinUserPages(t.mm, va, 2, FOLL.WRITE, pins)).toBe(2);
    const pfns = Array.from({ length: 4 }, (_, i) => mapping(t, va + i * 4096)!.pfn);
    expect(m.mm.vmscan.reclaimPages(pfns)).toBe(2);
    expect(mapping(t, va)!.present).toBe(true);
    expect(mapping(t, va + 4096)!.present).toBe(true);
    // Background reclaim at every priority leaves them too.
    for (let i = 0; i < 4; i++) m.mm.vmscan.shrinkNode(0, 0, true, 64);
    expect(mapping(t, va)!.pfn).toBe(pins[0]);
    expect(mapping(t, va + 4096)!.pfn).toBe(pins[1]);
    m.mm.pinpage.unpinUserPages(pins, 2);
    const s = t.mm.mmap(0, 4096, RW, SHARED);
    await m.mm.write(t, s, new Uint8Array([4]));
    expect(m.mm.vmscan.reclaimPages([mapping(t, s)!.pfn])).toBe(0);
    expect(Buffer.compare(await m.mm.read(t, va, 4 * 4096), pattern(4 * 4096, 2))).toBe(0);
    m.mm.exit(t);
    expect(slotsInUse(m)).toBe(0);
  });

  it("a full device stops reclaim (pages are activated, nothing is lost)", async () => {
    const m = boot({ ramMiB: [16], swapMiB: 1 });
    const t = m.mm.spawn();
    const va = t.mm.mmap(0, 300 * 4096, RW, PRIV);
    await m.mm.write(t, va, pattern(300 * 4096, 4));
    const pfns = Array.from({ length: 300 }, (_, i) => mapping(t, va + i * 4096)!.pfn);
    expect(m.mm.vmscan.reclaimPages(pfns)).toBe(255);
    expect(m.mm.swap.canReclaimAnon()).toBe(false);
    expect(m.mm.vmscan.tryToFreePages(m.alloc.zones[0]!, 0)).toBe(false);
    expect(Buffer.compare(await m.mm.read(t, va, 300 * 4096), pattern(300 * 4096, 4))).toBe(0);
    m.mm.exit(t);
    expect(slotsInUse(m)).toBe(0);
  });

  it("THP: reclaim splits a huge page and swaps its base pages", async () => {
    const m = boot({ ramMiB: [32], swapMiB: 8, thp: "always" });
    const t = m.mm.spawn();
    const va = t.mm.mmap(0, 4 * MiB, RW, PRIV);
    const base = va + ((2 * MiB - (va % (2 * MiB))) % (2 * MiB));
    await m.mm.write(t, base, pattern(2 * MiB, 9));
    const mp = mapping(t, base)!;
    expect(mp.huge).toBe(true);
    expect(m.mm.vmscan.reclaimPages([mp.pfn + 3])).toBe(1);
    expect(m.vmstat.c.thp_split_page).toBe(1);
    expect(swapEntryAt(m, t, base + 3 * 4096)).toBeGreaterThan(0);
    expect(Buffer.compare(await m.mm.read(t, base, 2 * MiB), pattern(2 * MiB, 9))).toBe(0);
    m.mm.exit(t);
    expect(slotsInUse(m)).toBe(0);
  });
});
