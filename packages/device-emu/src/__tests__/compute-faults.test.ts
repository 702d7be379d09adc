import { PAGE_SIZE } from "@hmmkit/core/phys";
import type { HmmError, SimClock } from "@hmmkit/core/sim";
import { afterEach, describe, expect, it } from "vitest";
import type { AccessCounterBatch } from "../access-counters";
import { ACCESS_ATOMIC, ACCESS_READ, ACCESS_WRITE, type AccessStream } from "../compute";
import { FAULT_ACCESS_READ, FAULT_ACCESS_WRITE, FAULT_TYPE_INVALID_PTE, FAULT_TYPE_WRITE, type FaultBatch } from "../fault-buffer";
import type { GpuDevice } from "../gpu";
import { APERTURE_SYS, APERTURE_VID, GPU_PERM_READ, GPU_PERM_RWA, type GpuVaSpace } from "../gpu-mmu";
import { DMA_BIDIRECTIONAL, DMA_TO_DEVICE } from "../iommu";
import type { Platform, PlatformConfig } from "../platform";
import { expectQuiescent, makePlatform, recordEvents } from "./helpers";

let guard: { platform: Platform; clock: SimClock } | undefined;
afterEach(async () => {
  if (guard !== undefined) await expectQuiescent(guard.platform, guard.clock);
  guard = undefined;
});

function env(config: PlatformConfig, ramMiB = 64) {
  const e = makePlatform(config, ramMiB);
  guard = e;
  return e;
}

function stream(addrs: number[], flags: number | number[] = ACCESS_READ, size = 8): AccessStream {
  const n = addrs.length;
  return {
    addr: Float64Array.from(addrs),
    size: new Uint16Array(n).fill(size),
    flags: Array.isArray(flags) ? Uint8Array.from(flags) : new Uint8Array(n).fill(flags),
  };
}

/** A first-touch driver: maps a fresh VRAM frame RWA for every faulting page. */
function firstTouchDriver(gpu: GpuDevice, batches: { cached: number; count: number; reps: string[] }[] = []) {
  let next = 0;
  const frames = new Map<number, number>();
  gpu.bindDriver({
    serviceFaults(b: FaultBatch) {
      const reps: string[] = [];
      for (let i = 0; i < b.count; i++) {
        const space = gpu.vaSpace(b.instance[i] as number) as GpuVaSpace;
        const va = b.address[i] as number;
        reps.push(`${va}:${b.accessType[i]}:${b.accessTypeMask[i]}:${b.numInstances[i]}:${b.faultType[i]}`);
        let f = frames.get(va);
        if (f === undefined) {
          f = next++;
          frames.set(va, f);
        }
        space.map(va, PAGE_SIZE, APERTURE_VID, f * PAGE_SIZE, GPU_PERM_RWA);
      }
      batches.push({ cached: b.cached, count: b.count, reps });
    },
  });
  return { batches, frames };
}

