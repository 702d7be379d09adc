/**
 * Links: the host link of each GPU (PCIe), peer links between GPUs (PCIe P2P or NVLink-class) and
 * each GPU's VRAM port, as bandwidth resources shared fairly by the transfers that use them.
 *
 * Theory of operation. A {@link LinkResource} is one direction of one link (or a VRAM port). It
 * carries a set of active {@link Flow}s and shares its bandwidth equally among them (processor
 * sharing, the fluid model of a fair arbiter): with n flows each progresses at `bandwidth / n`.
 * Whenever a flow joins or leaves, every flow's remaining byte count is advanced to the current
 * virtual time and the single completion event of the resource is rescheduled for the flow that
 * will finish first. Completion times are rounded up to whole nanoseconds; a flow whose
 * remaining bytes reach zero (within 1e-6 byte) completes, in join order, so the event order is
 * deterministic. A lone 1 GiB flow on a 25 GB/s resource therefore takes ⌈2^30 / 25⌉ ns, and two
 * flows started together each take twice as long. Two directions of one link are separate
 * resources: a host link's H2D and D2H transfers do not slow each other (reference §5.1 advises
 * modelling "the two directions as separate, contending resources").
 *
 * Latency is not part of a resource: the caller (copy engine, compute engine) waits the link's
 * latency on the clock before adding the flow, so a transfer of `b` bytes alone takes
 * `latency + b / bandwidth`, the linear model whose constants are fitted below.
 *
 * Units: 1 GB/s is exactly 1 byte per ns, so bandwidths are stored in bytes/ns unchanged.
 *
 * A link can be taken down ({@link Link.setUp}); its in-flight flows then fail with EIO and new
 * transfers over it fail at once. Nothing here reads wall time.
 *
 * @see NVIDIA open-gpu-kernel-modules uvm_gpu.h (UVM_GPU_LINK_PCIE, UVM_GPU_LINK_NVLINK_*,
 *      link_rate_mbyte_per_s), drivers/pci/p2pdma.c (PCIe peer-to-peer)
 */
import type { SimClock, SimEvent } from "@hmmkit/core/sim";
import { HmmError } from "@hmmkit/core/sim";

/** Host-link presets (PCIe x16 generations). */
export type HostLinkPreset = "pcie3" | "pcie4" | "pcie5";
/** Peer-link presets. */
export type PeerLinkPreset = "pcie-p2p" | "nvlink2" | "nvlink3" | "nvlink4" | "nvlink5";

/** Bandwidth (per direction) and latency of a link preset. */
export interface LinkPresetValues {
  /** Effective bandwidth in the forward direction (host→device for a host link), GB/s. */
  readonly forwardGBps: number;
  /** Effective bandwidth in the reverse direction (device→host for a host link), GB/s. */
  readonly reverseGBps: number;
  /** Fixed per-transfer latency in ns. */
  readonly latencyNs: number;
}

/**
 * UVMSmart's modelled time for one 4 KiB PCIe transfer on its 16 GB/s-nominal curve
 * (`gmmu_t::calculate_transfer_time`, speed = 2a/π·atan(b·size_KB), a = 12, b = 0.07292; the
 * shipped logs show 1.758947 µs for 4096 B). Reference §2.4. The 32 and 64 GB/s curves (a = 24,
 * 48) scale it by 1/2 and 1/4.
 */
const UVMSMART_4K_NS_PCIE3 = 1758.947;

/** Latency fitted so that latency + 4 KiB / bandwidth equals UVMSmart's 4 KiB transfer time. */
function fitLatency(uvmSmart4kNs: number, gbps: number): number {
  return Math.round(uvmSmart4kNs - 4096 / gbps);
}

