/**
 * mmu_interval_notifier: tell a mirror (a device page table) that CPU mappings in a range change.
 *
 * Each address space keeps a sequence number. When an invalidation begins that overlaps at least
 * one subscription, the number is made odd; each overlapping subscription's `invalidate` callback
 * runs with that odd number and must record it with {@link mmuIntervalSetSeq} under the driver's
 * lock and finish its own invalidation before returning. When the last overlapping invalidation
 * ends, the number is incremented (even again).
 *
 * A mirror reads with the collision-retry protocol: `seq = mmuIntervalReadBegin(sub)`, walk the
 * CPU page table (hmmRangeFault), then under the driver lock `mmuIntervalReadRetry(sub, seq)`;
 * true means an invalidation raced and the result must be thrown away. In hmmkit invalidations
 * never span an `await` (they run inside synchronous page-table updates), so `ReadBegin` never
 * has to sleep; it reports a bug if called inside a callback.
 *
 * This file lives in `mm/` rather than `hmm/` (CONVENTIONS.md lists hmm/mmu-notifier.ts) because
 * every page-table update in mm calls it, as mm/mmu_notifier.c is part of the kernel's mm.
 *
 * @see mm/mmu_notifier.c, include/linux/mmu_notifier.h
 */
import { BugError, einval } from "../sim/errors";
import type { Mm } from "./mm";

/** Why a range is invalidated. Values follow enum mmu_notifier_event. @see include/linux/mmu_notifier.h */
export const MMU_NOTIFY = {
  /** munmap / zap: the range is unmapped. @see MMU_NOTIFY_UNMAP */
  UNMAP: 0,
  /** Pages are replaced (COW, page reuse). @see MMU_NOTIFY_CLEAR */
  CLEAR: 1,
  /** mprotect on the VMA. @see MMU_NOTIFY_PROTECTION_VMA */
  PROTECTION_VMA: 2,
  /** Write protection of pages (fork's COW setup). @see MMU_NOTIFY_PROTECTION_PAGE */
  PROTECTION_PAGE: 3,
  /** Soft-dirty tracking. @see MMU_NOTIFY_SOFT_DIRTY */
  SOFT_DIRTY: 4,
  /** The address space is going away (exit). @see MMU_NOTIFY_RELEASE */
  RELEASE: 5,
  /** Pages are being migrated; `owner` names who migrates. @see MMU_NOTIFY_MIGRATE */
  MIGRATE: 6,
  /** A device takes exclusive access. @see MMU_NOTIFY_EXCLUSIVE */
  EXCLUSIVE: 7,
} as const;

/** An invalidation's description, passed to callbacks. @see struct mmu_notifier_range */
export interface MmuNotifierRange {
  /** The address space. */
  readonly mm: Mm;
  /** First byte. */
  readonly start: number;
  /** One past the last byte. */
  readonly end: number;
  /** An {@link MMU_NOTIFY} value. */
  readonly event: number;
  /** For MIGRATE and EXCLUSIVE: who causes it (a pgmap owner), so a driver can skip its own. */
  readonly owner: unknown;
  /** Whether callbacks may sleep (always true in hmmkit). @see mmu_notifier_range_blockable */
  readonly blockable: boolean;
}

/** A subscriber's callbacks. @see struct mmu_interval_notifier_ops */
export interface MmuIntervalNotifierOps {
  /**
   * Invalidate the subscriber's mirror of `range`. Must call {@link mmuIntervalSetSeq}(sub, curSeq)
   * under the driver's lock. Return false only if `!range.blockable` and the lock was busy.
   */
  invalidate(sub: MmuIntervalNotifier, range: MmuNotifierRange, curSeq: number): boolean;
}

/** One subscription over `[start, end)` of an address space. @see struct mmu_interval_notifier */
export class MmuIntervalNotifier {
  /** The subscription's sequence number (set by the callback). */
  invalidateSeq = 0;
  /** Whether it was removed. */
  removed = false;
  /**
   * @param mm - address space. @param start - first byte. @param end - one past last byte.
   * @param ops - callbacks.
   */
  constructor(
    readonly mm: Mm,
    readonly start: number,
    readonly end: number,
    readonly ops: MmuIntervalNotifierOps,
  ) {}
}

/** Per-address-space notifier state. @see struct mmu_notifier_subscriptions */
export class MmuNotifierState {
  /** Sequence number: odd while an invalidation that overlaps a subscription is active. */
  invalidateSeq = 2;
  /** Number of active overlapping invalidations. */
  activeInvalidateRanges = 0;
  /** Subscriptions, in insertion order. */
  readonly subs: MmuIntervalNotifier[] = [];
  /** Depth of callbacks currently running (read_begin inside one is a bug). */
  inCallback = 0;
}

/**
 * Subscribe to invalidations of `[start, start + length)` of `mm`.
 * @param mm - address space (must be alive).
 * @param start - first byte. @param length - bytes, > 0.
 * @param ops - callbacks.
 * @returns the subscription.
 * @throws HmmError EINVAL for a negative start or non-positive length; ENOENT-like EINVAL for a dead mm.
 * @see mmu_interval_notifier_insert
 */
