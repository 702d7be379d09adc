import { describe, expect, it } from "vitest";
import { validateMachineConfig } from "../../config";
import { BugError, bugOn, ERRNO, einval, errnoName, HmmError } from "../errors";

function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (e) {
    return e;
  }
  throw new Error("expected a throw");
}

describe("errors", () => {
  it("errnoName maps an errno number (either sign) back to its name", () => {
    expect(errnoName(-22)).toBe("EINVAL");
    expect(errnoName(12)).toBe("ENOMEM");
    expect(errnoName(-9)).toBe("EBADF");
    expect(errnoName(-4095)).toBe("EINVAL");
  });

  it("ERRNO has the numbers of include/uapi/asm-generic/errno-base.h and errno.h", () => {
    expect(ERRNO).toEqual({
      EPERM: 1,
      ENOENT: 2,
      EINTR: 4,
      EIO: 5,
      EBADF: 9,
      EAGAIN: 11,
      ENOMEM: 12,
      EFAULT: 14,
      EBUSY: 16,
      EEXIST: 17,
      ENODEV: 19,
      EINVAL: 22,
      ENOSPC: 28,
      ERANGE: 34,
      EOPNOTSUPP: 95,
      EHWPOISON: 133,
    });
  });

  it("HmmError carries a stable code, the argument, and the negative errno", () => {
    const e = new HmmError("EBUSY", "range is being migrated", "range");
    expect(e).toBeInstanceOf(Error);
    expect(e.name).toBe("HmmError");
    expect(e.code).toBe("EBUSY");
    expect(e.arg).toBe("range");
    expect(e.errno).toBe(-16);
    expect(e.message).toBe("EBUSY: range is being migrated");
    expect(new HmmError("EPERM", "x").errno).toBe(-1);
    expect(new HmmError("EPERM", "x").arg).toBeUndefined();
  });

  it("einval names the argument and what was expected", () => {
    const e = thrown(() => einval("order", "an integer in 0..10, got 11"));
    expect(e).toBeInstanceOf(HmmError);
    expect(e).toMatchObject({ code: "EINVAL", arg: "order" });
    expect((e as HmmError).message).toBe("EINVAL: order: an integer in 0..10, got 11");
    expect((e as HmmError).errno).toBe(-22);
  });

  it("BugError is distinct from HmmError and carries its check id", () => {
    const e = new BugError("double-free", "pfn 3 freed twice");
    expect(e).toBeInstanceOf(Error);
    expect(e).not.toBeInstanceOf(HmmError);
    expect(e.name).toBe("BugError");
    expect(e.check).toBe("double-free");
    expect(e.message).toBe("BUG(double-free): pfn 3 freed twice");
    expect(() => bugOn(true, "x", "y")).not.toThrow();
    const b = thrown(() => bugOn(false, "lru-double-add", "pfn 9"));
    expect(b).toBeInstanceOf(BugError);
    expect((b as BugError).check).toBe("lru-double-add");
  });

  it("machine config validation names the offending field", () => {
    expect(thrown(() => validateMachineConfig({ ramMiB: [64, 3] }))).toMatchObject({ code: "EINVAL", arg: "config.ramMiB[1]" });
    expect(thrown(() => validateMachineConfig({ ramMiB: [] }))).toMatchObject({ code: "EINVAL", arg: "config.ramMiB" });
    expect(thrown(() => validateMachineConfig({ seed: -1 }))).toMatchObject({ code: "EINVAL", arg: "config.seed" });
    expect(thrown(() => validateMachineConfig({ seed: 2 ** 32 }))).toMatchObject({ code: "EINVAL", arg: "config.seed" });
    expect(thrown(() => validateMachineConfig({ thp: "sometimes" as never }))).toMatchObject({ code: "EINVAL", arg: "config.thp" });
    expect(thrown(() => validateMachineConfig({ useZeroPage: 1 as never }))).toMatchObject({ code: "EINVAL", arg: "config.useZeroPage" });
    expect(thrown(() => validateMachineConfig({ thpPromotionThreshold: 513 }))).toMatchObject({
      code: "EINVAL",
      arg: "config.thpPromotionThreshold",
    });
    expect(thrown(() => validateMachineConfig({ khugepagedMaxPtesNone: -1 }))).toMatchObject({
      code: "EINVAL",
      arg: "config.khugepagedMaxPtesNone",
    });
    expect(validateMachineConfig({})).toMatchObject({
      seed: 1,
      ramMiB: [256],
      thp: "madvise",
      useZeroPage: true,
      thpPromotionThreshold: 1,
      thpPromotion: "khugepaged",
      khugepagedScanSleepMs: 10000,
      khugepagedPagesToScan: 4096,
      khugepagedMaxPtesNone: 511,
    });
  });
});
