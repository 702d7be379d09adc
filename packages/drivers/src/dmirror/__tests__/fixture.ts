/**
 * Test fixtures for the dmirror selftest port: the kselftest `hmm`/`hmm2` fixtures and variants,
 * the `hmm_dmirror_cmd` helper, int-pattern buffers, and the leak guard every test ends with.
 * @see tools/testing/selftests/mm/hmm-tests.c (FIXTURE(hmm), FIXTURE(hmm2), hmm_dmirror_cmd)
 */
import { Machine, PAGE_SIZE, PG, type Task } from "@hmmkit/core";
import { expect } from "vitest";
import { type DmirrorFile, DmirrorModule, type DmirrorOptions, type HmmDmirrorCmd } from "../../index";

/** `HMM_BUFFER_SIZE >> PAGE_SHIFT`: 1024 pages. */
export const HMM_BUFFER_NPAGES = 1024;
/** `read_pmd_pagesize()`. */
export const TWOMEG = 2 * 1024 * 1024;
/** Loop count of the *_multiple tests. */
export const NTIMES = 10;

/** A variant of FIXTURE(hmm): one device. */
export interface HmmVariant {
  name: string;
  deviceNumber: number;
  coherent: boolean;
}
/** A variant of FIXTURE(hmm2): two devices of one type. */
export interface Hmm2Variant {
  name: string;
  deviceNumber0: number;
  deviceNumber1: number;
  coherent: boolean;
}

/** FIXTURE_VARIANT_ADD(hmm, hmm_device_private / hmm_device_coherent). */
export const HMM_VARIANTS: HmmVariant[] = [
  { name: "hmm_device_private", deviceNumber: 0, coherent: false },
  { name: "hmm_device_coherent", deviceNumber: 2, coherent: true },
];
/** FIXTURE_VARIANT_ADD(hmm2, hmm2_device_private / hmm2_device_coherent). */
export const HMM2_VARIANTS: Hmm2Variant[] = [
  { name: "hmm2_device_private", deviceNumber0: 0, deviceNumber1: 1, coherent: false },
  { name: "hmm2_device_coherent", deviceNumber0: 2, deviceNumber1: 3, coherent: true },
];

/** `struct hmm_buffer` of the selftest. */
export interface HmmBuffer {
  /** User address of the mapping used for commands. */
  ptr: number;
  /** Host-side bounce buffer. */
  mirror: Uint8Array;
  /** Bytes mapped at `mapped` (for munmap at free). */
  size: number;
  /** Start of what hmm_buffer_free unmaps (0: nothing). */
  mapped: number;
  cpages: number;
  faults: number;
}

/** The machine, module and process of one test. */
export class Ctx {
  readonly m: Machine;
  readonly mod: DmirrorModule;
  readonly t: Task;
  readonly files: DmirrorFile[] = [];
  readonly tasks: Task[] = [];
  readonly initialFree: number;

  /** @param opts - machine size, dmirror options, seed, and HugeTLB pool pages (`hugepages`, 2 MiB each). */
  constructor(opts: { ramMiB?: number; dmirror?: DmirrorOptions; seed?: number; hugepages?: number } = {}) {
    this.m = Machine.create({ ramMiB: [opts.ramMiB ?? 256], seed: opts.seed ?? 1, hugepages: opts.hugepages ?? 0 });
    this.mod = DmirrorModule.load(this.m, opts.dmirror ?? {});
    this.initialFree = this.m.alloc.nrFreePages;
    this.t = this.spawn();
  }

  spawn(): Task {
    const t = this.m.mm.spawn();
    this.tasks.push(t);
    return t;
  }

  fork(parent: Task): Task {
    const t = this.m.mm.fork(parent);
    this.tasks.push(t);
    return t;
  }

  /** hmm_open(unit) for task `t`. */
  open(unit: number, t: Task = this.t): DmirrorFile {
    const f = this.mod.open(unit, t);
    this.files.push(f);
    return f;
  }

  /** mmap for the main task. */
  mmap(size: number, prot: number, flags: number, t: Task = this.t): number {
    return t.mm.mmap(0, size, prot, flags);
  }

  async read(va: number, len: number, t: Task = this.t): Promise<Uint8Array> {
    return this.m.mm.read(t, va, len);
  }

  async write(va: number, data: Uint8Array, t: Task = this.t): Promise<void> {
    await this.m.mm.write(t, va, data);
  }

