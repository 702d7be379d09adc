import { describe, expect, it } from "vitest";
import { useLeakGuard } from "../../../test/leak-guard";
import { MIGRATE_VMA_SELECT } from "../../migrate/migrate-device";
import { GFP } from "../../phys/page-alloc";
import { HPAGE_PMD_NR, PG } from "../../phys/page-state";
import { FOLL } from "../../pinpage/pinpage";
import { ERRNO } from "../../sim/errors";
import { makeDeviceExclusive } from "../device-exclusive";
import { MMU_NOTIFY, mmuIntervalNotifierInsert, mmuIntervalNotifierRemove, mmuIntervalSetSeq } from "../mmu-notifier";
import { PMD_SIZE } from "../page-table";
import {
  MADV_DONTNEED,
  MADV_FREE,
  MADV_HUGEPAGE,
  MAP_ANONYMOUS,
  MAP_FIXED,
  MAP_HUGETLB,
  MAP_PRIVATE,
  MAP_SHARED,
  MREMAP_MAYMOVE,
  PROT_READ,
  VM,
} from "../vma";
import { mapping, pattern, RW, rejection, thrown } from "./helpers";

const boot = useLeakGuard();
const HUGE = MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB;
const TWO = PMD_SIZE;

describe("HugeTLB pool", () => {
  it("grows from the buddy allocator, shrinks back, and stops short when memory is fragmented", () => {
    const m = boot({ ramMiB: [32] });
    const h = m.mm.hugetlb;
    const free0 = m.alloc.nrFreePages;
    expect(h.setNrHugepages(3)).toBe(3);
    expect(h.freeHugepages).toBe(3);
    expect(m.alloc.nrFreePages).toBe(free0 - 3 * HPAGE_PMD_NR);
    expect(h.setNrHugepages(1)).toBe(1);
    expect(m.alloc.nrFreePages).toBe(free0 - HPAGE_PMD_NR);
    expect(h.setNrHugepages(0)).toBe(0);
    expect(m.alloc.nrFreePages).toBe(free0);
    // Pin one base page in every 2 MiB block: no order-9 block is left, so the pool cannot grow.
    const held: number[] = [];
    for (;;) {
      const p = m.alloc.allocPages(0, GFP.NORETRY);
      if (p < 0) break;
      held.push(p);
    }
    const keep = held.filter((p) => p % HPAGE_PMD_NR === 7);
    for (const p of held) {
      if (p % HPAGE_PMD_NR === 7) continue;
      m.pages.refcount[p] = 0;
      m.alloc.freePages(p, 0);
    }
    expect(h.setNrHugepages(2)).toBe(0);
    for (const p of keep) {
      m.pages.refcount[p] = 0;
      m.alloc.freePages(p, 0);
    }
    expect(h.setNrHugepages(2)).toBe(2);
    h.setNrHugepages(0);
    expect(thrown(() => h.setNrHugepages(-1))).toMatchObject({ code: "EINVAL", arg: "count" });
  });

  it("the hugepages machine option fills the pool at boot; a bad value is EINVAL", () => {
    const m = boot({ ramMiB: [32], hugepages: 2 });
    expect(m.mm.hugetlb.nrHugepages).toBe(2);
    expect(thrown(() => boot({ hugepages: 1.5 }))).toMatchObject({ code: "EINVAL", arg: "config.hugepages" });
  });
});

