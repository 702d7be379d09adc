/**
 * Physical memory: per-page state, contents and the buddy allocator.
 * @packageDocumentation
 */
export { Contents } from "./contents";
export type { PhysContext } from "./context";
export { type AllocHooks, GFP, PageAllocator, type Watermarks, Zone } from "./page-alloc";
export {
  GUP_PIN_COUNTING_BIAS,
  HPAGE_PMD_NR,
  HPAGE_PMD_ORDER,
  HPAGE_PMD_SIZE,
  MAX_PAGE_ORDER,
  PAGE_METADATA_BYTES,
  PAGE_SHIFT,
  PAGE_SIZE,
  PageState,
  PG,
  type PhysRegion,
  type RegionKind,
} from "./page-state";