  /**
   * The leak guard: close every file (evicting device memory), exit every task, then check that
   * every device page is free and on its free list, no page is locked or waited on, system
   * memory is back to where it started (the huge zero page, once allocated, is never freed),
   * and unloading leaves nothing behind. Disposes the machine.
   */
  teardown(): void {
    const m = this.m;
    for (const f of this.files) f.close();
    for (const t of this.tasks) m.mm.exit(t);
    for (const d of this.mod.devices) {
      expect.soft(d.allocatedPages, `hmm_dmirror${d.id} pages still allocated`).toBe(0);
      expect.soft(d.freeListPages, `hmm_dmirror${d.id} free lists`).toBe(d.totalPages);
      for (const c of d.chunks) {
        let busy = 0;
        let stale = 0;
        for (let p = c.pagemap.startPfn; p < c.pagemap.endPfn; p++) {
          if ((m.pages.refcount[p] as number) !== 0) busy++;
          else if ((m.pages.mapping[p] as number) !== 0 || (m.pages.index[p] as number) !== 0) stale++;
        }
        expect.soft(busy, `hmm_dmirror${d.id} pages with a reference`).toBe(0);
        expect.soft(stale, `hmm_dmirror${d.id} free pages keeping a mapping or index`).toBe(0);
      }
    }
    let locked = 0;
    for (let p = 0; p < m.pages.maxPfn; p++) if ((m.pages.flags[p] as number) & PG.locked) locked++;
    expect.soft(locked, "locked pages").toBe(0);
    expect.soft(m.mm.refs.waitingPages, "pages waited on").toBe(0);
    expect.soft(m.mm.hugetlb.freeHugepages, "HugeTLB pool pages free").toBe(m.mm.hugetlb.nrHugepages);
    expect.soft(m.mm.hugetlb.resvHugepages, "HugeTLB pages reserved").toBe(0);
    const hugeZero = m.mm.huge.hugeZeroPfn >= 0 ? 512 : 0;
    expect.soft(m.alloc.nrFreePages + hugeZero, "system free pages").toBe(this.initialFree);
    this.mod.unload();
    expect.soft(m.alloc.nrFreePages + hugeZero, "system free pages after unload").toBe(this.initialFree);
    m.dispose();
  }
}

/** A fresh hmm_buffer with a mirror of `mirrorBytes` (default `size`). */
export function buffer(ptr: number, size: number, mirrorBytes = size): HmmBuffer {
  return { ptr, mirror: new Uint8Array(mirrorBytes), size, mapped: ptr, cpages: 0, faults: 0 };
}

/**
 * hmm_dmirror_cmd(): `{addr = buffer->ptr, ptr = buffer->mirror, npages}`; on success copies
 * cpages/faults back into the buffer; returns 0 or -errno.
 */
export async function hmmDmirrorCmd(fd: DmirrorFile, request: number, buf: HmmBuffer, npages: number): Promise<number> {
  const cmd: HmmDmirrorCmd = { addr: buf.ptr, ptr: buf.mirror, npages, cpages: 0, faults: 0 };
  const ret = await fd.ioctl(request, cmd);
  if (ret !== 0) return ret;
  buf.cpages = cmd.cpages;
  buf.faults = cmd.faults;
  return 0;
}

/** Bytes of an int array `f(0) .. f(n-1)` (little-endian int32, as `int *ptr` in the selftest). */
export function ints(n: number, f: (i: number) => number): Uint8Array {
  const a = new Int32Array(n);
  for (let i = 0; i < n; i++) a[i] = f(i);
  return new Uint8Array(a.buffer);
}

/** View bytes as int32. */
export function asInts(b: Uint8Array): Int32Array {
  return new Int32Array(b.buffer, b.byteOffset, Math.floor(b.byteLength / 4));
}

/**
 * First index in `[from, to)` where `a[i] !== f(i)`, or -1 — for asserting millions of ints
 * without a slow diff.
 */
export function firstMismatch(a: Int32Array, f: (i: number) => number, from = 0, to = a.length): number {
  for (let i = from; i < to; i++) if (a[i] !== f(i)) return i;
  return -1;
}

/** Assert every int of `bytes` (from `from` to `to`) equals `f(i)`. */
export function expectInts(bytes: Uint8Array, f: (i: number) => number, from = 0, to?: number): void {
  const a = asInts(bytes);
  const i = firstMismatch(a, f, from, to ?? a.length);
  expect(i, i < 0 ? "" : `int ${i}: got ${a[i]}, want ${f(i)}`).toBe(-1);
}

/** ALIGN(x, a). */
export function align(x: number, a: number): number {
  return Math.ceil(x / a) * a;
}

/** Pages of `bytes`. */
export function pages(bytes: number): number {
  return bytes / PAGE_SIZE;
}
