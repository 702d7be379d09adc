/**
 * The emulated Protected Execution Ultravisor (UV): the firmware that owns secure memory on POWER
 * PEF systems, seen through the ultracalls the hypervisor makes (`UV_PAGE_IN`, `UV_PAGE_OUT`,
 * `UV_REGISTER_MEM_SLOT`, `UV_UNREGISTER_MEM_SLOT`, `UV_SVM_TERMINATE`).
 *
 * Theory of operation
 * -------------------
 * Secure memory is the device-private pgmap the HV driver (book3s-hv-uvmem.ts) registers; the
 * UV is its owner identity (`pgmap.owner`), and its bytes are the device pages' own contents,
 * reached only through the unchecked contents API, which stands for the UV's accesses. The CPU's
 * checked path reports any access to them as a bug, so no HV/host path can read secure memory
 * without going through a page-out. (The real UV chooses its own secure frames and the HV's
 * device pfns are tokens; here the device pfn *is* the frame, so `uvPageIn`/`uvPageOut` also
 * carry it. The other arguments are the kernel's.)
 *
 * Each secure VM (SVM) gets, when its first memory slot is registered, an AES-256-GCM key and a
 * 4-byte nonce salt drawn from the machine's seeded Rng (a stream forked per SVM generation, so
 * runs are reproducible and a reused lpid never reuses a key). `UV_PAGE_OUT` encrypts the secure
 * page into the HV's normal page: nonce = salt ‖ 64-bit per-SVM page-out counter (unique per key),
 * additional data = the gfn (a ciphertext moved to another gfn fails). The 16-byte tag and the
 * counter stay in UV memory, per gfn, so the host page holds exactly PAGE_SIZE bytes of
 * ciphertext. `UV_PAGE_IN` of a gfn whose last page-out is outstanding decrypts and verifies it
 * (a modified, moved, discarded or replayed page fails with U_PARAMETER and nothing changes);
 * a gfn never paged out (the VM's initial image, or a shared page being unshared) is taken as is.
 * A page-in with no secure destination is the share protocol: the UV maps the HV's normal page
 * and marks the gfn shared (its content is not copied and never encrypted).
 *
 * One exception to encryption, on purpose: while the UV aborts a VM that never went secure
 * (H_SVM_INIT_ABORT between INIT_START and INIT_DONE), page-out returns the page in the clear.
 * The VM goes back to being a normal VM and must find its memory usable; it never executed in
 * secure mode (a transient VM never runs), so its secure pages hold only what the host supplied.
 *
 * Ultracalls that move a page take simulated time (`pageInNs`, `pageOutNs`); the copy or the
 * crypto happens when that time has elapsed, synchronously with the caller's next step.
 *
 * @see arch/powerpc/include/asm/ultravisor.h, arch/powerpc/include/asm/ultravisor-api.h,
 *      Documentation/arch/powerpc/ultravisor.rst
 */
import { createCipheriv, createDecipheriv } from "node:crypto";
import { BugError, HmmError, type Machine, PAGE_SHIFT, PAGE_SIZE, TraceBus } from "@hmmkit/core";

/** Ultracall succeeded. @see U_SUCCESS (= H_SUCCESS) */
export const U_SUCCESS = 0;
/** Generic parameter error (bad gpa, failed integrity check, unknown slot). @see U_PARAMETER (= H_PARAMETER) */
export const U_PARAMETER = -4;
/** Permission denied (the SVM is unknown to the UV). @see U_PERMISSION (= H_PERMISSION) */
export const U_PERMISSION = -11;
/** Second parameter (flags) invalid. @see U_P2 (= H_P2) */
export const U_P2 = -55;
/** Third parameter invalid. @see U_P3 (= H_P3) */
export const U_P3 = -56;

