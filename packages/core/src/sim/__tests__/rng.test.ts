import { describe, expect, it } from "vitest";
import { Rng } from "../rng";

const take = (r: Rng, n: number) => Array.from({ length: n }, () => r.nextU32());

describe("Rng", () => {
  it("is deterministic: equal seeds give equal streams", () => {
    expect(take(new Rng(42), 100)).toEqual(take(new Rng(42), 100));
  });

  it("pins the stream of seed 1 (a changed generator breaks every recorded scenario)", () => {
    const first = take(new Rng(1), 4);
    expect(first).toEqual(take(new Rng(1), 4));
    // Golden values, cross-checked against an independent (Python) xoshiro128** with splitmix32
    // seeding: a changed generator would silently change every recorded scenario.
    expect(first).toEqual([2442144158, 3238099751, 3819917871, 2104621829]);
  });

  it("different seeds give different streams", () => {
    const a = take(new Rng(1), 16);
    const b = take(new Rng(2), 16);
    expect(a).not.toEqual(b);
    const same = a.filter((x, i) => x === b[i]).length;
    expect(same).toBe(0);
  });

  it("normalises the seed to 32 bits and copes with seed 0", () => {
    expect(new Rng(-1).seed).toBe(0xffffffff);
    expect(take(new Rng(-1), 8)).toEqual(take(new Rng(0xffffffff), 8));
    const z = take(new Rng(0), 64);
    expect(new Set(z).size).toBe(64);
  });

  it("fork: deterministic per label, independent across labels, does not consume the parent", () => {
    const p = new Rng(7);
    const a1 = take(p.fork("workload"), 32);
    const a2 = take(new Rng(7).fork("workload"), 32);
    expect(a1).toEqual(a2);
    const b = take(p.fork("policy"), 32);
    expect(b).not.toEqual(a1);
    expect(b.filter((x, i) => x === a1[i]).length).toBe(0);
    // Forking consumed nothing from the parent.
    expect(take(p, 16)).toEqual(take(new Rng(7), 16));
    // Order independent: forking "policy" first changes nothing for "workload".
    const q = new Rng(7);
    q.fork("policy").nextU32();
    expect(take(q.fork("workload"), 32)).toEqual(a1);
    // A fork differs from its parent's stream.
    expect(take(new Rng(7).fork("workload"), 16)).not.toEqual(take(new Rng(7), 16));
  });

  it("next() is in [0, 1) and int(n) in [0, n), with a sane distribution", () => {
    const r = new Rng(123);
    const buckets = new Array<number>(10).fill(0);
    let sum = 0;
    const N = 200_000;
    for (let i = 0; i < N; i++) {
      const x = r.next();
      expect(x >= 0 && x < 1).toBe(true);
      sum += x;
      const k = r.int(10);
      buckets[k] = (buckets[k] as number) + 1;
    }
    expect(Math.abs(sum / N - 0.5)).toBeLessThan(0.005);
    // chi-square with 9 degrees of freedom: p = 0.001 critical value is 27.88.
    const exp = N / 10;
    const chi = buckets.reduce((s, o) => s + (o - exp) ** 2 / exp, 0);
    expect(chi).toBeLessThan(27.88);
    for (const b of buckets) expect(Math.abs(b - exp) / exp).toBeLessThan(0.03);
  });

  it("int covers its bounds", () => {
    const r = new Rng(9);
    const seen = new Set<number>();
    for (let i = 0; i < 1000; i++) {
      expect(r.int(1)).toBe(0);
      seen.add(r.int(3));
      const big = r.int(2 ** 32);
      expect(Number.isInteger(big) && big >= 0 && big < 2 ** 32).toBe(true);
    }
    expect([...seen].sort()).toEqual([0, 1, 2]);
  });

  it("bits are balanced (each of the 32 output bits set about half the time)", () => {
    const r = new Rng(5);
    const ones = new Array<number>(32).fill(0);
    const N = 20_000;
    for (let i = 0; i < N; i++) {
      const x = r.nextU32();
      for (let b = 0; b < 32; b++) if ((x >>> b) & 1) ones[b] = (ones[b] as number) + 1;
    }
    for (const o of ones) expect(Math.abs(o / N - 0.5)).toBeLessThan(0.02);
  });
});
