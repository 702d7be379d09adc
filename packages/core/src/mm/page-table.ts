/**
 * Page tables: PMD and PTE levels, with typed non-present entries.
 *
 * An entry is a number: `payload * 256 + bits`, built with arithmetic (a pfn may exceed 32 bits,
 * so no bitwise operator builds or extracts the payload). The low bits are read with `&`, which is
 * exact for any non-negative integer below 2^53 (ToInt32 keeps the value modulo 2^32) and, unlike
 * `%` on a double, compiles to an integer instruction. The low 8 bits are:
 *
 * | bits | meaning |
 * | --- | --- |
 * | 0 | PRESENT |
 * | 1 | WRITE (also on non-present entries: a writable migration / device-private entry) |
 * | 2 | DIRTY |
 * | 3 | YOUNG (accessed) |
 * | 4–6 | type of a non-present entry: SWAP, MIGRATION, DEVICE_PRIVATE, DEVICE_EXCLUSIVE, HWPOISON; TABLE in a PMD |
 * | 7 | HUGE: a PMD-level leaf (2 MiB) |
 *
 * The payload is a pfn (present, migration, device-private, device-exclusive, hwpoison entries),
 * a swap slot (swap entries) or a PTE-table id (TABLE entries). Entry value 0 is `pte_none`.
 *
 * The tree is sparse: a map from PUD number (1 GiB) to a Float64Array of 512 PMD entries, and PTE
 * tables of 512 entries allocated on demand. Lookups cache the last PUD.
 *
 * @see arch/x86/include/asm/pgtable_types.h, include/linux/swapops.h, include/linux/pgtable.h
 */
import { BugError } from "../sim/errors";

/** Entry bits. @see arch/x86/include/asm/pgtable_types.h */
export const PTE = {
  /** Present: the CPU can translate through it. @see _PAGE_PRESENT */
  PRESENT: 1,
  /** Writable (for non-present entries: the writable variant). @see _PAGE_RW */
  WRITE: 2,
  /** Dirty. @see _PAGE_DIRTY */
  DIRTY: 4,
  /** Accessed. @see _PAGE_ACCESSED */
  YOUNG: 8,
  /** PMD-level leaf. @see _PAGE_PSE */
  HUGE: 128,
} as const;

/** Types of non-present entries (bits 4–6). @see include/linux/swapops.h */
export const SWP = {
  /** Swapped out; payload = swap slot. */
  SWAP: 1,
  /** Under migration; payload = source pfn. @see SWP_MIGRATION_READ/WRITE */
  MIGRATION: 2,
  /** Device-private page; payload = device pfn. @see SWP_DEVICE_READ/WRITE */
  DEVICE_PRIVATE: 3,
  /** Device has exclusive (atomic) access; payload = pfn. @see SWP_DEVICE_EXCLUSIVE */
  DEVICE_EXCLUSIVE: 4,
  /** Poisoned page. @see SWP_HWPOISON */
  HWPOISON: 5,
  /** PMD entry pointing to a PTE table (not a swap type; kept in the same field). */
  TABLE: 7,
} as const;

/** Page-table geometry at 4 KiB base pages. @see PTRS_PER_PTE, PMD_SIZE, PUD_SIZE */
export const PTRS_PER_PTE = 512;
/** Bytes mapped by one PMD entry. @see PMD_SIZE */
export const PMD_SIZE = 2 * 1024 * 1024;
/** Bytes mapped by one PUD entry. @see PUD_SIZE */
export const PUD_SIZE = 1024 * 1024 * 1024;

/**
 * A present entry.
 * @param pfn - target pfn.
 * @param write - writable.
 * @returns the entry. @see pfn_pte, pte_mkwrite
 */
export function mkPte(pfn: number, write: boolean): number {
  return pfn * 256 + PTE.PRESENT + (write ? PTE.WRITE : 0);
}

