/**
 * The emulated swap device: slots holding real page bytes, a swap count per slot, and the
 * frontswap-style hook through which a compressed cache (the zswap-like driver) sees every
 * swap-out, swap-in and slot free first.
 *
 * **Slots.** A device of `swapMiB` MiB has `swapMiB * 256` slots of one page each. Slot 0 is the
 * swap header and is never handed out (as in the kernel, where the first page of a swap area holds
 * `union swap_header`), so a swap entry's payload is always > 0. A slot is allocated by
 * {@link SwapInfo.getSwapPage} (next-fit from a cursor, the kernel's `cluster_next` without the
 * clusters) and freed when its count drops to zero.
 *
 * **Swap counts (`swap_map`).** A slot's count is the number of page-table entries holding it.
 * hmmkit keeps no swap cache (see mm/swap.ts), so the kernel's SWAP_HAS_CACHE bit never appears:
 * swap-out sets the count to the number of mappings it replaced, fork adds one per copied entry
 * ({@link SwapInfo.swapDuplicate}), zap removes one ({@link SwapInfo.swapFree}), swap-in removes
 * one per entry it maps. At zero the slot is free: the frontswap backend's `invalidatePage` runs
 * and the device's copy is forgotten.
 *
 * **Where a slot's bytes live.** Either in the frontswap backend (it accepted `store`) or on the
 * device (`onDevice`): the device's bytes are real, kept in lazily allocated 1 MiB slabs. A slot
 * whose bytes are in neither place is a bug (reading it throws).
 *
 * **Frontswap.** One backend may register {@link FrontswapOps} (the pre-6.6 frontswap API, which
 * is also the shape of today's `zswap_store/zswap_load/zswap_invalidate` calls): `store` is tried
 * before every device write (accepted ⇒ `zswpout`, no I/O), `load` before every device read
 * (hit ⇒ `zswpin`, no I/O; loads are exclusive: the backend drops its copy), `invalidatePage` when
 * a slot is freed. The backend writes cold entries back to the device with
 * {@link SwapInfo.writebackSlot} (`zswpwb` is the backend's to count; the device counts `pswpout`).
 *
 * Context: synchronous; no I/O latency is modelled (the device is as fast as the CPU copy).
 *
 * @see mm/swapfile.c (get_swap_pages, swap_duplicate, swap_free, swap_entry_free),
 *      mm/page_io.c (swap_writepage, swap_read_folio), mm/frontswap.c (≤ 6.5), mm/zswap.c hooks
 */
import { PAGE_SIZE } from "../phys/page-state";
import { BugError, einval, HmmError } from "../sim/errors";
import type { VmStat } from "../sim/vmstat";

/** Slots per MiB of swap (4 KiB pages). @see swap_header.info.last_page (mkswap) */
export const SWAP_SLOTS_PER_MIB = 256;
/** The largest swap count of one slot (hmmkit needs no continuation pages). @see SWAP_MAP_MAX, SWAP_CONT_MAX */
export const SWAP_MAP_MAX = 0x7fffffff;

const SLAB_SLOTS = 256;

/**
 * A frontswap backend's callbacks (the zswap-like driver implements them). `type` is the swap
 * device's index (hmmkit has one device: 0), `offset` the slot.
 * @see struct frontswap_ops (include/linux/frontswap.h, ≤ 6.5), zswap_store/zswap_load/zswap_invalidate
 */
export interface FrontswapOps {
  /** Take a copy of page `pfn`'s bytes for slot `offset`. 0 if stored, a negative errno if refused (the page then goes to the device). @see frontswap_ops.store */
  store(type: number, offset: number, pfn: number): number;
  /** Fill page `pfn` with the slot's bytes and drop the copy (exclusive load). 0 on a hit, -ENOENT on a miss, -EIO on a corrupt entry. @see frontswap_ops.load */
  load(type: number, offset: number, pfn: number): number;
  /** The slot was freed: drop any copy. @see frontswap_ops.invalidate_page */
  invalidatePage(type: number, offset: number): void;
  /** The device goes away: drop every copy. @see frontswap_ops.invalidate_area */
  invalidateArea?(type: number): void;
}

/** Where an in-use slot's data came from, for the rmap-less swap-in (see mm/swap.ts). @see folio->mapping/index, which a swapped-out page no longer has */
export interface SwapSlotOwner {
  /** anon_vma id of the page that was swapped out. */
  readonly mapping: number;
  /** Its page index in the anon_vma. */
  readonly index: number;
}

/**
 * One swap device (a swap area).
 *
 * Context: synchronous.
 * @see struct swap_info_struct
 */
