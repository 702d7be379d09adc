/**
 * hmm_range_fault: snapshot (and optionally fault in) the CPU page table of a range, for a device
 * mirror.
 *
 * The output array holds one entry per page, `pfn * 256 + flags`, built with arithmetic (the
 * kernel keeps the flags in the top bits of a 64-bit word; JS numbers have 53, so hmmkit keeps
 * them in the low byte). Flags: VALID, WRITE, ERROR, and the CPU mapping order in bits 3–7 (9
 * for a PMD-mapped THP). Input entries carry request flags in the same low byte: the request
 * for page i is `(hmmPfns[i] & pfnFlagsMask) | defaultFlags`, with REQ_FAULT = VALID and
 * REQ_WRITE = WRITE.
 *
 * Outcomes, as mm/hmm.c: a present page is VALID (and WRITE if the CPU may write it); the zero
 * page is VALID without WRITE; a device-private page whose pgmap owner equals
 * `devPrivateOwner` is returned as VALID (its device pfn) without faulting, a foreign owner's is
 * treated as not present; a page not present (or not writable when WRITE is requested) is
 * faulted in when requested, else reported as 0. Errors are returned as negative errno values:
 * -EFAULT (no VMA, no VM_READ, or a fault that cannot be resolved while one was requested),
 * -EPERM (write requested on a read-only VMA), -EBUSY (the notifier sequence changed: an
 * invalidation raced, the caller must retry from `mmuIntervalReadBegin`).
 *
 * @see mm/hmm.c, include/linux/hmm.h, Documentation/mm/hmm.rst
 */
import type { MmCore } from "../mm/mm-core";
import { type MmuIntervalNotifier, mmuIntervalCheckRetry } from "../mm/mmu-notifier";
import { entryPayload, isHuge, isPresent, isWrite, PMD_SIZE, SWP, swpType } from "../mm/page-table";
import { VM } from "../mm/vma";
import { PAGE_SIZE } from "../phys/page-state";
import { ERRNO, einval } from "../sim/errors";

/** Flags of hmm pfn entries (low byte). @see enum hmm_pfn_flags */
export const HMM_PFN = {
  /** The entry maps a page. @see HMM_PFN_VALID */
  VALID: 1,
  /** The CPU may write it. @see HMM_PFN_WRITE */
  WRITE: 2,
  /** The page can never be accessed (no VMA, PROT_NONE, poison). @see HMM_PFN_ERROR */
  ERROR: 4,
  /** Shift of the 5-bit mapping order. @see HMM_PFN_ORDER_SHIFT */
  ORDER_SHIFT: 3,
  /** Request: fault the page in. @see HMM_PFN_REQ_FAULT */
  REQ_FAULT: 1,
  /** Request: fault it in writable. @see HMM_PFN_REQ_WRITE */
  REQ_WRITE: 2,
} as const;

/** Default timeout of the retry loop in drivers, in ms of virtual time. @see HMM_RANGE_DEFAULT_TIMEOUT */
export const HMM_RANGE_DEFAULT_TIMEOUT = 1000;

/** A range to snapshot. @see struct hmm_range */
export interface HmmRange {
  /** The subscription whose sequence guards the walk. */
  notifier: MmuIntervalNotifier;
  /** The sequence from `mmuIntervalReadBegin`. */
  notifierSeq: number;
  /** First byte (page aligned). */
  start: number;
  /** One past the last byte (page aligned). */
  end: number;
  /** In: request flags; out: pfn * 256 + flags. At least (end - start) / PAGE_SIZE entries. */
  hmmPfns: Float64Array;
  /** Request flags for every page. */
  defaultFlags: number;
  /** Mask applied to each input entry's flags. */
  pfnFlagsMask: number;
  /** Device-private pages of this owner are returned without faulting. */
  devPrivateOwner: unknown;
}

/**
 * The pfn of an hmm entry. @param e - entry. @returns pfn. @see hmm_pfn_to_page
 */
export function hmmPfnToPfn(e: number): number {
  return Math.floor(e / 256);
}

/**
 * The CPU mapping order of an hmm entry (0 or 9). @param e - entry. @returns order. @see hmm_pfn_to_map_order
 */
export function hmmPfnToMapOrder(e: number): number {
  return ((e % 256) >> HMM_PFN.ORDER_SHIFT) & 31;
}

