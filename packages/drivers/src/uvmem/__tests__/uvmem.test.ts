/**
 * The uvmem driver (book3s_hv_uvmem.c) against the emulated ultravisor: lifecycle hcalls and their
 * exact H_* results, the never-plaintext property over every host read path, page-out/page-in
 * round trips and integrity checks, shared pages, abort/teardown/memslot removal freeing every
 * secure page once, concurrency under uvmem_lock, and owner filtering against dmirror. Every
 * test ends with the leak guard (UvCtx.teardown).
 */
import {
  entryPayload,
  HmmError,
  MADV_DONTNEED,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  MIGRATE_VMA_SELECT,
  type MigrateVma,
  PAGE_SHIFT,
  PAGE_SIZE,
  PROT_READ,
  PROT_WRITE,
  SWP,
  swpType,
} from "@hmmkit/core";
import { describe, expect, it } from "vitest";
import {
  H_AUTHORITY,
  H_P2,
  H_P3,
  H_PAGE_IN_SHARED,
  H_PARAMETER,
  H_STATE,
  H_SUCCESS,
  H_UNSUPPORTED,
  HMM_DMIRROR_MIGRATE_TO_DEV,
  HMM_DMIRROR_MIGRATE_TO_SYS,
  HMM_DMIRROR_READ,
  type HmmDmirrorCmd,
  KVMPPC_GFN_MEM_PFN,
  KVMPPC_GFN_SHARED,
  KVMPPC_GFN_UVMEM_PFN,
  KVMPPC_SECURE_INIT_DONE,
  KVMPPC_SECURE_INIT_START,
  KvmppcUvmem,
  Mutex,
  SvmGuest,
  Ultravisor,
  type UvRejectEvent,
} from "../../index";
import { imagePage, ramPagesContaining, sameBytes, secretMarker, secretPage, UvCtx } from "./fixture";

const ALL = (n: number) => Array.from({ length: n }, (_, i) => i);

/** Boot, go secure with every frame paged in, then let the guest write secrets into frames `gfns`. */
async function secureWithSecrets(c: UvCtx, tag: string, gfns: number[]): Promise<void> {
  await c.boot();
  expect(await c.run(c.guest.esm(ALL(c.npages)))).toBe(H_SUCCESS);
  for (const g of gfns) await c.run(c.guest.write(g * PAGE_SIZE, secretPage(tag, g)));
}

