/**
 * uvmem: secure-page management for KVM secure guests under an ultravisor, modelled on the
 * kernel's arch/powerpc/kvm/book3s_hv_uvmem.c (GFN states, abort and memslot hotplug, ≈5.9+).
 *
 * Theory of operation
 * -------------------
 * {@link KvmppcUvmem.init} hot-plugs device-private memory the size of the platform's secure
 * memory (`memremapPages`, owner = the {@link Ultravisor}, the kernel's `&kvmppc_uvmem_pgmap`)
 * and tracks its free pages in a bitmap. No secure memory ⇒ "no support for secure guests":
 * normal VMs still run, H_SVM_INIT_START fails with H_UNSUPPORTED.
 *
 * A guest frame (gfn) of a VM that started going secure is in one of three states, kept per
 * memslot in typed arrays ({@link KvmppcUvmemSlot}): **Secure**, backed either by a device page
 * (`KVMPPC_GFN_UVMEM_PFN`, the page is in the UV's secure memory and the host process maps a
 * device-private entry) or by a normal page holding ciphertext (`KVMPPC_GFN_MEM_PFN`, paged out);
 * **Shared**, a normal page visible to both (`KVMPPC_GFN_SHARED`); **Normal**, no flag. The
 * kernel packs the flags into bits 63..61 of the pfn word; hmmkit keeps flags and device pfn in
 * two arrays (JS numbers are not 64-bit words).
 *
 * VM states (`Kvm.secureGuest`): Normal --initStart--> Transient (INIT_START) --initDone-->
 * Secure (INIT_START|INIT_DONE); Transient --initAbort--> Normal; svmOff/teardown --> Normal.
 *
 * Flows: page-in (H_SVM_PAGE_IN) migrates the host page of one gfn into a device page with
 * migrate_vma (SELECT_SYSTEM) while the UV copies or decrypts it; shared page-in
 * (H_PAGE_IN_SHARED) brings a secure gfn back to a fresh host page *without* a UV page-out and
 * marks it shared; page-out (H_SVM_PAGE_OUT, and `migrateToRam` when the host touches a secure
 * page) migrates the device page back (SELECT_DEVICE_PRIVATE, pgmapOwner = the UV, so another
 * device's pages are never collected) while the UV encrypts it. The device page's `folioFree`
 * (kvmppc_uvmem_page_free) releases its bitmap bit and turns the gfn into MEM_PFN (paged out) or
 * Normal (`remove_gfn`: dropped by memslot removal, svmOff, abort or teardown).
 *
 * Refcounts: an allocated device page has refcount 1 and is locked (zoneDevicePageInit) until
 * migrate_vma finalize maps it (refcount = mappings); it is freed when its last mapping goes
 * (page-out migration, host munmap/exit). Per device page, the driver keeps the kernel's
 * `zone_device_data` ({kvm, gpa, skip_page_out, remove_gfn}) in typed arrays.
 *
 * Locking (order as the kernel's): the per-VM `uvmemLock` ({@link Mutex}, kvm->arch.uvmem_lock)
 * serialises every page-in, page-out, share and drop of any gfn of the VM and is held across the
 * ultracall's simulated time; the host fault path takes it in `migrateToRam` while holding the
 * faulting device page's lock (so migrate_vma gets it as `faultPage`). The bitmap needs no lock
 * (synchronous sections). hmmkit has no mmap_lock: a VMA that vanishes while a migration waits
 * makes migrate_vma_setup refuse, which the flows treat as failure.
 *
 * Differences from the kernel are listed on {@link KvmppcUvmem} (each one a "Departure:").
 *
 * @see arch/powerpc/kvm/book3s_hv_uvmem.c, arch/powerpc/include/asm/kvm_book3s_uvmem.h,
 *      Documentation/arch/powerpc/ultravisor.rst
 */
import {
  BugError,
  type DevPagemap,
  type DevPagemapOps,
  entryPayload,
  GFP,
  HmmError,
  isHuge,
  type Machine,
  MEMORY_DEVICE_PRIVATE,
  MIGRATE_PFN,
  MIGRATE_VMA_SELECT,
  type MigrateVma,
  type Mm,
  migratePfn,
  migratePfnToPfn,
  mpfnFlags,
  PAGE_SHIFT,
  PAGE_SIZE,
  PG,
  SWP,
  swpType,
  type Task,
  VM_FAULT,
  type Vma,
  type VmFault,
} from "@hmmkit/core";
import { Mutex } from "./mutex";
import { U_SUCCESS, type Ultravisor } from "./ultravisor";

// ------------------------------------------------------------------------------------------------
// hcall numbers and return codes

/** Success. @see H_SUCCESS */
export const H_SUCCESS = 0;
/** Parameter invalid, out of range or conflicting. @see H_PARAMETER */
export const H_PARAMETER = -4;
/** Not authorised (secure guests not enabled for this VM). @see H_AUTHORITY */
export const H_AUTHORITY = -10;
/** Second parameter invalid. @see H_P2 */
export const H_P2 = -55;
/** Third parameter invalid. @see H_P3 */
export const H_P3 = -56;
/** Not supported in this context. @see H_UNSUPPORTED */
export const H_UNSUPPORTED = -67;
/** Wrong state. @see H_STATE */
export const H_STATE = -75;

/** H_SVM_PAGE_IN flag: share the page instead of securing it. @see H_PAGE_IN_SHARED */
export const H_PAGE_IN_SHARED = 0x1;

/** hcall numbers (UV → HV). @see arch/powerpc/include/asm/hvcall.h */
export const H_SVM = {
  /** @see H_SVM_PAGE_IN */
  PAGE_IN: 0xef00,
  /** @see H_SVM_PAGE_OUT */
  PAGE_OUT: 0xef04,
  /** @see H_SVM_INIT_START */
  INIT_START: 0xef08,
  /** @see H_SVM_INIT_DONE */
  INIT_DONE: 0xef0c,
  /** @see H_SVM_INIT_ABORT */
  INIT_ABORT: 0xef14,
} as const;

/** `kvm->arch.secure_guest`: H_SVM_INIT_START succeeded. @see KVMPPC_SECURE_INIT_START */
export const KVMPPC_SECURE_INIT_START = 0x1;
/** `kvm->arch.secure_guest`: H_SVM_INIT_DONE succeeded. @see KVMPPC_SECURE_INIT_DONE */
export const KVMPPC_SECURE_INIT_DONE = 0x2;
/** `kvm->arch.secure_guest`: aborted (kept for the kernel's flag set; abort clears the word). @see KVMPPC_SECURE_INIT_ABORT */
export const KVMPPC_SECURE_INIT_ABORT = 0x4;

/** GFN state: secure, backed by a device (secure) pfn. Kernel bit 63. @see KVMPPC_GFN_UVMEM_PFN */
export const KVMPPC_GFN_UVMEM_PFN = 0x1;
/** GFN state: secure, paged out to a normal pfn holding ciphertext. Kernel bit 62. @see KVMPPC_GFN_MEM_PFN */
export const KVMPPC_GFN_MEM_PFN = 0x2;
/** GFN state: shared with the HV. Kernel bit 61. @see KVMPPC_GFN_SHARED */
export const KVMPPC_GFN_SHARED = 0x4;
/** Secure, in either backing. @see KVMPPC_GFN_SECURE */
export const KVMPPC_GFN_SECURE = KVMPPC_GFN_UVMEM_PFN | KVMPPC_GFN_MEM_PFN;
/** Every state flag. @see KVMPPC_GFN_FLAG_MASK */
export const KVMPPC_GFN_FLAG_MASK = KVMPPC_GFN_SECURE | KVMPPC_GFN_SHARED;