/** Ultracall numbers, as the HV issues them. @see arch/powerpc/include/asm/ultravisor-api.h */
export const UV_CALL = {
  /** @see UV_REGISTER_MEM_SLOT */
  REGISTER_MEM_SLOT: 0xf120,
  /** @see UV_UNREGISTER_MEM_SLOT */
  UNREGISTER_MEM_SLOT: 0xf124,
  /** @see UV_PAGE_IN */
  PAGE_IN: 0xf128,
  /** @see UV_PAGE_OUT */
  PAGE_OUT: 0xf12c,
  /** @see UV_SVM_TERMINATE */
  SVM_TERMINATE: 0xf13c,
} as const;

/** Bytes of the AES-GCM authentication tag kept per gfn in UV memory. @see uv_page_out */
export const UV_TAG_BYTES = 16;

/** Options of {@link Ultravisor.create}. @see uv_page_in, uv_page_out */
export interface UltravisorOptions {
  /** Simulated duration of one UV_PAGE_IN (copy or decrypt of one page), ns; 0..1e9. Default 2000. */
  pageInNs?: number;
  /** Simulated duration of one UV_PAGE_OUT (encrypt of one page), ns; 0..1e9. Default 2000. */
  pageOutNs?: number;
}

/** Payload of `didPageIn`. @see uv_page_in */
export interface UvPageInEvent {
  /** Partition id. */
  readonly lpid: number;
  /** Guest frame. */
  readonly gfn: number;
  /** How the page came in: `"plain"` (first page-in), `"decrypt"` (a page-out coming back), `"shared"`. */
  readonly kind: "plain" | "decrypt" | "shared";
}

/** Payload of `didPageOut`. @see uv_page_out */
export interface UvPageOutEvent {
  /** Partition id. */
  readonly lpid: number;
  /** Guest frame. */
  readonly gfn: number;
  /** Whether the page left encrypted (false only while aborting a VM that never went secure). */
  readonly encrypted: boolean;
}

/** Payload of `didRejectPageIn`. @see uv_page_in */
export interface UvRejectEvent {
  /** Partition id. */
  readonly lpid: number;
  /** Guest frame. */
  readonly gfn: number;
  /** Why: the GCM tag did not verify (page modified, moved, replayed or discarded). */
  readonly reason: "auth-tag";
}

/** Events of the ultravisor (no kernel tracepoints exist for these; `did<Verb><Subject>`). @see uv_page_in, uv_page_out */
export interface UltravisorEvents {
  /** A page entered secure memory or became shared. */
  didPageIn: readonly [UvPageInEvent];
  /** A secure page left for the HV's memory. */
  didPageOut: readonly [UvPageOutEvent];
  /** A page-in failed its integrity check; nothing changed. */
  didRejectPageIn: readonly [UvRejectEvent];
}

/** Counters of the ultravisor. @see uv_page_in, uv_page_out */
export interface UltravisorStats {
  /** Pages copied into secure memory as is. */
  pageInPlain: number;
  /** Pages decrypted and verified into secure memory. */
  pageInDecrypt: number;
  /** Pages that became shared. */
  pageInShared: number;
  /** Pages encrypted out to the HV. */
  pageOutEncrypted: number;
  /** Pages handed back in the clear (abort of a VM that never went secure). */
  pageOutPlain: number;
  /** Page-ins rejected by the integrity check. */
  pageInRejected: number;
}

/** UV-side per-gfn flag: a ciphertext of this gfn is outstanding in HV memory. */
const GFN_OUT = 1;
/** UV-side per-gfn flag: the gfn is shared (mapped from HV memory, never encrypted). */
const GFN_SHARED = 2;

/** A memory slot registered with the UV: per-gfn flags, page-out counters and tags. */
class UvSlot {
  readonly flags: Uint8Array;
  readonly seq: Float64Array;
  readonly tags: Uint8Array;
  constructor(
    readonly id: number,
    readonly baseGfn: number,
    readonly npages: number,
  ) {
    this.flags = new Uint8Array(npages);
    this.seq = new Float64Array(npages);
    this.tags = new Uint8Array(npages * UV_TAG_BYTES);
  }
}

