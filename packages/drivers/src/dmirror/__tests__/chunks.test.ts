import { Machine } from "@hmmkit/core";
import { describe, expect, it } from "vitest";
import { DmirrorModule } from "../../index";

describe("DmirrorDevice.chunkOf", () => {
  it("finds the chunk of each device page whatever the lookup order, and none once the chunks are removed", () => {
    const m = Machine.create({ ramMiB: [16], seed: 1 });
    const mod = DmirrorModule.load(m, { coherent: false, chunkPages: 512 });
    const d = mod.devices[0];
    if (d === undefined) throw new Error("no device 0");
    expect(d.allocateChunk(false, false)).toBe(0); // a second chunk
    const [c0, c1] = d.chunks;
    if (c0 === undefined || c1 === undefined) throw new Error("expected two chunks");
    // Alternate between the chunks, and between the first and last page of each, so a stale
    // last-found chunk would be caught.
    for (const [pfn, want] of [
      [c0.pagemap.startPfn, c0],
      [c1.pagemap.endPfn - 1, c1],
      [c0.pagemap.endPfn - 1, c0],
      [c1.pagemap.startPfn, c1],
      [c0.pagemap.startPfn + 7, c0],
    ] as const) {
      expect(d.chunkOf(pfn)).toBe(want);
    }
    // Another device's page and a RAM page belong to no chunk of this one.
    const other = mod.devices[1]?.chunks[0];
    if (other === undefined) throw new Error("no device 1");
    expect(d.chunkOf(other.pagemap.startPfn)).toBeUndefined();
    expect(d.chunkOf(0)).toBeUndefined();
    expect(d.chunkOf(c1.pagemap.startPfn)).toBe(c1);
    d.removeChunks();
    expect(d.chunkOf(c1.pagemap.startPfn)).toBeUndefined();
    expect(d.chunkOf(c0.pagemap.startPfn)).toBeUndefined();
    mod.unload();
    m.dispose();
  });
});
