/**
 * The fabric: how one GPU reaches every memory of the platform — its own VRAM port, its host link
 * (system memory, through its IOMMU) and its peer links (other GPUs' VRAM).
 *
 * Theory of operation. The platform implements {@link GpuFabric}; the copy engines and the
 * compute engine of GPU `g` ask it for the {@link LinkResource} a transfer uses, by aperture and
 * direction of the data: reading system memory moves data host→device (the host link's forward,
 * H2D, resource), writing it device→host (reverse, D2H); reading peer `k` moves data k→g, writing
 * it g→k; local VRAM traffic uses the VRAM port. Each transfer uses exactly one resource: the
 * bottleneck of its path (the model does not charge a host-link copy to VRAM bandwidth as well,
 * since VRAM is at least an order of magnitude faster than any link).
 *
 * @see NVIDIA uvm_gpu.c (peer caps, link types), uvm_channel.c (channel types by direction)
 */
import type { Link, LinkResource } from "./links";
import type { Vram } from "./vram";

/** What a GPU's engines need to know about the platform around it. */
export interface GpuFabric {
  /** Number of GPUs on the platform. */
  readonly gpuCount: number;
  /**
   * A GPU's VRAM.
   * @param gpu - GPU index.
   * @returns its VRAM.
   */
  vramOf(gpu: number): Vram;
  /**
   * The host link of a GPU.
   * @param gpu - GPU index.
   * @returns the link.
   */
  hostLink(gpu: number): Link;
  /**
   * The peer link between two GPUs.
   * @param a - one GPU.
   * @param b - the other GPU.
   * @returns the link, or undefined when they have none.
   */
  peerLink(a: number, b: number): Link | undefined;
  /**
   * The VRAM port of a GPU (local traffic).
   * @param gpu - GPU index.
   * @returns its resource.
   */
  vramPort(gpu: number): LinkResource;
}

/**
 * The resource carrying data from GPU `from` to GPU `to` over their peer link.
 * @param link - the peer link between them.
 * @param from - sending GPU.
 * @returns `link.forward` when `from` is the link's `a` end, else `link.reverse`.
 */
export function peerDirection(link: Link, from: number): LinkResource {
  return link.a === from ? link.forward : link.reverse;
}
