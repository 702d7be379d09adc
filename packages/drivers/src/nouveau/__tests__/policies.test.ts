/**
 * Each built-in policy on the workload that shows its defining behaviour, with exact counts where
 * the model fixes them. Every test ends with the leak guard.
 */
import { PAGE_SIZE } from "@hmmkit/core";
import { ACCESS_READ, ACCESS_WRITE, type AccessStream } from "@hmmkit/device-emu";
import { describe, expect, it } from "vitest";
import {
  accessCounterPolicy,
  composePolicies,
  type EvictionCandidates,
  firstTouchPolicy,
  lruEvictionPolicy,
  type MigrationPolicy,
  type PolicyFactory,
  thrashPinPolicy,
  treeEvictionPolicy,
  treePrefetchPolicy,
  UVM_DEFAULTS,
} from "../../index";
import { pat, streamPages, World } from "./fixture";

const BLOCK = 2 * 1024 * 1024;

describe("tree-based prefetch", () => {
  it("cuts a sequential scan of one 2 MiB block from 512 faults to 6 (64, 64, 128, 256, 512, 1024 KiB)", async () => {
    const run = async (policy: PolicyFactory) => {
      const w = new World({ gpus: [{ vramMiB: 8 }] }, { policy });
      const t = w.spawn();
      const va = w.mmap(t, 2 * BLOCK);
      const base = va - (va % BLOCK) + BLOCK; // a block-aligned 2 MiB inside the mapping
      await w.fill(t, va, 1024);
      const s = w.mod.bind(t, 0);
      const sizes: number[] = [];
      w.mod.bus.on("didMigrateToVram", (p) => sizes.push((p.npages * PAGE_SIZE) / 1024));
      const k = s.launch([streamPages(base, 512)]);
      await w.m.settle(k.fence.promise);
      const st = w.mod.stats(0);
      await w.teardown();
      return { st, sizes };
    };
    const ft = await run(() => firstTouchPolicy());
    expect(ft.st.faults).toBe(512);
    expect(ft.st.pagesToVram).toBe(512);
    const tp = await run(() => treePrefetchPolicy());
    expect(tp.st.faults).toBe(6);
    expect(tp.sizes).toEqual([64, 64, 128, 256, 512, 1024]);
    expect(tp.st.pagesToVram).toBe(512);
    expect(tp.st.pagesPrefetched).toBe(506);
  });

  it("validates its options", () => {
    expect(() => treePrefetchPolicy({ threshold: 0 })).toThrow(expect.objectContaining({ code: "EINVAL", arg: "opts.threshold" }));
    expect(() => treePrefetchPolicy({ bigPageSize: 3000 })).toThrow(expect.objectContaining({ code: "EINVAL", arg: "opts.bigPageSize" }));
    expect(UVM_DEFAULTS.prefetchThreshold).toBe(51);
  });
});

/** CPU–GPU ping-pong: the GPU writes 16 pages, then the CPU writes them, `rounds` times. */
async function pingPong(policy: PolicyFactory, rounds: number) {
  const w = new World({ gpus: [{ vramMiB: 4 }] }, { policy });
  const t = w.spawn();
  const n = 16;
  const va = w.mmap(t, n * PAGE_SIZE);
  await w.fill(t, va, n);
  const s = w.mod.bind(t, 0);
  for (let r = 0; r < rounds; r++) {
    const k = s.launch([streamPages(va, n, true)]);
    await w.m.settle(k.fence.promise);
    await w.m.settle(w.m.mm.write(t, va, new Uint8Array(n * PAGE_SIZE).fill(r)));
  }
  const st = w.mod.stats(0);
  const detections = w.mod.tracker.detections;
  const last = await w.m.settle(w.m.mm.read(t, va + 3 * PAGE_SIZE, 1));
  expect(last[0]).toBe(rounds - 1);
  await w.teardown();
  return { st, detections };
}

describe("thrashing detection and pinning", () => {
  it("detects CPU–GPU ping-pong and stops it by pinning the pages in system memory", async () => {
    const ft = await pingPong(() => firstTouchPolicy(), 12);
    expect(ft.st.pagesToVram).toBe(12 * 16);
    expect(ft.st.pagesToRam).toBe(12 * 16);
    expect(ft.st.thrashingEvents).toBeGreaterThan(0); // detected, not mitigated
    expect(ft.st.pinnedMaps).toBe(0);
    const tp = await pingPong(() => thrashPinPolicy(), 12);
    expect(tp.st.thrashingEvents).toBe(16); // every page detected once, then pinned
    expect(tp.st.pinnedMaps).toBeGreaterThan(0);
    expect(tp.st.pagesToVram).toBeLessThan(ft.st.pagesToVram / 2);
    expect(tp.st.pagesToRam).toBeLessThan(ft.st.pagesToRam / 2);
  });

  it("detects GPU–GPU ping-pong and pins pages where they are (peer mappings)", async () => {
    const run = async (policy: PolicyFactory) => {
      const w = new World({ gpus: [{ vramMiB: 4 }, { vramMiB: 4 }], peerLinks: [{ gpus: [0, 1], preset: "nvlink3" }] }, { policy });
      const t = w.spawn();
      const n = 8;
      const va = w.mmap(t, n * PAGE_SIZE);
      await w.fill(t, va, n);
      const g = [w.mod.bind(t, 0), w.mod.bind(t, 1)];
      for (let r = 0; r < 10; r++) {
        const k = (g[r % 2] as (typeof g)[0]).launch([streamPages(va, n, true)]);
        await w.m.settle(k.fence.promise);
      }
      const st = w.mod.stats();
      await w.teardown();
      return st;
    };
    const ft = await run(() => firstTouchPolicy());
    expect(ft.pagesFromPeer).toBe(9 * 8);
    const tp = await run(() => thrashPinPolicy());
    expect(tp.pinnedMaps).toBeGreaterThan(0);
    expect(tp.peerMaps).toBeGreaterThan(0);
    expect(tp.pagesFromPeer).toBeLessThan(ft.pagesFromPeer / 2);
  });
});

