import { describe, expect, it } from "vitest";
import {
  MADV_HUGEPAGE,
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
  type VmFault,
} from "../../index";

function tinyDriver(m: Machine) {
  const owner = { name: "tiny" };
  const free: number[] = [];
  let frees = 0;
  const pg = m.memremap.memremapPages({
    type: MEMORY_DEVICE_PRIVATE,
    owner,
    range: { npages: 2048 },
    ops: {
      folioFree(head: number, order: number) {
        frees++;
        for (let i = 0; i < 2 ** order; i++) free.push(head + i);
      },
      migrateToRam(vmf: VmFault) {
        const args: MigrateVma = {
          mm: vmf.mm,
          vma: vmf.vma,
          start: vmf.address,
          end: vmf.address + 4096,
          src: new Float64Array(1),
          dst: new Float64Array(1),
          pgmapOwner: owner,
          flags: MIGRATE_VMA_SELECT.DEVICE_PRIVATE,
          faultPage: vmf.page,
          cpages: 0,
          npages: 0,
        };
        m.migrate.migrateVmaSetup(args);
        for (let i = 0; i < args.npages; i++) {
          const s = migratePfnToPfn(args.src[i] as number);
          if (s < 0 || !(((args.src[i] as number) % 64) & MIGRATE_PFN.MIGRATE)) continue;
          const d = m.alloc.allocPages(0);
          m.mm.refs.trylockPage(d);
          m.contents.copyPages(d, s, 1);
          args.dst[i] = migratePfn(d);
        }
        m.migrate.migrateVmaPages(args);
        m.migrate.migrateVmaFinalize(args);
        return 0;
      },
    },
  });
  for (let p = pg.endPfn - 1; p >= pg.startPfn; p--) free.push(p);
  return {
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
  };
}

