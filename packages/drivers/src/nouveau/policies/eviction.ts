/**
 * Eviction policies: LRU by allocation over 2 MiB chunks (UVM's root-chunk eviction) and
 * tree-based neighbourhood eviction (UVMSmart's TBNe).
 *
 * LRU: the chunk whose latest page allocation is oldest goes, whole, to system memory — UVM's
 * `pick_root_chunk_to_evict` takes the head of the USED list, ordered by allocation ("mapping
 * does not refresh LRU", Bug 1765193), and `evict_root_chunk` migrates every resident page of the
 * 2 MiB chunk to the CPU. This is the driver's default when a policy has no eviction hook.
 *
 * TBNe: start from the same LRU chunk's pages; for every 2 MiB VA block they back, remove them
 * from the block's residency tree and walk the tree (64 KiB leaves up to 2 MiB): every subtree
 * whose remaining residency falls below half of it is evicted as a whole — the neighbourhood
 * goes with the victim, which keeps what stays in VRAM dense (UVMSmart
 * `traverse_and_remove_lp_tree`). Eviction is then page-granular (migrate_device_pfns).
 *
 * @see NVIDIA uvm_pmm_gpu.c (pick_root_chunk_to_evict, evict_root_chunk), UVMSmart gpu-sim.cc
 *      (`-eviction_policy` 0 LRU 2 MiB, 1 TBNe); reference/uvm-policies.md §1.7, §2.2
 */
import type { EvictionCandidates, MigrationPolicy } from "../policy";

function lruIndex(c: EvictionCandidates): number {
  let best = -1;
  for (let j = 0; j < c.count; j++) if (best < 0 || (c.lastAllocSeq[j] as number) < (c.lastAllocSeq[best] as number)) best = j;
  return best;
}

/**
 * Build the LRU (by allocation) 2 MiB-chunk eviction policy.
 * @returns a policy named `"lru-eviction"` with only the eviction hook.
 * Context: pure; stateless.
 * @see pick_root_chunk_to_evict
 * @example
 * ```ts
 * composePolicies("uvm", [treePrefetchPolicy(), lruEvictionPolicy()]);
 * ```
 */
export function lruEvictionPolicy(): MigrationPolicy {
  return {
    name: "lru-eviction",
    selectEvictionVictim(_ctx, c) {
      return lruIndex(c);
    },
  };
}

/**
 * Build the tree-based neighbourhood eviction policy (TBNe).
 * @returns a policy named `"tree-eviction"` with only the eviction hook.
 * Context: keeps scratch arrays only.
 * @see UVMSmart traverse_and_remove_lp_tree
 */
export function treeEvictionPolicy(): MigrationPolicy {
  const pfns = new Float64Array(512);
  const res = new Uint8Array(512);
  const prefix = new Int32Array(513);
  return {
    name: "tree-eviction",
    selectEvictionVictim(ctx, c, choice) {
      const v = lruIndex(c);
      if (v < 0) return -1;
      const chunk = c.chunk[v] as number;
      const base = chunk * 512;
      const out = choice.pfns;
      let n = 0;
      const seen = new Set<number>();
      const blocks: [number, number][] = [];
      for (let i = 0; i < 512; i++) {
        const va = c.pageVa[base + i] as number;
        const inst = c.pageInstance[base + i] as number;
        out[n++] = c.chunkBasePfn + base + i;
        if (va < 0 || inst === 0) continue;
        const blockVa = va - (va % 2097152);
        const k = blockVa * 4 + (inst % 4);
        if (!seen.has(k)) {
          seen.add(k);
          blocks.push([inst, blockVa]);
        }
      }
      const victim = new Set<number>();
      for (let i = 0; i < 512; i++) victim.add(c.chunkBasePfn + base + i);
      for (const [inst, blockVa] of blocks) {
        ctx.residentPfns(inst, blockVa, pfns);
        for (let i = 0; i < 512; i++) res[i] = pfns[i] !== -1 && !victim.has(pfns[i] as number) ? 1 : 0;
        prefix[0] = 0;
        for (let i = 0; i < 512; i++) prefix[i + 1] = (prefix[i] as number) + (res[i] as number);
        // Walk 64 KiB leaves up: subtrees under half resident after the removal go too.
        for (let size = 16; size <= 512; size *= 2) {
          for (let s = 0; s < 512; s += size) {
            const cnt = (prefix[s + size] as number) - (prefix[s] as number);
            if (cnt === 0 || cnt * 2 >= size) continue;
            for (let i = s; i < s + size; i++) {
              if (res[i] === 1) {
                res[i] = 0;
                out[n++] = pfns[i] as number;
              }
            }
          }
          for (let i = 0; i < 512; i++) prefix[i + 1] = (prefix[i] as number) + (res[i] as number);
        }
      }
      choice.count = n;
      return -1;
    },
  };
}
