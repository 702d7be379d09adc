/**
 * The nouveau-like driver of `@hmmkit/drivers` as a lab driver, with its built-in migration
 * policies under the names scenario files use.
 *
 * Policy names. A name is one built-in or a `+`-joined composition of policy parts, applied in
 * order with `composePolicies` (fault decisions: later parts overwrite earlier ones; prefetch,
 * access-counter and thrashing hooks all run; eviction: the first part that chooses):
 *
 * | part | models | parameters (`scenario.policy.params`) |
 * |---|---|---|
 * | `first-touch` | UVM rule 11: migrate to the faulting GPU, 4 KiB per fault | — |
 * | `tree-prefetch` | uvm_perf_prefetch.c / UVMSmart TBNp, 51 % density tree | `threshold`, `bigPageSize` |
 * | `access-counters` | remote map, migrate on counter notification (uvm_gpu_access_counters.c) | `minCount` |
 * | `thrash-pin` | uvm_perf_thrashing.c pin on detection | `pinNs`, `migrateUnpinned` |
 * | `lru-eviction` | uvm_pmm_gpu.c LRU-by-allocation 2 MiB chunks | — |
 * | `tree-eviction` | UVMSmart TBNe neighbourhood eviction | — |
 *
 * Built-ins compared by `hmmkit flagship`: `first-touch`, `tree-prefetch`, `access-counters`,
 * `thrash-pin`, `tree-prefetch+tree-eviction` (UVMSmart's TBNp + TBNe pair), and `uvm`
 * (= `tree-prefetch+thrash-pin+lru-eviction`, the UVM driver's defaults together).
 *
 * Driver options (`scenario.driver.options`): `ownerGroups` (`"auto"`, `"none"` or explicit
 * groups) and `thrashing` ({ enabled, threshold, lapseNs, epochNs }), passed to
 * `NouveauModule.probe`.
 *
 * @see drivers/src/nouveau (NouveauModule, policies/), reference/uvm-policies.md §0–§2
 */
import { HmmError, type Task } from "@hmmkit/core";
import type { GpuVaSpace } from "@hmmkit/device-emu";
import {
  accessCounterPolicy,
  composePolicies,
  firstTouchPolicy,
  lruEvictionPolicy,
  type MigrationPolicy,
  NouveauModule,
  type NouveauOptions,
  type NouveauStats,
  thrashPinPolicy,
  treeEvictionPolicy,
  treePrefetchPolicy,
} from "@hmmkit/drivers";
import type { LabDriverEnv, LabDriverFactory, LabDriverInstance } from "../driver-binding";
import type { DriverCounters } from "../metrics";

/** Policy parameters, from `scenario.policy.params`. */
export type PolicyParams = Readonly<Record<string, number | string | boolean>>;

/** A policy part: the parameters it takes and how to build it. */
export interface NouveauPolicyPart {
  /** Names of the `scenario.policy.params` entries this part takes. */
  readonly params: readonly string[];
  /**
   * Build the part for one GPU.
   * @param p - the scenario's policy parameters.
   * @returns the policy.
   * @throws HmmError EINVAL for a bad parameter value.
   */
  build(p: PolicyParams): MigrationPolicy;
}

/** Policy parts: builder and the parameter names it takes. */
export const NOUVEAU_POLICY_PARTS: Readonly<Record<string, NouveauPolicyPart>> = {
  "first-touch": { params: [], build: () => firstTouchPolicy() },
  "tree-prefetch": {
    params: ["threshold", "bigPageSize"],
    build: (p) => treePrefetchPolicy(pick(p, ["threshold", "bigPageSize"]) as { threshold?: number; bigPageSize?: number }),
  },
  "access-counters": { params: ["minCount"], build: (p) => accessCounterPolicy(pick(p, ["minCount"]) as { minCount?: number }) },
  "thrash-pin": {
    params: ["pinNs", "migrateUnpinned"],
    build: (p) => thrashPinPolicy(pick(p, ["pinNs", "migrateUnpinned"]) as { pinNs?: number; migrateUnpinned?: boolean }),
  },
  "lru-eviction": { params: [], build: () => lruEvictionPolicy() },
  "tree-eviction": { params: [], build: () => treeEvictionPolicy() },
};

