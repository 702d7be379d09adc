/**
 * TinyDriver: the driver built step by step in the guide "Write your first driver"
 * (docs/guides/first-driver.md). The guide shows this file's `#region` blocks by reference
 * (typedoc `{@includeCode}`), so what you read there is exactly what runs in CI:
 * examples/tutorial/main.ts runs it (`pnpm examples`) and tiny-driver.test.ts tests it (`pnpm test`).
 * `pnpm run create:driver <name>` copies this file as the starting point of a new driver.
 *
 * A device-private memory driver in the shape of the kernel's lib/test_hmm.c (dmirror), minus the
 * device page table: device memory is registered with memremapPages, pages move to the device with
 * migrate_vma (setup → allocate and copy → pages → finalize), and a CPU touch of a moved page
 * brings it back through the pgmap's migrateToRam. The CPU does the copies; a real driver would use
 * its DMA engine (device-emu's copy engines) at the same place.
 *
 * Refcount rules: a free device page has refcount 0 and sits on `freePages`; `allocDevicePage`
 * takes one with zoneDevicePageInit (refcount 1, locked), migrate_vma hands it to the core, and the
 * core calls `folioFree` when the last reference goes (the page was migrated back, or its task
 * exited). No lock order to respect: every callback here is synchronous.
 */
// #region imports
import {
  type DevPagemap,
  type Machine,
  MEMORY_DEVICE_PRIVATE,
  MIGRATE_PFN,
  MIGRATE_VMA_SELECT,
  type MigrateVma,
  type Mm,
  migratePfn,
  migratePfnToPfn,
  mpfnFlags,
  PAGE_SIZE,
  VM_FAULT,
  type VmFault,
} from "@hmmkit/core";
// #endregion imports

// #region state
/** A device with `npages` pages of device-private memory. */
export class TinyDriver {
  /** Our identity: migrate_vma collects only the device pages whose pgmap owner is this object. */
  readonly owner = { name: "tiny" };
  /** The device memory, as the core sees it. */
  readonly pgmap: DevPagemap;
  /** Free device pages (refcount 0). */
  private readonly freePages: number[] = [];
  /** Pages copied to the device and back, for reports. */
  readonly stats = { toDevice: 0, toRam: 0 };
  // #endregion state

  // #region register
  /**
   * Register `npages` pages of device memory.
   * @param m - the machine the device is plugged into.
   * @param npages - size of the device memory in 4 KiB pages, a multiple of 512 (memory sections
   *   are 2 MiB here; memremapPages throws EINVAL otherwise).
   */
  constructor(
    private readonly m: Machine,
    npages: number,
  ) {
    this.pgmap = m.memremap.memremapPages({
      type: MEMORY_DEVICE_PRIVATE,
      owner: this.owner,
      range: { npages },
      name: "tiny0",
      ops: {
        // The last reference to a device folio went away: put its pages back on the free list.
        folioFree: (head, order) => {
          for (let i = 0; i < 2 ** order; i++) this.freePages.push(head + i);
        },
        // The CPU touched one of our pages: bring it back to system RAM.
        migrateToRam: (vmf) => this.migrateToRam(vmf),
      },
    });
    for (let pfn = this.pgmap.endPfn - 1; pfn >= this.pgmap.startPfn; pfn--) this.freePages.push(pfn);
  }
  // #endregion register

  // #region alloc
  /** Free device pages left. */
  get freePageCount(): number {
    return this.freePages.length;
  }

  /** Take a free device page (refcount 1, locked, as zone_device_page_init leaves it), or -1. */
  private allocDevicePage(): number {
    const pfn = this.freePages.pop();
    if (pfn === undefined) return -1;
    this.m.memremap.zoneDevicePageInit(pfn);
    return pfn;
  }