/** Device page private flag: migrate back without UV_PAGE_OUT. @see kvmppc_uvmem_page_pvt.skip_page_out */
const PVT_SKIP_PAGE_OUT = 1;
/** Device page private flag: the gfn becomes Normal when the page is freed. @see kvmppc_uvmem_page_pvt.remove_gfn */
const PVT_REMOVE_GFN = 2;
/** Device page private flag: a page-in failed; restore the gfn's previous state on free (hmmkit). */
const PVT_PAGE_IN_FAILED = 4;

// ------------------------------------------------------------------------------------------------
// VMs and memslots

/**
 * A KVM memory slot: guest frames `[baseGfn, baseGfn + npages)` backed by the host process's
 * memory at `userspaceAddr`.
 * @see struct kvm_memory_slot, struct kvm_userspace_memory_region
 */
export interface KvmMemorySlot {
  /** Slot id (unique per VM). */
  readonly id: number;
  /** First guest frame. */
  readonly baseGfn: number;
  /** Number of guest frames. */
  readonly npages: number;
  /** Host virtual address of the first frame (page aligned). */
  readonly userspaceAddr: number;
}

/**
 * The uvmem state of one memslot: per gfn, the state flags and (for UVMEM_PFN) the device pfn.
 * @see struct kvmppc_uvmem_slot
 */
export class KvmppcUvmemSlot {
  /** Per gfn: KVMPPC_GFN_* flags (0 = Normal). */
  readonly flags: Uint8Array;
  /** Per gfn: the device pfn while UVMEM_PFN is set, else 0. */
  readonly uvmemPfn: Float64Array;

  /** @param baseGfn - first gfn (`base_pfn`). @param nrPfns - number of gfns. */
  constructor(
    readonly baseGfn: number,
    readonly nrPfns: number,
  ) {
    this.flags = new Uint8Array(nrPfns);
    this.uvmemPfn = new Float64Array(nrPfns);
  }

  /** Whether `gfn` belongs to the slot. @param gfn - guest frame. @returns true if so. @see kvmppc_mark_gfn (its slot lookup) */
  contains(gfn: number): boolean {
    return gfn >= this.baseGfn && gfn < this.baseGfn + this.nrPfns;
  }
}

/** Options of {@link KvmppcUvmem.createVm}. @see KVM_CAP_PPC_SECURE_GUEST, kvm_is_radix */
export interface KvmOptions {
  /** KVM_CAP_PPC_SECURE_GUEST enabled for the VM (`kvm->arch.svm_enabled`). Default true. */
  svmEnabled?: boolean;
  /** Radix MMU guest (only radix guests can go secure). Default true. */
  radix?: boolean;
}

/**
 * The arch part of a KVM VM that uvmem uses: its host process, memslots, secure state and lock.
 * @see struct kvm, struct kvm_arch (secure_guest, svm_enabled, uvmem_lock, uvmem_pfns)
 */
export class Kvm {
  /** KVMPPC_SECURE_INIT_* flags. @see kvm_arch.secure_guest */
  secureGuest = 0;
  /** Whether the VM was destroyed. */
  destroyed = false;
  /** Memslots, in creation order. @see kvm_memslots */
  readonly memslots: KvmMemorySlot[] = [];
  /** uvmem slots; the newest first, as the kernel's list_add. @see kvm_arch.uvmem_pfns */
  readonly uvmemPfns: KvmppcUvmemSlot[] = [];
  /** Serialises page-in/page-out/share/drop of every gfn. @see kvm_arch.uvmem_lock */
  readonly uvmemLock: Mutex;

  /**
   * Use {@link KvmppcUvmem.createVm}.
   * @param lpid - logical partition id. @param task - the host process (QEMU) whose memory backs the guest.
   * @param svmEnabled - KVM_CAP_PPC_SECURE_GUEST. @param radix - radix MMU.
   */
  constructor(
    readonly lpid: number,
    readonly task: Task,
    readonly svmEnabled: boolean,
    readonly radix: boolean,
  ) {
    this.uvmemLock = new Mutex(`uvmem_lock(lpid ${lpid})`);
  }

  /** The host address space. */
  get mm(): Mm {
    return this.task.mm;
  }

  /**
   * The memslot holding `gfn`. @param gfn - guest frame. @returns the slot or undefined.
   * @see gfn_to_memslot
   */
  gfnToMemslot(gfn: number): KvmMemorySlot | undefined {
    for (const s of this.memslots) if (gfn >= s.baseGfn && gfn < s.baseGfn + s.npages) return s;
    return undefined;
  }

  /**
   * Host virtual address of a guest frame. @param gfn - guest frame.
   * @returns the address, or -1 (the kernel's KVM_HVA_ERR_BAD) when no memslot holds it.
   * @see gfn_to_hva
   */
  gfnToHva(gfn: number): number {
    const s = this.gfnToMemslot(gfn);
    return s === undefined ? -1 : s.userspaceAddr + (gfn - s.baseGfn) * PAGE_SIZE;
  }

  /**
   * The uvmem slot holding `gfn` (the newest, as the kernel's list walk).
   * @param gfn - guest frame. @returns the slot or undefined.
   * @see kvmppc_mark_gfn, kvmppc_gfn_is_uvmem_pfn (the list_for_each_entry over uvmem_pfns)
   */
  uvmemSlotOf(gfn: number): KvmppcUvmemSlot | undefined {
    for (const p of this.uvmemPfns) if (p.contains(gfn)) return p;
    return undefined;
  }

  /**
   * The KVMPPC_GFN_* state of a gfn.
   * @param gfn - guest frame. @returns the flags (0 = Normal), or -1 if no uvmem slot holds it.
   * @see kvmppc_gfn_is_uvmem_pfn, kvmppc_next_nontransitioned_gfn (the states they test)
   */
  gfnState(gfn: number): number {
    const p = this.uvmemSlotOf(gfn);
    return p === undefined ? -1 : (p.flags[gfn - p.baseGfn] as number);
  }
}

/** Options of {@link KvmppcUvmem.init}. @see kvmppc_get_secmem_size */
export interface KvmppcUvmemOptions {
  /**
   * Pages of secure memory the platform exposes (`ibm,secure-memory` ranges), a multiple of 512;
   * 0 means no ultravisor support. Default 4096 (16 MiB).
   */
  secureMemPages?: number;
}

/** Counters of the uvmem driver. @see kvmppc_uvmem_get_page, kvmppc_uvmem_page_free, kvmppc_uvmem_drop_pages */
export interface KvmppcUvmemStats {
  /** Device pages handed out. */
  pagesAllocated: number;
  /** Device pages returned by `folioFree`. */
  pagesFreed: number;
  /** Page-outs that failed during drop_pages (the kernel's "Can't page out" message). */
  dropErrors: number;
}

function hasF(m: number, f: number): boolean {
  return (mpfnFlags(m) & f) !== 0;
}

