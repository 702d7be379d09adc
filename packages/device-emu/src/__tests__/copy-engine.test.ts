import { PAGE_SIZE } from "@hmmkit/core/phys";
import { BugError, HmmError } from "@hmmkit/core/sim";
import { afterEach, describe, expect, it } from "vitest";
import { CopyBatch, DmaError } from "../copy-engine";
import { APERTURE_SYS, APERTURE_VID, aperturePeer } from "../gpu-mmu";
import { DMA_BIDIRECTIONAL, DMA_FROM_DEVICE, DMA_TO_DEVICE } from "../iommu";
import type { Platform } from "../platform";
import { expectQuiescent, fillRandom, makePlatform, readPage, recordEvents } from "./helpers";

const GiB = 1024 * 1024 * 1024;
let guard: { platform: Platform; clock: import("@hmmkit/core/sim").SimClock } | undefined;
afterEach(async () => {
  if (guard !== undefined) await expectQuiescent(guard.platform, guard.clock);
  guard = undefined;
});

function twoGpus(vramMiB: number, peerGBps = 25, latencyNs = 2000, ramMiB = 64) {
  const env = makePlatform(
    {
      gpus: [
        { vramMiB, hostLink: { h2dGBps: 25, d2hGBps: 25, latencyNs } },
        { vramMiB, hostLink: { h2dGBps: 25, d2hGBps: 25, latencyNs } },
      ],
      peerLinks: [{ gpus: [0, 1], bandwidthGBps: peerGBps, latencyNs }],
    },
    ramMiB,
  );
  guard = env;
  return env;
}