export class SwapInfo {
  /** Swap count per slot (`swap_map`); 0 = free. Slot 0 (the header) is never used. */
  readonly swapMap: Int32Array;
  /** Per slot: 1 when the device holds the slot's bytes. */
  readonly onDevice: Uint8Array;
  /** Per slot: anon_vma id of the swapped-out page (0 when free). */
  readonly slotMapping: Uint32Array;
  /** Per slot: page index of the swapped-out page. */
  readonly slotIndex: Float64Array;
  /** Slots in use. @see swap_info_struct.inuse_pages */
  inusePages = 0;
  /** The registered frontswap backend, if any. */
  frontswap: FrontswapOps | undefined;
  private readonly slabs: (Uint8Array | undefined)[] = [];
  private cursor = 1;

  /**
   * @param type - device index (`swp_type`). @param nslots - slots including the header (>= 2).
   * @param vmstat - counters (pswpin, pswpout, zswpin, zswpout).
   */
  constructor(
    readonly type: number,
    readonly nslots: number,
    private readonly vmstat: VmStat,
  ) {
    if (!Number.isInteger(nslots) || nslots < 2) einval("nslots", `an integer >= 2, got ${nslots}`);
    this.swapMap = new Int32Array(nslots);
    this.onDevice = new Uint8Array(nslots);
    this.slotMapping = new Uint32Array(nslots);
    this.slotIndex = new Float64Array(nslots);
  }

  /** Usable slots (the header excluded). @see swap_info_struct.pages */
  get pages(): number {
    return this.nslots - 1;
  }

  /** Free slots. @see get_nr_swap_pages */
  get nrSwapPages(): number {
    return this.pages - this.inusePages;
  }

  /**
   * Register the frontswap backend (one at a time).
   * @param ops - the backend's callbacks.
   * @throws HmmError EBUSY if a backend is registered; EINVAL if an op is missing.
   * @see frontswap_register_ops
   * @example
   * ```ts
   * m.mm.swap.device?.registerFrontswap({ store: () => -28, load: () => -2, invalidatePage: () => {} });
   * ```
   */
  registerFrontswap(ops: FrontswapOps): void {
    if (ops === null || typeof ops !== "object") einval("ops", "a FrontswapOps object");
    for (const k of ["store", "load", "invalidatePage"] as const) if (typeof ops[k] !== "function") einval(`ops.${k}`, "a function");
    if (this.frontswap !== undefined) throw new HmmError("EBUSY", "a frontswap backend is already registered", "ops");
    this.frontswap = ops;
  }

  /**
   * Unregister the frontswap backend; it must hold no slot's data any more.
   * @param ops - the registered callbacks.
   * @throws HmmError EINVAL if `ops` is not the registered backend.
   * @see frontswap_unregister_ops (never existed upstream; zswap could not be unloaded)
   */
  unregisterFrontswap(ops: FrontswapOps): void {
    if (this.frontswap !== ops) einval("ops", "the registered frontswap backend");
    ops.invalidateArea?.(this.type);
    this.frontswap = undefined;
  }

  /**
   * Allocate a free slot with count 1.
   * @param owner - the anon_vma and index of the page going out (for swap-in's rmap walk).
   * @returns the slot (> 0), or 0 when the device is full.
   * @see get_swap_pages, scan_swap_map_slots
   */
  getSwapPage(owner: SwapSlotOwner): number {
    if (this.inusePages >= this.pages) return 0;
    const map = this.swapMap;
    let s = this.cursor;
    for (let n = 0; n < this.pages; n++) {
      if (s >= this.nslots) s = 1;
      if ((map[s] as number) === 0) {
        map[s] = 1;
        this.slotMapping[s] = owner.mapping;
        this.slotIndex[s] = owner.index;
        this.inusePages++;
        this.cursor = s + 1;
        return s;
      }
      s++;
    }
    throw new BugError("swap-map-inconsistent", `inuse_pages=${this.inusePages} but no free slot in ${this.pages}`);
  }

  /**
   * Add one reference to an in-use slot (fork copied an entry holding it).
   * @param offset - slot. @throws BugError `swap-dup-free` if the slot is free.
   * @see swap_duplicate
   */
  swapDuplicate(offset: number): void {
    this.checkInUse(offset, "swap-dup-free");
    const c = this.swapMap[offset] as number;
    if (c >= SWAP_MAP_MAX) throw new BugError("swap-count-overflow", `slot ${offset} swap count overflow`);
    this.swapMap[offset] = c + 1;
  }

  /**
   * Drop `n` references to a slot; at zero the slot is freed (frontswap invalidated, device copy
   * forgotten).
   * @param offset - slot. @param n - references dropped (>= 1).
   * @returns true if the slot was freed.
   * @throws BugError `swap-free-free` on an underflow.
   * @see swap_free, swap_entry_free, free_swap_and_cache
   */
  swapFree(offset: number, n = 1): boolean {
    this.checkInUse(offset, "swap-free-free");
    const c = (this.swapMap[offset] as number) - n;
    if (c < 0) throw new BugError("swap-free-free", `slot ${offset}: swap count ${this.swapMap[offset]} - ${n} underflows`);
    this.swapMap[offset] = c;
    if (c > 0) return false;
    this.frontswap?.invalidatePage(this.type, offset);
    this.onDevice[offset] = 0;
    this.slotMapping[offset] = 0;
    this.slotIndex[offset] = 0;
    this.inusePages--;
    return true;
  }

