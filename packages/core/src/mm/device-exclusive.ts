/**
 * make_device_exclusive: give a device exclusive (atomic) access to one anonymous page.
 *
 * The page is faulted in writable (a PMD mapping is split to PTEs first, as FOLL_SPLIT_PMD does),
 * locked, and its PTE replaced by a device-exclusive entry inside one MMU_NOTIFY_EXCLUSIVE
 * invalidation whose owner is the caller's (so its own mirror can skip it). The entry keeps the
 * page's mapcount and reference. Any later CPU access faults, notifies MMU_NOTIFY_EXCLUSIVE (with
 * no owner) so the device drops its atomic mapping, and restores the normal PTE; fork restores it
 * before copying.
 *
 * The caller receives the page locked and with a reference, programs its device mapping, then
 * unlocks and puts it.
 *
 * @see mm/rmap.c (make_device_exclusive), mm/memory.c (remove_device_exclusive_entry)
 */
import { PAGE_SIZE } from "../phys/page-state";
import { ERRNO, einval } from "../sim/errors";
import type { Mm } from "./mm";
import { MMU_NOTIFY, type MmuNotifierRange, mmuNotifierInvalidateRangeEnd, mmuNotifierInvalidateRangeStart } from "./mmu-notifier";
import { entryPayload, isHuge, isPresent, isWrite, mkSwpEntry, PMD_SIZE, SWP } from "./page-table";
import { VM } from "./vma";

/** The outcome of {@link makeDeviceExclusive}. */
export interface DeviceExclusiveResult {
  /** 0, or a negative errno: -EFAULT (no VMA / cannot fault), -EPERM (read-only VMA), -EOPNOTSUPP (not anonymous, or hugetlb). */
  ret: number;
  /** The page now exclusive to the device (locked, referenced), or -1. */
  page: number;
}

/**
 * Make the page at `addr` exclusive to a device.
 * @param mm - address space. @param addr - page-aligned address.
 * @param owner - the caller's pgmap owner (passed to the notifier).
 * @returns `{ ret: 0, page }` with the page locked and referenced, or `{ ret: -errno, page: -1 }`.
 * @throws HmmError EINVAL for an unaligned address or a dead mm.
 * Context: may await (the fault that makes the page present and writable).
 * @see make_device_exclusive
 */
export async function makeDeviceExclusive(mm: Mm, addr: number, owner: unknown): Promise<DeviceExclusiveResult> {
  if (mm.dead) einval("mm", "a live address space");
  if (!Number.isInteger(addr) || addr % PAGE_SIZE !== 0) einval("addr", `page aligned, got ${addr}`);
  const core = mm.core;
  for (let attempt = 0; attempt < 64; attempt++) {
    const vma = mm.findVma(addr);
    if (vma === undefined) return { ret: -ERRNO.EFAULT, page: -1 };
    if ((vma.flags & VM.WRITE) === 0) return { ret: -ERRNO.EPERM, page: -1 };
    if (vma.shared || vma.flags & VM.HUGETLB) return { ret: -ERRNO.EOPNOTSUPP, page: -1 };
    const pmd = mm.pt.getPmd(addr);
    if (pmd !== 0 && isHuge(pmd)) {
      if (isPresent(pmd) && isWrite(pmd)) core.huge.splitHugePmd(mm, addr - (addr % PMD_SIZE));
    }
    const e = mm.pt.getPte(addr);
    if (e === 0 || !isPresent(e) || !isWrite(e) || (pmd !== 0 && isHuge(mm.pt.getPmd(addr)))) {
      let r = core.fault.handleMmFault(mm, addr, true);
      if (typeof r !== "number") r = await r;
      if (r !== 0) return { ret: -ERRNO.EFAULT, page: -1 };
      continue;
    }
    const page = entryPayload(e);
    const head = core.pages.compoundHead(page);
    core.refs.getPage(page);
    await core.refs.lockPage(head);
    // Re-check after the (possibly waiting) lock.
    if (mm.dead || mm.pt.getPte(addr) !== e) {
      core.refs.unlockPage(head);
      core.refs.putPage(page);
      continue;
    }
    const range: MmuNotifierRange = { mm, start: addr, end: addr + PAGE_SIZE, event: MMU_NOTIFY.EXCLUSIVE, owner, blockable: true };
    const hit = mmuNotifierInvalidateRangeStart(range);
    mm.pt.setPte(addr, mkSwpEntry(SWP.DEVICE_EXCLUSIVE, page, true));
    mmuNotifierInvalidateRangeEnd(range, hit);
    return { ret: 0, page };
  }
  return { ret: -ERRNO.EBUSY, page: -1 };
}