describe("copy engine timing", () => {
  it("a 1 GiB peer copy over a 25 GB/s link takes 1 GiB / 25 GB/s + latency (within 1%)", async () => {
    const { platform, clock } = twoGpus(1024);
    const g0 = platform.gpu(0);
    const f = g0.copy.submit(new CopyBatch().push(APERTURE_VID, 0, aperturePeer(1), 0, GiB));
    await clock.settle(f.promise);
    const expected = GiB / 25 + 2000;
    expect(f.error).toBeUndefined();
    expect(Math.abs(f.time - expected) / expected).toBeLessThan(0.01);
    expect(f.time).toBe(2000 + Math.ceil(GiB / 25));
    expect(platform.peerLink(0, 1)?.forward.bytes).toBe(GiB);
    expect(platform.peerLink(0, 1)?.reverse.bytes).toBe(0);
  });

  it("a 1 GiB host→VRAM copy through the IOMMU takes 1 GiB / 25 GB/s + latency (within 1%)", async () => {
    const { ctx, platform, clock } = twoGpus(1024, 25, 2000, 1024);
    const g0 = platform.gpu(0);
    const iova = g0.iommu.dmaMapPage(ctx.ram.basePfn, DMA_TO_DEVICE, GiB / PAGE_SIZE);
    const f = g0.copy.submit(new CopyBatch().push(APERTURE_SYS, iova, APERTURE_VID, 0, GiB));
    await clock.settle(f.promise);
    const expected = GiB / 25 + 2000;
    expect(Math.abs(f.time - expected) / expected).toBeLessThan(0.01);
    expect(platform.hostLink(0).forward.bytes).toBe(GiB);
    g0.iommu.dmaUnmapPage(iova, GiB / PAGE_SIZE);
  });

  it("two concurrent copies over one link each take about twice as long", async () => {
    const { platform, clock } = twoGpus(256);
    const g0 = platform.gpu(0);
    const size = 128 * 1024 * 1024;
    const a = g0.copy.submit(new CopyBatch().push(APERTURE_VID, 0, aperturePeer(1), 0, size), { engine: 0 });
    const b = g0.copy.submit(new CopyBatch().push(APERTURE_VID, size, aperturePeer(1), size, size), { engine: 1 });
    await clock.settle(Promise.all([a.promise, b.promise]));
    const alone = 2000 + size / 25;
    const shared = 2000 + (2 * size) / 25;
    expect(Math.abs(a.time - shared) / shared).toBeLessThan(0.01);
    expect(Math.abs(b.time - shared) / shared).toBeLessThan(0.01);
    expect(a.time / alone).toBeGreaterThan(1.9);
  });

  it("a copy joining later gets a fair share from then on", async () => {
    const { platform, clock } = twoGpus(256, 25, 0);
    const g0 = platform.gpu(0);
    const size = 100 * 1000 * 1000;
    const a = g0.copy.submit(new CopyBatch().push(APERTURE_VID, 0, aperturePeer(1), 0, size), { engine: 0 });
    await clock.runUntil(2_000_000); // a has moved 50 MB alone
    const b = g0.copy.submit(new CopyBatch().push(APERTURE_VID, size, aperturePeer(1), size, size / 2), { engine: 1 });
    await clock.settle(Promise.all([a.promise, b.promise]));
    // From 2 ms both share: each at 12.5 GB/s; b (50 MB) and a's remaining 50 MB finish together at 6 ms.
    expect(b.time).toBe(6_000_000);
    expect(a.time).toBe(6_000_000);
  });

  it("copies over distinct links overlap", async () => {
    const { ctx, platform, clock } = twoGpus(256);
    const g0 = platform.gpu(0);
    const size = 32 * 1024 * 1024;
    const iova = g0.iommu.dmaMapPage(ctx.ram.basePfn, DMA_BIDIRECTIONAL, size / PAGE_SIZE);
    const peer = g0.copy.submit(new CopyBatch().push(APERTURE_VID, 0, aperturePeer(1), 0, size), { engine: 0 });
    const h2d = g0.copy.submit(new CopyBatch().push(APERTURE_SYS, iova, APERTURE_VID, size, size), { engine: 1 });
    const d2h = platform.gpu(1).copy.submit(new CopyBatch().push(APERTURE_VID, size, aperturePeer(0), 2 * size, size));
    await clock.settle(Promise.all([peer.promise, h2d.promise, d2h.promise]));
    const alone = 2000 + size / 25;
    for (const f of [peer, h2d, d2h]) expect(Math.abs(f.time - alone) / alone).toBeLessThan(0.01);
    g0.iommu.dmaUnmapPage(iova, size / PAGE_SIZE);
  });

  it("charges every 4 KiB descriptor its path latency, as UVMSmart does", async () => {
    const { ctx, platform, clock } = makePlatform({ gpus: [{ vramMiB: 4, hostLink: { preset: "pcie3" } }] });
    guard = { platform, clock };
    const g = platform.gpu(0);
    const iovas = g.iommu.dmaMapPages(
      Array.from({ length: 16 }, (_, i) => ctx.ram.basePfn + i),
      DMA_TO_DEVICE,
    );
    const b = new CopyBatch();
    for (let i = 0; i < 16; i++) b.push(APERTURE_SYS, iovas[i] as number, APERTURE_VID, i * PAGE_SIZE, PAGE_SIZE);
    const f = g.copy.submit(b);
    await clock.settle(f.promise);
    expect(f.time).toBe(16 * 1423 + Math.ceil((16 * 4096) / 12.2));
    for (const a of iovas) g.iommu.dmaUnmapPage(a);
  });

  it("keeps per-engine statistics and queue depth", async () => {
    const { platform, clock } = twoGpus(16);
    const g = platform.gpu(0);
    const fences = [];
    for (let i = 0; i < 3; i++)
      fences.push(
        g.copy.submit(new CopyBatch().push(APERTURE_VID, 0, APERTURE_VID, 4 * 1024 * 1024, 1024 * 1024), { engine: 1, channel: 0 }),
      );
    expect(g.copy.queueDepth(1, 0)).toBe(3);
    expect(g.copy.maxQueueDepth[2]).toBe(3);
    await clock.settle(Promise.all(fences.map((f) => f.promise)));
    const st = g.copy.stats[1];
    expect(st).toEqual({ busyNs: clock.now, batches: 3, descriptors: 3, bytes: 3 * 1024 * 1024, errors: 0 });
    expect(g.copy.utilisation(1)).toBe(1);
    expect(g.copy.utilisation(0)).toBe(0);
    // in-order channel: each batch = 1000 ns latency + 2 MiB of VRAM traffic at 1555 GB/s
    expect((fences[2] as { time: number }).time).toBe(3 * (1000 + Math.ceil((2 * 1024 * 1024) / 1555)));
    expect(platform.vramPort(0).bytes).toBe(3 * 2 * 1024 * 1024);
  });
});

