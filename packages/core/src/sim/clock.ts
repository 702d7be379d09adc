/**
 * Virtual time: the machine's clock and its discrete event queue.
 *
 * Time is a number of nanoseconds since the machine booted; it only moves when the run loop takes
 * the next event. Events sit in a binary min-heap keyed by (time, sequence number), so two events
 * at the same time fire in the order they were scheduled: the run is deterministic. Nothing here
 * reads wall time or uses timers.
 *
 * Async code (a driver awaiting a DMA fence) resumes when the fence's event fires. The run loop
 * lets every microtask chain settle after each instant (one macrotask turn), so `await` chains
 * started by an event finish before the next instant is processed.
 *
 * @see kernel/time/timer.c, kernel/time/hrtimer.c (the kernel's timer wheel and hrtimers play
 *      this role for real time; hmmkit has no real time)
 */
import { BugError, einval } from "./errors";

/** A scheduled event; cancel it with {@link SimClock.cancel}. */
export interface SimEvent {
  /** Virtual time (ns) at which it fires. */
  readonly time: number;
  /** Tie-breaking sequence number: earlier-scheduled fires first. */
  readonly seq: number;
  /** @internal */
  fn: (() => void) | null;
}

const flushMicrotasks = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/**
 * A completion that resolves on the virtual clock, like a `dma_fence`.
 * @see include/linux/dma-fence.h
 */
export class Fence {
  /** Resolves when the fence signals (with its error, if any). */
  readonly promise: Promise<void>;
  private resolveFn!: () => void;
  private signaledAt = -1;
  /** Set when the work the fence tracks failed (e.g. an injected DMA error). */
  error: Error | undefined;

  constructor() {
    this.promise = new Promise<void>((resolve) => {
      this.resolveFn = resolve;
    });
  }

  /** Whether {@link Fence.signal} has been called. */
  get signaled(): boolean {
    return this.signaledAt >= 0;
  }

  /** Virtual time at which the fence signalled, or -1. */
  get time(): number {
    return this.signaledAt;
  }

  /**
   * Signal completion. Called by the event that completes the tracked work.
   * @param now - the current virtual time.
   * @param error - set when the work failed.
   * @throws BugError if already signalled (a fence signals once).
   * @see dma_fence_signal
   */
  signal(now: number, error?: Error): void {
    if (this.signaledAt >= 0) throw new BugError("fence-double-signal", "fence signalled twice");
    this.signaledAt = now;
    this.error = error;
    this.resolveFn();
  }

  /**
   * Wait for the fence.
   * @returns the fence's error (undefined on success); does not throw it.
   * @see dma_fence_wait
   */
  async wait(): Promise<Error | undefined> {
    await this.promise;
    return this.error;
  }
}

/**
 * The machine's virtual clock and event queue.
 *
 * Context: `schedule`/`at` are synchronous and may be called from anywhere; `run`, `runUntil` and
 * `settle` are the run loop and must not be re-entered.
 */
export class SimClock {
  private t = 0;
  private seqNext = 0;
  private heap: SimEvent[] = [];
  private running = false;
  /** Number of events fired since boot. */
  eventsFired = 0;

  /** Current virtual time in nanoseconds. */
  get now(): number {
    return this.t;
  }

  /** Number of events waiting in the queue. */
  get pending(): number {
    return this.heap.length;
  }

  /**
   * Schedule `fn` to run `delayNs` from now.
   * @param delayNs - non-negative finite delay in ns.
   * @param fn - the event's action; runs synchronously in the run loop.
   * @returns a handle for {@link SimClock.cancel}.
   * @throws HmmError EINVAL if `delayNs` is negative or not finite.
   */
  schedule(delayNs: number, fn: () => void): SimEvent {
    if (!(delayNs >= 0) || !Number.isFinite(delayNs)) einval("delayNs", `a finite number >= 0, got ${delayNs}`);
    return this.push(this.t + delayNs, fn);
  }

  /**
   * Schedule `fn` at absolute virtual time `time` (clamped to now if in the past is an error).
   * @param time - absolute time in ns, >= now.
   * @param fn - the event's action.
   * @returns a handle for {@link SimClock.cancel}.
   * @throws HmmError EINVAL if `time` is before now or not finite.
   */
  at(time: number, fn: () => void): SimEvent {
    if (!(time >= this.t) || !Number.isFinite(time)) einval("time", `a finite time >= now (${this.t}), got ${time}`);
    return this.push(time, fn);
  }

