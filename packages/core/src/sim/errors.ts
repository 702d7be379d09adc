/**
 * Errors: errno-coded API errors and broken-invariant bugs.
 *
 * Models the kernel's two ways of failing: a negative errno returned to a caller that misused an
 * API (include/uapi/asm-generic/errno-base.h), and `VM_BUG_ON`/`WARN_ON` for a broken invariant
 * (include/linux/mmdebug.h). API misuse throws {@link HmmError} with a stable `code` and leaves all
 * state unchanged; a broken invariant throws {@link BugError}, which is never caught to carry on.
 */

/** errno values used by hmmkit, with the numbers of include/uapi/asm-generic/errno-base.h. */
export const ERRNO = {
  /** Operation not permitted (e.g. a write fault on a read-only range). */
  EPERM: 1,
  /** No such entry (e.g. nothing to migrate, no mirror entry). */
  ENOENT: 2,
  /** Interrupted. */
  EINTR: 4,
  /** I/O error (e.g. a failed DMA). */
  EIO: 5,
  /** Bad file descriptor (e.g. a closed file). */
  EBADF: 9,
  /** Try again. */
  EAGAIN: 11,
  /** Out of memory. */
  ENOMEM: 12,
  /** Bad address (no VMA, access denied, unresolvable fault). */
  EFAULT: 14,
  /** Busy (a pinned page, a raced sequence count, a page that cannot move). */
  EBUSY: 16,
  /** Already exists. */
  EEXIST: 17,
  /** No such device. */
  ENODEV: 19,
  /** Invalid argument. */
  EINVAL: 22,
  /** No space left (swap, pool). */
  ENOSPC: 28,
  /** Out of range. */
  ERANGE: 34,
  /** Not supported. */
  EOPNOTSUPP: 95,
  /** Memory page has a hardware error. */
  EHWPOISON: 133,
} as const;

/** The name of an errno, e.g. `"EINVAL"`. */
export type Errno = keyof typeof ERRNO;

/**
 * The errno name of a negative (or positive) errno number.
 * @param errno - e.g. -22. @returns e.g. `"EINVAL"`; `"EINVAL"` for a number with no name here.
 * @see errname (lib/errname.c)
 */
export function errnoName(errno: number): Errno {
  const n = Math.abs(errno);
  for (const k of Object.keys(ERRNO) as Errno[]) if (ERRNO[k] === n) return k;
  return "EINVAL";
}

/**
 * An API error with an errno-style code and a message naming the offending argument.
 *
 * Thrown for misuse and bad input; the operation that threw changed no state.
 * @see include/uapi/asm-generic/errno-base.h
 */
export class HmmError extends Error {
  /** The errno name, stable across releases (match on this, not on the message). */
  readonly code: Errno;
  /** The argument (or field path) the error is about, when there is one. */
  readonly arg: string | undefined;

  /**
   * @param code - errno name.
   * @param message - what was wrong and what was expected.
   * @param arg - the offending argument or field, named in the message too.
   */
  constructor(code: Errno, message: string, arg?: string) {
    super(`${code}: ${message}`);
    this.name = "HmmError";
    this.code = code;
    this.arg = arg;
  }

  /** The negative errno number, as a kernel function would return it. */
  get errno(): number {
    return -ERRNO[this.code];
  }
}

/**
 * A broken invariant: the emulator caught a bug in hmmkit or in a driver (double free, DMA to an
 * unmapped page, a leaked page lock). Never caught to carry on.
 * @see VM_BUG_ON in include/linux/mmdebug.h
 */
export class BugError extends Error {
  /** A short stable identifier of the check that fired, e.g. `"double-free"`. */
  readonly check: string;
  /**
   * @param check - stable identifier of the check.
   * @param message - what was found.
   */
  constructor(check: string, message: string) {
    super(`BUG(${check}): ${message}`);
    this.name = "BugError";
    this.check = check;
  }
}

/**
 * Throw an {@link HmmError} with code EINVAL naming `arg`.
 * @param arg - the argument's name.
 * @param expected - what was expected of it.
 * @throws HmmError always.
 */
export function einval(arg: string, expected: string): never {
  throw new HmmError("EINVAL", `${arg}: ${expected}`, arg);
}

/**
 * Check a broken-invariant condition, like `VM_BUG_ON`.
 * @param cond - must be true.
 * @param check - stable identifier of the check.
 * @param message - what is wrong when `cond` is false.
 * @throws BugError when `cond` is false.
 * @see VM_BUG_ON in include/linux/mmdebug.h
 */
export function bugOn(cond: boolean, check: string, message: string): asserts cond {
  if (!cond) throw new BugError(check, message);
}
