import { describe, expect, it } from "vitest";
import {
  isHuge,
  MADV_HUGEPAGE,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  Machine,
  MEMORY_DEVICE_PRIVATE,
  MIGRATE_PFN,
  MIGRATE_VMA_SELECT,
  type MigrateVma,
  MMU_NOTIFY,
  MREMAP_DONTUNMAP,
  MREMAP_FIXED,
  MREMAP_MAYMOVE,
  migratePfn,
  migratePfnToPfn,
  mmuIntervalNotifierInsert,
  mmuIntervalSetSeq,
  PMD_SIZE,
  PROT_READ,
  PROT_WRITE,
} from "../../index";

const RW = PROT_READ | PROT_WRITE;
const ANON = MAP_PRIVATE | MAP_ANONYMOUS;
const pattern = (n: number, salt = 0) => new Uint8Array(n).map((_, i) => (i * 7 + salt) & 0xff);

describe("mremap", () => {
  it("moves entries, not pages: same pfns at the new address, old range unmapped, UNMAP notified", async () => {
    const m = Machine.create({ ramMiB: [32] });
    const t = m.mm.spawn();
    const va = t.mm.mmap(0, 8 * 4096, RW, ANON);
    const data = pattern(8 * 4096);
    await m.mm.write(t, va, data);
    const pfns = Array.from({ length: 8 }, (_, i) => m.mm.fault.followPte(t.mm, va + i * 4096, false));
    const events: number[] = [];
    mmuIntervalNotifierInsert(t.mm, va, 8 * 4096, {
      invalidate(sub, r, seq) {
        mmuIntervalSetSeq(sub, seq);
        events.push(r.event);
        return true;
      },
    });
    const rc0 = Array.from(pfns, (p) => m.pages.refcount[p]);
    const nva = t.mm.mremap(va, 8 * 4096, 8 * 4096, MREMAP_MAYMOVE | MREMAP_FIXED, va + (64 << 20));
    expect(nva).toBe(va + (64 << 20));
    expect(events).toContain(MMU_NOTIFY.UNMAP);
    expect(Array.from({ length: 8 }, (_, i) => m.mm.fault.followPte(t.mm, nva + i * 4096, false))).toEqual(pfns);
    expect(Array.from(pfns, (p) => m.pages.refcount[p])).toEqual(rc0);
    expect(await m.mm.read(t, nva, data.length)).toEqual(data);
    await expect(m.mm.read(t, va, 1)).rejects.toMatchObject({ code: "EFAULT" });
    m.dispose();
  });

  it("grows in place, shrinks, and refuses to grow without MAYMOVE when blocked", async () => {
    const m = Machine.create({ ramMiB: [32] });
    const t = m.mm.spawn();
    const va = t.mm.mmap(0, 4 * 4096, RW, ANON);
    await m.mm.write(t, va, pattern(4 * 4096));
    expect(t.mm.mremap(va, 4 * 4096, 2 * 4096, 0)).toBe(va);
    expect(t.mm.findVma(va)?.end).toBe(va + 2 * 4096);
    expect(t.mm.mremap(va, 2 * 4096, 4 * 4096, 0)).toBe(va); // the freed tail is free again
    expect(Array.from(await m.mm.read(t, va + 2 * 4096, 2))).toEqual([0, 0]); // tail contents were dropped
    const blocker = t.mm.mmap(va + 4 * 4096, 4096, RW, ANON | 0x10);
    expect(blocker).toBe(va + 4 * 4096);
    expect(() => t.mm.mremap(va, 4 * 4096, 8 * 4096, 0)).toThrow(expect.objectContaining({ code: "ENOMEM" }));
    const moved = t.mm.mremap(va, 4 * 4096, 8 * 4096, MREMAP_MAYMOVE);
    expect(moved).not.toBe(va);
    expect(await m.mm.read(t, moved, 2 * 4096)).toEqual(pattern(4 * 4096).subarray(0, 2 * 4096));
    m.dispose();
  });

  it("DONTUNMAP leaves the old range mapped and empty; bad arguments are EINVAL/EFAULT with nothing changed", async () => {
    const m = Machine.create({ ramMiB: [32] });
    const t = m.mm.spawn();
    const va = t.mm.mmap(0, 4 * 4096, RW, ANON);
    await m.mm.write(t, va, pattern(4 * 4096, 3));
    const bad = (f: () => unknown, code: string, arg: string) => expect(f).toThrow(expect.objectContaining({ code, arg }));
    bad(() => t.mm.mremap(va + 1, 4096, 4096, MREMAP_MAYMOVE), "EINVAL", "oldAddr");
    bad(() => t.mm.mremap(va, 4096, 0, MREMAP_MAYMOVE), "EINVAL", "newSize");
    bad(() => t.mm.mremap(va, 4096, 4096, MREMAP_FIXED, va + (8 << 20)), "EINVAL", "flags");
    bad(() => t.mm.mremap(va, 4096, 8192, MREMAP_MAYMOVE | MREMAP_DONTUNMAP), "EINVAL", "newSize");
    bad(() => t.mm.mremap(va, 8 * 4096, 8 * 4096, MREMAP_MAYMOVE), "EFAULT", "oldAddr");
    expect(await m.mm.read(t, va, 4 * 4096)).toEqual(pattern(4 * 4096, 3));
    const nva = t.mm.mremap(va, 4 * 4096, 4 * 4096, MREMAP_MAYMOVE | MREMAP_DONTUNMAP);
    expect(await m.mm.read(t, nva, 4 * 4096)).toEqual(pattern(4 * 4096, 3));
    expect(Array.from(await m.mm.read(t, va, 4))).toEqual([0, 0, 0, 0]); // still mapped, empty
    const free0 = m.alloc.nrFreePages;
    m.mm.exit(t);
    expect(m.alloc.nrFreePages).toBeGreaterThan(free0);
    m.dispose();
  });

  it("moves a THP whole when both addresses are 2 MiB aligned, splits it otherwise", async () => {
    const m = Machine.create({ ramMiB: [64] });
    const t = m.mm.spawn();
    const va = t.mm.mmap(0, 2 << 20, RW, ANON);
    t.mm.madvise(va, 2 << 20, MADV_HUGEPAGE);
    await m.mm.write(t, va + 4096, new Uint8Array([42]));
    expect(isHuge(t.mm.pt.getPmd(va))).toBe(true);
    const a = t.mm.mremap(va, 2 << 20, 2 << 20, MREMAP_MAYMOVE | MREMAP_FIXED, va + 16 * PMD_SIZE);
    expect(isHuge(t.mm.pt.getPmd(a))).toBe(true);
    expect(m.vmstat.c.thp_split_pmd).toBe(0);
    const b = t.mm.mremap(a, 2 << 20, 2 << 20, MREMAP_MAYMOVE | MREMAP_FIXED, va + 40 * PMD_SIZE + 4096);
    expect(m.vmstat.c.thp_split_pmd).toBe(1);
    expect((await m.mm.read(t, b + 4096, 1))[0]).toBe(42);
    m.dispose();
  });

  it("a move during an in-flight migration: finalize restores the entries at the new address", async () => {
    const m = Machine.create({ ramMiB: [32] });
    const owner = {};
    const free: number[] = [];
    const pg = m.memremap.memremapPages({
      type: MEMORY_DEVICE_PRIVATE,
      owner,
      range: { npages: 512 },
      ops: { folioFree: (h) => free.push(h), migrateToRam: () => 0x2 },
    });
    for (let p = pg.endPfn - 1; p >= pg.startPfn; p--) free.push(p);
    const t = m.mm.spawn();
    const va = t.mm.mmap(0, 4 * 4096, RW, ANON);
    const data = pattern(4 * 4096, 9);
    await m.mm.write(t, va, data);
    const args: MigrateVma = {
      mm: t.mm,
      vma: t.mm.findVma(va)!,
      start: va,
      end: va + 4 * 4096,
      src: new Float64Array(4),
      dst: new Float64Array(4),
      pgmapOwner: owner,
      flags: MIGRATE_VMA_SELECT.SYSTEM,
      cpages: 0,
      npages: 0,
    };
    m.migrate.migrateVmaSetup(args);
    expect(args.cpages).toBe(4);
    // The address space changes under the migration (the driver awaits its copy here).
    const nva = t.mm.mremap(va, 4 * 4096, 4 * 4096, MREMAP_MAYMOVE | MREMAP_FIXED, va + (32 << 20));
    for (let i = 0; i < 4; i++) {
      const d = free.pop() as number;
      m.memremap.zoneDevicePageInit(d);
      m.contents.copyPages(d, migratePfnToPfn(args.src[i] as number), 1);
      args.dst[i] = migratePfn(d);
    }
    m.migrate.migrateVmaPages(args);
    for (let i = 0; i < 4; i++) expect(((args.src[i] as number) % 64) & MIGRATE_PFN.MIGRATE).toBe(MIGRATE_PFN.MIGRATE);
    m.migrate.migrateVmaFinalize(args);
    expect(t.mm.rssDevice).toBe(4);
    // The device pages are mapped at the new address (device-private entries there).
    for (let i = 0; i < 4; i++) expect(m.memremap.isDevicePrivate(Math.floor(t.mm.pt.getPte(nva + i * 4096) / 256))).toBe(true);
    m.dispose();
  });
});
