/**
 * Test helpers: a bare machine context (clock, rng, page state, contents) with system RAM, and a
 * leak guard for platforms.
 */
import { Contents, PageState, type PhysContext } from "@hmmkit/core/phys";
import { Rng, SimClock } from "@hmmkit/core/sim";
import { expect } from "vitest";
import type { DeviceEvents } from "../events";
import { Platform, type PlatformConfig } from "../platform";

/** A machine context with `ramMiB` of system RAM on node 0. */
export function makeCtx(ramMiB = 64, seed = 1): PhysContext & { ram: { basePfn: number; npages: number } } {
  const pages = new PageState();
  const ram = pages.addRegion("ram", (ramMiB * 1024 * 1024) / 4096, 0, "node0");
  return { clock: new SimClock(), rng: new Rng(seed), pages, contents: new Contents(pages), ram };
}

/** A platform on a fresh context. */
export function makePlatform(config: PlatformConfig, ramMiB = 64, seed = 1) {
  const ctx = makeCtx(ramMiB, seed);
  const platform = Platform.create(ctx, config);
  return { ctx, platform, clock: ctx.clock };
}

/** Fill a page with bytes from the rng; returns a copy of them. */
export function fillRandom(ctx: PhysContext, pfn: number, rng = ctx.rng): Uint8Array {
  const b = new Uint8Array(4096);
  for (let i = 0; i < 4096; i += 4) {
    const v = rng.nextU32();
    b[i] = v & 255;
    b[i + 1] = (v >>> 8) & 255;
    b[i + 2] = (v >>> 16) & 255;
    b[i + 3] = v >>> 24;
  }
  ctx.contents.write(pfn, 0, b);
  return b;
}

/** Read a page's bytes (device-side, unchecked path). */
export function readPage(ctx: PhysContext, pfn: number): Uint8Array {
  const b = new Uint8Array(4096);
  ctx.contents.read(pfn, 0, b);
  return b;
}

/** Record every device event with its virtual time. */
export function recordEvents(platform: Platform, clock: SimClock): string[] {
  const log: string[] = [];
  const names: (keyof DeviceEvents)[] = [
    "io_page_fault",
    "dma_fence_emit",
    "dma_fence_signaled",
    "didRaiseGpuFault",
    "didOverflowFaultBuffer",
    "didFetchFaultBatch",
    "didReplayGpuFaults",
    "didFlushFaultBuffer",
    "didRaiseFatalFault",
    "didNotifyAccessCounters",
    "didDetectEccError",
    "didChangeLinkState",
    "didLaunchKernel",
    "didCompleteKernel",
  ];
  for (const n of names) {
    platform.bus.on(n, ((p: unknown) => log.push(`${clock.now} ${n} ${JSON.stringify(p)}`)) as never);
  }
  return log;
}

/** The leak guard: nothing in flight, no event pending. */
export async function expectQuiescent(platform: Platform, clock: SimClock): Promise<void> {
  await clock.run();
  expect(platform.quiescent()).toEqual([]);
  expect(clock.pending).toBe(0);
  for (const g of platform.gpus) {
    expect(g.copy.idle).toBe(true);
    for (let e = 0; e < g.config.copy.engines; e++) {
      for (let c = 0; c < g.config.copy.channelsPerEngine; c++) expect(g.copy.queueDepth(e, c)).toBe(0);
    }
  }
  platform.dispose();
}
