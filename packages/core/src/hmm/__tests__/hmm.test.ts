import { describe, expect, it } from "vitest";
import { useLeakGuard } from "../../../test/leak-guard";
import type { Machine } from "../../machine";
import type { Task } from "../../mm/mm-core";
import {
  MMU_NOTIFY,
  mmuIntervalNotifierInsert,
  mmuIntervalReadBegin,
  mmuIntervalReadRetry,
  mmuIntervalSetSeq,
} from "../../mm/mmu-notifier";
import { MADV_HUGEPAGE, MAP_ANONYMOUS, MAP_PRIVATE, PROT_NONE, PROT_READ, PROT_WRITE } from "../../mm/vma";
import { ERRNO } from "../../sim/errors";
import { HMM_PFN, type HmmRange, hmmPfnToMapOrder, hmmPfnToPfn, hmmRangeFault } from "../hmm";

const boot = useLeakGuard();
const RW = PROT_READ | PROT_WRITE;
const PRIV = MAP_PRIVATE | MAP_ANONYMOUS;
const MiB = 1 << 20;

function range(t: Task, start: number, npages: number, defaultFlags = 0, events?: number[]): HmmRange {
  const notifier = mmuIntervalNotifierInsert(t.mm, start, npages * 4096, {
    invalidate(sub, r, cur) {
      events?.push(r.event);
      mmuIntervalSetSeq(sub, cur);
      return true;
    },
  });
  return {
    notifier,
    notifierSeq: mmuIntervalReadBegin(notifier),
    start,
    end: start + npages * 4096,
    hmmPfns: new Float64Array(npages),
    defaultFlags,
    pfnFlagsMask: 0,
    devPrivateOwner: undefined,
  };
}

const pte = (t: Task, va: number) => Math.floor(t.mm.pt.getPte(va) / 256);
const flags = (e: number) => (e % 256) & 7;

async function hmm(m: Machine, r: HmmRange): Promise<number> {
  return hmmRangeFault(m.mm, r);
}

/** The driver-side retry loop of Documentation/mm/hmm.rst. */
async function retryLoop(m: Machine, r: HmmRange): Promise<{ result: number; passes: number }> {
  for (let passes = 1; passes < 100; passes++) {
    const res = await hmm(m, r);
    if (res === -ERRNO.EBUSY || (res === 0 && mmuIntervalReadRetry(r.notifier, r.notifierSeq))) {
      r.notifierSeq = mmuIntervalReadBegin(r.notifier);
      continue;
    }
    return { result: res, passes };
  }
  throw new Error("hmm retry loop did not converge");
}

describe("hmmRangeFault snapshot (no fault requested)", () => {
  it("none -> 0, written -> VALID|WRITE with its pfn, zero page -> VALID (read-only)", async () => {
    const m = boot({ ramMiB: [32], thp: "never" });
    const t = m.mm.spawn();
    const a = t.mm.mmap(0, 4 * 4096, RW, PRIV);
    await m.mm.write(t, a + 4096, new Uint8Array([1]));
    await m.mm.read(t, a + 2 * 4096, 1);
    const faults0 = m.vmstat.c.pgfault;
    const r = range(t, a, 4);
    expect(await hmm(m, r)).toBe(0);
    const e = Array.from(r.hmmPfns);
    expect(e[0]).toBe(0);
    expect(hmmPfnToPfn(e[1] as number)).toBe(pte(t, a + 4096));
    expect(flags(e[1] as number)).toBe(HMM_PFN.VALID | HMM_PFN.WRITE);
    expect(hmmPfnToMapOrder(e[1] as number)).toBe(0);
    expect(hmmPfnToPfn(e[2] as number)).toBe(m.mm.zeroPfn);
    expect(flags(e[2] as number)).toBe(HMM_PFN.VALID);
    expect(e[3]).toBe(0);
    expect(m.vmstat.c.pgfault).toBe(faults0);
    expect(mmuIntervalReadRetry(r.notifier, r.notifierSeq)).toBe(false);
  });

  it("a PMD-mapped THP is reported with map order 9 and per-page pfns", async () => {
    const m = boot({ ramMiB: [32], thp: "madvise" });
    const t = m.mm.spawn();
    const a = t.mm.mmap(0, 2 * MiB, RW, PRIV);
    t.mm.madvise(a, 2 * MiB, MADV_HUGEPAGE);
    await m.mm.write(t, a, new Uint8Array([1]));
    const head = Math.floor(t.mm.pt.getPmd(a) / 256);
    const r = range(t, a + 4 * 4096, 8);
    expect(await hmm(m, r)).toBe(0);
    for (let i = 0; i < 8; i++) {
      const e = r.hmmPfns[i] as number;
      expect(hmmPfnToPfn(e)).toBe(head + 4 + i);
      expect(flags(e)).toBe(HMM_PFN.VALID | HMM_PFN.WRITE);
      expect(hmmPfnToMapOrder(e)).toBe(9);
    }
  });

  it("no VMA or PROT_NONE without a fault request -> HMM_PFN_ERROR entries, result 0", async () => {
    const m = boot({ ramMiB: [32] });
    const t = m.mm.spawn();
    const a = t.mm.mmap(0, 4 * 4096, RW, PRIV);
    t.mm.munmap(a, 4096);
    t.mm.mprotect(a + 4096, 4096, PROT_NONE);
    const r = range(t, a, 4);
    expect(await hmm(m, r)).toBe(0);
    expect(Array.from(r.hmmPfns)).toEqual([HMM_PFN.ERROR, HMM_PFN.ERROR, 0, 0]);
  });
});