describe("lifecycle hcalls", () => {
  it("fail with the kernel's H_* codes in the wrong context", async () => {
    const c = new UvCtx();
    await c.boot();
    const { uvmem, kvm } = c;
    expect(await c.run(uvmem.svmPageIn(kvm, 0, 0, PAGE_SHIFT))).toBe(H_UNSUPPORTED);
    expect(await c.run(uvmem.svmPageOut(kvm, 0, 0, PAGE_SHIFT))).toBe(H_UNSUPPORTED);
    expect(await c.run(uvmem.initDone(kvm))).toBe(H_UNSUPPORTED);
    expect(await c.run(uvmem.initAbort(kvm))).toBe(H_UNSUPPORTED);
    expect(await c.run(uvmem.initStart(kvm))).toBe(H_SUCCESS);
    expect(kvm.secureGuest).toBe(KVMPPC_SECURE_INIT_START);
    expect(await c.run(uvmem.svmPageIn(kvm, 0, 0, 16))).toBe(H_P3);
    expect(await c.run(uvmem.svmPageIn(kvm, 0, 2, PAGE_SHIFT))).toBe(H_P2);
    expect(await c.run(uvmem.svmPageOut(kvm, 0, 1, PAGE_SHIFT))).toBe(H_P2);
    expect(await c.run(uvmem.svmPageOut(kvm, 0, 0, 16))).toBe(H_P3);
    // A gpa in no memslot.
    expect(await c.run(uvmem.svmPageIn(kvm, c.npages * PAGE_SIZE, 0, PAGE_SHIFT))).toBe(H_PARAMETER);
    // Page-out of a gfn that is not in secure memory: a successful no-op.
    expect(await c.run(uvmem.svmPageOut(kvm, 3 * PAGE_SIZE, 0, PAGE_SHIFT))).toBe(H_SUCCESS);
    expect(kvm.gfnState(3)).toBe(0);
    expect(await c.run(uvmem.initDone(kvm))).toBe(H_SUCCESS);
    expect(kvm.secureGuest).toBe(KVMPPC_SECURE_INIT_START | KVMPPC_SECURE_INIT_DONE);
    expect(await c.run(uvmem.initAbort(kvm))).toBe(H_STATE);
    uvmem.verify();
    await c.teardown();
  });

  it("INIT_START: H_UNSUPPORTED without secure memory or for a hash guest, H_AUTHORITY without the capability", async () => {
    const none = new UvCtx({ uvmem: { secureMemPages: 0 } });
    await none.boot();
    expect(none.uvmem.available()).toBe(false);
    expect(await none.run(none.uvmem.initStart(none.kvm))).toBe(H_UNSUPPORTED);
    await none.teardown();

    const c = new UvCtx();
    const hash = c.createVm(c.spawn(), { radix: false });
    expect(await c.run(c.uvmem.initStart(hash))).toBe(H_UNSUPPORTED);
    const off = c.createVm(c.spawn(), { svmEnabled: false });
    expect(await c.run(c.uvmem.initStart(off))).toBe(H_AUTHORITY);
    await c.teardown();
  });

  it("INIT_DONE moves every remaining Normal gfn to secure memory without copying; shared gfns stay shared", async () => {
    const c = new UvCtx();
    await c.boot();
    const { uvmem, kvm, uv } = c;
    expect(await c.run(uvmem.initStart(kvm))).toBe(H_SUCCESS);
    expect(await c.run(uvmem.svmPageIn(kvm, 2 * PAGE_SIZE, 0, PAGE_SHIFT))).toBe(H_SUCCESS);
    expect(await c.run(uvmem.svmPageIn(kvm, 5 * PAGE_SIZE, H_PAGE_IN_SHARED, PAGE_SHIFT))).toBe(H_SUCCESS);
    // Page-in of a gfn already in secure memory fails without side effects.
    const before = c.uvmemPfns();
    expect(await c.run(uvmem.svmPageIn(kvm, 2 * PAGE_SIZE, 0, PAGE_SHIFT))).toBe(H_PARAMETER);
    expect(c.uvmemPfns()).toEqual(before);
    expect(uv.stats.pageInPlain).toBe(1);
    expect(await c.run(uvmem.initDone(kvm))).toBe(H_SUCCESS);
    for (let g = 0; g < c.npages; g++) expect(kvm.gfnState(g), `gfn ${g}`).toBe(g === 5 ? KVMPPC_GFN_SHARED : KVMPPC_GFN_UVMEM_PFN);
    expect(uvmem.pagesInUse).toBe(c.npages - 1);
    expect(uv.stats.pageInPlain).toBe(1); // INIT_DONE's page-ins copy nothing
    uvmem.verify();
    // gfn 2 was paged in with its image; the others got fresh zeroed frames; gfn 5 is the host's page.
    expect(await c.run(c.guest.read(2 * PAGE_SIZE, PAGE_SIZE))).toEqual(imagePage(2));
    expect(await c.run(c.guest.read(3 * PAGE_SIZE, PAGE_SIZE))).toEqual(new Uint8Array(PAGE_SIZE));
    await c.teardown();
  });

  it("UV_ESM pages in the image, and the guest runs from secure memory", async () => {
    const c = new UvCtx();
    await c.boot();
    expect(await c.run(c.guest.esm(ALL(c.npages)))).toBe(H_SUCCESS);
    expect(c.uv.stats.pageInPlain).toBe(c.npages);
    for (let g = 0; g < c.npages; g++) expect(await c.run(c.guest.read(g * PAGE_SIZE, PAGE_SIZE))).toEqual(imagePage(g));
    // The host's mapping is device-private: the host's own pages are gone.
    for (let g = 0; g < c.npages; g++) expect(c.hostPfn(g)).toBe(-1);
    c.uvmem.verify();
    await c.teardown();
  });

  it("validates its options and arguments", () => {
    const c = new UvCtx();
    expect(() => Ultravisor.create(c.m, { pageInNs: -1 })).toThrow(HmmError);
    expect(() => KvmppcUvmem.init(c.m, c.uv, { secureMemPages: 100 })).toThrow(/secureMemPages/);
    expect(() => c.uvmem.createVm(c.qemu, { radix: 1 as unknown as boolean })).toThrow(/opts.radix/);
    return c.teardown();
  });
});

