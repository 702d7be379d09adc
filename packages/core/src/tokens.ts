/**
 * Injection tokens of a machine's services (one per service; see CONVENTIONS.md).
 */
import type { MachineConfigResolved } from "./config";
import type { Contents } from "./phys/contents";
import type { PageAllocator } from "./phys/page-alloc";
import type { PageState } from "./phys/page-state";
import type { SimClock } from "./sim/clock";
import type { TraceBus } from "./sim/events";
import type { Rng } from "./sim/rng";
import { createToken } from "./sim/tokens";
import type { VmStat } from "./sim/vmstat";

/** Tokens of the services every machine registers. */
export const TOKENS = {
  /** The validated machine configuration. */
  config: createToken<MachineConfigResolved>("MachineConfig"),
  /** Virtual time. */
  clock: createToken<SimClock>("SimClock"),
  /** Seeded randomness. */
  rng: createToken<Rng>("Rng"),
  /** Tracepoints. */
  bus: createToken<TraceBus>("TraceBus"),
  /** /proc/vmstat counters. */
  vmstat: createToken<VmStat>("VmStat"),
  /** Per-page state. */
  pages: createToken<PageState>("PageState"),
  /** Page contents. */
  contents: createToken<Contents>("Contents"),
  /** The buddy allocator. */
  alloc: createToken<PageAllocator>("PageAllocator"),
} as const;