/** A THP-backed 2 MiB anonymous mapping with `bytes` written at page `page`, and the migrate_vma arguments that select it. */
async function thpToMigrate(m: Machine, owner: object, page: number, bytes: number[]) {
  const t = m.mm.spawn();
  const va = t.mm.mmap(0, 2 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
  t.mm.madvise(va, 2 << 20, MADV_HUGEPAGE);
  await m.mm.write(t, va + 4096 * page, new Uint8Array(bytes));
  const args: MigrateVma = {
    mm: t.mm,
    vma: t.mm.findVma(va)!,
    start: va,
    end: va + (2 << 20),
    src: new Float64Array(512),
    dst: new Float64Array(512),
    pgmapOwner: owner,
    flags: MIGRATE_VMA_SELECT.SYSTEM | MIGRATE_VMA_SELECT.COMPOUND,
    cpages: 0,
    npages: 0,
  };
  return { t, va, args };
}

describe("migrate_vma smoke", () => {
  it("system -> device -> CPU fault back, data intact, device pages freed", async () => {
    const m = Machine.create({ ramMiB: [64] });
    const free0 = m.alloc.nrFreePages;
    const drv = tinyDriver(m);
    const t = m.mm.spawn();
    const n = 16;
    const va = t.mm.mmap(0, n * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
    const data = new Uint8Array(n * 4096);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7) & 0xff;
    await m.mm.write(t, va, data.subarray(0, 12 * 4096)); // pages 12..15 stay holes
    const vma = t.mm.findVma(va)!;
    const args: MigrateVma = {
      mm: t.mm,
      vma,
      start: va,
      end: va + n * 4096,
      src: new Float64Array(n),
      dst: new Float64Array(n),
      pgmapOwner: drv.owner,
      flags: MIGRATE_VMA_SELECT.SYSTEM,
      cpages: 0,
      npages: 0,
    };
    m.migrate.migrateVmaSetup(args);
    expect(args.cpages).toBe(n);
    expect(args.npages).toBe(n);
    for (let i = 0; i < n; i++) {
      const s = migratePfnToPfn(args.src[i] as number);
      const d = drv.alloc();
      if (s >= 0) m.contents.copyPages(d, s, 1);
      else m.contents.clearPages(d, 1);
      args.dst[i] = migratePfn(d);
    }
    m.migrate.migrateVmaPages(args);
    for (let i = 0; i < n; i++) expect(((args.src[i] as number) % 64) & MIGRATE_PFN.MIGRATE).toBe(MIGRATE_PFN.MIGRATE);
    m.migrate.migrateVmaFinalize(args);
    expect(t.mm.rssDevice).toBe(n);
    expect(m.vmstat.c.pgmigrate_success).toBe(12);
    const back = await m.mm.read(t, va, 12 * 4096);
    expect(back).toEqual(data.subarray(0, 12 * 4096));
    expect(drv.frees).toBe(12);
    const holes = await m.mm.read(t, va + 12 * 4096, 4 * 4096);
    expect(holes.every((b) => b === 0)).toBe(true);
    m.mm.exit(t);
    expect(drv.frees).toBe(16);
    expect(m.alloc.nrFreePages).toBe(free0);
    m.dispose();
  });

  it("pinned page is not migrated", async () => {
    const m = Machine.create({ ramMiB: [64] });
    const drv = tinyDriver(m);
    const t = m.mm.spawn();
    const va = t.mm.mmap(0, 2 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
    await m.mm.write(t, va, new Uint8Array(2 * 4096).fill(5));
    const vma = t.mm.findVma(va)!;
    const pfn0 = m.mm.fault.followPte(t.mm, va, false);
    m.mm.refs.getPage(pfn0); // an extra reference, like a GUP pin
    const args: MigrateVma = {
      mm: t.mm,
      vma,
      start: va,
      end: va + 8192,
      src: new Float64Array(2),
      dst: new Float64Array(2),
      pgmapOwner: drv.owner,
      flags: MIGRATE_VMA_SELECT.SYSTEM,
      cpages: 0,
      npages: 0,
    };
    m.migrate.migrateVmaSetup(args);
    expect(args.cpages).toBe(1);
    expect(args.src[0]).toBe(0);
    expect(m.mm.fault.followPte(t.mm, va, true)).toBe(pfn0);
    m.mm.refs.putPage(pfn0);
    m.migrate.migrateVmaPages(args);
    m.migrate.migrateVmaFinalize(args);
    expect(Array.from(await m.mm.read(t, va + 4095, 2))).toEqual([5, 5]);
    m.dispose();
  });

  it("THP migrates as one compound entry", async () => {
    const m = Machine.create({ ramMiB: [64] });
    const drv = tinyDriver(m);
    const { t, va, args } = await thpToMigrate(m, drv.owner, 3, [42]);
    expect(m.vmstat.c.thp_fault_alloc).toBe(1);
    m.migrate.migrateVmaSetup(args);
    expect(args.cpages).toBe(1);
    expect(((args.src[0] as number) % 64) & MIGRATE_PFN.COMPOUND).toBe(MIGRATE_PFN.COMPOUND);
    // device has no THP allocator here: fall back to 512 base pages (split)
    const s = migratePfnToPfn(args.src[0] as number);
    for (let i = 0; i < 512; i++) {
      const d = drv.alloc();
      m.contents.copyPages(d, s + i, 1);
      args.dst[i] = migratePfn(d);
    }
    m.migrate.migrateVmaPages(args);
    m.migrate.migrateVmaFinalize(args);
    expect(m.vmstat.c.thp_migration_split).toBe(1);
    expect(t.mm.rssDevice).toBe(512);
    expect((await m.mm.read(t, va + 4096 * 3, 1))[0]).toBe(42);
    m.mm.exit(t);
    expect(drv.free.length).toBe(2048);
    m.dispose();
  });

  it("a dst entry behind a COMPOUND one migrates nothing and finalize releases it (unlocked: EINVAL)", async () => {
    const m = Machine.create({ ramMiB: [64] });
    const drv = tinyDriver(m);
    const { t, va, args } = await thpToMigrate(m, drv.owner, 7, [7, 8]);
    m.migrate.migrateVmaSetup(args);
    expect(args.src[5]).toBe(0);
    const s = migratePfnToPfn(args.src[0] as number);
    const head = drv.pg.startPfn; // 512-aligned: the pgmap's first folio
    drv.free.splice(drv.free.indexOf(head + 511), 512);
    m.memremap.zoneDeviceFolioInit(head, 9);
    m.contents.copyPages(head, s, 512);
    args.dst[0] = migratePfn(head) + MIGRATE_PFN.COMPOUND;
    // An entry behind the COMPOUND one that is not a locked page is refused, and nothing changes.
    args.dst[5] = migratePfn(drv.pg.startPfn + 600);
    expect(() => m.migrate.migrateVmaPages(args)).toThrow(/args\.dst\[5\]/);
    expect(args.src[0]).toBe(migratePfn(s) + MIGRATE_PFN.MIGRATE + MIGRATE_PFN.WRITE + MIGRATE_PFN.COMPOUND);
    // A locked one migrates nothing; finalize unlocks and puts it, so the driver gets it back.
    const extra = drv.alloc();
    args.dst[5] = migratePfn(extra);
    const frees = drv.frees;
    m.migrate.migrateVmaPages(args);
    m.migrate.migrateVmaFinalize(args);
    expect(drv.frees).toBe(frees + 1);
    expect(m.pages.refcount[extra]).toBe(0);
    expect(m.vmstat.c.thp_migration_success).toBe(1);
    expect(m.vmstat.c.pgmigrate_success).toBe(512);
    expect(t.mm.rssDevice).toBe(512);
    expect(Array.from(await m.mm.read(t, va + 4096 * 7, 2))).toEqual([7, 8]);
    m.mm.exit(t);
    m.dispose();
  });
});
