/**
 * Graph-traversal workload (bfs-like): Rodinia's level-synchronous BFS on a random graph in CSR
 * form. Kernel 1 of each level scans the frontier mask, and for each frontier node reads its edge
 * list and the visited flags of its neighbours (random, sparse reads) and writes their cost and
 * updating mask; kernel 2 scans the updating mask and turns it into the next frontier. The BFS is
 * really computed (on a graph drawn from the workload's random stream), so the accesses are the
 * ones the traversal makes: irregular, data-dependent, with a working set that grows and shrinks
 * by level.
 *
 * Arrays (as Rodinia's bfs.cu): `nodes` {start, count} 8 B, `edges` 4 B, `mask`, `updating`,
 * `visited` 1 B, `cost` 4 B per node. Node count N solves N·(15 + 4·degree) ≈ working set.
 *
 * @see Rodinia bfs (Kernel, Kernel2 in kernel.cu, kernel2.cu); reference/uvm-policies.md §2.5
 *      (bfs, 9.75 MB), §2.7 (bfs 3.06–4.44× slower at 110–150 %)
 */
import { ACCESS_READ, ACCESS_WRITE } from "@hmmkit/device-emu";
import { buildPhase, type Phase, pageAlign, share, type Workload, type WorkloadInit } from "./workload";

/** A CSR graph. */
export interface CsrGraph {
  /** Node count. */
  readonly n: number;
  /** Edge list start of each node (n + 1 entries). */
  readonly start: Uint32Array;
  /** Destination of each edge. */
  readonly edges: Uint32Array;
}

/**
 * Draw a random graph: node i has 1..2·degree−1 out-edges (mean `degree`) to uniform random nodes,
 * as Rodinia's graph generator draws edge counts and endpoints uniformly.
 * @param n - nodes (≥ 1).
 * @param degree - mean out-degree (≥ 1).
 * @param rng - random stream.
 * @returns the graph.
 */
export function randomGraph(n: number, degree: number, rng: { int(n: number): number }): CsrGraph {
  const start = new Uint32Array(n + 1);
  const span = 2 * degree - 1;
  for (let i = 0; i < n; i++) start[i + 1] = (start[i] as number) + 1 + rng.int(span);
  const m = start[n] as number;
  const edges = new Uint32Array(m);
  for (let e = 0; e < m; e++) edges[e] = rng.int(n);
  return { n, start, edges };
}

/**
 * Create the BFS workload.
 * @param init - resolved settings (`degree`, `iterations` = BFS runs from random sources).
 * @returns the workload.
 */
export function bfsWorkload(init: WorkloadInit): Workload {
  const spec = init.spec;
  const rng = init.rng;
  const d = spec.degree;
  const n = Math.max(64, Math.floor(spec.workingSetBytes / (15 + 4 * d)));
  const nodesBytes = pageAlign(8 * n);
  const byteArr = pageAlign(n);
  const costBytes = pageAlign(4 * n);
  const G = randomGraph(n, d, rng);
  const edgesBytes = pageAlign(4 * (G.start[n] as number));
  const bytes = nodesBytes + edgesBytes + 3 * byteArr + costBytes;
  return {
    kind: "bfs",
    description: `Rodinia BFS, ${n} nodes, mean degree ${d} (${(bytes / 2 ** 20).toFixed(2)} MiB), ${spec.iterations} run(s)`,
    bytes,
    *phases(base: number): Generator<Phase> {
      const aNodes = base;
      const aEdges = aNodes + nodesBytes;
      const aMask = aEdges + edgesBytes;
      const aUpd = aMask + byteArr;
      const aVisited = aUpd + byteArr;
      const aCost = aVisited + byteArr;
      const mask = new Uint8Array(n);
      const upd = new Uint8Array(n);
      const visited = new Uint8Array(n);
      for (let run = 0; run < spec.iterations; run++) {
        mask.fill(0);
        upd.fill(0);
        visited.fill(0);
        const src = rng.int(n);
        mask[src] = 1;
        visited[src] = 1;
        for (let level = 0; ; level++) {
          yield buildPhase(spec, `bfs ${run + 1} level ${level} expand`, (agent, agents, sb) => {
            const [lo, hi] = share(n, agent, agents);
            for (let t = lo; t < hi; t++) {
              sb.read(aMask + t, 1);
              if (mask[t] === 0) continue;
              mask[t] = 0;
              sb.write(aMask + t, 1);
              sb.read(aNodes + 8 * t, 8);
              const e1 = G.start[t + 1] as number;
              for (let e = G.start[t] as number; e < e1; e++) {
                sb.read(aEdges + 4 * e, 4);
                const id = G.edges[e] as number;
                sb.read(aVisited + id, 1);
                if (visited[id] === 0) {
                  sb.push(aCost + 4 * id, 4, ACCESS_WRITE);
                  sb.push(aUpd + id, 1, ACCESS_WRITE);
                  upd[id] = 1;
                }
              }
            }
          });
          let any = false;
          yield buildPhase(spec, `bfs ${run + 1} level ${level} update`, (agent, agents, sb) => {
            const [lo, hi] = share(n, agent, agents);
            for (let t = lo; t < hi; t++) {
              sb.push(aUpd + t, 1, ACCESS_READ);
              if (upd[t] === 0) continue;
              any = true;
              mask[t] = 1;
              visited[t] = 1;
              upd[t] = 0;
              sb.write(aMask + t, 1);
              sb.write(aVisited + t, 1);
              sb.write(aUpd + t, 1);
            }
          });
          if (!any) break;
        }
      }
    },
  };
}
