/**
 * Run a user-written migration policy (`examples/policy/write-migrates.ts`) against the built-in
 * first-touch policy on one emulated GPU: the kernel reads 4 MiB and writes 1 MiB of a shared
 * buffer. First touch migrates everything it touches; the custom policy migrates only what the GPU
 * writes (plus dense neighbours) and maps the read-only data remotely over the host link.
 *
 * Run: `npx tsx examples/custom-policy.ts`
 */
import { MAP_ANONYMOUS, MAP_PRIVATE, Machine, PROT_READ, PROT_WRITE } from "@hmmkit/core";
import { ACCESS_READ, ACCESS_WRITE, Platform } from "@hmmkit/device-emu";
import { firstTouchPolicy, type MigrationPolicy, NouveauModule } from "@hmmkit/drivers";
import { writeMigrates } from "./policy/write-migrates";

async function run(policy: MigrationPolicy) {
  const m = Machine.create({ ramMiB: [256], seed: 7 });
  const platform = Platform.create(m, { gpus: [{ vramMiB: 64 }] });
  const mod = NouveauModule.probe(m, platform, { policy });
  const t = m.mm.spawn();
  const readBytes = 4 << 20;
  const writeBytes = 1 << 20;
  const va = t.mm.mmap(0, readBytes + writeBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
  await m.mm.write(t, va, new Uint8Array(readBytes + writeBytes).fill(1)); // the CPU initialises the data
  const gpu = mod.bind(t, 0);
  const n = (readBytes + writeBytes) / 4096;
  const addr = Float64Array.from({ length: n }, (_, i) => va + i * 4096);
  const flags = Uint8Array.from({ length: n }, (_, i) => (i * 4096 < readBytes ? ACCESS_READ : ACCESS_WRITE));
  const k = gpu.launch([{ addr, size: new Uint16Array(n).fill(8), flags }]);
  await m.settle(k.fence.promise);
  const s = mod.stats();
  const row = {
    policy: policy.name,
    faults: s.faults,
    pagesToVram: s.pagesToVram,
    remoteMaps: s.remoteMaps,
    hostToDeviceMiB: +((mod.linkBytes()["gpu0.h2d"] ?? 0) / (1 << 20)).toFixed(2),
    simulatedUs: Math.round(m.clock.now / 1000),
  };
  m.mm.exit(t);
  await m.settle(mod.remove());
  m.dispose();
  return row;
}

const rows = [await run(firstTouchPolicy()), await run(writeMigrates)];
console.table(rows);
const [ft, mine] = rows;
// The custom policy must migrate only the written megabyte (256 pages) and map the 1024 read pages remotely.
if (ft === undefined || mine === undefined || mine.pagesToVram >= ft.pagesToVram || mine.remoteMaps === 0) process.exit(1);