describe("hmmRangeFault with fault requests", () => {
  it("REQ_FAULT faults pages in readable (zero page), REQ_WRITE writable (new pages)", async () => {
    const m = boot({ ramMiB: [32], thp: "never" });
    const t = m.mm.spawn();
    const a = t.mm.mmap(0, 4 * 4096, RW, PRIV);
    const r = range(t, a, 2, HMM_PFN.REQ_FAULT);
    expect(await hmm(m, r)).toBe(0);
    expect(m.vmstat.c.pgfault).toBe(2);
    for (let i = 0; i < 2; i++) expect(r.hmmPfns[i]).toBe(m.mm.zeroPfn * 256 + HMM_PFN.VALID);
    const f0 = m.alloc.nrFreePages;
    const events: number[] = [];
    const w = range(t, a, 4, HMM_PFN.REQ_FAULT | HMM_PFN.REQ_WRITE, events);
    // Pages 0-1 map the zero page: write-faulting them is a COW (MMU_NOTIFY_CLEAR), so the walk
    // returns -EBUSY once per COW before a pass completes, as in the kernel.
    expect(await retryLoop(m, w)).toEqual({ result: 0, passes: 3 });
    expect(events).toEqual([MMU_NOTIFY.CLEAR, MMU_NOTIFY.CLEAR]);
    expect(m.alloc.nrFreePages).toBe(f0 - 4);
    for (let i = 0; i < 4; i++) {
      const e = w.hmmPfns[i] as number;
      expect(flags(e)).toBe(HMM_PFN.VALID | HMM_PFN.WRITE);
      expect(hmmPfnToPfn(e)).toBe(pte(t, a + i * 4096));
      expect(hmmPfnToPfn(e)).not.toBe(m.mm.zeroPfn);
    }
    // The device sees what the CPU wrote through the returned pfns.
    await m.mm.write(t, a + 3 * 4096 + 5, new Uint8Array([77]));
    const b = new Uint8Array(1);
    m.contents.read(hmmPfnToPfn(w.hmmPfns[3] as number), 5, b);
    expect(b[0]).toBe(77);
  });

  it("per-page requests come from the input entries through pfnFlagsMask", async () => {
    const m = boot({ ramMiB: [32], thp: "never" });
    const t = m.mm.spawn();
    const a = t.mm.mmap(0, 4 * 4096, RW, PRIV);
    const r = range(t, a, 4);
    r.pfnFlagsMask = HMM_PFN.REQ_FAULT | HMM_PFN.REQ_WRITE;
    r.hmmPfns[2] = HMM_PFN.REQ_FAULT | HMM_PFN.REQ_WRITE;
    r.hmmPfns[1] = 12345 * 256 + HMM_PFN.REQ_FAULT; // stale output bits are masked off
    expect(await hmm(m, r)).toBe(0);
    expect(r.hmmPfns[0]).toBe(0);
    expect(r.hmmPfns[1]).toBe(m.mm.zeroPfn * 256 + HMM_PFN.VALID);
    expect(flags(r.hmmPfns[2] as number)).toBe(HMM_PFN.VALID | HMM_PFN.WRITE);
    expect(r.hmmPfns[3]).toBe(0);
    expect(t.mm.rssAnon).toBe(1);
  });

  it("REQ_WRITE on a read-only VMA -> -EPERM (-1)", async () => {
    const m = boot({ ramMiB: [32] });
    const t = m.mm.spawn();
    const a = t.mm.mmap(0, 2 * 4096, PROT_READ, PRIV);
    const r = range(t, a, 2, HMM_PFN.REQ_FAULT | HMM_PFN.REQ_WRITE);
    expect(ERRNO.EPERM).toBe(1);
    expect(await hmm(m, r)).toBe(-1);
    expect(t.mm.rssAnon).toBe(0);
    // REQ_FAULT alone is fine there.
    const q = range(t, a, 2, HMM_PFN.REQ_FAULT);
    expect(await hmm(m, q)).toBe(0);
  });

  it("no VMA with a fault request -> -EFAULT; PROT_NONE with a fault request -> -EFAULT", async () => {
    const m = boot({ ramMiB: [32] });
    const t = m.mm.spawn();
    const a = t.mm.mmap(0, 4 * 4096, RW, PRIV);
    t.mm.munmap(a + 3 * 4096, 4096);
    const r = range(t, a, 4, HMM_PFN.REQ_FAULT);
    expect(await hmm(m, r)).toBe(-ERRNO.EFAULT);
    expect(-ERRNO.EFAULT).toBe(-14);
    t.mm.mprotect(a, 4096, PROT_NONE);
    const q = range(t, a, 1, HMM_PFN.REQ_FAULT);
    expect(await hmm(m, q)).toBe(-14);
  });

  it("-EBUSY when the walk's own COW fault invalidates the range; the retry loop then succeeds", async () => {
    const m = boot({ ramMiB: [32], thp: "never" });
    const t = m.mm.spawn();
    const a = t.mm.mmap(0, 2 * 4096, RW, PRIV);
    await m.mm.write(t, a, new Uint8Array([1, 2]));
    await m.mm.write(t, a + 4096, new Uint8Array([3]));
    const c = m.mm.fork(t); // both pages shared and write-protected
    const events: number[] = [];
    const r = range(t, a, 2, HMM_PFN.REQ_FAULT | HMM_PFN.REQ_WRITE, events);
    const seen: number[] = [];
    m.bus.on("hmm_range_fault", (e) => seen.push(e.result));
    expect(await hmm(m, r)).toBe(-ERRNO.EBUSY);
    expect(-ERRNO.EBUSY).toBe(-16);
    expect(events).toEqual([MMU_NOTIFY.CLEAR]);
    let tries = 1;
    for (;;) {
      r.notifierSeq = mmuIntervalReadBegin(r.notifier);
      const res = await hmm(m, r);
      tries++;
      if (res === -ERRNO.EBUSY) continue;
      expect(res).toBe(0);
      if (!mmuIntervalReadRetry(r.notifier, r.notifierSeq)) break;
    }
    expect(tries).toBe(3); // each page's COW invalidated once
    expect(events).toEqual([MMU_NOTIFY.CLEAR, MMU_NOTIFY.CLEAR]);
    expect(seen).toEqual([-16, -16, 0]);
    for (let i = 0; i < 2; i++) {
      expect(flags(r.hmmPfns[i] as number)).toBe(HMM_PFN.VALID | HMM_PFN.WRITE);
      expect(hmmPfnToPfn(r.hmmPfns[i] as number)).toBe(pte(t, a + i * 4096));
      expect(hmmPfnToPfn(r.hmmPfns[i] as number)).not.toBe(pte(c, a + i * 4096));
    }
    expect(Array.from(await m.mm.read(t, a, 2))).toEqual([1, 2]);
  });

  it("-EBUSY when an invalidation ran between read_begin and the walk", async () => {
    const m = boot({ ramMiB: [32] });
    const t = m.mm.spawn();
    const a = t.mm.mmap(0, 4 * 4096, RW, PRIV);
    const r = range(t, a, 4);
    t.mm.munmap(a + 3 * 4096, 4096);
    expect(await hmm(m, r)).toBe(-16);
    r.notifierSeq = mmuIntervalReadBegin(r.notifier);
    expect(await hmm(m, r)).toBe(0);
    expect(r.hmmPfns[3]).toBe(HMM_PFN.ERROR);
  });

  it("first-touch faults during the walk invalidate nothing: one pass, result 0", async () => {
    const m = boot({ ramMiB: [32], thp: "never" });
    const t = m.mm.spawn();
    const a = t.mm.mmap(0, 8 * 4096, RW, PRIV);
    const events: number[] = [];
    const r = range(t, a, 8, HMM_PFN.REQ_FAULT | HMM_PFN.REQ_WRITE, events);
    expect(await hmm(m, r)).toBe(0);
    expect(events).toEqual([]);
    expect(t.mm.rssAnon).toBe(8);
    expect(mmuIntervalReadRetry(r.notifier, r.notifierSeq)).toBe(false);
  });

  it("rejects misuse with EINVAL naming the field", async () => {
    const m = boot({ ramMiB: [32] });
    const t = m.mm.spawn();
    const a = t.mm.mmap(0, 4 * 4096, RW, PRIV);
    const r = range(t, a, 4);
    await expect(hmmRangeFault(m.mm, { ...r, start: a + 1 })).rejects.toMatchObject({ code: "EINVAL", arg: "range.start" });
    await expect(hmmRangeFault(m.mm, { ...r, end: a })).rejects.toMatchObject({ code: "EINVAL", arg: "range.end" });
    await expect(hmmRangeFault(m.mm, { ...r, hmmPfns: new Float64Array(3) })).rejects.toMatchObject({
      code: "EINVAL",
      arg: "range.hmmPfns",
    });
  });
});
