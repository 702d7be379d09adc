import "reflect-metadata";
import { describe, expect, it } from "vitest";
import { Machine, MmCore } from "../../index";

// tsyringe silently passes `undefined` for a constructor parameter without @inject when no
// decorator metadata is emitted (vitest's transform emits none): every injectable class must
// carry exactly one token per parameter.
const injectables: [string, { length: number }][] = [["MmCore", MmCore]];

describe("dependency injection", () => {
  it.each(injectables)("%s has an @inject token for every constructor parameter", (_name, cls) => {
    const tokens = Reflect.getMetadata("injectionTokens", cls) as Record<number, unknown> | undefined;
    expect(tokens).toBeDefined();
    const indexes = Object.keys(tokens ?? {})
      .map(Number)
      .sort((a, b) => a - b);
    expect(indexes).toEqual(Array.from({ length: cls.length }, (_, i) => i));
  });

  it("two machines share no service instance", () => {
    const a = Machine.create({ ramMiB: [8], seed: 1 });
    const b = Machine.create({ ramMiB: [8], seed: 1 });
    expect(a.mm).not.toBe(b.mm);
    expect(a.mm.pages).toBe(a.pages);
    expect(b.mm.pages).toBe(b.pages);
    expect(a.container).not.toBe(b.container);
    a.dispose();
    b.dispose();
  });
});
