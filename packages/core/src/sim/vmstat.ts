/**
 * Event counters with /proc/vmstat names.
 *
 * The counters keep the kernel's exact snake_case names (mm/vmstat.c `vmstat_text`) rather than
 * camelCase, because users grep for them in both codebases; each is a plain numeric field so a
 * hot path increments it with one store. The THP-reservation counters (`nr_thp_reserved`,
 * `thp_res_alloc`, `thp_res_alloc_failed`, `res_pages_collapsed`) come from the RFC of seed 002.
 *
 * @see mm/vmstat.c, include/linux/vm_event_item.h
 */

/**
 * A fresh set of counters, all zero, in /proc/vmstat order.
 * @returns the counters.
 * @see vm_event_states
 */
export function zeroCounters() {
  return {
    /** Free pages across system RAM zones. @see NR_FREE_PAGES */
    nr_free_pages: 0,
    /** Anonymous pages mapped. @see NR_ANON_MAPPED */
    nr_anon_pages: 0,
    /** Anonymous THPs mapped by PMD. @see NR_ANON_THPS */
    nr_anon_transparent_hugepages: 0,
    /** Page faults handled. @see PGFAULT */
    pgfault: 0,
    /** Faults that needed I/O (swap-in). @see PGMAJFAULT */
    pgmajfault: 0,
    /** Base pages allocated from the buddy allocator. @see PGALLOC_NORMAL */
    pgalloc_normal: 0,
    /** Base pages freed to the buddy allocator. @see PGFREE */
    pgfree: 0,
    /** Pages migrated successfully. @see PGMIGRATE_SUCCESS */
    pgmigrate_success: 0,
    /** Pages that failed to migrate. @see PGMIGRATE_FAIL */
    pgmigrate_fail: 0,
    /** THPs migrated whole. @see THP_MIGRATION_SUCCESS */
    thp_migration_success: 0,
    /** THP migrations that failed. @see THP_MIGRATION_FAIL */
    thp_migration_fail: 0,
    /** THPs split to migrate. @see THP_MIGRATION_SPLIT */
    thp_migration_split: 0,
    /** THPs allocated on fault. @see THP_FAULT_ALLOC */
    thp_fault_alloc: 0,
    /** THP faults that fell back to base pages. @see THP_FAULT_FALLBACK */
    thp_fault_fallback: 0,
    /** THPs allocated by collapse (khugepaged). @see THP_COLLAPSE_ALLOC */
    thp_collapse_alloc: 0,
    /** THP collapse allocations that failed. @see THP_COLLAPSE_ALLOC_FAILED */
    thp_collapse_alloc_failed: 0,
    /** THPs split. @see THP_SPLIT_PAGE */
    thp_split_page: 0,
    /** PMD mappings split. @see THP_SPLIT_PMD */
    thp_split_pmd: 0,
    /** Partly unmapped THPs queued for splitting under memory pressure. @see THP_DEFERRED_SPLIT_PAGE */
    thp_deferred_split_page: 0,
    /** Huge zero page allocations. @see THP_ZERO_PAGE_ALLOC */
    thp_zero_page_alloc: 0,
    /** Pages swapped in. @see PSWPIN */
    pswpin: 0,
    /** Pages swapped out. @see PSWPOUT */
    pswpout: 0,
    /** Pages loaded from zswap. @see ZSWPIN */
    zswpin: 0,
    /** Pages stored to zswap. @see ZSWPOUT */
    zswpout: 0,
    /** Pages scanned by background reclaim. @see PGSCAN_KSWAPD */
    pgscan_kswapd: 0,
    /** Pages scanned by direct reclaim. @see PGSCAN_DIRECT */
    pgscan_direct: 0,
    /** Pages reclaimed by background reclaim. @see PGSTEAL_KSWAPD */
    pgsteal_kswapd: 0,
    /** Pages reclaimed by direct reclaim. @see PGSTEAL_DIRECT */
    pgsteal_direct: 0,
    /** Pages moved to the active list. @see PGACTIVATE */
    pgactivate: 0,
    /** Pages moved to the inactive list. @see PGDEACTIVATE */
    pgdeactivate: 0,
    /** Pages scanned by compaction's migrate scanner. @see COMPACTMIGRATE_SCANNED */
    compact_migrate_scanned: 0,
    /** Pages scanned by compaction's free scanner. @see COMPACTFREE_SCANNED */
    compact_free_scanned: 0,
    /** Pages isolated by compaction. @see COMPACTISOLATED */
    compact_isolated: 0,
    /** Direct compactions run for a failed allocation. @see COMPACTSTALL */
    compact_stall: 0,
    /** Compactions that freed the requested order. @see COMPACTSUCCESS */
    compact_success: 0,
    /** Compactions that did not. @see COMPACTFAIL */
    compact_fail: 0,
    /** CMA allocations that succeeded. @see CMA_ALLOC_SUCCESS */
    cma_alloc_success: 0,
    /** CMA allocations that failed. @see CMA_ALLOC_FAIL */
    cma_alloc_fail: 0,
    /** FOLL_PIN pins taken. @see NR_FOLL_PIN_ACQUIRED */
    nr_foll_pin_acquired: 0,
    /** FOLL_PIN pins released. @see NR_FOLL_PIN_RELEASED */
    nr_foll_pin_released: 0,
    /** Pages written back from zswap to the swap device. @see ZSWPWB */
    zswpwb: 0,
    /** Background reclaim (kswapd balance_pgdat) runs. @see PAGEOUTRUN */
    pageoutrun: 0,
    /** Direct reclaims run for a failed allocation. @see ALLOCSTALL_NORMAL */
    allocstall_normal: 0,
    /** Reserved-but-unmapped base pages held by THP reservations (RFC, seed 002). */
    nr_thp_reserved: 0,
    /** Reservation blocks allocated (RFC, seed 002). */
    thp_res_alloc: 0,
    /** Reservation block allocations that failed (RFC, seed 002). */
    thp_res_alloc_failed: 0,
    /** Reservations promoted to a huge page in place (RFC, seed 002). */
    res_pages_collapsed: 0,
  };
}

/** The counter set; field names are /proc/vmstat's. */
export type VmCounters = ReturnType<typeof zeroCounters>;
/** A counter's /proc/vmstat name. */
export type VmStatName = keyof VmCounters;

/**
 * A machine's vmstat counters.
 * @see mm/vmstat.c
 */
export class VmStat {
  /** The counters: increment fields directly on hot paths (`vmstat.c.pgfault++`). */
  readonly c: VmCounters = zeroCounters();

  /**
   * A copy of every counter, keys in /proc/vmstat order.
   * @returns a plain object of name → value.
   * @see /proc/vmstat
   */
  snapshot(): VmCounters {
    return { ...this.c };
  }

  /**
   * The counters formatted like /proc/vmstat (`name value` lines).
   * @returns the text.
   */
  toString(): string {
    return Object.entries(this.c)
      .map(([k, v]) => `${k} ${v}`)
      .join("\n");
  }
}