  /** Take a system RAM page, locked, as a destination of migrateToRam, or -1. */
  private allocSystemPage(): number {
    const pfn = this.m.alloc.allocPages(0);
    if (pfn >= 0) this.m.mm.refs.trylockPage(pfn);
    return pfn;
  }
  // #endregion alloc

  // #region args
  /** The `struct migrate_vma` of one migration over `[start, end)` of `mm`. */
  private migrateArgs(mm: Mm, start: number, end: number, flags: number, faultPage = -1): MigrateVma {
    const vma = mm.findVma(start);
    if (vma === undefined) throw new Error(`no VMA at 0x${start.toString(16)}`);
    const n = (end - start) / PAGE_SIZE;
    return {
      mm,
      vma,
      start,
      end,
      src: new Float64Array(n),
      dst: new Float64Array(n),
      pgmapOwner: this.owner,
      flags,
      faultPage,
      cpages: 0,
      npages: 0,
    };
  }
  // #endregion args

  // #region to-device
  /**
   * Move the pages of `[start, end)` (page aligned, inside one VMA) to device memory.
   * @returns the number of pages that moved.
   */
  migrateToDevice(mm: Mm, start: number, end: number): number {
    const args = this.migrateArgs(mm, start, end, MIGRATE_VMA_SELECT.SYSTEM);
    // 1. Collect, lock and unmap the system pages of the range.
    this.m.migrate.migrateVmaSetup(args);
    // 2. Allocate a destination for every collected page and copy the data.
    for (let i = 0; i < args.npages; i++) {
      const src = args.src[i] as number;
      if (!(mpfnFlags(src) & MIGRATE_PFN.MIGRATE)) continue; // not collected (pinned, busy, ...)
      const dpage = this.allocDevicePage();
      if (dpage < 0) continue; // device full: leaving dst[i] at 0 keeps this page in RAM
      const spage = migratePfnToPfn(src);
      if (spage >= 0) this.m.contents.copyPages(dpage, spage, 1);
      else this.m.contents.clearPages(dpage, 1); // never touched: no source page, send zeros
      args.dst[i] = migratePfn(dpage);
    }
    // 3. Replace the source pages by the destinations in the page table...
    this.m.migrate.migrateVmaPages(args);
    let moved = 0;
    for (let i = 0; i < args.npages; i++) if (mpfnFlags(args.src[i] as number) & MIGRATE_PFN.MIGRATE) moved++;
    // 4. ...and finish: unlock everything, free the sources, restore what did not move.
    this.m.migrate.migrateVmaFinalize(args);
    this.stats.toDevice += moved;
    return moved;
  }
  // #endregion to-device

  // #region to-ram
  /** `dev_pagemap_ops.migrate_to_ram`: the CPU faulted on `vmf.page`; bring that page back. */
  private migrateToRam(vmf: VmFault): number {
    const args = this.migrateArgs(vmf.mm, vmf.address, vmf.address + PAGE_SIZE, MIGRATE_VMA_SELECT.DEVICE_PRIVATE, vmf.page);
    this.m.migrate.migrateVmaSetup(args);
    for (let i = 0; i < args.npages; i++) {
      const src = args.src[i] as number;
      if (!(mpfnFlags(src) & MIGRATE_PFN.MIGRATE)) continue;
      const dpage = this.allocSystemPage();
      if (dpage < 0) {
        this.m.migrate.migrateVmaFinalize(args); // give the page back untouched
        return VM_FAULT.OOM;
      }
      this.m.contents.copyPages(dpage, migratePfnToPfn(src), 1);
      args.dst[i] = migratePfn(dpage);
      this.stats.toRam++;
    }
    this.m.migrate.migrateVmaPages(args);
    this.m.migrate.migrateVmaFinalize(args);
    return 0;
  }
  // #endregion to-ram

  // #region teardown
  /** Unregister the device memory. Every page must be free again (tasks exited or pages migrated back). */
  remove(): void {
    this.m.memremap.memunmapPages(this.pgmap);
  }
}
// #endregion teardown
