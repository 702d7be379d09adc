/**
 * The GPU's MMU: one page table per GPU VA space, with 4 KiB, 64 KiB and 2 MiB mappings, each
 * translating a GPU virtual address to local VRAM, to system memory through the IOMMU, or to a
 * peer GPU's VRAM over a peer link, with read/write/atomic permissions.
 *
 * Theory of operation. The virtual address space is cut into 2 MiB blocks (UVM's VA block, and
 * the reach of one PDE on the hardware). A block that holds any mapping owns a slot of 512 PTEs in
 * pooled typed arrays: `flags` (Uint16: permission bits, VALID, the mapping's page size, and the
 * aperture) and `target` (Float64: the target page number in its aperture, i.e. VRAM offset /
 * 4096 for VID and PEER, DMA address / 4096 for SYS). Blocks are found through a Map from block
 * number to slot; slots whose last valid PTE goes away are recycled. A 64 KiB or 2 MiB mapping
 * fills its 16 or 512 PTEs with the same size code and consecutive targets, so a translation is
 * always one PTE read, whatever the page size; the size code tells where the mapping starts and
 * ends. No object is kept per page.
 *
 * Rules (the hardware and UVM's page-tree code have the same): VA and target are aligned to the
 * page size; a map or unmap may replace whole mappings but must not cut a larger mapping in part
 * (split it first by unmapping it and mapping smaller pages) — EINVAL otherwise; unmapping holes
 * is a no-op. Changes take effect at once: the emulator has no TLB to invalidate, which models a
 * driver that always invalidates after editing PTEs (membar + TLB invalidate in UVM).
 *
 * Permission checks: a read needs READ, a write WRITE, an atomic ATOMIC (and WRITE). A missing
 * PTE or permission raises a replayable fault (the compute engine posts it); a SYS target is
 * further translated by the device's IOMMU, whose refusal is fatal.
 *
 * @see NVIDIA uvm_mmu.c / uvm_page_tree (PDE/PTE management, big pages), uvm_pascal_mmu.c
 *      (49-bit VA, 4K/64K/2M page sizes), nouveau nvkm/subdev/mmu/vmm.c
 */

import { PAGE_SIZE } from "@hmmkit/core/phys";
import { einval } from "@hmmkit/core/sim";

/** PTE permission: reads allowed. */
export const GPU_PERM_READ = 1;
/** PTE permission: writes allowed. */
export const GPU_PERM_WRITE = 2;
/** PTE permission: atomics allowed (system-scope atomics on remote memory need it explicitly). */
export const GPU_PERM_ATOMIC = 4;
/** All permissions. */
export const GPU_PERM_RWA = 7;
/** PTE flag: the entry is valid. */
export const PTE_VALID = 8;

/** Aperture of a target: this GPU's VRAM. @see UVM_APERTURE_VID */
export const APERTURE_VID = 0;
/** Aperture of a target: system memory, addressed by DMA address through the IOMMU. @see UVM_APERTURE_SYS */
export const APERTURE_SYS = 1;
/**
 * Aperture of a target: peer GPU `gpu`'s VRAM, addressed by its VRAM offset.
 * @param gpu - the peer's index.
 * @returns the aperture code (2 + gpu).
 * @see UVM_APERTURE_PEER(id)
 */
export function aperturePeer(gpu: number): number {
  return 2 + gpu;
}

/** Supported page sizes. */
export type GpuPageSize = 4096 | 65536 | 2097152;
/** 2 MiB: the VA block and big-PDE size. @see UVM_VA_BLOCK_SIZE */
export const GPU_BLOCK_SIZE = 2097152;
/** Highest GPU virtual address + 1 (49-bit VA, Pascal and later). @see uvm_pascal_mmu.c */
export const GPU_VA_LIMIT = 2 ** 49;

const SIZE_SHIFT = 4;
const APERTURE_SHIFT = 8;
const SIZE_CODE: Record<GpuPageSize, number> = { 4096: 0, 65536: 1, 2097152: 2 };
const PAGES_OF_CODE = [1, 16, 512];

/** A translation, as returned by {@link GpuVaSpace.lookup}. */
export interface GpuPte {
  /** APERTURE_VID, APERTURE_SYS or aperturePeer(k). */
  readonly aperture: number;
  /** Target address of the looked-up byte (VRAM offset, or DMA address for SYS). */
  readonly addr: number;
  /** GPU_PERM_* bits. */
  readonly perms: number;
  /** Size of the mapping that contains it. */
  readonly pageSize: GpuPageSize;
}

