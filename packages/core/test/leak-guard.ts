/**
 * Leak guard for core test suites (CONVENTIONS.md, "Every suite ends with a leak guard").
 *
 * `leakBaseline(m)` records what a freshly booted machine looks like; `expectNoLeaks(base)` tears
 * the machine down (every task exits, the machine is disposed) and then asserts, over every pfn of
 * every region:
 * - no page is locked (PG_locked) and nobody waits on a page lock;
 * - no page is pinned (pin count 0; no small page carries GUP_PIN_COUNTING_BIAS);
 * - no page has a mapcount, is on an LRU list or isolated;
 * - no page without a reference (free pages, and the tails of the folios still allocated) keeps a
 *   mapping, index or private value (the allocator clears only a folio's head when it is freed);
 * - only reserved pages (the zero page, the huge zero page's head) hold references, and free
 *   ZONE_DEVICE pages are back at refcount 0;
 * - the allocator's free pages equal the baseline (minus the huge zero page, which the kernel keeps
 *   once it is allocated, adjusted by HugeTLB pool resizes), and vmstat's nr_free_pages agrees with
 *   the zones; every HugeTLB pool page is free and unreserved;
 * - nr_anon_pages and nr_anon_transparent_hugepages are back to 0, the LRU lists are empty;
 * - the clock has no pending event.
 *
 * `useLeakGuard()` wires this into vitest: it returns a `boot(config)` that creates machines, and
 * checks each one in `afterEach`.
 */
import { afterEach, expect } from "vitest";
import { GUP_PIN_COUNTING_BIAS, HPAGE_PMD_NR, Machine, type MachineConfig, PG } from "../src/index";

/** What a freshly booted machine looked like. */
export interface LeakBaseline {
  /** The machine. */
  readonly machine: Machine;
  /** Free pages right after boot. */
  readonly freePages: number;
  /** Whether the huge zero page existed at baseline time. */
  readonly hugeZero: boolean;
  /** HugeTLB pool size at baseline time (pool pages are not free pages). */
  readonly hugepages: number;
}

/**
 * Record the leak baseline of a machine (call right after `Machine.create`).
 * @param m - the machine.
 * @returns the baseline.
 */
export function leakBaseline(m: Machine): LeakBaseline {
  return { machine: m, freePages: m.alloc.nrFreePages, hugeZero: m.mm.huge.hugeZeroPfn >= 0, hugepages: m.mm.hugetlb.nrHugepages };
}

/** A leak found by {@link findLeaks}: one line per problem, capped. */
export function findLeaks(base: LeakBaseline): string[] {
  const m = base.machine;
  const ps = m.pages;
  const out: string[] = [];
  const push = (s: string) => {
    if (out.length < 20) out.push(s);
  };
  if (m.mm.tasks.size !== 0) push(`${m.mm.tasks.size} task(s) still alive`);
  if (m.clock.pending !== 0) push(`${m.clock.pending} clock event(s) pending`);
  if (m.mm.refs.waitingPages !== 0) push(`${m.mm.refs.waitingPages} page(s) with lock waiters`);
  const hz = m.mm.huge.hugeZeroPfn;
  for (const r of ps.regions) {
    for (let pfn = r.basePfn; pfn < r.basePfn + r.npages; pfn++) {
      const f = ps.flags[pfn] as number;
      const rc = ps.refcount[pfn] as number;
      if (f & PG.locked) push(`pfn ${pfn} locked`);
      if (f & (PG.lru | PG.isolated)) push(`pfn ${pfn} on an LRU list or isolated (flags 0x${f.toString(16)})`);
      if ((ps.pincount[pfn] as number) !== 0) push(`pfn ${pfn} pincount ${ps.pincount[pfn]}`);
      if ((ps.mapcount[pfn] as number) !== 0) push(`pfn ${pfn} mapcount ${ps.mapcount[pfn]}`);
      if (rc >= GUP_PIN_COUNTING_BIAS) push(`pfn ${pfn} refcount ${rc} carries a pin bias`);
      if (rc === 0 && ((ps.mapping[pfn] as number) !== 0 || (ps.index[pfn] as number) !== 0 || (ps.private[pfn] as number) !== 0)) {
        push(`pfn ${pfn} (refcount 0) keeps mapping ${ps.mapping[pfn]} index ${ps.index[pfn]} private ${ps.private[pfn]}`);
      }
      if (rc !== 0) {
        const reserved = (f & PG.reserved) !== 0;
        const expected = pfn === m.mm.zeroPfn || pfn === hz ? 1 : 0;
        if (!reserved || rc !== expected) push(`pfn ${pfn} refcount ${rc} (flags 0x${f.toString(16)})`);
      }
    }
  }
  const h = m.mm.hugetlb;
  if (h.freeHugepages !== h.nrHugepages) push(`${h.nrHugepages - h.freeHugepages} HugeTLB page(s) still in use`);
  if (h.resvHugepages !== 0) push(`${h.resvHugepages} HugeTLB page(s) still reserved`);
  const expectFree = base.freePages - (hz >= 0 && !base.hugeZero ? HPAGE_PMD_NR : 0) + (base.hugepages - h.nrHugepages) * HPAGE_PMD_NR;
  if (m.alloc.nrFreePages !== expectFree) push(`free pages ${m.alloc.nrFreePages}, expected ${expectFree}`);
  if (m.vmstat.c.nr_free_pages !== m.alloc.nrFreePages)
    push(`vmstat nr_free_pages ${m.vmstat.c.nr_free_pages} != zones ${m.alloc.nrFreePages}`);
  if (m.vmstat.c.nr_anon_pages !== 0) push(`nr_anon_pages ${m.vmstat.c.nr_anon_pages}`);
  if (m.vmstat.c.nr_anon_transparent_hugepages !== 0) push(`nr_anon_transparent_hugepages ${m.vmstat.c.nr_anon_transparent_hugepages}`);
  for (const [nid, v] of m.mm.lru.vecs.entries()) {
    if (v.nrPages[0] !== 0 || v.nrPages[1] !== 0) push(`node ${nid} LRU holds ${v.nrPages[0]}+${v.nrPages[1]} pages`);
  }
  return out;
}

/**
 * Tear the machine down and assert that nothing leaked (see the file comment).
 * @param base - from {@link leakBaseline}.
 */
export function expectNoLeaks(base: LeakBaseline): void {
  base.machine.dispose();
  expect(findLeaks(base)).toEqual([]);
}

/**
 * Install the leak guard for the current test file: returns a `boot(config)` that creates a machine
 * and records its baseline; after each test every machine booted in it is torn down and checked.
 * @returns the machine factory.
 */
export function useLeakGuard(): (config?: MachineConfig) => Machine {
  let booted: LeakBaseline[] = [];
  afterEach(() => {
    const list = booted;
    booted = [];
    const problems: string[] = [];
    for (const b of list) {
      try {
        b.machine.dispose();
      } catch (e) {
        problems.push(`dispose threw: ${e instanceof Error ? e.message : String(e)}`);
        continue;
      }
      for (const p of findLeaks(b)) problems.push(p);
    }
    expect(problems, "leak guard").toEqual([]);
  });
  return (config: MachineConfig = {}) => {
    const m = Machine.create(config);
    booted.push(leakBaseline(m));
    return m;
  };
}