/**
 * The uvmem driver of one machine: the secure-memory pgmap, its bitmap, and the hcall handlers.
 *
 * @remarks
 * Departure: a page-in whose UV_PAGE_IN or migration fails releases its device page and restores
 * the gfn's previous state, whereas the kernel leaks the page with the gfn marked UVMEM_PFN (or
 * marks it MEM_PFN). Departure: a page-in of a hole still issues UV_PAGE_IN (of a zero page), so
 * a discarded ciphertext is detected; the kernel skips the ultracall. Departure: a page-out that
 * skips UV_PAGE_OUT clears the new host page; the kernel leaves its content undefined. Departure:
 * a failed H_SVM_INIT_START unregisters the slots registered before the failing one; the kernel's
 * unwind loop deletes the failing slot instead. Departure: VM teardown frees the uvmem slot
 * arrays. Simplification: KSM is not modelled (kvmppc_memslot_page_merge only checks that VMAs
 * cover the slot), and there is no mmap_lock (a VMA unmapped while a migration waits makes
 * migrate_vma_setup refuse, which the flows treat as a failure).
 * @see arch/powerpc/kvm/book3s_hv_uvmem.c
 */
export class KvmppcUvmem {
  /** Counters. */
  readonly stats: KvmppcUvmemStats = { pagesAllocated: 0, pagesFreed: 0, dropErrors: 0 };
  /**
   * The pgmap callbacks (the kernel's `kvmppc_uvmem_ops`). Tests may wrap a callback to observe it.
   * @see kvmppc_uvmem_ops
   */
  readonly ops: DevPagemapOps;
  /** Free-page bitmap of the secure memory, one bit per device page. @see kvmppc_uvmem_bitmap */
  readonly bitmap: Uint32Array;
  private readonly pvtKvm: (Kvm | undefined)[];
  private readonly pvtGpa: Float64Array;
  private readonly pvtFlags: Uint8Array;
  private readonly pvtPrev: Uint8Array;
  private readonly vms = new Set<Kvm>();
  private nextLpid = 1;
  private pgmapLive: DevPagemap | undefined;

  private constructor(
    /** The machine. */
    readonly machine: Machine,
    /** The ultravisor: owner of the secure memory. */
    readonly uv: Ultravisor,
    npages: number,
  ) {
    this.ops = {
      folioFree: (head, order) => this.pageFree(head, order),
      migrateToRam: (vmf: VmFault) => this.migrateToRam(vmf),
    };
    this.bitmap = new Uint32Array(Math.ceil(npages / 32));
    this.pvtKvm = new Array<Kvm | undefined>(npages).fill(undefined);
    this.pvtGpa = new Float64Array(npages);
    this.pvtFlags = new Uint8Array(npages);
    this.pvtPrev = new Uint8Array(npages);
  }

  /**
   * Bring the driver up: hot-plug the secure memory as a device-private pgmap owned by the UV.
   * @param machine - the machine. @param uv - its ultravisor.
   * @param opts - see {@link KvmppcUvmemOptions}.
   * @returns the driver (with no pgmap when `secureMemPages` is 0: secure guests unsupported).
   * @throws HmmError EINVAL naming a bad option (`opts.secureMemPages`) or a UV of another machine.
   * @see kvmppc_uvmem_init
   * @example
   * ```ts
   * const m = Machine.create({ ramMiB: [256], seed: 1 });
   * const uv = Ultravisor.create(m);
   * const uvmem = KvmppcUvmem.init(m, uv, { secureMemPages: 1024 });
   * const qemu = m.mm.spawn();
   * const hva = qemu.mm.mmap(0, 64 * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
   * const kvm = uvmem.createVm(qemu);
   * await uvmem.setMemorySlot(kvm, { id: 0, baseGfn: 0, npages: 64, userspaceAddr: hva });
   * await uvmem.initStart(kvm); // H_SUCCESS
   * await uvmem.svmPageIn(kvm, 0, 0, PAGE_SHIFT); // gfn 0 is now in secure memory
   * await uvmem.initDone(kvm); // every other gfn too
   * ```
   */
  static init(machine: Machine, uv: Ultravisor, opts: KvmppcUvmemOptions = {}): KvmppcUvmem {
    if (opts === null || typeof opts !== "object") throw new HmmError("EINVAL", "opts: an object", "opts");
    if (uv.machine !== machine) throw new HmmError("EINVAL", "uv: the ultravisor of this machine", "uv");
    const npages = opts.secureMemPages ?? 4096;
    if (!Number.isInteger(npages) || npages < 0 || npages % 512 !== 0 || npages > 2 ** 24) {
      throw new HmmError("EINVAL", `opts.secureMemPages: a multiple of 512 in 0..2^24, got ${String(npages)}`, "opts.secureMemPages");
    }
    const d = new KvmppcUvmem(machine, uv, npages);
    if (npages > 0) {
      d.pgmapLive = machine.memremap.memremapPages({
        type: MEMORY_DEVICE_PRIVATE,
        owner: uv,
        ops: d.ops,
        range: { npages },
        name: "kvmppc_uvmem",
      });
    }
    return d;
  }

  /** The secure-memory pgmap, or undefined when there is none. @see kvmppc_uvmem_pgmap */
  get pgmap(): DevPagemap | undefined {
    return this.pgmapLive;
  }

  /**
   * Whether an ultravisor with secure memory is present.
   * @returns true if secure guests are supported.
   * @see kvmppc_uvmem_available
   */
  available(): boolean {
    return this.pgmapLive !== undefined;
  }

  /**
   * Unregister the secure memory. Every device page must be free (tear VMs down first).
   * @throws BugError `pgmap-busy` if a device page is still in use.
   * @see kvmppc_uvmem_free
   */
  free(): void {
    if (this.pgmapLive === undefined) return;
    this.machine.memremap.memunmapPages(this.pgmapLive);
    this.pgmapLive = undefined;
  }

  /** Device pages in use (bits set in the bitmap). @see kvmppc_uvmem_bitmap */
  get pagesInUse(): number {
    let n = 0;
    for (let w = 0; w < this.bitmap.length; w++) {
      let x = this.bitmap[w] as number;
      while (x !== 0) {
        x &= x - 1;
        n++;
      }
    }
    return n;
  }

  // ---------------------------------------------------------------------------------------------
  // VM and memslot lifecycle (the KVM side that calls into uvmem)

  /**
   * Create a VM backed by `task`'s memory (no memslots yet).
   * @param task - the host process (QEMU). @param opts - see {@link KvmOptions}.
   * @returns the VM, with a fresh lpid.
   * @throws HmmError EINVAL if the task has exited or an option is not a boolean.
   * @see kvm_create_vm, kvmppc_core_init_vm_hv
   */
  createVm(task: Task, opts: KvmOptions = {}): Kvm {
    if (task.exited || task.mm.dead) throw new HmmError("EINVAL", `task: a live task (pid ${task.pid} exited)`, "task");
    const svm = opts.svmEnabled ?? true;
    const radix = opts.radix ?? true;
    if (typeof svm !== "boolean") throw new HmmError("EINVAL", "opts.svmEnabled: a boolean", "opts.svmEnabled");
    if (typeof radix !== "boolean") throw new HmmError("EINVAL", "opts.radix: a boolean", "opts.radix");
    const kvm = new Kvm(this.nextLpid++, task, svm, radix);
    this.vms.add(kvm);
    return kvm;
  }

