import { PAGE_SIZE } from "@hmmkit/core/phys";
import type { HmmError, SimClock } from "@hmmkit/core/sim";
import { afterEach, describe, expect, it } from "vitest";
import { ACCESS_READ, ACCESS_WRITE } from "../compute";
import { CopyBatch, DmaError } from "../copy-engine";
import { APERTURE_SYS, APERTURE_VID, aperturePeer, GPU_PERM_RWA } from "../gpu-mmu";
import { DMA_BIDIRECTIONAL } from "../iommu";
import type { Platform, PlatformConfig } from "../platform";
import { expectQuiescent, fillRandom, makePlatform, readPage, recordEvents } from "./helpers";

let guard: { platform: Platform; clock: SimClock } | undefined;
afterEach(async () => {
  if (guard !== undefined) await expectQuiescent(guard.platform, guard.clock);
  guard = undefined;
});

const TWO: PlatformConfig = {
  gpus: [{ vramMiB: 8 }, { vramMiB: 8 }],
  peerLinks: [{ gpus: [0, 1], preset: "nvlink3" }],
};

describe("fault injection", () => {
  it("an injected DMA error fails the batch at the chosen descriptor; the driver sees EIO on the fence", async () => {
    const e = makePlatform(TWO);
    guard = e;
    const { ctx, platform, clock } = e;
    const g = platform.gpu(0);
    const data = [0, 1, 2, 3].map((i) => fillRandom(ctx, g.vram.basePfn + i));
    platform.inject.injectDmaError(0, { descriptor: 2 });
    expect(platform.inject.pendingDmaErrors(0)).toBe(1);
    const b = new CopyBatch();
    for (let i = 0; i < 4; i++) b.push(APERTURE_VID, i * PAGE_SIZE, aperturePeer(1), i * PAGE_SIZE, PAGE_SIZE);
    const f = g.copy.submit(b);
    const ok = g.copy.submit(b); // the next batch is not affected
    await clock.settle(Promise.all([f.promise, ok.promise]));
    expect(f.error).toBeInstanceOf(DmaError);
    expect((f.error as DmaError).code).toBe("EIO");
    expect((f.error as DmaError).descriptor).toBe(2);
    const p1 = platform.gpu(1).vram.basePfn;
    expect(ok.error).toBeUndefined();
    for (let i = 0; i < 4; i++) expect(readPage(ctx, p1 + i)).toEqual(data[i]);
    expect(platform.inject.stats).toMatchObject({ dmaErrorsArmed: 1, dmaErrorsFired: 1 });
    expect(platform.inject.pendingDmaErrors(0)).toBe(0);
  });

  it("the failed batch moved exactly the descriptors before the failing one", async () => {
    const e = makePlatform(TWO);
    guard = e;
    const { ctx, platform, clock } = e;
    const g = platform.gpu(0);
    const data = [0, 1, 2].map((i) => fillRandom(ctx, g.vram.basePfn + i));
    platform.inject.injectDmaError(0, { descriptor: 1, engine: 1 });
    const b = new CopyBatch();
    for (let i = 0; i < 3; i++) b.push(APERTURE_VID, i * PAGE_SIZE, APERTURE_VID, (100 + i) * PAGE_SIZE, PAGE_SIZE);
    const f0 = g.copy.submit(b, { engine: 0 }); // engine 0 is not targeted
    await clock.settle(f0.promise);
    expect(f0.error).toBeUndefined();
    b.clear();
    for (let i = 0; i < 3; i++) b.push(APERTURE_VID, i * PAGE_SIZE, APERTURE_VID, (200 + i) * PAGE_SIZE, PAGE_SIZE);
    const f1 = g.copy.submit(b, { engine: 1 });
    await clock.settle(f1.promise);
    expect((f1.error as DmaError).descriptor).toBe(1);
    expect(readPage(ctx, g.vram.basePfn + 200)).toEqual(data[0]);
    expect(ctx.contents.isZero(g.vram.basePfn + 201)).toBe(true);
    expect(ctx.contents.isZero(g.vram.basePfn + 202)).toBe(true);
    expect(g.copy.stats[1]).toMatchObject({ descriptors: 1, bytes: PAGE_SIZE, errors: 1 });
  });

  it("ECC poison is reported to the driver and fails later device reads of the frame", async () => {
    const e = makePlatform(TWO);
    guard = e;
    const { platform, clock } = e;
    const g = platform.gpu(0);
    const pfn = g.vram.basePfn + 5;
    const events: number[] = [];
    platform.bus.on("didDetectEccError", (x) => events.push(x.pfn));
    // Poisoned before a driver binds: reported when it binds.
    expect(platform.inject.poisonVram(0, pfn)).toBe(true);
    expect(platform.inject.poisonVram(0, pfn)).toBe(false);
    const seen: number[] = [];
    g.bindDriver({ handleEccError: (p) => seen.push(p) });
    expect(seen).toEqual([pfn]);
    platform.inject.poisonVram(0, pfn + 1);
    expect(seen).toEqual([pfn, pfn + 1]);
    expect(events).toEqual([pfn, pfn + 1]);
    expect(g.vram.isPoisoned(pfn)).toBe(true);
    const f = g.copy.submit(new CopyBatch().push(APERTURE_VID, 5 * PAGE_SIZE, aperturePeer(1), 0, PAGE_SIZE));
    await clock.settle(f.promise);
    expect((f.error as DmaError).code).toBe("EIO");
    expect(f.error?.message).toContain("ECC");
    // a kernel reading it loses the warp; writing it is fine
    const s = g.createVaSpace();
    s.map(0, PAGE_SIZE, APERTURE_VID, 6 * PAGE_SIZE, GPU_PERM_RWA);
    const kw = g.compute.launch(s, [{ addr: Float64Array.of(0), size: Uint8Array.of(8), flags: Uint8Array.of(ACCESS_WRITE) }]);
    await clock.settle(kw.fence.promise);
    expect(kw.fence.error).toBeUndefined();
    const kr = g.compute.launch(s, [{ addr: Float64Array.of(0), size: Uint8Array.of(8), flags: Uint8Array.of(ACCESS_READ) }]);
    await clock.settle(kr.fence.promise);
    expect((kr.fence.error as HmmError | undefined)?.code).toBe("EIO");
    s.unmap(0, PAGE_SIZE);
    g.vram.unpoison(pfn);
    g.vram.unpoison(pfn + 1);
    expect(g.vram.framesPoisoned).toBe(0);
    expect(() => platform.inject.poisonVram(0, 3)).toThrow(expect.objectContaining({ code: "EINVAL" }));
  });

  it("link down fails in-flight and new copies over it with EIO; other links keep working", async () => {
    const e = makePlatform(TWO);
    guard = e;
    const { ctx, platform, clock } = e;
    const g = platform.gpu(0);
    const states: string[] = [];
    platform.bus.on("didChangeLinkState", (x) => states.push(`${x.link}:${x.up}`));
    const size = 4 * 1024 * 1024;
    const peer = g.copy.submit(new CopyBatch().push(APERTURE_VID, 0, aperturePeer(1), 0, size));
    const iova = g.iommu.dmaMapPage(ctx.ram.basePfn, DMA_BIDIRECTIONAL, 16);
    const host = g.copy.submit(new CopyBatch().push(APERTURE_SYS, iova, APERTURE_VID, size, 16 * PAGE_SIZE));
    await clock.runUntil(5000);
    platform.inject.setLinkState("gpu0-gpu1", false);
    expect(peer.signaled).toBe(true);
    expect((peer.error as DmaError).code).toBe("EIO");
    expect(peer.error?.message).toContain("gpu0-gpu1");
    const again = g.copy.submit(new CopyBatch().push(APERTURE_VID, 0, aperturePeer(1), 0, PAGE_SIZE));
    await clock.settle(Promise.all([host.promise, again.promise]));
    expect(host.error).toBeUndefined();
    expect((again.error as DmaError).code).toBe("EIO");
    // a kernel reaching the peer over the dead link loses its warp
    const s = g.createVaSpace();
    s.map(0, PAGE_SIZE, aperturePeer(1), 0, GPU_PERM_RWA);
    const k = g.compute.launch(s, [{ addr: Float64Array.of(0), size: Uint8Array.of(8), flags: Uint8Array.of(ACCESS_READ) }]);
    await clock.settle(k.fence.promise);
    expect((k.fence.error as HmmError | undefined)?.code).toBe("EIO");
    platform.inject.setLinkState("gpu0-gpu1", true);
    const back = g.copy.submit(new CopyBatch().push(APERTURE_VID, 0, aperturePeer(1), 0, PAGE_SIZE));
    await clock.settle(back.promise);
    expect(back.error).toBeUndefined();
    expect(states).toEqual(["gpu0-gpu1:false", "gpu0-gpu1:true"]);
    expect(platform.inject.stats.linkDowns).toBe(1);
    s.unmap(0, PAGE_SIZE);
    g.iommu.dmaUnmapPage(iova, 16);
  });
});

