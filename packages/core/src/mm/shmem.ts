/**
 * tmpfs files: a shmem object with a size, read and written with `pread`/`pwrite`, and mappable.
 *
 * The file's page cache is a shmem object (the same kind that backs MAP_SHARED|MAP_ANONYMOUS): a
 * page exists once written or faulted, a hole reads as zeros. A shared mapping maps the cached
 * pages themselves, so CPU, device (through `hmmRangeFault`) and `pread` all see one copy. A
 * private mapping maps a cached page read-only on a read fault and gives the writer an anonymous
 * copy on a write, so the file never sees private writes. Faults at or beyond the file's size are
 * SIGBUS. Pages of a tmpfs file are not swapped (shmem is not swapped in hmmkit).
 *
 * @see mm/shmem.c (shmem_file_setup, shmem_file_read_iter, shmem_file_write_iter, shmem_fault)
 */
import { PAGE_SIZE } from "../phys/page-state";
import { ERRNO, einval, HmmError } from "../sim/errors";
import type { Mm } from "./mm";
import type { MmCore } from "./mm-core";
import type { ShmemObject } from "./rmap";
import type { MmapFile, Vma } from "./vma";

/**
 * An open tmpfs file. Create one with `machine.mm.shmemFileSetup(size)`, map it with
 * `mm.mmap(0, len, prot, MAP_SHARED | MAP_PRIVATE, file)`, and `close()` it when done: its pages
 * are released when the file is closed and no VMA maps it any more.
 * @see shmem_file_setup, struct file
 */
export class ShmemFile implements MmapFile {
  /** The page cache. */
  readonly shmem: ShmemObject;
  /** Whether `close` was called. */
  closed = false;
  private bytes: number;

  /**
   * @param core - the mm layer. @param size - initial size in bytes (>= 0).
   * @throws HmmError EINVAL for a negative or non-integer size.
   */
  constructor(
    private readonly core: MmCore,
    size: number,
  ) {
    if (!Number.isSafeInteger(size) || size < 0) einval("size", `a byte count >= 0, got ${size}`);
    this.shmem = core.rmap.newShmem();
    this.bytes = size;
    this.shmem.sizePages = Math.ceil(size / PAGE_SIZE);
    core.shmemVmaRef(this.shmem.id, +1); // the open file's reference
  }

  /** Size in bytes. @see i_size_read */
  get size(): number {
    return this.bytes;
  }

  /**
   * Nothing to populate: mappings fault from the page cache.
   * @returns 0, or -EBADF after close.
   * @see shmem_mmap
   */
  mmap(_mm: Mm, _vma: Vma): number {
    return this.closed ? -ERRNO.EBADF : 0;
  }

  /**
   * Read from the file (holes read as zeros); stops at the end of the file.
   * @param buf - destination. @param offset - byte offset (>= 0).
   * @returns bytes read (0 at or past the end).
   * @throws HmmError EBADF after close; EINVAL for a bad buffer or offset.
   * @see pread(2), shmem_file_read_iter
   */
  pread(buf: Uint8Array, offset: number): number {
    this.check(buf, offset);
    const n = Math.max(0, Math.min(buf.length, this.bytes - offset));
    const contents = this.core.contents;
    for (let done = 0; done < n; ) {
      const pos = offset + done;
      const inPage = pos % PAGE_SIZE;
      const len = Math.min(n - done, PAGE_SIZE - inPage);
      const pfn = this.shmem.pages.get(Math.floor(pos / PAGE_SIZE));
      const dst = buf.subarray(done, done + len);
      if (pfn === undefined) dst.fill(0);
      else contents.read(pfn, inPage, dst);
      done += len;
    }
    return n;
  }

  /**
   * Write to the file, allocating page-cache pages; a write past the end extends the file.
   * @param buf - bytes. @param offset - byte offset (>= 0).
   * @returns bytes written (all of them).
   * @throws HmmError EBADF after close; EINVAL for a bad buffer or offset; ENOMEM when no page can
   *   be allocated (what was written before stays written, as after a short write).
   * @see pwrite(2), shmem_file_write_iter
   */
  pwrite(buf: Uint8Array, offset: number): number {
    this.check(buf, offset);
    const contents = this.core.contents;
    for (let done = 0; done < buf.length; ) {
      const pos = offset + done;
      const inPage = pos % PAGE_SIZE;
      const len = Math.min(buf.length - done, PAGE_SIZE - inPage);
      const index = Math.floor(pos / PAGE_SIZE);
      if (index >= this.shmem.sizePages) this.shmem.sizePages = index + 1;
      const pfn = this.core.fault.shmemGetPage(this.shmem, index);
      if (pfn < 0) throw new HmmError("ENOMEM", `no page for index ${index} of the file`, "buf");
      contents.write(pfn, inPage, buf.subarray(done, done + len));
      done += len;
      this.bytes = Math.max(this.bytes, pos + len);
    }
    return buf.length;
  }

  /**
   * Close the file: drop its reference to the page cache (freed once no VMA maps it). Idempotent.
   * @see fput, shmem_evict_inode
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.core.shmemVmaRef(this.shmem.id, -1);
  }

  private check(buf: Uint8Array, offset: number): void {
    if (this.closed) throw new HmmError("EBADF", "the file is closed", "file");
    if (!(buf instanceof Uint8Array)) einval("buf", "a Uint8Array");
    if (!Number.isSafeInteger(offset) || offset < 0) einval("offset", `a byte offset >= 0, got ${offset}`);
  }
}
