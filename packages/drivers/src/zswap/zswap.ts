/**
 * A zswap-like compressed swap cache: the frontswap backend of a machine's swap device.
 *
 * **Store** (swap-out, before any device I/O), in the kernel's order (≈6.7): refuse when disabled;
 * invalidate a stale entry at the same slot (`duplicate_entry`); check the pool limit with
 * hysteresis — a pool at or above `maxPoolPercent` of RAM refuses (`pool_limit_hit`) and stays
 * "full", refusing every store until it has shrunk to `acceptThresholdPercent` of the limit, and
 * each refusal while full queues the shrink worker; a same-filled page (every word equal) is kept
 * as its value with no pool space (`same_filled_pages`); otherwise the page's real bytes are
 * compressed with node:zlib (`compressor`), a result no smaller than a page is refused
 * (`reject_compress_poor`), and the compressed bytes are written into a zsmalloc object
 * (`reject_alloc_fail` when no pool page can be had). A stored entry goes to the head of the LRU
 * with its referenced bit set (`stored_pages`, `pool_total_size`). A refused page goes to the swap
 * device instead; nothing is ever lost.
 *
 * **Load** is exclusive: the entry is decompressed (or its value filled) into the page and freed
 * (the kernel's exclusive loads, unconditional since 6.9-ish). **Invalidate** frees the slot's
 * entry when the swap layer frees the slot.
 *
 * **Writeback.** The shrink worker (queued on the machine's clock when the pool is full, or run
 * directly with {@link Zswap.shrink}) walks the LRU from its cold end: an entry with its referenced
 * bit gets a second chance (bit cleared, moved to the head); otherwise it is decompressed and
 * written to the swap device slot it stands for (`written_back_pages`, vmstat `zswpwb` and
 * `pswpout`) and freed. It stops once the pool is back at the accept threshold, when the LRU is
 * empty, or after MAX_RECLAIM_RETRIES failures (`reject_reclaim_fail`). The kernel decompresses
 * into a swap-cache folio; hmmkit decompresses into a buffer (no page is needed to write the
 * device's bytes).
 *
 * **Pool.** The zsmalloc-like pool (zsmalloc.ts) holds the compressed bytes in pinned-movable pages
 * registered with the pinpage subsystem: compaction, CMA and offlining migrate them and every entry
 * stays loadable.
 *
 * @see mm/zswap.c (zswap_store, zswap_load, zswap_invalidate, zswap_check_limits, shrink_worker,
 *      zswap_writeback_entry, zswap_is_page_same_filled), Documentation/admin-guide/mm/zswap.rst
 */
import { deflateRawSync, gunzipSync, gzipSync, inflateRawSync } from "node:zlib";
import { einval, GFP, HmmError, type Machine, PAGE_SIZE, type SimEvent, type SwapInfo } from "@hmmkit/core";
import { ZsPool } from "./zsmalloc";

/** Failures after which the shrink worker gives up. @see MAX_RECLAIM_RETRIES in mm/zswap.c */
export const ZSWAP_MAX_RECLAIM_RETRIES = 16;

/**
 * Compression algorithms (node:zlib): `"deflate"` is raw deflate at level 6 (the kernel's
 * `deflate` crypto driver), `"deflate-fast"` raw deflate at level 1, `"gzip-fast"` gzip framing
 * at level 1 (18 bytes of header and trailer per page).
 * @see /sys/module/zswap/parameters/compressor
 */
export type ZswapCompressor = "deflate" | "deflate-fast" | "gzip-fast";

/** The compressors, by name. @see /sys/module/zswap/parameters/compressor */
export const ZSWAP_COMPRESSORS: readonly ZswapCompressor[] = ["deflate", "deflate-fast", "gzip-fast"];

/**
 * Compress a page's bytes with one of the {@link ZswapCompressor}s.
 * @param alg - the algorithm. @param src - the bytes.
 * @returns the compressed bytes.
 * @see crypto_acomp_compress
 */
export function zswapCompress(alg: ZswapCompressor, src: Uint8Array): Uint8Array {
  switch (alg) {
    case "deflate":
      return deflateRawSync(src, { level: 6 });
    case "deflate-fast":
      return deflateRawSync(src, { level: 1 });
    case "gzip-fast":
      return gzipSync(src, { level: 1 });
  }
}

