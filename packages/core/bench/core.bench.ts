/**
 * Core benchmarks (issue 2):
 * - `core.fault.first_touch_per_s`: first-touch write faults of 4 KiB pages per wall second: one
 *   `touch` of 256 MiB on a 1 GiB machine with THP off (65,536 faults per run, best of 3).
 * - `core.phys.metadata_bytes_per_page`: bytes of the per-page typed arrays divided by pages.
 * - `core.phys.idle_rss_mib_16gib`: RSS growth of a fresh process booting a 16 GiB machine and
 *   touching nothing (child script `idle-rss-child.ts`, run by `runFresh`).
 * - `core.fork.cow_64mib_ratio_to_memcpy`: fork of a task with 64 MiB written plus the child's
 *   rewrite of all of it, divided by a plain 64 MiB copy measured in the same run.
 */
import { type BenchResult, memcpySeconds, runFresh, timeBest } from "../../../bench/lib";
import { MAP_ANONYMOUS, MAP_PRIVATE, Machine, PROT_READ, PROT_WRITE, type Task } from "../src/index";

const MiB = 1 << 20;
const RW = PROT_READ | PROT_WRITE;
const PRIV = MAP_PRIVATE | MAP_ANONYMOUS;

/** Faults per second for one 256 MiB first-touch write pass. */
export async function firstTouchPerSecond(runs = 3): Promise<number> {
  const bytes = 256 * MiB;
  let machine: Machine | undefined;
  const secs = await timeBest(
    async ({ m, t, va }: { m: Machine; t: Task; va: number }) => {
      await m.mm.touch(t, va, bytes, true);
      if (m.vmstat.c.pgfault !== bytes / 4096) throw new Error(`expected ${bytes / 4096} faults, got ${m.vmstat.c.pgfault}`);
    },
    () => {
      machine?.dispose();
      const m = Machine.create({ ramMiB: [1024], thp: "never" });
      machine = m;
      const t = m.mm.spawn();
      const va = t.mm.mmap(0, bytes, RW, PRIV);
      return { m, t, va };
    },
    { warmup: 1, runs },
  );
  machine?.dispose();
  return bytes / 4096 / secs;
}

/** Bytes of per-page metadata per page. */
export function metadataBytesPerPage(): number {
  const m = Machine.create({ ramMiB: [1024] });
  const ps = m.pages;
  const arrays = [
    ps.flags,
    ps.refcount,
    ps.mapcount,
    ps.pincount,
    ps.pgmap,
    ps.owner,
    ps.order,
    ps.zone,
    ps.lruPrev,
    ps.lruNext,
    ps.mapping,
    ps.index,
    ps.private,
  ];
  const bytes = arrays.reduce((s, a) => s + a.byteLength, 0);
  const pages = ps.maxPfn;
  m.dispose();
  return bytes / pages;
}

/** Seconds of fork + the child's full 64 MiB rewrite. */
export async function forkCowSeconds(runs = 3): Promise<number> {
  const bytes = 64 * MiB;
  const data = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i += 4096) data[i] = (i >>> 12) & 0xff;
  const data2 = new Uint8Array(bytes).fill(0x5a);
  let machine: Machine | undefined;
  return timeBest(
    async ({ m, t, va }: { m: Machine; t: Task; va: number }) => {
      const c = m.mm.fork(t);
      await m.mm.write(c, va, data2);
      if ((await m.mm.read(t, va, 1))[0] !== 0) throw new Error("parent lost its bytes");
    },
    async () => {
      machine?.dispose();
      const m = Machine.create({ ramMiB: [512], thp: "never" });
      machine = m;
      const t = m.mm.spawn();
      const va = t.mm.mmap(0, bytes, RW, PRIV);
      await m.mm.write(t, va, data);
      return { m, t, va };
    },
    { warmup: 1, runs },
  ).finally(() => machine?.dispose());
}

export async function run(): Promise<BenchResult[]> {
  const touch = await firstTouchPerSecond();
  const meta = metadataBytesPerPage();
  const [rss] = await runFresh("packages/core/bench/idle-rss-child.ts");
  if (rss === undefined) throw new Error("idle-rss child reported nothing");
  const cow = await forkCowSeconds();
  const copy = memcpySeconds(64 * MiB);
  return [
    { id: "core.fault.first_touch_per_s", value: touch, unit: "faults/s" },
    { id: "core.phys.metadata_bytes_per_page", value: meta, unit: "bytes" },
    rss,
    { id: "core.fork.cow_64mib_ratio_to_memcpy", value: cow / copy, unit: "ratio" },
  ];
}