describe("the host never sees a secure page's plaintext", () => {
  it("CPU access: migrateToRam hands the host AES-GCM ciphertext, and host RAM never holds the secret", async () => {
    const c = new UvCtx();
    await secureWithSecrets(c, "cpu", ALL(c.npages));
    const { uvmem, kvm, uv } = c;
    expect(ramPagesContaining(c.m, secretMarker("cpu"))).toEqual([]);
    for (let g = 0; g < c.npages; g++) {
      const bytes = await c.hostRead(g);
      const secret = secretPage("cpu", g);
      expect(bytes).not.toEqual(secret);
      expect(sameBytes(bytes, secret)).toBeLessThan(64); // ~16 expected by chance
      expect(kvm.gfnState(g)).toBe(KVMPPC_GFN_MEM_PFN);
    }
    expect(uv.stats.pageOutEncrypted).toBe(c.npages);
    expect(uvmem.pagesInUse).toBe(0);
    expect(ramPagesContaining(c.m, secretMarker("cpu"))).toEqual([]);
    uvmem.verify();
    // The guest still reads its secrets (each access pages the frame back in, decrypting it).
    for (let g = 0; g < c.npages; g++) expect(await c.run(c.guest.read(g * PAGE_SIZE, PAGE_SIZE))).toEqual(secretPage("cpu", g));
    expect(uv.stats.pageInDecrypt).toBe(c.npages);
    expect(ramPagesContaining(c.m, secretMarker("cpu"))).toEqual([]);
    await c.teardown();
  });

  it("a write fault gets ciphertext too, and the host's write never reaches secure memory", async () => {
    const c = new UvCtx();
    await secureWithSecrets(c, "wr", [1]);
    await c.run(c.m.mm.write(c.qemu, c.hva + PAGE_SIZE + 100, new Uint8Array([1, 2, 3])));
    expect(c.kvm.gfnState(1)).toBe(KVMPPC_GFN_MEM_PFN);
    // The host's store corrupted the ciphertext: the UV refuses it, the guest takes a machine check.
    await expect(c.run(c.guest.read(PAGE_SIZE, 16))).rejects.toThrow(/EFAULT/);
    expect(c.uv.stats.pageInRejected).toBe(1);
    c.uvmem.verify();
    await c.teardown();
  });

  it("DMA: a dmirror device reading the guest's memory faults the pages out and reads ciphertext", async () => {
    const c = new UvCtx({ dmirror: true });
    await secureWithSecrets(c, "dma", ALL(c.npages));
    const mod = c.mod as NonNullable<typeof c.mod>;
    const fd = mod.open(0, c.qemu);
    const ptr = new Uint8Array(c.npages * PAGE_SIZE);
    const cmd: HmmDmirrorCmd = { addr: c.hva, ptr, npages: c.npages, cpages: 0, faults: 0 };
    expect(await c.run(fd.ioctl(HMM_DMIRROR_READ, cmd))).toBe(0);
    expect(cmd.cpages).toBe(c.npages);
    for (let g = 0; g < c.npages; g++) {
      const got = ptr.subarray(g * PAGE_SIZE, (g + 1) * PAGE_SIZE);
      expect(sameBytes(got, secretPage("dma", g))).toBeLessThan(64);
      expect(got).toEqual(await c.hostRead(g)); // the very ciphertext the host maps
      expect(c.kvm.gfnState(g)).toBe(KVMPPC_GFN_MEM_PFN);
    }
    expect(Buffer.from(ptr).indexOf(Buffer.from(secretMarker("dma")))).toBe(-1);
    expect(ramPagesContaining(c.m, secretMarker("dma"))).toEqual([]);
    c.uvmem.verify();
    fd.close();
    await c.teardown();
  });

  it("fork: the child's access pages the frame out for both; both see the same ciphertext", async () => {
    const c = new UvCtx();
    await secureWithSecrets(c, "fork", [0, 1]);
    const child = c.m.mm.fork(c.qemu);
    c.tasks.push(child);
    const inChild = await c.hostRead(0, child);
    expect(sameBytes(inChild, secretPage("fork", 0))).toBeLessThan(64);
    expect(c.kvm.gfnState(0)).toBe(KVMPPC_GFN_MEM_PFN);
    expect(await c.hostRead(0)).toEqual(inChild);
    c.uvmem.verify();
    // The child exits holding a device-private entry for gfn 1: the parent still maps it.
    c.m.mm.exit(child);
    expect(c.kvm.gfnState(1)).toBe(KVMPPC_GFN_UVMEM_PFN);
    c.uvmem.verify();
    expect(await c.run(c.guest.read(0, PAGE_SIZE))).toEqual(secretPage("fork", 0));
    expect(await c.run(c.guest.read(PAGE_SIZE, PAGE_SIZE))).toEqual(secretPage("fork", 1));
    expect(ramPagesContaining(c.m, secretMarker("fork"))).toEqual([]);
    await c.teardown();
  });

  it("swap: a paged-out page reaches the swap device as ciphertext, and comes back to the guest intact", async () => {
    const c = new UvCtx({ swapMiB: 4 });
    await secureWithSecrets(c, "swap", [0, 1, 2]);
    const { m, kvm, uvmem } = c;
    const cts: Uint8Array[] = [];
    const pfns: number[] = [];
    for (const g of [0, 1, 2]) {
      cts[g] = await c.hostRead(g);
      pfns.push(c.hostPfn(g));
    }
    expect(m.mm.vmscan.reclaimPages(pfns)).toBe(3);
    const dev = m.mm.swap.device;
    if (dev === undefined) throw new Error("no swap device");
    for (const g of [0, 1, 2]) {
      const e = c.qemu.mm.pt.getPte(c.hva + g * PAGE_SIZE);
      expect(swpType(e)).toBe(SWP.SWAP);
      let onDisk: Uint8Array = new Uint8Array(0);
      dev.swapReadpage(entryPayload(e), -1, (_pfn, src) => {
        onDisk = src.slice();
      });
      expect(onDisk).toEqual(cts[g]);
      expect(Buffer.from(onDisk).indexOf(Buffer.from(secretMarker("swap")))).toBe(-1);
    }
    // As in the kernel, migrate_vma does not collect a swap entry: H_SVM_PAGE_IN alone fails.
    expect(await c.run(uvmem.svmPageIn(kvm, 0, 0, PAGE_SHIFT))).toBe(H_PARAMETER);
    expect(kvm.gfnState(0)).toBe(KVMPPC_GFN_MEM_PFN);
    // The guest's access faults the page in first (swap-in), then the UV decrypts it.
    for (const g of [0, 1, 2]) expect(await c.run(c.guest.read(g * PAGE_SIZE, PAGE_SIZE))).toEqual(secretPage("swap", g));
    expect(ramPagesContaining(m, secretMarker("swap"))).toEqual([]);
    uvmem.verify();
    await c.teardown();
  });

  it("is reproducible: the same seed gives the same ciphertext, another seed another one", async () => {
    const run = async (seed: number) => {
      const c = new UvCtx({ seed });
      await secureWithSecrets(c, "det", [4]);
      const ct = await c.hostRead(4);
      const t = c.m.clock.now;
      await c.teardown();
      return { ct, t };
    };
    const a = await run(11);
    const b = await run(11);
    const d = await run(12);
    expect(b.ct).toEqual(a.ct);
    expect(b.t).toBe(a.t);
    expect(sameBytes(d.ct, a.ct)).toBeLessThan(64);
  });
});

