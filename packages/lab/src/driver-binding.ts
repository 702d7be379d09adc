/**
 * How the lab drives a GPU driver: a small adapter contract ({@link LabDriverFactory}) between the
 * runner and a driver of `@hmmkit/drivers`, so the runner stays the same whichever driver services
 * the GPUs, and a user can plug in their own driver (or a policy) without touching the runner.
 *
 * Theory of operation. The runner builds the machine and platform, then asks the factory named by
 * `scenario.driver.name` to probe the GPUs with the scenario's policy ({@link LabDriverFactory.create}),
 * spawns a task, maps the workload's buffer, and asks the driver for one GPU VA space per GPU
 * mirroring that task's address space ({@link LabDriverInstance.attach}): GPU VA == CPU VA, as HMM
 * shares the process address space. Kernels then run in those spaces and the driver services
 * their faults. At the end the runner reads {@link LabDriverInstance.counters} and calls
 * {@link LabDriverInstance.shutdown}.
 *
 * @see drivers/gpu/drm/nouveau/nouveau_svm.c (nouveau_svmm_bind: a channel's VA space mirrors an
 *      mm), lib/test_hmm.c (dmirror_fops_open)
 */
import { HmmError, type Machine, type Task } from "@hmmkit/core";
import type { GpuVaSpace, Platform } from "@hmmkit/device-emu";
import type { DriverCounters } from "./metrics";

/** What a driver factory receives. */
export interface LabDriverEnv {
  /** The machine. */
  readonly machine: Machine;
  /** Its platform (GPUs and links). */
  readonly platform: Platform;
  /** Policy name (one of the factory's `policies`). */
  readonly policy: string;
  /** Policy parameters from the scenario. */
  readonly params: Readonly<Record<string, number | string | boolean>>;
  /** Driver options from the scenario. */
  readonly options: Readonly<Record<string, unknown>>;
}

/** A probed driver servicing every GPU of a platform. */
export interface LabDriverInstance {
  /**
   * Mirror a task's address space on GPUs.
   * @param task - the task whose memory the kernels access.
   * @param gpus - GPU indices.
   * @returns one VA space per entry of `gpus`, in order.
   */
  attach(task: Task, gpus: readonly number[]): Promise<GpuVaSpace[]> | GpuVaSpace[];
  /**
   * The driver's cumulative counters.
   * @returns the counters now.
   */
  counters(): DriverCounters;
  /**
   * Detach from the task and release the GPUs (after the last phase).
   * @returns resolves when done (may need the clock: the runner settles it).
   */
  shutdown(): Promise<void> | void;
}

/** A driver the lab can run. */
export interface LabDriverFactory {
  /** Name used in scenario files (`scenario.driver.name`). */
  readonly name: string;
  /** One-line description. */
  readonly description: string;
  /** Built-in policy names, in the order comparisons list them. */
  readonly policies: readonly string[];
  /**
   * Whether a policy name outside `policies` is accepted too (e.g. a composition of parts).
   * @param name - the name. @returns true if `create` accepts it.
   */
  acceptsPolicy?(name: string): boolean;
  /**
   * Probe the platform's GPUs with a policy.
   * @param env - machine, platform, policy and options.
   * @returns the driver instance.
   * @throws HmmError EINVAL naming `scenario.policy.params.<name>` or `scenario.driver.options.<name>`
   *   for a bad parameter.
   */
  create(env: LabDriverEnv): LabDriverInstance;
}

/** Drivers by name. */
export type LabDriverRegistry = ReadonlyMap<string, LabDriverFactory>;

/**
 * Find a driver and check the policy name against its built-ins.
 * @param registry - available drivers.
 * @param name - `scenario.driver.name`.
 * @param policy - `scenario.policy.name`.
 * @returns the factory.
 * @throws HmmError ENODEV (`scenario.driver.name`) when no such driver is available; EINVAL
 *   (`scenario.policy.name`) for a policy the driver does not have, listing the ones it has.
 */
export function resolveDriver(registry: LabDriverRegistry, name: string, policy: string): LabDriverFactory {
  const f = registry.get(name);
  if (f === undefined) {
    const have = [...registry.keys()];
    throw new HmmError(
      "ENODEV",
      `scenario.driver.name: no driver "${name}" is available to the lab (${have.length > 0 ? `available: ${have.join(", ")}` : "none is registered"})`,
      "scenario.driver.name",
    );
  }
  if (!f.policies.includes(policy) && f.acceptsPolicy?.(policy) !== true) {
    throw new HmmError(
      "EINVAL",
      `scenario.policy.name: driver "${name}" has no policy "${policy}" (built-ins: ${f.policies.join(", ")})`,
      "scenario.policy.name",
    );
  }
  return f;
}
