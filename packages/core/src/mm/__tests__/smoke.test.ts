import { describe, expect, it } from "vitest";
import { MADV_HUGEPAGE, MAP_ANONYMOUS, MAP_PRIVATE, Machine, PROT_READ, PROT_WRITE } from "../../index";

describe("smoke", () => {
  it("write, read, fork, COW, exit frees everything", async () => {
    const m = Machine.create({ ramMiB: [64] });
    const free0 = m.alloc.nrFreePages;
    const t = m.mm.spawn();
    const va = t.mm.mmap(0, 4 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
    const data = new Uint8Array(3 * 4096);
    for (let i = 0; i < data.length; i++) data[i] = i & 0xff;
    await m.mm.write(t, va + 100, data);
    expect(await m.mm.read(t, va + 100, data.length)).toEqual(data);
    const c = m.mm.fork(t);
    await m.mm.write(c, va + 100, new Uint8Array([9, 9]));
    expect(Array.from(await m.mm.read(t, va + 100, 2))).toEqual([0, 1]);
    expect(Array.from(await m.mm.read(c, va + 100, 2))).toEqual([9, 9]);
    m.mm.exit(c);
    m.mm.exit(t);
    expect(m.alloc.nrFreePages).toBe(free0);
    m.dispose();
  });
  it("THP fault", async () => {
    const m = Machine.create({ ramMiB: [64] });
    const t = m.mm.spawn();
    const va = t.mm.mmap(0, 4 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
    t.mm.madvise(va, 4 << 20, MADV_HUGEPAGE);
    await m.mm.write(t, va + 5000, new Uint8Array([7]));
    expect(m.vmstat.c.thp_fault_alloc).toBe(1);
    const c = m.mm.fork(t);
    await m.mm.write(c, va + 5000, new Uint8Array([8]));
    expect((await m.mm.read(t, va + 5000, 1))[0]).toBe(7);
    expect((await m.mm.read(c, va + 5000, 1))[0]).toBe(8);
    const free0 = m.alloc.nrFreePages;
    m.mm.exit(c);
    m.mm.exit(t);
    expect(m.alloc.nrFreePages).toBeGreaterThan(free0);
    m.dispose();
  });
});
