/**
 * Port of tools/testing/selftests/mm/hmm-tests.c against dmirror. Each test keeps the kernel
 * test's name and runs over both fixture variants (device-private and device-coherent), asserting
 * the kernel's exact return values, `cpages`, `faults` and data. Every test ends with the leak
 * guard (Ctx.teardown).
 *
 * anon_write_hugetlbfs and compound map MAP_HUGETLB memory from a one-page HugeTLB pool (the
 * machine's `hugepages` option, as the kselftest needs nr_hugepages set; 2 MiB is the default
 * huge page size here). The THP migration benchmark is packages/drivers/bench/migrate.bench.ts.
 * file_read, file_write and
 * migrate_file_private use a tmpfs file (`shmemFileSetup`, as hmm_create_file's O_TMPFILE in /tmp);
 * mixedmap maps the dmirror file itself (its mmap inserts pages with vmInsertPage, as
 * dmirror_fops_mmap does).
 */
import {
  entryPayload,
  FOLL,
  isHuge,
  isPresent,
  MADV_FREE,
  MADV_HUGEPAGE,
  MADV_NOHUGEPAGE,
  MAP_ANONYMOUS,
  MAP_HUGETLB,
  MAP_PRIVATE,
  MAP_SHARED,
  MIGRATE_VMA_SELECT,
  type MigrateVma,
  MREMAP_DONTUNMAP,
  MREMAP_FIXED,
  MREMAP_MAYMOVE,
  PAGE_SIZE,
  PROT_NONE,
  PROT_READ,
  PROT_WRITE,
  SWP,
  swpType,
  VM,
} from "@hmmkit/core";
import { describe, expect, it } from "vitest";
import {
  HMM_DMIRROR_CHECK_EXCLUSIVE,
  HMM_DMIRROR_EXCLUSIVE,
  HMM_DMIRROR_FLAG_FAIL_ALLOC,
  HMM_DMIRROR_FLAGS,
  HMM_DMIRROR_MIGRATE_TO_DEV,
  HMM_DMIRROR_MIGRATE_TO_SYS,
  HMM_DMIRROR_PROT_DEV_COHERENT_LOCAL,
  HMM_DMIRROR_PROT_DEV_COHERENT_REMOTE,
  HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL,
  HMM_DMIRROR_PROT_ERROR,
  HMM_DMIRROR_PROT_NONE,
  HMM_DMIRROR_PROT_PMD,
  HMM_DMIRROR_PROT_READ,
  HMM_DMIRROR_PROT_WRITE,
  HMM_DMIRROR_PROT_ZERO,
  HMM_DMIRROR_READ,
  HMM_DMIRROR_RELEASE,
  HMM_DMIRROR_SNAPSHOT,
  HMM_DMIRROR_WRITE,
} from "../../index";
import type { DmirrorFile } from "../test-hmm";
import {
  align,
  asInts,
  buffer,
  Ctx,
  expectInts,
  HMM_BUFFER_NPAGES,
  HMM_VARIANTS,
  HMM2_VARIANTS,
  type HmmBuffer,
  hmmDmirrorCmd,
  ints,
  NTIMES,
  TWOMEG,
} from "./fixture";

const EINVAL = -22;
const EFAULT = -14;
const EPERM = -1;
const ENOENT = -2;
const RW = PROT_READ | PROT_WRITE;
const PRIV = MAP_PRIVATE | MAP_ANONYMOUS;

function hmmMigrateSysToDev(fd: DmirrorFile, buf: HmmBuffer, npages: number): Promise<number> {
  return hmmDmirrorCmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf, npages);
}
function hmmMigrateDevToSys(fd: DmirrorFile, buf: HmmBuffer, npages: number): Promise<number> {
  return hmmDmirrorCmd(fd, HMM_DMIRROR_MIGRATE_TO_SYS, buf, npages);
}
/** hmm_buffer_free: munmap the mapping. */
function hmmBufferFree(ctx: Ctx, buf: HmmBuffer, t = ctx.t): void {
  if (buf.mapped && !t.exited) t.mm.munmap(buf.mapped, buf.size);
  buf.mapped = 0;
}
/** One int read by the CPU at `va`. */
async function cpuInt(ctx: Ctx, va: number, t = ctx.t): Promise<number> {
  return asInts(await ctx.read(va, 4, t))[0] as number;
}