/**
 * A non-present (swap-format) entry.
 * @param type - a {@link SWP} type.
 * @param payload - pfn or swap slot.
 * @param write - the writable variant.
 * @returns the entry. @see swp_entry, make_writable_migration_entry, make_writable_device_private_entry
 */
export function mkSwpEntry(type: number, payload: number, write: boolean): number {
  return payload * 256 + type * 16 + (write ? PTE.WRITE : 0);
}

/**
 * The payload (pfn, swap slot or table id) of an entry.
 * @param e - entry.
 * @returns the payload. @see pte_pfn, swp_offset
 */
export function entryPayload(e: number): number {
  return Math.floor(e / 256);
}

/**
 * The low 8 bits of an entry.
 * @param e - entry.
 * @returns bits.
 */
export function entryBits(e: number): number {
  return e & 255;
}

/**
 * Whether the entry is present.
 * @param e - entry. @returns true if PRESENT. @see pte_present
 */
export function isPresent(e: number): boolean {
  return (e & PTE.PRESENT) !== 0;
}

/**
 * Whether the entry is writable.
 * @param e - entry. @returns true if WRITE. @see pte_write
 */
export function isWrite(e: number): boolean {
  return (e & PTE.WRITE) !== 0;
}

/**
 * The non-present type of an entry.
 * @param e - entry. @returns a {@link SWP} value, or 0 for none/present. @see swp_type
 */
export function swpType(e: number): number {
  return e & PTE.PRESENT ? 0 : (e >> 4) & 7;
}

/**
 * Whether a PMD entry is a huge leaf.
 * @param e - PMD entry. @returns true if HUGE. @see pmd_trans_huge
 */
export function isHuge(e: number): boolean {
  return (e & PTE.HUGE) !== 0;
}

/**
 * Set or clear bits of an entry.
 * @param e - entry. @param set - bits to set. @param clear - bits to clear. @returns the new entry.
 */
export function withBits(e: number, set: number, clear: number): number {
  const low = e & 255;
  return e - low + ((low | set) & ~clear & 255);
}

/**
 * One address space's page tables.
 * @see pgd_t/pud_t/pmd_t/pte_t in include/linux/pgtable.h
 */
export class PageTable {
  private readonly puds = new Map<number, Float64Array>();
  private tables: (Float64Array | undefined)[] = [];
  private freeIds: number[] = [];
  private lastPud = -1;
  private lastPmds: Float64Array | undefined;
  /** Number of PTE tables allocated. */
  nrPteTables = 0;

  /**
   * The PMD entry covering `va`.
   * @param va - virtual address. @returns the entry, 0 if none.
   */
  getPmd(va: number): number {
    const pmdNo = Math.floor(va / PMD_SIZE);
    const pmds = this.pmdArray(Math.floor(pmdNo / 512), false);
    return pmds === undefined ? 0 : (pmds[pmdNo & 511] as number);
  }

  /**
   * Set the PMD entry covering `va` (a leaf or 0; tables are managed here).
   * @param va - virtual address. @param e - the entry.
   * @throws BugError if it would drop a PTE table that is still attached.
   */
  setPmd(va: number, e: number): void {
    const pmdNo = Math.floor(va / PMD_SIZE);
    const pmds = this.pmdArray(Math.floor(pmdNo / 512), true) as Float64Array;
    const old = pmds[pmdNo & 511] as number;
    if (old !== 0 && swpType(old) === SWP.TABLE && !isHuge(old)) {
      throw new BugError("pmd-table-leak", `setPmd over a PTE table at ${va.toString(16)}; free it first`);
    }
    pmds[pmdNo & 511] = e;
  }

  /**
   * The PTE table for `va` if its PMD points to one.
   * @param va - virtual address. @returns the table or undefined (none, or a huge leaf).
   */
  pteTable(va: number): Float64Array | undefined {
    const pmd = this.getPmd(va);
    if (pmd === 0 || isHuge(pmd) || swpType(pmd) !== SWP.TABLE) return undefined;
    return this.tables[entryPayload(pmd)];
  }

