/**
 * mremap: grow, shrink or move a mapping, moving its page-table entries rather than its pages.
 *
 * Outcomes, as mm/mremap.c: shrinking unmaps the tail; growing extends the VMA in place when the
 * following range is free, otherwise needs MREMAP_MAYMOVE and moves the mapping; MREMAP_FIXED moves
 * it to `newAddr`, unmapping whatever was there; MREMAP_DONTUNMAP (private anonymous, same size)
 * moves the entries and leaves the old range mapped but empty. A move notifies MMU_NOTIFY_UNMAP on
 * the old range, then moves every entry as is (present, zero-page, device-private, migration,
 * device-exclusive): no refcount or mapcount changes, since the same pages stay mapped once. The
 * moved VMA keeps its page offset, so the reverse map finds the pages at their new address. A
 * huge PMD moves whole when both addresses are 2 MiB aligned and the whole PMD moves; otherwise it
 * is split first. THP reservations in the old range are released (the RFC drops them on mremap).
 * Migration entries that move are reported to the migration code, which then walks the rmap to
 * restore them at their new address.
 *
 * @see mm/mremap.c (mremap, move_vma, move_page_tables), mremap(2)
 */
import { PAGE_SIZE } from "../phys/page-state";
import { einval, HmmError } from "../sim/errors";
import type { Mm } from "./mm";
import { MMU_NOTIFY, mmuNotifyRange } from "./mmu-notifier";
import { entryPayload, isHuge, PMD_SIZE, PTRS_PER_PTE, SWP, swpType } from "./page-table";
import { MREMAP_DONTUNMAP, MREMAP_FIXED, MREMAP_MAYMOVE, TASK_SIZE, VM, type Vma } from "./vma";

/**
 * Remap `[oldAddr, oldAddr + oldSize)` to `newSize` bytes.
 * @param mm - address space. @param oldAddr - page aligned. @param oldSize - bytes (rounded up to pages).
 * @param newSize - bytes, > 0. @param flags - MREMAP_MAYMOVE, MREMAP_FIXED, MREMAP_DONTUNMAP.
 * @param newAddr - the target with MREMAP_FIXED (page aligned).
 * @returns the mapping's address after the call.
 * @throws HmmError EINVAL (unaligned address, zero size, unknown flags, FIXED or DONTUNMAP without
 *   MAYMOVE, DONTUNMAP with a size change or on shared memory, overlapping FIXED ranges, a hugetlb
 *   mapping), EFAULT (the old range is not inside one VMA), ENOMEM (cannot grow in place without
 *   MAYMOVE, or no gap).
 * @remarks Departure: a hugetlb mapping is EINVAL (the kernel moves 2 MiB-aligned ones since 6.1).
 * @see SYSCALL_DEFINE5(mremap)
 */
