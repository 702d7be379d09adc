/**
 * Random-access workload (HPCC RandomAccess, "ra"): read-modify-write updates of 8-byte words at
 * uniformly random indices of a table that fills the working set. No locality at all: prefetch
 * only adds traffic, and under oversubscription every policy thrashes; the case for remote mapping
 * (access counters / delayed migration).
 *
 * The HPCC benchmark performs 4 × (table words) updates; this generator performs 4 updates per
 * 4 KiB page per iteration (about 98 % of the pages touched per iteration) to keep runs short; the
 * pattern, not the count, is what policies react to.
 *
 * @see HPCC RandomAccess (GUPS); reference/uvm-policies.md §2.5 (ra, 12 MB), §2.7 (DATE'21 ra 2.95× at 150 %)
 */
import { ACCESS_READ, ACCESS_WRITE } from "@hmmkit/device-emu";
import { buildPhase, type Phase, type Workload, type WorkloadInit } from "./workload";

/** Updates per 4 KiB page of the table per iteration. */
export const RANDOM_UPDATES_PER_PAGE = 4;

/**
 * Create the random-access workload.
 * @param init - resolved settings and the random stream the indices come from.
 * @returns the workload.
 */
export function randomWorkload(init: WorkloadInit): Workload {
  const spec = init.spec;
  const rng = init.rng;
  const bytes = spec.workingSetBytes;
  const words = bytes / 8;
  const updates = (bytes / 4096) * RANDOM_UPDATES_PER_PAGE;
  const rmwThreshold = Math.round(spec.writeFraction * 4294967296);
  return {
    kind: "random",
    description: `HPCC RandomAccess, ${(bytes / 2 ** 20).toFixed(2)} MiB table, ${updates} updates × ${spec.iterations} iteration(s), ${Math.round(spec.writeFraction * 100)} % read-modify-write`,
    bytes,
    phaseCount: spec.iterations,
    *phases(base: number): Generator<Phase> {
      for (let it = 0; it < spec.iterations; it++) {
        yield buildPhase(spec, `random updates ${it + 1}`, (agent, agents, sb) => {
          const per = Math.floor(updates / agents) + (agent < updates % agents ? 1 : 0);
          for (let k = 0; k < per; k++) {
            const idx = rng.int(words);
            const rmw = rng.nextU32() < rmwThreshold;
            sb.push(base + idx * 8, 8, rmw ? ACCESS_READ | ACCESS_WRITE : ACCESS_READ);
          }
        });
      }
    },
  };
}
