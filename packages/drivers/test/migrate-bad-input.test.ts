/**
 * Bad input to the core's migration and mirroring API, and to dmirror's command interface.
 *
 * The core API (migrate_vma_*, migrate_device_*, hmm_range_fault) throws HmmError EINVAL naming
 * the offending argument and changes nothing: no page table entry, refcount, mapcount, flag,
 * counter, notifier sequence, mirror entry or caller array moves. dmirror's commands return the
 * kernel's errno values instead (they model an ioctl), also without changing anything.
 */
import {
  HMM_PFN,
  HmmError,
  type HmmRange,
  hmmRangeFault,
  MAP_ANONYMOUS,
  MAP_FIXED,
  MAP_PRIVATE,
  type Machine,
  MIGRATE_PFN,
  MIGRATE_VMA_SELECT,
  type MigrateVma,
  type Mm,
  migratePfn,
  mmuIntervalReadBegin,
  PAGE_SIZE,
  PROT_READ,
  PROT_WRITE,
} from "@hmmkit/core";
import { describe, expect, it } from "vitest";
import { Ctx, ints } from "../src/dmirror/__tests__/fixture";
import {
  type DmirrorFile,
  HMM_DMIRROR_MIGRATE_TO_DEV,
  HMM_DMIRROR_READ,
  HMM_DMIRROR_SNAPSHOT,
  HMM_DMIRROR_WRITE,
  type HmmDmirrorCmd,
} from "../src/index";

const NP = 8;
const RW = PROT_READ | PROT_WRITE;

/** Everything a bad call could disturb, as a comparable value. */
function state(m: Machine, mm: Mm, start: number, end: number, mirrors: DmirrorFile[], arrays: Float64Array[]): unknown {
  const ptes: number[] = [];
  const pfns = new Set<number>();
  for (let va = start; va < end; va += PAGE_SIZE) {
    const pmd = mm.pt.getPmd(va);
    const pte = mm.pt.getPte(va);
    ptes.push(pmd, pte);
    if (pte !== 0) pfns.add(Math.floor(pte / 256));
  }
  const pages = [...pfns].map((p) => [p, m.pages.refcount[p], m.pages.mapcount[p], m.pages.flags[p]]);
  const pt = mirrors.map((f) => {
    const e: number[] = [];
    for (let va = start; va < end; va += PAGE_SIZE) e.push(f.pt.load(va / PAGE_SIZE), f.pt.tag(va / PAGE_SIZE));
    return e;
  });
  return {
    ptes,
    pages,
    pt,
    arrays: arrays.map((a) => Array.from(a)),
    vmstat: { ...m.vmstat.c },
    seq: mm.notifiers.invalidateSeq,
    subs: mm.notifiers.subs.map((s) => s.invalidateSeq),
    free: m.alloc.nrFreePages,
    rss: [mm.rssAnon, mm.rssDevice],
  };
}

function expectEinval(fn: () => unknown, arg: string | RegExp): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(HmmError);
  const he = err as HmmError;
  expect(he.code).toBe("EINVAL");
  if (typeof arg === "string") expect(he.arg).toBe(arg);
  else expect(he.arg).toMatch(arg);
  expect(he.message).toContain(typeof arg === "string" ? arg : "");
}

async function setup() {
  const ctx = new Ctx({ dmirror: { coherent: false, chunkPages: 2048 } });
  const fd = ctx.open(0);
  const va = ctx.mmap(NP * PAGE_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS);
  await ctx.write(
    va,
    ints((NP * PAGE_SIZE) / 4, (i) => i),
  );
  // Mirror the range so a stray invalidation would show in the device page table.
  const cmd: HmmDmirrorCmd = { addr: va, ptr: new Uint8Array(NP * PAGE_SIZE), npages: NP, cpages: 0, faults: 0 };
  expect(await fd.ioctl(HMM_DMIRROR_READ, cmd)).toBe(0);
  const vma = ctx.t.mm.findVma(va);
  if (vma === undefined) throw new Error("no vma");
  const args = (over: Partial<MigrateVma> = {}): MigrateVma => ({
    mm: ctx.t.mm,
    vma,
    start: va,
    end: va + NP * PAGE_SIZE,
    src: new Float64Array(NP).fill(7),
    dst: new Float64Array(NP).fill(9),
    pgmapOwner: fd.mdevice,
    flags: MIGRATE_VMA_SELECT.SYSTEM,
    cpages: 123,
    npages: 456,
    ...over,
  });
  return { ctx, fd, va, vma, args };
}

