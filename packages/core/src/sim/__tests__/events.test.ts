import { describe, expect, it } from "vitest";
import { TraceBus } from "../events";

describe("TraceBus.wants", () => {
  it("is true exactly while the tracepoint has a listener", () => {
    const bus = new TraceBus();
    expect(bus.wants("mm_page_alloc")).toBe(false);
    const seen: number[] = [];
    const onAlloc = (e: { pfn: number }) => seen.push(e.pfn);
    bus.on("mm_page_alloc", onAlloc);
    expect(bus.wants("mm_page_alloc")).toBe(true);
    expect(bus.wants("mm_page_free")).toBe(false);
    const onFree = () => {};
    bus.once("mm_page_free", onFree);
    expect(bus.wants("mm_page_free")).toBe(true);
    bus.emit("mm_page_free", { pfn: 1, order: 0 });
    expect(bus.wants("mm_page_free")).toBe(false);
    bus.emit("mm_page_alloc", { pfn: 7, order: 0 });
    expect(seen).toEqual([7]);
    bus.off("mm_page_alloc", onAlloc);
    expect(bus.wants("mm_page_alloc")).toBe(false);
    bus.on("mm_page_alloc", onAlloc);
    bus.removeAllListeners();
    expect(bus.wants("mm_page_alloc")).toBe(false);
  });
});
