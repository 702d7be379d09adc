import { PAGE_SIZE } from "@hmmkit/core/phys";
import * as fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ACCESS_READ } from "../compute";
import { APERTURE_SYS, APERTURE_VID, aperturePeer, GPU_PERM_READ, GPU_PERM_RWA, GpuVaSpace } from "../gpu-mmu";
import { expectQuiescent, makePlatform } from "./helpers";

describe("GpuVaSpace", () => {
  it("maps 4 KiB, 64 KiB and 2 MiB pages and translates every byte", () => {
    const s = new GpuVaSpace(0, 1);
    s.map(0x200000, 0x200000, APERTURE_VID, 0x400000, GPU_PERM_RWA, 2097152);
    s.map(0x410000, 0x20000, APERTURE_SYS, 0x1000000, GPU_PERM_READ, 65536);
    s.mapPages(0x500000, aperturePeer(1), [0x3000, 0x1000], GPU_PERM_RWA);
    expect(s.lookup(0x2fffff)).toEqual({ aperture: APERTURE_VID, addr: 0x4fffff, perms: GPU_PERM_RWA, pageSize: 2097152 });
    expect(s.lookup(0x41f000 + 5)).toEqual({ aperture: APERTURE_SYS, addr: 0x100f005, perms: GPU_PERM_READ, pageSize: 65536 });
    expect(s.lookup(0x501010)).toEqual({ aperture: aperturePeer(1), addr: 0x1010, perms: GPU_PERM_RWA, pageSize: 4096 });
    expect(s.lookup(0x400000)).toBeUndefined();
    expect(s.validPtes).toBe(512 + 32 + 2);
    expect(s.blockCount).toBe(2);
    // cutting a large mapping in part is refused; whole removal works
    expect(() => s.unmap(0x200000, PAGE_SIZE)).toThrow(expect.objectContaining({ code: "EINVAL", arg: "va" }));
    expect(() => s.map(0x420000, PAGE_SIZE, APERTURE_VID, 0, GPU_PERM_RWA)).toThrow(expect.objectContaining({ code: "EINVAL" }));
    expect(() => s.map(0x430000, PAGE_SIZE, APERTURE_VID, 0, GPU_PERM_RWA)).not.toThrow();
    expect(() => s.protect(0x410000, 0x8000, GPU_PERM_RWA)).toThrow(expect.objectContaining({ code: "EINVAL" }));
    expect(s.unmap(0x200000, 0x200000)).toBe(512);
    expect(s.protect(0x410000, 0x10000, GPU_PERM_RWA)).toBe(16);
    expect(s.unmap(0x400000, 0x100000)).toBe(33);
    expect(s.unmap(0x500000, 2 * PAGE_SIZE)).toBe(2);
    expect(s.validPtes).toBe(0);
    expect(s.blockCount).toBe(0);
    expect(() => s.map(1, PAGE_SIZE, APERTURE_VID, 0, GPU_PERM_RWA)).toThrow(expect.objectContaining({ arg: "va" }));
    expect(() => s.map(0, 0x10000, APERTURE_VID, 0x1000, GPU_PERM_RWA, 65536)).toThrow(expect.objectContaining({ arg: "addr" }));
    expect(() => s.map(0, PAGE_SIZE, aperturePeer(0), 0, GPU_PERM_RWA)).toThrow(expect.objectContaining({ arg: "aperture" }));
    expect(() => s.map(0, PAGE_SIZE, APERTURE_VID, 0, 0)).toThrow(expect.objectContaining({ arg: "perms" }));
    expect(() => s.map(2 ** 49 - PAGE_SIZE, 2 * PAGE_SIZE, APERTURE_VID, 0, GPU_PERM_RWA)).toThrow(expect.objectContaining({ arg: "va" }));
  });

  it("agrees with a per-page reference model over random map/unmap/protect sequences", () => {
    type Op = { kind: 0 | 1 | 2; page: number; n: number; target: number; perms: number };
    const op = fc.record({
      kind: fc.constantFrom<0 | 1 | 2>(0, 1, 2),
      page: fc.integer({ min: 0, max: 1500 }),
      n: fc.integer({ min: 1, max: 600 }),
      target: fc.integer({ min: 0, max: 4096 }),
      perms: fc.integer({ min: 1, max: 7 }),
    });
    fc.assert(
      fc.property(fc.array(op, { maxLength: 40 }), (ops: Op[]) => {
        const s = new GpuVaSpace(0, 1);
        const model = new Map<number, { t: number; p: number }>();
        for (const o of ops) {
          const va = o.page * PAGE_SIZE;
          if (o.kind === 0) {
            s.map(va, o.n * PAGE_SIZE, APERTURE_VID, o.target * PAGE_SIZE, o.perms);
            for (let i = 0; i < o.n; i++) model.set(o.page + i, { t: o.target + i, p: o.perms });
          } else if (o.kind === 1) {
            s.unmap(va, o.n * PAGE_SIZE);
            for (let i = 0; i < o.n; i++) model.delete(o.page + i);
          } else {
            s.protect(va, o.n * PAGE_SIZE, o.perms);
            for (let i = 0; i < o.n; i++) {
              const e = model.get(o.page + i);
              if (e !== undefined) e.p = o.perms;
            }
          }
        }
        expect(s.validPtes).toBe(model.size);
        for (let p = 0; p < 2200; p++) {
          const e = model.get(p);
          const l = s.lookup(p * PAGE_SIZE + 8);
          if (e === undefined) expect(l).toBeUndefined();
          else expect(l).toEqual({ aperture: APERTURE_VID, addr: e.t * PAGE_SIZE + 8, perms: e.p, pageSize: 4096 });
        }
      }),
      { numRuns: 60, seed: 4 },
    );
  });
});