/** The UV's state of one secure VM. */
class UvSvm {
  readonly slots: UvSlot[] = [];
  /** Next page-out counter (nonce low part). */
  nextSeq = 0;
  /** The VM went secure (H_SVM_INIT_DONE succeeded). */
  wentSecure = false;
  /** The UV is aborting the VM (H_SVM_INIT_ABORT in progress). */
  aborting = false;
  constructor(
    readonly lpid: number,
    readonly key: Buffer,
    readonly salt: Buffer,
  ) {}

  slotOf(gfn: number): UvSlot | undefined {
    for (const s of this.slots) if (gfn >= s.baseGfn && gfn < s.baseGfn + s.npages) return s;
    return undefined;
  }
}

function validNs(v: number | undefined, name: string, dflt: number): number {
  const x = v ?? dflt;
  if (typeof x !== "number" || !Number.isFinite(x) || x < 0 || x > 1e9) {
    throw new HmmError("EINVAL", `${name}: a number of ns in 0..1e9, got ${String(v)}`, name);
  }
  return x;
}

/**
 * The ultravisor of one machine.
 * @see arch/powerpc/include/asm/ultravisor.h
 */
export class Ultravisor {
  /** Ultravisor events. */
  readonly bus = new TraceBus<UltravisorEvents>();
  /** Counters. */
  readonly stats: UltravisorStats = {
    pageInPlain: 0,
    pageInDecrypt: 0,
    pageInShared: 0,
    pageOutEncrypted: 0,
    pageOutPlain: 0,
    pageInRejected: 0,
  };
  private readonly svms = new Map<number, UvSvm>();
  private generation = 0;
  private readonly scratch = new Uint8Array(PAGE_SIZE);

  private constructor(
    /** The machine whose secure memory this UV owns. */
    readonly machine: Machine,
    /** Duration of a UV_PAGE_IN, ns. */
    readonly pageInNs: number,
    /** Duration of a UV_PAGE_OUT, ns. */
    readonly pageOutNs: number,
  ) {}

  /**
   * Bring the ultravisor up on a machine (firmware, before the HV driver initialises).
   * @param machine - the machine. @param opts - see {@link UltravisorOptions}.
   * @returns the ultravisor.
   * @throws HmmError EINVAL naming a bad option (`opts.pageInNs`, `opts.pageOutNs`).
   * @see Documentation/arch/powerpc/ultravisor.rst (Ultravisor initialization)
   * @example
   * ```ts
   * const uv = Ultravisor.create(machine);
   * const uvmem = KvmppcUvmem.init(machine, uv, { secureMemPages: 4096 });
   * ```
   */
  static create(machine: Machine, opts: UltravisorOptions = {}): Ultravisor {
    if (opts === null || typeof opts !== "object") throw new HmmError("EINVAL", "opts: an object", "opts");
    return new Ultravisor(machine, validNs(opts.pageInNs, "opts.pageInNs", 2000), validNs(opts.pageOutNs, "opts.pageOutNs", 2000));
  }

  /**
   * Whether the UV knows the SVM `lpid` (it has registered memory slots).
   * @param lpid - partition id. @returns true if so.
   * @see struct svm (the ultravisor's per-guest state)
   */
  hasSvm(lpid: number): boolean {
    return this.svms.has(lpid);
  }

