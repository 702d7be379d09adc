import { describe, expect, it } from "vitest";
import { useLeakGuard } from "../../../test/leak-guard";
import type { Mm } from "../mm";
import {
  MMU_NOTIFY,
  type MmuIntervalNotifier,
  mmuIntervalNotifierInsert,
  mmuIntervalNotifierRemove,
  mmuIntervalReadBegin,
  mmuIntervalReadRetry,
  mmuIntervalSetSeq,
} from "../mmu-notifier";
import { MADV_DONTNEED, PROT_READ } from "../vma";
import { MiB, PRIV, RW, thrown } from "./helpers";

const boot = useLeakGuard();

interface Seen {
  event: number;
  start: number;
  end: number;
  seq: number;
}

/** A mirror that records every invalidation and follows the protocol (set_seq in the callback). */
function mirror(mm: Mm, start: number, length: number) {
  const seen: Seen[] = [];
  const sub = mmuIntervalNotifierInsert(mm, start, length, {
    invalidate(s, range, curSeq) {
      seen.push({ event: range.event, start: range.start, end: range.end, seq: curSeq });
      expect(range.blockable).toBe(true);
      expect(range.mm).toBe(mm);
      mmuIntervalSetSeq(s, curSeq);
      return true;
    },
  });
  return { sub, seen };
}