describe("compute engine, resident accesses", () => {
  it("runs resident streams synchronously and charges VRAM bandwidth", async () => {
    const { platform, clock } = env({ gpus: [{ vramMiB: 4 }] });
    const g = platform.gpu(0);
    const s = g.createVaSpace();
    s.map(0x200000, 0x200000, APERTURE_VID, 0, GPU_PERM_RWA, 2097152);
    const addrs = Array.from({ length: 1024 }, (_, i) => 0x200000 + ((i * 64) % 0x200000));
    const k = g.compute.launch(s, [stream(addrs, ACCESS_READ, 64)]);
    await clock.settle(k.fence.promise);
    expect(k.fence.error).toBeUndefined();
    expect(k.stats).toMatchObject({ accesses: 1024, faults: 0, localBytes: 65536, sysBytes: 0, peerBytes: 0, startNs: 0 });
    expect(k.fence.time).toBe(Math.ceil(65536 / 1555));
    expect(platform.vramPort(0).bytes).toBe(65536);
    s.unmap(0x200000, 0x200000);
  });

  it("charges remote system-memory reads to the host link with its latency and counts them", async () => {
    const { ctx, platform, clock } = env({
      gpus: [{ vramMiB: 4, hostLink: { h2dGBps: 10, d2hGBps: 10, latencyNs: 1000 }, warpQuantum: 100000 }],
    });
    const g = platform.gpu(0);
    let notified = 0;
    const s = g.createVaSpace();
    const iova = g.iommu.dmaMapPage(ctx.ram.basePfn, DMA_BIDIRECTIONAL, 16);
    s.map(0, 16 * PAGE_SIZE, APERTURE_SYS, iova, GPU_PERM_RWA);
    const addrs = Array.from({ length: 1000 }, (_, i) => (i % 16) * PAGE_SIZE + 128);
    const flags = addrs.map((_, i) => (i % 2 === 0 ? ACCESS_READ : ACCESS_WRITE));
    const k = g.compute.launch(s, [stream(addrs, flags, 100)]);
    await clock.settle(k.fence.promise);
    expect(k.stats.sysBytes).toBe(100000);
    expect(platform.hostLink(0).forward.bytes).toBe(50000);
    expect(platform.hostLink(0).reverse.bytes).toBe(50000);
    expect(k.fence.time).toBe(1000 + 5000); // both directions in parallel, 50 kB each at 10 GB/s
    expect(g.accessCounters.counterOf(s.id, 0)).toBe(1000 - 3 * 256);
    expect(g.accessCounters.notifications).toBe(3);
    expect(g.accessCounters.pending).toBe(3); // no driver bound yet: they wait
    g.bindDriver({ serviceAccessCounters: (b) => void (notified += b.count) });
    await clock.run();
    expect(notified).toBe(3);
    s.unmap(0, 16 * PAGE_SIZE);
    g.iommu.dmaUnmapPage(iova, 16);
    g.accessCounters.clearAll();
  });

  it("validates kernels and names the offending field", () => {
    const { platform } = env({ gpus: [{ vramMiB: 2 }, { vramMiB: 2 }] });
    const g = platform.gpu(0);
    const s = g.createVaSpace();
    const bad = (streams: AccessStream[], arg: string, space = s) =>
      expect(() => g.compute.launch(space, streams)).toThrow(expect.objectContaining({ code: "EINVAL", arg }));
    bad([], "streams");
    bad([stream([0, 4095], ACCESS_READ, 2)], "streams[0].size[1]");
    bad([stream([0]), stream([1.5])], "streams[1].addr[0]");
    bad([stream([0], 8)], "streams[0].flags[0]");
    bad([stream([0])], "space", platform.gpu(1).createVaSpace());
    expect(g.compute.idle).toBe(true);
  });
});