  /**
   * Add a memslot (KVM_SET_USER_MEMORY_REGION, create). For a VM that started going secure, the
   * new slot is registered with the UV and all its gfns are moved to secure memory.
   * @param kvm - the VM. @param slot - the slot.
   * @returns 0, or the H_* error of kvmppc_uvmem_memslot_create (the slot stays added, as the
   *   kernel's commit hook cannot fail the ioctl).
   * @throws HmmError EINVAL (bad field, overlapping gfns, duplicate id, destroyed VM); EEXIST.
   * Context: may await (page-ins).
   * @see kvm_set_memory_region, kvmppc_core_commit_memory_region_hv, kvmppc_uvmem_memslot_create
   */
  async setMemorySlot(kvm: Kvm, slot: KvmMemorySlot): Promise<number> {
    this.checkVm(kvm);
    if (slot === null || typeof slot !== "object") throw new HmmError("EINVAL", "slot: a KvmMemorySlot", "slot");
    const { id, baseGfn, npages, userspaceAddr } = slot;
    if (!Number.isSafeInteger(id) || id < 0) throw new HmmError("EINVAL", `slot.id: a non-negative integer, got ${id}`, "slot.id");
    if (!Number.isSafeInteger(baseGfn) || baseGfn < 0) throw new HmmError("EINVAL", `slot.baseGfn: a gfn, got ${baseGfn}`, "slot.baseGfn");
    if (!Number.isSafeInteger(npages) || npages <= 0 || baseGfn + npages > 2 ** 32) {
      throw new HmmError("EINVAL", `slot.npages: a positive count ending below gfn 2^32, got ${npages}`, "slot.npages");
    }
    if (!Number.isSafeInteger(userspaceAddr) || userspaceAddr <= 0 || userspaceAddr % PAGE_SIZE !== 0) {
      throw new HmmError("EINVAL", `slot.userspaceAddr: a page-aligned address, got ${userspaceAddr}`, "slot.userspaceAddr");
    }
    for (const s of kvm.memslots) {
      if (s.id === id) throw new HmmError("EEXIST", `slot.id: slot ${id} exists`, "slot.id");
      if (s.baseGfn < baseGfn + npages && baseGfn < s.baseGfn + s.npages) {
        throw new HmmError("EEXIST", `slot.baseGfn: gfns overlap slot ${s.id}`, "slot.baseGfn");
      }
    }
    const copy: KvmMemorySlot = { id, baseGfn, npages, userspaceAddr };
    kvm.memslots.push(copy);
    if (kvm.secureGuest & KVMPPC_SECURE_INIT_START) return this.memslotCreate(kvm, copy);
    return 0;
  }

  /**
   * Remove a memslot (KVM_SET_USER_MEMORY_REGION, delete). For a VM that started going secure, its
   * secure pages are dropped (device pages freed without UV_PAGE_OUT, gfns become Normal) and the
   * slot is unregistered from the UV.
   * @param kvm - the VM. @param id - slot id.
   * @throws HmmError ENOENT if no such slot; EINVAL for a destroyed VM.
   * Context: may await (drop_pages).
   * @see kvmppc_core_flush_memslot_hv, kvmppc_uvmem_drop_pages, kvmppc_uvmem_memslot_delete
   */
  async deleteMemorySlot(kvm: Kvm, id: number): Promise<void> {
    this.checkVm(kvm);
    const i = kvm.memslots.findIndex((s) => s.id === id);
    if (i < 0) throw new HmmError("ENOENT", `id: no memslot ${id}`, "id");
    const slot = kvm.memslots[i] as KvmMemorySlot;
    if (kvm.secureGuest & KVMPPC_SECURE_INIT_START) {
      await this.dropPages(slot, kvm, true);
      await this.memslotDelete(kvm, slot);
    }
    const j = kvm.memslots.indexOf(slot);
    if (j >= 0) kvm.memslots.splice(j, 1);
  }

  /**
   * Register a new memslot of a secure VM with the UV and move all its gfns to secure memory.
   * @param kvm - the VM. @param slot - a memslot of it.
   * @returns 0, H_PARAMETER (registration failed) or H_STATE (a gfn could not be moved).
   * @see kvmppc_uvmem_memslot_create
   */
  async memslotCreate(kvm: Kvm, slot: KvmMemorySlot): Promise<number> {
    let ret = await this.memslotCreateInner(kvm, slot);
    if (!ret) ret = await this.migrateMemSlot(kvm, slot);
    return ret;
  }

  /**
   * Unregister a memslot from the UV and free its uvmem state (its device pages must be gone).
   * @param kvm - the VM. @param slot - the memslot.
   * @see kvmppc_uvmem_memslot_delete
   */
  async memslotDelete(kvm: Kvm, slot: KvmMemorySlot): Promise<void> {
    this.uv.uvUnregisterMemSlot(kvm.lpid, slot.id);
    await this.slotFree(kvm, slot);
  }

  // ---------------------------------------------------------------------------------------------
  // hcalls

  /**
   * H_SVM_INIT_START: the VM starts going secure (Transient): every memslot is registered with
   * the UV and gets its uvmem state.
   * @param kvm - the VM.
   * @returns H_SUCCESS; H_UNSUPPORTED (no secure memory, or a hash-MMU guest); H_AUTHORITY
   *   (KVM_CAP_PPC_SECURE_GUEST not enabled); H_PARAMETER (a slot could not be registered: the
   *   earlier ones are unregistered). As in the kernel, `secureGuest` is set to INIT_START before
   *   the checks (and replaced, not or-ed).
   * Context: may await the uvmem lock.
   * @see kvmppc_h_svm_init_start
   */
  async initStart(kvm: Kvm): Promise<number> {
    this.checkVm(kvm);
    kvm.secureGuest = KVMPPC_SECURE_INIT_START;
    if (!this.available()) return H_UNSUPPORTED;
    if (!kvm.radix) return H_UNSUPPORTED;
    if (!kvm.svmEnabled) return H_AUTHORITY;
    let ret = H_SUCCESS;
    let failed = -1;
    for (let i = 0; i < kvm.memslots.length; i++) {
      ret = await this.memslotCreateInner(kvm, kvm.memslots[i] as KvmMemorySlot);
      if (ret) {
        failed = i;
        break;
      }
    }
    if (ret) for (let i = 0; i < failed; i++) await this.memslotDelete(kvm, kvm.memslots[i] as KvmMemorySlot);
    return ret;
  }

  /**
   * H_SVM_INIT_DONE: move every gfn that is still Normal to secure memory (without copying: the
   * UV gives them fresh zeroed frames), then mark the VM secure.
   * @param kvm - the VM.
   * @returns H_SUCCESS; H_UNSUPPORTED (INIT_START not done); H_STATE (a gfn could not be moved:
   *   the VM stays Transient with the gfns moved so far, until it is terminated).
   * Context: awaits the uvmem lock.
   * @see kvmppc_h_svm_init_done, kvmppc_uv_migrate_mem_slot
   */
  async initDone(kvm: Kvm): Promise<number> {
    this.checkVm(kvm);
    if (!(kvm.secureGuest & KVMPPC_SECURE_INIT_START)) return H_UNSUPPORTED;
    for (const slot of [...kvm.memslots]) {
      const ret = await this.migrateMemSlot(kvm, slot);
      if (ret) return H_STATE;
    }
    kvm.secureGuest |= KVMPPC_SECURE_INIT_DONE;
    this.uv.noteSecure(kvm.lpid);
    return H_SUCCESS;
  }

