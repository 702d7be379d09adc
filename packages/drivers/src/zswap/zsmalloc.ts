/**
 * A zsmalloc-like allocator for compressed objects, over pinned-movable pages of the machine.
 *
 * **Size classes.** Object sizes are rounded up to a class: 32 bytes (ZS_MIN_ALLOC_SIZE) to
 * PAGE_SIZE in steps of 16 (ZS_SIZE_CLASS_DELTA = PAGE_SIZE >> 8), 255 classes. Each class packs
 * its objects into **zspages**: chains of 1..ZS_CHAIN_SIZE order-0 pages, the chain length chosen
 * to waste the least space (calculate_zspage_chain_size); an object may straddle two pages of its
 * zspage, which is why callers get an opaque handle and never a pointer. Classes with the same
 * (pages per zspage, objects per zspage) are merged into the larger one, as zsmalloc does. A class
 * with one object per page is a "huge" class.
 *
 * **Pages.** Every zspage page comes from the machine's buddy allocator (order 0, movable, may dip
 * into reserves: the caller is reclaim, which the kernel runs with PF_MEMALLOC) and is registered
 * with the pinpage subsystem as pinned-movable, its private word naming its zspage. Compaction, CMA
 * and offlining therefore migrate pool pages through {@link ZsPool.migratePage}
 * (zs_page_migrate): the page's bytes are copied and the zspage's page list is rewired, so every
 * handle stays valid and every object keeps its bytes. An empty zspage is freed at once (its pages
 * go back to the buddy allocator).
 *
 * **Handles.** A handle is an index into a handle table holding (zspage, object index, length);
 * freed handles are reused. Allocation takes a free object from the class's fullest non-full zspage
 * (find_get_zspage prefers the fullest), allocating a new zspage when none has room.
 *
 * Not modelled: zs_compact (moving objects between a class's zspages to free sparse ones) and the
 * per-class fullness groups (a non-full set stands for them).
 *
 * @see mm/zsmalloc.c (zs_create_pool, zs_malloc, zs_free, zs_obj_read/zs_obj_write,
 *      zs_page_isolate, zs_page_migrate, zs_page_putback), Documentation/mm/zsmalloc.rst
 */
import { GFP, HmmError, type Machine, PAGE_SIZE, type PinpageSystem } from "@hmmkit/core";

/** Smallest object class in bytes. @see ZS_MIN_ALLOC_SIZE */
export const ZS_MIN_ALLOC_SIZE = 32;
/** Largest object in bytes. @see ZS_MAX_ALLOC_SIZE */
export const ZS_MAX_ALLOC_SIZE = PAGE_SIZE;
/** Step between size classes. @see ZS_SIZE_CLASS_DELTA */
export const ZS_SIZE_CLASS_DELTA = PAGE_SIZE >> 8;
/** Longest zspage chain in pages. @see CONFIG_ZSMALLOC_CHAIN_SIZE */
export const ZS_CHAIN_SIZE = 8;
/** Number of size classes. @see ZS_SIZE_CLASSES */
export const ZS_SIZE_CLASSES = Math.ceil((ZS_MAX_ALLOC_SIZE - ZS_MIN_ALLOC_SIZE) / ZS_SIZE_CLASS_DELTA) + 1;

/** A zspage: a chain of pages holding one class's objects. @see struct zspage */
export class Zspage {
  /** Its pages' pfns, in chain order (rewired on migration). */
  readonly pages: number[];
  /** Objects allocated. */
  inuse = 0;
  /** Free object indices (a stack). */
  readonly freeObjs: number[] = [];
  /** @param cls - its size class. @param pages - its pages. */
  constructor(
    readonly cls: SizeClass,
    pages: number[],
  ) {
    this.pages = pages;
    for (let i = cls.objsPerZspage - 1; i >= 0; i--) this.freeObjs.push(i);
  }
}

/** A size class. @see struct size_class */
export class SizeClass {
  /** Zspages with at least one free object. */
  readonly nonFull = new Set<Zspage>();
  /** Zspages of this class. */
  nrZspages = 0;
  /** Objects allocated. @see OBJ_USED */
  objUsed = 0;
  /**
   * @param index - class index. @param size - object size in bytes.
   * @param pagesPerZspage - pages per zspage. @param objsPerZspage - objects per zspage.
   */
  constructor(
    readonly index: number,
    readonly size: number,
    readonly pagesPerZspage: number,
    readonly objsPerZspage: number,
  ) {}
}

/** Pages per zspage wasting the least space for objects of `size`. @see calculate_zspage_chain_size */
function chainSize(size: number): number {
  let best = 1;
  let bestUsed = 0;
  for (let i = 1; i <= ZS_CHAIN_SIZE; i++) {
    const bytes = i * PAGE_SIZE;
    const used = ((bytes - (bytes % size)) * 100) / bytes;
    if (used > bestUsed) {
      bestUsed = used;
      best = i;
    }
  }
  return best;
}

