/**
 * Virtual memory areas and the mmap/mprotect/madvise constants.
 *
 * A VMA is a half-open page-aligned range `[start, end)` of one address space with one set of
 * flags. Private anonymous VMAs carry an anon_vma id (shared with the VMAs forked from them, so
 * the reverse map can find every mapping of a page); shared anonymous VMAs point to a shmem
 * object. `pgoff` is the page index of `start` in that object (for anon: `start / PAGE_SIZE` at
 * mmap time, kept across splits, as `vm_pgoff`). A private driver mapping (`file` set) holds the
 * pages its driver inserted and, once written, the anonymous copies of them.
 *
 * @see include/linux/mm_types.h (struct vm_area_struct), include/linux/mm.h (VM_* flags),
 *      include/uapi/asm-generic/mman-common.h
 */

import type { Mm } from "./mm";
import type { ShmemObject } from "./rmap";

/** Page protections. @see include/uapi/asm-generic/mman-common.h */
export const PROT_NONE = 0;
/** @see PROT_READ */
export const PROT_READ = 1;
/** @see PROT_WRITE */
export const PROT_WRITE = 2;
/** @see PROT_EXEC */
export const PROT_EXEC = 4;

/** mmap flags. @see include/uapi/linux/mman.h */
export const MAP_SHARED = 0x01;
/** @see MAP_PRIVATE */
export const MAP_PRIVATE = 0x02;
/** @see MAP_FIXED */
export const MAP_FIXED = 0x10;
/** @see MAP_ANONYMOUS */
export const MAP_ANONYMOUS = 0x20;
/** Back the mapping with 2 MiB HugeTLB pool pages (see hugetlb.ts). @see MAP_HUGETLB */
export const MAP_HUGETLB = 0x40000;

/** madvise advice values. @see include/uapi/asm-generic/mman-common.h */
export const MADV_DONTNEED = 4;
/** @see MADV_FREE */
export const MADV_FREE = 8;
/** @see MADV_HUGEPAGE */
export const MADV_HUGEPAGE = 14;
/** @see MADV_NOHUGEPAGE */
export const MADV_NOHUGEPAGE = 15;
/** Synchronously collapse the range into THPs. @see MADV_COLLAPSE */
export const MADV_COLLAPSE = 25;
/** @see MADV_DONTFORK */
export const MADV_DONTFORK = 10;
/** @see MADV_DOFORK */
export const MADV_DOFORK = 11;

/** VMA flags, with the kernel's values. @see include/linux/mm.h */
export const VM = {
  /** Readable. @see VM_READ */
  READ: 0x1,
  /** Writable. @see VM_WRITE */
  WRITE: 0x2,
  /** Executable. @see VM_EXEC */
  EXEC: 0x4,
  /** Shared mapping (shmem-backed here). @see VM_SHARED */
  SHARED: 0x8,
  /** Raw pfn mapping without struct pages; migration refuses it. @see VM_PFNMAP */
  PFNMAP: 0x400,
  /** Memory-mapped I/O; migration and hmm_range_fault refuse it. @see VM_IO */
  IO: 0x4000,
  /** Not copied on fork (MADV_DONTFORK). @see VM_DONTCOPY */
  DONTCOPY: 0x20000,
  /** Backed by HugeTLB pages (MAP_HUGETLB). @see VM_HUGETLB */
  HUGETLB: 0x400000,
  /** Mixed pfn/page mapping (a driver's vm_insert_page); migration refuses it. @see VM_MIXEDMAP */
  MIXEDMAP: 0x10000000,
  /** MADV_HUGEPAGE. @see VM_HUGEPAGE */
  HUGEPAGE: 0x20000000,
  /** MADV_NOHUGEPAGE. @see VM_NOHUGEPAGE */
  NOHUGEPAGE: 0x40000000,
} as const;

/**
 * A mappable file. Two kinds: a driver file (the kernel's `file_operations.mmap` of a character
 * device), whose `mmap` populates a private mapping with {@link Mm.vmInsertPage} — there is no
 * `->fault`, so an address the driver did not populate gets SIGBUS, and a write to an inserted
 * page copies it (COW) into an anonymous page; and a tmpfs file (`shmem` set, see `ShmemFile`),
 * whose shared mappings map its page cache and whose private mappings fault from it.
 * @see struct file_operations (mmap), vma_dummy_vm_ops, shmem_file_operations
 */
