import { describe, expect, it } from "vitest";
import { useLeakGuard } from "../../../test/leak-guard";
import { PG } from "../../index";
import { MIGRATE_REASON } from "../../migrate/migrate";
import { mapping, PRIV, pattern, RW, thrown } from "../../mm/__tests__/helpers";
import { FOLL } from "../pinpage";
import { ringSubsystem } from "./ring";

const boot = useLeakGuard();

describe("pinpage subsystem", () => {
  it("registers with map-backed defaults and marks pages pinned-movable", () => {
    const m = boot({ ramMiB: [32] });
    const r = ringSubsystem(m, "ring", 3);
    for (const pfn of r.slots) {
      expect(m.pages.flags[pfn]! & PG.movableOps).toBeTruthy();
      expect(m.pages.owner[pfn]).toBe(r.sys.id);
    }
    expect(r.sys.pages.size).toBe(3);
    r.check();
    r.release();
  });

  it("nested claims: a second subsystem gets EBUSY naming the owner; the same one does not nest", () => {
    const m = boot({ ramMiB: [32] });
    const a = ringSubsystem(m, "zswap-pool", 1);
    const b = m.mm.pinpage.registerPinpage("balloon", { migrate: () => 0 });
    const pfn = a.slots[0] as number;
    const e = thrown(() => m.mm.pinpage.setPinpage(b, pfn));
    expect(e.code).toBe("EBUSY");
    expect(e.message).toContain("zswap-pool");
    expect(thrown(() => m.mm.pinpage.setPinpage(a.sys, pfn)).code).toBe("EBUSY");
    expect(m.pages.owner[pfn]).toBe(a.sys.id);
    expect(b.pages.size).toBe(0);
    // Only the owner may clear it.
    expect(thrown(() => m.mm.pinpage.clearPinpage(b, pfn)).code).toBe("EINVAL");
    m.mm.pinpage.unregisterPinpage(b);
    a.release();
  });

  it("refuses user pages: mapped ones (EINVAL) and DMA-pinned ones (EBUSY)", async () => {
    const m = boot({ ramMiB: [32] });
    const t = m.mm.spawn();
    const va = t.mm.mmap(0, 4096, RW, PRIV);
    await m.mm.write(t, va, new Uint8Array([1]));
    const sys = m.mm.pinpage.registerPinpage("drv", { migrate: () => 0 });
    const pfn = mapping(t, va)!.pfn;
    expect(thrown(() => m.mm.pinpage.setPinpage(sys, pfn)).code).toBe("EINVAL");
    const pins = new Float64Array(1);
    await m.mm.pinpage.pinUserPages(t.mm, va, 1, FOLL.WRITE, pins);
    const e = thrown(() => m.mm.pinpage.setPinpage(sys, pfn));
    expect(e.code).toBe("EBUSY");
    expect(e.message).toContain("FOLL_PIN");
    m.mm.pinpage.unpinUserPages(pins, 1);
    m.mm.pinpage.unregisterPinpage(sys);
  });

  it("setPinpageRange is batched and all-or-nothing", () => {
    const m = boot({ ramMiB: [32] });
    const sys = m.mm.pinpage.registerPinpage("ring", { migrate: () => 0 });
    const base = m.alloc.allocPages(2);
    for (let i = 0; i < 4; i++) m.pages.refcount[base + i] = 1;
    const other = m.mm.pinpage.registerPinpage("other", { migrate: () => 0 });
    m.mm.pinpage.setPinpage(other, base + 2);
    expect(thrown(() => m.mm.pinpage.setPinpageRange(sys, base, 4)).code).toBe("EBUSY");
    expect(sys.pages.size).toBe(0);
    expect(m.pages.owner[base]).toBe(0);
    m.mm.pinpage.clearPinpage(other, base + 2);
    expect(m.mm.pinpage.setPinpageRange(sys, base, 4, ["a", "b", "c", "d"])).toBe(0);
    expect(sys.pages.get(base + 3)?.private).toBe("d");
    expect(m.mm.pinpage.clearPinpageRange(sys, base, 4)).toBe(0);
    expect(sys.pages.size).toBe(0);
    for (let i = 0; i < 4; i++) m.mm.refs.putPage(base + i);
    m.mm.pinpage.unregisterPinpage(sys);
    m.mm.pinpage.unregisterPinpage(other);
  });

  it("migratePinpage moves the page through its owner and the registration follows", () => {
    const m = boot({ ramMiB: [32] });
    const r = ringSubsystem(m, "ring", 2);
    const old = r.slots.slice();
    const list = old.map((p) => m.mm.migration.isolateFolio(p));
    expect(list).toEqual(old);
    const res = m.mm.migration.migratePages(
      list,
      () => m.alloc.allocPages(0),
      (d) => m.mm.refs.putPage(d),
      MIGRATE_REASON.COMPACTION,
    );
    expect(res).toMatchObject({ nrSucceeded: 2, nrFailed: 0 });
    expect(r.state.migrations).toBe(2);
    for (const p of old) if (!r.slots.includes(p)) expect(m.alloc.isFree(p)).toBe(true);
    expect(r.slots.some((p) => old.includes(p) && p === old[r.slots.indexOf(p)])).toBe(false);
    for (const p of r.slots) expect(m.pages.refcount[p]).toBe(1);
    r.check();
    r.release();
  });

  it("a subsystem's failing migrate leaves page, registration and data intact", () => {
    const m = boot({ ramMiB: [32] });
    const r = ringSubsystem(m, "ring", 1);
    const pfn = r.slots[0] as number;
    const free0 = m.alloc.nrFreePages;
    r.state.fail = -16; // permanent
    let res = m.mm.migration.migratePages(
      [m.mm.migration.isolateFolio(pfn)],
      () => m.alloc.allocPages(0),
      (d) => m.mm.refs.putPage(d),
      MIGRATE_REASON.COMPACTION,
    );
    expect(res).toMatchObject({ nrSucceeded: 0, nrFailed: 1, failedPfns: [pfn] });
    r.state.fail = -11; // temporary: retried NR_MAX_MIGRATE_PAGES_RETRY times, then failed
    res = m.mm.migration.migratePages(
      [m.mm.migration.isolateFolio(pfn)],
      () => m.alloc.allocPages(0),
      (d) => m.mm.refs.putPage(d),
      MIGRATE_REASON.COMPACTION,
    );
    expect(res.nrFailed).toBe(1);
    expect(m.vmstat.c.pgmigrate_fail).toBe(2);
    expect(r.slots[0]).toBe(pfn);
    expect(m.pages.refcount[pfn]).toBe(1);
    expect(m.pages.flags[pfn]! & (PG.isolated | PG.locked)).toBe(0);
    expect(m.alloc.nrFreePages).toBe(free0);
    r.check();
    r.release();
  });

  it("a page released by its owner while isolated counts as migrated", () => {
    const m = boot({ ramMiB: [32] });
    const r = ringSubsystem(m, "ring", 1);
    const pfn = r.slots[0] as number;
    const h = m.mm.migration.isolateFolio(pfn);
    r.release();
    expect(m.pages.refcount[pfn]).toBe(1);
    const res = m.mm.migration.migratePages(
      [h],
      () => m.alloc.allocPages(0),
      (d) => m.mm.refs.putPage(d),
      MIGRATE_REASON.COMPACTION,
    );
    expect(res.nrSucceeded).toBe(1);
    expect(m.alloc.isFree(pfn)).toBe(true);
  });
});