describe("migrate_vma_setup bad input", () => {
  it("unaligned, empty, outside the VMA, bad arrays, bad flags, bad faultPage: EINVAL naming the argument, nothing changed", async () => {
    const { ctx, fd, va, args } = await setup();
    const m = ctx.m;
    const mm = ctx.t.mm;
    const end = va + NP * PAGE_SIZE;
    // A second VMA right after, so a range can straddle two VMAs.
    const other = mm.mmap(end, 4 * PAGE_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED);
    expect(other).toBe(end);
    const stranger = ctx.spawn();
    stranger.mm.mmap(va, NP * PAGE_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED);
    const cases: [string, Partial<MigrateVma>, string][] = [
      ["unaligned start", { start: va + 1 }, "args.start"],
      ["unaligned end", { end: end - 1 }, "args.end"],
      ["empty range", { end: va }, "args.end"],
      ["reversed range", { start: va + PAGE_SIZE, end: va }, "args.end"],
      ["start below the VMA", { start: va - PAGE_SIZE }, "args.start"],
      ["range not inside one VMA", { end: end + 2 * PAGE_SIZE }, "args.end"],
      ["src too short", { src: new Float64Array(NP - 1) }, "args.src"],
      ["dst too short", { dst: new Float64Array(NP - 1) }, "args.dst"],
      ["src not a Float64Array", { src: new Array(NP).fill(0) as unknown as Float64Array }, "args.src"],
      ["unknown flags", { flags: 1 << 7 }, "args.flags"],
      ["faultPage not a device page", { faultPage: Math.floor(mm.pt.getPte(va) / 256) }, "args.faultPage"],
      ["VMA of another mm", { vma: stranger.mm.vmas[0] }, "args.vma"],
    ];
    for (const [what, over, arg] of cases) {
      const a = args(over);
      const before = state(m, mm, va, end + 4 * PAGE_SIZE, [fd], [a.src, a.dst]);
      expectEinval(() => m.migrate.migrateVmaSetup(a), arg);
      expect(state(m, mm, va, end + 4 * PAGE_SIZE, [fd], [a.src, a.dst]), what).toEqual(before);
      expect([a.cpages, a.npages], what).toEqual([123, 456]);
    }
    // A faultPage that is a device-private page but not locked.
    const dpage = fd.mdevice.devmemAllocPage(fd, false);
    m.mm.refs.unlockPage(dpage);
    const a = args({ faultPage: dpage });
    const before = state(m, mm, va, end, [fd], [a.src, a.dst]);
    expectEinval(() => m.migrate.migrateVmaSetup(a), "args.faultPage");
    expect(state(m, mm, va, end, [fd], [a.src, a.dst])).toEqual(before);
    m.mm.refs.putPage(dpage); // back to the free list through folioFree
    mm.munmap(end, 4 * PAGE_SIZE);
    ctx.teardown();
  });
});

describe("migrate_vma_pages bad destinations", () => {
  it("a dst entry that is not a locked device page: EINVAL args.dst[i], nothing changed, migration still completes", async () => {
    const { ctx, fd, va, args } = await setup();
    const m = ctx.m;
    const mm = ctx.t.mm;
    const end = va + NP * PAGE_SIZE;
    const a = args();
    m.migrate.migrateVmaSetup(a);
    expect(a.cpages).toBe(NP);
    // Allocate good, locked destinations for every entry.
    const good: number[] = [];
    for (let i = 0; i < NP; i++) good.push(fd.mdevice.devmemAllocPage(fd, false));
    const fill = () => {
      for (let i = 0; i < NP; i++) {
        const s = Math.floor((a.src[i] as number) / 64);
        m.contents.copyPages(good[i] as number, s, 1);
        a.dst[i] = migratePfn(good[i] as number);
      }
    };
    const unlocked = fd.mdevice.devmemAllocPage(fd, false);
    m.mm.refs.unlockPage(unlocked);
    // A device page that was allocated and freed again: refcount 0, back on the free list.
    const freePage = fd.mdevice.devmemAllocPage(fd, false);
    m.mm.refs.unlockPage(freePage);
    m.mm.refs.putPage(freePage);
    expect(m.pages.refcount[freePage]).toBe(0);
    const bad: [string, (dst: Float64Array) => void, string | RegExp][] = [
      ["unlocked device page", (d) => (d[3] = migratePfn(unlocked)), "args.dst[3]"],
      ["free device page (refcount 0)", (d) => (d[5] = migratePfn(freePage)), "args.dst[5]"],
      ["not a valid mpfn", (d) => (d[0] = MIGRATE_PFN.MIGRATE), "args.dst[0]"],
      ["pfn outside every region", (d) => (d[1] = migratePfn(m.pages.maxPfn + 1000)), "args.dst[1]"],
      ["COMPOUND on a base page", (d) => (d[2] = migratePfn(good[2] as number) + MIGRATE_PFN.COMPOUND), "args.dst[2]"],
      ["dst equal to src", (d) => (d[4] = migratePfn(Math.floor((a.src[4] as number) / 64))), "args.dst[4]"],
    ];
    for (const [what, spoil, arg] of bad) {
      fill();
      spoil(a.dst);
      const before = state(m, mm, va, end, [fd], [a.src, a.dst]);
      expectEinval(() => m.migrate.migrateVmaPages(a), arg);
      expect(state(m, mm, va, end, [fd], [a.src, a.dst]), what).toEqual(before);
    }
    // A dst array that is too short.
    fill();
    const short = { ...a, dst: new Float64Array(NP - 1) };
    const before = state(m, mm, va, end, [fd], [a.src]);
    expectEinval(() => m.migrate.migrateVmaPages(short), "args.dst");
    expect(state(m, mm, va, end, [fd], [a.src])).toEqual(before);
    // The migration still completes with good destinations.
    fill();
    m.migrate.migrateVmaPages(a);
    for (let i = 0; i < NP; i++) expect(((a.src[i] as number) % 64) & MIGRATE_PFN.MIGRATE).toBe(MIGRATE_PFN.MIGRATE);
    m.migrate.migrateVmaFinalize(a);
    expect(mm.rssDevice).toBe(NP);
    const back = await ctx.read(va, NP * PAGE_SIZE);
    expect(Array.from(new Int32Array(back.buffer)).every((v, i) => v === i)).toBe(true);
    m.mm.refs.putPage(unlocked);
    mm.munmap(va, NP * PAGE_SIZE);
    ctx.teardown();
  });
});

