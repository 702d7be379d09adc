/**
 * Stencil workload (hotspot-like): Rodinia hotspot's 5-point thermal stencil on an N×N float grid,
 * `out[r][c] = f(in[r-1..r+1][c], in[r][c±1], power[r][c])`, with `in` and `out` swapped every
 * time step. Rows are split in bands over the agents; with several GPUs, the band edges read the
 * neighbour's rows (halo exchange), the pages GPUs share.
 *
 * @see Rodinia hotspot (calculate_temp kernel); reference/uvm-policies.md §2.5 (hotspot, 12 MB),
 *      §2.7 (hotspot under 110–150 % oversubscription)
 */
import { buildPhase, type Phase, pageAlign, share, type Workload, type WorkloadInit } from "./workload";

/**
 * Create the stencil workload.
 * @param init - resolved settings.
 * @returns the workload: three N×N float32 grids (temperature in/out, power), N the largest
 *   multiple of the access size in floats for which the grids fit the working set.
 */
export function stencilWorkload(init: WorkloadInit): Workload {
  const spec = init.spec;
  const ab = spec.accessBytes;
  const floatsPerLine = ab / 4;
  // N: a multiple of the floats per access (rows are whole lines), 3·N²·4 ≤ WS.
  const unit = floatsPerLine;
  let n = Math.floor(Math.sqrt(spec.workingSetBytes / 12) / unit) * unit;
  if (n < unit) n = unit;
  const rowBytes = n * 4;
  const gridBytes = n * rowBytes;
  const linesPerRow = rowBytes / ab;
  return {
    kind: "stencil",
    description: `hotspot 5-point stencil, ${n}×${n} float grid (3 × ${(gridBytes / 2 ** 20).toFixed(2)} MiB), ${spec.iterations} step(s)`,
    bytes: pageAlign(3 * gridBytes),
    phaseCount: spec.iterations,
    *phases(base: number): Generator<Phase> {
      const grids = [base, base + gridBytes];
      const power = base + 2 * gridBytes;
      for (let it = 0; it < spec.iterations; it++) {
        const src = grids[it % 2] as number;
        const dst = grids[(it + 1) % 2] as number;
        yield buildPhase(spec, `stencil step ${it + 1}`, (agent, agents, sb) => {
          const [lo, hi] = share(n, agent, agents);
          for (let r = lo; r < hi; r++) {
            for (let j = 0; j < linesPerRow; j++) {
              const off = j * ab;
              if (r > 0) sb.read(src + (r - 1) * rowBytes + off, ab);
              sb.read(src + r * rowBytes + off, ab);
              if (r < n - 1) sb.read(src + (r + 1) * rowBytes + off, ab);
              sb.read(power + r * rowBytes + off, ab);
              sb.write(dst + r * rowBytes + off, ab);
            }
          }
        });
      }
    },
  };
}
