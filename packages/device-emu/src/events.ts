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

/** Tracepoints emitted by device-emu. Each payload is readonly. */
export interface DeviceEvents {
  /**
   * A DMA or device access hit an unmapped or under-permitted IOVA; the access failed.
   * @see trace_io_page_fault in include/trace/events/iommu.h, report_iommu_fault()
   */
  io_page_fault: readonly [
    {
      readonly gpu: number;
      readonly iova: number;
      readonly write: boolean;
      readonly reason: IommuFaultReason;
      readonly source: "dma" | "compute";
    },
  ];
  /** A copy batch was queued on a channel. @see trace_dma_fence_emit */
  dma_fence_emit: readonly [
    {
      readonly gpu: number;
      readonly engine: number;
      readonly channel: number;
      readonly seqno: number;
      readonly descriptors: number;
      readonly bytes: number;
    },
  ];
  /** A copy batch completed (or failed: `error` set). @see trace_dma_fence_signaled */
  dma_fence_signaled: readonly [
    { readonly gpu: number; readonly engine: number; readonly channel: number; readonly seqno: number; readonly error: string | undefined },
  ];
  /** A replayable fault was written into the fault buffer. Mirrors UvmEventTypeGpuFault. */
  didRaiseGpuFault: readonly [
    { readonly gpu: number; readonly instance: number; readonly address: number; readonly accessType: number; readonly utlb: number },
  ];
  /** A fault could not be written: the buffer was full. Mirrors UvmEventTypeFaultBufferOverflow. */
  didOverflowFaultBuffer: readonly [{ readonly gpu: number; readonly instance: number; readonly address: number }];
  /** A batch of coalesced faults was handed to the driver. */
  didFetchFaultBatch: readonly [{ readonly gpu: number; readonly batchId: number; readonly cached: number; readonly coalesced: number }];
  /** The stalled µTLBs were told to replay. Mirrors UvmEventTypeGpuFaultReplay. */
  didReplayGpuFaults: readonly [{ readonly gpu: number; readonly resumed: number }];
  /** The fault buffer was flushed (entries discarded). */
  didFlushFaultBuffer: readonly [{ readonly gpu: number; readonly discarded: number }];
  /** A stream was killed by a fatal fault (cancel, IOMMU fault, ECC, link down). Mirrors UvmEventTypeFatalFault. */
  didRaiseFatalFault: readonly [{ readonly gpu: number; readonly instance: number; readonly address: number; readonly reason: string }];
  /** A batch of access-counter notifications was handed to the driver. */
  didNotifyAccessCounters: readonly [{ readonly gpu: number; readonly notifications: number }];
  /** An uncorrectable ECC error was detected on a VRAM page (Xid 48 on NVIDIA hardware). */
  didDetectEccError: readonly [{ readonly gpu: number; readonly pfn: number }];
  /** A link went down or came back up. */
  didChangeLinkState: readonly [{ readonly link: string; readonly up: boolean }];
  /** A kernel (set of access streams) started on a GPU. */
  didLaunchKernel: readonly [{ readonly gpu: number; readonly kernel: number; readonly streams: number }];
  /** A kernel finished (every stream completed or was killed). */
  didCompleteKernel: readonly [
    { readonly gpu: number; readonly kernel: number; readonly accesses: number; readonly error: string | undefined },
  ];
}
