import { PAGE_SIZE } from "@hmmkit/core/phys";
import { BugError, HmmError } from "@hmmkit/core/sim";
import { describe, expect, it } from "vitest";
import { HOST_LINK_PRESETS, PEER_LINK_PRESETS } from "../links";
import { Platform, type PlatformConfig } from "../platform";
import { expectQuiescent, makeCtx, makePlatform } from "./helpers";

function einvalArg(f: () => unknown): string | undefined {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(HmmError);
    expect((e as HmmError).code).toBe("EINVAL");
    return (e as HmmError).arg;
  }
  throw new Error("expected EINVAL");
}

describe("Platform", () => {
  it("applies documented defaults and adds VRAM as a device region the CPU cannot access", async () => {
    const { ctx, platform, clock } = makePlatform({ gpus: [{ vramMiB: 4 }, { vramMiB: 8 }] });
    expect(platform.gpuCount).toBe(2);
    const [g0, g1] = platform.gpus;
    if (g0 === undefined || g1 === undefined) throw new Error("gpus");
    expect(g0.name).toBe("gpu0");
    expect(g0.vram.npages).toBe(1024);
    expect(g1.vram.npages).toBe(2048);
    expect(g0.vram.region.kind).toBe("device");
    expect(g0.vram.region.cpuAccessible).toBe(false);
    expect(g1.vram.basePfn).toBeGreaterThanOrEqual(g0.vram.basePfn + g0.vram.npages);
    expect(() => ctx.contents.cpuRead(g0.vram.basePfn, 0, new Uint8Array(8))).toThrow(BugError);
    expect(g0.config.copy).toEqual({ engines: 2, channelsPerEngine: 2, channelConcurrency: 1, localCopyLatencyNs: 1000 });
    expect(g0.config.faultBuffer.batchSize).toBe(256);
    expect(g0.config.faultBuffer.replayPolicy).toBe("batch-flush");
    expect(g0.config.faultBuffer.replayUpdatePutRatio).toBe(50);
    expect(g0.config.faultBuffer.maxBatchesPerService).toBe(20);
    expect(g0.config.accessCounters.granularity).toBe(2 * 1024 * 1024);
    expect(g0.config.accessCounters.threshold).toBe(256);
    expect(g0.hostLink.values).toEqual(HOST_LINK_PRESETS.pcie4);
    expect(g0.vram.pfnToAddr(g0.vram.basePfn + 3)).toBe(3 * PAGE_SIZE);
    expect(g0.vram.addrToPfn(3 * PAGE_SIZE + 5)).toBe(g0.vram.basePfn + 3);
    await expectQuiescent(platform, clock);
  });

  it("has presets whose latency reproduces UVMSmart's 4 KiB transfer time", () => {
    expect(HOST_LINK_PRESETS.pcie3).toEqual({ forwardGBps: 12.2, reverseGBps: 12.9, latencyNs: 1423 });
    expect(HOST_LINK_PRESETS.pcie3.latencyNs + 4096 / 12.2).toBeCloseTo(1758.9, 0);
    expect(HOST_LINK_PRESETS.pcie4.latencyNs + 4096 / 25.1).toBeCloseTo(1758.947 / 2, 0);
    expect(HOST_LINK_PRESETS.pcie5.latencyNs + 4096 / 35).toBeCloseTo(1758.947 / 4, 0);
    expect(PEER_LINK_PRESETS.nvlink4.forwardGBps).toBe(376);
    expect(PEER_LINK_PRESETS.nvlink3.latencyNs).toBe(1850);
  });

  it("builds peer links with presets and overrides", () => {
    const { platform } = makePlatform({
      gpus: [{ vramMiB: 2 }, { vramMiB: 2 }, { vramMiB: 2, hostLink: { preset: "pcie3", latencyNs: 500 } }],
      peerLinks: [
        { gpus: [1, 0], preset: "nvlink3" },
        { gpus: [1, 2], bandwidthGBps: 40 },
      ],
    });
    expect(platform.peerLink(0, 1)?.values.forwardGBps).toBe(300);
    expect(platform.peerLink(1, 0)?.name).toBe("gpu0-gpu1");
    expect(platform.peerLink(2, 1)?.values).toEqual({
      forwardGBps: 40,
      reverseGBps: 40,
      latencyNs: PEER_LINK_PRESETS["pcie-p2p"].latencyNs,
    });
    expect(platform.peerLink(0, 2)).toBeUndefined();
    expect(platform.hostLink(2).values).toEqual({ forwardGBps: 12.2, reverseGBps: 12.9, latencyNs: 500 });
    expect(platform.hostLink(2).preset).toBe("pcie3+custom");
    platform.dispose();
  });

  const bad: [string, PlatformConfig | unknown, string][] = [
    ["no gpus", { gpus: [] }, "platform.gpus"],
    ["missing vram", { gpus: [{ vramMiB: 2 }, {}] }, "platform.gpus[1].vramMiB"],
    ["odd vram", { gpus: [{ vramMiB: 2 }, { vramMiB: 3 }] }, "platform.gpus[1].vramMiB"],
    ["fractional vram", { gpus: [{ vramMiB: 2.5 }] }, "platform.gpus[0].vramMiB"],
    ["unknown field", { gpus: [{ vramMiB: 2, vramMB: 4 }] }, "platform.gpus[0].vramMB"],
    ["copy engines", { gpus: [{ vramMiB: 2, copyEngines: 0 }] }, "platform.gpus[0].copyEngines"],
    ["batch > entries", { gpus: [{ vramMiB: 2, faultBuffer: { entries: 64, batchSize: 65 } }] }, "platform.gpus[0].faultBuffer.batchSize"],
    ["policy", { gpus: [{ vramMiB: 2, faultBuffer: { replayPolicy: "never" } }] }, "platform.gpus[0].faultBuffer.replayPolicy"],
    ["granularity", { gpus: [{ vramMiB: 2, accessCounters: { granularity: 4096 } }] }, "platform.gpus[0].accessCounters.granularity"],
    ["threshold", { gpus: [{ vramMiB: 2, accessCounters: { threshold: 65536 } }] }, "platform.gpus[0].accessCounters.threshold"],
    ["host preset", { gpus: [{ vramMiB: 2, hostLink: { preset: "pcie7" } }] }, "platform.gpus[0].hostLink.preset"],
    ["host bw", { gpus: [{ vramMiB: 2, hostLink: { h2dGBps: -1 } }] }, "platform.gpus[0].hostLink.h2dGBps"],
    ["peer self", { gpus: [{ vramMiB: 2 }, { vramMiB: 2 }], peerLinks: [{ gpus: [1, 1] }] }, "platform.peerLinks[0].gpus"],
    ["peer range", { gpus: [{ vramMiB: 2 }, { vramMiB: 2 }], peerLinks: [{ gpus: [0, 2] }] }, "platform.peerLinks[0].gpus[1]"],
    [
      "peer twice",
      { gpus: [{ vramMiB: 2 }, { vramMiB: 2 }], peerLinks: [{ gpus: [0, 1] }, { gpus: [1, 0] }] },
      "platform.peerLinks[1].gpus",
    ],
    [
      "peer preset",
      { gpus: [{ vramMiB: 2 }, { vramMiB: 2 }], peerLinks: [{ gpus: [0, 1], preset: "nvlink9" }] },
      "platform.peerLinks[0].preset",
    ],
    [
      "dup names",
      {
        gpus: [
          { vramMiB: 2, name: "a" },
          { vramMiB: 2, name: "a" },
        ],
      },
      "platform.gpus[1].name",
    ],
  ];
  it.each(bad)("rejects %s with EINVAL naming the field, creating nothing", (_n, cfg, arg) => {
    const ctx = makeCtx(4);
    const before = ctx.pages.regions.length;
    expect(einvalArg(() => Platform.create(ctx, cfg as PlatformConfig))).toBe(arg);
    expect(ctx.pages.regions.length).toBe(before);
    expect(ctx.pages.maxPfn).toBe(1024);
  });
});