export interface MmapFile {
  /**
   * The page cache of a tmpfs file (see `ShmemFile`): set, the file is mapped like shmem (shared)
   * or faulted from its page cache (private); unset, it is a driver file that populates its VMAs.
   */
  readonly shmem?: ShmemObject;
  /**
   * Populate a new mapping of the file.
   * @param mm - the address space. @param vma - the new VMA (already inserted).
   * @returns 0, or a negative errno that fails the mmap (the VMA is then unmapped).
   */
  mmap(mm: Mm, vma: Vma): number;
}

/**
 * One virtual memory area.
 * @see struct vm_area_struct
 */
export class Vma {
  /** The mapped file of a driver mapping; undefined for anonymous and shmem VMAs. @see vm_file */
  file: MmapFile | undefined = undefined;
  /**
   * A hugetlb VMA that owns reservations: the 2 MiB-aligned addresses whose pool page is reserved
   * and not yet faulted. Undefined for other VMAs and for a forked child's.
   * @see HPAGE_RESV_OWNER, the resv_map of a private hugetlb mapping
   */
  hugetlbResv: Set<number> | undefined = undefined;
  /**
   * A forked hugetlb VMA from which the reservation owner took a page back (its COW found the pool
   * empty): a fault that needs a new page here is SIGBUS. Kept across splits, not across fork.
   * @see HPAGE_RESV_UNMAPPED
   */
  hugetlbUnmapped = false;

  /**
   * @param start - first byte (page aligned).
   * @param end - one past the last byte (page aligned).
   * @param flags - {@link VM} bits.
   * @param mapping - anon_vma id (private) or shmem object id (shared).
   * @param pgoff - page index of `start` in `mapping`.
   */
  constructor(
    public start: number,
    public end: number,
    public flags: number,
    public mapping: number,
    public pgoff: number,
  ) {}

  /** Whether the VMA is shared (shmem-backed). @returns VM_SHARED set. */
  get shared(): boolean {
    return (this.flags & VM.SHARED) !== 0;
  }

  /**
   * The page index of `va` in the VMA's mapping.
   * @param va - an address inside the VMA. @returns pgoff + (va - start) / PAGE_SIZE. @see linear_page_index
   */
  pageIndex(va: number): number {
    return this.pgoff + Math.floor((va - this.start) / 4096);
  }

  /**
   * The address at which page `index` of the mapping is mapped here.
   * @param index - page index. @returns the address (may be outside the VMA). @see vma_address
   */
  addressOf(index: number): number {
    return this.start + (index - this.pgoff) * 4096;
  }

  /**
   * Split off `right` (a slice of this VMA that starts where this one now ends): it takes the
   * hugetlb reservations of its range.
   * @param right - the new right part.
   * @see hugetlb_vm_op_split, hugetlb_vm_op_open (the resv_map follows the split VMAs)
   */
  splitResvTo(right: Vma): void {
    if (this.hugetlbResv === undefined) return;
    right.hugetlbResv = new Set();
    for (const a of this.hugetlbResv) {
      if (a >= right.start) {
        right.hugetlbResv.add(a);
        this.hugetlbResv.delete(a);
      }
    }
  }

  /**
   * A copy with another range, for splits.
   * @param start - new start. @param end - new end. @returns the copy.
   */
  slice(start: number, end: number): Vma {
    const v = new Vma(start, end, this.flags, this.mapping, this.pgoff + Math.floor((start - this.start) / 4096));
    v.file = this.file;
    v.hugetlbUnmapped = this.hugetlbUnmapped;
    return v;
  }
}

/**
 * Convert PROT_* bits to VM_* bits.
 * @param prot - PROT_READ|WRITE|EXEC. @returns VM_READ|WRITE|EXEC. @see calc_vm_prot_bits
 */
export function protToVm(prot: number): number {
  return (prot & PROT_READ ? VM.READ : 0) | (prot & PROT_WRITE ? VM.WRITE : 0) | (prot & PROT_EXEC ? VM.EXEC : 0);
}

/** One past the highest user address (47-bit). @see TASK_SIZE */
export const TASK_SIZE = 0x800000000000;

/** mremap flags. @see include/uapi/linux/mman.h */
export const MREMAP_MAYMOVE = 1;
/** @see MREMAP_FIXED */
export const MREMAP_FIXED = 2;
/** @see MREMAP_DONTUNMAP */
export const MREMAP_DONTUNMAP = 4;
