/** Shared helpers for the mm unit tests. */
import type { Machine } from "../../machine";
import type { Task } from "../mm-core";
import { entryPayload, isHuge, isPresent, isWrite, PMD_SIZE } from "../page-table";
import { MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED, PROT_READ, PROT_WRITE } from "../vma";

export const RW = PROT_READ | PROT_WRITE;
export const PRIV = MAP_PRIVATE | MAP_ANONYMOUS;
export const SHARED = MAP_SHARED | MAP_ANONYMOUS;
export const KiB = 1024;
export const MiB = 1024 * 1024;

/** What the page table maps at `va` (PTE or huge PMD), without touching accessed bits. */
export function mapping(t: Task, va: number): { pfn: number; present: boolean; write: boolean; huge: boolean } | undefined {
  const pmd = t.mm.pt.getPmd(va);
  if (pmd !== 0 && isHuge(pmd)) {
    return { pfn: entryPayload(pmd) + Math.floor((va % PMD_SIZE) / 4096), present: isPresent(pmd), write: isWrite(pmd), huge: true };
  }
  const e = t.mm.pt.getPte(va);
  if (e === 0) return undefined;
  return { pfn: entryPayload(e), present: isPresent(e), write: isWrite(e), huge: false };
}

/** The pfn mapped at `va`, or -1. */
export function pfnAt(t: Task, va: number): number {
  return mapping(t, va)?.pfn ?? -1;
}

/** Bytes filled with a recognisable pattern. */
export function pattern(len: number, seed: number): Uint8Array {
  const b = new Uint8Array(len);
  for (let i = 0; i < len; i++) b[i] = (i * 13 + seed * 101 + 1) & 0xff;
  return b;
}

/** Await a promise expected to reject; return the error. */
export async function rejection(p: Promise<unknown>): Promise<{ code?: string; arg?: string; check?: string; message: string }> {
  try {
    await p;
  } catch (e) {
    return e as { code?: string; arg?: string; message: string };
  }
  throw new Error("expected a rejection");
}

/** Call fn, expect a throw, return the error. */
export function thrown(fn: () => unknown): { code?: string; arg?: string; check?: string; message: string } {
  try {
    fn();
  } catch (e) {
    return e as { code?: string; arg?: string; message: string };
  }
  throw new Error("expected a throw");
}

/** A snapshot of a task's VMAs as [start, end, flags] relative to `base`. */
export function vmaLayout(t: Task, base: number): Array<[number, number, number]> {
  return t.mm.vmas.map((v) => [v.start - base, v.end - base, v.flags]);
}

/** Free pages of a machine. */
export function free(m: Machine): number {
  return m.alloc.nrFreePages;
}