  /**
   * Write page `pfn` out for slot `offset`: the frontswap backend first (`zswpout` when it takes
   * it), else the device (`pswpout`).
   * @param offset - an in-use slot. @param pfn - the page. @param read - reads the page's bytes into a buffer.
   * @returns "frontswap" or "device".
   * @see swap_writepage (zswap_store, then __swap_writepage)
   */
  swapWritepage(offset: number, pfn: number, read: (pfn: number, dst: Uint8Array) => void): "frontswap" | "device" {
    this.checkInUse(offset, "swap-write-free");
    const fs = this.frontswap;
    if (fs !== undefined && fs.store(this.type, offset, pfn) === 0) {
      this.onDevice[offset] = 0;
      this.vmstat.c.zswpout++;
      return "frontswap";
    }
    read(pfn, this.slotBytes(offset));
    this.onDevice[offset] = 1;
    this.vmstat.c.pswpout++;
    return "device";
  }

  /**
   * Read slot `offset` into page `pfn`: the frontswap backend first (`zswpin`), else the device
   * (`pswpin`).
   * @param offset - an in-use slot. @param pfn - the destination page.
   * @param write - writes a buffer into the page.
   * @returns "frontswap" or "device".
   * @throws BugError `swap-read-nodata` if neither holds the slot's bytes; `swap-read-eio` if the backend reports corruption.
   * @see swap_read_folio (zswap_load, then swap_read_folio_bdev)
   */
  swapReadpage(offset: number, pfn: number, write: (pfn: number, src: Uint8Array) => void): "frontswap" | "device" {
    this.checkInUse(offset, "swap-read-free");
    const fs = this.frontswap;
    if (fs !== undefined) {
      const rc = fs.load(this.type, offset, pfn);
      if (rc === 0) {
        this.vmstat.c.zswpin++;
        return "frontswap";
      }
      if (rc !== -2) throw new BugError("swap-read-eio", `frontswap load of slot ${offset} failed with ${rc}`);
    }
    if ((this.onDevice[offset] as number) === 0)
      throw new BugError("swap-read-nodata", `slot ${offset} has no data on the device or in frontswap`);
    write(pfn, this.slotBytes(offset));
    this.vmstat.c.pswpin++;
    return "device";
  }

  /**
   * A frontswap backend writes a slot's bytes back to the device (zswap writeback). Counts
   * `pswpout`, as `__swap_writepage` does.
   * @param offset - an in-use slot whose bytes the backend holds. @param data - PAGE_SIZE bytes.
   * @throws HmmError EINVAL if `data` is not a page; BugError `swap-write-free` if the slot is free.
   * @see zswap_writeback_entry (__swap_writepage)
   */
  writebackSlot(offset: number, data: Uint8Array): void {
    this.checkInUse(offset, "swap-write-free");
    if (!(data instanceof Uint8Array) || data.length !== PAGE_SIZE) einval("data", `a Uint8Array of ${PAGE_SIZE} bytes`);
    this.slotBytes(offset).set(data);
    this.onDevice[offset] = 1;
    this.vmstat.c.pswpout++;
  }

  /**
   * Write bytes of a page that is still needed by unfound sharers back to the device (no counter:
   * it is the swap cache's copy becoming the device's).
   * @internal
   */
  keepOnDevice(offset: number, read: (dst: Uint8Array) => void): void {
    read(this.slotBytes(offset));
    this.onDevice[offset] = 1;
  }

  /**
   * The swap count of a slot.
   * @param offset - slot. @returns the count (0 = free). @see swap_swapcount
   */
  swapCount(offset: number): number {
    return (this.swapMap[offset] as number) ?? 0;
  }

  /** Bytes allocated for the device's contents. */
  get bytesAllocated(): number {
    let n = 0;
    for (const s of this.slabs) if (s !== undefined) n += s.length;
    return n;
  }

  private slotBytes(offset: number): Uint8Array {
    const i = Math.floor(offset / SLAB_SLOTS);
    let s = this.slabs[i];
    if (s === undefined) {
      s = new Uint8Array(SLAB_SLOTS * PAGE_SIZE);
      while (this.slabs.length < i) this.slabs.push(undefined);
      this.slabs[i] = s;
    }
    const o = (offset % SLAB_SLOTS) * PAGE_SIZE;
    return s.subarray(o, o + PAGE_SIZE);
  }

  private checkInUse(offset: number, check: string): void {
    if (!Number.isInteger(offset) || offset <= 0 || offset >= this.nslots || (this.swapMap[offset] as number) === 0) {
      throw new BugError(check, `swap slot ${offset} is not in use`);
    }
  }
}
