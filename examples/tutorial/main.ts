/**
 * The last step of the guide "Write your first driver" (docs/guides/first-driver.md): plug
 * TinyDriver into a machine, move 1 MiB of a task's memory to the device, touch it from the CPU so
 * that it faults back through migrateToRam, and check that nothing leaked.
 *
 * Run: `npx tsx examples/tutorial/main.ts` (CI runs it with every example: `pnpm examples`).
 */
// #region main
import { MAP_ANONYMOUS, MAP_PRIVATE, Machine, PROT_READ, PROT_WRITE } from "@hmmkit/core";
import { TinyDriver } from "./tiny-driver";

const m = Machine.create({ ramMiB: [64], seed: 1 }); // one emulated computer
const driver = new TinyDriver(m, 512); // 2 MiB of device memory

// A task writes a pattern into 1 MiB of anonymous memory (256 zero-fill faults).
const t = m.mm.spawn();
const len = 1 << 20;
const va = t.mm.mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
const pattern = new Uint8Array(len).map((_, i) => (i * 7) & 0xff);
await m.mm.write(t, va, pattern);

// Move it to the device: the task's page table now holds device-private entries.
const moved = driver.migrateToDevice(t.mm, va, va + len);
console.log(`moved ${moved} pages to the device; the task maps ${t.mm.rssDevice} device pages`);

// The CPU reads it back: every page faults, and migrateToRam copies it to RAM again.
const back = await m.mm.read(t, va, len);
const intact = back.every((b, i) => b === pattern[i]);
console.log(`data intact: ${intact}; ${driver.stats.toRam} pages came back through migrateToRam`);

// Tear down: the task exits, every device page is free again, the pgmap can go.
m.mm.exit(t);
const leaked = 512 - driver.freePageCount;
driver.remove();
m.dispose();
console.log(`device pages leaked: ${leaked}`);
if (!intact || moved !== 256 || leaked !== 0) process.exit(1);
// #endregion main
