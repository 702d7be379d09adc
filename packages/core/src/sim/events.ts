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

/** Tracepoints emitted by hmmkit core. Each payload is readonly. */
export interface CoreEvents {
  /** A task's page fault was handled. @see trace_mm_... (x86 exceptions:page_fault_user) */
  page_fault_user: readonly [{ readonly mm: number; readonly address: number; readonly write: boolean }];
  /** Pages were allocated from the buddy allocator. @see trace_mm_page_alloc */
  mm_page_alloc: readonly [{ readonly pfn: number; readonly order: number }];
  /** Pages were returned to the buddy allocator. @see trace_mm_page_free */
  mm_page_free: readonly [{ readonly pfn: number; readonly order: number }];
  /** A migrate_vma / migrate_device batch finished. @see trace_mm_migrate_pages */
  mm_migrate_pages: readonly [{ readonly succeeded: number; readonly failed: number; readonly reason: string }];
  /** hmm_range_fault returned. (No kernel tracepoint; named after the function.) */
  hmm_range_fault: readonly [{ readonly mm: number; readonly start: number; readonly end: number; readonly result: number }];
  /** A THP was split. @see trace_mm_split_huge_page (huge_memory.h) */
  mm_split_huge_page: readonly [{ readonly pfn: number }];
  /** An mmu notifier invalidation began. @see trace_mmu_notifier (none upstream; named after mmu_notifier_invalidate_range_start) */
  mmu_notifier_invalidate_range_start: readonly [
    { readonly mm: number; readonly start: number; readonly end: number; readonly event: number },
  ];
  /** A bug check fired (also thrown). */
  didDetectBug: readonly [{ readonly check: string; readonly message: string }];
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
    // eventemitter3 keeps listeners in a private _events object; listenerCount is cheap enough.
    return this.listenerCount(name as never) > 0;
  }
}