/** Named compositions. */
export const NOUVEAU_POLICY_ALIASES: Readonly<Record<string, string>> = {
  uvm: "tree-prefetch+thrash-pin+lru-eviction",
};

/** The built-in policies, in the order comparisons list them. */
export const NOUVEAU_POLICIES = [
  "first-touch",
  "tree-prefetch",
  "access-counters",
  "thrash-pin",
  "tree-prefetch+tree-eviction",
  "uvm",
] as const;

function pick(p: PolicyParams, keys: readonly string[]): Record<string, unknown> {
  const o: Record<string, unknown> = {};
  for (const k of keys) if (p[k] !== undefined) o[k] = p[k];
  return o;
}

function partsOf(name: string): string[] | undefined {
  const parts = (NOUVEAU_POLICY_ALIASES[name] ?? name).split("+");
  return parts.every((x) => x in NOUVEAU_POLICY_PARTS) && new Set(parts).size === parts.length ? parts : undefined;
}

/**
 * Build the per-GPU policy factory of a policy name.
 * @param name - a built-in, an alias or a `+` composition of parts.
 * @param params - parameters, routed to the parts that take them.
 * @returns a factory (called once per GPU, so per-GPU state stays per GPU).
 * @throws HmmError EINVAL (`scenario.policy.name`) for an unknown name; EINVAL
 *   (`scenario.policy.params.<key>`) for a parameter no part takes, or a bad value (re-prefixed
 *   from the policy's own check).
 */
export function nouveauPolicy(name: string, params: PolicyParams): (gpu: number) => MigrationPolicy {
  const parts = partsOf(name);
  if (parts === undefined) {
    throw new HmmError(
      "EINVAL",
      `scenario.policy.name: unknown nouveau policy "${name}" (built-ins: ${NOUVEAU_POLICIES.join(", ")}; parts to join with "+": ${Object.keys(NOUVEAU_POLICY_PARTS).join(", ")})`,
      "scenario.policy.name",
    );
  }
  const taken = new Set(parts.flatMap((x) => (NOUVEAU_POLICY_PARTS[x] as { params: readonly string[] }).params));
  for (const k of Object.keys(params)) {
    if (!taken.has(k)) {
      throw new HmmError(
        "EINVAL",
        `scenario.policy.params.${k}: a parameter of ${name} (${taken.size > 0 ? [...taken].join(", ") : "it takes none"})`,
        `scenario.policy.params.${k}`,
      );
    }
  }
  const build = (): MigrationPolicy => {
    try {
      const ps = parts.map((x) => (NOUVEAU_POLICY_PARTS[x] as { build(p: PolicyParams): MigrationPolicy }).build(params));
      return ps.length === 1 ? (ps[0] as MigrationPolicy) : composePolicies(name, ps);
    } catch (e) {
      if (e instanceof HmmError && e.arg !== undefined) {
        const key = e.arg.split(".").pop() as string;
        const rest = e.message.slice(e.code.length + 2 + e.arg.length + 2);
        throw new HmmError(e.code, `scenario.policy.params.${key}: ${rest}`, `scenario.policy.params.${key}`);
      }
      throw e;
    }
  };
  build(); // validate the parameters once, before any GPU is probed
  return () => build();
}

/**
 * Map the driver's counters onto the lab's. Pages made resident on a GPU count whether they were
 * copied (`pagesToVram`) or never populated and zero-filled in VRAM (`pagesZeroFilled`): both are
 * migrate_vma migrations to device memory.
 * @param s - the module's summed counters.
 * @returns lab counters; every NouveauStats field is kept in `extra`.
 */
export function nouveauCounters(s: NouveauStats): DriverCounters {
  const extra: Record<string, number> = {};
  for (const k of Object.keys(s).sort()) extra[k] = (s as unknown as Record<string, number>)[k] as number;
  return {
    pagesToGpu: s.pagesToVram + s.pagesZeroFilled,
    pagesToCpu: s.pagesToRam + s.pagesEvicted,
    pagesGpuToGpu: s.pagesFromPeer + s.pagesViaSystem,
    pagesEvicted: s.pagesEvicted,
    thrashingEvents: s.thrashingEvents,
    remoteMaps: s.remoteMaps + s.peerMaps,
    extra,
  };
}