/**
 * One GPU virtual address space (a channel's instance block and its page directory).
 *
 * Context: synchronous; no method awaits.
 * @see uvm_gpu_va_space_t, uvm_page_tree_t in uvm_mmu.h
 */
export class GpuVaSpace {
  /** Per PTE (slot * 512 + index): permission bits | PTE_VALID | size code << 4 | aperture << 8. */
  flags = new Uint16Array(512 * 16);
  /** Per PTE: target page number in its aperture. */
  target = new Float64Array(512 * 16);
  /** Valid PTEs per slot. */
  private validCount = new Uint16Array(16);
  private blocks = new Map<number, number>();
  private freeSlots: number[] = [];
  private slotBlock: number[] = [];
  /** 4 KiB PTEs currently valid. */
  validPtes = 0;

  /**
   * @param gpu - the GPU that owns the space.
   * @param id - the instance id carried by this space's faults (unique per GPU).
   */
  constructor(
    readonly gpu: number,
    readonly id: number,
  ) {}

  /**
   * The PTE slot of a 2 MiB block, or -1 when nothing is mapped in it.
   * @param block - floor(va / 2 MiB).
   * @returns the slot index; PTE index = slot * 512 + ((va mod 2 MiB) >> 12).
   */
  slotOf(block: number): number {
    const s = this.blocks.get(block);
    return s === undefined ? -1 : s;
  }

  /**
   * Map `size` bytes at `va` to a contiguous target range.
   * @param va - GPU virtual address, aligned to `pageSize`.
   * @param size - bytes, a positive multiple of `pageSize`.
   * @param aperture - APERTURE_VID, APERTURE_SYS or aperturePeer(k).
   * @param addr - target address (VRAM offset or DMA address), aligned to `pageSize`.
   * @param perms - GPU_PERM_* bits, non-zero.
   * @param pageSize - 4096 (default), 65536 or 2097152.
   * @throws HmmError EINVAL for misalignment, a bad size/aperture/permission, a range past the
   *   49-bit VA limit, or a range that cuts an existing larger mapping. Nothing is changed then.
   * Context: synchronous.
   * @see uvm_page_table_range_vec / uvm_pte_batch_write_ptes, nvkm_vmm_map
   */
  map(va: number, size: number, aperture: number, addr: number, perms: number, pageSize: GpuPageSize = 4096): void {
    this.checkRange(va, size, pageSize);
    if (!Number.isInteger(addr) || addr < 0 || addr % pageSize !== 0)
      einval("addr", `a target address aligned to ${pageSize}, got ${addr}`);
    this.checkTarget(aperture, perms);
    this.checkNoPartial(va, size);
    const code = SIZE_CODE[pageSize];
    const f = (perms & GPU_PERM_RWA) | PTE_VALID | (code << SIZE_SHIFT) | (aperture << APERTURE_SHIFT);
    const n = size / PAGE_SIZE;
    const base = addr / PAGE_SIZE;
    for (let i = 0; i < n; ) {
      const v = va + i * PAGE_SIZE;
      const slot = this.ensureSlot(Math.floor(v / GPU_BLOCK_SIZE));
      const first = ((v % GPU_BLOCK_SIZE) / PAGE_SIZE) | 0;
      const run = Math.min(n - i, 512 - first);
      const p0 = slot * 512 + first;
      let added = 0;
      for (let j = 0; j < run; j++) {
        if (((this.flags[p0 + j] as number) & PTE_VALID) === 0) added++;
        this.flags[p0 + j] = f;
        this.target[p0 + j] = base + i + j;
      }
      this.validCount[slot] = (this.validCount[slot] as number) + added;
      this.validPtes += added;
      i += run;
    }
  }