describe("page-out and page-in", () => {
  it("H_SVM_PAGE_OUT then H_SVM_PAGE_IN restores the bytes, through ciphertext in host memory", async () => {
    const c = new UvCtx();
    await secureWithSecrets(c, "rt", [6]);
    const { uvmem, kvm } = c;
    const d = uvmem.gfnIsUvmemPfn(6, kvm);
    c.resetFrees();
    expect(await c.run(uvmem.svmPageOut(kvm, 6 * PAGE_SIZE, 0, PAGE_SHIFT))).toBe(H_SUCCESS);
    expect(c.frees.get(d)).toBe(1);
    expect(kvm.gfnState(6)).toBe(KVMPPC_GFN_MEM_PFN);
    const pfn = c.hostPfn(6);
    expect(pfn).toBeGreaterThanOrEqual(0);
    const ct = new Uint8Array(PAGE_SIZE);
    c.m.contents.read(pfn, 0, ct);
    expect(sameBytes(ct, secretPage("rt", 6))).toBeLessThan(64);
    // Already out: another page-out is a successful no-op.
    expect(await c.run(uvmem.svmPageOut(kvm, 6 * PAGE_SIZE, 0, PAGE_SHIFT))).toBe(H_SUCCESS);
    expect(c.uv.stats.pageOutEncrypted).toBe(1);
    expect(await c.run(uvmem.svmPageIn(kvm, 6 * PAGE_SIZE, 0, PAGE_SHIFT))).toBe(H_SUCCESS);
    expect(kvm.gfnState(6)).toBe(KVMPPC_GFN_UVMEM_PFN);
    expect(c.uv.stats.pageInDecrypt).toBe(1);
    expect(await c.run(c.guest.read(6 * PAGE_SIZE, PAGE_SIZE))).toEqual(secretPage("rt", 6));
    uvmem.verify();
    await c.teardown();
  });

  it("a tampered page-out is rejected on page-in with H_PARAMETER and nothing changes", async () => {
    const c = new UvCtx();
    await secureWithSecrets(c, "tamper", [3]);
    const { uvmem, kvm, uv } = c;
    const rejects: UvRejectEvent[] = [];
    uv.bus.on("didRejectPageIn", (e) => rejects.push(e));
    expect(await c.run(uvmem.svmPageOut(kvm, 3 * PAGE_SIZE, 0, PAGE_SHIFT))).toBe(H_SUCCESS);
    const pfn = c.hostPfn(3);
    const ct = new Uint8Array(PAGE_SIZE);
    c.m.contents.read(pfn, 0, ct);
    const flipped = new Uint8Array([(ct[2000] as number) ^ 0x40]);
    await c.run(c.m.mm.write(c.qemu, c.hva + 3 * PAGE_SIZE + 2000, flipped));
    const inUse = uvmem.pagesInUse;
    const allocated = uvmem.stats.pagesAllocated;
    c.resetFrees();
    expect(await c.run(uvmem.svmPageIn(kvm, 3 * PAGE_SIZE, 0, PAGE_SHIFT))).toBe(H_PARAMETER);
    expect(rejects).toEqual([{ lpid: kvm.lpid, gfn: 3, reason: "auth-tag" }]);
    expect(kvm.gfnState(3)).toBe(KVMPPC_GFN_MEM_PFN);
    expect(c.hostPfn(3)).toBe(pfn);
    const after = new Uint8Array(PAGE_SIZE);
    c.m.contents.read(pfn, 0, after);
    expect(after[2000]).toBe(flipped[0]);
    expect(uvmem.pagesInUse).toBe(inUse);
    // The device page taken for the attempt went back (once), with the gfn's old state.
    expect(uvmem.stats.pagesAllocated).toBe(allocated + 1);
    expect([...c.frees.values()]).toEqual([1]);
    uvmem.verify();
    // Undo the tampering: the page comes back.
    await c.run(c.m.mm.write(c.qemu, c.hva + 3 * PAGE_SIZE + 2000, new Uint8Array([ct[2000] as number])));
    expect(await c.run(uvmem.svmPageIn(kvm, 3 * PAGE_SIZE, 0, PAGE_SHIFT))).toBe(H_SUCCESS);
    expect(await c.run(c.guest.read(3 * PAGE_SIZE, PAGE_SIZE))).toEqual(secretPage("tamper", 3));
    await c.teardown();
  });

  it("replayed, moved and discarded ciphertexts are rejected too", async () => {
    const c = new UvCtx();
    await secureWithSecrets(c, "replay", [1, 2]);
    const { uvmem, kvm, m } = c;
    const out = async (g: number) => {
      expect(await c.run(uvmem.svmPageOut(kvm, g * PAGE_SIZE, 0, PAGE_SHIFT))).toBe(H_SUCCESS);
      const b = new Uint8Array(PAGE_SIZE);
      m.contents.read(c.hostPfn(g), 0, b);
      return b;
    };
    const old1 = await out(1);
    expect(await c.run(uvmem.svmPageIn(kvm, PAGE_SIZE, 0, PAGE_SHIFT))).toBe(H_SUCCESS);
    const new1 = await out(1);
    expect(sameBytes(new1, old1)).toBeLessThan(64); // fresh nonce per page-out
    // Replay the older ciphertext of the same gfn.
    await c.run(m.mm.write(c.qemu, c.hva + PAGE_SIZE, old1));
    expect(await c.run(uvmem.svmPageIn(kvm, PAGE_SIZE, 0, PAGE_SHIFT))).toBe(H_PARAMETER);
    // Move gfn 2's current ciphertext onto gfn 1.
    const ct2 = await out(2);
    await c.run(m.mm.write(c.qemu, c.hva + PAGE_SIZE, ct2));
    expect(await c.run(uvmem.svmPageIn(kvm, PAGE_SIZE, 0, PAGE_SHIFT))).toBe(H_PARAMETER);
    // Discard gfn 2's ciphertext (the host page becomes a hole).
    c.qemu.mm.madvise(c.hva + 2 * PAGE_SIZE, PAGE_SIZE, MADV_DONTNEED);
    expect(await c.run(uvmem.svmPageIn(kvm, 2 * PAGE_SIZE, 0, PAGE_SHIFT))).toBe(H_PARAMETER);
    expect(c.uv.stats.pageInRejected).toBe(3);
    expect(kvm.gfnState(1)).toBe(KVMPPC_GFN_MEM_PFN);
    expect(kvm.gfnState(2)).toBe(KVMPPC_GFN_MEM_PFN);
    // The genuine ciphertext still works.
    await c.run(m.mm.write(c.qemu, c.hva + PAGE_SIZE, new1));
    expect(await c.run(uvmem.svmPageIn(kvm, PAGE_SIZE, 0, PAGE_SHIFT))).toBe(H_SUCCESS);
    expect(await c.run(c.guest.read(PAGE_SIZE, PAGE_SIZE))).toEqual(secretPage("replay", 1));
    uvmem.verify();
    await c.teardown();
  });
});

