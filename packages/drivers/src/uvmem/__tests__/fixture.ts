/**
 * Test fixture for the uvmem driver: a machine with an ultravisor, the uvmem driver, a QEMU-like
 * host process whose anonymous mapping backs one memslot, a secure-guest driver, secret page
 * contents, a scan of host RAM for a secret, and the leak guard every test ends with.
 */
import { MAP_ANONYMOUS, MAP_PRIVATE, Machine, PAGE_SIZE, PG, PROT_READ, PROT_WRITE, type Task } from "@hmmkit/core";
import { expect } from "vitest";
import { DmirrorModule } from "../../dmirror/test-hmm";
import { type Kvm, KvmppcUvmem, type KvmppcUvmemOptions } from "../book3s-hv-uvmem";
import { SvmGuest } from "../svm";
import { Ultravisor, type UltravisorOptions } from "../ultravisor";

/** Options of {@link UvCtx}. */
export interface UvCtxOptions {
  seed?: number;
  ramMiB?: number;
  /** Swap device size (MiB). Default 0. */
  swapMiB?: number;
  /** Guest frames of the first memslot. Default 16. */
  npages?: number;
  uvmem?: KvmppcUvmemOptions;
  uv?: UltravisorOptions;
  /** Load dmirror (private devices only, small chunks). Default false. */
  dmirror?: boolean;
}

/** One machine with one VM whose memslot 0 covers `npages` frames at `hva`. */
export class UvCtx {
  readonly m: Machine;
  readonly uv: Ultravisor;
  readonly uvmem: KvmppcUvmem;
  readonly mod: DmirrorModule | undefined;
  readonly qemu: Task;
  readonly hva: number;
  readonly npages: number;
  readonly kvm: Kvm;
  readonly guest: SvmGuest;
  readonly tasks: Task[] = [];
  readonly vms: Kvm[] = [];
  /** folioFree calls per device pfn since the last {@link UvCtx.resetFrees}. */
  readonly frees = new Map<number, number>();
  private readonly initialFree: number;

