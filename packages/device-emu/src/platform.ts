/**
 * `Platform`: the host and its GPUs, the host link of each GPU and the peer links between GPUs,
 * built from a validated configuration.
 *
 * Theory of operation. {@link Platform.create} validates the whole {@link PlatformConfig} first —
 * every bad or unknown field throws HmmError EINVAL naming its path (`platform.gpus[1].vramMiB`,
 * `platform.peerLinks[0].gpus`) and nothing has been created — then, in GPU order, adds each GPU's
 * VRAM as a device region of the machine's physical memory, creates its host link, then the peer
 * links, then the GPUs' engines. The platform owns one trace bus ({@link DeviceEvents}) and one
 * {@link FaultInjector}, and implements the {@link GpuFabric} through which engines find links.
 *
 * Defaults (each documented at its field): host link `pcie4`; VRAM bandwidth 1 555 GB/s; 2 copy
 * engines × 2 channels; fault buffer 2 048 entries, batch 256, BATCH_FLUSH, update-PUT ratio 50 %,
 * 20 batches per service; access counters on, 2 MiB granularity, threshold 256, batch 256.
 *
 * @see NVIDIA uvm_gpu.c (GPU and peer discovery, uvm_gpu_peer caps), nvidia-smi topo -m (the
 *      topology this describes), reference/uvm-policies.md §0, §1.11, §5
 */

import type { PhysContext } from "@hmmkit/core/phys";
import type { TraceBus as TraceBusType } from "@hmmkit/core/sim";
import { einval, TraceBus } from "@hmmkit/core/sim";
import { ACCESS_COUNTER_GRANULARITIES, type AccessCounterConfig } from "./access-counters";
import type { CopyEngineConfig } from "./copy-engine";
import type { DeviceEvents } from "./events";
import type { GpuFabric } from "./fabric";
import type { FaultBufferConfig, ReplayPolicy } from "./fault-buffer";
import { GpuDevice, type GpuResolvedConfig } from "./gpu";
import { FaultInjector } from "./inject";
import {
  HOST_LINK_PRESETS,
  type HostLinkPreset,
  Link,
  type LinkPresetValues,
  LinkResource,
  PEER_LINK_PRESETS,
  type PeerLinkPreset,
} from "./links";

/** A GPU's host link: a preset, optionally with explicit overrides. */
export interface HostLinkConfig {
  /** PCIe generation (x16). Default `"pcie4"`. See {@link HOST_LINK_PRESETS} for values and sources. */
  readonly preset?: HostLinkPreset;
  /** Host→device bandwidth, GB/s (0.001..10000). Default: the preset's. */
  readonly h2dGBps?: number;
  /** Device→host bandwidth, GB/s (0.001..10000). Default: the preset's. */
  readonly d2hGBps?: number;
  /** Per-transfer latency, ns (0..10^9). Default: the preset's. */
  readonly latencyNs?: number;
}

/** A link between two GPUs. */
export interface PeerLinkConfig {
  /** The two GPUs (distinct indices). */
  readonly gpus: readonly [number, number];
  /** Link type. Default `"pcie-p2p"`. See {@link PEER_LINK_PRESETS} for values and sources. */
  readonly preset?: PeerLinkPreset;
  /** Bandwidth per direction, GB/s (0.001..100000). Default: the preset's. */
  readonly bandwidthGBps?: number;
  /** Per-transfer latency, ns (0..10^9). Default: the preset's. */
  readonly latencyNs?: number;
}

/** Fault-buffer settings (UVM module parameters in camelCase). */
export interface FaultBufferSettings {
  /** Ring capacity (1..1 048 576). Default 2 048: the hardware's size is reported by RM at run
   *  time and is not in the reference; 2 048 holds 8 default batches. */
  readonly entries?: number;
  /** `uvm_perf_fault_batch_count` (1..entries). Default 256 (uvm_gpu_replayable_faults.c). */
  readonly batchSize?: number;
  /** `uvm_perf_fault_replay_policy`. Default `"batch-flush"` (UVM's default). */
  readonly replayPolicy?: ReplayPolicy;
  /** `uvm_perf_fault_replay_update_put_ratio` (0..100). Default 50. */
  readonly replayUpdatePutRatio?: number;
  /** `uvm_perf_fault_max_batches_per_service` (1..1000). Default 20. */
  readonly maxBatchesPerService?: number;
  /** `uvm_perf_fault_coalesce`. Default true. */
  readonly coalesce?: boolean;
  /** Interrupt + fetch latency, ns (0..10^9). Default 5 000 (reference §5.2 estimate: 5–10 µs). */
  readonly interruptLatencyNs?: number;
  /** Replay latency, ns (0..10^9). Default 1 000 (reference §5.2 estimate: 1–2 µs). */
  readonly replayLatencyNs?: number;
}