  /**
   * Register a guest memory slot: the UV creates the SVM (and its key) on the first one.
   * @param lpid - partition id. @param startGpa - first guest physical byte (page aligned).
   * @param size - bytes (a positive multiple of PAGE_SIZE). @param flags - must be 0.
   * @param slotId - the KVM memslot id.
   * @returns U_SUCCESS; U_P2 for a bad gpa (or one beyond gfn 2^32); U_P3 for a bad size;
   *   U_PARAMETER for non-zero flags, a duplicate id or an overlapping range.
   * Context: synchronous (no page moves).
   * @see uv_register_mem_slot
   */
  uvRegisterMemSlot(lpid: number, startGpa: number, size: number, flags: number, slotId: number): number {
    if (!Number.isSafeInteger(startGpa) || startGpa < 0 || startGpa % PAGE_SIZE !== 0) return U_P2;
    if (!Number.isSafeInteger(size) || size <= 0 || size % PAGE_SIZE !== 0) return U_P3;
    if (flags !== 0) return U_PARAMETER;
    const baseGfn = startGpa / PAGE_SIZE;
    const npages = size / PAGE_SIZE;
    if (baseGfn + npages > 2 ** 32) return U_P2;
    let svm = this.svms.get(lpid);
    if (svm !== undefined) {
      for (const s of svm.slots) {
        if (s.id === slotId || (s.baseGfn < baseGfn + npages && baseGfn < s.baseGfn + s.npages)) return U_PARAMETER;
      }
    } else {
      const r = this.machine.rng.fork(`kvmppc-uv:svm:${this.generation++}`);
      const key = Buffer.alloc(32);
      for (let i = 0; i < 8; i++) key.writeUInt32LE(r.nextU32(), i * 4);
      const salt = Buffer.alloc(4);
      salt.writeUInt32LE(r.nextU32(), 0);
      svm = new UvSvm(lpid, key, salt);
      this.svms.set(lpid, svm);
    }
    svm.slots.push(new UvSlot(slotId, baseGfn, npages));
    return U_SUCCESS;
  }

  /**
   * Forget a memory slot (its outstanding ciphertexts can no longer be paged in).
   * @param lpid - partition id. @param slotId - the KVM memslot id.
   * @returns U_SUCCESS, U_PERMISSION (unknown SVM) or U_PARAMETER (unknown slot).
   * @see uv_unregister_mem_slot
   */
  uvUnregisterMemSlot(lpid: number, slotId: number): number {
    const svm = this.svms.get(lpid);
    if (svm === undefined) return U_PERMISSION;
    const i = svm.slots.findIndex((s) => s.id === slotId);
    if (i < 0) return U_PARAMETER;
    svm.slots.splice(i, 1);
    return U_SUCCESS;
  }

  /**
   * Terminate an SVM: the UV forgets its slots and destroys its key.
   * @param lpid - partition id. @returns U_SUCCESS, or U_PERMISSION if the UV does not know it.
   * @see uv_svm_terminate
   */
  uvSvmTerminate(lpid: number): number {
    return this.svms.delete(lpid) ? U_SUCCESS : U_PERMISSION;
  }

  /**
   * Record that the SVM went secure (the UV issued H_SVM_INIT_DONE and it succeeded).
   * @param lpid - partition id.
   * @see kvmppc_h_svm_init_done (the UV side of its success)
   */
  noteSecure(lpid: number): void {
    const svm = this.svms.get(lpid);
    if (svm !== undefined) svm.wentSecure = true;
  }

  /**
   * Record that the UV is aborting the SVM (it issued H_SVM_INIT_ABORT): until it terminates,
   * page-outs of a VM that never went secure are handed back in the clear.
   * @param lpid - partition id.
   * @see kvmppc_h_svm_init_abort (the UV side of it)
   */
  noteAbort(lpid: number): void {
    const svm = this.svms.get(lpid);
    if (svm !== undefined) svm.aborting = true;
  }

  /**
   * Whether gfn `gfn` of `lpid` has an outstanding ciphertext in HV memory (its last page-out).
   * @param lpid - partition id. @param gfn - guest frame. @returns true if so.
   * @see uv_page_out
   */
  isPagedOut(lpid: number, gfn: number): boolean {
    const s = this.svms.get(lpid)?.slotOf(gfn);
    return s !== undefined && ((s.flags[gfn - s.baseGfn] as number) & GFN_OUT) !== 0;
  }

  /**
   * Whether the UV maps gfn `gfn` of `lpid` as a shared page.
   * @param lpid - partition id. @param gfn - guest frame. @returns true if so.
   * @see UV_SHARE_PAGE
   */
  isShared(lpid: number, gfn: number): boolean {
    const s = this.svms.get(lpid)?.slotOf(gfn);
    return s !== undefined && ((s.flags[gfn - s.baseGfn] as number) & GFN_SHARED) !== 0;
  }