describe("copy engine data paths", () => {
  it("moves real bytes on every path: host→VRAM, VRAM→VRAM, VRAM→peer, peer→VRAM, VRAM→host", async () => {
    const { ctx, platform, clock } = twoGpus(4);
    const [g0, g1] = [platform.gpu(0), platform.gpu(1)];
    const n = 8;
    const src = Array.from({ length: n }, (_, i) => ctx.ram.basePfn + 10 + i * 3); // scattered
    const dstSys = Array.from({ length: n }, (_, i) => ctx.ram.basePfn + 100 + i);
    const data = src.map((p) => fillRandom(ctx, p));
    const inIova = g0.iommu.dmaMapPages(src, DMA_TO_DEVICE);
    const outIova = g0.iommu.dmaMapPages(dstSys, DMA_FROM_DEVICE);
    const step = async (b: CopyBatch, gpu = g0) => {
      const f = gpu.copy.submit(b);
      await clock.settle(f.promise);
      expect(f.error).toBeUndefined();
    };
    const b = new CopyBatch();
    for (let i = 0; i < n; i++) b.push(APERTURE_SYS, inIova[i] as number, APERTURE_VID, i * PAGE_SIZE, PAGE_SIZE);
    await step(b);
    for (let i = 0; i < n; i++) expect(readPage(ctx, g0.vram.basePfn + i)).toEqual(data[i]);
    b.clear();
    b.push(APERTURE_VID, 0, APERTURE_VID, 64 * PAGE_SIZE, n * PAGE_SIZE);
    await step(b);
    b.clear();
    b.push(APERTURE_VID, 64 * PAGE_SIZE, aperturePeer(1), 200 * PAGE_SIZE, n * PAGE_SIZE);
    await step(b);
    for (let i = 0; i < n; i++) expect(readPage(ctx, g1.vram.basePfn + 200 + i)).toEqual(data[i]);
    b.clear();
    b.push(aperturePeer(0), 0, APERTURE_VID, 300 * PAGE_SIZE, n * PAGE_SIZE); // gpu1 pulls from gpu0
    await step(b, g1);
    for (let i = 0; i < n; i++) expect(readPage(ctx, g1.vram.basePfn + 300 + i)).toEqual(data[i]);
    b.clear();
    for (let i = 0; i < n; i++) b.push(APERTURE_VID, (64 + i) * PAGE_SIZE, APERTURE_SYS, outIova[i] as number, PAGE_SIZE);
    await step(b);
    for (let i = 0; i < n; i++) expect(readPage(ctx, dstSys[i] as number)).toEqual(data[i]);
    for (const a of [...inIova, ...outIova]) g0.iommu.dmaUnmapPage(a);
    expect(platform.linkBytes()["gpu0.h2d"]).toBe(n * PAGE_SIZE);
    expect(platform.linkBytes()["gpu0.d2h"]).toBe(n * PAGE_SIZE);
    // gpu0 pushed n pages to gpu1, then gpu1 pulled n pages from gpu0: both cross gpu0→gpu1.
    expect(platform.linkBytes()["gpu0->gpu1"]).toBe(2 * n * PAGE_SIZE);
    expect(platform.linkBytes()["gpu1->gpu0"]).toBe(0);
  });

  it("copies unaligned byte ranges exactly", async () => {
    const { ctx, platform, clock } = twoGpus(4);
    const g = platform.gpu(0);
    const data = [fillRandom(ctx, ctx.ram.basePfn), fillRandom(ctx, ctx.ram.basePfn + 1)];
    const iova = g.iommu.dmaMapPage(ctx.ram.basePfn, DMA_TO_DEVICE, 2);
    const f = g.copy.submit(new CopyBatch().push(APERTURE_SYS, iova + 100, APERTURE_VID, 3 * PAGE_SIZE + 7, 5000));
    await clock.settle(f.promise);
    const all = new Uint8Array(8192);
    all.set(data[0] as Uint8Array, 0);
    all.set(data[1] as Uint8Array, 4096);
    const vr = new Uint8Array(2 * 4096);
    vr.set(readPage(ctx, g.vram.basePfn + 3), 0);
    vr.set(readPage(ctx, g.vram.basePfn + 4), 4096);
    expect(vr.subarray(7, 5007)).toEqual(all.subarray(100, 5100));
    expect(vr.subarray(0, 7)).toEqual(new Uint8Array(7));
    expect(vr.subarray(5007)).toEqual(new Uint8Array(8192 - 5007));
    g.iommu.dmaUnmapPage(iova, 2);
  });
});