/**
 * A zsmalloc pool.
 *
 * Context: synchronous. The pool's pages are owned by its pinpage subsystem.
 * @see struct zs_pool
 */
export class ZsPool {
  /** Class of each size index (merged classes share one object). */
  readonly classes: SizeClass[] = [];
  /** Pages the pool holds. @see zs_get_total_pages */
  totalPages = 0;
  /** The pinpage subsystem owning the pool's pages. */
  readonly sys: PinpageSystem;
  private hZspage: (Zspage | undefined)[] = [];
  private hObj = new Int32Array(1024);
  private hLen = new Int32Array(1024);
  private freeHandles: number[] = [];
  private readonly pfnZspage = new Map<number, Zspage>();

  /**
   * Create a pool and register its pinpage subsystem.
   * @param m - the machine whose pages it uses. @param name - the pool's (and subsystem's) name.
   * @see zs_create_pool
   */
  constructor(
    private readonly m: Machine,
    readonly name: string,
  ) {
    let prev: SizeClass | undefined;
    const byIndex: SizeClass[] = new Array(ZS_SIZE_CLASSES);
    for (let i = ZS_SIZE_CLASSES - 1; i >= 0; i--) {
      const size = Math.min(ZS_MIN_ALLOC_SIZE + i * ZS_SIZE_CLASS_DELTA, ZS_MAX_ALLOC_SIZE);
      const pages = chainSize(size);
      const objs = Math.floor((pages * PAGE_SIZE) / size);
      if (prev !== undefined && prev.pagesPerZspage === pages && prev.objsPerZspage === objs) {
        byIndex[i] = prev;
        continue;
      }
      prev = new SizeClass(i, size, pages, objs);
      byIndex[i] = prev;
    }
    this.classes = byIndex;
    this.sys = m.mm.pinpage.registerPinpage(name, {
      isolate: () => true,
      migrate: (_s, page, newpage) => this.migratePage(page, newpage),
      putback: () => undefined,
    });
  }

  /**
   * The class serving objects of `size` bytes.
   * @param size - 1..ZS_MAX_ALLOC_SIZE. @returns the class. @see zs_lookup_class_index
   */
  classFor(size: number): SizeClass {
    const i = size <= ZS_MIN_ALLOC_SIZE ? 0 : Math.ceil((size - ZS_MIN_ALLOC_SIZE) / ZS_SIZE_CLASS_DELTA);
    return this.classes[i] as SizeClass;
  }

  /**
   * Allocate an object of `size` bytes.
   * @param size - 1..ZS_MAX_ALLOC_SIZE.
   * @param gfp - allocation flags for new pool pages.
   * @returns a handle (>= 0), -EINVAL (-22) for a bad size, or -ENOMEM (-12) when no page could be allocated.
   * @see zs_malloc
   */
  malloc(size: number, gfp: number): number {
    if (!Number.isInteger(size) || size <= 0 || size > ZS_MAX_ALLOC_SIZE) return -22;
    const cls = this.classFor(size);
    let zs: Zspage | undefined;
    for (const z of cls.nonFull) if (zs === undefined || z.inuse > zs.inuse) zs = z;
    if (zs === undefined) {
      zs = this.allocZspage(cls, gfp);
      if (zs === undefined) return -12;
    }
    const obj = zs.freeObjs.pop() as number;
    zs.inuse++;
    cls.objUsed++;
    if (zs.freeObjs.length === 0) cls.nonFull.delete(zs);
    let h = this.freeHandles.pop();
    if (h === undefined) {
      h = this.hZspage.length;
      this.hZspage.push(undefined);
      if (h >= this.hObj.length) {
        const o = new Int32Array(this.hObj.length * 2);
        o.set(this.hObj);
        this.hObj = o;
        const l = new Int32Array(this.hLen.length * 2);
        l.set(this.hLen);
        this.hLen = l;
      }
    }
    this.hZspage[h] = zs;
    this.hObj[h] = obj;
    this.hLen[h] = size;
    return h;
  }

  /**
   * Free an object; an emptied zspage returns its pages to the machine.
   * @param handle - from {@link ZsPool.malloc}.
   * @throws HmmError EINVAL for a handle that is not allocated.
   * @see zs_free
   */
  free(handle: number): void {
    const zs = this.zspageOf(handle);
    const cls = zs.cls;
    zs.freeObjs.push(this.hObj[handle] as number);
    zs.inuse--;
    cls.objUsed--;
    this.hZspage[handle] = undefined;
    this.freeHandles.push(handle);
    if (zs.inuse === 0) this.freeZspage(zs);
    else cls.nonFull.add(zs);
  }

