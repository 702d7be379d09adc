import { expect, it } from "vitest";
import { MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED, Machine, PROT_NONE, PROT_READ, PROT_WRITE } from "../src/index";

it("mprotect none->rw", async () => {
  const m = Machine.create({ ramMiB: [64] });
  const t = m.mm.spawn();
  const va = t.mm.mmap(0, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
  await m.mm.write(t, va, new Uint8Array([5]));
  t.mm.mprotect(va, 8192, PROT_NONE);
  t.mm.mprotect(va, 8192, PROT_READ | PROT_WRITE);
  let err: unknown;
  try {
    console.log(await m.mm.read(t, va, 1));
  } catch (e) {
    err = e;
  }
  console.log("err", err);
});
it("zero cow stale", async () => {
  const m = Machine.create({ ramMiB: [64], thp: "never" });
  const t = m.mm.spawn();
  const va = t.mm.mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
  await m.mm.write(t, va, new Uint8Array(4096).fill(0xaa));
  const p1 = m.mm.fault.followPte(t.mm, va, false);
  t.mm.munmap(va, 4096);
  const vb = t.mm.mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
  await m.mm.read(t, vb, 1);
  await m.mm.write(t, vb, new Uint8Array([1]));
  const p2 = m.mm.fault.followPte(t.mm, vb, false);
  const r = await m.mm.read(t, vb, 8);
  console.log(p1, p2, r);
});
it("shmem", async () => {
  const m = Machine.create({ ramMiB: [64] });
  const t = m.mm.spawn();
  const va = t.mm.mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS);
  await m.mm.write(t, va, new Uint8Array([7]));
  const pfn = m.mm.fault.followPte(t.mm, va, false);
  console.log("rc", m.pages.refcount[pfn], m.pages.mapcount[pfn]);
  let err: unknown;
  try {
    m.mm.exit(t);
  } catch (e) {
    err = e;
  }
  console.log("exit err", err);
});
