/** Test helper: a tiny kernel subsystem owning pinned-movable pages with known bytes. */
import { expect } from "vitest";
import type { Machine } from "../../index";
import { pattern } from "../../mm/__tests__/helpers";
import type { PinpageSystem } from "../pinpage";

/** A tiny kernel subsystem owning pages with known bytes; `fail` makes its migrate return that errno. */
export function ringSubsystem(m: Machine, name: string, npages: number) {
  const slots: number[] = [];
  const state = { fail: 0, migrations: 0 };
  const sys = m.mm.pinpage.registerPinpage(name, {
    migrate(_s: PinpageSystem, page: number, newpage: number) {
      if (state.fail !== 0) return state.fail;
      const i = slots.indexOf(page);
      if (i < 0) return -22;
      m.contents.copyPages(newpage, page, 1);
      slots[i] = newpage;
      state.migrations++;
      return 0;
    },
  });
  for (let i = 0; i < npages; i++) {
    const pfn = m.alloc.allocPages(0);
    m.contents.write(pfn, 0, pattern(4096, 100 + i));
    slots.push(pfn);
    expect(m.mm.pinpage.setPinpage(sys, pfn, i)).toBe(0);
  }
  return {
    sys,
    slots,
    state,
    check(): void {
      const buf = new Uint8Array(4096);
      slots.forEach((pfn, i) => {
        m.contents.read(pfn, 0, buf);
        expect(Buffer.compare(buf, pattern(4096, 100 + i)), `slot ${i} at pfn ${pfn}`).toBe(0);
        expect(m.mm.pinpage.ownerOf(pfn)).toBe(sys);
        expect(sys.pages.get(pfn)?.private).toBe(i);
      });
    },
    release(): void {
      for (const pfn of slots) {
        expect(m.mm.pinpage.clearPinpage(sys, pfn)).toBe(0);
        m.mm.refs.putPage(pfn);
      }
      slots.length = 0;
      m.mm.pinpage.unregisterPinpage(sys);
    },
  };
}