describe("user pins (FOLL_PIN, FOLL_LONGTERM)", () => {
  it("pins small pages with GUP_PIN_COUNTING_BIAS and THPs with a pin count", async () => {
    const m = boot({ ramMiB: [64], thp: "always" });
    const t = m.mm.spawn();
    const va = t.mm.mmap(0, 4 << 20, RW, PRIV);
    const pins = new Float64Array(3);
    expect(await m.mm.pinpage.pinUserPages(t.mm, va + 4096, 2, FOLL.WRITE, pins)).toBe(2);
    const head = m.pages.compoundHead(pins[0] as number);
    expect(m.pages.folioNrPages(head)).toBe(512);
    expect(m.pages.pincount[head]).toBe(2);
    expect(m.pages.refcount[head]).toBe(3);
    expect(m.mm.migration.folioMaybeDmaPinned(head)).toBe(true);
    m.mm.pinpage.unpinUserPages(pins, 2);
    expect(m.pages.pincount[head]).toBe(0);
    expect(m.vmstat.c.nr_foll_pin_acquired).toBe(2);
    expect(m.vmstat.c.nr_foll_pin_released).toBe(2);
    // Read pins of an untouched private page pin the zero page, which is never really pinned.
    const va2 = t.mm.mmap(0, 4096, RW, PRIV);
    expect(await m.mm.pinpage.pinUserPages(t.mm, va2, 1, 0, pins)).toBe(1);
    expect(pins[0]).toBe(m.mm.zeroPfn);
    expect(m.pages.refcount[m.mm.zeroPfn]).toBe(1);
    m.mm.pinpage.unpinUserPages(pins, 1);
    expect(await m.mm.pinpage.pinUserPages(t.mm, 0x10000, 1, 0, pins)).toBe(-14);
  });

  it("FOLL_LONGTERM migrates a page out of the CMA area first, then pins it", async () => {
    const m = boot({ ramMiB: [32], cmaMiB: 8 });
    // The buddy hands out the top of memory first: fill it so the next page lands in the area.
    const filler = m.mm.spawn();
    const n = m.alloc.zones[0]!.npages - 2048 - 1;
    const fva = filler.mm.mmap(0, n * 4096, RW, PRIV);
    await m.mm.touch(filler, fva, n * 4096, true);
    const t = m.mm.spawn();
    const va = t.mm.mmap(0, 4096, RW, PRIV);
    await m.mm.write(t, va, pattern(4096, 6));
    const before = mapping(t, va)!.pfn;
    expect(m.mm.cma.isCmaPfn(before)).toBe(true);
    filler.mm.munmap(fva, 64 * 4096);
    const pins = new Float64Array(1);
    expect(await m.mm.pinpage.pinUserPages(t.mm, va, 1, FOLL.WRITE | FOLL.LONGTERM, pins)).toBe(1);
    const after = pins[0] as number;
    expect(m.mm.cma.isCmaPfn(after)).toBe(false);
    expect(mapping(t, va)!.pfn).toBe(after);
    expect(m.pages.refcount[after]).toBe(1 + 1024);
    expect(await m.mm.read(t, va, 4096)).toEqual(pattern(4096, 6));
    expect(m.vmstat.c.pgmigrate_success).toBe(1);
    m.mm.pinpage.unpinUserPages(pins, 1);
  });
});
