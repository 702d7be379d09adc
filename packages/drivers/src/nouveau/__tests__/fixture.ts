/**
 * Test fixtures for the nouveau-like driver: a machine with a platform on its PhysContext, the
 * module, a task with an anonymous SVM range, access-stream builders, and the leak guard.
 */
import { MADV_NOHUGEPAGE, MAP_ANONYMOUS, MAP_PRIVATE, Machine, PAGE_SIZE, PG, PROT_READ, PROT_WRITE, type Task } from "@hmmkit/core";
import { ACCESS_READ, ACCESS_WRITE, type AccessStream, Platform, type PlatformConfig } from "@hmmkit/device-emu";
import { expect } from "vitest";
import { NouveauModule, type NouveauOptions } from "../../index";

/** One test's world. */
export class World {
  readonly m: Machine;
  readonly platform: Platform;
  readonly mod: NouveauModule;
  readonly tasks: Task[] = [];
  readonly initialFree: number;

  constructor(platform: PlatformConfig, opts: NouveauOptions = {}, ramMiB = 256, seed = 1) {
    this.m = Machine.create({ ramMiB: [ramMiB], seed });
    this.initialFree = this.m.alloc.nrFreePages;
    this.platform = Platform.create(this.m, platform);
    this.mod = NouveauModule.probe(this.m, this.platform, opts);
  }

  spawn(): Task {
    const t = this.m.mm.spawn();
    this.tasks.push(t);
    return t;
  }

  /** An anonymous private RW mapping of `bytes` (no THP). */
  mmap(t: Task, bytes: number): number {
    const va = t.mm.mmap(0, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
    t.mm.madvise(va, bytes, MADV_NOHUGEPAGE);
    return va;
  }

  /** Fill `npages` pages with a per-page pattern from the CPU. */
  async fill(t: Task, va: number, npages: number, salt = 0): Promise<void> {
    const buf = new Uint8Array(npages * PAGE_SIZE);
    for (let p = 0; p < npages; p++) buf.fill((p * 7 + salt) & 0xff, p * PAGE_SIZE, p * PAGE_SIZE + 64);
    await this.m.mm.write(t, va, buf);
  }

  /** The leak guard: tear everything down and check nothing is left. */
  async teardown(): Promise<void> {
    const m = this.m;
    await m.run();
    for (const t of this.tasks) m.mm.exit(t);
    await m.settle(this.mod.remove());
    await m.run();
    expect(this.mod.quiescent()).toEqual([]);
    for (const d of this.mod.drivers) {
      expect(d.dmem.freePages).toBe(d.dmem.nchunks * 512);
      expect(d.dmem.freeChunkCount).toBe(d.dmem.nchunks);
      expect(d.gpu.vram.framesInUse).toBe(0);
      expect(d.gpu.copy.idle).toBe(true);
    }
    expect(m.clock.pending).toBe(0);
    // No system page leaked or left locked.
    expect(m.alloc.nrFreePages).toBe(this.initialFree);
    for (let p = 0; p < m.pages.flags.length; p++) {
      if ((m.pages.flags[p] as number) & PG.locked) throw new Error(`pfn ${p} left locked`);
    }
    this.platform.dispose();
    m.dispose();
  }
}

/** One warp touching `npages` consecutive pages once each (streaming). */
export function streamPages(va: number, npages: number, write = false, stride = 1): AccessStream {
  const addr = new Float64Array(npages);
  for (let i = 0; i < npages; i++) addr[i] = va + i * stride * PAGE_SIZE;
  return { addr, size: new Uint16Array(npages).fill(8), flags: new Uint8Array(npages).fill(write ? ACCESS_WRITE : ACCESS_READ) };
}

/** Pattern byte the CPU wrote to page p. */
export function pat(p: number, salt = 0): number {
  return (p * 7 + salt) & 0xff;
}
