/**
 * The dmirror "ioctl" interface: command numbers, the command structure, snapshot values and
 * flags, exactly as lib/test_hmm_uapi.h defines them.
 *
 * Command numbers are the kernel's `_IOWR('H', n, struct hmm_dmirror_cmd)` values, computed with
 * arithmetic (they exceed 2^31, so JS bitwise operators would make them negative).
 *
 * @see lib/test_hmm_uapi.h
 */

/** `_IOWR('H', nr, struct hmm_dmirror_cmd)`: dir READ|WRITE (3) << 30, size 40 << 16, type 'H' << 8, nr. */
function iowrH(nr: number): number {
  return 3 * 2 ** 30 + 40 * 2 ** 16 + 0x48 * 2 ** 8 + nr;
}

/** Device reads the user range `[addr, addr + npages pages)` into `ptr`, faulting pages in. @see HMM_DMIRROR_READ */
export const HMM_DMIRROR_READ = iowrH(0x00);
/** Device writes `ptr` into the user range, write-faulting pages in. @see HMM_DMIRROR_WRITE */
export const HMM_DMIRROR_WRITE = iowrH(0x01);
/** Migrate the range to device memory; the migrated data is returned in `ptr`. @see HMM_DMIRROR_MIGRATE_TO_DEV */
export const HMM_DMIRROR_MIGRATE_TO_DEV = iowrH(0x02);
/** Migrate the range's device pages back to system memory. @see HMM_DMIRROR_MIGRATE_TO_SYS */
export const HMM_DMIRROR_MIGRATE_TO_SYS = iowrH(0x03);
/** One `HMM_DMIRROR_PROT_*` byte per page into `ptr`, without faulting. @see HMM_DMIRROR_SNAPSHOT */
export const HMM_DMIRROR_SNAPSHOT = iowrH(0x04);
/** make_device_exclusive() each page (not supported: the core has no make_device_exclusive yet). @see HMM_DMIRROR_EXCLUSIVE */
export const HMM_DMIRROR_EXCLUSIVE = iowrH(0x05);
/** -EPERM if any device page-table entry of the range is still tagged atomic. @see HMM_DMIRROR_CHECK_EXCLUSIVE */
export const HMM_DMIRROR_CHECK_EXCLUSIVE = iowrH(0x06);
/** Evict and unregister all of the device's memory chunks. @see HMM_DMIRROR_RELEASE */
export const HMM_DMIRROR_RELEASE = iowrH(0x07);
/** Set the file's flags to `npages` (see {@link HMM_DMIRROR_FLAG_FAIL_ALLOC}). @see HMM_DMIRROR_FLAGS */
export const HMM_DMIRROR_FLAGS = iowrH(0x08);

/** Fail the next THP allocation once (device THP on the way in, system THP on the way out). @see HMM_DMIRROR_FLAG_FAIL_ALLOC */
export const HMM_DMIRROR_FLAG_FAIL_ALLOC = 1;

/** Snapshot: no valid mirror PTE for this page (no VMA, no access). @see HMM_DMIRROR_PROT_ERROR */
export const HMM_DMIRROR_PROT_ERROR = 0xff;
/** Snapshot: unpopulated PTE (or a foreign device-private page). @see HMM_DMIRROR_PROT_NONE */
export const HMM_DMIRROR_PROT_NONE = 0x00;
/** Snapshot: read-only PTE. @see HMM_DMIRROR_PROT_READ */
export const HMM_DMIRROR_PROT_READ = 0x01;
/** Snapshot: read/write PTE. @see HMM_DMIRROR_PROT_WRITE */
export const HMM_DMIRROR_PROT_WRITE = 0x02;
/** Snapshot: mapped by a PMD. @see HMM_DMIRROR_PROT_PMD */
export const HMM_DMIRROR_PROT_PMD = 0x04;
/** Snapshot: mapped by a PUD (never in hmmkit: no PUD mappings). @see HMM_DMIRROR_PROT_PUD */
export const HMM_DMIRROR_PROT_PUD = 0x08;
/** Snapshot: the zero page. @see HMM_DMIRROR_PROT_ZERO */
export const HMM_DMIRROR_PROT_ZERO = 0x10;
/** Snapshot: a device-private page of the device the command was issued to. @see HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL */
export const HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL = 0x20;
/** Snapshot: a device-private page of another device. @see HMM_DMIRROR_PROT_DEV_PRIVATE_REMOTE */
export const HMM_DMIRROR_PROT_DEV_PRIVATE_REMOTE = 0x30;
/** Snapshot: a device-coherent page of the device the command was issued to. @see HMM_DMIRROR_PROT_DEV_COHERENT_LOCAL */
export const HMM_DMIRROR_PROT_DEV_COHERENT_LOCAL = 0x40;
/** Snapshot: a device-coherent page of another device. @see HMM_DMIRROR_PROT_DEV_COHERENT_REMOTE */
export const HMM_DMIRROR_PROT_DEV_COHERENT_REMOTE = 0x50;

/** Device memory type of a dmirror device (0 is reserved). @see HMM_DMIRROR_MEMORY_DEVICE_PRIVATE */
export const HMM_DMIRROR_MEMORY_DEVICE_PRIVATE = 1;
/** @see HMM_DMIRROR_MEMORY_DEVICE_COHERENT */
export const HMM_DMIRROR_MEMORY_DEVICE_COHERENT = 2;

/**
 * The argument of every dmirror command.
 *
 * `ptr` stands for the user buffer the kernel reaches with copy_to_user/copy_from_user: a
 * `Uint8Array` in the caller's (host) memory. A buffer too short for the command gives -EFAULT,
 * as an unmapped user buffer does in the kernel. `cpages` and `faults` are written back only when
 * the command returns 0 (the kernel copies the structure back only on success).
 * @see struct hmm_dmirror_cmd
 */
export interface HmmDmirrorCmd {
  /** In: user virtual address the device reads/writes (page aligned). */
  addr: number;
  /** In: the bounce buffer (npages × PAGE_SIZE bytes; npages bytes for SNAPSHOT). */
  ptr: Uint8Array | undefined;
  /** In: number of pages (for FLAGS: the flags value). */
  npages: number;
  /** Out: number of pages copied (READ/WRITE/MIGRATE_TO_DEV/SNAPSHOT) or migrated (MIGRATE_TO_SYS). */
  cpages: number;
  /** Out: number of device fault passes (READ/WRITE). */
  faults: number;
}
