/** Test fixtures for the zswap-like driver: page contents of known compressibility and a leak guard. */
import { MAP_ANONYMOUS, MAP_PRIVATE, Machine, type MachineConfig, PAGE_SIZE, PG, PROT_READ, PROT_WRITE, type Task } from "@hmmkit/core";
import { afterEach, expect } from "vitest";
import { Zswap, type ZswapOptions } from "../../index";

/** Page content kinds: text-like (compresses ~3-5x), same-filled, random (incompressible). */
export type PageKind = "text" | "same" | "random" | "zero";

const WORDS = ["page", "swap", "zswap", "compress", "memory", "kernel", "slot", "pool", "folio", "reclaim", "lru", "entry"];

/** xorshift32 step. */
function xs(s: number): number {
  let x = s | 0 || 1;
  x ^= x << 13;
  x ^= x >>> 17;
  x ^= x << 5;
  return x >>> 0;
}

/**
 * The bytes of page `i` of kind `kind` under `seed`.
 * @param kind - content kind. @param i - page number. @param seed - variation.
 * @returns PAGE_SIZE bytes.
 */
export function pageBytes(kind: PageKind, i: number, seed = 0): Uint8Array {
  const b = new Uint8Array(PAGE_SIZE);
  let s = xs((i + 1) * 2654435761 + seed * 97 + 1);
  if (kind === "zero") return b;
  if (kind === "same") {
    const v = (i * 0x01010101 + seed + 0x5a) >>> 0;
    new Uint32Array(b.buffer).fill(v);
    return b;
  }
  if (kind === "random") {
    for (let k = 0; k < PAGE_SIZE; k += 4) {
      s = xs(s);
      b[k] = s & 0xff;
      b[k + 1] = (s >>> 8) & 0xff;
      b[k + 2] = (s >>> 16) & 0xff;
      b[k + 3] = s >>> 24;
    }
    return b;
  }
  let o = 0;
  while (o < PAGE_SIZE) {
    s = xs(s);
    const w = `${WORDS[s % WORDS.length]} ${(s >>> 8) % 1000} `;
    for (let k = 0; k < w.length && o < PAGE_SIZE; k++) b[o++] = w.charCodeAt(k);
  }
  return b;
}

/** Kind of page `i` in the mixed workloads: mostly text, some same-filled, some random. */
export function kindOf(i: number): PageKind {
  const r = i % 16;
  return r === 3 ? "same" : r === 7 ? "random" : r === 11 ? "zero" : "text";
}

/** A machine with a zswap driver and a task with `npages` of mapped private memory. */
export interface Rig {
  m: Machine;
  z: Zswap;
  t: Task;
  va: number;
  npages: number;
}

/**
 * Install the leak guard: returns `boot(config, zswapOptions, npages)`; after each test every rig
 * is torn down (tasks exit, the clock drains) and checked: no swap slot in use, the zswap pool
 * empty, no page referenced, mapped, locked or on an LRU list, free pages back to baseline.
 * @returns the rig factory.
 */
export function useZswapLeakGuard(): (config: MachineConfig, opts?: ZswapOptions, npages?: number) => Rig {
  let rigs: Array<{ rig: Rig; baseFree: number }> = [];
  afterEach(async () => {
    const list = rigs;
    rigs = [];
    for (const { rig, baseFree } of list) {
      const { m, z } = rig;
      for (const t of [...m.mm.tasks.values()]) m.mm.exit(t);
      await m.run();
      const problems: string[] = [];
      if (m.mm.swap.device!.inusePages !== 0) problems.push(`${m.mm.swap.device!.inusePages} swap slot(s) in use`);
      if (z.nrEntries !== 0) problems.push(`${z.nrEntries} zswap entries`);
      if (z.pool.totalPages !== 0) problems.push(`zswap pool holds ${z.pool.totalPages} page(s)`);
      if (z.debugfs.stored_pages !== 0 || z.debugfs.pool_total_size !== 0) problems.push("debugfs stored_pages/pool_total_size not 0");
      z.destroy();
      const ps = m.pages;
      for (let pfn = 0; pfn < ps.maxPfn && problems.length < 20; pfn++) {
        const f = ps.flags[pfn] as number;
        if (f & (PG.locked | PG.lru | PG.isolated | PG.movableOps)) problems.push(`pfn ${pfn} flags 0x${f.toString(16)}`);
        if ((ps.mapcount[pfn] as number) !== 0) problems.push(`pfn ${pfn} mapcount ${ps.mapcount[pfn]}`);
        if ((ps.refcount[pfn] as number) !== 0 && !(f & PG.reserved)) problems.push(`pfn ${pfn} refcount ${ps.refcount[pfn]}`);
      }
      if (m.alloc.nrFreePages !== baseFree) problems.push(`free pages ${m.alloc.nrFreePages}, baseline ${baseFree}`);
      if (m.vmstat.c.nr_anon_pages !== 0) problems.push(`nr_anon_pages ${m.vmstat.c.nr_anon_pages}`);
      if (m.clock.pending !== 0) problems.push(`${m.clock.pending} clock events pending`);
      m.dispose();
      expect(problems, "zswap leak guard").toEqual([]);
    }
  });
  return (config, opts = {}, npages = 0) => {
    const m = Machine.create(config);
    const baseFree = m.alloc.nrFreePages;
    const z = Zswap.create(m, opts);
    const t = m.mm.spawn();
    const va = npages > 0 ? t.mm.mmap(0, npages * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS) : 0;
    const rig = { m, z, t, va, npages };
    rigs.push({ rig, baseFree });
    return rig;
  };
}

/**
 * Write page `i` of the rig's mapping with `pageBytes(kind, i, seed)`.
 * @param rig - the rig. @param i - page. @param kind - content. @param seed - variation.
 */
export async function writePage(rig: Rig, i: number, kind: PageKind, seed = 0): Promise<void> {
  await rig.m.mm.write(rig.t, rig.va + i * PAGE_SIZE, pageBytes(kind, i, seed));
}

/**
 * Read page `i` of the rig's mapping and compare it with the expected bytes.
 * @returns true if equal.
 */
export async function pageMatches(rig: Rig, i: number, expected: Uint8Array): Promise<boolean> {
  const got = await rig.m.mm.read(rig.t, rig.va + i * PAGE_SIZE, PAGE_SIZE);
  return Buffer.compare(got, expected) === 0;
}

/** The pfn mapped at page `i` of the rig (present PTE), or -1. */
export function pfnOf(rig: Rig, i: number): number {
  const e = rig.t.mm.pt.getPte(rig.va + i * PAGE_SIZE);
  return e % 2 === 1 ? Math.floor(e / 256) : -1;
}
