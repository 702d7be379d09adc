import { describe, expect, it } from "vitest";
import { useLeakGuard } from "../../../test/leak-guard";
import { GFP } from "../../phys/page-alloc";
import { PG } from "../../phys/page-state";
import { ERRNO } from "../../sim/errors";
import type { Mm } from "../mm";
import { MADV_COLLAPSE, MADV_HUGEPAGE, MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED, type MmapFile, VM, type Vma } from "../vma";
import { free, MiB, mapping, PRIV, RW, rejection, thrown } from "./helpers";

const boot = useLeakGuard();

/** A driver file like dmirror's: its mmap inserts a zeroed page at each of `pages` (page offsets). */
function driverFile(m: ReturnType<typeof boot>, pages?: number[]): MmapFile & { inserted: number[] } {
  const inserted: number[] = [];
  return {
    inserted,
    mmap(mm: Mm, vma: Vma): number {
      const n = (vma.end - vma.start) / 4096;
      for (const i of pages ?? Array.from({ length: n }, (_, k) => k)) {
        const page = m.alloc.allocPages(0, GFP.ZERO);
        if (page < 0) return -ERRNO.ENOMEM;
        const r = mm.vmInsertPage(vma, vma.start + i * 4096, page);
        m.mm.refs.putPage(page);
        if (r) return r;
        inserted.push(page);
      }
      return 0;
    },
  };
}