/**
 * Decompress bytes made by {@link zswapCompress}.
 * @param alg - the algorithm. @param src - compressed bytes.
 * @returns the original bytes. @throws Error from zlib on corrupt input.
 * @see crypto_acomp_decompress
 */
export function zswapDecompress(alg: ZswapCompressor, src: Uint8Array): Uint8Array {
  return alg === "gzip-fast" ? gunzipSync(src) : inflateRawSync(src);
}

/** The driver's tunables (module parameters, camelCase; the sysfs name in each doc). @see /sys/module/zswap/parameters/ */
export interface ZswapOptions {
  /** Whether stores are accepted. Default true. @see /sys/module/zswap/parameters/enabled */
  enabled?: boolean;
  /** The compressor. Default `"deflate"`. @see /sys/module/zswap/parameters/compressor */
  compressor?: ZswapCompressor;
  /** Pool limit in percent of RAM, 1..100. Default 20. @see /sys/module/zswap/parameters/max_pool_percent */
  maxPoolPercent?: number;
  /** Once full, accept again below this percent of the limit, 1..100 (100 disables hysteresis).
   *  Default 90. @see /sys/module/zswap/parameters/accept_threshold_percent */
  acceptThresholdPercent?: number;
  /** Keep same-filled pages as a value. Default true. @see same_filled_pages_enabled (≤ 6.11) */
  sameFilledPagesEnabled?: boolean;
  /** Virtual time before a queued shrink worker runs, ns (>= 0). Default 0. */
  shrinkDelayNs?: number;
}

/** The driver's debugfs counters, with the kernel's names. @see /sys/kernel/debug/zswap/ */
export interface ZswapDebugfs {
  /** Entries stored (same-filled included). */
  stored_pages: number;
  /** Bytes of pool pages. */
  pool_total_size: number;
  /** Entries written back to the swap device. */
  written_back_pages: number;
  /** Stores refused: compressed to a page or more. */
  reject_compress_poor: number;
  /** Stores refused: the compressor failed. */
  reject_compress_fail: number;
  /** Stores refused: no pool page could be allocated. */
  reject_alloc_fail: number;
  /** Writebacks that failed. */
  reject_reclaim_fail: number;
  /** Same-filled pages stored as a value. */
  same_filled_pages: number;
  /** Stores that found the pool at its limit. */
  pool_limit_hit: number;
  /** Stores that replaced an entry at the same slot. */
  duplicate_entry: number;
  /** Loads whose decompression failed. */
  decompress_fail: number;
}

/** One stored page. @see struct zswap_entry */
interface ZswapEntry {
  /** Swap slot. */
  readonly offset: number;
  /** Compressed length; 0 for a same-filled page. */
  readonly length: number;
  /** zsmalloc handle, or -1. */
  readonly handle: number;
  /** Same-filled value (32-bit pattern). */
  readonly value: number;
  /** Second-chance bit for writeback. */
  referenced: boolean;
}

/**
 * The zswap-like driver of one machine.
 *
 * Context: synchronous; the shrink worker runs as a clock event.
 * @see mm/zswap.c
 */
export class Zswap {
  /** The debugfs counters. */
  readonly debugfs: ZswapDebugfs = {
    stored_pages: 0,
    pool_total_size: 0,
    written_back_pages: 0,
    reject_compress_poor: 0,
    reject_compress_fail: 0,
    reject_alloc_fail: 0,
    reject_reclaim_fail: 0,
    same_filled_pages: 0,
    pool_limit_hit: 0,
    duplicate_entry: 0,
    decompress_fail: 0,
  };
  /** The compressed pool. */
  readonly pool: ZsPool;
  /** The resolved tunables. */
  readonly options: Readonly<Required<ZswapOptions>>;
  /** Whether the pool hit its limit and has not yet shrunk to the accept threshold. @see zswap_pool_reached_full */
  reachedFull = false;
  private readonly entries = new Map<number, ZswapEntry>();
  /** Entries with pool data, coldest first (Map insertion order is the LRU). */
  private readonly lru = new Map<number, ZswapEntry>();
  private readonly scratch = new Uint8Array(PAGE_SIZE);
  private shrinkEv: SimEvent | undefined;
  private readonly fops;
  private destroyed = false;

