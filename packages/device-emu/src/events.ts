/**
 * Tracepoints of the emulated devices, carried on a core {@link TraceBus}.
 *
 * Theory of operation: every device of a {@link Platform} emits on the platform's one bus, after
 * its state is consistent, with readonly payloads. Names follow the kernel's tracepoints where one
 * exists (`io_page_fault` from include/trace/events/iommu.h, `dma_fence_emit` and
 * `dma_fence_signaled` from include/trace/events/dma_fence.h); hardware events without a kernel
 * tracepoint are `did<Verb><Subject>` and name the NVIDIA UVM tools event they mirror
 * (`UvmEventTypeGpuFault`, `UvmEventTypeGpuFaultReplay`, `UvmEventTypeFaultBufferOverflow`,
 * `UvmEventTypeFatalFault` in uvm_types.h). Hot paths test `bus.wants(name)` before building a
 * payload, so an unobserved tracepoint costs one property read. Events are observations only: the
 * driver's obligations (service faults, handle ECC errors) are {@link GpuDriverOps} callbacks.
 *
 * @see include/linux/tracepoint.h, include/trace/events/iommu.h, include/trace/events/dma_fence.h
 */

/** Why the IOMMU refused a device access. */
export type IommuFaultReason = "unmapped" | "readonly" | "writeonly";

/** Payload of `io_page_fault`. */
export interface IoPageFaultEvent {
  /** GPU index. */
  readonly gpu: number;
  /** The I/O virtual address accessed. */
  readonly iova: number;
  /** Whether the access was a write. */
  readonly write: boolean;
  /** Why it was refused. */
  readonly reason: IommuFaultReason;
  /** Who accessed: a copy engine or the compute engine. */
  readonly source: "dma" | "compute";
}

/** Payload of `dma_fence_emit`. */
export interface DmaFenceEmitEvent {
  /** GPU index. */
  readonly gpu: number;
  /** Copy engine index. */
  readonly engine: number;
  /** Channel index within the engine. */
  readonly channel: number;
  /** The fence's sequence number on its channel. */
  readonly seqno: number;
  /** Descriptors in the batch. */
  readonly descriptors: number;
  /** Bytes the batch moves. */
  readonly bytes: number;
}

/** Payload of `dma_fence_signaled`. */
export interface DmaFenceSignaledEvent {
  /** GPU index. */
  readonly gpu: number;
  /** Copy engine index. */
  readonly engine: number;
  /** Channel index. */
  readonly channel: number;
  /** The fence's sequence number. */
  readonly seqno: number;
  /** The failure, if the batch failed (its errno name and reason). */
  readonly error: string | undefined;
}

/** Payload of `didRaiseGpuFault`. */
export interface GpuFaultEvent {
  /** GPU index. */
  readonly gpu: number;
  /** Fault instance number (per GPU, increasing). */
  readonly instance: number;
  /** Faulting GPU virtual address. */
  readonly address: number;
  /** Access type (the UVM fault access type code). */
  readonly accessType: number;
  /** µTLB that raised it. */
  readonly utlb: number;
}

/** Payload of `didOverflowFaultBuffer`. */
export interface FaultOverflowEvent {
  /** GPU index. */
  readonly gpu: number;
  /** Fault instance that could not be written. */
  readonly instance: number;
  /** Its GPU virtual address. */
  readonly address: number;
}

/** Payload of `didFetchFaultBatch`. */
export interface FaultBatchEvent {
  /** GPU index. */
  readonly gpu: number;
  /** Batch number. */
  readonly batchId: number;
  /** Entries fetched from the buffer. */
  readonly cached: number;
  /** Entries merged into others. */
  readonly coalesced: number;
}

/** Payload of `didReplayGpuFaults`. */
export interface FaultReplayEvent {
  /** GPU index. */
  readonly gpu: number;
  /** Streams resumed. */
  readonly resumed: number;
}

