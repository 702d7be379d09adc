import { describe, expect, it } from "vitest";
import { DevmemFreeList } from "../test-hmm";

describe("DevmemFreeList", () => {
  it("keeps first-in-first-out order when its ring wraps around and then grows", () => {
    const l = new DevmemFreeList();
    for (let p = 0; p < 50; p++) l.push(p);
    for (let p = 0; p < 40; p++) expect(l.shift()).toBe(p);
    for (let p = 50; p < 150; p++) l.push(p); // wraps past the end of the first ring, then grows it
    expect(l.length).toBe(110);
    for (let p = 40; p < 150; p++) expect(l.shift()).toBe(p);
    expect(l.shift()).toBeUndefined();
  });

  it("hands pages out first in, first out, at scale", () => {
    const l = new DevmemFreeList();
    expect(l.shift()).toBeUndefined();
    for (let p = 0; p < 10000; p++) l.push(p);
    for (let p = 0; p < 6000; p++) expect(l.shift()).toBe(p);
    expect(l.length).toBe(4000);
    l.push(42);
    for (let p = 6000; p < 10000; p++) expect(l.shift()).toBe(p);
    expect(l.shift()).toBe(42);
    expect(l.length).toBe(0);
  });

  it("retain keeps the order of what it keeps; clear empties", () => {
    const l = new DevmemFreeList();
    for (const p of [5, 1, 9, 3, 7]) l.push(p);
    expect(l.shift()).toBe(5);
    l.retain((p) => p !== 9);
    expect([l.shift(), l.shift(), l.shift()]).toEqual([1, 3, 7]);
    l.push(2);
    l.clear();
    expect(l.length).toBe(0);
    expect(l.shift()).toBeUndefined();
  });
});