  /**
   * @param machine - the machine whose swap device it fronts. @param device - that swap device.
   * @param options - resolved tunables.
   */
  private constructor(
    readonly machine: Machine,
    readonly device: SwapInfo,
    options: Readonly<Required<ZswapOptions>>,
  ) {
    this.options = options;
    this.pool = new ZsPool(machine, "zswap");
    this.fops = {
      store: (type: number, offset: number, pfn: number) => this.store(type, offset, pfn),
      load: (type: number, offset: number, pfn: number) => this.load(type, offset, pfn),
      invalidatePage: (type: number, offset: number) => this.invalidatePage(type, offset),
      invalidateArea: (type: number) => this.invalidateArea(type),
    };
    device.registerFrontswap(this.fops);
  }

  /**
   * Load the driver on a machine: validate the options, create the pool, register as the swap
   * device's frontswap backend.
   * @param m - a machine booted with `swapMiB` > 0.
   * @param options - tunables (see {@link ZswapOptions}).
   * @returns the driver.
   * @throws HmmError ENODEV if the machine has no swap device; EBUSY if a backend is registered;
   *   EINVAL naming a bad option.
   * @see zswap_setup, zswap_swapon
   * @example
   * ```ts
   * const m = Machine.create({ ramMiB: [64], swapMiB: 64 });
   * const z = Zswap.create(m, { compressor: "deflate", maxPoolPercent: 20 });
   * // ... memory pressure swaps pages out through z ...
   * console.log(z.debugfs.stored_pages, z.debugfs.pool_total_size);
   * ```
   */
  static create(m: Machine, options: ZswapOptions = {}): Zswap {
    const dev = m.mm.swap.device;
    if (dev === undefined) throw new HmmError("ENODEV", "the machine has no swap device (config.swapMiB is 0)", "m");
    if (dev.frontswap !== undefined) throw new HmmError("EBUSY", "a frontswap backend is already registered", "m");
    return new Zswap(m, dev, validateZswapOptions(options));
  }

  /** Pool pages at which stores are refused. @see zswap_max_pages */
  get maxPoolPages(): number {
    return Math.floor((this.machine.alloc.totalPages * this.options.maxPoolPercent) / 100);
  }

  /** Pool pages at or below which a full pool accepts again. @see zswap_accept_thr_pages */
  get acceptThresholdPages(): number {
    return Math.floor((this.maxPoolPages * this.options.acceptThresholdPercent) / 100);
  }

  /** Entries held (same-filled included). */
  get nrEntries(): number {
    return this.entries.size;
  }

  /**
   * Whether the slot's page is held here.
   * @param offset - swap slot. @returns true if an entry exists.
   */
  has(offset: number): boolean {
    return this.entries.has(offset);
  }

  /**
   * Store a page for a slot (the frontswap `store` op; see the file comment for the order of checks).
   * @param _type - swap device index. @param offset - slot. @param pfn - the page being swapped out.
   * @returns 0 if stored; -EPERM (disabled), -ENOMEM (pool full or no pool page), -ENOSPC
   *   (compresses poorly) or -EINVAL (compressor failed) if refused.
   * @see zswap_store
   */
  store(_type: number, offset: number, pfn: number): number {
    const d = this.debugfs;
    const old = this.entries.get(offset);
    if (old !== undefined) {
      d.duplicate_entry++;
      this.freeEntry(old);
    }
    if (!this.options.enabled) return -1;
    if (this.checkLimits()) {
      this.queueShrink();
      return -12;
    }
    const m = this.machine;
    if (this.options.sameFilledPagesEnabled) {
      const v = m.contents.sameFilled(pfn);
      if (v !== undefined) {
        this.insert({ offset, length: 0, handle: -1, value: v, referenced: true });
        d.same_filled_pages++;
        return 0;
      }
    }
    const src = this.scratch;
    m.contents.read(pfn, 0, src);
    let dst: Uint8Array;
    try {
      dst = zswapCompress(this.options.compressor, src);
    } catch {
      d.reject_compress_fail++;
      return -22;
    }
    if (dst.length >= PAGE_SIZE) {
      d.reject_compress_poor++;
      return -28;
    }
    const handle = this.pool.malloc(dst.length, GFP.HIGH | GFP.NORETRY);
    if (handle < 0) {
      d.reject_alloc_fail++;
      return -12;
    }
    this.pool.write(handle, dst);
    this.insert({ offset, length: dst.length, handle, value: 0, referenced: true });
    return 0;
  }