describe.each(HMM_VARIANTS)("$name", (variant) => {
  const fixture = () => {
    const ctx = new Ctx();
    const fd = ctx.open(variant.deviceNumber);
    return { ctx, fd };
  };
  const npages = HMM_BUFFER_NPAGES;
  const size = npages * PAGE_SIZE;
  const nints = size / 4;

  it("open_close", () => {
    const { ctx } = fixture();
    ctx.teardown();
  });

  it("anon_read", async () => {
    const { ctx, fd } = fixture();
    const buf = buffer(ctx.mmap(size, RW, PRIV), size);
    // Leave the first two pages zero (pte_none and the zero page).
    const first = (2 * PAGE_SIZE) / 4;
    await ctx.write(
      buf.ptr + 2 * PAGE_SIZE,
      ints(nints - first, (i) => i + first),
    );
    ctx.t.mm.mprotect(buf.ptr, size, PROT_READ);
    expect(await cpuInt(ctx, buf.ptr + PAGE_SIZE)).toBe(0);
    expect(await hmmDmirrorCmd(fd, HMM_DMIRROR_READ, buf, npages)).toBe(0);
    expect(buf.cpages).toBe(npages);
    expect(buf.faults).toBe(1);
    expectInts(buf.mirror, () => 0, 0, first);
    expectInts(buf.mirror, (i) => i, first);
    hmmBufferFree(ctx, buf);
    ctx.teardown();
  });

  it("anon_read_prot", async () => {
    const { ctx, fd } = fixture();
    const buf = buffer(ctx.mmap(size, RW, PRIV), size);
    await ctx.write(
      buf.ptr,
      ints(nints, (i) => i),
    );
    buf.mirror.set(ints(nints, (i) => -i));
    ctx.t.mm.mprotect(buf.ptr, size, PROT_NONE);
    expect(await hmmDmirrorCmd(fd, HMM_DMIRROR_READ, buf, npages)).toBe(EFAULT);
    ctx.t.mm.mprotect(buf.ptr, size, PROT_READ);
    expectInts(await ctx.read(buf.ptr, size), (i) => i);
    expectInts(buf.mirror, (i) => -i);
    hmmBufferFree(ctx, buf);
    ctx.teardown();
  });

  it("anon_write", async () => {
    const { ctx, fd } = fixture();
    const buf = buffer(ctx.mmap(size, RW, PRIV), size);
    buf.mirror.set(ints(nints, (i) => i));
    expect(await hmmDmirrorCmd(fd, HMM_DMIRROR_WRITE, buf, npages)).toBe(0);
    expect(buf.cpages).toBe(npages);
    expect(buf.faults).toBe(1);
    expectInts(await ctx.read(buf.ptr, size), (i) => i);
    hmmBufferFree(ctx, buf);
    ctx.teardown();
  });

  it("anon_write_prot", async () => {
    const { ctx, fd } = fixture();
    const buf = buffer(ctx.mmap(size, PROT_READ, PRIV), size);
    expect(await hmmDmirrorCmd(fd, HMM_DMIRROR_READ, buf, 1)).toBe(0);
    expect(buf.cpages).toBe(1);
    expect(buf.faults).toBe(1);
    buf.mirror.set(ints(nints, (i) => i));
    expect(await hmmDmirrorCmd(fd, HMM_DMIRROR_WRITE, buf, npages)).toBe(EPERM);
    expectInts(await ctx.read(buf.ptr, size), () => 0);
    ctx.t.mm.mprotect(buf.ptr, size, RW);
    expect(await hmmDmirrorCmd(fd, HMM_DMIRROR_WRITE, buf, npages)).toBe(0);
    expect(buf.cpages).toBe(npages);
    expect(buf.faults).toBe(1);
    expectInts(await ctx.read(buf.ptr, size), (i) => i);
    hmmBufferFree(ctx, buf);
    ctx.teardown();
  });

  it("anon_write_child", async () => {
    const { ctx, fd } = fixture();
    for (let migrate = 0; migrate < 2; ++migrate) {
      for (let useThp = 0; useThp < 2; ++useThp) {
        const np = useThp ? TWOMEG / PAGE_SIZE : npages;
        const sz = np * PAGE_SIZE;
        const n = sz / 4;
        const oldPtr = ctx.mmap(sz * 2, RW, PRIV);
        const buf = buffer(oldPtr, sz * 2, sz);
        if (useThp) {
          buf.ptr = align(oldPtr, sz);
          ctx.t.mm.madvise(buf.ptr, sz, MADV_HUGEPAGE);
        }
        await ctx.write(
          buf.ptr,
          ints(n, (i) => i),
        );
        buf.mirror.set(ints(n, (i) => -i));
        if (migrate) {
          expect(await hmmMigrateSysToDev(fd, buf, np)).toBe(0);
          expect(buf.cpages).toBe(np);
        }
        const child = ctx.fork(ctx.t);
        // Child: sees the parent's values.
        expectInts(await ctx.read(buf.ptr, sz, child), (i) => i);
        if (!migrate) expectInts(buf.mirror, (i) => -i);
        // The child needs its own mirror of its own mm.
        const childFd = ctx.open(0, child);
        expect(await hmmDmirrorCmd(childFd, HMM_DMIRROR_WRITE, buf, np)).toBe(0);
        expect(buf.cpages).toBe(np);
        expect(buf.faults).toBe(1);
        if (!migrate) expectInts(await ctx.read(buf.ptr, sz, child), (i) => -i);
        childFd.close();
        ctx.m.mm.exit(child);
        // Parent: its buffer did not change.
        expectInts(await ctx.read(buf.ptr, sz), (i) => i);
        hmmBufferFree(ctx, buf);
      }
    }
    ctx.teardown();
  });

  it("anon_write_child_shared", async () => {
    const { ctx } = fixture();
    const buf = buffer(ctx.mmap(size, RW, MAP_SHARED | MAP_ANONYMOUS), size);
    await ctx.write(
      buf.ptr,
      ints(nints, (i) => i),
    );
    buf.mirror.set(ints(nints, (i) => -i));
    const child = ctx.fork(ctx.t);
    expectInts(await ctx.read(buf.ptr, size, child), (i) => i);
    expectInts(buf.mirror, (i) => -i);
    const childFd = ctx.open(0, child);
    expect(await hmmDmirrorCmd(childFd, HMM_DMIRROR_WRITE, buf, npages)).toBe(0);
    expect(buf.cpages).toBe(npages);
    expect(buf.faults).toBe(1);
    expectInts(await ctx.read(buf.ptr, size, child), (i) => -i);
    childFd.close();
    ctx.m.mm.exit(child);
    // The parent's buffer did change: no COW on shared memory.
    expectInts(await ctx.read(buf.ptr, size), (i) => -i);
    hmmBufferFree(ctx, buf);
    ctx.teardown();
  });

  it("anon_write_huge", async () => {
    const { ctx, fd } = fixture();
    const oldPtr = ctx.mmap(2 * TWOMEG, RW, PRIV);
    const buf = buffer(oldPtr, 2 * TWOMEG, TWOMEG);
    const np = TWOMEG / PAGE_SIZE;
    buf.ptr = align(oldPtr, TWOMEG);
    ctx.t.mm.madvise(buf.ptr, TWOMEG, MADV_HUGEPAGE);
    buf.mirror.set(ints(TWOMEG / 4, (i) => i));
    expect(await hmmDmirrorCmd(fd, HMM_DMIRROR_WRITE, buf, np)).toBe(0);
    expect(buf.cpages).toBe(np);
    expect(buf.faults).toBe(1);
    expectInts(await ctx.read(buf.ptr, TWOMEG), (i) => i);
    expect(isHuge(ctx.t.mm.pt.getPmd(buf.ptr))).toBe(true);
    hmmBufferFree(ctx, buf);
    ctx.teardown();
  });

  it("anon_write_hugetlbfs", async () => {
    const ctx = new Ctx({ hugepages: 1 });
    const fd = ctx.open(variant.deviceNumber);
    // The default huge page size (Hugepagesize in /proc/meminfo) is 2 MiB here.
    const hsize = TWOMEG;
    const size = align(TWOMEG, hsize);
    const np = size / PAGE_SIZE;
    const buf = buffer(ctx.mmap(size, RW, PRIV | MAP_HUGETLB), size);
    buf.mirror.set(ints(size / 4, (i) => i));
    expect(await hmmDmirrorCmd(fd, HMM_DMIRROR_WRITE, buf, np)).toBe(0);
    expect(buf.cpages).toBe(np);
    expect(buf.faults).toBe(1);
    expectInts(await ctx.read(buf.ptr, size), (i) => i);
    expect(ctx.t.mm.hugetlbUsage).toBe(np);
    // migrate_vma refuses hugetlb VMAs: the pages stay where they are.
    expect(await hmmMigrateSysToDev(fd, buf, np)).toBe(EINVAL);
    expect(ctx.t.mm.rssDevice).toBe(0);
    hmmBufferFree(ctx, buf);
    expect(ctx.m.mm.hugetlb.freeHugepages).toBe(1);
    ctx.teardown();
  });

  it("compound", async () => {
    const ctx = new Ctx({ hugepages: 1 });
    const fd = ctx.open(variant.deviceNumber);
    const size = align(TWOMEG, TWOMEG);
    const np = size / PAGE_SIZE;
    const buf = buffer(ctx.mmap(size, RW, PRIV | MAP_HUGETLB), size, np);
    await ctx.write(
      buf.ptr,
      ints(size / 4, (i) => i),
    );
    expect(await hmmDmirrorCmd(fd, HMM_DMIRROR_SNAPSHOT, buf, np)).toBe(0);
    expect(buf.cpages).toBe(np);
    // A 2 MiB default huge page is mapped by a PMD (a 1 GiB one would report HMM_DMIRROR_PROT_PUD).
    for (let i = 0; i < np; i++) expect(buf.mirror[i], `page ${i}`).toBe(HMM_DMIRROR_PROT_WRITE | HMM_DMIRROR_PROT_PMD);
    ctx.t.mm.mprotect(buf.ptr, size, PROT_READ);
    expect(await hmmDmirrorCmd(fd, HMM_DMIRROR_SNAPSHOT, buf, np)).toBe(0);
    expect(buf.cpages).toBe(np);
    for (let i = 0; i < np; i++) expect(buf.mirror[i], `page ${i}`).toBe(HMM_DMIRROR_PROT_READ | HMM_DMIRROR_PROT_PMD);
    hmmBufferFree(ctx, buf);
    ctx.teardown();
  });

  it("migrate", async () => {
    const { ctx, fd } = fixture();
    const buf = buffer(ctx.mmap(size, RW, PRIV), size);
    await ctx.write(
      buf.ptr,
      ints(nints, (i) => i),
    );
    expect(await hmmMigrateSysToDev(fd, buf, npages)).toBe(0);
    expect(buf.cpages).toBe(npages);
    expectInts(buf.mirror, (i) => i);
    expect(ctx.t.mm.rssDevice).toBe(variant.coherent ? 0 : npages);
    hmmBufferFree(ctx, buf);
    ctx.teardown();
  });

  it("file_read", async () => {
    const { ctx, fd } = fixture();
    // hmm_create_file: an O_TMPFILE in /tmp (tmpfs) truncated to size.
    const file = ctx.m.mm.shmemFileSetup(size);
    expect(
      file.pwrite(
        ints(nints, (i) => i),
        0,
      ),
    ).toBe(size);
    const buf = buffer(ctx.t.mm.mmap(0, size, PROT_READ, MAP_SHARED, file), size);
    expect(await hmmDmirrorCmd(fd, HMM_DMIRROR_READ, buf, npages)).toBe(0);
    expect(buf.cpages).toBe(npages);
    expect(buf.faults).toBe(1);
    expectInts(buf.mirror, (i) => i);
    hmmBufferFree(ctx, buf);
    file.close();
    ctx.teardown();
  });

  it("file_write", async () => {
    const { ctx, fd } = fixture();
    const file = ctx.m.mm.shmemFileSetup(size);
    const buf = buffer(ctx.t.mm.mmap(0, size, RW, MAP_SHARED, file), size);
    buf.mirror = ints(nints, (i) => i);
    expect(await hmmDmirrorCmd(fd, HMM_DMIRROR_WRITE, buf, npages)).toBe(0);
    expect(buf.cpages).toBe(npages);
    expect(buf.faults).toBe(1);
    expectInts(await ctx.read(buf.ptr, size), (i) => i);
    // The device also wrote the file.
    const back = new Uint8Array(size);
    expect(file.pread(back, 0)).toBe(size);
    expectInts(back, (i) => i);
    hmmBufferFree(ctx, buf);
    file.close();
    ctx.teardown();
  });

  it("migrate_file_private", async () => {
    const { ctx, fd } = fixture();
    const file = ctx.m.mm.shmemFileSetup(size);
    const buf = buffer(ctx.t.mm.mmap(0, size, RW, MAP_PRIVATE, file), size);
    // Writing a private file mapping gives every page an anonymous copy, which can migrate.
    await ctx.write(
      buf.ptr,
      ints(nints, (i) => i),
    );
    expect(await hmmMigrateSysToDev(fd, buf, npages)).toBe(0);
    expect(buf.cpages).toBe(npages);
    expectInts(buf.mirror, (i) => i);
    // The file itself was never written.
    const back = new Uint8Array(size);
    file.pread(back, 0);
    expectInts(back, () => 0);
    hmmBufferFree(ctx, buf);
    file.close();
    ctx.teardown();
  });

  it("migrate_fault", async () => {
    const { ctx, fd } = fixture();
    const buf = buffer(ctx.mmap(size, RW, PRIV), size);
    await ctx.write(
      buf.ptr,
      ints(nints, (i) => i),
    );
    expect(await hmmMigrateSysToDev(fd, buf, npages)).toBe(0);
    expect(buf.cpages).toBe(npages);
    expectInts(buf.mirror, (i) => i);
    // Fault half the pages back to system memory and check them.
    expectInts(await ctx.read(buf.ptr, size / 2), (i) => i);
    expect(ctx.t.mm.rssDevice).toBe(variant.coherent ? 0 : npages / 2);
    // Migrate the mix of system and device pages to the device again.
    buf.mirror.fill(0);
    expect(await hmmMigrateSysToDev(fd, buf, npages)).toBe(0);
    expect(buf.cpages).toBe(npages);
    expectInts(buf.mirror, (i) => i);
    hmmBufferFree(ctx, buf);
    ctx.teardown();
  });

  it("migrate_release", async () => {
    const { ctx, fd } = fixture();
    const buf = buffer(ctx.mmap(size, RW, PRIV), size);
    await ctx.write(
      buf.ptr,
      ints(nints, (i) => i),
    );
    expect(await hmmMigrateSysToDev(fd, buf, npages)).toBe(0);
    expect(buf.cpages).toBe(npages);
    expectInts(buf.mirror, (i) => i);
    expect(await hmmDmirrorCmd(fd, HMM_DMIRROR_RELEASE, buf, npages)).toBe(0);
    expect(fd.mdevice.chunks.length).toBe(0);
    expect(ctx.t.mm.rssDevice).toBe(0);
    expectInts(await ctx.read(buf.ptr, size / 2), (i) => i);
    hmmBufferFree(ctx, buf);
    ctx.teardown();
  });

  it("migrate_shared", async () => {
    const { ctx, fd } = fixture();
    const buf = buffer(ctx.mmap(size, RW, MAP_SHARED | MAP_ANONYMOUS), size);
    expect(await hmmMigrateSysToDev(fd, buf, npages)).toBe(ENOENT);
    hmmBufferFree(ctx, buf);
    ctx.teardown();
  });

  it("migrate_multiple", async () => {
    const { ctx, fd } = fixture();
    for (let c = 0; c < NTIMES; c++) {
      const buf = buffer(ctx.mmap(size, RW, PRIV), size);
      await ctx.write(
        buf.ptr,
        ints(nints, (i) => i),
      );
      expect(await hmmMigrateSysToDev(fd, buf, npages)).toBe(0);
      expect(buf.cpages).toBe(npages);
      expectInts(buf.mirror, (i) => i);
      // Coherent memory is CPU-accessible (no fault): migrate it back explicitly.
      if (variant.coherent) {
        expect(await hmmMigrateDevToSys(fd, buf, npages)).toBe(0);
        expect(buf.cpages).toBe(npages);
      }
      expectInts(await ctx.read(buf.ptr, size), (i) => i);
      expect(ctx.t.mm.rssDevice).toBe(0);
      hmmBufferFree(ctx, buf);
    }
    ctx.teardown();
  });

  it("anon_read_multiple", async () => {
    const { ctx, fd } = fixture();
    for (let c = 0; c < NTIMES; c++) {
      const buf = buffer(ctx.mmap(size, RW, PRIV), size);
      await ctx.write(
        buf.ptr,
        ints(nints, (i) => i + c),
      );
      expect(await hmmDmirrorCmd(fd, HMM_DMIRROR_READ, buf, npages)).toBe(0);
      expect(buf.cpages).toBe(npages);
      expect(buf.faults).toBe(1);
      expectInts(buf.mirror, (i) => i + c);
      hmmBufferFree(ctx, buf);
    }
    ctx.teardown();
  });

  it("anon_teardown", async () => {
    const { ctx, fd } = fixture();
    let completed = 0;
    let failed = 0;
    for (let c = 0; c < NTIMES; ++c) {
      const buf = buffer(ctx.mmap(size, RW, PRIV), size);
      await ctx.write(
        buf.ptr,
        ints(nints, (i) => i + c),
      );
      // The "thread": after a number of scheduling points, unmap the second half while the
      // device reads (odd rounds wait long enough for the read to finish first).
      const delay = c % 2 ? 100_000 : (c * 53 + 7) % 400;
      const unmapper = (async () => {
        for (let k = 0; k < delay; k++) await Promise.resolve();
        ctx.t.mm.munmap(buf.ptr + size / 2, size / 2);
      })();
      const rc = await hmmDmirrorCmd(fd, HMM_DMIRROR_READ, buf, npages);
      await unmapper;
      if (rc === 0) {
        completed++;
        expect(buf.cpages).toBe(npages);
        expect(buf.faults).toBe(1);
        expectInts(buf.mirror, (i) => i + c);
      } else {
        failed++;
        expect(rc).toBe(EFAULT);
      }
      ctx.t.mm.munmap(buf.ptr, size / 2);
    }
    // The schedule above makes both outcomes happen.
    expect(completed).toBeGreaterThan(0);
    expect(failed).toBeGreaterThan(0);
    ctx.teardown();
  });

  it("mixedmap", async () => {
    const { ctx, fd } = fixture();
    const np = 1;
    const sz = np * PAGE_SIZE;
    const free0 = ctx.m.alloc.nrFreePages;
    // mmap of the device file: dmirror_fops_mmap inserts a zeroed page (VM_MIXEDMAP).
    const p = ctx.t.mm.mmap(0, sz, RW, MAP_PRIVATE, fd);
    const vma = ctx.t.mm.findVma(p);
    expect((vma?.flags ?? 0) & VM.MIXEDMAP).toBe(VM.MIXEDMAP);
    expect(ctx.m.alloc.nrFreePages).toBe(free0 - 1);
    expect(ctx.t.mm.rssFile).toBe(1);
    const buf = buffer(p, sz, np);
    expect(await hmmDmirrorCmd(fd, HMM_DMIRROR_SNAPSHOT, buf, np)).toBe(0);
    expect(buf.cpages).toBe(np);
    // A private mapping of the file: the inserted page is mapped read-only.
    expect(buf.mirror[0]).toBe(HMM_DMIRROR_PROT_READ);
    // Beyond the selftest: it reads as zeros, migrate_vma refuses the VMA, and a CPU write
    // copies the page into an anonymous one (the driver's page is freed).
    expect(await cpuInt(ctx, p)).toBe(0);
    expect(await hmmMigrateSysToDev(fd, buf, np)).toBe(EINVAL);
    await ctx.write(
      p,
      ints(1, () => 7),
    );
    expect(await cpuInt(ctx, p)).toBe(7);
    expect(ctx.t.mm.rssFile).toBe(0);
    expect(await hmmDmirrorCmd(fd, HMM_DMIRROR_SNAPSHOT, buf, np)).toBe(0);
    expect(buf.mirror[0]).toBe(HMM_DMIRROR_PROT_WRITE);
    ctx.t.mm.munmap(p, sz);
    expect(ctx.m.alloc.nrFreePages).toBe(free0);
    ctx.teardown();
  });

  it("hmm_cow_in_device", async () => {
    const { ctx, fd } = fixture();
    const np = 4;
    const sz = np * PAGE_SIZE;
    const buf = buffer(ctx.mmap(sz, RW, PRIV), sz);
    await ctx.write(
      buf.ptr,
      ints(sz / 4, (i) => i),
    );
    expect(await hmmMigrateSysToDev(fd, buf, np)).toBe(0);
    expect(buf.cpages).toBe(np);
    const child = ctx.fork(ctx.t);
    // The parent writes its COW pages: private pages migrate back first, coherent ones are copied.
    await ctx.write(
      buf.ptr,
      ints(sz / 4, (i) => i),
    );
    ctx.m.mm.exit(child);
    expect(await hmmDmirrorCmd(fd, HMM_DMIRROR_SNAPSHOT, buf, np)).toBe(0);
    expect(buf.cpages).toBe(np);
    expect(Array.from(buf.mirror.subarray(0, np))).toEqual(new Array(np).fill(HMM_DMIRROR_PROT_WRITE));
    hmmBufferFree(ctx, buf);
    ctx.teardown();
  });

  it("hmm_gup_test", async () => {
    const { ctx, fd } = fixture();
    const np = 4;
    const sz = np * PAGE_SIZE;
    const buf = buffer(ctx.mmap(sz, RW, PRIV), sz);
    await ctx.write(
      buf.ptr,
      ints(sz / 4, (i) => i),
    );
    expect(await hmmMigrateSysToDev(fd, buf, np)).toBe(0);
    expect(buf.cpages).toBe(np);
    // Pages 0 and 1: ordinary pins; pages 2 and 3: FOLL_LONGTERM pins (the kernel test uses the
    // gup_test ioctls GUP_BASIC, GUP_FAST, PIN_FAST|LONGTERM, PIN_LONGTERM; hmmkit has one pin API).
    const pinpage = ctx.m.mm.pinpage;
    const pfns = new Float64Array(np);
    for (let i = 0; i < np; i++) {
      const flags = FOLL.WRITE | (i >= 2 ? FOLL.LONGTERM : 0);
      expect(await pinpage.pinUserPages(ctx.t.mm, buf.ptr + i * PAGE_SIZE, 1, flags, pfns.subarray(i, i + 1))).toBe(1);
    }
    expect(await hmmDmirrorCmd(fd, HMM_DMIRROR_SNAPSHOT, buf, np)).toBe(0);
    expect(buf.cpages).toBe(np);
    const m = Array.from(buf.mirror.subarray(0, np));
    if (variant.coherent) {
      // Coherent memory may be pinned short-term in place; long-term pins move it to system memory.
      expect(m).toEqual([
        HMM_DMIRROR_PROT_DEV_COHERENT_LOCAL | HMM_DMIRROR_PROT_WRITE,
        HMM_DMIRROR_PROT_DEV_COHERENT_LOCAL | HMM_DMIRROR_PROT_WRITE,
        HMM_DMIRROR_PROT_WRITE,
        HMM_DMIRROR_PROT_WRITE,
      ]);
    } else {
      // Device-private pages can never be pinned: GUP faults them back to system memory first.
      expect(m).toEqual(new Array(np).fill(HMM_DMIRROR_PROT_WRITE));
    }
    expectInts(await ctx.read(buf.ptr, sz), (i) => i);
    pinpage.unpinUserPages(pfns, np);
    hmmBufferFree(ctx, buf);
    ctx.teardown();
  });

  /** The 2×size mapping with a PMD-aligned window of the THP tests. */
  function thpBuffer(ctx: Ctx, prot: number, advice?: number): HmmBuffer {
    const oldPtr = ctx.mmap(2 * TWOMEG, prot, PRIV);
    const buf = buffer(oldPtr, 2 * TWOMEG, TWOMEG);
    buf.mirror.fill(0xff);
    buf.ptr = align(oldPtr, TWOMEG);
    if (advice !== undefined) ctx.t.mm.madvise(buf.ptr, TWOMEG, advice);
    return buf;
  }
  const thpPages = TWOMEG / PAGE_SIZE;

  it("migrate_anon_huge_empty", async () => {
    const { ctx, fd } = fixture();
    const buf = thpBuffer(ctx, PROT_READ, MADV_HUGEPAGE);
    expect(await hmmMigrateSysToDev(fd, buf, thpPages)).toBe(0);
    expect(buf.cpages).toBe(thpPages);
    expectInts(buf.mirror, () => 0);
    hmmBufferFree(ctx, buf);
    ctx.teardown();
  });

  it("migrate_anon_huge_zero", async () => {
    const { ctx, fd } = fixture();
    const buf = thpBuffer(ctx, PROT_READ, MADV_HUGEPAGE);
    expect(await cpuInt(ctx, buf.ptr)).toBe(0);
    const pmd = ctx.t.mm.pt.getPmd(buf.ptr);
    expect(isHuge(pmd) && ctx.m.mm.huge.isHugeZeroPfn(entryPayload(pmd))).toBe(true);
    expect(await hmmMigrateSysToDev(fd, buf, thpPages)).toBe(0);
    expect(buf.cpages).toBe(thpPages);
    expectInts(buf.mirror, () => 0);
    expectInts(await ctx.read(buf.ptr, TWOMEG), () => 0);
    hmmBufferFree(ctx, buf);
    ctx.teardown();
  });

  it("migrate_anon_huge_free", async () => {
    const { ctx, fd } = fixture();
    const buf = thpBuffer(ctx, RW, MADV_HUGEPAGE);
    await ctx.write(
      buf.ptr,
      ints(TWOMEG / 4, (i) => i),
    );
    expect(await hmmMigrateSysToDev(fd, buf, thpPages)).toBe(0);
    expect(buf.cpages).toBe(thpPages);
    expectInts(buf.mirror, (i) => i);
    const allocated = fd.mdevice.allocatedPages;
    expect(allocated).toBe(thpPages);
    ctx.t.mm.madvise(buf.ptr, TWOMEG, MADV_FREE);
    expect(fd.mdevice.allocatedPages).toBe(0);
    hmmBufferFree(ctx, buf);
    ctx.teardown();
  });

  it("migrate_anon_huge_fault", async () => {
    const { ctx, fd } = fixture();
    // hmmkit has no MADV_COLLAPSE: a THP fault under MADV_HUGEPAGE gives the same PMD-mapped THP.
    const buf = thpBuffer(ctx, RW, MADV_HUGEPAGE);
    await ctx.write(
      buf.ptr,
      ints(TWOMEG / 4, (i) => i),
    );
    expect(isHuge(ctx.t.mm.pt.getPmd(buf.ptr))).toBe(true);
    expect(await hmmMigrateSysToDev(fd, buf, thpPages)).toBe(0);
    expect(buf.cpages).toBe(thpPages);
    expectInts(buf.mirror, (i) => i);
    if (!variant.coherent) {
      expect(await hmmDmirrorCmd(fd, HMM_DMIRROR_SNAPSHOT, buf, thpPages)).toBe(0);
      expect(buf.cpages).toBe(thpPages);
      const want = HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | HMM_DMIRROR_PROT_WRITE | HMM_DMIRROR_PROT_PMD;
      expect(buf.mirror.subarray(0, thpPages).every((b) => b === want)).toBe(true);
      // /proc/self/pagemap: a swap-type entry, not present (here: the PMD itself).
      const pmd = ctx.t.mm.pt.getPmd(buf.ptr);
      expect(isHuge(pmd)).toBe(true);
      expect(isPresent(pmd)).toBe(false);
      expect(swpType(pmd)).toBe(SWP.DEVICE_PRIVATE);
    }
    expectInts(await ctx.read(buf.ptr, TWOMEG), (i) => i);
    hmmBufferFree(ctx, buf);
    ctx.teardown();
  });

  it("migrate_partial_unmap_fault", async () => {
    const { ctx, fd } = fixture();
    const unmapSize = TWOMEG / 2;
    const offsets = [0, TWOMEG / 4, TWOMEG / 2];
    for (let useThp = 0; useThp < 2; ++useThp) {
      for (const off of offsets) {
        const buf = thpBuffer(ctx, RW, useThp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
        await ctx.write(
          buf.ptr,
          ints(TWOMEG / 4, (i) => i),
        );
        expect(await hmmMigrateSysToDev(fd, buf, thpPages)).toBe(0);
        expect(buf.cpages).toBe(thpPages);
        expectInts(buf.mirror, (i) => i);
        ctx.t.mm.munmap(buf.ptr + off, unmapSize);
        // Fault the surviving pages back and check them.
        if (off > 0) expectInts(await ctx.read(buf.ptr, off), (i) => i);
        if (off + unmapSize < TWOMEG) {
          const rest = await ctx.read(buf.ptr + off + unmapSize, TWOMEG - off - unmapSize);
          const base = (off + unmapSize) / 4;
          expectInts(rest, (i) => i + base);
        }
        hmmBufferFree(ctx, buf);
      }
    }
    ctx.teardown();
  });

  it("migrate_remap_fault", async () => {
    const { ctx, fd } = fixture();
    const ONEMEG = 1 << 20;
    const offsets = [0, 512 * 1024, ONEMEG];
    for (let before = 0; before < 2; ++before) {
      for (let dontUnmap = 0; dontUnmap < 2; ++dontUnmap) {
        for (let useThp = 0; useThp < 2; ++useThp) {
          for (const off of offsets) {
            const flags = MREMAP_MAYMOVE | MREMAP_FIXED | (dontUnmap ? MREMAP_DONTUNMAP : 0);
            const whole = ctx.mmap(8 * TWOMEG, RW, PRIV);
            const map = align(whole, TWOMEG);
            ctx.t.mm.madvise(map, TWOMEG, useThp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
            ctx.t.mm.munmap(map + TWOMEG, 2 * TWOMEG);
            const buf = buffer(map, TWOMEG);
            await ctx.write(
              map,
              ints(TWOMEG / 4, (i) => i),
            );
            let newPtr = map;
            if (before) {
              newPtr = ctx.t.mm.mremap(map, TWOMEG, TWOMEG, flags, map + TWOMEG + off);
              buf.ptr = newPtr;
            }
            expect(await hmmMigrateSysToDev(fd, buf, thpPages)).toBe(0);
            expect(buf.cpages).toBe(thpPages);
            expectInts(buf.mirror, (i) => i);
            if (!before) {
              newPtr = ctx.t.mm.mremap(map, TWOMEG, TWOMEG, flags, map + TWOMEG + off);
              buf.ptr = newPtr;
            }
            expect(newPtr).toBe(map + TWOMEG + off);
            // Fault the pages back to system memory at the new address and check them.
            expectInts(await ctx.read(newPtr, TWOMEG), (i) => i);
            ctx.t.mm.munmap(whole, 8 * TWOMEG);
            ctx.t.mm.munmap(newPtr, TWOMEG);
          }
        }
      }
    }
    ctx.teardown();
  });

  it("migrate_anon_huge_err", async () => {
    const { ctx, fd } = fixture();
    let buf = thpBuffer(ctx, RW, MADV_HUGEPAGE);
    buf.mirror = new Uint8Array(2 * TWOMEG).fill(0xff);
    await ctx.write(
      buf.ptr,
      ints(TWOMEG / 4, (i) => i),
    );
    // Migrate to the device but force a THP allocation error.
    expect(await hmmDmirrorCmd(fd, HMM_DMIRROR_FLAGS, buf, HMM_DMIRROR_FLAG_FAIL_ALLOC)).toBe(0);
    expect(await hmmMigrateSysToDev(fd, buf, thpPages)).toBe(0);
    expect(buf.cpages).toBe(thpPages);
    expectInts(buf.mirror, (i) => i, 0, TWOMEG / 4);
    // Fault back a single (PAGE_SIZE) page.
    expect(await cpuInt(ctx, buf.ptr + 2048 * 4)).toBe(2048);
    // Unmap and remap the region to reset things.
    hmmBufferFree(ctx, buf);
    buf = thpBuffer(ctx, RW, MADV_HUGEPAGE);
    await ctx.write(
      buf.ptr,
      ints(TWOMEG / 4, (i) => i),
    );
    // Migrate the THP to the device.
    expect(await hmmMigrateSysToDev(fd, buf, thpPages)).toBe(0);
    expect(buf.cpages).toBe(thpPages);
    // Force an allocation error when migrating the device THP back.
    expect(await hmmDmirrorCmd(fd, HMM_DMIRROR_FLAGS, buf, HMM_DMIRROR_FLAG_FAIL_ALLOC)).toBe(0);
    expect(await hmmMigrateDevToSys(fd, buf, thpPages)).toBe(0);
    expect(await cpuInt(ctx, buf.ptr + 2048 * 4)).toBe(2048);
    expectInts(await ctx.read(buf.ptr, TWOMEG), (i) => i);
    hmmBufferFree(ctx, buf);
    ctx.teardown();
  });

  it("migrate_anon_huge_zero_err", async () => {
    const { ctx, fd } = fixture();
    let buf = thpBuffer(ctx, PROT_READ, MADV_HUGEPAGE);
    buf.mirror = new Uint8Array(2 * TWOMEG).fill(0xff);
    expect(await hmmDmirrorCmd(fd, HMM_DMIRROR_FLAGS, buf, HMM_DMIRROR_FLAG_FAIL_ALLOC)).toBe(0);
    expect(await hmmMigrateSysToDev(fd, buf, thpPages)).toBe(0);
    expect(buf.cpages).toBe(thpPages);
    expectInts(buf.mirror, () => 0, 0, TWOMEG / 4);
    expect(await cpuInt(ctx, buf.ptr + 2048 * 4)).toBe(0);
    hmmBufferFree(ctx, buf);
    buf = thpBuffer(ctx, PROT_READ, MADV_HUGEPAGE);
    // A huge zero page.
    expect(await cpuInt(ctx, buf.ptr)).toBe(0);
    expect(await hmmDmirrorCmd(fd, HMM_DMIRROR_FLAGS, buf, HMM_DMIRROR_FLAG_FAIL_ALLOC)).toBe(0);
    expect(await hmmMigrateSysToDev(fd, buf, thpPages)).toBe(0);
    expect(buf.cpages).toBe(thpPages);
    expectInts(await ctx.read(buf.ptr, TWOMEG), () => 0);
    hmmBufferFree(ctx, buf);
    ctx.teardown();
  });
});

describe.each(HMM2_VARIANTS)("$name", (variant) => {
  const fixture = () => {
    const ctx = new Ctx();
    const fd0 = ctx.open(variant.deviceNumber0);
    const fd1 = ctx.open(variant.deviceNumber1);
    return { ctx, fd0, fd1 };
  };

  it("migrate_mixed", async () => {
    const { ctx, fd0, fd1 } = fixture();
    const np = 6;
    const sz = np * PAGE_SIZE;
    const p = ctx.mmap(sz, PROT_NONE, PRIV);
    const buf = buffer(p, sz);
    // Migrating a protected area is an error.
    expect(await hmmMigrateSysToDev(fd1, buf, np)).toBe(EINVAL);
    // Punch a hole after the first page.
    ctx.t.mm.munmap(p + PAGE_SIZE, PAGE_SIZE);
    // A range the VMA does not cover is an error.
    expect(await hmmMigrateSysToDev(fd1, buf, 3)).toBe(EINVAL);
    // Page 2: read-only zero page.
    ctx.t.mm.mprotect(p + 2 * PAGE_SIZE, PAGE_SIZE, PROT_READ);
    const val = (await cpuInt(ctx, p + 2 * PAGE_SIZE)) + 3;
    expect(val).toBe(3);
    // Page 3: read-only with data.
    ctx.t.mm.mprotect(p + 3 * PAGE_SIZE, PAGE_SIZE, RW);
    await ctx.write(
      p + 3 * PAGE_SIZE,
      ints(1, () => val),
    );
    ctx.t.mm.mprotect(p + 3 * PAGE_SIZE, PAGE_SIZE, PROT_READ);
    // Pages 4-5: read-write.
    ctx.t.mm.mprotect(p + 4 * PAGE_SIZE, 2 * PAGE_SIZE, RW);
    await ctx.write(
      p + 4 * PAGE_SIZE,
      ints(1, () => val),
    );
    await ctx.write(
      p + 5 * PAGE_SIZE,
      ints(1, () => val),
    );
    // Migrate pages 2-5 to device 1.
    buf.ptr = p + 2 * PAGE_SIZE;
    expect(await hmmMigrateSysToDev(fd1, buf, 4)).toBe(0);
    expect(buf.cpages).toBe(4);
    // Page 5 is on device 1: device 0 does not migrate it.
    buf.ptr = p + 5 * PAGE_SIZE;
    expect(await hmmMigrateSysToDev(fd0, buf, 1)).toBe(ENOENT);
    ctx.t.mm.munmap(p, sz);
    ctx.teardown();
  });

  it("snapshot", async () => {
    const { ctx, fd0, fd1 } = fixture();
    const np = 7;
    const sz = np * PAGE_SIZE;
    const p = ctx.mmap(sz, PROT_NONE, PRIV);
    const buf = buffer(p, sz, np);
    ctx.t.mm.munmap(p + PAGE_SIZE, PAGE_SIZE);
    ctx.t.mm.mprotect(p + 2 * PAGE_SIZE, PAGE_SIZE, PROT_READ);
    const val = (await cpuInt(ctx, p + 2 * PAGE_SIZE)) + 3;
    expect(val).toBe(3);
    ctx.t.mm.mprotect(p + 3 * PAGE_SIZE, PAGE_SIZE, RW);
    await ctx.write(
      p + 3 * PAGE_SIZE,
      ints(1, () => val),
    );
    ctx.t.mm.mprotect(p + 3 * PAGE_SIZE, PAGE_SIZE, PROT_READ);
    ctx.t.mm.mprotect(p + 4 * PAGE_SIZE, 3 * PAGE_SIZE, RW);
    await ctx.write(
      p + 4 * PAGE_SIZE,
      ints(1, () => val),
    );
    // Page 5 to device 0, page 6 to device 1 (both are holes: migrated as fresh pages).
    const one = buffer(p + 5 * PAGE_SIZE, PAGE_SIZE);
    expect(await hmmMigrateSysToDev(fd0, one, 1)).toBe(0);
    expect(one.cpages).toBe(1);
    one.ptr = p + 6 * PAGE_SIZE;
    expect(await hmmMigrateSysToDev(fd1, one, 1)).toBe(0);
    expect(one.cpages).toBe(1);
    buf.ptr = p;
    expect(await hmmDmirrorCmd(fd0, HMM_DMIRROR_SNAPSHOT, buf, np)).toBe(0);
    expect(buf.cpages).toBe(np);
    const m = Array.from(buf.mirror);
    expect(m[0]).toBe(HMM_DMIRROR_PROT_ERROR);
    expect(m[1]).toBe(HMM_DMIRROR_PROT_ERROR);
    expect(m[2]).toBe(HMM_DMIRROR_PROT_ZERO | HMM_DMIRROR_PROT_READ);
    expect(m[3]).toBe(HMM_DMIRROR_PROT_READ);
    expect(m[4]).toBe(HMM_DMIRROR_PROT_WRITE);
    if (!variant.coherent) {
      expect(m[5]).toBe(HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | HMM_DMIRROR_PROT_WRITE);
      expect(m[6]).toBe(HMM_DMIRROR_PROT_NONE);
    } else {
      expect(m[5]).toBe(HMM_DMIRROR_PROT_DEV_COHERENT_LOCAL | HMM_DMIRROR_PROT_WRITE);
      expect(m[6]).toBe(HMM_DMIRROR_PROT_DEV_COHERENT_REMOTE | HMM_DMIRROR_PROT_WRITE);
    }
    // The snapshot faulted nothing in: page 6 is still on device 1.
    expect(fd1.mdevice.allocatedPages).toBe(1);
    ctx.t.mm.munmap(p, sz);
    ctx.teardown();
  });

  it("double_map", async () => {
    const { ctx, fd0, fd1 } = fixture();
    const np = 6;
    const sz = np * PAGE_SIZE;
    const buf = buffer(ctx.mmap(sz, RW, PRIV), sz);
    await ctx.write(
      buf.ptr,
      ints(sz / 4, (i) => i),
    );
    ctx.t.mm.mprotect(buf.ptr, sz, PROT_READ);
    expect(await hmmDmirrorCmd(fd0, HMM_DMIRROR_READ, buf, np)).toBe(0);
    expect(buf.cpages).toBe(np);
    expect(buf.faults).toBe(1);
    expectInts(buf.mirror, (i) => i);
    buf.mirror.fill(0);
    expect(await hmmDmirrorCmd(fd1, HMM_DMIRROR_READ, buf, np)).toBe(0);
    expect(buf.cpages).toBe(np);
    expect(buf.faults).toBe(1);
    expectInts(buf.mirror, (i) => i);
    // Migrate the pages to device 1 and read them from device 0.
    expect(await hmmMigrateSysToDev(fd1, buf, np)).toBe(0);
    expect(buf.cpages).toBe(np);
    buf.mirror.fill(0);
    expect(await hmmDmirrorCmd(fd0, HMM_DMIRROR_READ, buf, np)).toBe(0);
    expect(buf.cpages).toBe(np);
    expect(buf.faults).toBe(1);
    expectInts(buf.mirror, (i) => i);
    hmmBufferFree(ctx, buf);
    ctx.teardown();
  });

  // Not a kernel test: the owner rule of seed 004 stated directly. Device 0 never collects device
  // 1's pages, in either direction, through the driver or through the core API.
  it("owner_separation", async () => {
    const { ctx, fd0, fd1 } = fixture();
    const np = 8;
    const sz = np * PAGE_SIZE;
    const buf = buffer(ctx.mmap(sz, RW, PRIV), sz);
    await ctx.write(
      buf.ptr,
      ints(sz / 4, (i) => i * 3),
    );
    expect(await hmmMigrateSysToDev(fd1, buf, np)).toBe(0);
    expect(buf.cpages).toBe(np);
    const calloc0 = fd0.mdevice.calloc;
    // Device 0 migrating "its" pages back collects nothing.
    expect(await hmmMigrateDevToSys(fd0, buf, np)).toBe(0);
    expect(buf.cpages).toBe(0);
    // Device 0 migrating to itself sees no system page and no page of its own: -ENOENT.
    expect(await hmmMigrateSysToDev(fd0, buf, np)).toBe(ENOENT);
    expect(fd0.mdevice.calloc).toBe(calloc0);
    expect(fd1.mdevice.allocatedPages).toBe(np);
    // The core API with device 0's owner selects none of device 1's pages.
    const vma = ctx.t.mm.findVma(buf.ptr);
    if (vma === undefined) throw new Error("no vma");
    const args: MigrateVma = {
      mm: ctx.t.mm,
      vma,
      start: buf.ptr,
      end: buf.ptr + sz,
      src: new Float64Array(np),
      dst: new Float64Array(np),
      pgmapOwner: fd0.mdevice,
      flags: MIGRATE_VMA_SELECT.DEVICE_PRIVATE | MIGRATE_VMA_SELECT.DEVICE_COHERENT,
      cpages: 0,
      npages: 0,
    };
    ctx.m.migrate.migrateVmaSetup(args);
    expect(args.cpages).toBe(0);
    expect(Array.from(args.src)).toEqual(new Array(np).fill(0));
    ctx.m.migrate.migrateVmaPages(args);
    ctx.m.migrate.migrateVmaFinalize(args);
    // Device 1 still holds every page; its snapshot says so.
    const snap = buffer(buf.ptr, sz, np);
    expect(await hmmDmirrorCmd(fd1, HMM_DMIRROR_SNAPSHOT, snap, np)).toBe(0);
    const local = variant.coherent ? HMM_DMIRROR_PROT_DEV_COHERENT_LOCAL : HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL;
    expect(Array.from(snap.mirror)).toEqual(new Array(np).fill(local | HMM_DMIRROR_PROT_WRITE));
    expect(await hmmMigrateDevToSys(fd1, buf, np)).toBe(0);
    expect(buf.cpages).toBe(np);
    expectInts(await ctx.read(buf.ptr, sz), (i) => i * 3);
    hmmBufferFree(ctx, buf);
    ctx.teardown();
  });
});

// Device-exclusive (atomic) access: the kernel's exclusive, exclusive_mprotect, exclusive_cow.
describe.each(HMM_VARIANTS)("$name exclusive", (variant) => {
  const fixture = () => {
    const ctx = new Ctx();
    const fd = ctx.open(variant.deviceNumber);
    return { ctx, fd };
  };
  const npages = HMM_BUFFER_NPAGES;
  const size = npages * PAGE_SIZE;
  const nints = size / 4;

  it("exclusive", async () => {
    const { ctx, fd } = fixture();
    const buf = buffer(ctx.mmap(size, RW, PRIV), size);
    await ctx.write(
      buf.ptr,
      ints(nints, (i) => i),
    );
    expect(await hmmDmirrorCmd(fd, HMM_DMIRROR_EXCLUSIVE, buf, npages)).toBe(0);
    expect(buf.cpages).toBe(npages);
    expectInts(buf.mirror, (i) => i);
    // Still atomic-mapped on the device until the CPU touches the pages.
    expect(await hmmDmirrorCmd(fd, HMM_DMIRROR_CHECK_EXCLUSIVE, buf, npages)).toBe(EPERM);
    // The CPU reads, then increments every int: each access revokes the device's atomic mapping.
    expectInts(await ctx.read(buf.ptr, size), (i) => i);
    await ctx.write(
      buf.ptr,
      ints(nints, (i) => i + 1),
    );
    expectInts(await ctx.read(buf.ptr, size), (i) => i + 1);
    expect(await hmmDmirrorCmd(fd, HMM_DMIRROR_CHECK_EXCLUSIVE, buf, npages)).toBe(0);
    ctx.teardown();
  });

  it("exclusive_mprotect", async () => {
    const { ctx, fd } = fixture();
    const buf = buffer(ctx.mmap(size, RW, PRIV), size);
    await ctx.write(
      buf.ptr,
      ints(nints, (i) => i),
    );
    expect(await hmmDmirrorCmd(fd, HMM_DMIRROR_EXCLUSIVE, buf, npages)).toBe(0);
    expect(buf.cpages).toBe(npages);
    expectInts(buf.mirror, (i) => i);
    ctx.t.mm.mprotect(buf.ptr, size, PROT_READ);
    expect(await hmmDmirrorCmd(fd, HMM_DMIRROR_WRITE, buf, npages)).toBe(EPERM);
    ctx.teardown();
  });

  it("exclusive_cow", async () => {
    const { ctx, fd } = fixture();
    const buf = buffer(ctx.mmap(size, RW, PRIV), size);
    await ctx.write(
      buf.ptr,
      ints(nints, (i) => i),
    );
    expect(await hmmDmirrorCmd(fd, HMM_DMIRROR_EXCLUSIVE, buf, npages)).toBe(0);
    expect(buf.cpages).toBe(npages);
    const child = ctx.fork(ctx.t);
    // fork restores the CPU mappings first; both processes then see their own increments.
    await ctx.write(
      buf.ptr,
      ints(nints, (i) => i + 1),
      child,
    );
    await ctx.write(
      buf.ptr,
      ints(nints, (i) => i + 1),
    );
    expectInts(await ctx.read(buf.ptr, size, child), (i) => i + 1);
    expectInts(await ctx.read(buf.ptr, size), (i) => i + 1);
    expect(await hmmDmirrorCmd(fd, HMM_DMIRROR_CHECK_EXCLUSIVE, buf, npages)).toBe(0);
    ctx.teardown();
  });
});
