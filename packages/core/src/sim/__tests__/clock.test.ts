import { describe, expect, it } from "vitest";
import { Fence, SimClock } from "../clock";
import { BugError, HmmError } from "../errors";

function catchSync(fn: () => unknown): unknown {
  try {
    fn();
  } catch (e) {
    return e;
  }
  throw new Error("expected a throw");
}

describe("SimClock", () => {
  it("fires events by time, then by scheduling order at equal times", async () => {
    const c = new SimClock();
    const log: string[] = [];
    c.schedule(30, () => log.push(`c@${c.now}`));
    c.schedule(10, () => log.push(`a@${c.now}`));
    c.schedule(20, () => log.push(`b@${c.now}`));
    c.schedule(10, () => log.push(`a2@${c.now}`));
    c.at(10, () => log.push(`a3@${c.now}`));
    c.schedule(0, () => log.push(`z@${c.now}`));
    expect(c.pending).toBe(6);
    await c.run();
    expect(log).toEqual(["z@0", "a@10", "a2@10", "a3@10", "b@20", "c@30"]);
    expect(c.now).toBe(30);
    expect(c.pending).toBe(0);
    expect(c.eventsFired).toBe(6);
  });

  it("keeps FIFO order among many equal-time events (heap ties by sequence)", async () => {
    const c = new SimClock();
    const log: number[] = [];
    for (let i = 0; i < 200; i++) c.schedule((i * 7919) % 5, () => log.push(i));
    await c.run();
    const expected = [...Array(200).keys()].sort((a, b) => ((a * 7919) % 5) - ((b * 7919) % 5) || a - b);
    expect(log).toEqual(expected);
  });

  it("events scheduled by an event at the same instant run after it, in the same step", () => {
    const c = new SimClock();
    const log: string[] = [];
    c.schedule(5, () => {
      log.push("first");
      c.schedule(0, () => log.push("nested"));
    });
    c.schedule(5, () => log.push("second"));
    c.schedule(6, () => log.push("later"));
    expect(c.step()).toBe(true);
    expect(log).toEqual(["first", "second", "nested"]);
    expect(c.now).toBe(5);
    expect(c.step()).toBe(true);
    expect(c.step()).toBe(false);
    expect(log).toEqual(["first", "second", "nested", "later"]);
  });

  it("cancel removes an event; cancelling a fired event is a no-op", async () => {
    const c = new SimClock();
    const log: number[] = [];
    const e1 = c.schedule(10, () => log.push(1));
    c.schedule(20, () => log.push(2));
    const e3 = c.schedule(30, () => log.push(3));
    c.cancel(e1);
    await c.runUntil(25);
    c.cancel(e3);
    c.cancel(e1);
    await c.run();
    expect(log).toEqual([2]);
    expect(c.eventsFired).toBe(1);
    expect(c.pending).toBe(0);
  });

  it("runUntil fires events at or before t, keeps later ones and advances to t", async () => {
    const c = new SimClock();
    const log: number[] = [];
    for (const t of [5, 10, 11, 50]) c.at(t, () => log.push(t));
    await c.runUntil(10);
    expect(log).toEqual([5, 10]);
    expect(c.now).toBe(10);
    expect(c.pending).toBe(2);
    await c.runUntil(40);
    expect(log).toEqual([5, 10, 11]);
    expect(c.now).toBe(40);
    await c.runUntil(40);
    expect(c.now).toBe(40);
    await expect(c.runUntil(39)).rejects.toMatchObject({ code: "EINVAL", arg: "time" });
    await c.run();
    expect(log).toEqual([5, 10, 11, 50]);
    expect(c.now).toBe(50);
  });

  it("runUntil with an empty queue just advances time", async () => {
    const c = new SimClock();
    await c.runUntil(1234);
    expect(c.now).toBe(1234);
    expect(c.eventsFired).toBe(0);
  });

  it("rejects bad delays and times with EINVAL naming the argument", () => {
    const c = new SimClock();
    for (const d of [-1, Number.NaN, Number.POSITIVE_INFINITY]) {
      const e = catchSync(() => c.schedule(d, () => {}));
      expect(e).toBeInstanceOf(HmmError);
      expect(e).toMatchObject({ code: "EINVAL", arg: "delayNs" });
    }
    c.schedule(100, () => {});
    c.step();
    const e = catchSync(() => c.at(99, () => {}));
    expect(e).toMatchObject({ code: "EINVAL", arg: "time" });
    expect((e as HmmError).message).toContain("time");
    expect(c.pending).toBe(0);
  });

  it("run lets promise chains started by events finish before the next instant", async () => {
    const c = new SimClock();
    const log: string[] = [];
    const task = async () => {
      await c.sleep(10);
      log.push(`woke@${c.now}`);
      await c.sleep(5);
      log.push(`woke2@${c.now}`);
    };
    c.schedule(12, () => log.push(`ev@${c.now}`));
    const p = task();
    await c.run();
    await p;
    expect(log).toEqual(["woke@10", "ev@12", "woke2@15"]);
    expect(c.now).toBe(15);
  });

  it("settle returns the promise's value and runs only as far as needed", async () => {
    const c = new SimClock();
    c.schedule(1000, () => {});
    const v = await c.settle(
      (async () => {
        await c.sleep(40);
        return 42;
      })(),
    );
    expect(v).toBe(42);
    expect(c.now).toBe(40);
    expect(c.pending).toBe(1);
  });

  it("settle propagates a rejection", async () => {
    const c = new SimClock();
    const p = (async () => {
      await c.sleep(5);
      throw new HmmError("EIO", "device error", "dev");
    })();
    await expect(c.settle(p)).rejects.toMatchObject({ code: "EIO" });
    expect(c.now).toBe(5);
  });

  it("settle reports a deadlock when nothing can ever settle the promise", async () => {
    const c = new SimClock();
    c.schedule(7, () => {});
    const err = await c.settle(new Promise<void>(() => {})).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BugError);
    expect((err as BugError).check).toBe("deadlock");
    expect(c.now).toBe(7);
  });

  it("the run loop refuses re-entry", async () => {
    const c = new SimClock();
    c.schedule(1, () => {});
    const first = c.run();
    const err = await c.run().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BugError);
    expect((err as BugError).check).toBe("clock-reentry");
    await first;
    expect(c.now).toBe(1);
  });
});

