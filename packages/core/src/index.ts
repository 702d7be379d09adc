/**
 * `@hmmkit/core`: the simulation kernel, physical memory, address spaces and faults, dev_pagemap,
 * migrate_vma, HMM mirroring.
 * @packageDocumentation
 */
export { type MachineConfig, type MachineConfigResolved, type ThpMode, validateMachineConfig } from "./config";
export {
  HMM_PFN,
  HMM_RANGE_DEFAULT_TIMEOUT,
  type HmmRange,
  hmmPfnToMapOrder,
  hmmPfnToPfn,
  hmmRangeFault,
} from "./hmm/hmm";
export { Machine } from "./machine";
export {
  DevPagemap,
  type DevPagemapInit,
  type DevPagemapOps,
  MEMORY_DEVICE_COHERENT,
  MEMORY_DEVICE_PRIVATE,
  Memremap,
  type PgmapRange,
  type PgmapSize,
  VM_FAULT,
  type VmFault,
} from "./memremap/memremap";
export {
  type GetNewFolio,
  MIGRATE_REASON,
  type MigrateReason,
  type MigrateResult,
  Migration,
  NR_MAX_MIGRATE_PAGES_RETRY,
  type PutNewFolio,
  removeMigrationPtes,
  tryToMigrate,
} from "./migrate/migrate";
export {
  MIGRATE_PFN,
  MIGRATE_PFN_SHIFT,
  MIGRATE_VMA_SELECT,
  MigrateDevice,
  type MigrateVma,
  migratePfn,
  migratePfnToPfn,
  mpfnFlags,
} from "./migrate/migrate-device";
export { Cma, type CmaArea, type ContigResult } from "./mm/cma";
export { COMPACT, COMPACT_CLUSTER_MAX, Compaction, type CompactResult, type CompactStatus, PAGEBLOCK_NR_PAGES } from "./mm/compaction";
export { type DeviceExclusiveResult, makeDeviceExclusive } from "./mm/device-exclusive";
export { FAULT_FALLBACK, FaultHandler } from "./mm/fault";
export { Forker } from "./mm/fork";
export { HugeMemory } from "./mm/huge-memory";
export { Hugetlb } from "./mm/hugetlb";
export { Khugepaged } from "./mm/khugepaged";
export { LRU_ACTIVE_ANON, LRU_INACTIVE_ANON, Lru, LruVec } from "./mm/lru";
export { MMAP_BASE, MMAP_MIN_ADDR, Mm, TASK_SIZE } from "./mm/mm";
export { MmCore, type SwapIn, Task } from "./mm/mm-core";
export {
  MMU_NOTIFY,
  MmuIntervalNotifier,
  type MmuIntervalNotifierOps,
  type MmuNotifierRange,
  MmuNotifierState,
  mmuIntervalCheckRetry,
  mmuIntervalNotifierInsert,
  mmuIntervalNotifierRemove,
  mmuIntervalReadBegin,
  mmuIntervalReadRetry,
  mmuIntervalSetSeq,
  mmuNotifierInvalidateRangeEnd,
  mmuNotifierInvalidateRangeStart,
  mmuNotifyRange,
} from "./mm/mmu-notifier";
export { PageRefs, type ZoneDeviceFree } from "./mm/page-ref";
export {
  entryBits,
  entryPayload,
  isHuge,
  isPresent,
  isWrite,
  mkPte,
  mkSwpEntry,
  PageTable,
  PMD_SIZE,
  PTE,
  PTRS_PER_PTE,
  PUD_SIZE,
  SWP,
  swpType,
  withBits,
} from "./mm/page-table";
export { AnonVma, Rmap, ShmemObject } from "./mm/rmap";
export { ShmemFile } from "./mm/shmem";
export { SWAPOUT, Swap, type SwapoutResult } from "./mm/swap";
export { type FrontswapOps, SWAP_MAP_MAX, SWAP_SLOTS_PER_MIB, SwapInfo, type SwapSlotOwner } from "./mm/swapfile";
export { ThpReservation, ThpReservations } from "./mm/thp-reserve";
export {
  MADV_COLLAPSE,
  MADV_DOFORK,
  MADV_DONTFORK,
  MADV_DONTNEED,
  MADV_FREE,
  MADV_HUGEPAGE,
  MADV_NOHUGEPAGE,
  MAP_ANONYMOUS,
  MAP_FIXED,
  MAP_HUGETLB,
  MAP_PRIVATE,
  MAP_SHARED,
  type MmapFile,
  MREMAP_DONTUNMAP,
  MREMAP_FIXED,
  MREMAP_MAYMOVE,
  PROT_EXEC,
  PROT_NONE,
  PROT_READ,
  PROT_WRITE,
  protToVm,
  VM,
  Vma,
} from "./mm/vma";
export {
  DEF_PRIORITY,
  KSWAPD_BATCH_NS,
  MAX_RECLAIM_RETRIES,
  PAGE_ALLOC_COSTLY_ORDER,
  SWAP_CLUSTER_MAX,
  Vmscan,
} from "./mm/vmscan";
export {
  type AllocHooks,
  Contents,
  GFP,
  GUP_PIN_COUNTING_BIAS,
  HPAGE_PMD_NR,
  HPAGE_PMD_ORDER,
  HPAGE_PMD_SIZE,
  MAX_PAGE_ORDER,
  PAGE_METADATA_BYTES,
  PAGE_SHIFT,
  PAGE_SIZE,
  PageAllocator,
  PageState,
  PG,
  type PhysContext,
  type PhysRegion,
  type RegionKind,
  type Watermarks,
  Zone,
} from "./phys/index";
export {
  FOLL,
  generalAddPage,
  generalCreateSubsys,
  generalDelPage,
  generalDestroySubsys,
  generalFindPage,
  Pinpage,
  type PinpageInfo,
  type PinpageOps,
  PinpageSystem,
} from "./pinpage/pinpage";
export type { BugEvent, HmmRangeFaultEvent, MigratePagesEvent, PageAllocEvent, PageFaultEvent, SplitHugePageEvent } from "./sim/events";
export {
  BugError,
  bugOn,
  type CoreEvents,
  createToken,
  ERRNO,
  type Errno,
  einval,
  errnoName,
  Fence,
  HmmError,
  Rng,
  SimClock,
  type SimEvent,
  type Token,
  type TokenBrand,
  TraceBus,
  type VmCounters,
  VmStat,
  type VmStatName,
  zeroCounters,
} from "./sim/index";
export { TOKENS } from "./tokens";