export function mremap(mm: Mm, oldAddr: number, oldSize: number, newSize: number, flags: number, newAddr = 0): number {
  if (!Number.isInteger(oldAddr) || oldAddr % PAGE_SIZE !== 0) einval("oldAddr", `page aligned, got ${oldAddr}`);
  if (!Number.isInteger(flags) || flags & ~(MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP))
    einval("flags", `MREMAP_* bits, got ${flags}`);
  if ((flags & (MREMAP_FIXED | MREMAP_DONTUNMAP)) !== 0 && (flags & MREMAP_MAYMOVE) === 0)
    einval("flags", "MREMAP_FIXED and MREMAP_DONTUNMAP need MREMAP_MAYMOVE");
  if (!Number.isInteger(newSize) || newSize <= 0) einval("newSize", `a positive size, got ${newSize}`);
  if (!Number.isInteger(oldSize) || oldSize < 0) einval("oldSize", `a non-negative size, got ${oldSize}`);
  const oldLen = Math.ceil(oldSize / PAGE_SIZE) * PAGE_SIZE;
  const newLen = Math.ceil(newSize / PAGE_SIZE) * PAGE_SIZE;
  if (flags & MREMAP_DONTUNMAP && oldLen !== newLen) einval("newSize", "equal to oldSize with MREMAP_DONTUNMAP");
  if (flags & MREMAP_FIXED) {
    if (!Number.isInteger(newAddr) || newAddr % PAGE_SIZE !== 0 || newAddr + newLen > TASK_SIZE)
      einval("newAddr", `page aligned, got ${newAddr}`);
    if (newAddr < oldAddr + oldLen && oldAddr < newAddr + newLen) einval("newAddr", "a range that does not overlap the old one");
  }
  const vma = mm.findVma(oldAddr);
  if (vma === undefined || oldAddr + oldLen > vma.end)
    throw new HmmError("EFAULT", `[0x${oldAddr.toString(16)}, +${oldLen}) is not inside one VMA`, "oldAddr");
  if (flags & MREMAP_DONTUNMAP && vma.shared) einval("flags", "MREMAP_DONTUNMAP on private anonymous memory only");
  // Departure: the kernel (6.1+) moves 2 MiB-aligned hugetlb ranges; hmmkit does not model it.
  if (vma.flags & VM.HUGETLB) einval("oldAddr", "not a hugetlb mapping (mremap of hugetlb is not modelled)");

  const mustMove = (flags & (MREMAP_FIXED | MREMAP_DONTUNMAP)) !== 0;
  // Shrink in place (no move requested).
  if (!mustMove && newLen <= oldLen) {
    if (newLen < oldLen) mm.munmapRange(oldAddr + newLen, oldAddr + oldLen);
    return oldAddr;
  }
  // Grow in place when the VMA ends at the old range's end and the following range is free.
  if (!mustMove && oldAddr + oldLen === vma.end && mm.vmasIn(vma.end, oldAddr + newLen).length === 0 && oldAddr + newLen <= TASK_SIZE) {
    vma.end = oldAddr + newLen;
    return oldAddr;
  }
  if (!(flags & MREMAP_MAYMOVE)) throw new HmmError("ENOMEM", "cannot grow in place and MREMAP_MAYMOVE is not set", "flags");

  // Move.
  let target: number;
  if (flags & MREMAP_FIXED) {
    mm.munmapRange(newAddr, newAddr + newLen);
    target = newAddr;
  } else target = mm.unmappedAreaFor(newLen, oldLen >= PMD_SIZE ? PMD_SIZE : PAGE_SIZE);
  if (newLen < oldLen) mm.munmapRange(oldAddr + newLen, oldAddr + oldLen);
  const moveLen = Math.min(oldLen, newLen);
  const parts = mm.splitAt(oldAddr, oldAddr + moveLen) as Vma[];
  const src = parts[0] as Vma;
  mm.core.thpRes.releaseRange(mm, oldAddr, oldAddr + moveLen);
  mmuNotifyRange(mm, oldAddr, oldAddr + moveLen, MMU_NOTIFY.UNMAP);
  const moved = src.slice(oldAddr, oldAddr + moveLen);
  moved.start = target;
  moved.end = target + newLen;
  if (moved.shared) mm.core.shmemVmaRef(moved.mapping, +1);
  movePageTables(mm, oldAddr, target, moveLen);
  mm.insertVma(moved);
  if (!(flags & MREMAP_DONTUNMAP)) {
    mm.removeVma(src);
    mm.core.fault.freePgtables(mm, oldAddr, oldAddr + moveLen);
  }
  return target;
}

function movePageTables(mm: Mm, from: number, to: number, len: number): void {
  const core = mm.core;
  const pt = mm.pt;
  for (let off = 0; off < len; ) {
    const va = from + off;
    const pmdEnd = Math.min(len, off + (PMD_SIZE - (va % PMD_SIZE)));
    const pmd = pt.getPmd(va);
    if (pmd === 0) {
      off = pmdEnd;
      continue;
    }
    if (isHuge(pmd)) {
      if (va % PMD_SIZE === 0 && (to + off) % PMD_SIZE === 0 && pmdEnd - off === PMD_SIZE) {
        pt.setPmd(va, 0);
        pt.setPmd(to + off, pmd);
        if (swpType(pmd) === SWP.MIGRATION) core.migrate.noteMigrationEntryCopy(entryPayload(pmd));
        off = pmdEnd;
        continue;
      }
      core.huge.splitHugePmd(mm, va - (va % PMD_SIZE));
    }
    const t = pt.pteTable(va);
    if (t !== undefined) {
      for (let o = off; o < pmdEnd; o += PAGE_SIZE) {
        const i = Math.floor((from + o) / PAGE_SIZE) % PTRS_PER_PTE;
        const e = t[i] as number;
        if (e === 0) continue;
        t[i] = 0;
        pt.setPte(to + o, e);
        if (swpType(e) === SWP.MIGRATION) core.migrate.noteMigrationEntryCopy(entryPayload(e));
      }
    }
    off = pmdEnd;
  }
}
