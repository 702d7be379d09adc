/**
 * @hmmkit/drivers: public API of the drivers package (dmirror, nouveau-like, uvmem-like, zswap-like).
 *
 * @packageDocumentation
 */

export {
  DEVMEM_CHUNK_PAGES,
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
