/**
 * A secure guest as the ultravisor runs it: the guest-side ultracalls (UV_ESM, UV_SHARE_PAGE,
 * UV_UNSHARE_PAGE) and the guest's own loads and stores, which is what a test needs to put a
 * secret into secure memory and to watch the HV flows from the other side.
 *
 * Guest accesses go where the guest's memory really is: a gfn in secure memory is read or
 * written in its secure frame (the UV's access path to the device page); a paged-out secure gfn
 * or a Normal gfn of a secure VM is first made present in the host (the HV's partition-scoped
 * fault path, gfn_to_pfn, swaps a swapped-out ciphertext back in) and then paged in by the UV
 * (H_SVM_PAGE_IN, which decrypts and verifies a paged-out page: a tampered page makes the access
 * fail with EFAULT, a machine check for the guest); a shared gfn, and any gfn of a normal VM, is the host process's memory at the
 * gfn's host address. A transient VM (between INIT_START and INIT_DONE) never executes, so its
 * accesses are refused. Secure-frame accesses hold the VM's uvmem lock, standing for the UV's
 * own serialisation of a frame against a page-in or page-out in flight.
 *
 * @see arch/powerpc/kernel/prom_init.c (enter_secure_mode: UV_ESM),
 *      arch/powerpc/kvm/book3s_64_mmu_radix.c (kvmppc_book3s_radix_page_fault → kvmppc_send_page_to_uv),
 *      arch/powerpc/platforms/pseries/svm.c (uv_share_page / uv_unshare_page),
 *      Documentation/arch/powerpc/ultravisor.rst
 */
import { HmmError, PAGE_SHIFT, PAGE_SIZE } from "@hmmkit/core";
import {
  H_PAGE_IN_SHARED,
  H_SUCCESS,
  KVMPPC_GFN_SHARED,
  KVMPPC_SECURE_INIT_DONE,
  KVMPPC_SECURE_INIT_START,
  type Kvm,
  type KvmppcUvmem,
} from "./book3s-hv-uvmem";

/**
 * One secure guest, driven from the UV side.
 * @see struct svm (the ultravisor's per-guest state)
 */
export class SvmGuest {
  /**
   * @param uvmem - the HV driver (whose hcalls the UV issues). @param kvm - the VM.
   */
  constructor(
    readonly uvmem: KvmppcUvmem,
    readonly kvm: Kvm,
  ) {}

  /**
   * UV_ESM: the guest asks to enter secure mode. The UV starts the transition (H_SVM_INIT_START),
   * pages in the gfns the guest's ESM blob names (H_SVM_PAGE_IN), and finishes it
   * (H_SVM_INIT_DONE); if a page-in fails (e.g. a tampered page), it aborts (H_SVM_INIT_ABORT),
   * which hands every page back and makes UV_ESM fail.
   * @param gfns - frames to page in first (the kernel image and its data).
   * @returns H_SUCCESS; the H_* error of INIT_START or INIT_DONE; H_PARAMETER after an abort.
   * Context: awaits.
   * @see UV_ESM, kvmppc_h_svm_init_start, kvmppc_h_svm_init_done, kvmppc_h_svm_init_abort
   */
  async esm(gfns: ArrayLike<number>): Promise<number> {
    const hv = this.uvmem;
    let r = await hv.initStart(this.kvm);
    if (r !== H_SUCCESS) return r;
    for (let i = 0; i < gfns.length; i++) {
      r = await hv.svmPageIn(this.kvm, (gfns[i] as number) * PAGE_SIZE, 0, PAGE_SHIFT);
      if (r !== H_SUCCESS) return hv.initAbort(this.kvm);
    }
    return hv.initDone(this.kvm);
  }

  /**
   * UV_SHARE_PAGE: share `npages` frames from `gfn` with the HV (virtio buffers, VPA): the UV
   * issues H_SVM_PAGE_IN with H_PAGE_IN_SHARED for each.
   * @param gfn - first frame. @param npages - frames.
   * @returns H_SUCCESS or the first failing hcall's result.
   * Context: awaits.
   * @see uv_share_page, kvmppc_share_page
   */
  async sharePage(gfn: number, npages: number): Promise<number> {
    for (let i = 0; i < npages; i++) {
      const r = await this.uvmem.svmPageIn(this.kvm, (gfn + i) * PAGE_SIZE, H_PAGE_IN_SHARED, PAGE_SHIFT);
      if (r !== H_SUCCESS) return r;
    }
    return H_SUCCESS;
  }

  /**
   * UV_UNSHARE_PAGE: make shared frames secure again (the UV forgets the share and pages each
   * frame in with H_SVM_PAGE_IN; the host's plaintext becomes secure content).
   * @param gfn - first frame. @param npages - frames.
   * @returns H_SUCCESS or the first failing hcall's result.
   * Context: awaits.
   * @see uv_unshare_page
   */
  async unsharePage(gfn: number, npages: number): Promise<number> {
    for (let i = 0; i < npages; i++) {
      this.uvmem.uv.unshare(this.kvm.lpid, gfn + i);
      const r = await this.uvmem.svmPageIn(this.kvm, (gfn + i) * PAGE_SIZE, 0, PAGE_SHIFT);
      if (r !== H_SUCCESS) return r;
    }
    return H_SUCCESS;
  }