describe("replayable faults", () => {
  it("coalesces duplicates within a batch as UVM does (per µTLB and last fault)", async () => {
    const { platform, clock } = env({ gpus: [{ vramMiB: 4 }] });
    const g = platform.gpu(0);
    const { batches } = firstTouchDriver(g);
    const s = g.createVaSpace();
    const P = 0x10000;
    const flags = [ACCESS_READ, ACCESS_READ, ACCESS_READ, ACCESS_WRITE, ACCESS_READ, ACCESS_READ, ACCESS_READ, ACCESS_READ];
    const k = g.compute.launch(
      s,
      flags.map((f) => stream([P + 64], f)),
    );
    await clock.settle(k.fence.promise);
    expect(k.fence.error).toBeUndefined();
    expect(batches).toEqual([
      {
        cached: 8,
        count: 2,
        reps: [`${P}:${FAULT_ACCESS_READ}:2:3:${FAULT_TYPE_INVALID_PTE}`, `${P}:${FAULT_ACCESS_WRITE}:6:5:${FAULT_TYPE_INVALID_PTE}`],
      },
    ]);
    expect(g.faults.faultsCoalesced).toBe(6);
    expect(g.faults.replays).toBe(1);
    expect(k.stats.faults).toBe(8);
    // interrupt 5 µs, replay 1 µs, then one resident round of 8×8 bytes
    expect(k.fence.time).toBe(5000 + 1000 + Math.ceil(64 / 1555));
    s.unmap(P, PAGE_SIZE);
  });

  it("delivers faults in batches of batchSize and replays after each (BATCH_FLUSH)", async () => {
    const { platform, clock } = env({ gpus: [{ vramMiB: 4, faultBuffer: { batchSize: 4 } }] });
    const g = platform.gpu(0);
    const log = recordEvents(platform, clock);
    const { batches } = firstTouchDriver(g);
    const s = g.createVaSpace();
    const k = g.compute.launch(
      s,
      Array.from({ length: 10 }, (_, w) => stream([w * PAGE_SIZE, w * PAGE_SIZE + 8], [ACCESS_READ, ACCESS_WRITE])),
    );
    await clock.settle(k.fence.promise);
    expect(k.fence.error).toBeUndefined();
    // Batch 1 fetches 4 of the 10 faults; no duplicates (≤ 50 %), so BATCH_FLUSH flushes up to the
    // cached PUT (the 6 others), then replays: the 6 still-unmapped warps fault again, and so on.
    expect(batches.map((b) => b.cached)).toEqual([4, 4, 2]);
    expect(g.faults.faultsPosted).toBe(10 + 6 + 2);
    expect(g.faults.faultsFlushed).toBe(6 + 2);
    expect(g.faults.replays).toBe(3);
    expect(log.filter((l) => l.includes("didReplayGpuFaults")).length).toBe(3);
    expect(k.stats.accesses).toBe(20);
    s.unmap(0, 10 * PAGE_SIZE);
  });

  it("upgrades a read-only mapping on a write fault (FAULT_TYPE_WRITE)", async () => {
    const { platform, clock } = env({ gpus: [{ vramMiB: 4 }] });
    const g = platform.gpu(0);
    const s = g.createVaSpace();
    s.map(0, PAGE_SIZE, APERTURE_VID, 0, GPU_PERM_READ);
    const seen: number[] = [];
    g.bindDriver({
      serviceFaults(b) {
        for (let i = 0; i < b.count; i++) {
          seen.push(b.faultType[i] as number, b.accessType[i] as number);
          s.protect(b.address[i] as number, PAGE_SIZE, GPU_PERM_RWA);
        }
      },
    });
    const k = g.compute.launch(s, [stream([0, 8, 16], [ACCESS_READ, ACCESS_WRITE, ACCESS_ATOMIC])]);
    await clock.settle(k.fence.promise);
    expect(seen).toEqual([FAULT_TYPE_WRITE, FAULT_ACCESS_WRITE]);
    expect(k.stats.accesses).toBe(3);
    s.unmap(0, PAGE_SIZE);
  });

  it("on overflow drops faults, keeps the warps stalled, and re-raises them after replays", async () => {
    const { platform, clock } = env({ gpus: [{ vramMiB: 4, faultBuffer: { entries: 4, batchSize: 4 } }] });
    const g = platform.gpu(0);
    const overflow: number[] = [];
    platform.bus.on("didOverflowFaultBuffer", (e) => overflow.push(e.address));
    const { batches } = firstTouchDriver(g);
    const s = g.createVaSpace();
    const k = g.compute.launch(
      s,
      Array.from({ length: 16 }, (_, w) => stream([w * PAGE_SIZE])),
    );
    await clock.settle(k.fence.promise);
    expect(k.fence.error).toBeUndefined();
    expect(batches.map((b) => b.count)).toEqual([4, 4, 4, 4]);
    expect(g.faults.faultsPosted).toBe(16);
    expect(g.faults.faultsDropped).toBe(12 + 8 + 4);
    expect(overflow.length).toBe(24);
    expect(g.faults.replays).toBe(4);
    expect(k.stats.accesses).toBe(16);
    expect(k.stats.faults).toBe(16 + 24);
    s.unmap(0, 16 * PAGE_SIZE);
  });

  it("cancelling a fault kills the stalled warps with EFAULT", async () => {
    const { platform, clock } = env({ gpus: [{ vramMiB: 4 }] });
    const g = platform.gpu(0);
    const s = g.createVaSpace();
    g.bindDriver({
      serviceFaults(b) {
        for (let i = 0; i < b.count; i++) {
          const va = b.address[i] as number;
          if (va >= 0x100000) g.faults.cancel(b.instance[i] as number, va);
          else s.map(va, PAGE_SIZE, APERTURE_VID, 0, GPU_PERM_RWA);
        }
      },
    });
    const k = g.compute.launch(s, [stream([0, 8]), stream([0x100000]), stream([0x100008])]);
    await clock.settle(k.fence.promise);
    expect(k.fence.error?.message).toContain("cancelled");
    expect((k.fence.error as HmmError | undefined)?.code).toBe("EFAULT");
    expect(k.stats.warpsKilled).toBe(2);
    expect(k.stats.accesses).toBe(2);
    s.unmap(0, PAGE_SIZE);
  });

  it("ONCE replays when the buffer drains; BLOCK leaves replays to the driver", async () => {
    for (const policy of ["once", "block"] as const) {
      const { platform, clock } = makePlatform({ gpus: [{ vramMiB: 4, faultBuffer: { replayPolicy: policy, batchSize: 2 } }] });
      const g = platform.gpu(0);
      const s = g.createVaSpace();
      g.bindDriver({
        serviceFaults(b) {
          for (let i = 0; i < b.count; i++) s.map(b.address[i] as number, PAGE_SIZE, APERTURE_VID, 0, GPU_PERM_RWA);
          if (policy === "block") g.faults.replay();
        },
      });
      const k = g.compute.launch(s, [stream([0]), stream([PAGE_SIZE]), stream([2 * PAGE_SIZE])]);
      await clock.settle(k.fence.promise);
      expect(g.faults.batches).toBe(2);
      expect(g.faults.replays).toBe(policy === "once" ? 1 : 2);
      s.unmap(0, 3 * PAGE_SIZE);
      await expectQuiescent(platform, clock);
    }
  });
});