/** A mixed concurrent scenario: copies on several engines and links, faults, a kernel. */
async function scenario(seed: number): Promise<string[]> {
  const { ctx, platform, clock } = makePlatform(
    {
      gpus: [
        { vramMiB: 8, faultBuffer: { batchSize: 8 } },
        { vramMiB: 8, hostLink: { preset: "pcie3" } },
      ],
      peerLinks: [{ gpus: [0, 1], preset: "pcie-p2p" }],
    },
    64,
    seed,
  );
  const log = recordEvents(platform, clock);
  const rng = ctx.rng.fork("scenario");
  const [g0, g1] = [platform.gpu(0), platform.gpu(1)];
  const iovas = g0.iommu.dmaMapPages(
    Array.from({ length: 64 }, (_, i) => ctx.ram.basePfn + i),
    DMA_BIDIRECTIONAL,
  );
  const fences = [];
  for (let j = 0; j < 6; j++) {
    const b = new CopyBatch();
    for (let i = 0; i < 8; i++) {
      const p = rng.int(64);
      if (j % 3 === 0) b.push(APERTURE_SYS, iovas[p] as number, APERTURE_VID, rng.int(2048) * PAGE_SIZE, PAGE_SIZE);
      else if (j % 3 === 1)
        b.push(APERTURE_VID, rng.int(2048) * PAGE_SIZE, aperturePeer(1), rng.int(2048) * PAGE_SIZE, PAGE_SIZE * (1 + rng.int(4)));
      else b.push(APERTURE_VID, rng.int(2048) * PAGE_SIZE, APERTURE_SYS, iovas[p] as number, PAGE_SIZE);
    }
    fences.push(g0.copy.submit(b));
  }
  fences.push(g1.copy.submit(new CopyBatch().push(aperturePeer(0), 0, APERTURE_VID, 0, 1 << 20)));
  const s = g0.createVaSpace();
  g0.bindDriver({
    async serviceFaults(b) {
      for (let i = 0; i < b.count; i++) s.map(b.address[i] as number, PAGE_SIZE, APERTURE_VID, rng.int(2048) * PAGE_SIZE, GPU_PERM_RWA);
      await clock.sleep(2000);
    },
  });
  const streams = Array.from({ length: 6 }, () => {
    const n = 200;
    const addr = new Float64Array(n);
    for (let i = 0; i < n; i++) addr[i] = rng.int(32) * PAGE_SIZE + rng.int(64) * 64;
    return { addr, size: new Uint8Array(n).fill(64), flags: new Uint8Array(n).fill(ACCESS_READ) };
  });
  const k = g0.compute.launch(s, streams);
  await clock.settle(Promise.all([...fences.map((f) => f.promise), k.fence.promise]));
  await clock.run();
  log.push(`end ${clock.now} ${JSON.stringify(platform.linkBytes())}`);
  s.unmap(0, 32 * PAGE_SIZE);
  for (const a of iovas) g0.iommu.dmaUnmapPage(a);
  await expectQuiescent(platform, clock);
  return log;
}

describe("determinism", () => {
  it("same seed + same operations ⇒ identical event order and timestamps", async () => {
    const a = await scenario(42);
    const b = await scenario(42);
    expect(a.length).toBeGreaterThan(50);
    expect(b).toEqual(a);
    const c = await scenario(43);
    expect(c).not.toEqual(a);
  });
});