  /**
   * Map consecutive 4 KiB pages at `va` to scattered targets (one address per page).
   * @param va - page-aligned GPU virtual address.
   * @param aperture - the aperture of every target.
   * @param addrs - page-aligned target addresses, one per page.
   * @param perms - GPU_PERM_* bits.
   * @throws HmmError EINVAL as {@link GpuVaSpace.map}; all targets are checked first.
   * Context: synchronous.
   * @see uvm_pte_batch_write_ptes
   */
  mapPages(va: number, aperture: number, addrs: ArrayLike<number>, perms: number): void {
    const n = addrs.length;
    this.checkRange(va, n * PAGE_SIZE, 4096);
    this.checkTarget(aperture, perms);
    for (let i = 0; i < n; i++) {
      const a = addrs[i] as number;
      if (!Number.isInteger(a) || a < 0 || a % PAGE_SIZE !== 0) einval(`addrs[${i}]`, `a page-aligned target address, got ${a}`);
    }
    this.checkNoPartial(va, n * PAGE_SIZE);
    const f = (perms & GPU_PERM_RWA) | PTE_VALID | (aperture << APERTURE_SHIFT);
    for (let i = 0; i < n; i++) {
      const v = va + i * PAGE_SIZE;
      const slot = this.ensureSlot(Math.floor(v / GPU_BLOCK_SIZE));
      const p = slot * 512 + (((v % GPU_BLOCK_SIZE) / PAGE_SIZE) | 0);
      if (((this.flags[p] as number) & PTE_VALID) === 0) {
        this.validCount[slot] = (this.validCount[slot] as number) + 1;
        this.validPtes++;
      }
      this.flags[p] = f;
      this.target[p] = (addrs[i] as number) / PAGE_SIZE;
    }
  }

  /**
   * Remove every mapping in [va, va + size).
   * @param va - page-aligned address.
   * @param size - positive multiple of 4 KiB.
   * @returns the number of 4 KiB PTEs that were valid and are now cleared.
   * @throws HmmError EINVAL for misalignment or when the range cuts a larger mapping in part.
   * Context: synchronous. Takes effect at once (TLB invalidation implied).
   * @see uvm_page_table_range_unmap, nvkm_vmm_unmap, the driver's invalidate in
   *      mmu_interval_notifier ops
   */
  unmap(va: number, size: number): number {
    this.checkRange(va, size, 4096);
    this.checkNoPartial(va, size);
    let cleared = 0;
    const n = size / PAGE_SIZE;
    for (let i = 0; i < n; ) {
      const v = va + i * PAGE_SIZE;
      const blk = Math.floor(v / GPU_BLOCK_SIZE);
      const first = ((v % GPU_BLOCK_SIZE) / PAGE_SIZE) | 0;
      const run = Math.min(n - i, 512 - first);
      const slot = this.slotOf(blk);
      if (slot >= 0) {
        const p0 = slot * 512 + first;
        let removed = 0;
        for (let j = 0; j < run; j++) {
          if (((this.flags[p0 + j] as number) & PTE_VALID) !== 0) removed++;
          this.flags[p0 + j] = 0;
          this.target[p0 + j] = 0;
        }
        const left = (this.validCount[slot] as number) - removed;
        this.validCount[slot] = left;
        this.validPtes -= removed;
        cleared += removed;
        if (left === 0) this.releaseSlot(blk, slot);
      }
      i += run;
    }
    return cleared;
  }

  /**
   * Change the permissions of every valid PTE in [va, va + size) (downgrade or upgrade).
   * @param va - page-aligned address.
   * @param size - positive multiple of 4 KiB.
   * @param perms - the new GPU_PERM_* bits, non-zero.
   * @returns the number of 4 KiB PTEs changed.
   * @throws HmmError EINVAL for misalignment, bad perms, or a range cutting a larger mapping.
   * Context: synchronous.
   * @see uvm_va_block revoke/upgrade of mappings (block_revoke_prot)
   */
  protect(va: number, size: number, perms: number): number {
    this.checkRange(va, size, 4096);
    if (!Number.isInteger(perms) || perms <= 0 || perms > GPU_PERM_RWA) einval("perms", `GPU_PERM_* bits (1..7), got ${perms}`);
    this.checkNoPartial(va, size);
    let changed = 0;
    const n = size / PAGE_SIZE;
    for (let i = 0; i < n; i++) {
      const v = va + i * PAGE_SIZE;
      const slot = this.slotOf(Math.floor(v / GPU_BLOCK_SIZE));
      if (slot < 0) {
        i += 511 - (((v % GPU_BLOCK_SIZE) / PAGE_SIZE) | 0);
        continue;
      }
      const p = slot * 512 + (((v % GPU_BLOCK_SIZE) / PAGE_SIZE) | 0);
      const f = this.flags[p] as number;
      if ((f & PTE_VALID) !== 0) {
        this.flags[p] = (f & ~GPU_PERM_RWA) | perms;
        changed++;
      }
    }
    return changed;
  }

