/**
 * Random operation sequences (seeded, reproducible) over one secure VM: guest loads and stores,
 * host reads, H_SVM_PAGE_IN/OUT, share and unshare. After every step the driver's invariants
 * hold (KvmppcUvmem.verify), the guest reads what it last wrote, and at the end no host RAM page
 * holds a secret. Ends with the leak guard.
 */
import { PAGE_SHIFT, PAGE_SIZE, Rng } from "@hmmkit/core";
import { describe, expect, it } from "vitest";
import { H_PARAMETER, H_SUCCESS, KVMPPC_GFN_SHARED, KVMPPC_GFN_UVMEM_PFN } from "../../index";
import { ramPagesContaining, secretMarker, secretPage, UvCtx } from "./fixture";

function publicPage(n: number): Uint8Array {
  const b = new Uint8Array(PAGE_SIZE);
  b.set(new TextEncoder().encode(`SHARED-DATA:${n}:`));
  b.fill(n & 0xff, 64, 128);
  return b;
}

describe.each([3, 17, 4242])("random uvmem operations, seed %i", (seed) => {
  it("keep the invariants and never leak a secret", async () => {
    const c = new UvCtx({ seed, npages: 8 });
    await c.boot();
    const { uvmem, kvm, guest } = c;
    expect(await c.run(guest.esm([0, 1, 2, 3, 4, 5, 6, 7]))).toBe(H_SUCCESS);
    const rng = new Rng(seed).fork("ops");
    // What the guest should read per gfn (undefined: unknown, e.g. a page-out shared as is).
    const want: (Uint8Array | undefined)[] = [];
    for (let g = 0; g < c.npages; g++) want[g] = await c.run(guest.read(g * PAGE_SIZE, PAGE_SIZE));
    for (let step = 0; step < 80; step++) {
      const g = rng.int(c.npages);
      const st = kvm.gfnState(g);
      const shared = (st & KVMPPC_GFN_SHARED) !== 0;
      switch (rng.int(7)) {
        case 0: {
          const data = shared ? publicPage(step) : secretPage("prop", g * 1000 + step);
          await c.run(guest.write(g * PAGE_SIZE, data));
          want[g] = data;
          break;
        }
        case 1: {
          const got = await c.hostRead(g);
          if (shared) expect(got).toEqual(want[g]);
          else expect(Buffer.from(got).indexOf(Buffer.from(secretMarker("prop")))).toBe(-1);
          break;
        }
        case 2:
          expect(await c.run(uvmem.svmPageOut(kvm, g * PAGE_SIZE, 0, PAGE_SHIFT))).toBe(H_SUCCESS);
          break;
        case 3:
          expect(await c.run(uvmem.svmPageIn(kvm, g * PAGE_SIZE, 0, PAGE_SHIFT))).toBe(st & KVMPPC_GFN_UVMEM_PFN ? H_PARAMETER : H_SUCCESS);
          if (shared) c.uv.unshare(kvm.lpid, g);
          break;
        case 4:
          expect(await c.run(guest.sharePage(g, 1))).toBe(H_SUCCESS);
          if (st & KVMPPC_GFN_UVMEM_PFN) want[g] = new Uint8Array(PAGE_SIZE);
          else if (!shared) want[g] = undefined; // a paged-out frame is shared as is (ciphertext)
          break;
        case 5:
          if (shared) expect(await c.run(guest.unsharePage(g, 1))).toBe(H_SUCCESS);
          break;
        default: {
          const got = await c.run(guest.read(g * PAGE_SIZE, PAGE_SIZE));
          if (want[g] !== undefined) expect(got, `step ${step} gfn ${g}`).toEqual(want[g]);
          else want[g] = got;
        }
      }
      uvmem.verify();
    }
    expect(ramPagesContaining(c.m, secretMarker("prop"))).toEqual([]);
    await c.teardown();
  });
});
