/**
 * CPU replay of an access stream by a task: the synchronous fast path of DESIGN.md ("a resident
 * stretch of a trace: plain loops over typed arrays, no promise").
 *
 * Theory of operation. For each access the loop translates its page with the MMU walk
 * (`FaultHandler.followPte`), remembering the last translated page and whether it was writable;
 * nothing else can change the page table while the loop runs synchronously, so a run of accesses
 * to one page costs one comparison each. A miss calls `handleMmFault` (zero-fill, COW, THP,
 * device-private → `migrateToRam`, …); only a fault that must wait returns a promise, and only then
 * does the loop await, after which the cached translation is dropped. Accesses move no bytes
 * (a "touch" of each byte range), as a trace carries no values.
 *
 * @see mm/memory.c (handle_mm_fault), arch fault path (the MMU walk then do_user_addr_fault)
 */
import { BugError, HmmError, type MmCore, type Task, VM_FAULT } from "@hmmkit/core";
import { ACCESS_WRITE, type AccessStream } from "@hmmkit/device-emu";

const INV_PAGE = 1 / 4096;

/** Result of {@link replayCpu}. */
export interface CpuReplayStats {
  /** Accesses executed. */
  accesses: number;
  /** CPU faults taken (calls to handleMmFault). */
  faults: number;
  /** Faults that had to wait (device-private pages migrated back, migration entries). */
  asyncFaults: number;
}

/**
 * Execute `stream` as CPU loads/stores of `task`.
 * @param core - the machine's mm layer (`machine.mm`).
 * @param task - a live task whose mm maps every address of the stream.
 * @param stream - accesses (address, size ≤ 4096 not crossing a page, ACCESS_* flags).
 * @param onProgress - called with the number of accesses done, every 2^20 accesses.
 * @returns counts.
 * @throws HmmError EFAULT (no mapping or access denied), ENOMEM (OOM), EHWPOISON naming the access
 *   index and address; BugError when a fault makes no progress after 64 retries.
 * Context: may await (only on a fault that waits); holds nothing across the await.
 * @see handle_mm_fault
 */
export async function replayCpu(
  core: MmCore,
  task: Task,
  stream: AccessStream,
  onProgress?: (done: number) => void,
): Promise<CpuReplayStats> {
  const mm = task.mm;
  const fault = core.fault;
  const pages = core.pages;
  const contents = core.contents;
  const { addr, flags } = stream;
  const n = stream.count ?? addr.length;
  const stats: CpuReplayStats = { accesses: 0, faults: 0, asyncFaults: 0 };
  // The last translated page: [lo, hi) and whether it was translated for a write.
  let lo = 1;
  let hi = 0;
  let cachedWrite = false;
  let retries = 0;
  for (let i = 0; i < n; ) {
    const a = addr[i] as number;
    const write = ((flags[i] as number) & ACCESS_WRITE) !== 0;
    if (a >= lo && a < hi && (cachedWrite || !write)) {
      i++;
      if ((i & 0xfffff) === 0 && onProgress !== undefined) onProgress(i);
      continue;
    }
    const pfn = fault.followPte(mm, a, write);
    if (pfn >= 0) {
      const region = pages.regionOf(pfn);
      if (region === undefined || !region.cpuAccessible) contents.checkCpu(pfn);
      lo = Math.floor(a * INV_PAGE) * 4096;
      hi = lo + 4096;
      cachedWrite = write;
      retries = 0;
      i++;
      if ((i & 0xfffff) === 0 && onProgress !== undefined) onProgress(i);
      continue;
    }
    stats.faults++;
    lo = 1;
    hi = 0;
    let r = fault.handleMmFault(mm, a, write);
    if (typeof r !== "number") {
      stats.asyncFaults++;
      r = await r;
    }
    if (r !== 0) {
      const code = r & VM_FAULT.OOM ? "ENOMEM" : r & VM_FAULT.HWPOISON ? "EHWPOISON" : "EFAULT";
      throw new HmmError(code, `access ${i} at 0x${a.toString(16)} (${write ? "write" : "read"}): fault code ${r}`, `access[${i}]`);
    }
    if (++retries > 64) throw new BugError("fault-livelock", `CPU replay: fault at 0x${a.toString(16)} retried 64 times without progress`);
  }
  stats.accesses = n;
  return stats;
}