  /**
   * H_SVM_INIT_ABORT: the UV gives up securing the VM: every secure page is paged out for real
   * (the VM goes back to Normal and must find its memory), every gfn becomes Normal, the UV
   * terminates the SVM.
   * @param kvm - the VM.
   * The hcall comes from the UV, so the handler first records the abort on the UV's side
   * ({@link Ultravisor.noteAbort}): page-outs of a VM that never went secure come back in the clear.
   * @returns H_PARAMETER on success (what the guest's UV_ESM returns); H_UNSUPPORTED
   *   (INIT_START not done); H_STATE (the VM already went secure).
   * Context: awaits the uvmem lock per gfn.
   * @see kvmppc_h_svm_init_abort
   */
  async initAbort(kvm: Kvm): Promise<number> {
    this.checkVm(kvm);
    if (!(kvm.secureGuest & KVMPPC_SECURE_INIT_START)) return H_UNSUPPORTED;
    if (kvm.secureGuest & KVMPPC_SECURE_INIT_DONE) return H_STATE;
    this.uv.noteAbort(kvm.lpid);
    for (const slot of [...kvm.memslots]) await this.dropPages(slot, kvm, false);
    kvm.secureGuest = 0;
    this.uv.uvSvmTerminate(kvm.lpid);
    return H_PARAMETER;
  }

  /**
   * H_SVM_PAGE_IN: move the page of `gpa` from the host process into secure memory (migrate_vma
   * from system memory to a device page; the UV copies it, or decrypts and verifies it when it
   * is a page-out coming back). With H_PAGE_IN_SHARED, share it instead: a secure gfn is brought
   * back to a fresh host page without UV_PAGE_OUT and the gfn becomes Shared.
   * @param kvm - the VM. @param gpa - guest physical address. @param flags - 0 or H_PAGE_IN_SHARED.
   * @param pageShift - must be PAGE_SHIFT.
   * @returns H_SUCCESS; H_UNSUPPORTED (INIT_START not done); H_P3 (page size); H_P2 (flags);
   *   H_PARAMETER (no memslot/VMA, the gfn is already in secure memory, the page could not be
   *   collected — e.g. another device's page — no secure memory left, or the UV rejected the page:
   *   tampered ciphertext; in every failure the gfn's state and the host mapping are unchanged).
   * Context: awaits the uvmem lock and the ultracall.
   * @see kvmppc_h_svm_page_in, kvmppc_svm_page_in, kvmppc_share_page
   */
  async svmPageIn(kvm: Kvm, gpa: number, flags: number, pageShift: number): Promise<number> {
    this.checkVm(kvm);
    if (!(kvm.secureGuest & KVMPPC_SECURE_INIT_START)) return H_UNSUPPORTED;
    if (pageShift !== PAGE_SHIFT) return H_P3;
    if (!Number.isSafeInteger(flags) || flags & ~H_PAGE_IN_SHARED) return H_P2;
    if (!Number.isSafeInteger(gpa) || gpa < 0) return H_PARAMETER;
    if (flags & H_PAGE_IN_SHARED) return this.sharePage(kvm, gpa, pageShift);
    const gfn = Math.floor(gpa / PAGE_SIZE);
    const start = kvm.gfnToHva(gfn);
    if (start < 0 || kvm.mm.dead) return H_PARAMETER;
    await kvm.uvmemLock.lock();
    try {
      if (this.gfnIsUvmemPfn(gfn, kvm) >= 0) return H_PARAMETER;
      const end = start + PAGE_SIZE;
      const vma = kvm.mm.findVma(start);
      if (vma === undefined || vma.start > start || vma.end < end) return H_PARAMETER;
      if (await this.svmPageInInner(kvm.mm, vma, start, end, gpa, kvm, pageShift, true)) return H_PARAMETER;
      return H_SUCCESS;
    } finally {
      kvm.uvmemLock.unlock();
    }
  }

  /**
   * H_SVM_PAGE_OUT: move the secure page of `gpa` back to the host process, encrypted by the UV.
   * A gfn that is not in secure memory is a successful no-op.
   * @param kvm - the VM. @param gpa - guest physical address. @param flags - must be 0.
   * @param pageShift - must be PAGE_SHIFT.
   * @returns H_SUCCESS; H_UNSUPPORTED; H_P3; H_P2; H_PARAMETER (no memslot/VMA, no host memory,
   *   the UV failed).
   * Context: awaits the uvmem lock and the ultracall.
   * @see kvmppc_h_svm_page_out, kvmppc_svm_page_out
   */
  async svmPageOut(kvm: Kvm, gpa: number, flags: number, pageShift: number): Promise<number> {
    this.checkVm(kvm);
    if (!(kvm.secureGuest & KVMPPC_SECURE_INIT_START)) return H_UNSUPPORTED;
    if (pageShift !== PAGE_SHIFT) return H_P3;
    if (flags !== 0) return H_P2;
    if (!Number.isSafeInteger(gpa) || gpa < 0) return H_PARAMETER;
    const gfn = Math.floor(gpa / PAGE_SIZE);
    const start = kvm.gfnToHva(gfn);
    if (start < 0 || kvm.mm.dead) return H_PARAMETER;
    const end = start + PAGE_SIZE;
    const vma = kvm.mm.findVma(start);
    if (vma === undefined || vma.start > start || vma.end < end) return H_PARAMETER;
    await kvm.uvmemLock.lock();
    try {
      const r = await this.svmPageOutInner(kvm.mm, vma, start, end, pageShift, kvm, gpa, -1);
      return r ? H_PARAMETER : H_SUCCESS;
    } finally {
      kvm.uvmemLock.unlock();
    }
  }

  /**
   * Drop the device pages of a memslot: each secure gfn backed by a device page is migrated back
   * to a host page (with a real UV page-out unless `skipPageOut`) and becomes Normal; every other
   * gfn's flags are cleared.
   * @param slot - the memslot. @param kvm - the VM. @param skipPageOut - skip UV_PAGE_OUT (the
   *   content is discarded: memslot removal, svmOff, teardown) or not (abort).
   * Context: awaits the uvmem lock per gfn; stops at the first address with no VMA (as the kernel).
   * @see kvmppc_uvmem_drop_pages
   */
  async dropPages(slot: KvmMemorySlot, kvm: Kvm, skipPageOut: boolean): Promise<void> {
    const mm = kvm.mm;
    if (mm.dead) {
      // exit_mmap freed every device page already; only the flags remain.
      await kvm.uvmemLock.lock();
      try {
        for (let g = slot.baseGfn; g < slot.baseGfn + slot.npages; g++) if (this.gfnIsUvmemPfn(g, kvm) < 0) this.markGfn(g, kvm, 0, 0);
      } finally {
        kvm.uvmemLock.unlock();
      }
      return;
    }
    let vma: Vma | undefined;
    let addr = slot.userspaceAddr;
    for (let gfn = slot.baseGfn; gfn < slot.baseGfn + slot.npages; gfn++, addr += PAGE_SIZE) {
      if (vma === undefined || addr >= vma.end) {
        vma = mm.findVma(addr);
        if (vma === undefined) break;
      }
      await kvm.uvmemLock.lock();
      try {
        const u = this.gfnIsUvmemPfn(gfn, kvm);
        if (u >= 0) {
          const i = this.idx(u);
          let f = (this.pvtFlags[i] as number) | PVT_REMOVE_GFN;
          f = skipPageOut ? f | PVT_SKIP_PAGE_OUT : f & ~PVT_SKIP_PAGE_OUT;
          this.pvtFlags[i] = f;
          if (await this.svmPageOutInner(mm, vma, addr, addr + PAGE_SIZE, PAGE_SHIFT, kvm, this.pvtGpa[i] as number, -1)) {
            this.stats.dropErrors++;
          }
        } else this.markGfn(gfn, kvm, 0, 0);
      } finally {
        kvm.uvmemLock.unlock();
      }
    }
  }

