import { describe, expect, it } from "vitest";
import { useLeakGuard } from "../../../test/leak-guard";
import { PG } from "../../phys/page-state";
import { MAP_PRIVATE, MAP_SHARED, PROT_READ, VM } from "../vma";
import { free, mapping, RW, rejection, thrown } from "./helpers";

const boot = useLeakGuard();
const PAGE = 4096;

function ints(n: number, f: (i: number) => number): Uint8Array {
  const a = new Int32Array(n);
  for (let i = 0; i < n; i++) a[i] = f(i);
  return new Uint8Array(a.buffer);
}

describe("tmpfs files (ShmemFile)", () => {
  it("pwrite/pread round-trip; holes read as zeros; reads stop at the end; writes extend", () => {
    const m = boot({ ramMiB: [32] });
    const f = m.mm.shmemFileSetup(3 * PAGE);
    expect(f.pwrite(new Uint8Array([1, 2, 3]), PAGE - 1)).toBe(3);
    expect(f.shmem.pages.size).toBe(2);
    const out = new Uint8Array(PAGE + 4).fill(9);
    expect(f.pread(out, PAGE - 2)).toBe(PAGE + 4);
    expect(Array.from(out.subarray(0, 6))).toEqual([0, 1, 2, 3, 0, 0]);
    // Page 2 was never written: a hole, zeros, no page allocated by the read.
    expect(f.shmem.pages.size).toBe(2);
    expect(f.pread(new Uint8Array(10), 3 * PAGE - 4)).toBe(4);
    expect(f.pread(new Uint8Array(10), 3 * PAGE)).toBe(0);
    f.pwrite(new Uint8Array([7]), 5 * PAGE);
    expect(f.size).toBe(5 * PAGE + 1);
    const one = new Uint8Array(1);
    expect(f.pread(one, 5 * PAGE)).toBe(1);
    expect(one[0]).toBe(7);
    f.close();
    expect(thrown(() => f.pread(one, 0)).code).toBe("EBADF");
    expect(thrown(() => m.mm.shmemFileSetup(-1))).toMatchObject({ code: "EINVAL", arg: "size" });
  });

  it("a shared mapping is the page cache: CPU writes reach pread, pwrite reaches the CPU", async () => {
    const m = boot({ ramMiB: [32] });
    const t = m.mm.spawn();
    const f0 = free(m);
    const f = m.mm.shmemFileSetup(4 * PAGE);
    f.pwrite(
      ints(PAGE, (i) => i),
      0,
    );
    const p = t.mm.mmap(0, 4 * PAGE, RW, MAP_SHARED, f);
    expect(t.mm.findVma(p)?.shared).toBe(true);
    expect(Array.from(new Int32Array((await m.mm.read(t, p + 8, 8)).buffer))).toEqual([2, 3]);
    const pfn = f.shmem.pages.get(0) as number;
    expect(mapping(t, p)?.pfn).toBe(pfn);
    // page cache + one mapping
    expect([m.pages.refcount[pfn], m.pages.mapcount[pfn]]).toEqual([2, 1]);
    await m.mm.write(t, p + 2 * PAGE, new Uint8Array([5, 6]));
    const back = new Uint8Array(2);
    f.pread(back, 2 * PAGE);
    expect(Array.from(back)).toEqual([5, 6]);
    f.pwrite(new Uint8Array([42]), 3 * PAGE);
    expect((await m.mm.read(t, p + 3 * PAGE, 1))[0]).toBe(42);
    // Closing the file keeps the pages while mapped; unmapping frees them.
    f.close();
    expect((await m.mm.read(t, p + 2 * PAGE, 1))[0]).toBe(5);
    t.mm.munmap(p, 4 * PAGE);
    expect(free(m)).toBe(f0);
    m.mm.exit(t);
  });

  it("a private mapping maps cached pages read-only and copies on write; the file never sees it", async () => {
    const m = boot({ ramMiB: [32] });
    const t = m.mm.spawn();
    const f = m.mm.shmemFileSetup(2 * PAGE);
    f.pwrite(new Uint8Array([1, 1, 1, 1]), 0);
    const p = t.mm.mmap(0, 2 * PAGE, RW, MAP_PRIVATE, f);
    const vma = t.mm.findVma(p);
    expect(vma?.shared).toBe(false);
    expect((vma?.flags ?? 0) & VM.MIXEDMAP).toBe(0);
    expect((await m.mm.read(t, p, 1))[0]).toBe(1);
    const cached = f.shmem.pages.get(0) as number;
    expect(mapping(t, p)).toEqual({ pfn: cached, present: true, write: false, huge: false });
    expect(t.mm.rssFile).toBe(1);
    await m.mm.write(t, p, new Uint8Array([8]));
    const priv = mapping(t, p);
    expect(priv?.pfn).not.toBe(cached);
    expect((m.pages.flags[priv?.pfn ?? 0] as number) & PG.anon).toBe(PG.anon);
    expect([t.mm.rssFile, t.mm.rssAnon]).toEqual([0, 1]);
    expect(Array.from(await m.mm.read(t, p, 2))).toEqual([8, 1]);
    const b = new Uint8Array(1);
    f.pread(b, 0);
    expect(b[0]).toBe(1);
    // A write fault on a hole copies at once (the cache page is allocated, zero, and stays clean).
    await m.mm.write(t, p + PAGE, new Uint8Array([3]));
    expect(f.shmem.pages.has(1)).toBe(true);
    f.pread(b, PAGE);
    expect(b[0]).toBe(0);
    expect(m.pages.mapcount[f.shmem.pages.get(1) as number]).toBe(0);
    m.mm.exit(t);
    f.close();
  });

  it("faults beyond the end of the file are SIGBUS (EFAULT), shared or private", async () => {
    const m = boot({ ramMiB: [32] });
    const t = m.mm.spawn();
    const f = m.mm.shmemFileSetup(PAGE);
    const s = t.mm.mmap(0, 2 * PAGE, PROT_READ, MAP_SHARED, f);
    const p = t.mm.mmap(0, 2 * PAGE, RW, MAP_PRIVATE, f);
    expect((await m.mm.read(t, s, 1))[0]).toBe(0);
    for (const a of [s + PAGE, p + PAGE]) {
      const e = await rejection(m.mm.read(t, a, 1));
      expect(e.code).toBe("EFAULT");
      expect(e.message).toContain("SIGBUS");
    }
    m.mm.exit(t);
    f.close();
  });
});