function driverOptions(o: Readonly<Record<string, unknown>>): Pick<NouveauOptions, "ownerGroups" | "thrashing"> {
  const out: { ownerGroups?: NouveauOptions["ownerGroups"]; thrashing?: NouveauOptions["thrashing"] } = {};
  for (const k of Object.keys(o)) {
    if (k !== "ownerGroups" && k !== "thrashing") {
      throw new HmmError("EINVAL", `scenario.driver.options.${k}: a known option (ownerGroups, thrashing)`, `scenario.driver.options.${k}`);
    }
  }
  if (o.ownerGroups !== undefined) out.ownerGroups = o.ownerGroups as NouveauOptions["ownerGroups"];
  if (o.thrashing !== undefined) out.thrashing = o.thrashing as NouveauOptions["thrashing"];
  return out;
}

/** A user policy for {@link createNouveauLabDriver}: builds the policy of one GPU from the scenario's parameters. */
export type UserPolicyBuilder = (params: PolicyParams, gpu: number) => MigrationPolicy;

/**
 * The nouveau-like driver for the lab, optionally with user policies next to the built-ins (a
 * policy written in one file, as a user would, compared with the built-ins by `comparePolicies`).
 * @param userPolicies - extra policies by name (a name must not contain `+` nor shadow a built-in
 *   part or alias); each receives the scenario's `policy.params` unchecked.
 * @returns the lab driver factory named `"nouveau"`.
 * @throws HmmError EINVAL (`userPolicies.<name>`) for a name that is not allowed.
 * @example
 * ```ts
 * const drivers = new Map([["nouveau", createNouveauLabDriver({ "write-migrates": () => writeMigrates })]]);
 * await comparePolicies(scenario, ["first-touch", "write-migrates"], { drivers });
 * ```
 */
export function createNouveauLabDriver(userPolicies: Readonly<Record<string, UserPolicyBuilder>> = {}): LabDriverFactory {
  const users = Object.keys(userPolicies);
  for (const n of users) {
    if (n.includes("+") || n in NOUVEAU_POLICY_PARTS || n in NOUVEAU_POLICY_ALIASES || n.length === 0) {
      throw new HmmError("EINVAL", `userPolicies.${n}: a new name without "+" (built-in parts and aliases are taken)`, `userPolicies.${n}`);
    }
  }
  return {
    name: "nouveau",
    description: "nouveau-like GPU driver (nouveau_dmem + nouveau_svm): migrate_vma with copy-engine DMA, eviction, peer migration",
    policies: [...NOUVEAU_POLICIES, ...users],
    acceptsPolicy: (name: string) => partsOf(name) !== undefined || name in userPolicies,
    create(env: LabDriverEnv): LabDriverInstance {
      const user = userPolicies[env.policy];
      const policy = user !== undefined ? (gpu: number) => user(env.params, gpu) : nouveauPolicy(env.policy, env.params);
      let mod: NouveauModule;
      try {
        mod = NouveauModule.probe(env.machine, env.platform, { ...driverOptions(env.options), policy });
      } catch (e) {
        if (e instanceof HmmError && e.arg?.startsWith("opts.") === true) {
          const arg = `scenario.driver.options.${e.arg.slice(5)}`;
          throw new HmmError(e.code, `${arg}: ${e.message.slice(e.code.length + 2 + e.arg.length + 2)}`, arg);
        }
        throw e;
      }
      return {
        attach(task: Task, gpus: readonly number[]): GpuVaSpace[] {
          return gpus.map((g) => mod.bind(task, g).space);
        },
        counters: () => nouveauCounters(mod.stats()),
        async shutdown(): Promise<void> {
          await mod.remove();
        },
      };
    },
  };
}

/**
 * The nouveau-like driver for the lab with the built-in policies only.
 * @see NouveauModule.probe, NouveauModule.bind, NouveauModule.remove
 */
export const nouveauLabDriver: LabDriverFactory = createNouveauLabDriver();