describe("access-counter migration", () => {
  it("maps sparse pages remotely and migrates only the hot 64 KiB region", async () => {
    const run = async (policy: PolicyFactory) => {
      const w = new World({ gpus: [{ vramMiB: 8 }] }, { policy });
      const t = w.spawn();
      const va = w.mmap(t, 2 * BLOCK);
      await w.fill(t, va, 1024);
      const s = w.mod.bind(t, 0);
      // Sparse: one read on each of 64 pages spread over the second block.
      const sparse = streamPages(va + BLOCK, 64, false, 8);
      // Hot: 4096 reads over the 16 pages of the first 64 KiB.
      const hotN = 4096;
      const hot: AccessStream = {
        addr: Float64Array.from({ length: hotN }, (_, i) => va + (i % 16) * PAGE_SIZE),
        size: new Uint16Array(hotN).fill(64),
        flags: new Uint8Array(hotN).fill(ACCESS_READ),
      };
      const k = s.launch([sparse, hot]);
      await w.m.settle(k.fence.promise);
      await w.m.run();
      const st = w.mod.stats(0);
      const data = await w.m.settle(w.m.mm.read(t, va + BLOCK + 8 * PAGE_SIZE, 1));
      expect(data[0]).toBe(pat(512 + 8));
      await w.teardown();
      return st;
    };
    const ft = await run(() => firstTouchPolicy());
    expect(ft.pagesToVram).toBe(80);
    const ac = await run(() => accessCounterPolicy());
    expect(ac.remoteMaps).toBe(80);
    expect(ac.accessCounterNotifications).toBeGreaterThan(0);
    expect(ac.accessCounterMigrations).toBe(16);
    expect(ac.pagesToVram).toBe(16);
  });
});

describe("eviction policies", () => {
  async function oversubscribed(policy: MigrationPolicy) {
    const w = new World({ gpus: [{ vramMiB: 4 }] }, { policy: () => policy });
    const t = w.spawn();
    const npages = 1536; // 6 MiB on 4 MiB
    const va = w.mmap(t, npages * PAGE_SIZE);
    await w.fill(t, va, npages, 5);
    const s = w.mod.bind(t, 0);
    const k = s.launch([streamPages(va, npages)]);
    await w.m.settle(k.fence.promise);
    const st = w.mod.stats(0);
    const all = await w.m.settle(w.m.mm.read(t, va, npages * PAGE_SIZE));
    for (let p = 0; p < npages; p += 17) expect(all[p * PAGE_SIZE]).toBe(pat(p, 5));
    await w.teardown();
    return st;
  }

  it("LRU evicts whole least-recently-allocated 2 MiB chunks", async () => {
    const seen: number[] = [];
    const lru = lruEvictionPolicy();
    const spy: MigrationPolicy = {
      name: "spy",
      selectEvictionVictim(ctx, c: EvictionCandidates, choice) {
        const r = lru.selectEvictionVictim?.(ctx, c, choice) ?? -1;
        seen.push(c.lastAllocSeq[r] as number);
        for (let j = 0; j < c.count; j++) expect(c.lastAllocSeq[j] as number).toBeGreaterThanOrEqual(c.lastAllocSeq[r] as number);
        return r;
      },
    };
    const st = await oversubscribed(composePolicies("lru", [firstTouchPolicy(), spy]));
    expect(st.evictions).toBe(seen.length);
    expect(st.pagesEvicted).toBe(st.evictions * 512);
  });

  it("tree-based neighbourhood eviction evicts page-granular and keeps data", async () => {
    const st = await oversubscribed(composePolicies("tbne", [firstTouchPolicy(), treeEvictionPolicy()]));
    expect(st.evictions).toBeGreaterThan(0);
    expect(st.pagesEvicted).toBeGreaterThanOrEqual(512);
  });
});

describe("composePolicies", () => {
  it("chains decisions and refuses an empty list", () => {
    expect(() => composePolicies("x", [])).toThrow(expect.objectContaining({ code: "EINVAL" }));
    const p = composePolicies("uvm", [treePrefetchPolicy(), thrashPinPolicy(), lruEvictionPolicy()]);
    expect(p.name).toBe("uvm");
    expect(typeof p.prefetch).toBe("function");
    expect(typeof p.onThrashing).toBe("function");
    expect(typeof p.selectEvictionVictim).toBe("function");
    expect(ACCESS_WRITE).toBe(2);
  });
});