export function mmuIntervalNotifierInsert(mm: Mm, start: number, length: number, ops: MmuIntervalNotifierOps): MmuIntervalNotifier {
  if (!(start >= 0) || !Number.isFinite(start)) einval("start", `a non-negative address, got ${start}`);
  if (!(length > 0) || !Number.isFinite(length)) einval("length", `a positive length, got ${length}`);
  if (mm.dead) einval("mm", "a live address space");
  const st = mm.notifiers;
  const sub = new MmuIntervalNotifier(mm, start, start + length, ops);
  sub.invalidateSeq = st.activeInvalidateRanges > 0 ? st.invalidateSeq : st.invalidateSeq - 1;
  st.subs.push(sub);
  return sub;
}

/**
 * Remove a subscription. Idempotent.
 * @param sub - the subscription.
 * @see mmu_interval_notifier_remove
 */
export function mmuIntervalNotifierRemove(sub: MmuIntervalNotifier): void {
  if (sub.removed) return;
  sub.removed = true;
  const subs = sub.mm.notifiers.subs;
  const i = subs.indexOf(sub);
  if (i >= 0) subs.splice(i, 1);
}

/**
 * Begin a read: the sequence number to check later with {@link mmuIntervalReadRetry}.
 * @param sub - subscription. @returns the sequence number.
 * @throws BugError if called from inside an invalidate callback (it would deadlock in the kernel).
 * @see mmu_interval_read_begin
 */
export function mmuIntervalReadBegin(sub: MmuIntervalNotifier): number {
  const st = sub.mm.notifiers;
  if (st.inCallback > 0 && sub.invalidateSeq === st.invalidateSeq) {
    throw new BugError(
      "read-begin-in-invalidate",
      "mmu_interval_read_begin inside an invalidation of the same subscription would never return",
    );
  }
  return sub.invalidateSeq;
}

/**
 * Whether an invalidation ran since `seq` was read (check under the driver lock).
 * @param sub - subscription. @param seq - from read_begin. @returns true if the caller must retry.
 * @see mmu_interval_read_retry
 */
export function mmuIntervalReadRetry(sub: MmuIntervalNotifier, seq: number): boolean {
  return sub.invalidateSeq !== seq;
}

/**
 * Lockless early retry check (what hmm_range_fault uses to return -EBUSY).
 * @param sub - subscription. @param seq - from read_begin. @returns true if a retry is needed.
 * @see mmu_interval_check_retry
 */
export function mmuIntervalCheckRetry(sub: MmuIntervalNotifier, seq: number): boolean {
  return sub.invalidateSeq !== seq;
}

/**
 * Record the invalidation's sequence number (from the callback, under the driver lock).
 * @param sub - subscription. @param curSeq - the callback's `curSeq`.
 * @see mmu_interval_set_seq
 */
export function mmuIntervalSetSeq(sub: MmuIntervalNotifier, curSeq: number): void {
  sub.invalidateSeq = curSeq;
}

/**
 * Begin invalidating `range`: call every overlapping subscription.
 * Must be paired with {@link mmuNotifierInvalidateRangeEnd} in the same synchronous section.
 * @param range - what changes. @returns true if any subscription overlapped.
 * @see mmu_notifier_invalidate_range_start
 */
export function mmuNotifierInvalidateRangeStart(range: MmuNotifierRange): boolean {
  const st = range.mm.notifiers;
  if (st.subs.length === 0) return false;
  let hit = false;
  for (const sub of st.subs) {
    if (sub.start >= range.end || sub.end <= range.start) continue;
    if (!hit) {
      hit = true;
      if (st.activeInvalidateRanges === 0) st.invalidateSeq |= 1;
      st.activeInvalidateRanges++;
    }
    st.inCallback++;
    try {
      sub.ops.invalidate(sub, range, st.invalidateSeq);
    } finally {
      st.inCallback--;
    }
  }
  return hit;
}

/**
 * End an invalidation begun with {@link mmuNotifierInvalidateRangeStart}.
 * @param range - the same range. @param hit - what range_start returned.
 * @see mmu_notifier_invalidate_range_end
 */
export function mmuNotifierInvalidateRangeEnd(range: MmuNotifierRange, hit: boolean): void {
  if (!hit) return;
  const st = range.mm.notifiers;
  st.activeInvalidateRanges--;
  if (st.activeInvalidateRanges === 0) st.invalidateSeq++;
}

/**
 * Invalidate a range in one step (start + end), for updates that are atomic here.
 * @param mm - address space. @param start - first byte. @param end - one past last.
 * @param event - {@link MMU_NOTIFY} value. @param owner - migration/exclusive owner, or undefined.
 */
export function mmuNotifyRange(mm: Mm, start: number, end: number, event: number, owner?: unknown): void {
  if (mm.notifiers.subs.length === 0) return;
  const range: MmuNotifierRange = { mm, start, end, event, owner, blockable: true };
  mmuNotifierInvalidateRangeEnd(range, mmuNotifierInvalidateRangeStart(range));
}
