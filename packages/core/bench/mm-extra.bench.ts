/**
 * Benchmarks of issue 6 (compaction, migration of system pages):
 * - `compaction.mib_per_s`: MiB of movable pages migrated per wall second by `compactZone` on a
 *   256 MiB zone where 15 of every 16 pages (by pfn) of a 252 MiB anonymous region were dropped
 *   after being written, so every pageblock keeps pages. Compaction for order 10 is repeated,
 *   each formed block being allocated and held, until it fails: the whole zone is compacted.
 *   Best of 3.
 */
import { type BenchResult, timeBest } from "../../../bench/lib";
import { GFP, MADV_DONTNEED, MAP_ANONYMOUS, MAP_PRIVATE, Machine, PROT_READ, PROT_WRITE } from "../src/index";

const MiB = 1 << 20;

interface Setup {
  m: Machine;
}

/** MiB migrated per wall second by one compactZone(order 9) pass over a fragmented zone. */
export async function compactionMiBPerSecond(runs = 3): Promise<number> {
  let migrated = 0;
  let machine: Machine | undefined;
  const secs = await timeBest(
    ({ m }: Setup) => {
      const z = m.alloc.zones[0] as (typeof m.alloc.zones)[number];
      migrated = 0;
      for (;;) {
        const r = m.mm.compaction.compactZone(z, 10);
        migrated += r.migrated;
        if (r.status !== "success") break;
        if (m.alloc.allocPages(10, GFP.NORETRY | GFP.HIGH) < 0) break;
      }
      if (migrated < 1024) throw new Error(`compaction migrated only ${migrated} pages`);
    },
    async () => {
      machine?.dispose();
      const m = Machine.create({ ramMiB: [256], thp: "never" });
      machine = m;
      const t = m.mm.spawn();
      const len = 252 * MiB;
      const va = t.mm.mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
      await m.mm.touch(t, va, len, true);
      for (let i = 0; i < len / 4096; i++) {
        const pfn = m.mm.fault.followPte(t.mm, va + i * 4096, false);
        if (pfn % 16 !== 0) t.mm.madvise(va + i * 4096, 4096, MADV_DONTNEED);
      }
      return { m };
    },
    { runs },
  );
  machine?.dispose();
  return (migrated * 4096) / MiB / secs;
}

/** The module's results. */
export async function run(): Promise<BenchResult[]> {
  return [{ id: "compaction.mib_per_s", value: await compactionMiBPerSecond(), unit: "MiB/s" }];
}