  /**
   * KVM_PPC_SVM_OFF: turn a secure (or transient) VM back into a normal one, discarding its
   * secure pages (reboot): drop every slot's pages without page-out, unregister the slots,
   * terminate the SVM.
   * @param kvm - the VM. @returns 0 (also for a VM that is not secure), or -EINVAL if the UV
   *   refused to terminate.
   * Context: awaits.
   * @see kvmhv_svm_off
   */
  async svmOff(kvm: Kvm): Promise<number> {
    this.checkVm(kvm);
    if (!kvm.secureGuest) return 0;
    for (const slot of [...kvm.memslots]) {
      await this.dropPages(slot, kvm, true);
      this.uv.uvUnregisterMemSlot(kvm.lpid, slot.id);
    }
    let ret = 0;
    if (this.uv.hasSvm(kvm.lpid) && this.uv.uvSvmTerminate(kvm.lpid) !== U_SUCCESS) ret = -22;
    kvm.secureGuest = 0;
    return ret;
  }

  /**
   * Destroy a VM: flush every memslot (drop its secure pages without page-out), terminate the
   * SVM, free the uvmem state and the lpid. Idempotent.
   * @param kvm - the VM.
   * Context: awaits.
   * @see kvm_arch_flush_shadow_all (kvmppc_core_flush_memslot_hv → kvmppc_uvmem_drop_pages),
   *      kvmppc_core_destroy_vm_hv
   */
  async destroyVm(kvm: Kvm): Promise<void> {
    if (kvm.destroyed) return;
    if (kvm.secureGuest & KVMPPC_SECURE_INIT_START) for (const slot of [...kvm.memslots]) await this.dropPages(slot, kvm, true);
    if (this.uv.hasSvm(kvm.lpid)) this.uv.uvSvmTerminate(kvm.lpid);
    kvm.secureGuest = 0;
    kvm.uvmemPfns.length = 0;
    kvm.memslots.length = 0;
    kvm.destroyed = true;
    this.vms.delete(kvm);
  }

  /**
   * `migrate_to_ram`: the host touched a secure page (a CPU access of the host process, a DMA
   * mirror faulting it, a fork child): page it out (encrypted by the UV, or not copied at all when
   * the page is being shared or dropped).
   * @param vmf - the fault (the device page is locked and referenced by the fault handler).
   * @returns 0, or VM_FAULT_SIGBUS when the page-out failed.
   * Context: awaits the uvmem lock and the ultracall.
   * @see kvmppc_uvmem_migrate_to_ram
   */
  async migrateToRam(vmf: VmFault): Promise<number> {
    const i = this.idx(vmf.page);
    const kvm = this.pvtKvm[i];
    if (kvm === undefined) throw new BugError("uvmem-fault-no-pvt", `migrate_to_ram on device pfn ${vmf.page} with no zone_device_data`);
    const gpa = this.pvtGpa[i] as number;
    await kvm.uvmemLock.lock();
    let r: number;
    try {
      r = await this.svmPageOutInner(vmf.mm, vmf.vma, vmf.address, vmf.address + PAGE_SIZE, PAGE_SHIFT, kvm, gpa, vmf.page);
    } finally {
      kvm.uvmemLock.unlock();
    }
    return r ? VM_FAULT.SIGBUS : 0;
  }

  /**
   * `folio_free`: a secure device page lost its last reference. Its bitmap bit is released and
   * its gfn becomes MEM_PFN (paged out), or Normal when it was dropped; the frame is scrubbed.
   * @param head - the device page. @param order - must be 0 (uvmem has no large pages).
   * @throws BugError `uvmem-double-free` if the page was not allocated; `uvmem-free-order` for order > 0.
   * @see kvmppc_uvmem_page_free
   */
  pageFree(head: number, order: number): void {
    if (order !== 0) throw new BugError("uvmem-free-order", `kvmppc_uvmem_page_free of an order-${order} folio at ${head}`);
    const i = this.idx(head);
    const w = i >>> 5;
    const bit = 1 << (i & 31);
    if (!((this.bitmap[w] as number) & bit)) throw new BugError("uvmem-double-free", `kvmppc_uvmem_page_free of free device pfn ${head}`);
    this.bitmap[w] = ((this.bitmap[w] as number) & ~bit) >>> 0;
    const kvm = this.pvtKvm[i];
    const gfn = Math.floor((this.pvtGpa[i] as number) / PAGE_SIZE);
    const f = this.pvtFlags[i] as number;
    const prev = this.pvtPrev[i] as number;
    this.pvtKvm[i] = undefined;
    this.pvtGpa[i] = 0;
    this.pvtFlags[i] = 0;
    this.pvtPrev[i] = 0;
    this.machine.contents.clearPages(head, 1);
    this.stats.pagesFreed++;
    if (kvm === undefined) return;
    if (f & PVT_PAGE_IN_FAILED) this.markGfn(gfn, kvm, prev, 0);
    else if (f & PVT_REMOVE_GFN) this.markGfn(gfn, kvm, 0, 0);
    else this.markGfn(gfn, kvm, KVMPPC_GFN_MEM_PFN, 0);
  }

  /**
   * The device pfn of a gfn in secure memory.
   * @param gfn - guest frame. @param kvm - the VM.
   * @returns the device pfn, or -1 if the gfn is not backed by one.
   * @see kvmppc_gfn_is_uvmem_pfn
   */
  gfnIsUvmemPfn(gfn: number, kvm: Kvm): number {
    const p = kvm.uvmemSlotOf(gfn);
    if (p === undefined) return -1;
    const i = gfn - p.baseGfn;
    return (p.flags[i] as number) & KVMPPC_GFN_UVMEM_PFN ? (p.uvmemPfn[i] as number) : -1;
  }

  /**
   * Check the driver's invariants: the bitmap has one bit per gfn backed by a device page, across
   * every VM; no device page backs two gfns; each one's private data names its VM and gfn; the
   * host process of a VM maps exactly its UVMEM_PFN gfns with device-private entries of this
   * pgmap, and a shared gfn never holds a device page.
   * Context: call when no hcall or fault is in flight (mid-migration entries are not final).
   * @throws BugError `uvmem-invariant` naming the first violation.
   * @see the "GFN state implementation" comment of book3s_hv_uvmem.c
   */
  verify(): void {
    const bad = (msg: string): never => {
      throw new BugError("uvmem-invariant", msg);
    };
    const pg = this.pgmapLive;
    const seen = new Set<number>();
    for (const kvm of this.vms) {
      for (const p of kvm.uvmemPfns) {
        for (let i = 0; i < p.nrPfns; i++) {
          const f = p.flags[i] as number;
          const gfn = p.baseGfn + i;
          if (kvm.uvmemSlotOf(gfn) !== p) continue; // shadowed by a newer slot
          if ((f & KVMPPC_GFN_SHARED && f & KVMPPC_GFN_SECURE) || (f & KVMPPC_GFN_UVMEM_PFN && f & KVMPPC_GFN_MEM_PFN)) {
            bad(`lpid ${kvm.lpid} gfn ${gfn}: contradictory flags ${f}`);
          }
          if (!(f & KVMPPC_GFN_UVMEM_PFN)) continue;
          const d = p.uvmemPfn[i] as number;
          if (pg === undefined || d < pg.startPfn || d >= pg.endPfn) bad(`lpid ${kvm.lpid} gfn ${gfn}: device pfn ${d} outside the pgmap`);
          if (seen.has(d)) bad(`device pfn ${d} backs two gfns`);
          seen.add(d);
          const j = this.idx(d);
          if (!((this.bitmap[j >>> 5] as number) & (1 << (j & 31))))
            bad(`device pfn ${d} of lpid ${kvm.lpid} gfn ${gfn} is free in the bitmap`);
          if (this.pvtKvm[j] !== kvm || Math.floor((this.pvtGpa[j] as number) / PAGE_SIZE) !== gfn) {
            bad(`device pfn ${d}: zone_device_data does not name lpid ${kvm.lpid} gfn ${gfn}`);
          }
        }
      }
      if (kvm.mm.dead) continue;
      for (const s of kvm.memslots) {
        for (let g = s.baseGfn; g < s.baseGfn + s.npages; g++) {
          const hva = kvm.gfnToHva(g);
          const e = kvm.mm.pt.getPmd(hva) !== 0 && !isHuge(kvm.mm.pt.getPmd(hva)) ? kvm.mm.pt.getPte(hva) : 0;
          const dev =
            e !== 0 &&
            swpType(e) === SWP.DEVICE_PRIVATE &&
            pg !== undefined &&
            entryPayload(e) >= pg.startPfn &&
            entryPayload(e) < pg.endPfn;
          const u = this.gfnIsUvmemPfn(g, kvm);
          if (u >= 0 && (!dev || entryPayload(e) !== u)) bad(`lpid ${kvm.lpid} gfn ${g}: UVMEM_PFN ${u} but the host maps entry ${e}`);
          if (u < 0 && dev) bad(`lpid ${kvm.lpid} gfn ${g}: host maps secure page ${entryPayload(e)} but the gfn is not UVMEM_PFN`);
        }
      }
    }
    if (seen.size !== this.pagesInUse) bad(`bitmap has ${this.pagesInUse} pages in use, gfns hold ${seen.size}`);
  }