/**
 * Snapshot and optionally fault in a range of the CPU page table.
 * @param core - the machine's mm layer.
 * @param range - the range, its output array and request flags.
 * @returns 0 on success, or -EFAULT, -EPERM, -EBUSY (see the file comment).
 * @throws HmmError EINVAL for an unaligned or empty range, or an output array that is too short.
 * Context: may await (a fault that migrates a device page back, or waits on a migration). The
 * caller holds its driver lock only around `mmuIntervalReadRetry`, never across this call.
 * @see hmm_range_fault
 * @example
 * ```ts
 * for (;;) {
 *   range.notifierSeq = mmuIntervalReadBegin(sub);
 *   const r = await hmmRangeFault(m.mm, range);
 *   if (r === -ERRNO.EBUSY) continue;
 *   if (r !== 0) return r;
 *   if (mmuIntervalReadRetry(sub, range.notifierSeq)) continue;
 *   break; // program the device page table from range.hmmPfns
 * }
 * ```
 */
export async function hmmRangeFault(core: MmCore, range: HmmRange): Promise<number> {
  const { start, end, hmmPfns } = range;
  if (!Number.isInteger(start) || start % PAGE_SIZE !== 0) einval("range.start", `page aligned, got ${start}`);
  if (!Number.isInteger(end) || end % PAGE_SIZE !== 0 || end <= start) einval("range.end", `page aligned and > start, got ${end}`);
  const npages = (end - start) / PAGE_SIZE;
  if (!(hmmPfns instanceof Float64Array) || hmmPfns.length < npages)
    einval("range.hmmPfns", `a Float64Array of at least ${npages} entries`);
  const r = await walk(core, range, npages);
  if (core.bus.wants("hmm_range_fault")) core.bus.emit("hmm_range_fault", { mm: range.notifier.mm.id, start, end, result: r });
  return r;
}

async function walk(core: MmCore, range: HmmRange, npages: number): Promise<number> {
  const mm = range.notifier.mm;
  const { start, hmmPfns, defaultFlags, pfnFlagsMask } = range;
  const pt = mm.pt;
  let i = 0;
  while (i < npages) {
    if (mmuIntervalCheckRetry(range.notifier, range.notifierSeq)) return -ERRNO.EBUSY;
    const va = start + i * PAGE_SIZE;
    const required = ((((hmmPfns[i] as number) % 256) & pfnFlagsMask) | defaultFlags) & (HMM_PFN.VALID | HMM_PFN.WRITE);
    const vma = mm.findVma(va);
    if (vma === undefined || (vma.flags & VM.READ) === 0 || (vma.flags & (VM.IO | VM.PFNMAP)) !== 0) {
      if (required & HMM_PFN.REQ_FAULT) return -ERRNO.EFAULT;
      hmmPfns[i] = HMM_PFN.ERROR;
      i++;
      continue;
    }
    let e: number;
    let order = 0;
    let sub = 0;
    const pmd = pt.getPmd(va);
    if (pmd !== 0 && isHuge(pmd)) {
      e = pmd;
      order = 9;
      sub = Math.floor((va % PMD_SIZE) / PAGE_SIZE);
    } else e = pt.getPte(va);
    let cpu = 0;
    let pfn = 0;
    if (e !== 0 && isPresent(e)) {
      pfn = entryPayload(e) + sub;
      cpu = HMM_PFN.VALID | (isWrite(e) ? HMM_PFN.WRITE : 0);
    } else if (e !== 0 && swpType(e) === SWP.DEVICE_PRIVATE) {
      const dp = entryPayload(e) + sub;
      const pg = core.memremap.pgmapOf(dp);
      if (pg !== undefined && pg.owner === range.devPrivateOwner) {
        pfn = dp;
        cpu = HMM_PFN.VALID | (isWrite(e) ? HMM_PFN.WRITE : 0);
      }
    } else if (e !== 0 && swpType(e) === SWP.HWPOISON) {
      if (required) return -ERRNO.EFAULT;
      hmmPfns[i] = HMM_PFN.ERROR;
      i++;
      continue;
    }
    const needFault = (required & HMM_PFN.VALID && !(cpu & HMM_PFN.VALID)) || (required & HMM_PFN.WRITE && !(cpu & HMM_PFN.WRITE));
    if (needFault) {
      const write = (required & HMM_PFN.WRITE) !== 0;
      if (write && (vma.flags & VM.WRITE) === 0) return -ERRNO.EPERM;
      let fr = core.fault.handleMmFault(mm, va, write);
      if (typeof fr !== "number") fr = await fr;
      if (fr !== 0) return -ERRNO.EFAULT;
      continue; // re-walk this page (after the sequence check)
    }
    hmmPfns[i] = cpu === 0 ? 0 : pfn * 256 + cpu + (order << HMM_PFN.ORDER_SHIFT);
    i++;
  }
  return 0;
}