describe("migrate_device_* bad input", () => {
  it("short arrays, empty counts, ranges outside a pgmap, non-device pfns, bad dst: EINVAL, nothing changed", async () => {
    const { ctx, fd, va } = await setup();
    const m = ctx.m;
    const mm = ctx.t.mm;
    const end = va + NP * PAGE_SIZE;
    const chunk = fd.mdevice.chunks[0];
    if (chunk === undefined) throw new Error("no chunk");
    const pg = chunk.pagemap;
    const src = new Float64Array(16).fill(3);
    const snap = () => state(m, mm, va, end, [fd], [src]);
    let before = snap();
    expectEinval(() => m.migrate.migrateDeviceRange(src, pg.startPfn, 17), "src");
    expectEinval(() => m.migrate.migrateDeviceRange(src, pg.startPfn, 0), "src");
    expectEinval(() => m.migrate.migrateDeviceRange(src, pg.endPfn - 8, 16), "startPfn");
    expectEinval(() => m.migrate.migrateDeviceRange(src, 0, 16), "startPfn");
    const pfns = new Float64Array([pg.startPfn, Math.floor(mm.pt.getPte(va) / 256)]);
    expectEinval(() => m.migrate.migrateDevicePfns(pfns, 2), "src[1]");
    expect(snap()).toEqual(before);
    expect(Array.from(pfns)).toEqual([pg.startPfn, Math.floor(mm.pt.getPte(va) / 256)]);
    // migrate_device_pages with a bad destination, after a real migrate_device_range.
    const cmd: HmmDmirrorCmd = { addr: va, ptr: new Uint8Array(NP * PAGE_SIZE), npages: NP, cpages: 0, faults: 0 };
    expect(await fd.ioctl(HMM_DMIRROR_MIGRATE_TO_DEV, cmd)).toBe(0);
    const dsrc = new Float64Array(pg.npages);
    const ddst = new Float64Array(pg.npages);
    m.migrate.migrateDeviceRange(dsrc, pg.startPfn, pg.npages);
    const used: number[] = [];
    for (let i = 0; i < pg.npages; i++) if (dsrc[i] !== 0) used.push(i);
    expect(used.length).toBe(NP);
    const sysPages: number[] = [];
    for (const i of used) {
      const p = m.alloc.allocPages(0);
      m.mm.refs.trylockPage(p);
      m.contents.copyPages(p, pg.startPfn + i, 1);
      ddst[i] = migratePfn(p);
      sysPages.push(p);
    }
    const i0 = used[0] as number;
    const keep = ddst[i0] as number;
    const unlockedSys = m.alloc.allocPages(0);
    ddst[i0] = migratePfn(unlockedSys);
    before = state(m, mm, va, end, [fd], [dsrc, ddst]);
    expectEinval(() => m.migrate.migrateDevicePages(dsrc, ddst, pg.npages), `dst[${i0}]`);
    expect(state(m, mm, va, end, [fd], [dsrc, ddst])).toEqual(before);
    expectEinval(() => m.migrate.migrateDevicePages(dsrc, new Float64Array(3), pg.npages), "dst");
    ddst[i0] = keep;
    m.mm.refs.putPage(unlockedSys);
    m.migrate.migrateDevicePages(dsrc, ddst, pg.npages);
    m.migrate.migrateDeviceFinalize(dsrc, ddst, pg.npages);
    expect(mm.rssDevice).toBe(0);
    const back = await ctx.read(va, NP * PAGE_SIZE);
    expect(Array.from(new Int32Array(back.buffer)).every((v, i) => v === i)).toBe(true);
    mm.munmap(va, NP * PAGE_SIZE);
    ctx.teardown();
  });
});