/**
 * Host-link presets, per direction, with their sources (reference §5.1 and §2.4):
 *
 * - `pcie3` — PCIe 3.0 x16 (15.75 GB/s theoretical): 12.2 GB/s H2D, 12.9 GB/s D2H measured with
 *   pinned memory on P100 (`mpicbg-scicomp/gearshifft#82`). Latency 1 423 ns, fitted to
 *   UVMSmart's 4 KiB transfer time (1.759 µs) on its 16 GB/s curve.
 * - `pcie4` — PCIe 4.0 x16 (31.5 GB/s theoretical): 25.1 GB/s each way, copy-engine measurement on
 *   A100 (`NVIDIA/nvbandwidth#15`, `#42`; NCCL models 24 GB/s, `NVIDIA/nccl#1206`). Latency 716 ns,
 *   fitted to UVMSmart's 32 GB/s curve (0.879 µs per 4 KiB).
 * - `pcie5` — PCIe 5.0 x16 (63 GB/s theoretical): ~35 GB/s H2D, ~52.8 GB/s D2H (SM copy on an
 *   H100 cluster, `NVIDIA/nvbandwidth#24`). Latency 323 ns, fitted to UVMSmart's 64 GB/s curve
 *   (0.440 µs per 4 KiB) with the H2D bandwidth.
 *
 * @see reference/uvm-policies.md §5.1 (bandwidths), §2.4 (UVMSmart transfer model)
 */
export const HOST_LINK_PRESETS: Readonly<Record<HostLinkPreset, LinkPresetValues>> = {
  pcie3: { forwardGBps: 12.2, reverseGBps: 12.9, latencyNs: fitLatency(UVMSMART_4K_NS_PCIE3, 12.2) },
  pcie4: { forwardGBps: 25.1, reverseGBps: 25.1, latencyNs: fitLatency(UVMSMART_4K_NS_PCIE3 / 2, 25.1) },
  pcie5: { forwardGBps: 35, reverseGBps: 52.8, latencyNs: fitLatency(UVMSMART_4K_NS_PCIE3 / 4, 35) },
};

/** P2P write latency over NVLink measured by p2pBandwidthLatencyTest (~1.8–2.3 µs; `NVIDIA/cuda-samples#230`). */
const NVLINK_P2P_LATENCY_NS = 1850;

/**
 * Peer-link presets (same bandwidth both ways), with their sources (reference §5.1):
 *
 * - `pcie-p2p` — GPU↔GPU over PCIe 4.0 without NVLink: 24 GB/s (22–26 GB/s measured on A6000,
 *   `NVIDIA/nvbandwidth#50`); latency as the `pcie4` host link (716 ns).
 * - `nvlink2` — V100, 6 links × 25 GB/s = 150 GB/s per direction (theoretical; Alibaba ACK topology
 *   doc). `nvlink3` — A100, 12 links = 300 GB/s per direction (theoretical). `nvlink4` — H100,
 *   376 GB/s unidirectional measured with p2pBandwidthLatencyTest (`NVIDIA/nccl#1264`; 450
 *   theoretical). `nvlink5` — B200, 18 × 53.1 GB/s ≈ 900 GB/s per direction (theoretical; NVIDIA
 *   health-check doc).
 * - NVLink latency: 1 850 ns, the P2P-enabled write latency p2pBandwidthLatencyTest reports over
 *   NVLink (1.8–2.3 µs, `NVIDIA/cuda-samples#230`). The reference gives no NVLink latency itself.
 *
 * @see reference/uvm-policies.md §5.1
 */
export const PEER_LINK_PRESETS: Readonly<Record<PeerLinkPreset, LinkPresetValues>> = {
  "pcie-p2p": { forwardGBps: 24, reverseGBps: 24, latencyNs: HOST_LINK_PRESETS.pcie4.latencyNs },
  nvlink2: { forwardGBps: 150, reverseGBps: 150, latencyNs: NVLINK_P2P_LATENCY_NS },
  nvlink3: { forwardGBps: 300, reverseGBps: 300, latencyNs: NVLINK_P2P_LATENCY_NS },
  nvlink4: { forwardGBps: 376, reverseGBps: 376, latencyNs: NVLINK_P2P_LATENCY_NS },
  nvlink5: { forwardGBps: 900, reverseGBps: 900, latencyNs: NVLINK_P2P_LATENCY_NS },
};

