/**
 * A sleeping mutex for driver code that awaits while holding it (the kernel's `struct mutex`).
 *
 * hmmkit runs one synchronous section at a time, so a lock only matters across an `await`: the
 * uvmem driver holds `kvm->arch.uvmem_lock` across a migration whose ultracall takes simulated
 * time, and a concurrent page-in, page-out or host fault on the same guest must wait for it.
 *
 * Waiters are woken strictly in FIFO order and ownership is handed to the first waiter at unlock
 * (no barging), so the order in which contenders acquire the lock depends only on the order in
 * which they asked: runs stay deterministic. Unlocking a mutex that is not held is a bug.
 *
 * @see kernel/locking/mutex.c, include/linux/mutex.h
 */
import { BugError } from "@hmmkit/core";

/**
 * A FIFO sleeping lock.
 * @see struct mutex
 */
export class Mutex {
  private held = false;
  private readonly waiters: (() => void)[] = [];

  /** @param name - label used in bug reports (e.g. `"uvmem_lock(lpid 1)"`). @see mutex_init */
  constructor(readonly name: string) {}

  /**
   * Whether the mutex is held.
   * @returns true while some caller owns it.
   * @see mutex_is_locked
   */
  get isLocked(): boolean {
    return this.held;
  }

  /** Number of callers waiting in {@link Mutex.lock}. @see struct mutex (wait_list) */
  get waiting(): number {
    return this.waiters.length;
  }

  /**
   * Take the mutex, waiting (in FIFO order) while another caller holds it.
   * @returns resolves once the caller owns the mutex.
   * Context: may await; must not be called by the current owner (no recursion, as in the kernel).
   * @see mutex_lock
   */
  lock(): Promise<void> {
    if (!this.held) {
      this.held = true;
      return Promise.resolve();
    }
    return new Promise<void>((resolve) => {
      this.waiters.push(resolve);
    });
  }

  /**
   * Take the mutex if it is free.
   * @returns true if the caller now owns it, false if it is held.
   * @see mutex_trylock
   */
  tryLock(): boolean {
    if (this.held) return false;
    this.held = true;
    return true;
  }

  /**
   * Release the mutex; the first waiter, if any, becomes the owner.
   * @throws BugError `mutex-unlock-unlocked` if the mutex is not held.
   * @see mutex_unlock
   */
  unlock(): void {
    if (!this.held) throw new BugError("mutex-unlock-unlocked", `unlock of ${this.name}, which is not locked`);
    const next = this.waiters.shift();
    if (next === undefined) this.held = false;
    else next();
  }
}