describe("vm_insert_page driver mappings", () => {
  it("maps the driver's pages read-only in a VM_MIXEDMAP VMA; the mapping holds the only reference", async () => {
    const m = boot({ ramMiB: [32] });
    const t = m.mm.spawn();
    const f0 = free(m);
    const file = driverFile(m);
    const p = t.mm.mmap(0, 3 * 4096, RW, MAP_PRIVATE, file);
    const vma = t.mm.findVma(p) as Vma;
    expect(vma.flags & VM.MIXEDMAP).toBe(VM.MIXEDMAP);
    expect(vma.file).toBe(file);
    expect(free(m)).toBe(f0 - 3);
    expect(t.mm.rssFile).toBe(3);
    expect(t.mm.rssAnon).toBe(0);
    for (let i = 0; i < 3; i++) {
      const pfn = file.inserted[i] as number;
      expect(mapping(t, p + i * 4096)).toEqual({ pfn, present: true, write: false, huge: false });
      expect(m.pages.refcount[pfn]).toBe(1);
      expect(m.pages.mapcount[pfn]).toBe(1);
      expect((m.pages.flags[pfn] as number) & (PG.anon | PG.lru)).toBe(0);
    }
    expect(Array.from(await m.mm.read(t, p, 8))).toEqual([0, 0, 0, 0, 0, 0, 0, 0]);
    t.mm.munmap(p, 3 * 4096);
    expect(free(m)).toBe(f0);
    expect(t.mm.rssFile).toBe(0);
    m.mm.exit(t);
  });

  it("copies a page on the first write (COW) and frees the driver's page", async () => {
    const m = boot({ ramMiB: [32] });
    const t = m.mm.spawn();
    const file = driverFile(m);
    const p = t.mm.mmap(0, 4096, RW, MAP_PRIVATE, file);
    const old = file.inserted[0] as number;
    const f0 = free(m);
    await m.mm.write(t, p, new Uint8Array([1, 2, 3]));
    const now = mapping(t, p);
    expect(now?.pfn).not.toBe(old);
    expect(now?.write).toBe(true);
    expect((m.pages.flags[now?.pfn ?? 0] as number) & PG.anon).toBe(PG.anon);
    expect(Array.from(await m.mm.read(t, p, 4))).toEqual([1, 2, 3, 0]);
    // The driver's page lost its only mapping and reference; the anonymous copy replaced it.
    expect(m.pages.refcount[old]).toBe(0);
    expect(free(m)).toBe(f0);
    expect([t.mm.rssFile, t.mm.rssAnon]).toEqual([0, 1]);
    m.mm.exit(t);
  });

  it("gives SIGBUS (EFAULT) where the driver inserted nothing: there is no ->fault", async () => {
    const m = boot({ ramMiB: [32] });
    const t = m.mm.spawn();
    const p = t.mm.mmap(0, 2 * 4096, RW, MAP_PRIVATE, driverFile(m, [0]));
    expect(Array.from(await m.mm.read(t, p, 2))).toEqual([0, 0]);
    const e = await rejection(m.mm.read(t, p + 4096, 1));
    expect(e.code).toBe("EFAULT");
    expect(e.message).toContain("SIGBUS");
    expect(mapping(t, p + 4096)).toBeUndefined();
    m.mm.exit(t);
  });

  it("fork shares the driver's pages; each side's write copies; exit frees everything", async () => {
    const m = boot({ ramMiB: [32] });
    const f0 = free(m);
    const t = m.mm.spawn();
    const file = driverFile(m);
    const p = t.mm.mmap(0, 2 * 4096, RW, MAP_PRIVATE, file);
    const c = m.mm.fork(t);
    const pg = file.inserted[0] as number;
    expect([m.pages.refcount[pg], m.pages.mapcount[pg]]).toEqual([2, 2]);
    expect(c.mm.rssFile).toBe(2);
    expect(c.mm.findVma(p)?.file).toBe(file);
    await m.mm.write(c, p, new Uint8Array([9]));
    expect(Array.from(await m.mm.read(c, p, 1))).toEqual([9]);
    expect(Array.from(await m.mm.read(t, p, 1))).toEqual([0]);
    expect([m.pages.refcount[pg], m.pages.mapcount[pg]]).toEqual([1, 1]);
    expect([c.mm.rssFile, c.mm.rssAnon]).toEqual([1, 1]);
    m.mm.exit(c);
    m.mm.exit(t);
    expect(free(m)).toBe(f0);
  });

  it("keeps driver VMAs out of THP: no huge fault, no MADV_COLLAPSE", () => {
    const m = boot({ ramMiB: [32], thp: "always" });
    const t = m.mm.spawn();
    const p = t.mm.mmap(0, 2 * MiB, RW, MAP_PRIVATE, driverFile(m, [0]));
    t.mm.madvise(p, 2 * MiB, MADV_HUGEPAGE);
    expect(m.mm.huge.eligible(t.mm.findVma(p) as Vma, p)).toBe(false);
    expect(thrown(() => t.mm.madvise(p, 2 * MiB, MADV_COLLAPSE)).code).toBe("EINVAL");
    m.mm.exit(t);
  });

  it("rejects bad input with EINVAL naming the argument and leaves nothing mapped", () => {
    const m = boot({ ramMiB: [32] });
    const t = m.mm.spawn();
    const f0 = free(m);
    const file = driverFile(m);
    expect(thrown(() => t.mm.mmap(0, 4096, RW, MAP_PRIVATE | MAP_ANONYMOUS, file))).toMatchObject({ code: "EINVAL", arg: "flags" });
    expect(thrown(() => t.mm.mmap(0, 4096, RW, MAP_SHARED, file))).toMatchObject({ code: "EINVAL", arg: "flags" });
    expect(thrown(() => t.mm.mmap(0, 4096, RW, MAP_PRIVATE))).toMatchObject({ code: "EINVAL", arg: "flags" });
    expect(thrown(() => t.mm.mmap(0, 4096, RW, MAP_PRIVATE, {} as MmapFile))).toMatchObject({ code: "EINVAL", arg: "file" });
    // A failing mmap handler: the errno comes back and what it inserted is unmapped and freed.
    const failing: MmapFile = {
      mmap: (mm, vma) => {
        driverFile(m, [0]).mmap(mm, vma);
        return -ERRNO.ENOMEM;
      },
    };
    expect(thrown(() => t.mm.mmap(0, 2 * 4096, RW, MAP_PRIVATE, failing))).toMatchObject({ code: "ENOMEM", arg: "file" });
    expect(t.mm.vmas.length).toBe(0);
    expect(free(m)).toBe(f0);
    // vm_insert_page itself.
    const p = t.mm.mmap(0, 2 * 4096, RW, MAP_PRIVATE, driverFile(m, [0]));
    const vma = t.mm.findVma(p) as Vma;
    const page = m.alloc.allocPages(0, GFP.ZERO);
    expect(t.mm.vmInsertPage(vma, p, page)).toBe(-ERRNO.EBUSY);
    expect(thrown(() => t.mm.vmInsertPage(vma, p + 2 * 4096, page))).toMatchObject({ code: "EINVAL", arg: "addr" });
    expect(thrown(() => t.mm.vmInsertPage(vma, p + 100, page))).toMatchObject({ code: "EINVAL", arg: "addr" });
    const anon = t.mm.mmap(0, 4096, RW, PRIV);
    expect(thrown(() => t.mm.vmInsertPage(t.mm.findVma(anon) as Vma, anon, page))).toMatchObject({ code: "EINVAL", arg: "vma" });
    m.pages.flags[page] = (m.pages.flags[page] as number) | PG.anon;
    expect(thrown(() => t.mm.vmInsertPage(vma, p + 4096, page))).toMatchObject({ code: "EINVAL", arg: "pfn" });
    m.pages.flags[page] = (m.pages.flags[page] as number) & ~PG.anon;
    m.mm.refs.putPage(page);
    expect(thrown(() => t.mm.vmInsertPage(vma, p + 4096, page))).toMatchObject({ code: "EINVAL", arg: "pfn" });
    expect(mapping(t, p + 4096)).toBeUndefined();
    m.mm.exit(t);
    expect(free(m)).toBe(f0);
  });
});