describe("shared pages", () => {
  it("H_PAGE_IN_SHARED brings a secure gfn back without UV_PAGE_OUT; the page stays host-readable both ways", async () => {
    const c = new UvCtx();
    await secureWithSecrets(c, "share", [7]);
    const { uvmem, kvm, uv } = c;
    const d = uvmem.gfnIsUvmemPfn(7, kvm);
    c.resetFrees();
    expect(await c.run(c.guest.sharePage(7, 1))).toBe(H_SUCCESS);
    expect(c.frees.get(d)).toBe(1);
    expect(uv.stats.pageOutEncrypted).toBe(0);
    expect(kvm.gfnState(7)).toBe(KVMPPC_GFN_SHARED);
    // The secret was not copied out: the shared page starts zeroed.
    expect(await c.hostRead(7)).toEqual(new Uint8Array(PAGE_SIZE));
    const msg = new TextEncoder().encode("virtio ring: hello host");
    await c.run(c.guest.write(7 * PAGE_SIZE, msg));
    expect((await c.hostRead(7)).subarray(0, msg.length)).toEqual(msg);
    const reply = new TextEncoder().encode("hello guest");
    await c.run(c.m.mm.write(c.qemu, c.hva + 7 * PAGE_SIZE + 64, reply));
    expect(await c.run(c.guest.read(7 * PAGE_SIZE + 64, reply.length))).toEqual(reply);
    // Sharing a shared or Normal gfn keeps the host page.
    const pfn = c.hostPfn(7);
    expect(await c.run(uvmem.svmPageIn(kvm, 7 * PAGE_SIZE, H_PAGE_IN_SHARED, PAGE_SHIFT))).toBe(H_SUCCESS);
    expect(c.hostPfn(7)).toBe(pfn);
    uvmem.verify();
    // Unshare: the host's content becomes secure content; the host is locked out again.
    expect(await c.run(c.guest.unsharePage(7, 1))).toBe(H_SUCCESS);
    expect(kvm.gfnState(7)).toBe(KVMPPC_GFN_UVMEM_PFN);
    expect(c.hostPfn(7)).toBe(-1);
    expect(await c.run(c.guest.read(7 * PAGE_SIZE + 64, reply.length))).toEqual(reply);
    uvmem.verify();
    await c.teardown();
  });
});

