import { describe, expect, it } from "vitest";
import { useLeakGuard } from "../../../test/leak-guard";
import { GFP, HPAGE_PMD_NR, MADV_HUGEPAGE, type Machine, PG } from "../../index";
import { MiB, mapping, PRIV, pattern, RW, SHARED } from "../../mm/__tests__/helpers";
import { FOLL } from "../../pinpage/pinpage";
import { MIGRATE_REASON } from "../migrate";

const boot = useLeakGuard();

function newFolio(m: Machine) {
  return (_src: number, order: number) => m.alloc.allocPages(order, order > 0 ? GFP.COMP : 0);
}
function putFolio(m: Machine) {
  return (d: number) => {
    m.mm.refs.putPage(d);
  };
}

describe("migrate_pages (system → system)", () => {
  it("moves an anonymous page's bytes and mapping, frees the source", async () => {
    const m = boot({ ramMiB: [32] });
    const t = m.mm.spawn();
    const va = t.mm.mmap(0, 4 * 4096, RW, PRIV);
    const data = pattern(4 * 4096, 3);
    await m.mm.write(t, va, data);
    const src = mapping(t, va + 4096)?.pfn as number;
    const head = m.mm.migration.isolateFolio(src);
    expect(head).toBe(src);
    expect(m.pages.flags[src]! & PG.isolated).toBeTruthy();
    const r = m.mm.migration.migratePages([head], newFolio(m), putFolio(m), MIGRATE_REASON.SYSCALL);
    expect(r).toMatchObject({ nrSucceeded: 1, nrFailed: 0, err: 0 });
    const dst = mapping(t, va + 4096)?.pfn as number;
    expect(dst).not.toBe(src);
    expect(m.alloc.isFree(src)).toBe(true);
    expect(m.pages.refcount[dst]).toBe(1);
    expect(m.pages.mapcount[dst]).toBe(1);
    expect(m.pages.flags[dst]! & (PG.lru | PG.anon)).toBe(PG.lru | PG.anon);
    expect(m.vmstat.c.pgmigrate_success).toBe(1);
    expect(m.vmstat.c.nr_anon_pages).toBe(4);
    expect(await m.mm.read(t, va, 4 * 4096)).toEqual(data);
  });

  it("moves a page mapped by parent and child after fork (both mappings follow)", async () => {
    const m = boot({ ramMiB: [32] });
    const t = m.mm.spawn();
    const va = t.mm.mmap(0, 4096, RW, PRIV);
    await m.mm.write(t, va, pattern(4096, 9));
    const c = m.mm.fork(t);
    const src = mapping(t, va)?.pfn as number;
    expect(m.pages.mapcount[src]).toBe(2);
    const r = m.mm.migration.migratePages([m.mm.migration.isolateFolio(src)], newFolio(m), putFolio(m), MIGRATE_REASON.SYSCALL);
    expect(r.nrSucceeded).toBe(1);
    const dst = mapping(t, va)?.pfn as number;
    expect(mapping(c, va)?.pfn).toBe(dst);
    expect(m.pages.mapcount[dst]).toBe(2);
    expect(m.pages.refcount[dst]).toBe(2);
    expect(await m.mm.read(c, va, 4096)).toEqual(pattern(4096, 9));
    await m.mm.write(c, va, new Uint8Array([7]));
    expect((await m.mm.read(t, va, 1))[0]).toBe(pattern(4096, 9)[0]);
  });

  it("refuses a FOLL_PIN-pinned page: retried, then counted as failed; migrates once unpinned", async () => {
    const m = boot({ ramMiB: [32] });
    const t = m.mm.spawn();
    const va = t.mm.mmap(0, 4096, RW, PRIV);
    await m.mm.write(t, va, pattern(4096, 1));
    const pins = new Float64Array(1);
    expect(await m.mm.pinpage.pinUserPages(t.mm, va, 1, FOLL.WRITE, pins)).toBe(1);
    const src = pins[0] as number;
    expect(m.pages.refcount[src]).toBe(1 + 1024);
    const r = m.mm.migration.migratePages([m.mm.migration.isolateFolio(src)], newFolio(m), putFolio(m), MIGRATE_REASON.SYSCALL);
    expect(r).toMatchObject({ nrSucceeded: 0, nrFailed: 1, failedPfns: [src] });
    expect(m.vmstat.c.pgmigrate_fail).toBe(1);
    expect(mapping(t, va)?.pfn).toBe(src);
    expect(m.pages.flags[src]! & (PG.isolated | PG.lru)).toBe(PG.lru);
    m.mm.pinpage.unpinUserPages(pins, 1);
    expect(m.pages.refcount[src]).toBe(1);
    const r2 = m.mm.migration.migratePages([m.mm.migration.isolateFolio(src)], newFolio(m), putFolio(m), MIGRATE_REASON.SYSCALL);
    expect(r2.nrSucceeded).toBe(1);
    expect(await m.mm.read(t, va, 4096)).toEqual(pattern(4096, 1));
  });

  it("moves a PMD-mapped THP whole when an order-9 destination exists, else splits it", async () => {
    const m = boot({ ramMiB: [64] });
    const t = m.mm.spawn();
    const va = t.mm.mmap(0, 4 * MiB, RW, PRIV);
    t.mm.madvise(va, 4 * MiB, MADV_HUGEPAGE);
    const data = pattern(4 * MiB, 5);
    await m.mm.write(t, va, data);
    const a = mapping(t, va)!;
    const b = mapping(t, va + 2 * MiB)!;
    expect(a.huge && b.huge).toBe(true);
    const r = m.mm.migration.migratePages([m.mm.migration.isolateFolio(a.pfn)], newFolio(m), putFolio(m), MIGRATE_REASON.SYSCALL);
    expect(r).toMatchObject({ nrSucceeded: HPAGE_PMD_NR, nrThpSplit: 0 });
    expect(mapping(t, va)?.huge).toBe(true);
    expect(mapping(t, va)?.pfn).not.toBe(a.pfn);
    expect(m.vmstat.c.thp_migration_success).toBe(1);
    expect(m.vmstat.c.nr_anon_transparent_hugepages).toBe(2);
    // No large destination: split and migrate 512 base pages.
    const smallOnly = (_s: number, order: number) => (order > 0 ? -1 : m.alloc.allocPages(0));
    const r2 = m.mm.migration.migratePages([m.mm.migration.isolateFolio(b.pfn)], smallOnly, putFolio(m), MIGRATE_REASON.SYSCALL);
    expect(r2).toMatchObject({ nrSucceeded: HPAGE_PMD_NR, nrFailed: 0, nrThpSplit: 1 });
    expect(m.vmstat.c.thp_migration_split).toBe(1);
    expect(mapping(t, va + 2 * MiB)?.huge).toBe(false);
    expect(mapping(t, va + 2 * MiB)?.pfn).not.toBe(b.pfn);
    expect(m.vmstat.c.nr_anon_transparent_hugepages).toBe(1);
    expect(Buffer.compare(await m.mm.read(t, va, 4 * MiB), data)).toBe(0);
  });

  it("moves a shmem page: the page cache and every mapping follow", async () => {
    const m = boot({ ramMiB: [32] });
    const t = m.mm.spawn();
    const va = t.mm.mmap(0, 4096, RW, SHARED);
    await m.mm.write(t, va, pattern(4096, 2));
    const c = m.mm.fork(t);
    await m.mm.read(c, va, 1);
    const src = mapping(t, va)?.pfn as number;
    expect(m.pages.refcount[src]).toBe(3);
    const r = m.mm.migration.migratePages([m.mm.migration.isolateFolio(src)], newFolio(m), putFolio(m), MIGRATE_REASON.SYSCALL);
    expect(r.nrSucceeded).toBe(1);
    const dst = mapping(c, va)?.pfn as number;
    expect(dst).not.toBe(src);
    expect(m.pages.refcount[dst]).toBe(3);
    expect(m.alloc.isFree(src)).toBe(true);
    await m.mm.write(c, va, new Uint8Array([42]));
    expect((await m.mm.read(t, va, 1))[0]).toBe(42);
  });

  it("stops with -ENOMEM when no destination can be had and puts everything back", async () => {
    const m = boot({ ramMiB: [32] });
    const t = m.mm.spawn();
    const va = t.mm.mmap(0, 2 * 4096, RW, PRIV);
    await m.mm.write(t, va, pattern(2 * 4096, 4));
    const list = [m.mm.migration.isolateFolio(mapping(t, va)!.pfn), m.mm.migration.isolateFolio(mapping(t, va + 4096)!.pfn)];
    const r = m.mm.migration.migratePages(list, () => -1, putFolio(m), MIGRATE_REASON.SYSCALL);
    expect(r).toMatchObject({ nrSucceeded: 0, nrFailed: 2, err: -12 });
    expect(await m.mm.read(t, va, 2 * 4096)).toEqual(pattern(2 * 4096, 4));
  });
});