  // ---------------------------------------------------------------------------------------------
  // internals

  private checkVm(kvm: Kvm): void {
    if (!(kvm instanceof Kvm) || !this.vms.has(kvm)) throw new HmmError("EINVAL", "kvm: a live VM of this driver", "kvm");
  }

  private idx(pfn: number): number {
    const pg = this.pgmapLive;
    if (pg === undefined || pfn < pg.startPfn || pfn >= pg.endPfn)
      throw new BugError("uvmem-foreign-page", `pfn ${pfn} is not secure memory`);
    return pfn - pg.startPfn;
  }

  /** kvmppc_mark_gfn: set a gfn's state (and device pfn for UVMEM_PFN). Returns the old flags. */
  private markGfn(gfn: number, kvm: Kvm, flag: number, uvmemPfn: number): number {
    const p = kvm.uvmemSlotOf(gfn);
    if (p === undefined) return 0;
    const i = gfn - p.baseGfn;
    const old = p.flags[i] as number;
    p.flags[i] = flag;
    p.uvmemPfn[i] = flag === KVMPPC_GFN_UVMEM_PFN ? uvmemPfn : 0;
    return old;
  }

  /** kvmppc_uvmem_slot_init. */
  private async slotInit(kvm: Kvm, slot: KvmMemorySlot): Promise<void> {
    const p = new KvmppcUvmemSlot(slot.baseGfn, slot.npages);
    await kvm.uvmemLock.lock();
    kvm.uvmemPfns.unshift(p);
    kvm.uvmemLock.unlock();
  }

  /** kvmppc_uvmem_slot_free: "all device PFNs are already released by the time we come here". */
  private async slotFree(kvm: Kvm, slot: KvmMemorySlot): Promise<void> {
    await kvm.uvmemLock.lock();
    const i = kvm.uvmemPfns.findIndex((p) => p.baseGfn === slot.baseGfn);
    if (i >= 0) kvm.uvmemPfns.splice(i, 1);
    kvm.uvmemLock.unlock();
  }

  /** kvmppc_memslot_page_merge: KSM is not modelled; what remains is "every byte has a VMA". */
  private memslotPageMerge(kvm: Kvm, slot: KvmMemorySlot): number {
    if (kvm.mm.dead) return H_STATE;
    let start = slot.userspaceAddr;
    const end = start + slot.npages * PAGE_SIZE;
    while (start < end) {
      const vma = kvm.mm.findVma(start);
      if (vma === undefined) return H_STATE;
      start = vma.end;
    }
    return 0;
  }

  /** __kvmppc_uvmem_memslot_create. */
  private async memslotCreateInner(kvm: Kvm, slot: KvmMemorySlot): Promise<number> {
    if (this.memslotPageMerge(kvm, slot)) return H_PARAMETER;
    await this.slotInit(kvm, slot);
    const r = this.uv.uvRegisterMemSlot(kvm.lpid, slot.baseGfn * PAGE_SIZE, slot.npages * PAGE_SIZE, 0, slot.id);
    if (r < 0) {
      await this.slotFree(kvm, slot);
      return H_PARAMETER;
    }
    return 0;
  }

  /** kvmppc_next_nontransitioned_gfn: the first flag-less gfn at or after `from`, or -1. */
  private nextNontransitionedGfn(slot: KvmMemorySlot, kvm: Kvm, from: number): number {
    const p = kvm.uvmemSlotOf(from);
    if (p === undefined) return -1;
    for (let g = from; g < p.baseGfn + p.nrPfns && g < slot.baseGfn + slot.npages; g++) {
      if (!((p.flags[g - p.baseGfn] as number) & KVMPPC_GFN_FLAG_MASK)) return g;
    }
    return -1;
  }

  /** kvmppc_uv_migrate_mem_slot: move every flag-less gfn of the slot to secure memory (no copy). */
  private async migrateMemSlot(kvm: Kvm, slot: KvmMemorySlot): Promise<number> {
    let ret = 0;
    await kvm.uvmemLock.lock();
    try {
      for (let gfn = this.nextNontransitionedGfn(slot, kvm, slot.baseGfn); gfn >= 0; gfn = this.nextNontransitionedGfn(slot, kvm, gfn)) {
        ret = H_STATE;
        const start = kvm.gfnToHva(gfn);
        if (start < 0 || kvm.mm.dead) break;
        const end = start + PAGE_SIZE;
        const vma = kvm.mm.findVma(start);
        if (vma === undefined || vma.end < end) break;
        if (await this.svmPageInInner(kvm.mm, vma, start, end, gfn * PAGE_SIZE, kvm, PAGE_SHIFT, false)) {
          ret = H_STATE;
          break;
        }
        ret = 0;
      }
    } finally {
      kvm.uvmemLock.unlock();
    }
    return ret;
  }

  /** kvmppc_uvmem_get_page: a free device page for `gpa`, initialised (refcount 1, locked). */
  private getPage(gpa: number, kvm: Kvm): number {
    const pg = this.pgmapLive;
    if (pg === undefined) return -1;
    const n = pg.npages;
    let bit = -1;
    for (let w = 0; w < this.bitmap.length && bit < 0; w++) {
      const x = this.bitmap[w] as number;
      if (x === 0xffffffff) continue;
      for (let b = 0; b < 32; b++) {
        if (!(x & (1 << b))) {
          bit = w * 32 + b;
          break;
        }
      }
    }
    if (bit < 0 || bit >= n) return -1;
    this.bitmap[bit >>> 5] = ((this.bitmap[bit >>> 5] as number) | (1 << (bit & 31))) >>> 0;
    const pfn = pg.startPfn + bit;
    const gfn = Math.floor(gpa / PAGE_SIZE);
    this.pvtPrev[bit] = this.markGfn(gfn, kvm, KVMPPC_GFN_UVMEM_PFN, pfn);
    this.pvtKvm[bit] = kvm;
    this.pvtGpa[bit] = gpa;
    this.pvtFlags[bit] = 0;
    this.machine.memremap.zoneDevicePageInit(pfn);
    this.stats.pagesAllocated++;
    return pfn;
  }