describe("compute traffic shares links with copies", () => {
  it("a kernel reading a peer's VRAM pays the NVLink latency and bandwidth and is counted remotely", async () => {
    const { platform, clock } = makePlatform({
      gpus: [{ vramMiB: 4, warpQuantum: 1 << 20, accessCounters: { threshold: 1000 } }, { vramMiB: 4 }],
      peerLinks: [{ gpus: [0, 1], bandwidthGBps: 10, latencyNs: 1850 }],
    });
    const g = platform.gpu(0);
    let notes = 0;
    g.bindDriver({ serviceAccessCounters: (b) => void (notes += b.count) });
    const s = g.createVaSpace();
    s.map(0, 0x10000, aperturePeer(1), 0, GPU_PERM_RWA, 65536);
    const n = 2000;
    const addr = Float64Array.from({ length: n }, (_, i) => (i % 16) * PAGE_SIZE);
    const k = g.compute.launch(s, [{ addr, size: new Uint16Array(n).fill(100), flags: new Uint8Array(n).fill(ACCESS_READ) }]);
    await clock.settle(k.fence.promise);
    expect(k.stats.peerBytes).toBe(200000);
    expect(platform.peerLink(0, 1)?.reverse.bytes).toBe(200000); // data flows gpu1 → gpu0
    expect(k.fence.time).toBe(1850 + 20000);
    await clock.run();
    expect(notes).toBe(2);
    s.unmap(0, 0x10000);
    await expectQuiescent(platform, clock);
  });
});

describe("compute and DMA contention", () => {
  it("a kernel's system-memory reads and a host→VRAM copy share the H2D bandwidth", async () => {
    const { ctx, platform, clock } = makePlatform({
      gpus: [
        { vramMiB: 4, warpQuantum: 1 << 20, hostLink: { h2dGBps: 10, d2hGBps: 10, latencyNs: 1000 }, accessCounters: { enabled: false } },
      ],
    });
    const g = platform.gpu(0);
    const { CopyBatch } = await import("../copy-engine");
    const { DMA_TO_DEVICE } = await import("../iommu");
    const iova = g.iommu.dmaMapPage(ctx.ram.basePfn, DMA_TO_DEVICE, 256);
    const copy = g.copy.submit(new CopyBatch().push(APERTURE_SYS, iova, APERTURE_VID, 0, 1_000_000));
    const s = g.createVaSpace();
    s.map(0, 256 * PAGE_SIZE, APERTURE_SYS, iova, GPU_PERM_READ);
    const n = 10_000;
    const addr = Float64Array.from({ length: n }, (_, i) => (i % 256) * PAGE_SIZE);
    const k = g.compute.launch(s, [{ addr, size: new Uint16Array(n).fill(100), flags: new Uint8Array(n).fill(ACCESS_READ) }]);
    await clock.settle(Promise.all([copy.promise, k.fence.promise]));
    expect(copy.time).toBe(1000 + 200_000);
    expect(k.fence.time).toBe(1000 + 200_000);
    expect(platform.hostLink(0).forward.bytes).toBe(2_000_000);
    expect(g.accessCounters.accessesCounted).toBe(0);
    s.unmap(0, 256 * PAGE_SIZE);
    g.iommu.dmaUnmapPage(iova, 256);
    await expectQuiescent(platform, clock);
  });
});
