import { describe, expect, it } from "vitest";
import {
  entryPayload,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  Machine,
  MEMORY_DEVICE_PRIVATE,
  MIGRATE_PFN,
  MIGRATE_VMA_SELECT,
  type MigrateVma,
  migratePfn,
  migratePfnToPfn,
  PROT_READ,
  PROT_WRITE,
  SWP,
  swpType,
  type VmFault,
} from "../../index";

/** A device with its own pgmap; `owner` may be shared with a peer (a drm_pagemap-style owner group). */
function device(m: Machine, owner: object, name: string) {
  const free: number[] = [];
  let frees = 0;
  const pg = m.memremap.memremapPages({
    type: MEMORY_DEVICE_PRIVATE,
    owner,
    name,
    range: { npages: 512 },
    ops: {
      folioFree(head: number, order: number) {
        frees++;
        for (let i = 0; i < 2 ** order; i++) free.push(head + i);
      },
      migrateToRam(vmf: VmFault) {
        const a = args(vmf.mm, vmf.address, 1, owner, MIGRATE_VMA_SELECT.DEVICE_PRIVATE, vmf.page);
        m.migrate.migrateVmaSetup(a);
        fill(m, a, () => {
          const p = m.alloc.allocPages(0);
          m.mm.refs.trylockPage(p);
          return p;
        });
        m.migrate.migrateVmaPages(a);
        m.migrate.migrateVmaFinalize(a);
        return 0;
      },
    },
  });
  for (let p = pg.endPfn - 1; p >= pg.startPfn; p--) free.push(p);
  const dev = {
    pg,
    owner,
    free,
    get frees() {
      return frees;
    },
    alloc(): number {
      const p = free.pop() as number;
      m.memremap.zoneDevicePageInit(p);
      return p;
    },
    owns(pfn: number) {
      return pfn >= pg.startPfn && pfn < pg.endPfn;
    },
    /** Migrate [va, va + n pages) here, selecting system pages and device pages of our owner. */
    migrateHere(mm: Parameters<typeof args>[0], va: number, n: number, flags: number) {
      const a = args(mm, va, n, owner, flags);
      m.migrate.migrateVmaSetup(a);
      const collected = a.cpages;
      fill(m, a, () => dev.alloc());
      m.migrate.migrateVmaPages(a);
      m.migrate.migrateVmaFinalize(a);
      return { collected, a };
    },
  };
  return dev;
}

function args(mm: MigrateVma["mm"], va: number, n: number, owner: unknown, flags: number, faultPage = -1): MigrateVma {
  const vma = mm.findVma(va);
  if (vma === undefined) throw new Error("no vma");
  return {
    mm,
    vma,
    start: va,
    end: va + n * 4096,
    src: new Float64Array(n),
    dst: new Float64Array(n),
    pgmapOwner: owner,
    flags,
    faultPage,
    cpages: 0,
    npages: 0,
  };
}

/** Allocate a destination for every migrating entry and copy: device to device directly when the source is a peer's page. */
function fill(m: Machine, a: MigrateVma, alloc: () => number) {
  for (let i = 0; i < a.npages; i++) {
    const s = a.src[i] as number;
    if (!((s % 64) & MIGRATE_PFN.MIGRATE)) continue;
    const d = alloc();
    const sp = migratePfnToPfn(s);
    if (sp >= 0) m.contents.copyPages(d, sp, 1);
    else m.contents.clearPages(d, 1);
    a.dst[i] = migratePfn(d);
  }
}

describe("device-to-device migration and owner groups (seed 004, drm_pagemap)", () => {
  async function setup(shared: boolean) {
    const m = Machine.create({ ramMiB: [32] });
    const group = { group: "xgmi" };
    const a = device(m, shared ? group : { dev: "a" }, "devA");
    const b = device(m, shared ? group : { dev: "b" }, "devB");
    const t = m.mm.spawn();
    const n = 8;
    const va = t.mm.mmap(0, n * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
    const data = new Uint8Array(n * 4096).map((_, i) => (i * 13) & 0xff);
    await m.mm.write(t, va, data);
    const r = a.migrateHere(t.mm, va, n, MIGRATE_VMA_SELECT.SYSTEM);
    expect(r.collected).toBe(n);
    expect(t.mm.rssDevice).toBe(n);
    return { m, a, b, t, va, n, data };
  }

  it("distinct owners: device B collects none of A's pages; the data moves through system memory", async () => {
    const { m, a, b, t, va, n, data } = await setup(false);
    const direct = b.migrateHere(t.mm, va, n, MIGRATE_VMA_SELECT.SYSTEM | MIGRATE_VMA_SELECT.DEVICE_PRIVATE);
    expect(direct.collected).toBe(0);
    for (let i = 0; i < n; i++) expect(a.owns(entryPayload(t.mm.pt.getPte(va + i * 4096)))).toBe(true);
    // Through system memory: A's pages come back to RAM (A's own migration, owner A), then go to B.
    const back = args(t.mm, va, n, a.owner, MIGRATE_VMA_SELECT.DEVICE_PRIVATE);
    m.migrate.migrateVmaSetup(back);
    expect(back.cpages).toBe(n);
    fill(m, back, () => {
      const p = m.alloc.allocPages(0);
      m.mm.refs.trylockPage(p);
      return p;
    });
    m.migrate.migrateVmaPages(back);
    m.migrate.migrateVmaFinalize(back);
    expect(a.frees).toBe(n);
    expect(b.migrateHere(t.mm, va, n, MIGRATE_VMA_SELECT.SYSTEM).collected).toBe(n);
    for (let i = 0; i < n; i++) expect(b.owns(entryPayload(t.mm.pt.getPte(va + i * 4096)))).toBe(true);
    expect(await m.mm.read(t, va, n * 4096)).toEqual(data);
    m.dispose();
  });

  it("shared owner group: B's migration collects A's pages and moves them device to device", async () => {
    const { m, a, b, t, va, n, data } = await setup(true);
    const sys0 = m.vmstat.c.nr_anon_pages;
    const r = b.migrateHere(t.mm, va, n, MIGRATE_VMA_SELECT.SYSTEM | MIGRATE_VMA_SELECT.DEVICE_PRIVATE);
    expect(r.collected).toBe(n);
    for (let i = 0; i < n; i++) {
      expect(((r.a.src[i] as number) % 64) & MIGRATE_PFN.MIGRATE).toBe(MIGRATE_PFN.MIGRATE);
      const e = t.mm.pt.getPte(va + i * 4096);
      expect(swpType(e)).toBe(SWP.DEVICE_PRIVATE);
      expect(b.owns(entryPayload(e))).toBe(true);
    }
    expect(a.frees).toBe(n); // A's pages went straight back to A's free list
    expect(m.vmstat.c.nr_anon_pages).toBe(sys0); // no system page was used on the way
    expect(await m.mm.read(t, va, n * 4096)).toEqual(data);
    expect(b.frees).toBe(n);
    m.dispose();
  });
});