  /** Release a device page that never got mapped: the gfn returns to its previous state. */
  private putFailedPage(dpage: number): void {
    const i = this.idx(dpage);
    this.pvtFlags[i] = (this.pvtFlags[i] as number) | PVT_PAGE_IN_FAILED;
    const refs = this.machine.mm.refs;
    refs.unlockPage(dpage);
    refs.putPage(dpage);
  }

  /**
   * kvmppc_svm_page_in: migrate one host page into a device page; the UV copies/decrypts it when
   * `pagein`, else the frame is zeroed. Returns 0 or -1. Caller holds the uvmem lock.
   */
  private async svmPageInInner(
    mm: Mm,
    vma: Vma,
    start: number,
    end: number,
    gpa: number,
    kvm: Kvm,
    pageShift: number,
    pagein: boolean,
  ): Promise<number> {
    const m = this.machine;
    const args: MigrateVma = {
      mm,
      vma,
      start,
      end,
      src: new Float64Array(1),
      dst: new Float64Array(1),
      pgmapOwner: undefined,
      flags: MIGRATE_VMA_SELECT.SYSTEM,
      cpages: 0,
      npages: 0,
    };
    try {
      m.migrate.migrateVmaSetup(args);
    } catch (e) {
      if (e instanceof HmmError) return -1;
      throw e;
    }
    const s = args.src[0] as number;
    if (!hasF(s, MIGRATE_PFN.MIGRATE)) {
      m.migrate.migrateVmaFinalize(args);
      return -1;
    }
    const dpage = this.getPage(gpa, kvm);
    if (dpage < 0) {
      m.migrate.migrateVmaFinalize(args);
      return -1;
    }
    const spage = migratePfnToPfn(s);
    if (pagein) {
      const r = await this.uv.uvPageIn(kvm.lpid, spage, gpa, 0, pageShift, dpage);
      if (r !== U_SUCCESS) {
        this.putFailedPage(dpage);
        m.migrate.migrateVmaFinalize(args);
        return -1;
      }
    } else m.contents.clearPages(dpage, 1);
    args.dst[0] = migratePfn(dpage);
    m.migrate.migrateVmaPages(args);
    const ok = hasF(args.src[0] as number, MIGRATE_PFN.MIGRATE);
    if (!ok) {
      const i = this.idx(dpage);
      this.pvtFlags[i] = (this.pvtFlags[i] as number) | PVT_PAGE_IN_FAILED;
    }
    m.migrate.migrateVmaFinalize(args);
    return ok ? 0 : -1;
  }

  /**
   * __kvmppc_svm_page_out: migrate one device page back to a new host page; the UV encrypts it
   * unless the page's `skip_page_out` is set. Returns U_SUCCESS (also when nothing was to do)
   * or a negative value. Caller holds the uvmem lock.
   */
  private async svmPageOutInner(
    mm: Mm,
    vma: Vma,
    start: number,
    end: number,
    pageShift: number,
    kvm: Kvm,
    gpa: number,
    faultPage: number,
  ): Promise<number> {
    const m = this.machine;
    if (this.gfnIsUvmemPfn(Math.floor(gpa / PAGE_SIZE), kvm) < 0) return U_SUCCESS;
    const args: MigrateVma = {
      mm,
      vma,
      start,
      end,
      src: new Float64Array(1),
      dst: new Float64Array(1),
      pgmapOwner: this.uv,
      flags: MIGRATE_VMA_SELECT.DEVICE_PRIVATE,
      faultPage,
      cpages: 0,
      npages: 0,
    };
    try {
      m.migrate.migrateVmaSetup(args);
    } catch (e) {
      if (e instanceof HmmError) return -1;
      throw e;
    }
    const s = args.src[0] as number;
    const spage = migratePfnToPfn(s);
    if (spage < 0 || !hasF(s, MIGRATE_PFN.MIGRATE) || !((m.pages.flags[spage] as number) & PG.zoneDevice)) {
      m.migrate.migrateVmaFinalize(args);
      return U_SUCCESS;
    }
    const dpage = m.alloc.allocPages(0, GFP.MOVABLE);
    if (dpage < 0) {
      m.migrate.migrateVmaFinalize(args);
      return -1;
    }
    m.mm.refs.trylockPage(dpage);
    let ret = U_SUCCESS;
    if (!((this.pvtFlags[this.idx(spage)] as number) & PVT_SKIP_PAGE_OUT)) {
      ret = await this.uv.uvPageOut(kvm.lpid, dpage, gpa, 0, pageShift, spage);
    } else m.contents.clearPages(dpage, 1);
    if (ret !== U_SUCCESS) {
      m.mm.refs.unlockPage(dpage);
      m.mm.refs.putPage(dpage);
      m.migrate.migrateVmaFinalize(args);
      return ret;
    }
    args.dst[0] = migratePfn(dpage);
    m.migrate.migrateVmaPages(args);
    m.migrate.migrateVmaFinalize(args);
    return ret;
  }

  /** gfn_to_pfn: fault the gfn's host page in for writing; its pfn, referenced, or -1. */
  private async gfnToPfn(kvm: Kvm, gfn: number): Promise<number> {
    const hva = kvm.gfnToHva(gfn);
    if (hva < 0 || kvm.mm.dead) return -1;
    const m = this.machine;
    for (let tries = 0; tries < 64; tries++) {
      const pfn = m.mm.fault.followPte(kvm.mm, hva, true);
      if (pfn >= 0) {
        m.mm.refs.getPage(pfn);
        return pfn;
      }
      try {
        await m.mm.touch(kvm.task, hva, PAGE_SIZE, true);
      } catch (e) {
        if (e instanceof HmmError) return -1;
        throw e;
      }
    }
    throw new BugError("uvmem-gfn-to-pfn-livelock", `gfn_to_pfn(lpid ${kvm.lpid}, gfn ${gfn}) made no progress`);
  }

  /** kvmppc_share_page. */
  private async sharePage(kvm: Kvm, gpa: number, pageShift: number): Promise<number> {
    const gfn = Math.floor(gpa / PAGE_SIZE);
    const markSkip = (): boolean => {
      const u = this.gfnIsUvmemPfn(gfn, kvm);
      if (u < 0) return false;
      const i = this.idx(u);
      this.pvtFlags[i] = ((this.pvtFlags[i] as number) | PVT_SKIP_PAGE_OUT) & ~PVT_REMOVE_GFN;
      return true;
    };
    const refs = this.machine.mm.refs;
    await kvm.uvmemLock.lock();
    markSkip();
    let pfn: number;
    for (;;) {
      kvm.uvmemLock.unlock();
      pfn = await this.gfnToPfn(kvm, gfn);
      if (pfn < 0) return H_PARAMETER;
      await kvm.uvmemLock.lock();
      if (markSkip()) {
        refs.putPage(pfn);
        continue;
      }
      break;
    }
    let ret = H_PARAMETER;
    try {
      if ((await this.uv.uvPageIn(kvm.lpid, pfn, gpa, 0, pageShift, -1)) === U_SUCCESS) {
        this.markGfn(gfn, kvm, KVMPPC_GFN_SHARED, 0);
        ret = H_SUCCESS;
      }
    } finally {
      refs.putPage(pfn);
      kvm.uvmemLock.unlock();
    }
    return ret;
  }
}
