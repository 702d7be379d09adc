/**
 * Streaming workload: the STREAM triad `a[i] = b[i] + s·c[i]` over three equal arrays, swept once
 * per iteration. Every page is touched in address order exactly once per pass: the case where
 * tree-based prefetch cuts far faults the most (UVMSmart's StreamTriad and backprop; the reference's
 * worked example counts 6 far faults per 2 MiB block with the 51 % tree vs 512 on demand).
 *
 * @see reference/uvm-policies.md §1.4 (prefetch worked example), §2.7 (StreamTriad, backprop);
 *      McCalpin, STREAM benchmark (triad kernel)
 */
import { buildPhase, type Phase, pageAlign, share, type Workload, type WorkloadInit } from "./workload";

/**
 * Create the streaming (triad) workload.
 * @param init - resolved settings and random stream (unused: the pattern is deterministic).
 * @returns the workload: three arrays of ⌊WS/3⌋ bytes (page-aligned), `iterations` passes.
 */
export function streamWorkload(init: WorkloadInit): Workload {
  const spec = init.spec;
  const ab = spec.accessBytes;
  const arrayBytes = Math.max(4096, pageAlign(Math.floor(spec.workingSetBytes / 3 / 4096) * 4096));
  const lines = arrayBytes / ab;
  return {
    kind: "stream",
    description: `STREAM triad a = b + s·c, 3 × ${(arrayBytes / 2 ** 20).toFixed(2)} MiB, ${spec.iterations} pass(es)`,
    bytes: 3 * arrayBytes,
    phaseCount: spec.iterations,
    *phases(base: number): Generator<Phase> {
      const b = base;
      const c = base + arrayBytes;
      const a = base + 2 * arrayBytes;
      for (let it = 0; it < spec.iterations; it++) {
        yield buildPhase(spec, `triad pass ${it + 1}`, (agent, agents, sb) => {
          const [lo, hi] = share(lines, agent, agents);
          for (let i = lo; i < hi; i++) {
            const off = i * ab;
            sb.read(b + off, ab);
            sb.read(c + off, ab);
            sb.write(a + off, ab);
          }
        });
      }
    },
  };
}