  /**
   * Cancel a scheduled event; a no-op if it already fired.
   * @param ev - the handle returned by schedule/at.
   */
  cancel(ev: SimEvent): void {
    ev.fn = null;
  }

  /**
   * A promise that resolves `delayNs` from now on the virtual clock.
   * @param delayNs - non-negative delay in ns.
   * @returns resolves when the clock reaches now + delayNs.
   */
  sleep(delayNs: number): Promise<void> {
    return new Promise<void>((resolve) => {
      this.schedule(delayNs, resolve);
    });
  }

  /**
   * A fence that signals `delayNs` from now.
   * @param delayNs - non-negative delay in ns.
   * @returns the fence.
   */
  fenceAfter(delayNs: number): Fence {
    const f = new Fence();
    this.schedule(delayNs, () => f.signal(this.t));
    return f;
  }

  /**
   * Fire every event scheduled for the earliest pending instant, synchronously.
   * @returns false when the queue was empty.
   */
  step(): boolean {
    const first = this.heap[0];
    if (first === undefined) return false;
    const time = first.time;
    this.t = time;
    while (this.heap.length > 0 && (this.heap[0] as SimEvent).time === time) {
      const ev = this.pop();
      const fn = ev.fn;
      if (fn !== null) {
        ev.fn = null;
        this.eventsFired++;
        fn();
      }
    }
    return true;
  }

  /**
   * Run until no event is pending and every promise chain started by events has settled.
   * @returns resolves at the end of the run, with the clock at the last event's time.
   * @throws BugError if re-entered.
   */
  async run(): Promise<void> {
    await this.loop(() => false);
  }

  /**
   * Run every event scheduled at or before `time`, then advance the clock to `time`.
   * @param time - absolute virtual time, >= now.
   * @throws HmmError EINVAL if `time` is before now.
   */
  async runUntil(time: number): Promise<void> {
    if (!(time >= this.t)) einval("time", `>= now (${this.t}), got ${time}`);
    await this.loop(() => (this.heap[0] as SimEvent).time > time);
    if (this.t < time) this.t = time;
  }

  /**
   * Run the clock until `p` settles, and return its value.
   * @param p - a promise whose completion depends on simulated events.
   * @returns p's value.
   * @throws whatever `p` rejects with; BugError `deadlock` if the queue empties while `p` is
   *   still pending (nothing could ever settle it).
   */
  async settle<T>(p: Promise<T>): Promise<T> {
    let done = false;
    const tracked = p.then(
      (v) => {
        done = true;
        return v;
      },
      (e: unknown) => {
        done = true;
        throw e;
      },
    );
    tracked.catch(() => {});
    await this.loop(() => done);
    if (!done) throw new BugError("deadlock", "the awaited operation can never complete: no simulated event is pending");
    return tracked;
  }

  private async loop(stop: () => boolean): Promise<void> {
    if (this.running) throw new BugError("clock-reentry", "SimClock run loop re-entered");
    this.running = true;
    try {
      await flushMicrotasks();
      while (this.heap.length > 0 && !stop()) {
        this.step();
        await flushMicrotasks();
      }
    } finally {
      this.running = false;
    }
  }

  private push(time: number, fn: () => void): SimEvent {
    const ev: SimEvent = { time, seq: this.seqNext++, fn };
    const h = this.heap;
    h.push(ev);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      const pe = h[p] as SimEvent;
      if (pe.time < time || (pe.time === time && pe.seq < ev.seq)) break;
      h[i] = pe;
      i = p;
    }
    h[i] = ev;
    return ev;
  }

  private pop(): SimEvent {
    const h = this.heap;
    const top = h[0] as SimEvent;
    const last = h.pop() as SimEvent;
    if (h.length > 0) {
      let i = 0;
      const n = h.length;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= n) break;
        const r = l + 1;
        let c = l;
        const le = h[l] as SimEvent;
        if (r < n) {
          const re = h[r] as SimEvent;
          if (re.time < le.time || (re.time === le.time && re.seq < le.seq)) c = r;
        }
        const ce = h[c] as SimEvent;
        if (last.time < ce.time || (last.time === ce.time && last.seq < ce.seq)) break;
        h[i] = ce;
        i = c;
      }
      h[i] = last;
    }
    return top;
  }
}