describe("Fence", () => {
  it("signals on the clock at the scheduled time", async () => {
    const c = new SimClock();
    const f = c.fenceAfter(250);
    expect(f.signaled).toBe(false);
    expect(f.time).toBe(-1);
    await c.runUntil(249);
    expect(f.signaled).toBe(false);
    await c.run();
    expect(f.signaled).toBe(true);
    expect(f.time).toBe(250);
    expect(await f.wait()).toBeUndefined();
  });

  it("async code awaiting fences resumes in fence order", async () => {
    const c = new SimClock();
    const log: string[] = [];
    const a = c.fenceAfter(30);
    const b = c.fenceAfter(10);
    const waiter = async (name: string, f: Fence) => {
      await f.wait();
      log.push(`${name}@${c.now}`);
    };
    const all = Promise.all([waiter("a", a), waiter("b", b)]);
    await c.settle(all);
    expect(log).toEqual(["b@10", "a@30"]);
  });

  it("carries an error without throwing it, and signals once", () => {
    const f = new Fence();
    const err = new HmmError("EIO", "dma error");
    f.signal(9, err);
    expect(f.error).toBe(err);
    expect(f.time).toBe(9);
    const e = catchSync(() => f.signal(10));
    expect(e).toBeInstanceOf(BugError);
    expect((e as BugError).check).toBe("fence-double-signal");
    expect(f.time).toBe(9);
    return f.wait().then((r) => expect(r).toBe(err));
  });
});