/** Access-counter settings. */
export interface AccessCounterSettings {
  /** Counting on. Default true (whether to migrate on notifications is the driver's policy). */
  readonly enabled?: boolean;
  /** Region size in bytes: 65536, 2097152, 16777216 or 17179869184. Default 2 MiB (uvm_gpu_access_counters.c). */
  readonly granularity?: number;
  /** `uvm_perf_access_counter_threshold` (1..65535). Default 256. */
  readonly threshold?: number;
  /** `uvm_perf_access_counter_batch_count` (1..bufferEntries). Default 256. */
  readonly batchSize?: number;
  /** Notification buffer capacity (1..1 048 576). Default 2 048 (emulator choice; RM sizes the real one). */
  readonly bufferEntries?: number;
  /** Interrupt latency, ns (0..10^9). Default 5 000 (as the fault buffer's). */
  readonly interruptLatencyNs?: number;
}

/** One GPU. */
export interface GpuConfig {
  /** Name. Default `"gpu<i>"`. */
  readonly name?: string;
  /** VRAM size in MiB: an even integer in 2..1 048 576 (VRAM is added in 2 MiB units). Required. */
  readonly vramMiB: number;
  /** VRAM bandwidth, GB/s (1..100000). Default 1 555 (A100 40 GB HBM2, NVIDIA A100 datasheet; not
   *  in the reference). */
  readonly vramBandwidthGBps?: number;
  /** Copy engines (1..64). Default 2 (one per host-link direction: UVM prefers sysmemRead CEs for
   *  CPU_TO_GPU and sysmemWrite CEs for GPU_TO_CPU, reference §1.8). */
  readonly copyEngines?: number;
  /** Channels per engine (1..64). Default 2 (UVM channels per CE pool, uvm_channel.c). */
  readonly channelsPerEngine?: number;
  /** Batches a channel runs at once (1..64). Default 1 (GPFIFO order). */
  readonly channelConcurrency?: number;
  /** Per-descriptor latency of VRAM↔VRAM copies, ns (0..10^9). Default 1 000 (reference §5.2
   *  estimate of CE launch cost, 1–2 µs). */
  readonly localCopyLatencyNs?: number;
  /** Accesses a warp executes per compute round (1..10^7). Default 1 024 (emulator granularity). */
  readonly warpQuantum?: number;
  /** Host link. Default `{ preset: "pcie4" }`. */
  readonly hostLink?: HostLinkConfig;
  /** Fault buffer. */
  readonly faultBuffer?: FaultBufferSettings;
  /** Access counters. */
  readonly accessCounters?: AccessCounterSettings;
}

/** The whole platform. */
export interface PlatformConfig {
  /** The GPUs (1..16). */
  readonly gpus: readonly GpuConfig[];
  /** Links between GPUs (at most one per pair). Default none. */
  readonly peerLinks?: readonly PeerLinkConfig[];
}

interface Resolved {
  gpus: GpuResolvedConfig[];
  host: { values: LinkPresetValues; preset: string }[];
  peers: { a: number; b: number; values: LinkPresetValues; preset: string }[];
}

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

function keys(o: Obj, allowed: readonly string[], path: string): void {
  for (const k of Object.keys(o)) if (!allowed.includes(k)) einval(`${path}.${k}`, `a known field (${allowed.join(", ")})`);
}

function int(v: unknown, path: string, min: number, max: number, dflt: number): number {
  if (v === undefined) return dflt;
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) einval(path, `an integer in ${min}..${max}, got ${String(v)}`);
  return v;
}