  /**
   * Forget that a gfn is shared (the guest's UV_UNSHARE_PAGE, before the UV pages it back in).
   * @param lpid - partition id. @param gfn - guest frame. @returns U_SUCCESS or U_PARAMETER.
   * @see UV_UNSHARE_PAGE
   */
  unshare(lpid: number, gfn: number): number {
    const s = this.svms.get(lpid)?.slotOf(gfn);
    if (s === undefined) return U_PARAMETER;
    const i = gfn - s.baseGfn;
    s.flags[i] = (s.flags[i] as number) & ~GFN_SHARED;
    return U_SUCCESS;
  }

  /**
   * UV_PAGE_IN: take the HV's normal page `srcPfn` for guest address `gpa`. With a secure
   * destination, the page enters secure memory: decrypted and verified if the gfn's last
   * page-out is outstanding, copied as is otherwise. Without one (`dstSecurePfn` = -1), the gfn
   * becomes shared: the UV maps the normal page and copies nothing.
   * @param lpid - partition id. @param srcPfn - the HV page (-1: a hole, read as zeros).
   * @param gpa - guest physical address. @param flags - must be 0. @param pageShift - PAGE_SHIFT.
   * @param dstSecurePfn - the device page that stands for the secure frame, or -1 to share.
   * @returns U_SUCCESS; U_P2 (flags); U_P3 (gpa not in a registered slot); U_PARAMETER (the
   *   integrity check failed: nothing changed, `didRejectPageIn` fired); U_PERMISSION (unknown
   *   SVM); U_P3 also for a page size other than PAGE_SHIFT.
   * Context: awaits `pageInNs`; the caller holds the VM's uvmem_lock and the pages locked.
   * @see uv_page_in
   */
  async uvPageIn(lpid: number, srcPfn: number, gpa: number, flags: number, pageShift: number, dstSecurePfn: number): Promise<number> {
    await this.machine.clock.sleep(this.pageInNs);
    const svm = this.svms.get(lpid);
    if (svm === undefined) return U_PERMISSION;
    if (flags !== 0) return U_P2;
    if (pageShift !== PAGE_SHIFT) return U_P3;
    const gfn = Math.floor(gpa / PAGE_SIZE);
    const s = svm.slotOf(gfn);
    if (s === undefined) return U_P3;
    const i = gfn - s.baseGfn;
    const c = this.machine.contents;
    const f = s.flags[i] as number;
    if (dstSecurePfn < 0) {
      s.flags[i] = (f & ~GFN_OUT) | GFN_SHARED;
      this.stats.pageInShared++;
      if (this.bus.wants("didPageIn")) this.bus.emit("didPageIn", { lpid, gfn, kind: "shared" });
      return U_SUCCESS;
    }
    const buf = this.scratch;
    if (srcPfn >= 0) c.read(srcPfn, 0, buf);
    else buf.fill(0);
    if (f & GFN_OUT) {
      const plain = this.decrypt(svm, s, i, gfn, buf);
      if (plain === undefined) {
        this.stats.pageInRejected++;
        if (this.bus.wants("didRejectPageIn")) this.bus.emit("didRejectPageIn", { lpid, gfn, reason: "auth-tag" });
        return U_PARAMETER;
      }
      c.write(dstSecurePfn, 0, plain);
      this.stats.pageInDecrypt++;
      if (this.bus.wants("didPageIn")) this.bus.emit("didPageIn", { lpid, gfn, kind: "decrypt" });
    } else {
      c.write(dstSecurePfn, 0, buf);
      this.stats.pageInPlain++;
      if (this.bus.wants("didPageIn")) this.bus.emit("didPageIn", { lpid, gfn, kind: "plain" });
    }
    // GFN_OUT stays set: the UV keeps the last (counter, tag) until the next page-out replaces
    // it, so a page-in whose migration then fails can be retried with the same ciphertext.
    s.flags[i] = (s.flags[i] as number) & ~GFN_SHARED;
    return U_SUCCESS;
  }