describe("mmu_interval_notifier sequence protocol", () => {
  it("a new subscription starts at an odd seq that read_begin returns; no retry without invalidation", () => {
    const m = boot({ ramMiB: [32] });
    const t = m.mm.spawn();
    const a = t.mm.mmap(0, MiB, RW, PRIV);
    const { sub } = mirror(t.mm, a, MiB);
    expect(t.mm.notifiers.invalidateSeq).toBe(2);
    const seq = mmuIntervalReadBegin(sub);
    expect(seq).toBe(1);
    expect(seq % 2).toBe(1);
    expect(mmuIntervalReadRetry(sub, seq)).toBe(false);
  });

  it("munmap inside the range: UNMAP callback with the exact range and odd seq; read_retry then true", () => {
    const m = boot({ ramMiB: [32] });
    const t = m.mm.spawn();
    const a = t.mm.mmap(0, MiB, RW, PRIV);
    const { sub, seen } = mirror(t.mm, a, MiB);
    const seq = mmuIntervalReadBegin(sub);
    t.mm.munmap(a + 8192, 4096);
    expect(seen).toEqual([{ event: MMU_NOTIFY.UNMAP, start: a + 8192, end: a + 12288, seq: 3 }]);
    expect(t.mm.notifiers.invalidateSeq).toBe(4);
    expect(t.mm.notifiers.activeInvalidateRanges).toBe(0);
    expect(mmuIntervalReadRetry(sub, seq)).toBe(true);
    const seq2 = mmuIntervalReadBegin(sub);
    expect(seq2).toBe(3);
    expect(mmuIntervalReadRetry(sub, seq2)).toBe(false);
    // A second invalidation moves it again.
    t.mm.munmap(a, 4096);
    expect(seen[1]).toEqual({ event: MMU_NOTIFY.UNMAP, start: a, end: a + 4096, seq: 5 });
    expect(mmuIntervalReadRetry(sub, seq2)).toBe(true);
  });

  it("invalidations outside the subscription do not call it or move its sequence", async () => {
    const m = boot({ ramMiB: [32], thp: "never" });
    const t = m.mm.spawn();
    const a = t.mm.mmap(0, 4 * MiB, RW, PRIV);
    const { sub, seen } = mirror(t.mm, a, MiB);
    const seq = mmuIntervalReadBegin(sub);
    t.mm.munmap(a + 2 * MiB, MiB);
    t.mm.mprotect(a + MiB, MiB, PROT_READ);
    await m.mm.write(t, a + 3 * MiB, new Uint8Array([1]));
    expect(seen).toEqual([]);
    expect(mmuIntervalReadRetry(sub, seq)).toBe(false);
    expect(t.mm.notifiers.invalidateSeq).toBe(2);
  });

  it("event kinds: COW -> CLEAR, mprotect -> PROTECTION_VMA, fork -> PROTECTION_PAGE, MADV_DONTNEED -> CLEAR, exit -> RELEASE", async () => {
    const m = boot({ ramMiB: [32], thp: "never" });
    const t = m.mm.spawn();
    const a = t.mm.mmap(0, 16 * 4096, RW, PRIV);
    const { seen } = mirror(t.mm, a, 16 * 4096);
    await m.mm.write(t, a, new Uint8Array(16 * 4096).fill(1)); // first-touch faults: no invalidation
    expect(seen).toEqual([]);

    const c = m.mm.fork(t);
    expect(seen.map((s) => [s.event, s.start - a, s.end - a])).toEqual([[MMU_NOTIFY.PROTECTION_PAGE, 0, 16 * 4096]]);

    await m.mm.write(t, a + 5 * 4096 + 3, new Uint8Array([2])); // COW in the parent
    expect(seen.slice(1).map((s) => [s.event, s.start - a, s.end - a])).toEqual([[MMU_NOTIFY.CLEAR, 5 * 4096, 6 * 4096]]);
    await m.mm.write(t, a + 5 * 4096 + 4, new Uint8Array([2])); // now writable: no invalidation
    expect(seen.length).toBe(2);

    t.mm.mprotect(a + 4096, 2 * 4096, PROT_READ);
    expect(seen.slice(2).map((s) => [s.event, s.start - a, s.end - a])).toEqual([[MMU_NOTIFY.PROTECTION_VMA, 4096, 3 * 4096]]);

    t.mm.madvise(a + 8 * 4096, 4096, MADV_DONTNEED);
    expect(seen.slice(3).map((s) => [s.event, s.start - a, s.end - a])).toEqual([[MMU_NOTIFY.CLEAR, 8 * 4096, 9 * 4096]]);

    m.mm.exit(c); // the child's mm has no subscription
    expect(seen.length).toBe(4);
    m.mm.exit(t);
    // exit_mmap: RELEASE over the whole address space, then UNMAP for each VMA (unmap_vmas).
    const release = seen[4] as Seen;
    expect(release.event).toBe(MMU_NOTIFY.RELEASE);
    expect(release.start).toBe(0);
    expect(release.end).toBeGreaterThanOrEqual(2 ** 47);
    expect(seen.slice(5).map((s) => s.event)).toEqual(seen.slice(5).map(() => MMU_NOTIFY.UNMAP));
    expect(seen.length).toBeGreaterThan(5);
    // strictly increasing odd sequence numbers, one per invalidation
    const seqs = seen.map((s) => s.seq);
    expect(seqs.every((s) => s % 2 === 1)).toBe(true);
    expect(seqs).toEqual([...seqs].sort((x, y) => x - y));
    expect(new Set(seqs).size).toBe(seqs.length);
  });

  it("a subscription only sees its overlap; two subscriptions share one odd seq per invalidation", () => {
    const m = boot({ ramMiB: [32] });
    const t = m.mm.spawn();
    const a = t.mm.mmap(0, MiB, RW, PRIV);
    const x = mirror(t.mm, a, 8192);
    const y = mirror(t.mm, a + 4096, 8192);
    t.mm.munmap(a, 3 * 4096);
    expect(x.seen).toEqual([{ event: MMU_NOTIFY.UNMAP, start: a, end: a + 3 * 4096, seq: 3 }]);
    expect(y.seen).toEqual([{ event: MMU_NOTIFY.UNMAP, start: a, end: a + 3 * 4096, seq: 3 }]);
    expect(t.mm.notifiers.invalidateSeq).toBe(4);
  });

  it("read_begin from inside an invalidation of the same subscription is a bug", () => {
    const m = boot({ ramMiB: [32] });
    const t = m.mm.spawn();
    const a = t.mm.mmap(0, MiB, RW, PRIV);
    let err: unknown;
    mmuIntervalNotifierInsert(t.mm, a, MiB, {
      invalidate(s: MmuIntervalNotifier, _r, cur) {
        mmuIntervalSetSeq(s, cur);
        try {
          mmuIntervalReadBegin(s);
        } catch (e) {
          err = e;
        }
        return true;
      },
    });
    t.mm.munmap(a, 4096);
    expect(err).toMatchObject({ name: "BugError", check: "read-begin-in-invalidate" });
    expect(t.mm.notifiers.inCallback).toBe(0);
  });

  it("remove stops callbacks and is idempotent; insert validates its arguments", () => {
    const m = boot({ ramMiB: [32] });
    const t = m.mm.spawn();
    const a = t.mm.mmap(0, MiB, RW, PRIV);
    const { sub, seen } = mirror(t.mm, a, MiB);
    mmuIntervalNotifierRemove(sub);
    mmuIntervalNotifierRemove(sub);
    expect(sub.removed).toBe(true);
    expect(t.mm.notifiers.subs.length).toBe(0);
    t.mm.munmap(a, 4096);
    expect(seen).toEqual([]);
    expect(t.mm.notifiers.invalidateSeq).toBe(2);
    const ops = { invalidate: () => true };
    expect(thrown(() => mmuIntervalNotifierInsert(t.mm, a, 0, ops))).toMatchObject({ code: "EINVAL", arg: "length" });
    expect(thrown(() => mmuIntervalNotifierInsert(t.mm, -4096, 4096, ops))).toMatchObject({ code: "EINVAL", arg: "start" });
    m.mm.exit(t);
    expect(thrown(() => mmuIntervalNotifierInsert(t.mm, a, 4096, ops))).toMatchObject({ code: "EINVAL", arg: "mm" });
  });
});