  constructor(opts: UvCtxOptions = {}) {
    this.m = Machine.create({ ramMiB: [opts.ramMiB ?? 32], seed: opts.seed ?? 1, swapMiB: opts.swapMiB ?? 0 });
    this.uv = Ultravisor.create(this.m, opts.uv ?? {});
    this.uvmem = KvmppcUvmem.init(this.m, this.uv, opts.uvmem ?? { secureMemPages: 512 });
    const orig = this.uvmem.ops.folioFree;
    this.uvmem.ops.folioFree = (head, order) => {
      this.frees.set(head, (this.frees.get(head) ?? 0) + 1);
      orig(head, order);
    };
    this.mod = opts.dmirror ? DmirrorModule.load(this.m, { coherent: false, chunkPages: 512, maxChunks: 2 }) : undefined;
    this.initialFree = this.m.alloc.nrFreePages;
    this.npages = opts.npages ?? 16;
    this.qemu = this.spawn();
    this.hva = this.qemu.mm.mmap(0, this.npages * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
    this.kvm = this.createVm(this.qemu);
    this.guest = new SvmGuest(this.uvmem, this.kvm);
  }

  spawn(): Task {
    const t = this.m.mm.spawn();
    this.tasks.push(t);
    return t;
  }

  createVm(task: Task, opts: { svmEnabled?: boolean; radix?: boolean } = {}): Kvm {
    const kvm = this.uvmem.createVm(task, opts);
    this.vms.push(kvm);
    return kvm;
  }

  /** Run the clock until `p` settles. */
  run<T>(p: Promise<T>): Promise<T> {
    return this.m.settle(p);
  }

  /** Add memslot 0 (gfn 0..npages) and load the guest image (plaintext the host wrote). */
  async boot(image: (gfn: number) => Uint8Array = (g) => imagePage(g)): Promise<void> {
    await this.run(this.uvmem.setMemorySlot(this.kvm, { id: 0, baseGfn: 0, npages: this.npages, userspaceAddr: this.hva }));
    for (let g = 0; g < this.npages; g++) await this.run(this.m.mm.write(this.qemu, this.hva + g * PAGE_SIZE, image(g)));
  }

  /** Host (QEMU) read of one guest frame through its mapping. */
  hostRead(gfn: number, task: Task = this.qemu): Promise<Uint8Array> {
    return this.run(this.m.mm.read(task, this.hva + gfn * PAGE_SIZE, PAGE_SIZE));
  }

  /** The host pfn currently mapped (present) at a frame's host address, or -1. */
  hostPfn(gfn: number): number {
    return this.m.mm.fault.followPte(this.qemu.mm, this.hva + gfn * PAGE_SIZE, false);
  }

  resetFrees(): void {
    this.frees.clear();
  }

  /** Device pfns currently backing gfns of `kvm`. */
  uvmemPfns(kvm: Kvm = this.kvm): number[] {
    const out: number[] = [];
    for (const s of kvm.memslots) {
      for (let g = s.baseGfn; g < s.baseGfn + s.npages; g++) {
        const u = this.uvmem.gfnIsUvmemPfn(g, kvm);
        if (u >= 0) out.push(u);
      }
    }
    return out;
  }

  /**
   * Leak guard: destroy every VM, exit every task, then check that every secure page was freed
   * (allocations = frees, bitmap empty, no device page referenced), no page is locked or waited
   * on, system memory is back where it started, and the pgmap can be unregistered.
   */
  async teardown(): Promise<void> {
    const m = this.m;
    for (const kvm of this.vms) await this.run(this.uvmem.destroyVm(kvm));
    for (const t of this.tasks) m.mm.exit(t);
    expect.soft(this.uvmem.pagesInUse, "secure pages in use").toBe(0);
    expect.soft(this.uvmem.stats.pagesFreed, "secure pages freed = allocated").toBe(this.uvmem.stats.pagesAllocated);
    const pg = this.uvmem.pgmap;
    if (pg !== undefined) {
      let busy = 0;
      for (let p = pg.startPfn; p < pg.endPfn; p++) if ((m.pages.refcount[p] as number) !== 0) busy++;
      expect.soft(busy, "secure pages with a reference").toBe(0);
    }
    let locked = 0;
    for (let p = 0; p < m.pages.maxPfn; p++) if ((m.pages.flags[p] as number) & PG.locked) locked++;
    expect.soft(locked, "locked pages").toBe(0);
    expect.soft(m.mm.refs.waitingPages, "pages waited on").toBe(0);
    const hugeZero = m.mm.huge.hugeZeroPfn >= 0 ? 512 : 0;
    expect.soft(m.alloc.nrFreePages + hugeZero, "system free pages").toBe(this.initialFree);
    this.mod?.unload();
    this.uvmem.free();
    m.dispose();
  }
}

/** Deterministic filler bytes. */
function fill(buf: Uint8Array, from: number, seed: number): void {
  let x = (seed * 2654435761 + 0x9e3779b9) >>> 0 || 1;
  for (let i = from; i < buf.length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    buf[i] = x & 0xff;
  }
}

/** The host-supplied image of a frame (known to the host: not secret). */
export function imagePage(gfn: number): Uint8Array {
  const b = new Uint8Array(PAGE_SIZE);
  b.set(new TextEncoder().encode(`IMAGE:${gfn}:`));
  fill(b, 16, 1000 + gfn);
  return b;
}

/** A secret page the guest writes: starts with `TOP-SECRET:<tag>:<gfn>:`. */
export function secretPage(tag: string, gfn: number): Uint8Array {
  const b = new Uint8Array(PAGE_SIZE);
  const head = new TextEncoder().encode(`TOP-SECRET:${tag}:${gfn}:`);
  b.set(head);
  fill(b, head.length, 7_000_000 + gfn * 31 + tag.length);
  return b;
}

/** The marker that starts every secret page of `tag`. */
export function secretMarker(tag: string): Uint8Array {
  return new TextEncoder().encode(`TOP-SECRET:${tag}:`);
}

/** System RAM pfns whose contents include `needle` (host-visible memory only). */
export function ramPagesContaining(m: Machine, needle: Uint8Array): number[] {
  const found: number[] = [];
  const nb = Buffer.from(needle);
  for (const r of m.pages.regions) {
    if (r.kind !== "ram") continue;
    for (let p = r.basePfn; p < r.basePfn + r.npages; p++) {
      if (!m.contents.isBacked(p)) continue;
      const v = m.contents.view(p);
      if (Buffer.from(v.buffer, v.byteOffset, v.length).indexOf(nb) >= 0) found.push(p);
    }
  }
  return found;
}

/** Number of equal bytes at equal offsets. */
export function sameBytes(a: Uint8Array, b: Uint8Array): number {
  let n = 0;
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] === b[i]) n++;
  return n;
}