/**
 * One transfer in progress on a {@link LinkResource}.
 *
 * Context: created by {@link LinkResource.addFlow}; owned by the resource until `done` is called.
 */
export interface Flow {
  /** Bytes still to move. */
  remaining: number;
  /** Bytes the flow was created with. */
  readonly total: number;
  /** Called once: without an error on completion, with an EIO HmmError if the link went down. */
  readonly done: (error: HmmError | undefined) => void;
}

const EPS_BYTES = 1e-6;

/**
 * One direction of a link (or a VRAM port): a bandwidth shared fairly by its active flows.
 *
 * Context: synchronous; driven by the machine's {@link SimClock}.
 * @see the fair arbitration of a PCIe/NVLink port; UVMSmart's per-direction PCIe stage queues
 */
export class LinkResource {
  /** Bytes moved to completion (plus the moved part of aborted flows). */
  bytes = 0;
  /** Virtual ns during which at least one flow was active. */
  busyNs = 0;
  /** Flows completed successfully. */
  flowsCompleted = 0;
  /** Flows aborted because the link went down. */
  flowsFailed = 0;
  private flows: Flow[] = [];
  private last = 0;
  private busySince = -1;
  private ev: SimEvent | null = null;

  /**
   * @param clock - the machine's clock.
   * @param name - e.g. `"gpu0.h2d"`, `"gpu0->gpu1"`, `"gpu0.vram"`.
   * @param bandwidth - bytes per ns (= GB/s), > 0.
   */
  constructor(
    private readonly clock: SimClock,
    readonly name: string,
    readonly bandwidth: number,
  ) {}

  /** Number of flows currently sharing the resource. */
  get activeFlows(): number {
    return this.flows.length;
  }

  /**
   * Start a transfer of `bytes` now; `done` runs from the clock's event loop when it completes.
   * @param bytes - > 0.
   * @param done - completion callback (error set when the link went down).
   * @returns the flow.
   * @throws BugError never; a zero-byte flow completes at the next instant.
   * Context: synchronous; the caller has already waited the link's latency.
   */
  addFlow(bytes: number, done: (error: HmmError | undefined) => void): Flow {
    const now = this.clock.now;
    this.advance(now);
    const f: Flow = { remaining: bytes, total: bytes, done };
    if (this.flows.length === 0) this.busySince = now;
    this.flows.push(f);
    this.reschedule(now);
    return f;
  }

  /**
   * Fail every active flow with EIO (the link went down).
   * @param why - message for the error.
   * Context: synchronous; callbacks run before this returns.
   */
  abortAll(why: string): void {
    const now = this.clock.now;
    this.advance(now);
    const fl = this.flows;
    this.flows = [];
    if (this.ev !== null) {
      this.clock.cancel(this.ev);
      this.ev = null;
    }
    this.closeBusy(now);
    for (const f of fl) {
      this.bytes += f.total - Math.max(0, f.remaining);
      this.flowsFailed++;
      f.done(new HmmError("EIO", `${this.name}: ${why}`, this.name));
    }
  }

  /**
   * Fraction of `elapsedNs` during which the resource was busy.
   * @param elapsedNs - observation window (usually the clock's now).
   * @returns busy / elapsed in [0, 1]; 0 for an empty window.
   */
  utilisation(elapsedNs: number): number {
    const busy = this.busyNs + (this.busySince >= 0 ? this.clock.now - this.busySince : 0);
    return elapsedNs > 0 ? Math.min(1, busy / elapsedNs) : 0;
  }

  private advance(now: number): void {
    const n = this.flows.length;
    const dt = now - this.last;
    this.last = now;
    if (n === 0 || dt <= 0) return;
    const share = (dt * this.bandwidth) / n;
    for (const f of this.flows) f.remaining -= share;
  }

