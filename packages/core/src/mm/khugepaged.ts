/**
 * khugepaged: the background scanner that promotes THP reservations in place and collapses
 * PTE-mapped ranges into new huge pages.
 *
 * Every `scan_sleep_millisecs` of virtual time it scans up to `pages_to_scan` PTEs, round robin
 * over address spaces and their THP-eligible VMAs, 2 MiB at a time:
 * - a reservation with at least `promotion_threshold` pages mapped is promoted in place
 *   (thp-reserve.ts; `res_pages_collapsed`);
 * - any other PTE-mapped range whose none/zero entries number at most `max_ptes_none`, and whose
 *   present pages are all small, exclusive anonymous pages, is collapsed: a new order-9 folio is
 *   allocated (`thp_collapse_alloc`, or `thp_collapse_alloc_failed`), present pages are copied,
 *   the rest zeroed, the old pages freed and one PMD installed.
 *
 * `collapseHugePage` is also callable directly (MADV_COLLAPSE-style).
 *
 * @see mm/khugepaged.c (khugepaged_scan_mm_slot, hpage_collapse_scan_pmd, collapse_huge_page)
 */
import { GFP } from "../phys/page-alloc";
import { HPAGE_PMD_NR, HPAGE_PMD_ORDER } from "../phys/page-state";
import type { SimEvent } from "../sim/clock";
import type { Mm } from "./mm";
import type { MmCore } from "./mm-core";
import { MMU_NOTIFY, mmuNotifyRange } from "./mmu-notifier";
import { entryPayload, isPresent, PMD_SIZE, PTRS_PER_PTE } from "./page-table";
import { scanPmdRange, thpRangeOk } from "./thp-reserve";
import type { Vma } from "./vma";

/**
 * The khugepaged scanner of one machine.
 * @see mm/khugepaged.c
 */
export class Khugepaged {
  private ev: SimEvent | undefined;
  private cursorMm = 0;
  private cursorAddr = 0;
  /** Completed scan passes. @see khugepaged/full_scans */
  fullScans = 0;
  /** Ranges collapsed (copy) or promoted (in place). @see khugepaged/pages_collapsed */
  pagesCollapsed = 0;

  /** @param core - the mm layer. */
  constructor(private readonly core: MmCore) {}

  /** Whether the scanner is scheduled. */
  get running(): boolean {
    return this.ev !== undefined;
  }

  /**
   * Start scanning on the clock (idempotent).
   * @see start_stop_khugepaged
   */
  start(): void {
    if (this.ev !== undefined) return;
    this.ev = this.core.clock.schedule(this.core.config.khugepagedScanSleepMs * 1e6, () => {
      this.ev = undefined;
      this.scan(this.core.config.khugepagedPagesToScan);
      if (this.core.tasks.size > 0) this.start();
    });
  }

  /** Stop scanning. */
  stop(): void {
    if (this.ev !== undefined) this.core.clock.cancel(this.ev);
    this.ev = undefined;
  }

  /**
   * One scan pass over up to `pagesToScan` PTEs.
   * @param pagesToScan - budget in PTEs (512 per 2 MiB range).
   * @returns ranges collapsed or promoted in this pass.
   * @see khugepaged_do_scan
   */
  scan(pagesToScan: number): number {
    const core = this.core;
    const mms = [...new Set([...core.tasks.values()].map((t) => t.mm))].filter((m) => !m.dead);
    if (mms.length === 0) return 0;
    let budget = pagesToScan;
    let done = 0;
    let visitedMms = 0;
    while (budget > 0 && visitedMms <= mms.length) {
      const mm = mms[this.cursorMm % mms.length] as Mm;
      for (const vma of mm.vmas) {
        for (
          let haddr = Math.ceil(Math.max(vma.start, this.cursorAddr) / PMD_SIZE) * PMD_SIZE;
          haddr + PMD_SIZE <= vma.end;
          haddr += PMD_SIZE
        ) {
          if (budget <= 0) {
            this.cursorAddr = haddr;
            return done;
          }
          budget -= PTRS_PER_PTE;
          if (this.collapseOrPromote(mm, vma, haddr)) done++;
        }
      }
      this.cursorAddr = 0;
      this.cursorMm++;
      visitedMms++;
      if (this.cursorMm % mms.length === 0) this.fullScans++;
    }
    return done;
  }

  private collapseOrPromote(mm: Mm, vma: Vma, haddr: number): boolean {
    const core = this.core;
    if (!thpRangeOk(core, vma, haddr)) return false;
    const res = core.thpRes.of(mm).get(haddr);
    if (res !== undefined) {
      if (res.nrUsed < core.config.thpPromotionThreshold) return false;
      const ok = core.thpRes.promote(mm, vma, res);
      if (ok) this.pagesCollapsed++;
      return ok;
    }
    return this.collapseHugePage(mm, vma, haddr);
  }

  /**
   * Collapse the PTE-mapped range at `haddr` into a new THP, if `max_ptes_none` allows.
   * @param mm - address space. @param vma - its VMA. @param haddr - 2 MiB-aligned address.
   * @param madvCollapse - called for MADV_COLLAPSE: ignore max_ptes_none, allow direct compaction.
   * @returns true if collapsed.
   * @see collapse_huge_page
   */
  collapseHugePage(mm: Mm, vma: Vma, haddr: number, madvCollapse = false): boolean {
    const core = this.core;
    const ps = core.pages;
    const t = mm.pt.pteTable(haddr);
    if (t === undefined) return false;
    const { none, collapsible } = scanPmdRange(core, mm, haddr);
    // MADV_COLLAPSE ignores max_ptes_none (cc->is_khugepaged is false in the kernel).
    if (!collapsible || (!madvCollapse && none > core.config.khugepagedMaxPtesNone) || none === HPAGE_PMD_NR) return false;
    const np = core.alloc.allocPages(HPAGE_PMD_ORDER, GFP.TRANSHUGE | (madvCollapse ? 0 : GFP.NORETRY));
    if (np < 0) {
      core.vmstat.c.thp_collapse_alloc_failed++;
      return false;
    }
    core.vmstat.c.thp_collapse_alloc++;
    mmuNotifyRange(mm, haddr, haddr + PMD_SIZE, MMU_NOTIFY.CLEAR);
    for (let i = 0; i < PTRS_PER_PTE; i++) {
      const e = t[i] as number;
      const p = entryPayload(e);
      if (e !== 0 && isPresent(e) && p !== core.zeroPfn) {
        core.contents.copyPages(np + i, p, 1);
        t[i] = 0;
        ps.mapcount[p] = (ps.mapcount[p] as number) - 1;
        mm.rssAnon--;
        core.refs.putPage(p);
      } else {
        core.contents.clearPages(np + i, 1);
        t[i] = 0;
      }
    }
    mm.pt.freePteTable(haddr);
    core.huge.mapNewAnonThp(mm, vma, haddr, np);
    this.pagesCollapsed++;
    return true;
  }
}