  /**
   * Copy bytes into an object (they may straddle two pages).
   * @param handle - an allocated handle. @param src - at most the object's size.
   * @see zs_obj_write
   */
  write(handle: number, src: Uint8Array): void {
    const zs = this.zspageOf(handle);
    const off = (this.hObj[handle] as number) * zs.cls.size;
    const c = this.m.contents;
    const pi = Math.floor(off / PAGE_SIZE);
    const po = off % PAGE_SIZE;
    const first = Math.min(src.length, PAGE_SIZE - po);
    c.write(zs.pages[pi] as number, po, first === src.length ? src : src.subarray(0, first));
    if (first < src.length) c.write(zs.pages[pi + 1] as number, 0, src.subarray(first));
  }

  /**
   * Read an object's bytes.
   * @param handle - an allocated handle. @returns a copy of its `length` bytes.
   * @see zs_obj_read
   */
  read(handle: number): Uint8Array {
    const zs = this.zspageOf(handle);
    const len = this.hLen[handle] as number;
    const out = new Uint8Array(len);
    const off = (this.hObj[handle] as number) * zs.cls.size;
    const c = this.m.contents;
    const pi = Math.floor(off / PAGE_SIZE);
    const po = off % PAGE_SIZE;
    const first = Math.min(len, PAGE_SIZE - po);
    c.read(zs.pages[pi] as number, po, out.subarray(0, first));
    if (first < len) c.read(zs.pages[pi + 1] as number, 0, out.subarray(first));
    return out;
  }

  /**
   * The object's length as allocated.
   * @param handle - an allocated handle. @returns bytes.
   */
  length(handle: number): number {
    this.zspageOf(handle);
    return this.hLen[handle] as number;
  }

  /** Objects allocated in the pool. */
  get objects(): number {
    return this.hZspage.length - this.freeHandles.length;
  }

  /** The zspage a pool page belongs to (pool pages only). @param pfn - page. @returns the zspage or undefined. */
  zspageOfPfn(pfn: number): Zspage | undefined {
    return this.pfnZspage.get(pfn);
  }

  /**
   * Migrate one pool page (the pinpage `migrate` op): copy its bytes and rewire the zspage.
   * @param page - a locked pool page. @param newpage - a locked fresh page.
   * @returns 0, or -EINVAL (-22) if the page is not the pool's.
   * @see zs_page_migrate
   */
  migratePage(page: number, newpage: number): number {
    const zs = this.pfnZspage.get(page);
    if (zs === undefined) return -22;
    const i = zs.pages.indexOf(page);
    if (i < 0) return -22;
    this.m.contents.copyPages(newpage, page, 1);
    zs.pages[i] = newpage;
    this.pfnZspage.delete(page);
    this.pfnZspage.set(newpage, zs);
    return 0;
  }

  /**
   * Free every zspage and unregister the pool's pinpage subsystem.
   * @throws HmmError EBUSY if objects are still allocated.
   * @see zs_destroy_pool
   */
  destroy(): void {
    if (this.objects !== 0) throw new HmmError("EBUSY", `zsmalloc pool ${this.name} still holds ${this.objects} object(s)`, "pool");
    this.m.mm.pinpage.unregisterPinpage(this.sys);
  }

  private zspageOf(handle: number): Zspage {
    const zs = Number.isInteger(handle) && handle >= 0 ? this.hZspage[handle] : undefined;
    if (zs === undefined) throw new HmmError("EINVAL", `zsmalloc handle ${handle} is not allocated`, "handle");
    return zs;
  }

  private allocZspage(cls: SizeClass, gfp: number): Zspage | undefined {
    const m = this.m;
    const pages: number[] = [];
    for (let i = 0; i < cls.pagesPerZspage; i++) {
      const pfn = m.alloc.allocPages(0, gfp | GFP.MOVABLE);
      if (pfn < 0) {
        for (const p of pages) m.mm.refs.putPage(p);
        return undefined;
      }
      pages.push(pfn);
    }
    const zs = new Zspage(cls, pages);
    for (const pfn of pages) {
      if (m.mm.pinpage.setPinpage(this.sys, pfn, zs) !== 0)
        throw new HmmError("EBUSY", `zsmalloc: pfn ${pfn} could not be registered`, "pfn");
      this.pfnZspage.set(pfn, zs);
    }
    cls.nrZspages++;
    cls.nonFull.add(zs);
    this.totalPages += pages.length;
    return zs;
  }

  private freeZspage(zs: Zspage): void {
    const m = this.m;
    zs.cls.nonFull.delete(zs);
    zs.cls.nrZspages--;
    for (const pfn of zs.pages) {
      m.mm.pinpage.clearPinpage(this.sys, pfn);
      this.pfnZspage.delete(pfn);
      m.mm.refs.putPage(pfn);
    }
    this.totalPages -= zs.pages.length;
  }
}