  private closeBusy(now: number): void {
    if (this.busySince >= 0) {
      this.busyNs += now - this.busySince;
      this.busySince = -1;
    }
  }

  private reschedule(now: number): void {
    if (this.ev !== null) {
      this.clock.cancel(this.ev);
      this.ev = null;
    }
    const n = this.flows.length;
    if (n === 0) return;
    let min = Number.POSITIVE_INFINITY;
    for (const f of this.flows) if (f.remaining < min) min = f.remaining;
    // At least 1 ns unless a flow is already done, so float residue can never spin at one instant.
    const dt = min <= EPS_BYTES ? 0 : Math.max(1, Math.ceil((min * n) / this.bandwidth - 1e-9));
    this.ev = this.clock.at(now + dt, () => this.onEvent());
  }

  private onEvent(): void {
    this.ev = null;
    const now = this.clock.now;
    this.advance(now);
    const finished: Flow[] = [];
    const keep: Flow[] = [];
    for (const f of this.flows) (f.remaining <= EPS_BYTES ? finished : keep).push(f);
    this.flows = keep;
    if (keep.length === 0) this.closeBusy(now);
    this.reschedule(now);
    for (const f of finished) {
      this.bytes += f.total;
      this.flowsCompleted++;
      f.done(undefined);
    }
  }
}

/** What a link connects. */
export type LinkKind = "host" | "peer";

/**
 * A link: two directions ({@link LinkResource}s) and a latency, which can go down.
 *
 * For a host link, `forward` is host→device (H2D) and `reverse` device→host (D2H). For a peer
 * link between GPUs `a` and `b` (a < b), `forward` is a→b and `reverse` b→a.
 *
 * Context: synchronous.
 * @see uvm_gpu.h (uvm_gpu_link_type_t, peer caps), drivers/pci/p2pdma.c
 */
export class Link {
  /** a→b (or H2D) direction. */
  readonly forward: LinkResource;
  /** b→a (or D2H) direction. */
  readonly reverse: LinkResource;
  private isUp = true;

  /**
   * @param clock - the machine's clock.
   * @param name - `"gpu0.host"` or `"gpu0-gpu1"`.
   * @param kind - host or peer.
   * @param a - GPU index (host link) or lower GPU index (peer link).
   * @param b - -1 for the host, else the higher GPU index.
   * @param values - bandwidths and latency.
   * @param preset - the preset name, or `"custom"`.
   * @param onStateChange - called after the link goes up or down (the platform emits the event).
   */
  constructor(
    clock: SimClock,
    readonly name: string,
    readonly kind: LinkKind,
    readonly a: number,
    readonly b: number,
    readonly values: LinkPresetValues,
    readonly preset: string,
    private readonly onStateChange: (link: Link) => void,
  ) {
    const fwd = kind === "host" ? `gpu${a}.h2d` : `gpu${a}->gpu${b}`;
    const rev = kind === "host" ? `gpu${a}.d2h` : `gpu${b}->gpu${a}`;
    this.forward = new LinkResource(clock, fwd, values.forwardGBps);
    this.reverse = new LinkResource(clock, rev, values.reverseGBps);
  }

  /** Fixed per-transfer latency in ns. */
  get latencyNs(): number {
    return this.values.latencyNs;
  }

  /** Whether the link is up. */
  get up(): boolean {
    return this.isUp;
  }

  /**
   * Take the link down or bring it back up. Going down fails every in-flight transfer with EIO.
   * @param up - the new state; a no-op when unchanged.
   * Context: synchronous; flows' callbacks run before this returns.
   * @see inject.ts (link-down injection), pcie_aer / NVLink error recovery
   */
  setUp(up: boolean): void {
    if (up === this.isUp) return;
    this.isUp = up;
    if (!up) {
      this.forward.abortAll("link down");
      this.reverse.abortAll("link down");
    }
    this.onStateChange(this);
  }
}
