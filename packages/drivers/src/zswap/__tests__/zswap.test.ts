import { COMPACT, GFP, PAGE_SIZE } from "@hmmkit/core";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ZSWAP_COMPRESSORS, Zswap, zswapCompress, zswapDecompress } from "../../index";
import { kindOf, pageBytes, pageMatches, pfnOf, useZswapLeakGuard, writePage } from "./fixture";

const boot = useZswapLeakGuard();

/** Allocate a swap slot and a kernel page holding `bytes`, for driving the frontswap ops directly. */
function kernelPage(rig: ReturnType<typeof boot>, bytes: Uint8Array): { slot: number; pfn: number } {
  const dev = rig.m.mm.swap.device!;
  const slot = dev.getSwapPage({ mapping: 0, index: 0 });
  const pfn = rig.m.alloc.allocPages(0);
  rig.m.contents.write(pfn, 0, bytes);
  return { slot, pfn };
}

describe("zswap: options and registration", () => {
  it("needs a swap device, validates options, registers once", () => {
    const rig = boot({ ramMiB: [8], swapMiB: 4 });
    expect(() => Zswap.create(rig.m)).toThrow(/EBUSY/);
    expect(rig.z.options).toEqual({
      enabled: true,
      compressor: "deflate",
      maxPoolPercent: 20,
      acceptThresholdPercent: 90,
      sameFilledPagesEnabled: true,
      shrinkDelayNs: 0,
    });
    expect(rig.z.maxPoolPages).toBe(Math.floor((rig.m.alloc.totalPages * 20) / 100));
  });

  it("rejects bad options with EINVAL naming the option", async () => {
    const { Machine } = await import("@hmmkit/core");
    const m = Machine.create({ ramMiB: [8] });
    expect(() => Zswap.create(m)).toThrow(/ENODEV/);
    m.dispose();
    const m2 = Machine.create({ ramMiB: [8], swapMiB: 1 });
    for (const bad of [{ maxPoolPercent: 0 }, { acceptThresholdPercent: 101 }, { compressor: "lz4" as never }, { enabled: 1 as never }]) {
      let err: { code?: string; arg?: string } = {};
      try {
        Zswap.create(m2, bad);
      } catch (e) {
        err = e as { code?: string; arg?: string };
      }
      expect(err.code).toBe("EINVAL");
      expect(err.arg).toMatch(/^options\./);
    }
    expect(m2.mm.swap.device!.frontswap).toBeUndefined();
    m2.dispose();
  });
});