describe("abort and teardown return or free every secure page, once", () => {
  it("H_SVM_INIT_ABORT pages every secure page out for real; the VM is Normal with its memory back", async () => {
    const c = new UvCtx();
    await c.boot();
    const { uvmem, kvm, uv } = c;
    expect(await c.run(uvmem.initStart(kvm))).toBe(H_SUCCESS);
    for (const g of [0, 1, 2, 9]) expect(await c.run(uvmem.svmPageIn(kvm, g * PAGE_SIZE, 0, PAGE_SHIFT))).toBe(H_SUCCESS);
    expect(await c.run(uvmem.svmPageIn(kvm, 4 * PAGE_SIZE, H_PAGE_IN_SHARED, PAGE_SHIFT))).toBe(H_SUCCESS);
    const secure = new Set(c.uvmemPfns());
    expect(secure.size).toBe(4);
    c.resetFrees();
    expect(await c.run(uvmem.initAbort(kvm))).toBe(H_PARAMETER);
    expect(new Set(c.frees.keys())).toEqual(secure);
    for (const n of c.frees.values()) expect(n).toBe(1);
    expect(kvm.secureGuest).toBe(0);
    expect(uv.hasSvm(kvm.lpid)).toBe(false);
    for (let g = 0; g < c.npages; g++) expect(kvm.gfnState(g)).toBe(0);
    expect(uvmem.pagesInUse).toBe(0);
    // A VM that never ran secure gets its own (host-supplied) pages back usable.
    for (const g of [0, 1, 2, 9]) expect(await c.hostRead(g)).toEqual(imagePage(g));
    expect(uv.stats.pageOutPlain).toBe(4);
    expect(uv.stats.pageOutEncrypted).toBe(0);
    uvmem.verify();
    await c.teardown();
  });

  it("UV_ESM aborts when a page cannot be paged in (another device holds it)", async () => {
    const c = new UvCtx({ dmirror: true });
    await c.boot();
    const fd = (c.mod as NonNullable<typeof c.mod>).open(0, c.qemu);
    const ptr = new Uint8Array(PAGE_SIZE);
    const cmd: HmmDmirrorCmd = { addr: c.hva + 5 * PAGE_SIZE, ptr, npages: 1, cpages: 0, faults: 0 };
    expect(await c.run(fd.ioctl(HMM_DMIRROR_MIGRATE_TO_DEV, cmd))).toBe(0);
    c.resetFrees();
    expect(await c.run(c.guest.esm(ALL(c.npages)))).toBe(H_PARAMETER);
    expect(c.frees.size).toBe(5); // gfns 0..4 were in secure memory
    for (const n of c.frees.values()) expect(n).toBe(1);
    expect(c.kvm.secureGuest).toBe(0);
    expect(c.uvmem.pagesInUse).toBe(0);
    // dmirror's page was never touched.
    expect(ptr).toEqual(imagePage(5));
    expect(await c.hostRead(5)).toEqual(imagePage(5));
    c.uvmem.verify();
    fd.close();
    await c.teardown();
  });

  it("VM teardown drops every secure page without UV_PAGE_OUT and frees each once", async () => {
    const c = new UvCtx();
    await secureWithSecrets(c, "td", ALL(16));
    const { uvmem, kvm, uv } = c;
    await c.run(uvmem.svmPageOut(kvm, 0, 0, PAGE_SHIFT));
    const secure = new Set(c.uvmemPfns());
    expect(secure.size).toBe(c.npages - 1);
    const outs = uv.stats.pageOutEncrypted;
    c.resetFrees();
    await c.run(uvmem.destroyVm(kvm));
    expect(new Set(c.frees.keys())).toEqual(secure);
    for (const n of c.frees.values()) expect(n).toBe(1);
    expect(uv.stats.pageOutEncrypted).toBe(outs);
    expect(uv.hasSvm(kvm.lpid)).toBe(false);
    // The dropped frames are fresh zeroed host pages: no secret, no ciphertext to decrypt.
    expect(await c.hostRead(3)).toEqual(new Uint8Array(PAGE_SIZE));
    expect(ramPagesContaining(c.m, secretMarker("td"))).toEqual([]);
    await c.teardown();
  });

  it("the host process exiting frees every secure page through folioFree, once", async () => {
    const c = new UvCtx();
    await secureWithSecrets(c, "exit", [0]);
    const secure = new Set(c.uvmemPfns());
    c.resetFrees();
    c.m.mm.exit(c.qemu);
    expect(new Set(c.frees.keys())).toEqual(secure);
    for (const n of c.frees.values()) expect(n).toBe(1);
    expect(c.uvmem.pagesInUse).toBe(0);
    await c.teardown();
  });

  it("KVM_PPC_SVM_OFF turns the VM back into a normal one", async () => {
    const c = new UvCtx();
    await secureWithSecrets(c, "off", [2]);
    const secure = new Set(c.uvmemPfns());
    c.resetFrees();
    expect(await c.run(c.uvmem.svmOff(c.kvm))).toBe(0);
    expect(new Set(c.frees.keys())).toEqual(secure);
    expect(c.kvm.secureGuest).toBe(0);
    expect(c.uv.hasSvm(c.kvm.lpid)).toBe(false);
    // A normal VM's guest accesses are the host's memory.
    const b = new TextEncoder().encode("normal again");
    await c.run(c.guest.write(2 * PAGE_SIZE, b));
    expect((await c.hostRead(2)).subarray(0, b.length)).toEqual(b);
    expect(await c.run(c.uvmem.svmOff(c.kvm))).toBe(0);
    await c.teardown();
  });
});