  /**
   * UV_PAGE_OUT: write the secure frame `srcSecurePfn` of guest address `gpa` into the HV's
   * normal page `dstPfn`, encrypted (in the clear only while aborting a VM that never went secure).
   * @param lpid - partition id. @param dstPfn - the HV page (locked, not yet mapped).
   * @param gpa - guest physical address. @param flags - must be 0. @param pageShift - PAGE_SHIFT.
   * @param srcSecurePfn - the device page that stands for the secure frame.
   * @returns U_SUCCESS; U_P2 (flags); U_P3 (gpa not in a registered slot, bad page size);
   *   U_PERMISSION (unknown SVM).
   * Context: awaits `pageOutNs`; the caller holds the VM's uvmem_lock and the pages locked.
   * @see uv_page_out
   */
  async uvPageOut(lpid: number, dstPfn: number, gpa: number, flags: number, pageShift: number, srcSecurePfn: number): Promise<number> {
    await this.machine.clock.sleep(this.pageOutNs);
    const svm = this.svms.get(lpid);
    if (svm === undefined) return U_PERMISSION;
    if (flags !== 0) return U_P2;
    if (pageShift !== PAGE_SHIFT) return U_P3;
    const gfn = Math.floor(gpa / PAGE_SIZE);
    const s = svm.slotOf(gfn);
    if (s === undefined) return U_P3;
    const i = gfn - s.baseGfn;
    const c = this.machine.contents;
    const buf = this.scratch;
    c.read(srcSecurePfn, 0, buf);
    if (svm.aborting && !svm.wentSecure) {
      c.write(dstPfn, 0, buf);
      s.flags[i] = (s.flags[i] as number) & ~GFN_OUT;
      this.stats.pageOutPlain++;
      if (this.bus.wants("didPageOut")) this.bus.emit("didPageOut", { lpid, gfn, encrypted: false });
      return U_SUCCESS;
    }
    const seq = svm.nextSeq++;
    if (seq >= Number.MAX_SAFE_INTEGER) throw new BugError("uv-nonce-exhausted", `lpid ${lpid}: page-out counter exhausted`);
    const cipher = createCipheriv("aes-256-gcm", svm.key, this.nonce(svm, seq));
    cipher.setAAD(this.aad(gfn));
    const out = cipher.update(buf);
    const fin = cipher.final();
    if (out.length + fin.length !== PAGE_SIZE) throw new BugError("uv-cipher-size", "AES-GCM changed the page size");
    c.write(dstPfn, 0, out);
    if (fin.length > 0) c.write(dstPfn, out.length, fin);
    s.tags.set(cipher.getAuthTag(), i * UV_TAG_BYTES);
    s.seq[i] = seq;
    s.flags[i] = ((s.flags[i] as number) & ~GFN_SHARED) | GFN_OUT;
    this.stats.pageOutEncrypted++;
    if (this.bus.wants("didPageOut")) this.bus.emit("didPageOut", { lpid, gfn, encrypted: true });
    return U_SUCCESS;
  }

  private nonce(svm: UvSvm, seq: number): Buffer {
    const n = Buffer.alloc(12);
    svm.salt.copy(n, 0);
    n.writeUInt32LE(seq % 2 ** 32, 4);
    n.writeUInt32LE(Math.floor(seq / 2 ** 32), 8);
    return n;
  }

  private aad(gfn: number): Buffer {
    const a = Buffer.alloc(8);
    a.writeUInt32LE(gfn % 2 ** 32, 0);
    a.writeUInt32LE(Math.floor(gfn / 2 ** 32), 4);
    return a;
  }

  private decrypt(svm: UvSvm, s: UvSlot, i: number, gfn: number, ct: Uint8Array): Buffer | undefined {
    const d = createDecipheriv("aes-256-gcm", svm.key, this.nonce(svm, s.seq[i] as number));
    d.setAAD(this.aad(gfn));
    d.setAuthTag(s.tags.subarray(i * UV_TAG_BYTES, (i + 1) * UV_TAG_BYTES));
    const head = d.update(ct);
    try {
      const tail = d.final();
      return tail.length === 0 ? head : Buffer.concat([head, tail]);
    } catch {
      return undefined;
    }
  }
}