describe("access counters", () => {
  it("notify the driver when a region's remote count reaches the threshold", async () => {
    const { ctx, platform, clock } = env({ gpus: [{ vramMiB: 4, accessCounters: { threshold: 100, granularity: 65536 } }] });
    const g = platform.gpu(0);
    const got: string[] = [];
    g.bindDriver({
      serviceAccessCounters(b: AccessCounterBatch) {
        for (let i = 0; i < b.count; i++)
          got.push(`${clock.now}:${b.address[i]}:${b.subMask[i]}:${b.aperture[i]}:${b.counterValue[i]}:${b.granularity}`);
      },
    });
    const s = g.createVaSpace();
    const iova = g.iommu.dmaMapPage(ctx.ram.basePfn, DMA_TO_DEVICE, 32);
    s.map(0, 32 * PAGE_SIZE, APERTURE_SYS, iova, GPU_PERM_READ);
    s.map(0x400000, PAGE_SIZE, APERTURE_VID, 0, GPU_PERM_RWA);
    // 99 remote reads in region 0, 250 in region 1 (64 KiB..128 KiB), 1000 local reads (not counted)
    const addrs = [
      ...Array.from({ length: 99 }, () => 0),
      ...Array.from({ length: 250 }, (_, i) => 65536 + (i % 16) * 2048),
      ...Array.from({ length: 1000 }, () => 0x400000),
    ];
    const k = g.compute.launch(s, [stream(addrs)]);
    await clock.settle(k.fence.promise);
    await clock.run();
    expect(g.accessCounters.counterOf(s.id, 0)).toBe(99);
    expect(g.accessCounters.counterOf(s.id, 65536)).toBe(50);
    expect(g.accessCounters.notifications).toBe(2);
    expect(got.length).toBe(2);
    // each 2 KiB step covers one 2 KiB sub-region (64 KiB / 32): bits 0,1,...,15 → 0xffff
    expect(got.map((x) => x.split(":").slice(1).join(":"))).toEqual([
      `65536:${0xffff}:${APERTURE_SYS}:100:65536`,
      `65536:${0xffff}:${APERTURE_SYS}:100:65536`,
    ]);
    s.unmap(0, 32 * PAGE_SIZE);
    s.unmap(0x400000, PAGE_SIZE);
    g.iommu.dmaUnmapPage(iova, 32);
  });

  it("a compute access refused by the IOMMU is fatal and raises io_page_fault", async () => {
    const { ctx, platform, clock } = env({ gpus: [{ vramMiB: 4 }] });
    const g = platform.gpu(0);
    const faults: string[] = [];
    platform.bus.on("io_page_fault", (e) => faults.push(`${e.source}:${e.reason}:${e.write}`));
    const s = g.createVaSpace();
    const iova = g.iommu.dmaMapPage(ctx.ram.basePfn, DMA_TO_DEVICE);
    s.map(0, PAGE_SIZE, APERTURE_SYS, iova, GPU_PERM_RWA); // GPU PTE allows writes, the IOMMU does not
    s.map(PAGE_SIZE, PAGE_SIZE, APERTURE_SYS, iova + PAGE_SIZE, GPU_PERM_RWA); // nothing mapped there
    const k = g.compute.launch(s, [stream([0, 8], [ACCESS_READ, ACCESS_WRITE]), stream([PAGE_SIZE])]);
    await clock.settle(k.fence.promise);
    expect((k.fence.error as HmmError | undefined)?.code).toBe("EFAULT");
    expect(k.stats.warpsKilled).toBe(2);
    expect(k.stats.accesses).toBe(1);
    expect(faults).toEqual(["compute:readonly:true", "compute:unmapped:false"]);
    s.unmap(0, 2 * PAGE_SIZE);
    g.iommu.dmaUnmapPage(iova);
  });
});
