import { describe, expect, it } from "vitest";
import {
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  Machine,
  MMU_NOTIFY,
  makeDeviceExclusive,
  mmuIntervalNotifierInsert,
  mmuIntervalSetSeq,
  PROT_READ,
  PROT_WRITE,
  SWP,
  swpType,
} from "../../index";

describe("make_device_exclusive", () => {
  it("replaces the PTE, CPU access restores it with an EXCLUSIVE notification, data intact", async () => {
    const m = Machine.create({ ramMiB: [32] });
    const t = m.mm.spawn();
    const va = t.mm.mmap(0, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
    await m.mm.write(t, va, new Uint8Array([1, 2, 3]));
    const events: { event: number; owner: unknown }[] = [];
    mmuIntervalNotifierInsert(t.mm, 0, 2 ** 47, {
      invalidate(sub, range, seq) {
        mmuIntervalSetSeq(sub, seq);
        events.push({ event: range.event, owner: range.owner });
        return true;
      },
    });
    const owner = {};
    const r = await makeDeviceExclusive(t.mm, va, owner);
    expect(r.ret).toBe(0);
    expect(m.mm.refs.isLocked(r.page)).toBe(true);
    expect(swpType(t.mm.pt.getPte(va))).toBe(SWP.DEVICE_EXCLUSIVE);
    expect(events).toEqual([{ event: MMU_NOTIFY.EXCLUSIVE, owner }]);
    const rc = m.pages.refcount[r.page];
    m.mm.refs.unlockPage(r.page);
    m.mm.refs.putPage(r.page);
    expect(m.pages.refcount[r.page]).toBe((rc as number) - 1);
    expect(m.pages.mapcount[r.page]).toBe(1);
    expect(Array.from(await m.mm.read(t, va, 3))).toEqual([1, 2, 3]);
    expect(swpType(t.mm.pt.getPte(va))).toBe(0);
    expect(events[1]).toEqual({ event: MMU_NOTIFY.EXCLUSIVE, owner: undefined });
    const ro = t.mm.mmap(0, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS);
    expect((await makeDeviceExclusive(t.mm, ro, owner)).ret).toBe(-1);
    m.dispose();
  });
});
