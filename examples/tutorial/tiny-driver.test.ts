/**
 * Tests of the tutorial driver (docs/guides/first-driver.md, "Test it"). `pnpm run create:driver`
 * copies this file next to a new driver, so it doubles as the scaffold's passing test.
 */
// #region test
import { MAP_ANONYMOUS, MAP_PRIVATE, Machine, PROT_READ, PROT_WRITE } from "@hmmkit/core";
import { afterEach, describe, expect, it } from "vitest";
import { TinyDriver } from "./tiny-driver";

describe("TinyDriver", () => {
  let m: Machine | undefined;
  afterEach(() => m?.dispose());

  it("moves a range to device memory and faults it back on CPU access", async () => {
    m = Machine.create({ ramMiB: [64], seed: 1 });
    const driver = new TinyDriver(m, 512);
    const t = m.mm.spawn();
    const va = t.mm.mmap(0, 16 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
    const data = new Uint8Array(16 * 4096).map((_, i) => i & 0xff);
    await m.mm.write(t, va, data);

    expect(driver.migrateToDevice(t.mm, va, va + 16 * 4096)).toBe(16);
    expect(t.mm.rssDevice).toBe(16);
    expect(driver.freePageCount).toBe(512 - 16);

    expect(await m.mm.read(t, va, data.length)).toEqual(data);
    expect(driver.stats.toRam).toBe(16);
    expect(t.mm.rssDevice).toBe(0);

    // Leak guard: every device page is free again and the pgmap can be removed.
    m.mm.exit(t);
    expect(driver.freePageCount).toBe(512);
    driver.remove();
  });

  it("keeps pages in RAM when device memory runs out", async () => {
    m = Machine.create({ ramMiB: [64], seed: 1 });
    const driver = new TinyDriver(m, 512);
    const len = 520 * 4096;
    const t = m.mm.spawn();
    const va = t.mm.mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
    await m.mm.write(t, va, new Uint8Array(len).fill(1));

    expect(driver.migrateToDevice(t.mm, va, va + len)).toBe(512);
    expect(t.mm.rssDevice).toBe(512);
    expect(driver.freePageCount).toBe(0);
    expect((await m.mm.read(t, va, len)).every((b) => b === 1)).toBe(true);

    m.mm.exit(t);
    expect(driver.freePageCount).toBe(512);
    driver.remove();
  });
});
// #endregion test
