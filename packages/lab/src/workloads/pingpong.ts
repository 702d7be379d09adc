/**
 * Multi-GPU ping-pong workload: every round, all the workload's GPUs run a kernel at once; each
 * streams read-write over its own private slice and over one shared region that every GPU updates.
 * Private pages settle on their GPU; shared pages bounce between GPUs (device-to-device migration
 * over a peer link, or through system memory without one) until a policy detects the thrashing
 * and pins them or maps them remotely.
 *
 * @see reference/uvm-policies.md §1.5 (thrashing detection: 3 events within 500 µs, pin after 10
 *      throttles), §1.8 (peer copies, staging through sysmem), §3 (Griffin, GRIT: multi-GPU sharing)
 */
import { ACCESS_READ, ACCESS_WRITE } from "@hmmkit/device-emu";
import { buildPhase, type Phase, share, type Workload, type WorkloadInit } from "./workload";

/**
 * Create the ping-pong workload.
 * @param init - resolved settings (`sharedFraction`, `gpus` ≥ 2, `iterations` = rounds).
 * @returns the workload: a shared region of ⌈sharedFraction·WS⌉ and one private slice per GPU.
 */
export function pingpongWorkload(init: WorkloadInit): Workload {
  const spec = init.spec;
  const ab = spec.accessBytes;
  const ws = spec.workingSetBytes;
  const ngpu = spec.gpus.length;
  const sharedBytes = Math.ceil((ws * spec.sharedFraction) / 4096) * 4096;
  const privBytes = Math.max(4096, Math.floor((ws - sharedBytes) / ngpu / 4096) * 4096);
  const sharedLines = sharedBytes / ab;
  const privLines = privBytes / ab;
  return {
    kind: "pingpong",
    description: `multi-GPU ping-pong over ${ngpu} GPUs, shared ${(sharedBytes / 2 ** 20).toFixed(2)} MiB + ${ngpu} × ${(privBytes / 2 ** 20).toFixed(2)} MiB private, ${spec.iterations} round(s)`,
    bytes: sharedBytes + ngpu * privBytes,
    phaseCount: spec.iterations,
    *phases(base: number): Generator<Phase> {
      const shared = base;
      for (let round = 0; round < spec.iterations; round++) {
        yield buildPhase(spec, `ping-pong round ${round + 1}`, (agent, agents, sb) => {
          const perGpu = agents / ngpu;
          const gi = Math.floor(agent / perGpu);
          const w = agent % perGpu;
          const priv = base + sharedBytes + gi * privBytes;
          const [plo, phi] = share(privLines, w, perGpu);
          // Each GPU starts its shared sweep at a different offset so the GPUs collide on pages.
          const [slo, shi] = share(sharedLines, w, perGpu);
          const np = phi - plo;
          const ns = shi - slo;
          const steps = Math.max(np, ns);
          for (let k = 0; k < steps; k++) {
            if (k < np) sb.push(priv + (plo + k) * ab, ab, ACCESS_READ | ACCESS_WRITE);
            if (k < ns) sb.push(shared + (slo + ((k + round) % ns)) * ab, ab, ACCESS_READ | ACCESS_WRITE);
          }
        });
      }
    },
  };
}