function num(v: unknown, path: string, min: number, max: number, dflt: number): number {
  if (v === undefined) return dflt;
  if (typeof v !== "number" || !Number.isFinite(v) || v < min || v > max) einval(path, `a number in ${min}..${max}, got ${String(v)}`);
  return v;
}

function bool(v: unknown, path: string, dflt: boolean): boolean {
  if (v === undefined) return dflt;
  if (typeof v !== "boolean") einval(path, `a boolean, got ${String(v)}`);
  return v;
}

function oneOf<T extends string>(v: unknown, path: string, allowed: readonly T[], dflt: T): T {
  if (v === undefined) return dflt;
  if (typeof v !== "string" || !allowed.includes(v as T))
    einval(path, `one of ${allowed.map((a) => `"${a}"`).join(", ")}, got ${String(v)}`);
  return v as T;
}

const GPU_KEYS = [
  "name",
  "vramMiB",
  "vramBandwidthGBps",
  "copyEngines",
  "channelsPerEngine",
  "channelConcurrency",
  "localCopyLatencyNs",
  "warpQuantum",
  "hostLink",
  "faultBuffer",
  "accessCounters",
] as const;
const MAX_LAT = 1e9;

function resolveGpu(g: unknown, i: number): { gpu: GpuResolvedConfig; host: { values: LinkPresetValues; preset: string } } {
  const p = `platform.gpus[${i}]`;
  if (!isObj(g)) einval(p, "a GpuConfig object");
  keys(g, GPU_KEYS, p);
  const name = g.name === undefined ? `gpu${i}` : g.name;
  if (typeof name !== "string" || name.length === 0) einval(`${p}.name`, `a non-empty string, got ${String(name)}`);
  if (g.vramMiB === undefined) einval(`${p}.vramMiB`, "a VRAM size in MiB (required)");
  const vramMiB = int(g.vramMiB, `${p}.vramMiB`, 2, 1048576, 0);
  if (vramMiB % 2 !== 0) einval(`${p}.vramMiB`, `an even number of MiB (VRAM is added in 2 MiB units), got ${vramMiB}`);
  const copy: CopyEngineConfig = {
    engines: int(g.copyEngines, `${p}.copyEngines`, 1, 64, 2),
    channelsPerEngine: int(g.channelsPerEngine, `${p}.channelsPerEngine`, 1, 64, 2),
    channelConcurrency: int(g.channelConcurrency, `${p}.channelConcurrency`, 1, 64, 1),
    localCopyLatencyNs: num(g.localCopyLatencyNs, `${p}.localCopyLatencyNs`, 0, MAX_LAT, 1000),
  };
  const fbp = `${p}.faultBuffer`;
  const fb = g.faultBuffer ?? {};
  if (!isObj(fb)) einval(fbp, "a FaultBufferSettings object");
  keys(
    fb,
    [
      "entries",
      "batchSize",
      "replayPolicy",
      "replayUpdatePutRatio",
      "maxBatchesPerService",
      "coalesce",
      "interruptLatencyNs",
      "replayLatencyNs",
    ],
    fbp,
  );
  const entries = int(fb.entries, `${fbp}.entries`, 1, 1048576, 2048);
  const faultBuffer: FaultBufferConfig = {
    entries,
    batchSize: int(fb.batchSize, `${fbp}.batchSize`, 1, entries, Math.min(256, entries)),
    replayPolicy: oneOf<ReplayPolicy>(fb.replayPolicy, `${fbp}.replayPolicy`, ["block", "batch", "batch-flush", "once"], "batch-flush"),
    replayUpdatePutRatio: int(fb.replayUpdatePutRatio, `${fbp}.replayUpdatePutRatio`, 0, 100, 50),
    maxBatchesPerService: int(fb.maxBatchesPerService, `${fbp}.maxBatchesPerService`, 1, 1000, 20),
    coalesce: bool(fb.coalesce, `${fbp}.coalesce`, true),
    interruptLatencyNs: num(fb.interruptLatencyNs, `${fbp}.interruptLatencyNs`, 0, MAX_LAT, 5000),
    replayLatencyNs: num(fb.replayLatencyNs, `${fbp}.replayLatencyNs`, 0, MAX_LAT, 1000),
  };
  const acp = `${p}.accessCounters`;
  const ac = g.accessCounters ?? {};
  if (!isObj(ac)) einval(acp, "an AccessCounterSettings object");
  keys(ac, ["enabled", "granularity", "threshold", "batchSize", "bufferEntries", "interruptLatencyNs"], acp);
  const gran = ac.granularity === undefined ? 2097152 : ac.granularity;
  if (!(ACCESS_COUNTER_GRANULARITIES as readonly unknown[]).includes(gran)) {
    einval(`${acp}.granularity`, `one of ${ACCESS_COUNTER_GRANULARITIES.join(", ")} bytes, got ${String(gran)}`);
  }
  const bufferEntries = int(ac.bufferEntries, `${acp}.bufferEntries`, 1, 1048576, 2048);
  const accessCounters: AccessCounterConfig = {
    enabled: bool(ac.enabled, `${acp}.enabled`, true),
    granularity: gran as number,
    threshold: int(ac.threshold, `${acp}.threshold`, 1, 65535, 256),
    batchSize: int(ac.batchSize, `${acp}.batchSize`, 1, bufferEntries, Math.min(256, bufferEntries)),
    bufferEntries,
    interruptLatencyNs: num(ac.interruptLatencyNs, `${acp}.interruptLatencyNs`, 0, MAX_LAT, 5000),
  };
  const hp = `${p}.hostLink`;
  const hl = g.hostLink ?? {};
  if (!isObj(hl)) einval(hp, "a HostLinkConfig object");
  keys(hl, ["preset", "h2dGBps", "d2hGBps", "latencyNs"], hp);
  const preset = oneOf<HostLinkPreset>(hl.preset, `${hp}.preset`, ["pcie3", "pcie4", "pcie5"], "pcie4");
  const pv = HOST_LINK_PRESETS[preset];
  const custom = hl.h2dGBps !== undefined || hl.d2hGBps !== undefined || hl.latencyNs !== undefined;
  const values: LinkPresetValues = {
    forwardGBps: num(hl.h2dGBps, `${hp}.h2dGBps`, 0.001, 10000, pv.forwardGBps),
    reverseGBps: num(hl.d2hGBps, `${hp}.d2hGBps`, 0.001, 10000, pv.reverseGBps),
    latencyNs: num(hl.latencyNs, `${hp}.latencyNs`, 0, MAX_LAT, pv.latencyNs),
  };
  return {
    gpu: {
      name,
      vramMiB,
      vramBandwidthGBps: num(g.vramBandwidthGBps, `${p}.vramBandwidthGBps`, 1, 100000, 1555),
      copy,
      faultBuffer,
      accessCounters,
      compute: { warpQuantum: int(g.warpQuantum, `${p}.warpQuantum`, 1, 10_000_000, 1024) },
    },
    host: { values, preset: custom ? `${preset}+custom` : preset },
  };
}

