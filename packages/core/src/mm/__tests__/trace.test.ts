import { describe, expect, it } from "vitest";
import { useLeakGuard } from "../../../test/leak-guard";
import { PRIV, RW } from "./helpers";

const boot = useLeakGuard();

describe("tracepoints", () => {
  it("page_fault_user carries mm, address and access for every fault", async () => {
    const m = boot({ ramMiB: [32], thp: "never" });
    const t = m.mm.spawn();
    const a = t.mm.mmap(0, 2 * 4096, RW, PRIV);
    const seen: unknown[] = [];
    m.bus.on("page_fault_user", (e) => seen.push(e));
    await m.mm.read(t, a + 5, 1);
    await m.mm.write(t, a + 4096 + 7, new Uint8Array([1]));
    await m.mm.write(t, a + 4096 + 8, new Uint8Array([1])); // present and writable: no fault
    expect(seen).toEqual([
      { mm: t.mm.id, address: a + 5, write: false },
      { mm: t.mm.id, address: a + 4096 + 7, write: true },
    ]);
    expect(m.vmstat.c.pgfault).toBe(2);
  });

  it("mm_page_alloc / mm_page_free fire for buddy allocations and frees", async () => {
    const m = boot({ ramMiB: [32], thp: "never" });
    const allocs: Array<{ pfn: number; order: number }> = [];
    const frees: Array<{ pfn: number; order: number }> = [];
    m.bus.on("mm_page_alloc", (e) => allocs.push({ ...e }));
    m.bus.on("mm_page_free", (e) => frees.push({ ...e }));
    const t = m.mm.spawn();
    const a = t.mm.mmap(0, 4096, RW, PRIV);
    await m.mm.write(t, a, new Uint8Array([1]));
    const pfn = Math.floor(t.mm.pt.getPte(a) / 256);
    t.mm.munmap(a, 4096);
    expect(allocs).toEqual([{ pfn, order: 0 }]);
    expect(frees).toEqual([{ pfn, order: 0 }]);
  });
});
