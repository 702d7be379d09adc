/**
 * Thrashing detection shared by every GPU driver of a platform, modelled on UVM's
 * uvm_perf_thrashing.c.
 *
 * Theory of operation. Events are migrations of a page caused by faults, prefetch or access
 * counters — into a GPU's VRAM (processor 1 + g) or back to system memory on a CPU fault
 * (processor 0). Eviction migrations are not events (UVM ignores them). Per page the tracker
 * keeps, in typed arrays per 2 MiB VA block of one address space, the time of the last event, a
 * saturating event count and the mask of processors seen within the lapse. Two events on a page
 * within `lapseNs` count one thrashing event; a page whose count reaches `threshold` is reported
 * (once per crossing) and its count restarts, so a page that keeps ping-ponging is reported every
 * `threshold` events. A page quiet for `epochNs` starts over. The caller (the driver) forwards a
 * report to the policies of every GPU with a VA space on that address space.
 *
 * Differences from UVM, deliberate: no per-block allocation heuristic (tracking starts with the
 * first event), no adaptive lapse (UVM 590+ adapts it only when left at its default), and
 * detection runs for HMM memory (UVM's "Bug 5138823" leaves pageable memory without thrashing
 * mitigation; here the policy decides).
 *
 * @see NVIDIA uvm_perf_thrashing.c (thrashing_event_cb, thrashing_detected, page_thrashing_t),
 *      reference/uvm-policies.md §1.5
 */
import { einval } from "@hmmkit/core";
import { type ThrashingParams, UVM_DEFAULTS } from "./policy";

/** Processor bit of the CPU in {@link ThrashingTracker.record}'s mask. */
export const THRASH_PROC_CPU = 0;

class BlockState {
  readonly last = new Float64Array(512).fill(-1);
  readonly count = new Uint8Array(512);
  readonly procs = new Uint32Array(512);
}

/** The default thrashing parameters (UVM's). */
export const DEFAULT_THRASHING: ThrashingParams = {
  enabled: true,
  threshold: UVM_DEFAULTS.thrashingThreshold,
  lapseNs: UVM_DEFAULTS.thrashingLapseNs,
  epochNs: UVM_DEFAULTS.thrashingEpochNs,
};

/**
 * Validate and complete thrashing parameters.
 * @param p - partial parameters (undefined fields take {@link DEFAULT_THRASHING}'s).
 * @param path - argument path for errors.
 * @returns the complete parameters.
 * @throws HmmError EINVAL naming the bad field (`threshold` 1..7, `lapseNs`/`epochNs` 1..10^12).
 * Context: pure.
 * @see uvm_perf_thrashing_init (module-parameter checks)
 */
export function resolveThrashing(p: Partial<ThrashingParams> | undefined, path = "thrashing"): ThrashingParams {
  const r = { ...DEFAULT_THRASHING, ...(p ?? {}) };
  if (typeof r.enabled !== "boolean") einval(`${path}.enabled`, `a boolean, got ${String(r.enabled)}`);
  if (!Number.isInteger(r.threshold) || r.threshold < 1 || r.threshold > 7)
    einval(`${path}.threshold`, `an integer in 1..7, got ${r.threshold}`);
  if (!(r.lapseNs >= 1 && r.lapseNs <= 1e12)) einval(`${path}.lapseNs`, `a number of ns in 1..10^12, got ${r.lapseNs}`);
  if (!(r.epochNs >= 1 && r.epochNs <= 1e12)) einval(`${path}.epochNs`, `a number of ns in 1..10^12, got ${r.epochNs}`);
  return r;
}

/**
 * Per-page thrashing state of every address space of one platform.
 *
 * Context: synchronous; called from the drivers' synchronous sections.
 * @see uvm_perf_thrashing.c
 */
export class ThrashingTracker {
  private readonly blocks = new Map<number, BlockState>();
  /** Thrashing events counted (two events within the lapse). */
  events = 0;
  /** Pages reported as thrashing. */
  detections = 0;

  /** @param params - validated parameters. */
  constructor(readonly params: ThrashingParams) {}

  /**
   * Record migration events on `npages` consecutive pages, reporting each page that crosses the
   * threshold.
   * @param mm - address-space id.
   * @param va - first page address (4 KiB aligned).
   * @param npages - pages (may cross blocks).
   * @param proc - processor bit index: {@link THRASH_PROC_CPU} or 1 + gpu.
   * @param now - virtual time.
   * @param report - called per detected page with (va, events, processor mask).
   * Context: synchronous.
   * @see thrashing_event_cb
   */
  record(
    mm: number,
    va: number,
    npages: number,
    proc: number,
    now: number,
    report: (va: number, events: number, procs: number) => void,
  ): void {
    if (!this.params.enabled) return;
    const { lapseNs, epochNs, threshold } = this.params;
    const bit = 2 ** proc;
    let i = 0;
    while (i < npages) {
      const page = va / 4096 + i;
      const blk = Math.floor(page / 512);
      const key = mm * 2 ** 28 + blk;
      let st = this.blocks.get(key);
      if (st === undefined) {
        st = new BlockState();
        this.blocks.set(key, st);
      }
      const first = page - blk * 512;
      const run = Math.min(npages - i, 512 - first);
      for (let j = first; j < first + run; j++) {
        const last = st.last[j] as number;
        const dt = now - last;
        if (last < 0 || dt > epochNs) {
          st.count[j] = 0;
          st.procs[j] = bit;
        } else if (dt <= lapseNs) {
          const c = (st.count[j] as number) + 1;
          st.procs[j] = (st.procs[j] as number) | bit;
          this.events++;
          if (c >= threshold) {
            this.detections++;
            st.count[j] = 0;
            const procs = st.procs[j] as number;
            st.procs[j] = bit;
            st.last[j] = now;
            report((blk * 512 + j) * 4096, c, procs);
            continue;
          }
          st.count[j] = c;
        } else {
          st.procs[j] = bit;
        }
        st.last[j] = now;
      }
      i += run;
    }
  }

  /**
   * Forget an address space (it exited).
   * @param mm - address-space id.
   */
  forgetMm(mm: number): void {
    for (const k of [...this.blocks.keys()]) if (Math.floor(k / 2 ** 28) === mm) this.blocks.delete(k);
  }
}
