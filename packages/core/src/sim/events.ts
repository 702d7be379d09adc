/**
 * The trace bus: typed tracepoints on eventemitter3.
 *
 * Events carry the kernel tracepoint's name where one exists (include/trace/events/migrate.h,
 * kmem.h, huge_memory.h) and are emitted after state is consistent. Payloads are readonly. A
 * tracepoint nobody listens to costs one property read: callers test {@link TraceBus.wants}
 * before building a payload. Events are observations only; obligations are ops callbacks.
 *
 * @see include/linux/tracepoint.h
 */
import { EventEmitter } from "eventemitter3";

/** Payload of `page_fault_user`. */
export interface PageFaultEvent {
  /** Address-space id. */
  readonly mm: number;
  /** Faulting address. */
  readonly address: number;
  /** Whether it was a write. */
  readonly write: boolean;
}

/** Payload of `mm_page_alloc` / `mm_page_free`. */
export interface PageAllocEvent {
  /** First pfn of the block. */
  readonly pfn: number;
  /** Block order. */
  readonly order: number;
}

/** Payload of `mm_migrate_pages`. */
export interface MigratePagesEvent {
  /** Base pages migrated. */
  readonly succeeded: number;
  /** Base pages that stayed. */
  readonly failed: number;
  /** Why they moved (the kernel's migrate_reason, as text). */
  readonly reason: string;
}

/** Payload of `hmm_range_fault`. */
export interface HmmRangeFaultEvent {
  /** Address-space id. */
  readonly mm: number;
  /** First byte. */
  readonly start: number;
  /** One past the last byte. */
  readonly end: number;
  /** 0 or a negative errno. */
  readonly result: number;
}

/** Payload of `mm_split_huge_page`. */
export interface SplitHugePageEvent {
  /** Head pfn of the folio that was split. */
  readonly pfn: number;
}

/** Payload of `didDetectBug`. */
export interface BugEvent {
  /** The check's stable id. */
  readonly check: string;
  /** What was found. */
  readonly message: string;
}

/** Tracepoints emitted by hmmkit core. Each payload is readonly. */
export interface CoreEvents {
  /** A task's page fault was handled. @see the x86 `page_fault_user` tracepoint (exceptions.h) */
  page_fault_user: readonly [PageFaultEvent];
  /** Pages were allocated from the buddy allocator. @see trace_mm_page_alloc */
  mm_page_alloc: readonly [PageAllocEvent];
  /** Pages were returned to the buddy allocator. @see trace_mm_page_free */
  mm_page_free: readonly [PageAllocEvent];
  /** A migrate_vma / migrate_device batch finished. @see trace_mm_migrate_pages */
  mm_migrate_pages: readonly [MigratePagesEvent];
  /** hmm_range_fault returned. (No kernel tracepoint; named after the function.) */
  hmm_range_fault: readonly [HmmRangeFaultEvent];
  /** A THP was split. @see trace_mm_split_huge_page (huge_memory.h) */
  mm_split_huge_page: readonly [SplitHugePageEvent];
  /** A bug check fired (it is also thrown). */
  didDetectBug: readonly [BugEvent];
}

/**
 * A typed tracepoint bus.
 * @typeParam E - the event map: name → payload tuple.
 */
export class TraceBus<E extends { [K in keyof E]: readonly unknown[] } = CoreEvents> extends EventEmitter<
  // eventemitter3 takes a map of name → listener-args
  { [K in keyof E]: (...args: E[K] extends readonly unknown[] ? E[K] : never) => void }
> {
  /**
   * Whether anyone listens to `name`: test this before building a payload on a hot path.
   * @param name - the tracepoint.
   * @returns true when at least one listener is attached.
   */
  wants(name: keyof E): boolean {
    // eventemitter3 counts the event names that have listeners in `_eventsCount`: with no
    // listener at all (the common case on hot paths) one property read answers.
    if ((this as unknown as { _eventsCount?: unknown })._eventsCount === 0) return false;
    return this.listenerCount(name as never) > 0;
  }
}
