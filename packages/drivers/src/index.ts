/**
 * @hmmkit/drivers: public API of the drivers package (dmirror, nouveau-like, uvmem-like, zswap-like).
 *
 * @packageDocumentation
 */

export {
  DEVMEM_CHUNK_PAGES,
  DevmemFreeList,
  DMIRROR_FAULT_WINDOW,
  DMIRROR_NDEVICES,
  DmirrorChunk,
  DmirrorDevice,
  DmirrorFile,
  DmirrorModule,
  type DmirrorOptions,
  DmirrorPt,
  DPT_XA_TAG_ATOMIC,
  DPT_XA_TAG_READ,
  DPT_XA_TAG_WRITE,
} from "./dmirror/test-hmm";
export {
  HMM_DMIRROR_CHECK_EXCLUSIVE,
  HMM_DMIRROR_EXCLUSIVE,
  HMM_DMIRROR_FLAG_FAIL_ALLOC,
  HMM_DMIRROR_FLAGS,
  HMM_DMIRROR_MEMORY_DEVICE_COHERENT,
  HMM_DMIRROR_MEMORY_DEVICE_PRIVATE,
  HMM_DMIRROR_MIGRATE_TO_DEV,
  HMM_DMIRROR_MIGRATE_TO_SYS,
  HMM_DMIRROR_PROT_DEV_COHERENT_LOCAL,
  HMM_DMIRROR_PROT_DEV_COHERENT_REMOTE,
  HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL,
  HMM_DMIRROR_PROT_DEV_PRIVATE_REMOTE,
  HMM_DMIRROR_PROT_ERROR,
  HMM_DMIRROR_PROT_NONE,
  HMM_DMIRROR_PROT_PMD,
  HMM_DMIRROR_PROT_PUD,
  HMM_DMIRROR_PROT_READ,
  HMM_DMIRROR_PROT_WRITE,
  HMM_DMIRROR_PROT_ZERO,
  HMM_DMIRROR_READ,
  HMM_DMIRROR_RELEASE,
  HMM_DMIRROR_SNAPSHOT,
  HMM_DMIRROR_WRITE,
  type HmmDmirrorCmd,
} from "./dmirror/test-hmm-uapi";

/** Version of @hmmkit/drivers, kept equal to the `version` field of its package.json. */
export const VERSION = "0.1.0";

// nouveau-like GPU driver, migration policies (issue 5)
export {
  type DmemHost,
  MigrationBatch,
  type MigrationCause,
  NOUVEAU_DMEM_CHUNK_PAGES,
  NOUVEAU_DMEM_SECTION_CHUNKS,
  NOUVEAU_MIGRATE_WINDOW,
  NouveauDmem,
  type NouveauStats,
  WindowJob,
  type WindowResult,
  zeroNouveauStats,
} from "./nouveau/nouveau-dmem";
export { NouveauModule, type NouveauOptions, type NouveauOwner } from "./nouveau/nouveau-drm";
export {
  type EvictVramEvent,
  type FaultBatchServicedEvent,
  type MigrateToRamEvent,
  type MigrateToVramEvent,
  NouveauDriver,
  type NouveauEvents,
  type NouveauModuleHost,
  NouveauSvmm,
  type ThrashingDetectedEvent,
} from "./nouveau/nouveau-svm";
export { type AccessCounterPolicyOptions, accessCounterPolicy } from "./nouveau/policies/access-counters";
export { lruEvictionPolicy, treeEvictionPolicy } from "./nouveau/policies/eviction";
export { firstTouchPolicy } from "./nouveau/policies/first-touch";
export { type ThrashPinOptions, type ThrashPinPolicy, thrashPinPolicy } from "./nouveau/policies/thrash-pin";
export { type TreePrefetchOptions, treePrefetchPolicy } from "./nouveau/policies/tree-prefetch";
export {
  composePolicies,
  type EvictionCandidates,
  type EvictionChoice,
  type MigrationPolicy,
  POLICY_MIGRATE,
  POLICY_PIN,
  POLICY_REMOTE,
  type PolicyAccessCounterBatch,
  type PolicyContext,
  type PolicyDecision,
  type PolicyFactory,
  type PolicyFaultBatch,
  type PrefetchRequest,
  RESIDENCY_CPU,
  RESIDENCY_NONE,
  type ThrashingEvent,
  type ThrashingParams,
  UVM_DEFAULTS,
} from "./nouveau/policy";
export { DEFAULT_THRASHING, resolveThrashing, THRASH_PROC_CPU, ThrashingTracker } from "./nouveau/thrashing";
export {
  H_AUTHORITY,
  H_P2,
  H_P3,
  H_PAGE_IN_SHARED,
  H_PARAMETER,
  H_STATE,
  H_SUCCESS,
  H_SVM,
  H_UNSUPPORTED,
  KVMPPC_GFN_FLAG_MASK,
  KVMPPC_GFN_MEM_PFN,
  KVMPPC_GFN_SECURE,
  KVMPPC_GFN_SHARED,
  KVMPPC_GFN_UVMEM_PFN,
  KVMPPC_SECURE_INIT_ABORT,
  KVMPPC_SECURE_INIT_DONE,
  KVMPPC_SECURE_INIT_START,
  Kvm,
  type KvmMemorySlot,
  type KvmOptions,
  KvmppcUvmem,
  type KvmppcUvmemOptions,
  KvmppcUvmemSlot,
  type KvmppcUvmemStats,
} from "./uvmem/book3s-hv-uvmem";
export { Mutex } from "./uvmem/mutex";
export { SvmGuest } from "./uvmem/svm";
export {
  U_P2,
  U_P3,
  U_PARAMETER,
  U_PERMISSION,
  U_SUCCESS,
  Ultravisor,
  type UltravisorEvents,
  type UltravisorOptions,
  type UltravisorStats,
  UV_CALL,
  UV_TAG_BYTES,
  type UvPageInEvent,
  type UvPageOutEvent,
  type UvRejectEvent,
} from "./uvmem/ultravisor";
export {
  SizeClass,
  ZS_CHAIN_SIZE,
  ZS_MAX_ALLOC_SIZE,
  ZS_MIN_ALLOC_SIZE,
  ZS_SIZE_CLASS_DELTA,
  ZS_SIZE_CLASSES,
  ZsPool,
  Zspage,
} from "./zswap/zsmalloc";
export {
  validateZswapOptions,
  ZSWAP_COMPRESSORS,
  ZSWAP_MAX_RECLAIM_RETRIES,
  Zswap,
  type ZswapCompressor,
  type ZswapDebugfs,
  type ZswapOptions,
  zswapCompress,
  zswapDecompress,
} from "./zswap/zswap";