  /**
   * The PTE table for `va`, allocating one if the PMD is none.
   * @param va - virtual address. @returns the table.
   * @throws BugError if the PMD is a huge leaf (split it first).
   * @see __pte_alloc
   */
  ensurePteTable(va: number): Float64Array {
    const pmdNo = Math.floor(va / PMD_SIZE);
    const pmds = this.pmdArray(Math.floor(pmdNo / 512), true) as Float64Array;
    const pmd = pmds[pmdNo & 511] as number;
    if (pmd !== 0) {
      if (isHuge(pmd) || swpType(pmd) !== SWP.TABLE)
        throw new BugError("pte-alloc-on-huge", `PTE table wanted under a huge PMD at 0x${va.toString(16)}`);
      return this.tables[entryPayload(pmd)] as Float64Array;
    }
    let id = this.freeIds.pop();
    const t = new Float64Array(PTRS_PER_PTE);
    if (id === undefined) {
      id = this.tables.length;
      this.tables.push(t);
    } else this.tables[id] = t;
    this.nrPteTables++;
    pmds[pmdNo & 511] = mkSwpEntry(SWP.TABLE, id, false);
    return t;
  }

  /**
   * Detach and free the PTE table under `va`'s PMD (its entries must all be none).
   * @param va - any address in the PMD range.
   * @throws BugError if an entry is still set.
   * @see free_pte_range
   */
  freePteTable(va: number): void {
    const pmdNo = Math.floor(va / PMD_SIZE);
    const pmds = this.pmdArray(Math.floor(pmdNo / 512), false);
    if (pmds === undefined) return;
    const pmd = pmds[pmdNo & 511] as number;
    if (pmd === 0 || isHuge(pmd) || swpType(pmd) !== SWP.TABLE) return;
    const id = entryPayload(pmd);
    const t = this.tables[id] as Float64Array;
    for (let i = 0; i < PTRS_PER_PTE; i++) if (t[i] !== 0) throw new BugError("pte-table-busy", `freeing a PTE table with live entry ${i}`);
    this.tables[id] = undefined;
    this.freeIds.push(id);
    this.nrPteTables--;
    pmds[pmdNo & 511] = 0;
  }

  /**
   * The PTE for `va`.
   * @param va - virtual address. @returns the entry; 0 if none or if the PMD is a leaf.
   */
  getPte(va: number): number {
    const t = this.pteTable(va);
    return t === undefined ? 0 : (t[(va / 4096) & (PTRS_PER_PTE - 1)] as number);
  }

  /**
   * Set the PTE for `va`, allocating the table.
   * @param va - virtual address. @param e - entry.
   */
  setPte(va: number, e: number): void {
    const t = this.ensurePteTable(va);
    t[(va / 4096) & (PTRS_PER_PTE - 1)] = e;
  }

  /**
   * Every PMD number that has a non-zero entry, ascending (cold path: exit, fork, dumps).
   * @returns PMD numbers (va = n * PMD_SIZE).
   */
  populatedPmds(): number[] {
    const out: number[] = [];
    const pudNos = [...this.puds.keys()].sort((a, b) => a - b);
    for (const pud of pudNos) {
      const arr = this.puds.get(pud) as Float64Array;
      for (let i = 0; i < 512; i++) if (arr[i] !== 0) out.push(pud * 512 + i);
    }
    return out;
  }

  private pmdArray(pudNo: number, alloc: boolean): Float64Array | undefined {
    if (pudNo === this.lastPud) return this.lastPmds;
    let a = this.puds.get(pudNo);
    if (a === undefined) {
      if (!alloc) return undefined;
      a = new Float64Array(512);
      this.puds.set(pudNo, a);
    }
    this.lastPud = pudNo;
    this.lastPmds = a;
    return a;
  }
}