describe("zswap: store / load / invalidate", () => {
  it.each(ZSWAP_COMPRESSORS)("%s: real bytes round-trip; load is exclusive", (compressor) => {
    const rig = boot({ ramMiB: [16], swapMiB: 4 }, { compressor });
    const { z, m } = rig;
    const data = pageBytes("text", 1);
    const { slot, pfn } = kernelPage(rig, data);
    expect(z.store(0, slot, pfn)).toBe(0);
    expect(z.debugfs.stored_pages).toBe(1);
    expect(z.pool.totalPages).toBeGreaterThan(0);
    expect(z.debugfs.pool_total_size).toBe(z.pool.totalPages * PAGE_SIZE);
    m.contents.clearPages(pfn, 1);
    expect(z.load(0, slot, pfn)).toBe(0);
    const back = new Uint8Array(PAGE_SIZE);
    m.contents.read(pfn, 0, back);
    expect(Buffer.compare(back, data)).toBe(0);
    expect(z.has(slot)).toBe(false);
    expect(z.load(0, slot, pfn)).toBe(-2);
    expect(z.debugfs.stored_pages).toBe(0);
    expect(z.pool.totalPages).toBe(0);
    m.mm.refs.putPage(pfn);
    m.mm.swap.device!.swapFree(slot);
  });

  it("same-filled pages take no pool space; incompressible pages are rejected (reject_compress_poor)", () => {
    const rig = boot({ ramMiB: [16], swapMiB: 4 });
    const { z, m } = rig;
    const same = kernelPage(rig, pageBytes("same", 5));
    expect(z.store(0, same.slot, same.pfn)).toBe(0);
    expect(z.debugfs.same_filled_pages).toBe(1);
    expect(z.pool.totalPages).toBe(0);
    m.contents.clearPages(same.pfn, 1);
    expect(z.load(0, same.slot, same.pfn)).toBe(0);
    const back = new Uint8Array(PAGE_SIZE);
    m.contents.read(same.pfn, 0, back);
    expect(Buffer.compare(back, pageBytes("same", 5))).toBe(0);
    const rnd = kernelPage(rig, pageBytes("random", 6));
    expect(zswapCompress("deflate", pageBytes("random", 6)).length).toBeGreaterThanOrEqual(PAGE_SIZE);
    expect(z.store(0, rnd.slot, rnd.pfn)).toBe(-28);
    expect(z.debugfs.reject_compress_poor).toBe(1);
    expect(z.has(rnd.slot)).toBe(false);
    // Invalidate frees an entry when its slot is freed.
    const txt = kernelPage(rig, pageBytes("text", 7));
    expect(z.store(0, txt.slot, txt.pfn)).toBe(0);
    m.mm.swap.device!.swapFree(txt.slot);
    expect(z.has(txt.slot)).toBe(false);
    expect(z.pool.totalPages).toBe(0);
    for (const p of [same, rnd, txt]) m.mm.refs.putPage(p.pfn);
    for (const p of [same, rnd]) m.mm.swap.device!.swapFree(p.slot);
  });

  it("pool limit with hysteresis: refuse at the limit until the pool shrinks to the accept threshold", async () => {
    const rig = boot({ ramMiB: [16], swapMiB: 16 }, { maxPoolPercent: 2, acceptThresholdPercent: 50, shrinkDelayNs: 1000 });
    const { z, m } = rig;
    const dev = m.mm.swap.device!;
    const max = z.maxPoolPages;
    const thr = z.acceptThresholdPages;
    expect(thr).toBe(Math.floor(max / 2));
    const pages: Array<{ slot: number; pfn: number; data: Uint8Array }> = [];
    let i = 0;
    while (z.debugfs.pool_limit_hit === 0) {
      const data = pageBytes("text", i, 3);
      const kp = kernelPage(rig, data);
      const rc = z.store(0, kp.slot, kp.pfn);
      pages.push({ ...kp, data });
      if (rc !== 0) expect(rc).toBe(-12);
      i++;
    }
    expect(z.pool.totalPages).toBeGreaterThanOrEqual(max);
    expect(z.reachedFull).toBe(true);
    // Free entries until the pool is below the limit but above the threshold: still refused.
    while (z.pool.totalPages >= max) {
      const p = pages.find((x) => z.has(x.slot));
      z.invalidatePage(0, p!.slot);
    }
    expect(z.pool.totalPages).toBeGreaterThan(thr);
    const hits = z.debugfs.pool_limit_hit;
    const extra = kernelPage(rig, pageBytes("text", 999));
    expect(z.store(0, extra.slot, extra.pfn)).toBe(-12);
    expect(z.debugfs.pool_limit_hit).toBe(hits); // refused by hysteresis, not by the limit
    // The queued shrink worker writes LRU-cold entries back until the threshold.
    await m.run();
    expect(z.pool.totalPages).toBeLessThanOrEqual(thr);
    expect(z.debugfs.written_back_pages).toBeGreaterThan(0);
    expect(m.vmstat.c.zswpwb).toBe(z.debugfs.written_back_pages);
    expect(z.store(0, extra.slot, extra.pfn)).toBe(0);
    expect(z.reachedFull).toBe(false);
    // Every page reads back, from zswap or from the device.
    for (const p of [...pages, { ...extra, data: pageBytes("text", 999) }]) {
      m.contents.clearPages(p.pfn, 1);
      if (dev.swapCount(p.slot) > 0 && (z.has(p.slot) || dev.onDevice[p.slot] === 1)) {
        dev.swapReadpage(p.slot, p.pfn, (pfn, src) => m.contents.write(pfn, 0, src));
        const back = new Uint8Array(PAGE_SIZE);
        m.contents.read(p.pfn, 0, back);
        expect(Buffer.compare(back, p.data)).toBe(0);
      }
      dev.swapFree(p.slot);
      m.mm.refs.putPage(p.pfn);
    }
  });

  it("writeback gives referenced entries a second chance (LRU order)", () => {
    const rig = boot({ ramMiB: [16], swapMiB: 4 });
    const { z, m } = rig;
    const dev = m.mm.swap.device!;
    const ps = [0, 1, 2].map((i) => kernelPage(rig, pageBytes("text", i)));
    for (const p of ps) expect(z.store(0, p.slot, p.pfn)).toBe(0);
    // Write back exactly one entry: all three are referenced, so each is rotated once, then the
    // coldest (first stored) goes.
    expect(z.shrink(0, 1)).toBe(1);
    expect(z.has(ps[0]!.slot)).toBe(false);
    expect(dev.onDevice[ps[0]!.slot]).toBe(1);
    expect(z.has(ps[1]!.slot)).toBe(true);
    for (const p of ps) {
      dev.swapFree(p.slot);
      m.mm.refs.putPage(p.pfn);
    }
  });
});