  /**
   * Load a slot's page into `pfn` and free the entry (exclusive load; the frontswap `load` op).
   * @param _type - swap device index. @param offset - slot. @param pfn - destination page.
   * @returns 0 on a hit; -ENOENT (-2) on a miss; -EIO (-5) if decompression failed (entry kept).
   * @see zswap_load
   */
  load(_type: number, offset: number, pfn: number): number {
    const e = this.entries.get(offset);
    if (e === undefined) return -2;
    const c = this.machine.contents;
    if (e.length === 0) {
      const page = c.view(pfn);
      new Uint32Array(page.buffer, page.byteOffset, PAGE_SIZE / 4).fill(e.value);
    } else {
      let out: Uint8Array;
      try {
        out = zswapDecompress(this.options.compressor, this.pool.read(e.handle));
      } catch {
        this.debugfs.decompress_fail++;
        return -5;
      }
      if (out.length !== PAGE_SIZE) {
        this.debugfs.decompress_fail++;
        return -5;
      }
      c.write(pfn, 0, out);
    }
    this.freeEntry(e);
    return 0;
  }

  /**
   * The slot was freed: drop its entry (the frontswap `invalidatePage` op).
   * @param _type - swap device index. @param offset - slot.
   * @see zswap_invalidate
   */
  invalidatePage(_type: number, offset: number): void {
    const e = this.entries.get(offset);
    if (e !== undefined) this.freeEntry(e);
  }

  /**
   * Drop every entry (swapoff; the frontswap `invalidateArea` op).
   * @param _type - swap device index.
   * @see zswap_swapoff
   */
  invalidateArea(_type: number): void {
    for (const e of [...this.entries.values()]) this.freeEntry(e);
  }

  /**
   * Run the shrink worker now: write LRU-cold entries back to the swap device until the pool is
   * at the accept threshold (see the file comment).
   * @param target - stop when the pool has at most this many pages (default: the accept threshold).
   * @param nrToWalk - stop after writing back this many entries (default: no limit).
   * @returns entries written back.
   * @see shrink_worker, shrink_memcg (list_lru_walk_one's nr_to_walk), zswap_writeback_entry
   */
  shrink(target = this.acceptThresholdPages, nrToWalk = Number.POSITIVE_INFINITY): number {
    let written = 0;
    let failures = 0;
    let rotations = 0;
    while (this.pool.totalPages > target && written < nrToWalk && this.lru.size > 0 && failures < ZSWAP_MAX_RECLAIM_RETRIES) {
      const e = this.lru.values().next().value as ZswapEntry;
      if (e.referenced && rotations < this.lru.size) {
        // Second chance: clear the bit, move to the hot end.
        e.referenced = false;
        this.lru.delete(e.offset);
        this.lru.set(e.offset, e);
        rotations++;
        continue;
      }
      rotations = 0;
      if (this.writebackEntry(e)) written++;
      else {
        failures++;
        this.debugfs.reject_reclaim_fail++;
      }
    }
    return written;
  }

  /**
   * Write every entry back to the device, free the pool, unregister from the swap device and the
   * pinpage subsystem. Idempotent.
   * @see zswap_swapoff (hmmkit allows unloading; the kernel's zswap cannot be unloaded)
   */
  destroy(): void {
    if (this.destroyed) return;
    if (this.shrinkEv !== undefined) this.machine.clock.cancel(this.shrinkEv);
    this.shrinkEv = undefined;
    for (const e of [...this.entries.values()]) {
      if (!this.writebackEntry(e)) throw new HmmError("EIO", `zswap: entry for slot ${e.offset} could not be written back`, "zswap");
    }
    this.device.unregisterFrontswap(this.fops);
    this.pool.destroy();
    this.destroyed = true;
  }

