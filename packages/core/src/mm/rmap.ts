/**
 * Reverse mapping: from a page to every page-table entry that maps it.
 *
 * Anonymous pages point (`mapping`, `index`) to an anon_vma and their page index. hmmkit keeps one
 * anon_vma per private VMA family: the VMA created by mmap and every VMA forked from it share it,
 * and it records every address space that may map its pages (the kernel's anon_vma chains reduce
 * to this when nothing is merged or mremapped across families). Shared anonymous memory is a shmem
 * object: a page cache (index → pfn) plus the VMAs that map it.
 *
 * A walk visits each candidate (mm, vma, address); the caller checks the entry there, since a
 * candidate may map another page (after a COW) or nothing.
 *
 * Mapcount rules: a PTE mapping adds 1 to the page's `mapcount`; a PMD mapping of a THP adds 1 to
 * the folio's entire mapcount, which lives in the first tail page's `pincount` slot, as the
 * kernel keeps `_entire_mapcount` in the first tail page.
 *
 * @see mm/rmap.c (rmap_walk_anon, folio_add_new_anon_rmap, folio_remove_rmap_pte/pmd)
 */
import { type PageState, PG } from "../phys/page-state";
import { BugError } from "../sim/errors";
import type { Mm } from "./mm";
import type { Vma } from "./vma";

/** An anon_vma: the set of address spaces that may map a private anonymous family's pages. @see struct anon_vma */
export class AnonVma {
  /** Address spaces with VMAs of this family. */
  readonly mms = new Set<Mm>();
  /** @param id - mapping id (> 0). */
  constructor(readonly id: number) {}
}

/** A shmem object backing shared anonymous mappings. @see mm/shmem.c (struct shmem_inode_info) */
export class ShmemObject {
  /** Page cache: page index → pfn (each holds one reference). */
  readonly pages = new Map<number, number>();
  /** Address spaces with VMAs mapping it. */
  readonly mms = new Set<Mm>();
  /** VMAs (and open files) referencing it; at zero its pages are released. */
  vmaRefs = 0;
  /** Size in pages of a tmpfs file (a fault at or beyond it is SIGBUS); unbounded for MAP_SHARED|MAP_ANONYMOUS. @see i_size */
  sizePages = Number.POSITIVE_INFINITY;
  /** @param id - mapping id (> 0). */
  constructor(readonly id: number) {}
}

/**
 * The registry of mappings and the rmap walk.
 * @see mm/rmap.c
 */
export class Rmap {
  private readonly objects: (AnonVma | ShmemObject | undefined)[] = [undefined];

  /** @param pages - per-page state. */
  constructor(private readonly pages: PageState) {}

  /**
   * A new anon_vma. @returns it. @see anon_vma_prepare
   */
  newAnonVma(): AnonVma {
    const a = new AnonVma(this.objects.length);
    this.objects.push(a);
    return a;
  }

  /**
   * A new shmem object. @returns it. @see shmem_zero_setup
   */
  newShmem(): ShmemObject {
    const s = new ShmemObject(this.objects.length);
    this.objects.push(s);
    return s;
  }

  /**
   * Look up a mapping by id.
   * @param id - mapping id. @returns the anon_vma or shmem object.
   */
  get(id: number): AnonVma | ShmemObject | undefined {
    return this.objects[id];
  }

  /**
   * Forget a mapping that nothing references any more.
   * @param id - mapping id.
   */
  drop(id: number): void {
    this.objects[id] = undefined;
  }

  /**
   * The page index of `pfn` in its mapping (tails: head index + offset).
   * @param pfn - page. @returns index. @see folio_page_idx, page_pgoff
   */
  pageIndex(pfn: number): number {
    const ps = this.pages;
    const head = ps.compoundHead(pfn);
    return (ps.index[head] as number) + (pfn - head);
  }

  /**
   * Visit every (mm, vma, address) that may map `pfn`.
   * @param pfn - any page of a mapped folio.
   * @param fn - visitor; return true to stop the walk.
   * @see rmap_walk
   */
  walk(pfn: number, fn: (mm: Mm, vma: Vma, va: number) => boolean | undefined): void {
    const ps = this.pages;
    const head = ps.compoundHead(pfn);
    const obj = this.objects[ps.mapping[head] as number];
    if (obj === undefined) return;
    const index = this.pageIndex(pfn);
    for (const mm of obj.mms) {
      for (const vma of mm.vmas) {
        if (vma.mapping !== obj.id) continue;
        const va = vma.addressOf(index);
        if (va >= vma.start && va < vma.end && fn(mm, vma, va)) return;
      }
    }
  }

  /**
   * Set up a new anonymous folio's rmap: anon, exclusive, first mapping.
   * @param head - folio head. @param anonVma - mapping id. @param index - page index of the head.
   * @param pmd - mapped by a PMD (entire mapcount) rather than PTEs.
   * @see folio_add_new_anon_rmap
   */
  addNewAnon(head: number, anonVma: number, index: number, pmd: boolean): void {
    const ps = this.pages;
    ps.flags[head] = (ps.flags[head] as number) | PG.anon | PG.swapbacked | PG.anonExclusive | PG.uptodate;
    ps.mapping[head] = anonVma;
    ps.index[head] = index;
    if (pmd) this.setEntireMapcount(head, 1);
    else ps.mapcount[head] = (ps.mapcount[head] as number) + 1;
  }

  /**
   * The folio's PMD mapcount (the kernel's `_entire_mapcount`).
   * @param head - a large folio's head. @returns the count.
   * @see folio_entire_mapcount
   */
  entireMapcount(head: number): number {
    return (this.pages.flags[head] as number) & PG.head ? (this.pages.pincount[head + 1] as number) : 0;
  }

  /**
   * Set the folio's PMD mapcount.
   * @param head - a large folio's head. @param n - new count.
   */
  setEntireMapcount(head: number, n: number): void {
    if (!((this.pages.flags[head] as number) & PG.head)) throw new BugError("entire-mapcount-small", `pfn ${head} is not a large folio`);
    this.pages.pincount[head + 1] = n;
  }

  /**
   * Total mappings of a folio: PMD mappings plus every subpage's PTE mappings.
   * @param head - folio head. @returns the count. @see folio_mapcount
   */
  folioMapcount(head: number): number {
    const ps = this.pages;
    const n = ps.folioNrPages(head);
    let m = n > 1 ? this.entireMapcount(head) : 0;
    for (let p = head; p < head + n; p++) m += ps.mapcount[p] as number;
    return m;
  }

  /**
   * Whether a page is mapped by any page table.
   * @param pfn - page. @returns true if PTE- or PMD-mapped. @see page_mapped
   */
  pageMapped(pfn: number): boolean {
    const head = this.pages.compoundHead(pfn);
    return (
      (this.pages.mapcount[pfn] as number) > 0 ||
      (head !== pfn || ((this.pages.flags[head] as number) & PG.head) !== 0 ? this.entireMapcount(head) > 0 : false)
    );
  }
}