describe("IOMMU", () => {
  it("refuses a DMA to an unmapped address: io_page_fault, EFAULT on the fence, no byte moved", async () => {
    const { ctx, platform, clock } = twoGpus(4);
    const log = recordEvents(platform, clock);
    const g = platform.gpu(0);
    const data = fillRandom(ctx, ctx.ram.basePfn + 5);
    const iova = g.iommu.dmaMapPage(ctx.ram.basePfn + 5, DMA_TO_DEVICE);
    const b = new CopyBatch()
      .push(APERTURE_SYS, iova, APERTURE_VID, 0, PAGE_SIZE)
      .push(APERTURE_SYS, iova + 4 * PAGE_SIZE, APERTURE_VID, PAGE_SIZE, PAGE_SIZE);
    const f = g.copy.submit(b);
    await clock.settle(f.promise);
    expect(f.error).toBeInstanceOf(DmaError);
    expect((f.error as DmaError).code).toBe("EFAULT");
    expect((f.error as DmaError).descriptor).toBe(1);
    expect(readPage(ctx, g.vram.basePfn)).toEqual(data); // descriptor 0 completed
    expect(ctx.contents.isZero(g.vram.basePfn + 1)).toBe(true);
    expect(g.iommu.faults).toBe(1);
    expect(log.filter((l) => l.includes("io_page_fault"))).toEqual([
      `0 io_page_fault {"gpu":0,"iova":${iova + 4 * PAGE_SIZE},"write":false,"reason":"unmapped","source":"dma"}`,
    ]);
    expect(g.copy.stats.reduce((s, e) => s + e.errors, 0)).toBe(1);
    g.iommu.dmaUnmapPage(iova);
  });

  it("refuses a device write to a read-only (DMA_TO_DEVICE) mapping and a read of a write-only one", async () => {
    const { ctx, platform, clock } = twoGpus(4);
    const g = platform.gpu(0);
    const before = fillRandom(ctx, ctx.ram.basePfn + 1);
    const ro = g.iommu.dmaMapPage(ctx.ram.basePfn + 1, DMA_TO_DEVICE);
    const wo = g.iommu.dmaMapPage(ctx.ram.basePfn + 2, DMA_FROM_DEVICE);
    const f1 = g.copy.submit(new CopyBatch().push(APERTURE_VID, 0, APERTURE_SYS, ro, PAGE_SIZE));
    const f2 = g.copy.submit(new CopyBatch().push(APERTURE_SYS, wo, APERTURE_VID, 0, PAGE_SIZE));
    await clock.settle(Promise.all([f1.promise, f2.promise]));
    expect((f1.error as DmaError).code).toBe("EFAULT");
    expect(f1.error?.message).toContain("readonly");
    expect((f2.error as DmaError).code).toBe("EFAULT");
    expect(f2.error?.message).toContain("writeonly");
    expect(readPage(ctx, ctx.ram.basePfn + 1)).toEqual(before);
    expect(g.iommu.translate(ro, true, "dma")).toBe(-1);
    expect(g.iommu.translate(ro, false, "dma")).toBe(ctx.ram.basePfn + 1);
    g.iommu.dmaUnmapPage(ro);
    g.iommu.dmaUnmapPage(wo);
  });

  it("reports driver bugs: double unmap, wrong size, unmap during DMA; refuses device memory", async () => {
    const { ctx, platform, clock } = twoGpus(4);
    const g = platform.gpu(0);
    const a = g.iommu.dmaMapPage(ctx.ram.basePfn, DMA_BIDIRECTIONAL, 2);
    expect(() => g.iommu.dmaUnmapPage(a, 1)).toThrow(expect.objectContaining({ check: "dma-unmap-size" }));
    const f = g.copy.submit(new CopyBatch().push(APERTURE_SYS, a, APERTURE_VID, 0, 2 * PAGE_SIZE));
    expect(() => g.iommu.dmaUnmapPage(a, 2)).toThrow(expect.objectContaining({ check: "dma-unmap-busy" }));
    await clock.settle(f.promise);
    g.iommu.dmaUnmapPage(a, 2);
    expect(() => g.iommu.dmaUnmapPage(a, 2)).toThrow(BugError);
    expect(() => g.iommu.dmaUnmapPage(a, 2)).toThrow(expect.objectContaining({ check: "dma-unmap-unmapped" }));
    expect(() => g.iommu.dmaMapPage(g.vram.basePfn, DMA_TO_DEVICE)).toThrow(HmmError);
    expect(() => g.iommu.dmaMapPages([ctx.ram.basePfn, g.vram.basePfn], DMA_TO_DEVICE)).toThrow(
      expect.objectContaining({ arg: "pfns[1]" }),
    );
    expect(g.iommu.mappedPages).toBe(0);
    // IOVAs are reused by size, deterministically
    const b = g.iommu.dmaMapPage(ctx.ram.basePfn + 7, DMA_TO_DEVICE, 2);
    expect(b).toBe(a);
    g.iommu.dmaUnmapPage(b, 2);
  });

  it("validates descriptors at submit and queues nothing on error", () => {
    const { platform } = twoGpus(4);
    const g = platform.gpu(0);
    const bad = (b: CopyBatch, arg: string) => {
      expect(() => g.copy.submit(b)).toThrow(expect.objectContaining({ code: "EINVAL", arg }));
    };
    bad(new CopyBatch(), "batch.count");
    bad(new CopyBatch().push(APERTURE_VID, 0, APERTURE_VID, 4096, 0), "batch.length[0]");
    bad(new CopyBatch().push(APERTURE_VID, 0, APERTURE_VID, 4096, 1).push(APERTURE_VID, 4 << 20, APERTURE_VID, 0, 1), "batch.srcAddr[1]");
    bad(new CopyBatch().push(APERTURE_SYS, 0x100000, APERTURE_SYS, 0x200000, 4096), "batch.dstAperture[0]");
    bad(new CopyBatch().push(APERTURE_VID, 0, aperturePeer(0), 0, 4096), "batch.dstAperture[0]");
    bad(new CopyBatch().push(APERTURE_VID, 0, aperturePeer(5), 0, 4096), "batch.dstAperture[0]");
    expect(() => g.copy.submit(new CopyBatch().push(APERTURE_VID, 0, APERTURE_VID, 4096, 1), { engine: 2 })).toThrow(
      expect.objectContaining({ arg: "opts.engine" }),
    );
    expect(g.copy.idle).toBe(true);
  });
});