describe("zswap under memory pressure", () => {
  it("round trip of real data: reclaim → zswap → writeback → swap-in, no byte lost", async () => {
    const npages = 4600; // 18 MiB of a 12 MiB machine
    const rig = boot({ ramMiB: [12], swapMiB: 32 }, { maxPoolPercent: 10 }, npages);
    const { m, z } = rig;
    for (let i = 0; i < npages; i++) await writePage(rig, i, kindOf(i));
    await m.run(); // kswapd and the shrink worker
    const c = m.vmstat.c;
    expect(c.zswpout).toBeGreaterThan(1000);
    expect(z.debugfs.pool_limit_hit).toBeGreaterThan(0);
    expect(z.debugfs.same_filled_pages).toBeGreaterThan(0);
    expect(z.debugfs.reject_compress_poor).toBeGreaterThan(0);
    expect(z.debugfs.written_back_pages).toBeGreaterThan(0);
    expect(c.zswpwb).toBe(z.debugfs.written_back_pages);
    expect(c.pswpout).toBeGreaterThan(z.debugfs.written_back_pages); // rejected pages went to the device too
    expect(z.pool.totalPages).toBeLessThanOrEqual(z.maxPoolPages + 8);
    for (let i = 0; i < npages; i++) expect(await pageMatches(rig, i, pageBytes(kindOf(i), i)), `page ${i}`).toBe(true);
    expect(c.zswpin).toBeGreaterThan(0);
    expect(c.pswpin).toBeGreaterThan(0);
    expect(c.pgmajfault).toBe(c.zswpin + c.pswpin);
  });

  it("compaction migrates zswap pool pages and forms an order-9 block; every entry still loads", async () => {
    const npages = 4000;
    const rig = boot({ ramMiB: [16], swapMiB: 16 }, { maxPoolPercent: 50 }, npages);
    const { m, z } = rig;
    const zone = m.alloc.zones[0]!;
    let n = 0;
    while (n < npages && (zone.nrFree[9]! > 0 || zone.nrFree[10]! > 0)) await writePage(rig, n++, "text", 1);
    expect(zone.nrFree[9]! + zone.nrFree[10]!).toBe(0);
    // Swap every other page out through zswap: the pool takes pages among the holes.
    const victims: number[] = [];
    for (let i = 0; i < n; i += 2) victims.push(pfnOf(rig, i));
    expect(m.mm.vmscan.reclaimPages(victims)).toBe(victims.length);
    expect(z.nrEntries).toBe(victims.length);
    expect(zone.nrFree[9]! + zone.nrFree[10]!).toBe(0);
    const poolBefore: number[] = [];
    for (let pfn = zone.startPfn; pfn < zone.startPfn + zone.npages; pfn++) if (z.pool.zspageOfPfn(pfn)) poolBefore.push(pfn);
    expect(poolBefore.length).toBe(z.pool.totalPages);
    const low = poolBefore.filter((p) => p < zone.startPfn + zone.npages / 4);
    expect(low.length).toBeGreaterThan(0);
    const migrated0 = m.vmstat.c.pgmigrate_success;
    const r = m.mm.compaction.compactZone(zone, 9);
    expect(r.status).toBe(COMPACT.SUCCESS);
    expect(m.vmstat.c.pgmigrate_success).toBeGreaterThan(migrated0);
    const moved = low.filter((p) => z.pool.zspageOfPfn(p) === undefined);
    expect(moved.length).toBeGreaterThan(0);
    expect(z.pool.totalPages).toBe(poolBefore.length);
    const big = m.alloc.allocPages(9, GFP.COMP | GFP.NORETRY);
    expect(big).toBeGreaterThanOrEqual(0);
    m.mm.refs.putPage(big);
    for (let i = 0; i < n; i++) expect(await pageMatches(rig, i, pageBytes("text", i, 1)), `page ${i}`).toBe(true);
    expect(m.vmstat.c.zswpin).toBe(victims.length);
  });

  it("pinned pages are never swapped out, even under pressure", async () => {
    const npages = 2600;
    const rig = boot({ ramMiB: [8], swapMiB: 16 }, {}, npages);
    const { m } = rig;
    for (let i = 0; i < 64; i++) await writePage(rig, i, "text", 2);
    const pins = new Float64Array(64);
    const { FOLL } = await import("@hmmkit/core");
    expect(await m.mm.pinpage.pinUserPages(rig.t.mm, rig.va, 64, FOLL.WRITE, pins)).toBe(64);
    for (let i = 64; i < npages; i++) await writePage(rig, i, "text", 2);
    await m.run();
    expect(m.vmstat.c.zswpout).toBeGreaterThan(0);
    for (let i = 0; i < 64; i++) expect(pfnOf(rig, i)).toBe(pins[i]);
    m.mm.pinpage.unpinUserPages(pins, 64);
    for (let i = 0; i < npages; i++) expect(await pageMatches(rig, i, pageBytes("text", i, 2)), `page ${i}`).toBe(true);
  });

  it("fork sharing through zswap: both read the same bytes, one load per page", async () => {
    const npages = 64;
    const rig = boot({ ramMiB: [16], swapMiB: 8 }, {}, npages);
    const { m, z, t } = rig;
    for (let i = 0; i < npages; i++) await writePage(rig, i, kindOf(i), 4);
    const child = m.mm.fork(t);
    const pfns = Array.from({ length: npages }, (_, i) => pfnOf(rig, i));
    expect(m.mm.vmscan.reclaimPages(pfns)).toBe(npages);
    expect(m.vmstat.c.zswpout + m.vmstat.c.pswpout).toBe(npages);
    for (let i = 0; i < npages; i++) {
      const got = await m.mm.read(child, rig.va + i * PAGE_SIZE, PAGE_SIZE);
      expect(Buffer.compare(got, pageBytes(kindOf(i), i, 4))).toBe(0);
    }
    for (let i = 0; i < npages; i++) expect(await pageMatches(rig, i, pageBytes(kindOf(i), i, 4))).toBe(true);
    expect(m.vmstat.c.zswpin + m.vmstat.c.pswpin).toBe(npages);
    expect(z.nrEntries).toBe(0);
    expect(m.mm.swap.device!.inusePages).toBe(0);
    m.mm.exit(child);
  });
});