function resolve(config: unknown): Resolved {
  if (!isObj(config)) einval("platform", "a PlatformConfig object");
  keys(config, ["gpus", "peerLinks"], "platform");
  const gpus = config.gpus;
  if (!Array.isArray(gpus) || gpus.length < 1 || gpus.length > 16) einval("platform.gpus", "an array of 1..16 GpuConfig");
  const out: Resolved = { gpus: [], host: [], peers: [] };
  gpus.forEach((g, i) => {
    const r = resolveGpu(g, i);
    out.gpus.push(r.gpu);
    out.host.push(r.host);
  });
  const names = new Set<string>();
  out.gpus.forEach((g, i) => {
    if (names.has(g.name)) einval(`platform.gpus[${i}].name`, `a unique name, "${g.name}" is used twice`);
    names.add(g.name);
  });
  const pl = config.peerLinks ?? [];
  if (!Array.isArray(pl)) einval("platform.peerLinks", "an array of PeerLinkConfig");
  const seen = new Set<string>();
  pl.forEach((l: unknown, i: number) => {
    const p = `platform.peerLinks[${i}]`;
    if (!isObj(l)) einval(p, "a PeerLinkConfig object");
    keys(l, ["gpus", "preset", "bandwidthGBps", "latencyNs"], p);
    const pair = l.gpus;
    if (!Array.isArray(pair) || pair.length !== 2) einval(`${p}.gpus`, "a pair [a, b] of GPU indices");
    const [x, y] = pair as unknown[];
    const n = gpus.length;
    if (typeof x !== "number" || !Number.isInteger(x) || x < 0 || x >= n)
      einval(`${p}.gpus[0]`, `a GPU index in 0..${n - 1}, got ${String(x)}`);
    if (typeof y !== "number" || !Number.isInteger(y) || y < 0 || y >= n)
      einval(`${p}.gpus[1]`, `a GPU index in 0..${n - 1}, got ${String(y)}`);
    if (x === y) einval(`${p}.gpus`, `two distinct GPUs, got [${x}, ${y}]`);
    const a = Math.min(x, y);
    const b = Math.max(x, y);
    if (seen.has(`${a}-${b}`)) einval(`${p}.gpus`, `at most one link per pair; gpu${a}-gpu${b} is linked twice`);
    seen.add(`${a}-${b}`);
    const preset = oneOf<PeerLinkPreset>(l.preset, `${p}.preset`, ["pcie-p2p", "nvlink2", "nvlink3", "nvlink4", "nvlink5"], "pcie-p2p");
    const pv = PEER_LINK_PRESETS[preset];
    const bw = num(l.bandwidthGBps, `${p}.bandwidthGBps`, 0.001, 100000, pv.forwardGBps);
    const custom = l.bandwidthGBps !== undefined || l.latencyNs !== undefined;
    out.peers.push({
      a,
      b,
      values: {
        forwardGBps: bw,
        reverseGBps: l.bandwidthGBps === undefined ? pv.reverseGBps : bw,
        latencyNs: num(l.latencyNs, `${p}.latencyNs`, 0, MAX_LAT, pv.latencyNs),
      },
      preset: custom ? `${preset}+custom` : preset,
    });
  });
  return out;
}