  /**
   * A guest load of `len` bytes at guest physical address `gpa`.
   * @param gpa - address. @param len - bytes.
   * @returns the bytes.
   * @throws HmmError EINVAL (transient VM, bad range, no memslot); EFAULT (the page could not be
   *   brought into secure memory, e.g. its ciphertext was tampered with; or a host fault failed).
   * Context: awaits.
   * @see kvmppc_book3s_radix_page_fault, kvmppc_send_page_to_uv (what a guest access to a non-present frame costs)
   */
  async read(gpa: number, len: number): Promise<Uint8Array> {
    const out = new Uint8Array(len);
    await this.access(gpa, len, undefined, out);
    return out;
  }

  /**
   * A guest store of `data` at guest physical address `gpa`.
   * @param gpa - address. @param data - bytes.
   * @throws HmmError as {@link SvmGuest.read}.
   * Context: awaits.
   * @see kvmppc_book3s_radix_page_fault, kvmppc_send_page_to_uv
   */
  async write(gpa: number, data: Uint8Array): Promise<void> {
    await this.access(gpa, data.length, data, undefined);
  }

  private async access(gpa: number, len: number, src: Uint8Array | undefined, dst: Uint8Array | undefined): Promise<void> {
    const kvm = this.kvm;
    const hv = this.uvmem;
    const m = hv.machine;
    if (!Number.isSafeInteger(gpa) || gpa < 0 || !Number.isSafeInteger(len) || len < 0) {
      throw new HmmError("EINVAL", `gpa/len: a non-negative range, got ${gpa}+${len}`, "gpa");
    }
    const sg = kvm.secureGuest;
    if (sg & KVMPPC_SECURE_INIT_START && !(sg & KVMPPC_SECURE_INIT_DONE)) {
      throw new HmmError("EINVAL", `kvm: lpid ${kvm.lpid} is transient (between INIT_START and INIT_DONE) and never executes`, "kvm");
    }
    const secure = (sg & KVMPPC_SECURE_INIT_DONE) !== 0;
    let off = 0;
    while (off < len) {
      const a = gpa + off;
      const gfn = Math.floor(a / PAGE_SIZE);
      const pOff = a % PAGE_SIZE;
      const n = Math.min(PAGE_SIZE - pOff, len - off);
      const hva = kvm.gfnToHva(gfn);
      if (hva < 0) throw new HmmError("EINVAL", `gpa: 0x${a.toString(16)} is in no memslot of lpid ${kvm.lpid}`, "gpa");
      let viaHost = !secure;
      if (secure) {
        let done = false;
        for (let attempt = 0; !done && !viaHost; attempt++) {
          await kvm.uvmemLock.lock();
          try {
            const u = hv.gfnIsUvmemPfn(gfn, kvm);
            if (u >= 0) {
              if (src !== undefined) m.contents.write(u, pOff, src.subarray(off, off + n));
              else if (dst !== undefined) m.contents.read(u, pOff, dst.subarray(off, off + n));
              done = true;
            } else if ((kvm.gfnState(gfn) & KVMPPC_GFN_SHARED) !== 0 || this.uvmem.uv.isShared(kvm.lpid, gfn)) viaHost = true;
          } finally {
            kvm.uvmemLock.unlock();
          }
          if (done || viaHost) break;
          if (attempt > 0) throw new HmmError("EFAULT", `gpa: gfn ${gfn} of lpid ${kvm.lpid} cannot be brought into secure memory`, "gpa");
          // The guest's access faults in the HV (partition-scoped fault), which makes the host page
          // present first (gfn_to_pfn: a swapped-out ciphertext is swapped in), then the UV pages
          // it in. migrate_vma does not collect swap entries, so H_SVM_PAGE_IN alone would fail.
          if (!kvm.mm.dead) {
            try {
              await m.mm.touch(kvm.task, hva, PAGE_SIZE, false);
            } catch (e) {
              if (!(e instanceof HmmError)) throw e;
            }
          }
          const r = await hv.svmPageIn(kvm, gfn * PAGE_SIZE, 0, PAGE_SHIFT);
          if (r !== H_SUCCESS && hv.gfnIsUvmemPfn(gfn, kvm) < 0) {
            throw new HmmError(
              "EFAULT",
              `gpa: the UV could not page in gfn ${gfn} of lpid ${kvm.lpid} (H_SVM_PAGE_IN returned ${r})`,
              "gpa",
            );
          }
        }
      }
      if (viaHost) {
        if (src !== undefined) await m.mm.write(kvm.task, hva + pOff, src.subarray(off, off + n));
        else {
          const b = await m.mm.read(kvm.task, hva + pOff, n);
          dst?.set(b, off);
        }
      }
      off += n;
    }
  }
}