  /**
   * Translate one address (cold path; the compute engine inlines the same walk).
   * @param va - GPU virtual address.
   * @returns the translation, or undefined when no valid PTE maps it.
   */
  lookup(va: number): GpuPte | undefined {
    if (!Number.isInteger(va) || va < 0 || va >= GPU_VA_LIMIT) return undefined;
    const slot = this.slotOf(Math.floor(va / GPU_BLOCK_SIZE));
    if (slot < 0) return undefined;
    const off = va % GPU_BLOCK_SIZE;
    const p = slot * 512 + ((off / PAGE_SIZE) | 0);
    const f = this.flags[p] as number;
    if ((f & PTE_VALID) === 0) return undefined;
    const code = (f >> SIZE_SHIFT) & 3;
    return {
      aperture: f >> APERTURE_SHIFT,
      addr: (this.target[p] as number) * PAGE_SIZE + (va % PAGE_SIZE),
      perms: f & GPU_PERM_RWA,
      pageSize: ((PAGES_OF_CODE[code] as number) * PAGE_SIZE) as GpuPageSize,
    };
  }

  /** Number of 2 MiB blocks holding at least one valid PTE. */
  get blockCount(): number {
    return this.blocks.size;
  }

  private checkRange(va: number, size: number, pageSize: number): void {
    if (pageSize !== 4096 && pageSize !== 65536 && pageSize !== 2097152) einval("pageSize", `4096, 65536 or 2097152, got ${pageSize}`);
    if (!Number.isInteger(va) || va < 0 || va % pageSize !== 0) einval("va", `a GPU VA aligned to ${pageSize}, got ${va}`);
    if (!Number.isInteger(size) || size <= 0 || size % pageSize !== 0) einval("size", `a positive multiple of ${pageSize}, got ${size}`);
    if (va + size > GPU_VA_LIMIT) einval("va", `a range below the 49-bit GPU VA limit, got [${va}, ${va + size})`);
  }

  private checkTarget(aperture: number, perms: number): void {
    if (!Number.isInteger(aperture) || aperture < 0 || aperture > 255)
      einval("aperture", `APERTURE_VID, APERTURE_SYS or aperturePeer(k), got ${aperture}`);
    if (aperture === aperturePeer(this.gpu)) einval("aperture", `a peer other than gpu${this.gpu} itself (use APERTURE_VID)`);
    if (!Number.isInteger(perms) || perms <= 0 || perms > GPU_PERM_RWA) einval("perms", `GPU_PERM_* bits (1..7), got ${perms}`);
  }

  /** EINVAL if [va, va+size) cuts a larger existing mapping at either end. */
  private checkNoPartial(va: number, size: number): void {
    const end = va + size;
    for (const v of [va, end - PAGE_SIZE]) {
      const slot = this.slotOf(Math.floor(v / GPU_BLOCK_SIZE));
      if (slot < 0) continue;
      const f = this.flags[slot * 512 + (((v % GPU_BLOCK_SIZE) / PAGE_SIZE) | 0)] as number;
      if ((f & PTE_VALID) === 0) continue;
      const bytes = (PAGES_OF_CODE[(f >> SIZE_SHIFT) & 3] as number) * PAGE_SIZE;
      const start = v - (v % bytes);
      if (start < va || start + bytes > end) {
        einval("va", `a range that does not cut the ${bytes}-byte mapping at 0x${start.toString(16)} (unmap it whole first)`);
      }
    }
  }

  private ensureSlot(block: number): number {
    const s = this.blocks.get(block);
    if (s !== undefined) return s;
    let slot = this.freeSlots.pop();
    if (slot === undefined) {
      slot = this.slotBlock.length;
      if ((slot + 1) * 512 > this.flags.length) this.growSlots(slot + 1);
      this.slotBlock.push(block);
    } else {
      this.slotBlock[slot] = block;
    }
    this.blocks.set(block, slot);
    return slot;
  }

  private releaseSlot(block: number, slot: number): void {
    this.blocks.delete(block);
    this.freeSlots.push(slot);
  }

  private growSlots(min: number): void {
    let cap = this.validCount.length;
    while (cap < min) cap *= 2;
    const f = new Uint16Array(cap * 512);
    f.set(this.flags);
    const t = new Float64Array(cap * 512);
    t.set(this.target);
    const v = new Uint16Array(cap);
    v.set(this.validCount);
    this.flags = f;
    this.target = t;
    this.validCount = v;
  }
}