/**
 * The emulated host + GPUs + links.
 *
 * Context: synchronous construction; devices run from the machine's clock.
 * @see uvm_gpu.c, reference/uvm-policies.md §5
 * @example
 * ```ts
 * const platform = Platform.create(ctx, {
 *   gpus: [{ vramMiB: 512 }, { vramMiB: 512, hostLink: { preset: "pcie5" } }],
 *   peerLinks: [{ gpus: [0, 1], preset: "nvlink3" }],
 * });
 * const gpu0 = platform.gpus[0];
 * ```
 */
export class Platform implements GpuFabric {
  /** The platform's trace bus (every device emits here). */
  readonly bus: TraceBusType<DeviceEvents>;
  /** The GPUs, by index. */
  readonly gpus: readonly GpuDevice[];
  /** Host links, by GPU index. */
  readonly hostLinks: readonly Link[];
  /** Peer links. */
  readonly peerLinks: readonly Link[];
  /** The fault injector. */
  readonly inject: FaultInjector;
  /** Number of GPUs (known before the devices are built, which consult it). */
  readonly gpuCount: number;
  private readonly ports: LinkResource[];
  private readonly peerMap = new Map<number, Link>();

  private constructor(ctx: PhysContext, r: Resolved) {
    this.gpuCount = r.gpus.length;
    this.bus = new TraceBus<DeviceEvents>();
    const onState = (l: Link): void => {
      if (this.bus.wants("didChangeLinkState")) this.bus.emit("didChangeLinkState", { link: l.name, up: l.up });
    };
    this.hostLinks = r.host.map((h, i) => new Link(ctx.clock, `gpu${i}.host`, "host", i, -1, h.values, h.preset, onState));
    this.peerLinks = r.peers.map((p) => new Link(ctx.clock, `gpu${p.a}-gpu${p.b}`, "peer", p.a, p.b, p.values, p.preset, onState));
    for (const l of this.peerLinks) this.peerMap.set(l.a * 64 + l.b, l);
    this.ports = r.gpus.map((g, i) => new LinkResource(ctx.clock, `gpu${i}.vram`, g.vramBandwidthGBps));
    const gpus: GpuDevice[] = [];
    this.gpus = gpus;
    this.inject = new FaultInjector({
      gpuCount: r.gpus.length,
      enginesOf: (g) => (this.gpus[g] as GpuDevice).config.copy.engines,
      poison: (g, pfn) => (this.gpus[g] as GpuDevice).reportEccError(pfn),
      linkByName: (name) => this.hostLinks.find((l) => l.name === name) ?? this.peerLinks.find((l) => l.name === name),
    });
    // VRAM regions are added in GPU order, so pfns are deterministic.
    r.gpus.forEach((g, i) => {
      gpus.push(new GpuDevice(i, g, ctx, this, this.bus, this.inject));
    });
  }