describe("hmm_range_fault bad input", () => {
  it("unaligned or empty range, short output array: EINVAL naming the field, nothing faulted", async () => {
    const ctx = new Ctx({ dmirror: { coherent: false, chunkPages: 2048 } });
    const fd = ctx.open(0);
    const mm = ctx.t.mm;
    const va = ctx.mmap(NP * PAGE_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS);
    const mk = (over: Partial<HmmRange>): HmmRange => ({
      notifier: fd.notifier,
      notifierSeq: mmuIntervalReadBegin(fd.notifier),
      start: va,
      end: va + NP * PAGE_SIZE,
      hmmPfns: new Float64Array(NP),
      defaultFlags: HMM_PFN.REQ_FAULT | HMM_PFN.REQ_WRITE,
      pfnFlagsMask: 0,
      devPrivateOwner: fd.mdevice,
      ...over,
    });
    const cases: [Partial<HmmRange>, string][] = [
      [{ start: va + 8 }, "range.start"],
      [{ end: va + NP * PAGE_SIZE - 1 }, "range.end"],
      [{ end: va }, "range.end"],
      [{ hmmPfns: new Float64Array(NP - 1) }, "range.hmmPfns"],
    ];
    for (const [over, arg] of cases) {
      const r = mk(over);
      const before = state(ctx.m, mm, va, va + NP * PAGE_SIZE, [fd], [r.hmmPfns]);
      await expect(hmmRangeFault(ctx.m.mm, r)).rejects.toMatchObject({ code: "EINVAL", arg });
      expect(state(ctx.m, mm, va, va + NP * PAGE_SIZE, [fd], [r.hmmPfns])).toEqual(before);
    }
    mm.munmap(va, NP * PAGE_SIZE);
    ctx.teardown();
  });
});

describe("dmirror commands: bad input gives the kernel's errno, nothing changed", () => {
  it("unaligned addr, empty or wrapping ranges, unknown request, short user buffer, range across a hole", async () => {
    const { ctx, fd, va } = await setup();
    const m = ctx.m;
    const mm = ctx.t.mm;
    const end = va + NP * PAGE_SIZE;
    const cmd = (over: Partial<HmmDmirrorCmd>): HmmDmirrorCmd => ({
      addr: va,
      ptr: new Uint8Array(NP * PAGE_SIZE),
      npages: NP,
      cpages: 11,
      faults: 12,
      ...over,
    });
    const cases: [string, number, Partial<HmmDmirrorCmd>, number][] = [
      ["unaligned addr", HMM_DMIRROR_READ, { addr: va + 4 }, -22],
      ["zero pages", HMM_DMIRROR_READ, { npages: 0 }, -22],
      ["wrapping range", HMM_DMIRROR_READ, { npages: 2 ** 60 }, -22],
      ["fractional npages", HMM_DMIRROR_WRITE, { npages: 1.5 }, -22],
      ["unknown request", 0x1234, {}, -22],
      ["short user buffer (WRITE)", HMM_DMIRROR_WRITE, { ptr: new Uint8Array(PAGE_SIZE) }, -14],
      ["no user buffer (SNAPSHOT)", HMM_DMIRROR_SNAPSHOT, { ptr: undefined }, -14],
    ];
    for (const [what, req, over, errno] of cases) {
      const c = cmd(over);
      const before = state(m, mm, va, end, [fd], []);
      expect(await fd.ioctl(req, c), what).toBe(errno);
      expect([c.cpages, c.faults], what).toEqual([11, 12]);
      expect(state(m, mm, va, end, [fd], []), what).toEqual(before);
    }
    // A migration whose first window has no VMA: -EINVAL before anything moves.
    mm.munmap(va, PAGE_SIZE);
    const before = state(m, mm, va, end, [fd], []);
    expect(await fd.ioctl(HMM_DMIRROR_MIGRATE_TO_DEV, cmd({}))).toBe(-22);
    expect(state(m, mm, va, end, [fd], [])).toEqual(before);
    await expect(fd.ioctl(HMM_DMIRROR_READ, null as unknown as HmmDmirrorCmd)).rejects.toThrow(HmmError);
    mm.munmap(va, NP * PAGE_SIZE);
    ctx.teardown();
  });
});