  /** Write one entry's page to its device slot and free it. @returns false on a decompression failure. */
  private writebackEntry(e: ZswapEntry): boolean {
    const buf = this.scratch;
    if (e.length === 0) new Uint32Array(buf.buffer, buf.byteOffset, PAGE_SIZE / 4).fill(e.value);
    else {
      let out: Uint8Array;
      try {
        out = zswapDecompress(this.options.compressor, this.pool.read(e.handle));
      } catch {
        return false;
      }
      if (out.length !== PAGE_SIZE) return false;
      buf.set(out);
    }
    this.device.writebackSlot(e.offset, buf);
    this.freeEntry(e);
    this.debugfs.written_back_pages++;
    this.machine.vmstat.c.zswpwb++;
    return true;
  }

  /** True when stores must be refused (hysteresis). @see zswap_check_limits */
  private checkLimits(): boolean {
    const cur = this.pool.totalPages;
    if (cur >= this.maxPoolPages) {
      this.debugfs.pool_limit_hit++;
      this.reachedFull = true;
    } else if (this.reachedFull && cur <= this.acceptThresholdPages) {
      this.reachedFull = false;
    }
    return this.reachedFull;
  }

  private queueShrink(): void {
    if (this.shrinkEv !== undefined) return;
    this.shrinkEv = this.machine.clock.schedule(this.options.shrinkDelayNs, () => {
      this.shrinkEv = undefined;
      this.shrink();
    });
  }

  private insert(e: ZswapEntry): void {
    this.entries.set(e.offset, e);
    if (e.length > 0) this.lru.set(e.offset, e);
    this.debugfs.stored_pages++;
    this.debugfs.pool_total_size = this.pool.totalPages * PAGE_SIZE;
  }

  private freeEntry(e: ZswapEntry): void {
    this.entries.delete(e.offset);
    if (e.length > 0) {
      this.lru.delete(e.offset);
      this.pool.free(e.handle);
    }
    this.debugfs.stored_pages--;
    this.debugfs.pool_total_size = this.pool.totalPages * PAGE_SIZE;
  }
}

/**
 * Validate zswap options and fill in defaults.
 * @param o - options. @returns the resolved options.
 * @throws HmmError EINVAL naming the first bad option (`options.maxPoolPercent`, …).
 * @see zswap module parameters' setters (zswap_compressor_param_set, param_set_uint_minmax)
 */
export function validateZswapOptions(o: ZswapOptions): Required<ZswapOptions> {
  if (o === null || typeof o !== "object") einval("options", "an object");
  const enabled = o.enabled ?? true;
  if (typeof enabled !== "boolean") einval("options.enabled", "a boolean");
  const compressor = o.compressor ?? "deflate";
  if (!ZSWAP_COMPRESSORS.includes(compressor))
    einval("options.compressor", `one of ${ZSWAP_COMPRESSORS.join(", ")}, got ${String(compressor)}`);
  const maxPoolPercent = o.maxPoolPercent ?? 20;
  if (!Number.isInteger(maxPoolPercent) || maxPoolPercent < 1 || maxPoolPercent > 100)
    einval("options.maxPoolPercent", `an integer in 1..100, got ${maxPoolPercent}`);
  const acceptThresholdPercent = o.acceptThresholdPercent ?? 90;
  if (!Number.isInteger(acceptThresholdPercent) || acceptThresholdPercent < 1 || acceptThresholdPercent > 100)
    einval("options.acceptThresholdPercent", `an integer in 1..100, got ${acceptThresholdPercent}`);
  const sameFilledPagesEnabled = o.sameFilledPagesEnabled ?? true;
  if (typeof sameFilledPagesEnabled !== "boolean") einval("options.sameFilledPagesEnabled", "a boolean");
  const shrinkDelayNs = o.shrinkDelayNs ?? 0;
  if (!Number.isFinite(shrinkDelayNs) || shrinkDelayNs < 0) einval("options.shrinkDelayNs", `a finite number >= 0, got ${shrinkDelayNs}`);
  return { enabled, compressor, maxPoolPercent, acceptThresholdPercent, sameFilledPagesEnabled, shrinkDelayNs };
}
