/**
 * The nouveau-like driver's data paths: GPU write → CPU read → GPU read on the other device (peer
 * copy and through system memory), eviction under 150 % oversubscription, fork, munmap
 * invalidation, explicit migration, determinism. Every test ends with the leak guard.
 */
import { PAGE_SIZE } from "@hmmkit/core";
import type { PlatformConfig } from "@hmmkit/device-emu";
import { describe, expect, it } from "vitest";
import { firstTouchPolicy, NouveauModule } from "../../index";
import { pat, streamPages, World } from "./fixture";

const TWO_GPUS_NVLINK: PlatformConfig = { gpus: [{ vramMiB: 8 }, { vramMiB: 8 }], peerLinks: [{ gpus: [0, 1], preset: "nvlink3" }] };
const TWO_GPUS_NOLINK: PlatformConfig = { gpus: [{ vramMiB: 8 }, { vramMiB: 8 }] };

function bytes(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

describe("single GPU", () => {
  it("migrates faulting pages to VRAM with DMA copies and back on CPU faults", async () => {
    const w = new World({ gpus: [{ vramMiB: 8 }] });
    const t = w.spawn();
    const va = w.mmap(t, 64 * PAGE_SIZE);
    await w.fill(t, va, 64);
    const s = w.mod.bind(t, 0);
    const k = s.launch([streamPages(va, 64)]);
    await w.m.settle(k.fence.promise);
    expect(k.fence.error).toBeUndefined();
    const st = w.mod.stats(0);
    expect(st.pagesToVram).toBe(64);
    expect(st.faults).toBe(64);
    expect(t.mm.rssDevice).toBe(64);
    // 64 pages crossed the host link H2D, through the copy engine.
    expect(w.mod.linkBytes()["gpu0.h2d"]).toBe(64 * PAGE_SIZE);
    expect(w.platform.gpu(0).copy.stats.reduce((a, e) => a + e.bytes, 0)).toBe(64 * PAGE_SIZE);
    const b = await w.m.settle(w.m.mm.read(t, va + 5 * PAGE_SIZE, 1));
    expect(b[0]).toBe(pat(5));
    expect(w.mod.stats(0).pagesToRam).toBe(1);
    expect(w.mod.linkBytes()["gpu0.d2h"]).toBe(PAGE_SIZE);
    // The GPU PTE of the page that went back is gone; the others stay.
    expect(s.space.lookup(va + 5 * PAGE_SIZE)).toBeUndefined();
    expect(s.space.validPtes).toBe(63);
    await w.teardown();
  });

  it("zero-fills never-populated pages in VRAM without host traffic", async () => {
    const w = new World({ gpus: [{ vramMiB: 4 }] });
    const t = w.spawn();
    const va = w.mmap(t, 32 * PAGE_SIZE);
    const s = w.mod.bind(t, 0);
    const data = bytes(3 * PAGE_SIZE, 9);
    await w.m.settle(s.deviceWrite(va + PAGE_SIZE, data));
    expect(w.mod.stats(0).pagesZeroFilled).toBe(3);
    expect(w.mod.linkBytes()["gpu0.h2d"]).toBe(0);
    const back = await w.m.settle(w.m.mm.read(t, va, 5 * PAGE_SIZE));
    expect(back.subarray(PAGE_SIZE, 4 * PAGE_SIZE)).toEqual(data);
    expect(back.subarray(0, PAGE_SIZE).every((x) => x === 0)).toBe(true);
    await w.teardown();
  });

  it("invalidates GPU mappings (and their DMA mappings) on munmap and mprotect", async () => {
    const w = new World(
      { gpus: [{ vramMiB: 4 }] },
      { policy: () => ({ name: "remote", onFaultBatch: (_c, b) => b.decision.fill(1, 0, b.count) }) },
    );
    const t = w.spawn();
    const va = w.mmap(t, 32 * PAGE_SIZE);
    await w.fill(t, va, 32);
    const s = w.mod.bind(t, 0);
    const k = s.launch([streamPages(va, 32)]);
    await w.m.settle(k.fence.promise);
    const g = w.platform.gpu(0);
    expect(w.mod.stats(0).remoteMaps).toBe(32);
    expect(s.space.validPtes).toBe(32);
    expect(g.iommu.mappedPages).toBe(32);
    t.mm.mprotect(va, 8 * PAGE_SIZE, 1 /* PROT_READ */);
    expect(s.space.validPtes).toBe(24);
    expect(g.iommu.mappedPages).toBe(24);
    t.mm.munmap(va + 16 * PAGE_SIZE, 16 * PAGE_SIZE);
    expect(s.space.validPtes).toBe(8);
    expect(g.iommu.mappedPages).toBe(8);
    expect(s.space.lookup(va + 20 * PAGE_SIZE)).toBeUndefined();
    // A GPU access to the unmapped range is a fatal fault (cancelled), not a stale hit.
    const k2 = s.launch([streamPages(va + 16 * PAGE_SIZE, 1)]);
    await w.m.settle(k2.fence.promise);
    expect(k2.fence.error).toMatchObject({ code: "EFAULT" });
    expect(w.mod.stats(0).faultsCancelled).toBe(1);
    await w.teardown();
  });

  it("keeps data through 150 % oversubscription with LRU chunk eviction", async () => {
    const w = new World({ gpus: [{ vramMiB: 8 }] });
    const t = w.spawn();
    const npages = 3 * 1024; // 12 MiB on 8 MiB of VRAM
    const va = w.mmap(t, npages * PAGE_SIZE);
    await w.fill(t, va, npages, 3);
    const s = w.mod.bind(t, 0);
    for (let round = 0; round < 2; round++) {
      const k = s.launch([streamPages(va, npages)]);
      await w.m.settle(k.fence.promise);
      expect(k.fence.error).toBeUndefined();
    }
    const st = w.mod.stats(0);
    expect(st.faults).toBe(2 * npages - 0); // every page faults in each pass (evicted before reuse)
    expect(st.pagesToVram).toBe(2 * npages);
    expect(st.evictions).toBeGreaterThan(0);
    expect(st.pagesEvicted).toBe(st.pagesToVram - t.mm.rssDevice);
    expect(t.mm.rssDevice).toBeLessThanOrEqual(2048);
    const all = await w.m.settle(w.m.mm.read(t, va, npages * PAGE_SIZE));
    for (let p = 0; p < npages; p++) expect(all[p * PAGE_SIZE]).toBe(pat(p, 3));
    await w.teardown();
  });

  it("follows fork: COW after GPU writes keeps parent and child data apart", async () => {
    const w = new World({ gpus: [{ vramMiB: 4 }] });
    const parent = w.spawn();
    const va = w.mmap(parent, 16 * PAGE_SIZE);
    await w.fill(parent, va, 16, 1);
    const s = w.mod.bind(parent, 0);
    await w.m.settle(s.deviceWrite(va, bytes(2 * PAGE_SIZE, 5)));
    const child = w.m.mm.fork(parent);
    w.tasks.push(child);
    // fork write-protected the parent's pages: the GPU mappings went (PROTECTION_PAGE).
    expect(s.space.lookup(va)?.perms ?? 0).toBe(0);
    await w.m.settle(s.deviceWrite(va, bytes(PAGE_SIZE, 77)));
    const c = await w.m.settle(w.m.mm.read(child, va, 2 * PAGE_SIZE));
    expect(c).toEqual(bytes(2 * PAGE_SIZE, 5));
    const p = await w.m.settle(w.m.mm.read(parent, va, PAGE_SIZE));
    expect(p).toEqual(bytes(PAGE_SIZE, 77));
    const cp = await w.m.settle(w.m.mm.read(child, va + 9 * PAGE_SIZE, 1));
    expect(cp[0]).toBe(pat(9, 1));
    await w.teardown();
  });

  it("migrates a range explicitly and refuses bad arguments", async () => {
    const w = new World({ gpus: [{ vramMiB: 4 }] });
    const t = w.spawn();
    const va = w.mmap(t, 600 * PAGE_SIZE);
    await w.fill(t, va, 600);
    const s = w.mod.bind(t, 0);
    const d = w.mod.driver(0);
    expect(await w.m.settle(d.migrateRange(s, va, 600))).toBe(0);
    expect(t.mm.rssDevice).toBe(600);
    expect(w.mod.stats(0).pagesToVram).toBe(600);
    expect(await w.m.settle(d.migrateRange(s, va, 601))).toBe(-22);
    await expect(d.migrateRange(s, va + 1, 1)).rejects.toMatchObject({ code: "EINVAL", arg: "va" });
    expect(() => w.mod.bind(t, 0)).toThrow(expect.objectContaining({ code: "EBUSY" }));
    expect(() => NouveauModule.probe(w.m, w.platform)).toThrow(expect.objectContaining({ code: "EBUSY" }));
    const back = await w.m.settle(w.m.mm.read(t, va + 599 * PAGE_SIZE, 1));
    expect(back[0]).toBe(pat(599));
    await w.teardown();
  });
});

describe.each([
  { name: "peer link, shared owner", cfg: TWO_GPUS_NVLINK, groups: "auto" as const, peer: true },
  { name: "peer link, separate owners", cfg: TWO_GPUS_NVLINK, groups: "none" as const, peer: false },
  { name: "no peer link", cfg: TWO_GPUS_NOLINK, groups: "auto" as const, peer: false },
])("two GPUs: $name", ({ cfg, groups, peer }) => {
  it("GPU write → CPU read → GPU read on the other device", async () => {
    const w = new World(cfg, { ownerGroups: groups, policy: () => firstTouchPolicy() });
    const t = w.spawn();
    const n = 48;
    const va = w.mmap(t, n * PAGE_SIZE);
    await w.fill(t, va, n);
    const g0 = w.mod.bind(t, 0);
    const g1 = w.mod.bind(t, 1);
    const data = bytes(n * PAGE_SIZE, 42);
    await w.m.settle(g0.deviceWrite(va, data));
    expect(w.mod.stats(0).pagesToVram).toBe(n);
    // CPU reads the first 8 pages back (migrateToRam with the copy engine).
    const cpu = await w.m.settle(w.m.mm.read(t, va, 8 * PAGE_SIZE));
    expect(cpu).toEqual(data.subarray(0, 8 * PAGE_SIZE));
    expect(w.mod.stats(0).pagesToRam).toBe(8);
    // GPU 1 reads everything: 8 pages from system memory, 40 from GPU 0's VRAM.
    const back = await w.m.settle(g1.deviceRead(va, n * PAGE_SIZE));
    expect(back).toEqual(data);
    const s1 = w.mod.stats(1);
    const lb = w.mod.linkBytes();
    if (peer) {
      expect(s1.pagesFromPeer).toBe(40);
      expect(s1.pagesToVram).toBe(8);
      expect(lb["gpu0->gpu1"]).toBe(40 * PAGE_SIZE);
      expect(w.mod.stats(0).pagesToRam).toBe(8);
    } else {
      expect(s1.pagesFromPeer).toBe(0);
      expect(s1.pagesViaSystem).toBe(40);
      expect(s1.pagesToVram).toBe(n);
      expect(w.mod.stats(0).pagesToRam).toBe(48);
      expect(lb["gpu0.d2h"]).toBe(48 * PAGE_SIZE);
      expect(lb["gpu0->gpu1"] ?? 0).toBe(0);
    }
    expect(t.mm.rssDevice).toBe(n);
    expect(g0.space.validPtes).toBe(0);
    expect(g1.space.validPtes).toBe(n);
    await w.teardown();
  });
});

describe("peer migration is all-or-nothing", () => {
  it("returns -EBUSY when a window mixes local and peer pages, and the pages get mapped remotely", async () => {
    const w = new World(TWO_GPUS_NVLINK, { policy: () => firstTouchPolicy() });
    const t = w.spawn();
    const va = w.mmap(t, 16 * PAGE_SIZE);
    await w.fill(t, va, 16);
    const g0 = w.mod.bind(t, 0);
    const g1 = w.mod.bind(t, 1);
    const d1 = w.mod.driver(1);
    await w.m.settle(d1.migrateRange(g1, va + 8 * PAGE_SIZE, 1)); // page 8 on GPU 1
    await w.m.settle(w.mod.driver(0).migrateRange(g0, va, 8)); // pages 0..7 on GPU 0
    // One window over pages 0..8 on GPU 1: page 8 is local, 0..7 are the peer's → -EBUSY.
    const vma = t.mm.findVma(va);
    const r = await w.m.settle(
      d1.dmem.migrateWindow(
        { mm: t.mm, vma: vma as never, start: va, end: va + 9 * PAGE_SIZE, instance: g1.instance },
        undefined,
        "explicit",
      ),
    );
    expect(r.ret).toBe(-16);
    expect(w.mod.stats(1).peerBusy).toBe(1);
    expect(t.mm.rssDevice).toBe(9);
    // Already-local window: a no-op.
    const r2 = await w.m.settle(
      d1.dmem.migrateWindow(
        { mm: t.mm, vma: vma as never, start: va + 8 * PAGE_SIZE, end: va + 9 * PAGE_SIZE, instance: g1.instance },
        undefined,
        "explicit",
      ),
    );
    expect(r2).toEqual({ ret: 0, migrated: 0, fromPeer: 0 });
    // A window of peer pages only: all migrate by peer copy.
    const r3 = await w.m.settle(
      d1.dmem.migrateWindow(
        { mm: t.mm, vma: vma as never, start: va, end: va + 8 * PAGE_SIZE, instance: g1.instance },
        undefined,
        "explicit",
      ),
    );
    expect(r3).toEqual({ ret: 0, migrated: 8, fromPeer: 8 });
    const all = await w.m.settle(w.m.mm.read(t, va, 16 * PAGE_SIZE));
    for (let p = 0; p < 16; p++) expect(all[p * PAGE_SIZE]).toBe(pat(p));
    await w.teardown();
  });
});

describe("determinism", () => {
  async function scenario(seed: number): Promise<{ stats: unknown; log: string[]; bytes: unknown; now: number }> {
    const w = new World(TWO_GPUS_NVLINK, {}, 256, seed);
    const log: string[] = [];
    for (const n of ["didServiceFaultBatch", "didMigrateToVram", "didEvictVram", "didDetectThrashing"] as const) {
      w.mod.bus.on(n, ((p: unknown) => log.push(`${w.m.clock.now} ${n} ${JSON.stringify(p)}`)) as never);
    }
    w.platform.bus.on("dma_fence_signaled", ((p: unknown) => log.push(`${w.m.clock.now} fence ${JSON.stringify(p)}`)) as never);
    const t = w.spawn();
    const npages = 2048;
    const va = w.mmap(t, npages * PAGE_SIZE);
    await w.fill(t, va, npages);
    const g0 = w.mod.bind(t, 0);
    const g1 = w.mod.bind(t, 1);
    const rng = w.m.rng;
    const addrs = (n: number) => {
      const s = streamPages(va, n);
      for (let i = 0; i < n; i++) s.addr[i] = va + rng.int(npages) * PAGE_SIZE;
      return s;
    };
    const k0 = g0.launch([addrs(3000), addrs(3000)]);
    const k1 = g1.launch([addrs(3000)]);
    await w.m.settle(Promise.all([k0.fence.promise, k1.fence.promise]));
    const out = { stats: [w.mod.stats(0), w.mod.stats(1)], log, bytes: w.mod.linkBytes(), now: w.m.clock.now };
    await w.teardown();
    return out;
  }

  it("gives identical counters, link bytes and event logs for the same seed", async () => {
    const a = await scenario(7);
    const b = await scenario(7);
    expect(b).toEqual(a);
    expect(a.log.length).toBeGreaterThan(10);
    const c = await scenario(8);
    expect(c.log).not.toEqual(a.log);
  });
});