  /**
   * Validate `config` and build the platform.
   * @param ctx - the machine's clock, rng, page state and contents.
   * @param config - see {@link PlatformConfig}; omitted fields take their documented defaults.
   * @returns the platform, with every GPU's VRAM added to `ctx.pages`.
   * @throws HmmError EINVAL naming the first bad or unknown field (`platform.gpus[1].vramMiB`);
   *   no region, link or device has been created then.
   * Context: synchronous.
   * @see uvm_gpu.c (add_gpu, enable peer access)
   */
  static create(ctx: PhysContext, config: PlatformConfig): Platform {
    const r = resolve(config);
    return new Platform(ctx, r);
  }

  /**
   * A GPU by index.
   * @param i - index.
   * @returns the GPU.
   * @throws HmmError EINVAL for a bad index.
   */
  gpu(i: number): GpuDevice {
    const g = this.gpus[i];
    if (g === undefined) einval("i", `a GPU index in [0, ${this.gpus.length}), got ${i}`);
    return g;
  }

  /**
   * A GPU's VRAM.
   * @param gpu - GPU index.
   * @returns its VRAM.
   */
  vramOf(gpu: number): GpuDevice["vram"] {
    return this.gpu(gpu).vram;
  }

  /**
   * A GPU's host link.
   * @param gpu - GPU index.
   * @returns the link.
   */
  hostLink(gpu: number): Link {
    const l = this.hostLinks[gpu];
    if (l === undefined) einval("gpu", `a GPU index in [0, ${this.hostLinks.length}), got ${gpu}`);
    return l;
  }

  /**
   * The peer link between two GPUs.
   * @param a - one GPU.
   * @param b - the other.
   * @returns the link, or undefined.
   */
  peerLink(a: number, b: number): Link | undefined {
    return this.peerMap.get(Math.min(a, b) * 64 + Math.max(a, b));
  }

  /**
   * A GPU's VRAM port (local traffic resource).
   * @param gpu - GPU index.
   * @returns the resource.
   */
  vramPort(gpu: number): LinkResource {
    const p = this.ports[gpu];
    if (p === undefined) einval("gpu", `a GPU index in [0, ${this.ports.length}), got ${gpu}`);
    return p;
  }

  /**
   * Bytes moved per link direction (and VRAM port), for reports.
   * @returns resource name → bytes.
   */
  linkBytes(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const l of [...this.hostLinks, ...this.peerLinks]) {
      out[l.forward.name] = l.forward.bytes;
      out[l.reverse.name] = l.reverse.bytes;
    }
    for (const p of this.ports) out[p.name] = p.bytes;
    return out;
  }

  /**
   * Everything still in flight or held on any GPU, for leak guards at the end of a test.
   * @returns human-readable problems; empty when the platform is quiescent.
   */
  quiescent(): string[] {
    const out: string[] = [];
    for (const g of this.gpus) out.push(...g.quiescent());
    for (const l of [...this.hostLinks, ...this.peerLinks]) {
      if (l.forward.activeFlows + l.reverse.activeFlows > 0) out.push(`${l.name}: transfers in flight`);
    }
    for (const p of this.ports) if (p.activeFlows > 0) out.push(`${p.name}: transfers in flight`);
    return out;
  }

  /**
   * Drop every bus listener and unbind drivers. The VRAM regions stay in the machine's page
   * state (regions are never removed, as memory is never hot-unplugged here).
   * Context: synchronous; idempotent.
   */
  dispose(): void {
    this.bus.removeAllListeners();
    for (const g of this.gpus) g.unbindDriver();
  }
}