describe("MAP_HUGETLB mappings", () => {
  it("mmap reserves, the first write consumes the reservation and maps a zeroed 2 MiB page by PMD", async () => {
    const m = boot({ ramMiB: [32], hugepages: 3 });
    const h = m.mm.hugetlb;
    const t = m.mm.spawn();
    const va = t.mm.mmap(0, TWO + 4096, RW, HUGE);
    expect(va % TWO).toBe(0);
    const vma = t.mm.findVma(va)!;
    expect(vma.end - vma.start).toBe(2 * TWO); // rounded up to whole huge pages
    expect(vma.flags & VM.HUGETLB).toBe(VM.HUGETLB);
    expect([h.freeHugepages, h.resvHugepages]).toEqual([3, 2]);
    // More than the unreserved rest: ENOMEM, nothing mapped.
    const vmas = t.mm.vmas.length;
    expect(thrown(() => t.mm.mmap(0, 2 * TWO, RW, HUGE))).toMatchObject({ code: "ENOMEM", arg: "length" });
    expect(t.mm.vmas.length).toBe(vmas);
    expect(h.resvHugepages).toBe(2);

    const data = pattern(64, 3);
    await m.mm.write(t, va + TWO - 64, data);
    expect([h.freeHugepages, h.resvHugepages]).toEqual([2, 1]);
    const mp = mapping(t, va)!;
    expect(mp).toMatchObject({ huge: true, present: true, write: true });
    expect(m.pages.flags[mp.pfn]! & PG.hugetlb).toBe(PG.hugetlb);
    expect(m.pages.flags[mp.pfn]! & PG.lru).toBe(0); // never on an LRU list
    expect(Array.from(await m.mm.read(t, va + TWO - 64, 64))).toEqual(Array.from(data));
    expect(Array.from(await m.mm.read(t, va, 8))).toEqual([0, 0, 0, 0, 0, 0, 0, 0]);
    expect(t.mm.hugetlbUsage).toBe(HPAGE_PMD_NR);
    expect(t.mm.rssAnon).toBe(0);
    expect(m.vmstat.c.nr_anon_pages).toBe(0);
    expect(m.vmstat.c.nr_anon_transparent_hugepages).toBe(0);

    // A read fault maps the page read-only; the write that follows reuses it (no copy).
    expect((await m.mm.read(t, va + TWO, 1))[0]).toBe(0);
    const ro = mapping(t, va + TWO)!;
    expect(ro.write).toBe(false);
    expect([h.freeHugepages, h.resvHugepages]).toEqual([1, 0]);
    await m.mm.write(t, va + TWO, new Uint8Array([5]));
    expect(mapping(t, va + TWO)).toMatchObject({ pfn: ro.pfn, write: true });
    expect(h.freeHugepages).toBe(1);
    m.mm.exit(t);
    expect([h.freeHugepages, h.resvHugepages]).toEqual([3, 0]);
  });

  it("unmapping gives back the pages and the unused reservations; splits off 2 MiB boundaries are EINVAL", async () => {
    const m = boot({ ramMiB: [32], hugepages: 4 });
    const h = m.mm.hugetlb;
    const t = m.mm.spawn();
    const va = t.mm.mmap(0, 3 * TWO, RW, HUGE);
    await m.mm.write(t, va, new Uint8Array([1]));
    expect([h.freeHugepages, h.resvHugepages]).toEqual([3, 2]);
    for (const [a, len, arg] of [
      [va, 4096, "length"],
      [va + 4096, TWO, "addr"],
    ] as const) {
      expect(thrown(() => t.mm.munmap(a, len))).toMatchObject({ code: "EINVAL", arg });
      expect(thrown(() => t.mm.mprotect(a, len, PROT_READ))).toMatchObject({ code: "EINVAL", arg });
    }
    expect(t.mm.vmas.length).toBe(1);
    expect(mapping(t, va)?.write).toBe(true);
    // Unmap the faulted first huge page and the unfaulted last one.
    t.mm.munmap(va, TWO);
    expect([h.freeHugepages, h.resvHugepages]).toEqual([4, 2]);
    t.mm.munmap(va + 2 * TWO, TWO);
    expect([h.freeHugepages, h.resvHugepages]).toEqual([4, 1]);
    // The middle one still has its reservation: a fault there is served.
    await m.mm.write(t, va + TWO, new Uint8Array([2]));
    expect([h.freeHugepages, h.resvHugepages]).toEqual([3, 0]);
    // MAP_FIXED over part of it is refused off a boundary, allowed on one.
    expect(thrown(() => t.mm.mmap(va + TWO + 4096, 4096, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED))).toMatchObject({ code: "EINVAL" });
    expect(t.mm.mmap(va + TWO, TWO, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)).toBe(va + TWO);
    expect(h.freeHugepages).toBe(4);
    expect(t.mm.findVma(va + TWO)!.flags & VM.HUGETLB).toBe(0);
    m.mm.exit(t);
  });

  it("mprotect read-only: the PMD loses write, a CPU write faults SIGSEGV, the data stays", async () => {
    const m = boot({ ramMiB: [32], hugepages: 1 });
    const t = m.mm.spawn();
    const va = t.mm.mmap(0, TWO, RW, HUGE);
    await m.mm.write(t, va + 10, new Uint8Array([42]));
    t.mm.mprotect(va, TWO, PROT_READ);
    expect(mapping(t, va)).toMatchObject({ huge: true, write: false });
    expect((await rejection(m.mm.write(t, va, new Uint8Array([1])))).code).toBe("EFAULT");
    expect((await m.mm.read(t, va + 10, 1))[0]).toBe(42);
    m.mm.exit(t);
  });

  it("fork shares pages copy-on-write; a child's write copies 2 MiB; with the pool empty it is SIGBUS", async () => {
    const m = boot({ ramMiB: [32], hugepages: 2 });
    const h = m.mm.hugetlb;
    const t = m.mm.spawn();
    const va = t.mm.mmap(0, TWO, RW, HUGE);
    const data = pattern(TWO, 1);
    await m.mm.write(t, va, data);
    const c = m.mm.fork(t);
    const p = mapping(t, va)!.pfn;
    expect(mapping(c, va)).toMatchObject({ pfn: p, write: false });
    expect(mapping(t, va)?.write).toBe(false);
    expect(m.pages.refcount[p]).toBe(2);
    expect(c.mm.hugetlbUsage).toBe(HPAGE_PMD_NR);
    expect(c.mm.findVma(va)?.hugetlbResv).toBeUndefined(); // the child owns no reservation
    await m.mm.write(c, va + 5, new Uint8Array([0xee]));
    const cp = mapping(c, va)!;
    expect(cp.pfn).not.toBe(p);
    expect(cp.write).toBe(true);
    expect(h.freeHugepages).toBe(0);
    expect((await m.mm.read(c, va + 5, 1))[0]).toBe(0xee);
    expect(Array.from(await m.mm.read(c, va + TWO - 16, 16))).toEqual(Array.from(data.subarray(TWO - 16)));
    expect((await m.mm.read(t, va + 5, 1))[0]).toBe(data[5]);
    // The parent is the only mapper again: its write reuses the page.
    m.mm.exit(c);
    expect(h.freeHugepages).toBe(1);
    await m.mm.write(t, va, new Uint8Array([7]));
    expect(mapping(t, va)).toMatchObject({ pfn: p, write: true });
    // Pool exhausted: a second child's COW write has no page to copy into.
    const other = t.mm.mmap(0, TWO, RW, HUGE);
    await m.mm.write(t, other, new Uint8Array([1]));
    const c2 = m.mm.fork(t);
    expect(h.freeHugepages).toBe(0);
    expect((await rejection(m.mm.write(c2, va, new Uint8Array([1])))).code).toBe("EFAULT");
    expect((await m.mm.read(c2, va, 1))[0]).toBe(7);
    m.mm.exit(c2);
    m.mm.exit(t);
  });

  it("the owner's COW with the pool empty takes the page back from the child, whose faults there are then SIGBUS", async () => {
    const m = boot({ ramMiB: [32], hugepages: 1 });
    const h = m.mm.hugetlb;
    const t = m.mm.spawn();
    const va = t.mm.mmap(0, TWO, RW, HUGE);
    await m.mm.write(t, va, new Uint8Array([1]));
    const p = mapping(t, va)!.pfn;
    const c = m.mm.fork(t);
    const seen: number[] = [];
    const sub = mmuIntervalNotifierInsert(c.mm, va, TWO, {
      invalidate(s, range, seq) {
        seen.push(range.event);
        mmuIntervalSetSeq(s, seq);
        return true;
      },
    });
    expect(h.freeHugepages).toBe(0);
    await m.mm.write(t, va + 1, new Uint8Array([2])); // owner: no page to copy into
    expect(mapping(t, va)).toMatchObject({ pfn: p, write: true });
    expect(mapping(c, va)).toBeUndefined();
    expect(seen).toContain(MMU_NOTIFY.CLEAR);
    expect(c.mm.findVma(va)!.hugetlbUnmapped).toBe(true);
    expect(c.mm.hugetlbUsage).toBe(0);
    expect(m.pages.refcount[p]).toBe(1);
    expect((await rejection(m.mm.read(c, va, 1))).code).toBe("EFAULT");
    // A fork of the child starts clean (no HPAGE_RESV_UNMAPPED), but the pool is still empty.
    const g = m.mm.fork(c);
    expect(g.mm.findVma(va)!.hugetlbUnmapped).toBe(false);
    expect(Array.from(await m.mm.read(t, va, 2))).toEqual([1, 2]);
    mmuIntervalNotifierRemove(sub);
    m.mm.exit(g);
    m.mm.exit(c);
    m.mm.exit(t);
    expect(h.freeHugepages).toBe(1);
  });

  it("fork copies a DMA-pinned huge page for the child at once (the parent keeps it writable); no page is ENOMEM", async () => {
    const m = boot({ ramMiB: [32], hugepages: 2 });
    const h = m.mm.hugetlb;
    const t = m.mm.spawn();
    const va = t.mm.mmap(0, TWO, RW, HUGE);
    const data = pattern(TWO, 4);
    await m.mm.write(t, va, data);
    const pfns = new Float64Array(2);
    expect(await m.mm.pinpage.pinUserPages(t.mm, va + 4096, 2, FOLL.WRITE | FOLL.LONGTERM, pfns)).toBe(2);
    const p = mapping(t, va)!.pfn;
    expect(pfns[0]).toBe(p + 1); // pinned in place: pool pages are not movable memory
    const c = m.mm.fork(t);
    const cp = mapping(c, va)!;
    expect(cp.pfn).not.toBe(p);
    expect(h.freeHugepages).toBe(0);
    expect(mapping(t, va)).toMatchObject({ pfn: p, write: true });
    expect(Array.from(await m.mm.read(c, va + TWO - 8, 8))).toEqual(Array.from(data.subarray(TWO - 8)));
    // With the pool empty, a second fork cannot copy the pinned page: the fork fails and nothing leaks.
    expect(thrown(() => m.mm.fork(t))).toMatchObject({ code: "ENOMEM" });
    m.mm.pinpage.unpinUserPages(pfns, 2);
    m.mm.exit(c);
    m.mm.exit(t);
    expect(h.freeHugepages).toBe(2);
  });

  it("a COW copy invalidates mirrors of the 2 MiB range (CLEAR), as hugetlb_wp does", async () => {
    const m = boot({ ramMiB: [32], hugepages: 2 });
    const t = m.mm.spawn();
    const va = t.mm.mmap(0, TWO, RW, HUGE);
    await m.mm.write(t, va, new Uint8Array([1]));
    const seen: Array<[number, number, number]> = [];
    const sub = mmuIntervalNotifierInsert(t.mm, va, TWO, {
      invalidate(s, range, seq) {
        seen.push([range.event, range.start - va, range.end - va]);
        mmuIntervalSetSeq(s, seq);
        return true;
      },
    });
    const c = m.mm.fork(t);
    seen.length = 0;
    await m.mm.write(t, va + 4096, new Uint8Array([2])); // the parent copies: the child still maps the page
    expect(seen).toEqual([[MMU_NOTIFY.CLEAR, 0, TWO]]);
    expect((await m.mm.read(c, va + 4096, 1))[0]).toBe(0);
    mmuIntervalNotifierRemove(sub);
    m.mm.exit(c);
    m.mm.exit(t);
  });

  it("madvise: DONTNEED drops whole huge pages (next read is zero); FREE is EINVAL; HUGEPAGE only sets a flag", async () => {
    const m = boot({ ramMiB: [32], hugepages: 2 });
    const h = m.mm.hugetlb;
    const t = m.mm.spawn();
    const va = t.mm.mmap(0, 2 * TWO, RW, HUGE);
    await m.mm.write(t, va, new Uint8Array([9]));
    await m.mm.write(t, va + TWO, new Uint8Array([9]));
    expect(thrown(() => t.mm.madvise(va, TWO, MADV_FREE))).toMatchObject({ code: "EINVAL", arg: "advice" });
    expect(thrown(() => t.mm.madvise(va + 4096, TWO, MADV_DONTNEED))).toMatchObject({ code: "EINVAL", arg: "addr" });
    // The end is rounded down to a huge page: only the first one goes.
    t.mm.madvise(va, TWO + 4096, MADV_DONTNEED);
    expect(mapping(t, va)).toBeUndefined();
    expect(mapping(t, va + TWO)?.huge).toBe(true);
    expect(h.freeHugepages).toBe(1);
    expect((await m.mm.read(t, va, 1))[0]).toBe(0);
    t.mm.madvise(va, 2 * TWO, MADV_HUGEPAGE);
    expect(t.mm.findVma(va)!.flags & VM.HUGEPAGE).toBe(VM.HUGEPAGE);
    m.mm.exit(t);
  });

  it("bad uses are refused with state untouched: shared, mremap, migrate_vma, make_device_exclusive", async () => {
    const m = boot({ ramMiB: [32], hugepages: 1 });
    const t = m.mm.spawn();
    expect(thrown(() => t.mm.mmap(0, TWO, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_HUGETLB))).toMatchObject({ code: "EINVAL", arg: "flags" });
    expect(thrown(() => t.mm.mmap(0x40000000 + 4096, TWO, RW, HUGE | MAP_FIXED))).toMatchObject({ code: "EINVAL", arg: "addr" });
    const va = t.mm.mmap(0, TWO, RW, HUGE);
    await m.mm.write(t, va, new Uint8Array([3]));
    expect(thrown(() => t.mm.mremap(va, TWO, 2 * TWO, MREMAP_MAYMOVE))).toMatchObject({ code: "EINVAL", arg: "oldAddr" });
    const args = {
      mm: t.mm,
      vma: t.mm.findVma(va)!,
      start: va,
      end: va + TWO,
      src: new Float64Array(512),
      dst: new Float64Array(512),
      pgmapOwner: {},
      flags: MIGRATE_VMA_SELECT.SYSTEM,
      cpages: 0,
      npages: 0,
    };
    expect(thrown(() => m.migrate.migrateVmaSetup(args))).toMatchObject({ code: "EINVAL", arg: "args.vma" });
    expect(await makeDeviceExclusive(t.mm, va, {})).toEqual({ ret: -ERRNO.EOPNOTSUPP, page: -1 });
    expect(mapping(t, va)).toMatchObject({ huge: true, write: true });
    expect((await m.mm.read(t, va, 1))[0]).toBe(3);
    m.mm.exit(t);
  });
});
