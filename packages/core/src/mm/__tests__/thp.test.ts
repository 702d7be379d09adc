import { describe, expect, it } from "vitest";
import { useLeakGuard } from "../../../test/leak-guard";
import type { Machine } from "../../machine";
import { HPAGE_PMD_NR, PG } from "../../phys/page-state";
import { MADV_HUGEPAGE, MADV_NOHUGEPAGE, PROT_READ } from "../vma";
import { free, MiB, mapping, PRIV, pattern, pfnAt, RW, rejection } from "./helpers";

const boot = useLeakGuard();

/** Take every free page out of the allocator as scattered order-0 pages (every other pfn kept). */
function fragment(m: Machine): number[] {
  const got: number[] = [];
  for (;;) {
    const p = m.alloc.allocPages(0, 8 /* NORETRY */);
    if (p < 0) break;
    got.push(p);
  }
  const kept: number[] = [];
  for (const p of got) {
    if (p % 2 === 0) {
      m.pages.refcount[p] = 0;
      m.alloc.freePages(p, 0);
    } else kept.push(p);
  }
  return kept;
}
function release(m: Machine, kept: number[]): void {
  for (const p of kept) {
    m.pages.refcount[p] = 0;
    m.alloc.freePages(p, 0);
  }
}

describe("THP faults", () => {
  it("a write in a MADV_HUGEPAGE range maps one order-9 folio with one PMD", async () => {
    const m = boot({ ramMiB: [32], thp: "madvise" });
    const t = m.mm.spawn();
    const a = t.mm.mmap(0, 4 * MiB, RW, PRIV);
    t.mm.madvise(a, 4 * MiB, MADV_HUGEPAGE);
    const f0 = free(m);
    await m.mm.write(t, a + 5000, new Uint8Array([7, 8]));
    expect(m.vmstat.c.thp_fault_alloc).toBe(1);
    expect(m.vmstat.c.thp_fault_fallback).toBe(0);
    expect(m.vmstat.c.nr_anon_transparent_hugepages).toBe(1);
    expect(m.vmstat.c.nr_anon_pages).toBe(512);
    expect(free(m)).toBe(f0 - 512);
    const mp = mapping(t, a);
    expect(mp?.huge).toBe(true);
    expect(mp?.write).toBe(true);
    const head = mp?.pfn as number;
    expect(head % 512).toBe(0);
    expect(pfnAt(t, a + 5000)).toBe(head + 1);
    expect((m.pages.flags[head] as number) & PG.head).toBe(PG.head);
    expect(m.pages.order[head]).toBe(9);
    expect(m.pages.refcount[head]).toBe(1);
    expect(m.mm.rmap.entireMapcount(head)).toBe(1);
    expect(m.mm.rmap.folioMapcount(head)).toBe(1);
    expect(m.pages.mapcount[head]).toBe(0);
    expect(t.mm.rssAnon).toBe(512);
    expect(t.mm.pt.nrPteTables).toBe(0);
    const r = await m.mm.read(t, a, 2 * MiB);
    expect(r[5000]).toBe(7);
    expect(r[5001]).toBe(8);
    let nonzero = 0;
    for (const x of r) if (x !== 0) nonzero++;
    expect(nonzero).toBe(2);
    // The second 2 MiB is untouched.
    expect(mapping(t, a + 2 * MiB)).toBeUndefined();
  });

  it("eligibility: madvise mode needs MADV_HUGEPAGE; always honours NOHUGEPAGE; never never; VMA must cover the 2 MiB", async () => {
    const cases: Array<[string, boolean, number | undefined, number, number]> = [
      ["madvise", false, undefined, 4 * MiB, 0],
      ["always", true, undefined, 4 * MiB, 1],
      ["always", true, MADV_NOHUGEPAGE, 4 * MiB, 0],
      ["never", false, MADV_HUGEPAGE, 4 * MiB, 0],
      ["always", true, undefined, 2 * MiB - 4096, 0],
    ];
    for (const [mode, _huge, advice, len, allocs] of cases) {
      const m = boot({ ramMiB: [32], thp: mode as "always" });
      const t = m.mm.spawn();
      const a = t.mm.mmap(0, len, RW, PRIV);
      if (advice !== undefined) t.mm.madvise(a, len, advice);
      await m.mm.write(t, a, new Uint8Array([1]));
      expect([mode, advice, len, m.vmstat.c.thp_fault_alloc]).toEqual([mode, advice, len, allocs]);
      expect(mapping(t, a)?.huge).toBe(allocs === 1);
    }
  });

  it("falls back to base pages when no order-9 block is free (thp_fault_fallback)", async () => {
    const m = boot({ ramMiB: [32], thp: "always" });
    const t = m.mm.spawn();
    const a = t.mm.mmap(0, 2 * MiB, RW, PRIV);
    const kept = fragment(m);
    const z = m.alloc.zones[0];
    expect(z?.nrFree[9]).toBe(0);
    expect(z?.nrFree[10]).toBe(0);
    const f0 = free(m);
    expect(f0).toBeGreaterThan(1024);
    await m.mm.write(t, a + 3 * 4096, new Uint8Array([5]));
    expect(m.vmstat.c.thp_fault_fallback).toBe(1);
    expect(m.vmstat.c.thp_fault_alloc).toBe(0);
    expect(mapping(t, a + 3 * 4096)?.huge).toBe(false);
    expect(free(m)).toBe(f0 - 1);
    expect(t.mm.rssAnon).toBe(1);
    expect((await m.mm.read(t, a + 3 * 4096, 1))[0]).toBe(5);
    m.mm.exit(t);
    release(m, kept);
  });

  it("a read maps the huge zero page (allocated once, shared, never counted)", async () => {
    const m = boot({ ramMiB: [32], thp: "always" });
    const t = m.mm.spawn();
    const a = t.mm.mmap(0, 4 * MiB, RW, PRIV);
    const f0 = free(m);
    expect((await m.mm.read(t, a + 123, 4))[0]).toBe(0);
    expect(m.vmstat.c.thp_zero_page_alloc).toBe(1);
    const hz = m.mm.huge.hugeZeroPfn;
    expect(hz % 512).toBe(0);
    expect(mapping(t, a)).toEqual({ pfn: hz, present: true, write: false, huge: true });
    expect(free(m)).toBe(f0 - 512);
    await m.mm.read(t, a + 2 * MiB, 1);
    expect(m.vmstat.c.thp_zero_page_alloc).toBe(1);
    expect(pfnAt(t, a + 2 * MiB)).toBe(hz);
    expect(free(m)).toBe(f0 - 512);
    expect(t.mm.rssAnon).toBe(0);
    expect(m.vmstat.c.nr_anon_transparent_hugepages).toBe(0);
    expect(m.pages.refcount[hz]).toBe(1);
    const c = m.mm.fork(t);
    expect(pfnAt(c, a)).toBe(hz);
    expect(m.pages.refcount[hz]).toBe(1);
  });

  it("a write after a read of the huge zero page gives zeroed memory with the byte written", async () => {
    const m = boot({ ramMiB: [32], thp: "always" });
    const t = m.mm.spawn();
    const a = t.mm.mmap(0, 2 * MiB, RW, PRIV);
    await m.mm.read(t, a, 1);
    await m.mm.write(t, a + 4096 * 7, new Uint8Array([9]));
    const r = await m.mm.read(t, a, 2 * MiB);
    let nz = 0;
    for (const x of r) if (x !== 0) nz++;
    expect(nz).toBe(1);
    expect(r[4096 * 7]).toBe(9);
  });

  it("partial munmap of a THP splits the PMD; the folio stays whole until its last mapping goes", async () => {
    const m = boot({ ramMiB: [32], thp: "always" });
    const t = m.mm.spawn();
    const a = t.mm.mmap(0, 2 * MiB, RW, PRIV);
    const data = pattern(2 * MiB, 3);
    await m.mm.write(t, a, data);
    const head = pfnAt(t, a);
    const f0 = free(m);
    t.mm.munmap(a + 4096, 2 * 4096); // unaligned to 2 MiB
    expect(m.vmstat.c.thp_split_pmd).toBe(1);
    expect(m.vmstat.c.thp_split_page).toBe(0);
    expect(mapping(t, a)?.huge).toBe(false);
    expect(mapping(t, a)?.pfn).toBe(head);
    expect(mapping(t, a + 4096)).toBeUndefined();
    expect(mapping(t, a + 3 * 4096)?.pfn).toBe(head + 3);
    // Nothing is freed by the partial unmap (the kernel queues the folio for deferred split).
    expect(free(m)).toBe(f0);
    expect(m.pages.refcount[head]).toBe(510);
    expect(m.mm.rmap.entireMapcount(head)).toBe(0);
    expect([m.pages.mapcount[head], m.pages.mapcount[head + 1], m.pages.mapcount[head + 2], m.pages.mapcount[head + 3]]).toEqual([
      1, 0, 0, 1,
    ]);
    expect(m.mm.rmap.folioMapcount(head)).toBe(510);
    expect(m.vmstat.c.nr_anon_transparent_hugepages).toBe(0);
    expect(t.mm.rssAnon).toBe(510);
    expect(t.mm.vmas.length).toBe(2);
    const r0 = await m.mm.read(t, a, 4096);
    expect(r0[17]).toBe(data[17]);
    const r3 = await m.mm.read(t, a + 3 * 4096, 2 * MiB - 3 * 4096);
    let diff = -1;
    for (let i = 0; i < r3.length; i++)
      if (r3[i] !== data[3 * 4096 + i]) {
        diff = i;
        break;
      }
    expect(diff).toBe(-1);
    expect(await rejection(m.mm.read(t, a + 4096, 1))).toMatchObject({ code: "EFAULT" });
    // Unmapping the rest frees the whole folio at once.
    t.mm.munmap(a, 2 * MiB);
    expect(free(m)).toBe(f0 + 512);
    expect(m.pages.refcount[head]).toBe(0);
  });

  it("fork shares a THP by PMD; a child write splits the child's PMD and copies one base page", async () => {
    const m = boot({ ramMiB: [32], thp: "always" });
    const p = m.mm.spawn();
    const a = p.mm.mmap(0, 2 * MiB, RW, PRIV);
    await m.mm.write(p, a, pattern(8192, 1));
    const head = pfnAt(p, a);
    const c = m.mm.fork(p);
    expect(m.pages.refcount[head]).toBe(2);
    expect(m.mm.rmap.entireMapcount(head)).toBe(2);
    expect(mapping(p, a)).toMatchObject({ huge: true, write: false });
    expect(mapping(c, a)).toMatchObject({ huge: true, write: false, pfn: head });
    expect(c.mm.rssAnon).toBe(512);
    const f0 = free(m);
    await m.mm.write(c, a + 4096, new Uint8Array([0xcc]));
    expect(m.vmstat.c.thp_split_pmd).toBe(1);
    expect(mapping(p, a)?.huge).toBe(true);
    expect(mapping(c, a)?.huge).toBe(false);
    expect(pfnAt(c, a)).toBe(head);
    expect(pfnAt(c, a + 4096)).not.toBe(head + 1);
    expect(free(m)).toBe(f0 - 1);
    // parent PMD (1 ref) + 511 child PTEs
    expect(m.pages.refcount[head]).toBe(512);
    expect(m.mm.rmap.entireMapcount(head)).toBe(1);
    expect(m.pages.mapcount[head + 1]).toBe(0);
    expect((await m.mm.read(p, a + 4096, 1))[0]).toBe(pattern(8192, 1)[4096]);
    expect((await m.mm.read(c, a + 4096, 1))[0]).toBe(0xcc);
    expect(m.vmstat.c.nr_anon_transparent_hugepages).toBe(1);
  });

  it("a THP is reused in place when its only mapper writes after a child exits", async () => {
    const m = boot({ ramMiB: [32], thp: "always" });
    const p = m.mm.spawn();
    const a = p.mm.mmap(0, 2 * MiB, RW, PRIV);
    await m.mm.write(p, a, new Uint8Array([1]));
    const head = pfnAt(p, a);
    const c = m.mm.fork(p);
    m.mm.exit(c);
    const f0 = free(m);
    await m.mm.write(p, a, new Uint8Array([2]));
    expect(mapping(p, a)).toMatchObject({ huge: true, write: true, pfn: head });
    expect(free(m)).toBe(f0);
    expect(m.vmstat.c.thp_split_pmd).toBe(0);
  });

  it("mprotect of part of a THP splits the PMD; protections apply per page", async () => {
    const m = boot({ ramMiB: [32], thp: "always" });
    const t = m.mm.spawn();
    const a = t.mm.mmap(0, 2 * MiB, RW, PRIV);
    await m.mm.write(t, a, new Uint8Array([1]));
    t.mm.mprotect(a + MiB, MiB, PROT_READ);
    expect(m.vmstat.c.thp_split_pmd).toBe(1);
    expect(mapping(t, a)?.write).toBe(true);
    expect(mapping(t, a + MiB)?.write).toBe(false);
    expect(await rejection(m.mm.write(t, a + MiB, new Uint8Array([1])))).toMatchObject({ code: "EFAULT" });
    await m.mm.write(t, a + 4096, new Uint8Array([3]));
    expect((await m.mm.read(t, a + 4096, 1))[0]).toBe(3);
    expect(m.pages.refcount[pfnAt(t, a)]).toBe(HPAGE_PMD_NR);
  });

  it("vmstat: a read that cannot get the huge zero page counts thp_fault_fallback", async () => {
    const m = boot({ ramMiB: [32], thp: "always" });
    const t = m.mm.spawn();
    const a = t.mm.mmap(0, 2 * MiB, RW, PRIV);
    const kept = fragment(m);
    expect((await m.mm.read(t, a, 1))[0]).toBe(0);
    expect(m.vmstat.c.thp_zero_page_alloc).toBe(0);
    expect(pfnAt(t, a)).toBe(m.mm.zeroPfn);
    // do_huge_pmd_anonymous_page: `if (unlikely(!zero_folio)) { count_vm_event(THP_FAULT_FALLBACK);
    // return VM_FAULT_FALLBACK; }`; hmmkit returns FAULT_FALLBACK without counting.
    const fallback = m.vmstat.c.thp_fault_fallback;
    m.mm.exit(t);
    release(m, kept);
    expect(fallback).toBe(1);
  });

  it("vmstat: splitting a huge-zero PMD counts thp_split_pmd", async () => {
    const m = boot({ ramMiB: [32], thp: "always" });
    const t = m.mm.spawn();
    const a = t.mm.mmap(0, 2 * MiB, RW, PRIV);
    await m.mm.read(t, a, 1);
    expect(mapping(t, a)?.huge).toBe(true);
    t.mm.mprotect(a, MiB, PROT_READ);
    expect(mapping(t, a)).toMatchObject({ huge: false, pfn: m.mm.zeroPfn });
    expect(mapping(t, a + MiB)).toMatchObject({ huge: false, pfn: m.mm.zeroPfn });
    // __split_huge_pmd_locked counts THP_SPLIT_PMD before its is_huge_zero_pmd() branch.
    expect(m.vmstat.c.thp_split_pmd).toBe(1);
  });
});