describe("zswap property", () => {
  it("random swap-out, swap-in, compaction and writeback: no byte lost", async () => {
    const NP = 96;
    const op = fc.oneof(
      fc.record({
        k: fc.constant("write" as const),
        i: fc.nat(NP - 1),
        kind: fc.constantFrom("text", "same", "random", "zero"),
        seed: fc.nat(50),
      }),
      fc.record({ k: fc.constant("swapout" as const), i: fc.nat(NP - 1), len: fc.integer({ min: 1, max: 24 }) }),
      fc.record({ k: fc.constant("read" as const), i: fc.nat(NP - 1), len: fc.integer({ min: 1, max: 24 }) }),
      fc.record({ k: fc.constant("compact" as const), order: fc.integer({ min: 0, max: 9 }) }),
      fc.record({ k: fc.constant("writeback" as const), keep: fc.nat(40) }),
      fc.record({ k: fc.constant("run" as const) }),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 40 }), fc.constantFrom(...ZSWAP_COMPRESSORS), async (ops, compressor) => {
        const rig = boot({ ramMiB: [8], swapMiB: 2 }, { compressor, maxPoolPercent: 3, acceptThresholdPercent: 70 }, NP);
        const { m, z } = rig;
        const model: Uint8Array[] = Array.from({ length: NP }, () => new Uint8Array(PAGE_SIZE));
        for (const o of ops) {
          if (o.k === "write") {
            model[o.i] = pageBytes(o.kind as "text", o.i, o.seed);
            await writePage(rig, o.i, o.kind as "text", o.seed);
          } else if (o.k === "swapout") {
            const pfns: number[] = [];
            for (let i = o.i; i < Math.min(NP, o.i + o.len); i++) if (pfnOf(rig, i) >= 0) pfns.push(pfnOf(rig, i));
            m.mm.vmscan.reclaimPages(pfns);
          } else if (o.k === "read") {
            for (let i = o.i; i < Math.min(NP, o.i + o.len); i++) expect(await pageMatches(rig, i, model[i]!)).toBe(true);
          } else if (o.k === "compact") {
            m.mm.compaction.compactZone(m.alloc.zones[0]!, o.order);
          } else if (o.k === "writeback") {
            z.shrink(Math.min(o.keep, z.pool.totalPages));
          } else await m.run();
          expect(z.debugfs.pool_total_size).toBe(z.pool.totalPages * PAGE_SIZE);
          expect(z.debugfs.stored_pages).toBe(z.nrEntries);
        }
        for (let i = 0; i < NP; i++) expect(await pageMatches(rig, i, model[i]!), `page ${i}`).toBe(true);
        m.mm.exit(rig.t);
        await m.run();
        expect(m.mm.swap.device!.inusePages).toBe(0);
        expect(z.pool.totalPages).toBe(0);
      }),
      { numRuns: 30, seed: 6 },
    );
  });
});

describe("zswap compressors", () => {
  it.each(ZSWAP_COMPRESSORS)("%s round-trips and compresses text", (alg) => {
    const b = pageBytes("text", 3);
    const c = zswapCompress(alg, b);
    expect(c.length).toBeLessThan(PAGE_SIZE / 2);
    expect(Buffer.compare(zswapDecompress(alg, c), b)).toBe(0);
  });
});
