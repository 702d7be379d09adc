/**
 * `@hmmkit/device-emu`: the emulated GPU — VRAM, GPU MMU, compute engine with replayable faults,
 * access counters, DMA copy engines, IOMMU, host and peer links, fault injection — built on core's
 * `sim` and `phys` only (hardware knows nothing of the kernel's mm).
 * @packageDocumentation
 */
export { ACCESS_COUNTER_GRANULARITIES, type AccessCounterBatch, type AccessCounterConfig, AccessCounters } from "./access-counters";
export {
  ACCESS_ATOMIC,
  ACCESS_READ,
  ACCESS_WRITE,
  type AccessStream,
  type ComputeConfig,
  ComputeEngine,
  type KernelHandle,
  type KernelStats,
} from "./compute";
export {
  CopyBatch,
  type CopyEngineConfig,
  type CopyEngineStats,
  CopyEngines,
  type CopyInjectionHook,
  DmaError,
  type SubmitOptions,
} from "./copy-engine";
export type {
  AccessCounterEvent,
  DeviceEvents,
  DmaFenceEmitEvent,
  DmaFenceSignaledEvent,
  EccErrorEvent,
  FatalFaultEvent,
  FaultBatchEvent,
  FaultFlushEvent,
  FaultOverflowEvent,
  FaultReplayEvent,
  GpuFaultEvent,
  IommuFaultReason,
  IoPageFaultEvent,
  KernelCompleteEvent,
  KernelLaunchEvent,
  LinkStateEvent,
} from "./events";
export { type GpuFabric, peerDirection } from "./fabric";
export {
  FAULT_ACCESS_ATOMIC,
  FAULT_ACCESS_READ,
  FAULT_ACCESS_WRITE,
  FAULT_TYPE_ATOMIC,
  FAULT_TYPE_INVALID_PTE,
  FAULT_TYPE_READ,
  FAULT_TYPE_WRITE,
  type FaultBatch,
  FaultBuffer,
  type FaultBufferConfig,
  type FaultBufferHost,
  type FlushMode,
  type ReplayPolicy,
} from "./fault-buffer";
export { GpuDevice, type GpuDriverOps, type GpuResolvedConfig } from "./gpu";
export {
  APERTURE_SYS,
  APERTURE_VID,
  aperturePeer,
  GPU_BLOCK_SIZE,
  GPU_PERM_ATOMIC,
  GPU_PERM_READ,
  GPU_PERM_RWA,
  GPU_PERM_WRITE,
  GPU_VA_LIMIT,
  type GpuPageSize,
  type GpuPte,
  GpuVaSpace,
  PTE_VALID,
} from "./gpu-mmu";
export { type DmaErrorOptions, FaultInjector, type InjectionStats, type InjectionTarget } from "./inject";
export {
  DMA_BIDIRECTIONAL,
  DMA_FROM_DEVICE,
  DMA_TO_DEVICE,
  type DmaDirection,
  IOMMU_READ,
  IOMMU_WRITE,
  IOVA_BASE,
  Iommu,
} from "./iommu";
export {
  type Flow,
  HOST_LINK_PRESETS,
  type HostLinkPreset,
  Link,
  type LinkKind,
  type LinkPresetValues,
  LinkResource,
  PEER_LINK_PRESETS,
  type PeerLinkPreset,
} from "./links";
export {
  type AccessCounterSettings,
  type FaultBufferSettings,
  type GpuConfig,
  type HostLinkConfig,
  type PeerLinkConfig,
  Platform,
  type PlatformConfig,
} from "./platform";
export { Vram } from "./vram";