describe("memslot hotplug of a secure VM", () => {
  it("a new slot is registered and moved to secure memory; a removed slot's pages are dropped", async () => {
    const c = new UvCtx();
    await secureWithSecrets(c, "slot", [0]);
    const { uvmem, kvm, uv, m } = c;
    const hva2 = c.qemu.mm.mmap(0, 8 * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
    await c.run(m.mm.write(c.qemu, hva2, new TextEncoder().encode("hotplugged")));
    expect(await c.run(uvmem.setMemorySlot(kvm, { id: 1, baseGfn: 0x1000, npages: 8, userspaceAddr: hva2 }))).toBe(0);
    for (let g = 0x1000; g < 0x1008; g++) expect(kvm.gfnState(g)).toBe(KVMPPC_GFN_UVMEM_PFN);
    uvmem.verify();
    await c.run(c.guest.write(0x1003 * PAGE_SIZE, secretPage("slot", 0x1003)));
    const secure = new Set(Array.from({ length: 8 }, (_, i) => uvmem.gfnIsUvmemPfn(0x1000 + i, kvm)));
    expect(secure.size).toBe(8);
    const outs = uv.stats.pageOutEncrypted;
    c.resetFrees();
    await c.run(uvmem.deleteMemorySlot(kvm, 1));
    expect(new Set(c.frees.keys())).toEqual(secure);
    expect(uv.stats.pageOutEncrypted).toBe(outs); // dropped, not paged out
    expect(kvm.uvmemSlotOf(0x1000)).toBeUndefined();
    expect(uv.uvUnregisterMemSlot(kvm.lpid, 1)).toBeLessThan(0); // already unregistered
    expect(kvm.gfnState(0)).toBe(KVMPPC_GFN_UVMEM_PFN);
    expect(ramPagesContaining(m, secretMarker("slot"))).toEqual([]);
    uvmem.verify();
    await expect(c.run(uvmem.deleteMemorySlot(kvm, 1))).rejects.toThrow(/ENOENT/);
    await c.teardown();
  });
});

describe("uvmem_lock: concurrent operations on one frame end consistent", () => {
  it("page-in in flight, then a host fault on the same frame", async () => {
    const c = new UvCtx();
    await secureWithSecrets(c, "race1", [5]);
    const { uvmem, kvm, m } = c;
    expect(await c.run(uvmem.svmPageOut(kvm, 5 * PAGE_SIZE, 0, PAGE_SHIFT))).toBe(H_SUCCESS);
    const pin = uvmem.svmPageIn(kvm, 5 * PAGE_SIZE, 0, PAGE_SHIFT);
    await m.clock.runUntil(m.clock.now + 500); // inside UV_PAGE_IN, lock held, migration entry installed
    expect(kvm.uvmemLock.isLocked).toBe(true);
    const rd = m.mm.read(c.qemu, c.hva + 5 * PAGE_SIZE, PAGE_SIZE);
    const [r, bytes] = await c.run(Promise.all([pin, rd]));
    expect(r).toBe(H_SUCCESS);
    expect(sameBytes(bytes, secretPage("race1", 5))).toBeLessThan(64);
    // The host's fault paged the frame out again after the page-in finished.
    expect(kvm.gfnState(5)).toBe(KVMPPC_GFN_MEM_PFN);
    expect(c.uv.stats.pageOutEncrypted).toBe(2);
    uvmem.verify();
    expect(await c.run(c.guest.read(5 * PAGE_SIZE, PAGE_SIZE))).toEqual(secretPage("race1", 5));
    await c.teardown();
  });

  it("host fault in flight, then H_SVM_PAGE_IN and H_SVM_PAGE_OUT of the same frame", async () => {
    const c = new UvCtx();
    await secureWithSecrets(c, "race2", [9]);
    const { uvmem, kvm, m } = c;
    const rd = m.mm.read(c.qemu, c.hva + 9 * PAGE_SIZE, PAGE_SIZE);
    await m.clock.runUntil(m.clock.now + 500); // migrateToRam inside UV_PAGE_OUT
    expect(kvm.uvmemLock.isLocked).toBe(true);
    const pout = uvmem.svmPageOut(kvm, 9 * PAGE_SIZE, 0, PAGE_SHIFT);
    const pin = uvmem.svmPageIn(kvm, 9 * PAGE_SIZE, 0, PAGE_SHIFT);
    expect(kvm.uvmemLock.waiting).toBeGreaterThanOrEqual(1);
    const [bytes, ro, ri] = await c.run(Promise.all([rd, pout, pin]));
    expect(sameBytes(bytes, secretPage("race2", 9))).toBeLessThan(64);
    expect(ro).toBe(H_SUCCESS); // the page was already out: no-op
    expect(ri).toBe(H_SUCCESS);
    expect(kvm.gfnState(9)).toBe(KVMPPC_GFN_UVMEM_PFN);
    uvmem.verify();
    expect(await c.run(c.guest.read(9 * PAGE_SIZE, PAGE_SIZE))).toEqual(secretPage("race2", 9));
    await c.teardown();
  });

  it("two page-ins of one frame: one wins, the other fails without side effects", async () => {
    const c = new UvCtx();
    await c.boot();
    expect(await c.run(c.uvmem.initStart(c.kvm))).toBe(H_SUCCESS);
    const a = c.uvmem.svmPageIn(c.kvm, 0, 0, PAGE_SHIFT);
    const b = c.uvmem.svmPageIn(c.kvm, 0, 0, PAGE_SHIFT);
    expect(await c.run(Promise.all([a, b]))).toEqual([H_SUCCESS, H_PARAMETER]);
    expect(c.uvmem.pagesInUse).toBe(1);
    c.uvmem.verify();
    await c.teardown();
  });

  it("serialises page-ins of one VM but not of two VMs", async () => {
    const c = new UvCtx({ uv: { pageInNs: 1000, pageOutNs: 1000 } });
    await c.boot();
    const q2 = c.spawn();
    const hva2 = q2.mm.mmap(0, 4 * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
    const kvm2 = c.createVm(q2);
    await c.run(c.uvmem.setMemorySlot(kvm2, { id: 0, baseGfn: 0, npages: 4, userspaceAddr: hva2 }));
    expect(await c.run(c.uvmem.initStart(c.kvm))).toBe(H_SUCCESS);
    expect(await c.run(c.uvmem.initStart(kvm2))).toBe(H_SUCCESS);
    let t0 = c.m.clock.now;
    await c.run(Promise.all([c.uvmem.svmPageIn(c.kvm, 0, 0, PAGE_SHIFT), c.uvmem.svmPageIn(c.kvm, PAGE_SIZE, 0, PAGE_SHIFT)]));
    expect(c.m.clock.now - t0).toBe(2000);
    t0 = c.m.clock.now;
    await c.run(Promise.all([c.uvmem.svmPageIn(c.kvm, 2 * PAGE_SIZE, 0, PAGE_SHIFT), c.uvmem.svmPageIn(kvm2, 0, 0, PAGE_SHIFT)]));
    expect(c.m.clock.now - t0).toBe(1000);
    c.uvmem.verify();
    await c.teardown();
  });
});

describe("owner filtering", () => {
  it("dmirror's migrations never collect secure pages", async () => {
    const c = new UvCtx({ dmirror: true });
    await secureWithSecrets(c, "own", ALL(4));
    const { uvmem, kvm, m } = c;
    const mod = c.mod as NonNullable<typeof c.mod>;
    const before = c.uvmemPfns();
    const fd = mod.open(0, c.qemu);
    // MIGRATE_TO_DEV selects system pages only: the secure pages are not there to take.
    const cmd: HmmDmirrorCmd = { addr: c.hva, ptr: new Uint8Array(4 * PAGE_SIZE), npages: 4, cpages: 0, faults: 0 };
    expect(await c.run(fd.ioctl(HMM_DMIRROR_MIGRATE_TO_DEV, cmd))).toBe(-2); // -ENOENT: nothing mirrored
    // MIGRATE_TO_SYS selects dmirror's own device-private pages: the UV's are foreign.
    expect(await c.run(fd.ioctl(HMM_DMIRROR_MIGRATE_TO_SYS, cmd))).toBe(0);
    expect(cmd.cpages).toBe(0);
    // Any driver asking for device-private pages with its own owner gets nothing.
    const vma = c.qemu.mm.findVma(c.hva);
    if (vma === undefined) throw new Error("no vma");
    const args: MigrateVma = {
      mm: c.qemu.mm,
      vma,
      start: c.hva,
      end: c.hva + 4 * PAGE_SIZE,
      src: new Float64Array(4),
      dst: new Float64Array(4),
      pgmapOwner: mod.devices[0],
      flags: MIGRATE_VMA_SELECT.DEVICE_PRIVATE | MIGRATE_VMA_SELECT.SYSTEM,
      cpages: 0,
      npages: 0,
    };
    m.migrate.migrateVmaSetup(args);
    expect(args.cpages).toBe(0);
    m.migrate.migrateVmaFinalize(args);
    expect(c.uvmemPfns()).toEqual(before);
    for (let g = 0; g < 4; g++) expect(kvm.gfnState(g)).toBe(KVMPPC_GFN_UVMEM_PFN);
    expect(c.uv.stats.pageOutEncrypted).toBe(0);
    uvmem.verify();
    fd.close();
    await c.teardown();
  });

  it("uvmem never collects another device's pages", async () => {
    const c = new UvCtx({ dmirror: true });
    await c.boot();
    const { uvmem, kvm } = c;
    const fd = (c.mod as NonNullable<typeof c.mod>).open(0, c.qemu);
    const cmd: HmmDmirrorCmd = { addr: c.hva + 3 * PAGE_SIZE, ptr: new Uint8Array(2 * PAGE_SIZE), npages: 2, cpages: 0, faults: 0 };
    expect(await c.run(fd.ioctl(HMM_DMIRROR_MIGRATE_TO_DEV, cmd))).toBe(0);
    const dev = c.mod?.devices[0];
    const allocated = dev?.allocatedPages;
    expect(await c.run(uvmem.initStart(kvm))).toBe(H_SUCCESS);
    const n0 = uvmem.stats.pagesAllocated;
    expect(await c.run(uvmem.svmPageIn(kvm, 3 * PAGE_SIZE, 0, PAGE_SHIFT))).toBe(H_PARAMETER);
    expect(uvmem.stats.pagesAllocated).toBe(n0); // refused before a secure page was taken
    expect(kvm.gfnState(3)).toBe(0);
    // INIT_DONE cannot move them either: H_STATE, the VM stays transient.
    expect(await c.run(uvmem.initDone(kvm))).toBe(H_STATE);
    expect(kvm.secureGuest).toBe(KVMPPC_SECURE_INIT_START);
    expect(dev?.allocatedPages).toBe(allocated);
    const buf = new Uint8Array(2 * PAGE_SIZE);
    const rd: HmmDmirrorCmd = { addr: c.hva + 3 * PAGE_SIZE, ptr: buf, npages: 2, cpages: 0, faults: 0 };
    expect(await c.run(fd.ioctl(HMM_DMIRROR_READ, rd))).toBe(0);
    expect(buf.subarray(0, PAGE_SIZE)).toEqual(imagePage(3));
    expect(buf.subarray(PAGE_SIZE)).toEqual(imagePage(4));
    uvmem.verify();
    expect(await c.run(uvmem.initAbort(kvm))).toBe(H_PARAMETER);
    fd.close();
    await c.teardown();
  });
});

describe("Mutex", () => {
  it("hands the lock over in FIFO order and reports a bad unlock", async () => {
    const mu = new Mutex("t");
    const order: number[] = [];
    await mu.lock();
    const w = [1, 2, 3].map((i) => mu.lock().then(() => order.push(i)));
    expect(mu.waiting).toBe(3);
    expect(mu.tryLock()).toBe(false);
    for (let i = 0; i < 3; i++) {
      mu.unlock();
      await w[i];
    }
    mu.unlock();
    expect(order).toEqual([1, 2, 3]);
    expect(mu.isLocked).toBe(false);
    expect(() => mu.unlock()).toThrow(/mutex-unlock-unlocked/);
  });
});

describe("SvmGuest", () => {
  it("refuses accesses of a transient VM, which never executes", async () => {
    const c = new UvCtx();
    await c.boot();
    expect(await c.run(c.uvmem.initStart(c.kvm))).toBe(H_SUCCESS);
    await expect(c.run(c.guest.read(0, 8))).rejects.toThrow(/transient/);
    expect(new SvmGuest(c.uvmem, c.kvm).kvm).toBe(c.kvm);
    await c.teardown();
  });
});
