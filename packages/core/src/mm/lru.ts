/**
 * LRU lists: inactive and active anonymous lists per node.
 *
 * A folio's head is on at most one list (PG_lru; PG_active says which), linked through the
 * per-page `lruPrev`/`lruNext` fields (pfn + 1, 0 = none) — the same fields the buddy allocator
 * uses for free lists, since a page is never on both. New anonymous folios enter the inactive
 * list head; `markAccessed` promotes a referenced inactive folio; aging moves the active tail to
 * the inactive head. Reclaim (vmscan) scans inactive tails. The LRU holds no reference; isolation
 * takes one (folio_isolate_lru).
 *
 * @see mm/swap.c (folio_add_lru, folio_mark_accessed), mm/vmscan.c, include/linux/mm_inline.h
 */
import { type PageState, PG } from "../phys/page-state";
import { BugError } from "../sim/errors";
import type { VmStat } from "../sim/vmstat";

/** List ids. @see enum lru_list */
export const LRU_INACTIVE_ANON = 0;
/** @see LRU_ACTIVE_ANON */
export const LRU_ACTIVE_ANON = 1;

/** The LRU lists of one node. @see struct lruvec */
export class LruVec {
  /** List heads (pfn + 1), per list id. */
  readonly head = new Float64Array(2);
  /** List tails (pfn + 1), per list id. */
  readonly tail = new Float64Array(2);
  /** Base pages on each list. @see NR_INACTIVE_ANON, NR_ACTIVE_ANON */
  readonly nrPages = new Float64Array(2);
}

/**
 * All LRU lists of a machine, by node.
 * @see mm/swap.c
 */
export class Lru {
  /** One lruvec per node. */
  readonly vecs: LruVec[] = [];

  /**
   * @param pages - per-page state. @param vmstat - counters (pgactivate, pgdeactivate).
   * @param nodeOf - node of a pfn.
   */
  constructor(
    private readonly pages: PageState,
    private readonly vmstat: VmStat,
    private readonly nodeOf: (pfn: number) => number,
  ) {}

  /** The zone id of the last lookup and its lruvec (a zone never changes node; lookups come in runs). */
  private lastZone = -1;
  private lastVec: LruVec | undefined;

  private vec(pfn: number): LruVec {
    const zone = this.pages.zone[pfn] as number;
    if (zone === this.lastZone) return this.lastVec as LruVec;
    const nid = Math.max(0, this.nodeOf(pfn));
    let v = this.vecs[nid];
    if (v === undefined) {
      while (this.vecs.length <= nid) this.vecs.push(new LruVec());
      v = this.vecs[nid] as LruVec;
    }
    this.lastZone = zone;
    this.lastVec = v;
    return v;
  }

  /**
   * Put a folio at the head of the inactive list (or active, when `active`).
   * @param head - folio head. @param active - add to the active list.
   * @throws BugError if it is already on a list.
   * @see folio_add_lru
   */
  add(head: number, active = false): void {
    const ps = this.pages;
    const f = ps.flags[head] as number;
    if (f & PG.lru) throw new BugError("lru-double-add", `pfn ${head} already on an LRU list`);
    const v = this.vec(head);
    const id = active ? LRU_ACTIVE_ANON : LRU_INACTIVE_ANON;
    const h = v.head[id] as number;
    ps.lruPrev[head] = 0;
    ps.lruNext[head] = h;
    if (h !== 0) ps.lruPrev[h - 1] = head + 1;
    else v.tail[id] = head + 1;
    v.head[id] = head + 1;
    v.nrPages[id] = (v.nrPages[id] as number) + ps.folioNrPages(head);
    ps.flags[head] = (f | PG.lru | (active ? PG.active : 0)) & ~(active ? PG.isolated : PG.active | PG.isolated);
  }

  /**
   * Take a folio off its list (no reference change).
   * @param head - folio head on a list.
   * @throws BugError if it is not on a list.
   * @see lruvec_del_folio
   */
  del(head: number): void {
    const ps = this.pages;
    const f = ps.flags[head] as number;
    if (!(f & PG.lru)) throw new BugError("lru-not-on-list", `pfn ${head} is not on an LRU list`);
    const v = this.vec(head);
    const id = f & PG.active ? LRU_ACTIVE_ANON : LRU_INACTIVE_ANON;
    const prev = ps.lruPrev[head] as number;
    const next = ps.lruNext[head] as number;
    if (prev !== 0) ps.lruNext[prev - 1] = next;
    else v.head[id] = next;
    if (next !== 0) ps.lruPrev[next - 1] = prev;
    else v.tail[id] = prev;
    ps.lruPrev[head] = 0;
    ps.lruNext[head] = 0;
    v.nrPages[id] = (v.nrPages[id] as number) - ps.folioNrPages(head);
    ps.flags[head] = f & ~(PG.lru | PG.active);
  }

  /**
   * Isolate a folio from the LRU for migration or reclaim: off the list, PG_isolated, +1 ref.
   * @param head - folio head. @returns false if it was not on a list.
   * @see folio_isolate_lru
   */
  isolate(head: number): boolean {
    const ps = this.pages;
    if (!((ps.flags[head] as number) & PG.lru)) return false;
    this.del(head);
    ps.flags[head] = (ps.flags[head] as number) | PG.isolated;
    ps.refcount[head] = (ps.refcount[head] as number) + 1;
    return true;
  }

  /**
   * Return an isolated folio to the LRU and drop the isolation reference.
   * @param head - an isolated folio head.
   * @param put - drops a reference (the caller's PageRefs.putPage).
   * @see folio_putback_lru
   */
  putback(head: number, put: (pfn: number) => void): void {
    this.add(head);
    put(head);
  }

  /**
   * Mark a folio accessed: a referenced inactive folio moves to the active list.
   * @param head - folio head. @see folio_mark_accessed
   */
  markAccessed(head: number): void {
    const ps = this.pages;
    const f = ps.flags[head] as number;
    if (!(f & PG.referenced)) {
      ps.flags[head] = f | PG.referenced;
      return;
    }
    if (f & PG.lru && !(f & PG.active)) {
      this.del(head);
      this.add(head, true);
      ps.flags[head] = (ps.flags[head] as number) & ~PG.referenced;
      this.vmstat.c.pgactivate += ps.folioNrPages(head);
    }
  }

  /**
   * The folio at the tail of a list (the coldest), or -1.
   * @param nid - node. @param id - list id. @returns head pfn or -1.
   */
  tailOf(nid: number, id: number): number {
    const v = this.vecs[nid];
    if (v === undefined) return -1;
    return (v.tail[id] as number) - 1;
  }

  /**
   * The folio before `head` on its list (towards the head), or -1.
   * @param head - a folio on a list. @returns pfn or -1.
   */
  prevOf(head: number): number {
    return (this.pages.lruPrev[head] as number) - 1;
  }
}