/** Payload of `didFlushFaultBuffer`. */
export interface FaultFlushEvent {
  /** GPU index. */
  readonly gpu: number;
  /** Entries discarded. */
  readonly discarded: number;
}

/** Payload of `didRaiseFatalFault`. */
export interface FatalFaultEvent {
  /** GPU index. */
  readonly gpu: number;
  /** Fault instance. */
  readonly instance: number;
  /** GPU virtual address. */
  readonly address: number;
  /** Why the stream was killed. */
  readonly reason: string;
}

/** Payload of `didNotifyAccessCounters`. */
export interface AccessCounterEvent {
  /** GPU index. */
  readonly gpu: number;
  /** Notifications in the batch. */
  readonly notifications: number;
}

/** Payload of `didDetectEccError`. */
export interface EccErrorEvent {
  /** GPU index. */
  readonly gpu: number;
  /** The poisoned VRAM pfn. */
  readonly pfn: number;
}

/** Payload of `didChangeLinkState`. */
export interface LinkStateEvent {
  /** Link name. */
  readonly link: string;
  /** Whether it is up now. */
  readonly up: boolean;
}

/** Payload of `didLaunchKernel`. */
export interface KernelLaunchEvent {
  /** GPU index. */
  readonly gpu: number;
  /** Kernel id. */
  readonly kernel: number;
  /** Number of access streams. */
  readonly streams: number;
}

/** Payload of `didCompleteKernel`. */
export interface KernelCompleteEvent {
  /** GPU index. */
  readonly gpu: number;
  /** Kernel id. */
  readonly kernel: number;
  /** Accesses executed. */
  readonly accesses: number;
  /** Why it failed, if a stream was killed. */
  readonly error: string | undefined;
}

/** Tracepoints emitted by device-emu. Each payload is readonly. */
export interface DeviceEvents {
  /**
   * A DMA or device access hit an unmapped or under-permitted IOVA; the access failed.
   * @see trace_io_page_fault in include/trace/events/iommu.h, report_iommu_fault()
   */
  io_page_fault: readonly [IoPageFaultEvent];
  /** A copy batch was queued on a channel. @see trace_dma_fence_emit */
  dma_fence_emit: readonly [DmaFenceEmitEvent];
  /** A copy batch completed (or failed: `error` set). @see trace_dma_fence_signaled */
  dma_fence_signaled: readonly [DmaFenceSignaledEvent];
  /** A replayable fault was written into the fault buffer. Mirrors UvmEventTypeGpuFault. */
  didRaiseGpuFault: readonly [GpuFaultEvent];
  /** A fault could not be written: the buffer was full. Mirrors UvmEventTypeFaultBufferOverflow. */
  didOverflowFaultBuffer: readonly [FaultOverflowEvent];
  /** A batch of coalesced faults was handed to the driver. */
  didFetchFaultBatch: readonly [FaultBatchEvent];
  /** The stalled µTLBs were told to replay. Mirrors UvmEventTypeGpuFaultReplay. */
  didReplayGpuFaults: readonly [FaultReplayEvent];
  /** The fault buffer was flushed (entries discarded). */
  didFlushFaultBuffer: readonly [FaultFlushEvent];
  /** A stream was killed by a fatal fault (cancel, IOMMU fault, ECC, link down). Mirrors UvmEventTypeFatalFault. */
  didRaiseFatalFault: readonly [FatalFaultEvent];
  /** A batch of access-counter notifications was handed to the driver. */
  didNotifyAccessCounters: readonly [AccessCounterEvent];
  /** An uncorrectable ECC error was detected on a VRAM page (Xid 48 on NVIDIA hardware). */
  didDetectEccError: readonly [EccErrorEvent];
  /** A link went down or came back up. */
  didChangeLinkState: readonly [LinkStateEvent];
  /** A kernel (set of access streams) started on a GPU. */
  didLaunchKernel: readonly [KernelLaunchEvent];
  /** A kernel finished (every stream completed or was killed). */
  didCompleteKernel: readonly [KernelCompleteEvent];
}
