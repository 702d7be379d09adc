/**
 * Quickstart: one emulated machine, a task, THP and COW faults, and a round trip of a range
 * through device-private memory with migrate_vma (CPU copies, a 30-line driver inline).
 *
 * Run: `npx tsx examples/quickstart.ts`. (`pnpm start` runs the lab's flagship policy comparison.)
 */
import {
  MADV_HUGEPAGE,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  Machine,
  MEMORY_DEVICE_PRIVATE,
  MIGRATE_PFN,
  MIGRATE_VMA_SELECT,
  type MigrateVma,
  migratePfn,
  migratePfnToPfn,
  PROT_READ,
  PROT_WRITE,
  type VmFault,
} from "@hmmkit/core";

const m = Machine.create({ ramMiB: [256], seed: 1, thp: "madvise" });
const t = m.mm.spawn();

// 8 MiB of anonymous memory; the first 4 MiB may use THPs.
const len = 8 << 20;
const va = t.mm.mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
t.mm.madvise(va, 4 << 20, MADV_HUGEPAGE);
const pattern = new Uint8Array(len);
for (let i = 0; i < len; i++) pattern[i] = (i * 131) & 0xff;
await m.mm.write(t, va, pattern);

// fork: the child shares every page copy-on-write, then rewrites its first page.
const child = m.mm.fork(t);
await m.mm.write(child, va, new Uint8Array(4096).fill(0xee));

// A device-private pgmap whose driver copies with the CPU.
const owner = { name: "quickstart-device" };
const freeList: number[] = [];
const pgmap = m.memremap.memremapPages({
  type: MEMORY_DEVICE_PRIVATE,
  owner,
  range: { npages: 4096 },
  name: "dev0",
  ops: {
    folioFree: (head, order) => {
      for (let i = 0; i < 2 ** order; i++) freeList.push(head + i);
    },
    migrateToRam: (vmf: VmFault) => {
      const args = migrateArgs(vmf.mm, vmf.address, vmf.address + 4096, MIGRATE_VMA_SELECT.DEVICE_PRIVATE, vmf.page);
      m.migrate.migrateVmaSetup(args);
      copyAll(args, () => {
        const p = m.alloc.allocPages(0);
        m.mm.refs.trylockPage(p);
        return p;
      });
      m.migrate.migrateVmaPages(args);
      m.migrate.migrateVmaFinalize(args);
      return 0;
    },
  },
});
for (let p = pgmap.endPfn - 1; p >= pgmap.startPfn; p--) freeList.push(p);

function migrateArgs(mm: typeof t.mm, start: number, end: number, flags: number, faultPage = -1): MigrateVma {
  const n = (end - start) / 4096;
  const vma = mm.findVma(start);
  if (vma === undefined) throw new Error("no VMA");
  return {
    mm,
    vma,
    start,
    end,
    src: new Float64Array(n),
    dst: new Float64Array(n),
    pgmapOwner: owner,
    flags,
    faultPage,
    cpages: 0,
    npages: 0,
  };
}
function copyAll(args: MigrateVma, alloc: () => number): void {
  for (let i = 0; i < args.npages; i++) {
    const s = args.src[i] as number;
    if (!((s % 64) & MIGRATE_PFN.MIGRATE)) continue;
    const d = alloc();
    const sp = migratePfnToPfn(s);
    if (sp >= 0) m.contents.copyPages(d, sp, 1);
    else m.contents.clearPages(d, 1);
    args.dst[i] = migratePfn(d);
  }
}

// Migrate the second 4 MiB (base pages) of the parent to the device.
const args = migrateArgs(t.mm, va + (4 << 20), va + len, MIGRATE_VMA_SELECT.SYSTEM);
m.migrate.migrateVmaSetup(args);
const collected = args.cpages;
copyAll(args, () => {
  const p = freeList.pop() as number;
  m.memremap.zoneDevicePageInit(p);
  return p;
});
m.migrate.migrateVmaPages(args);
m.migrate.migrateVmaFinalize(args);
console.log(`migrate_vma: collected ${collected} pages, parent now maps ${t.mm.rssDevice} device-private pages`);

// The CPU touches them again: each access faults and migrateToRam brings the page back.
const back = await m.mm.read(t, va, len);
const ok = back.every((b, i) => b === pattern[i]);
const childFirst = (await m.mm.read(child, va, 1))[0];
console.log(`parent data intact after the round trip: ${ok}; child's COW copy reads 0x${childFirst?.toString(16)}`);

const v = m.vmstat.c;
console.table({
  pgfault: v.pgfault,
  thp_fault_alloc: v.thp_fault_alloc,
  thp_split_pmd: v.thp_split_pmd,
  pgmigrate_success: v.pgmigrate_success,
  nr_free_pages: v.nr_free_pages,
});
m.dispose();
if (!ok || childFirst !== 0xee) process.exit(1);
