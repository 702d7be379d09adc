/**
 * docs-see: the parser behind the kernel-symbol index (scripts/docs-symbols.mjs). Pure functions, no I/O.
 *
 * hmmkit's doc comments name what they model with free-form TSDoc `@see` tags, e.g.
 *
 *   @see migrate_vma_setup
 *   @see struct dev_pagemap_ops
 *   @see mm/rmap.c (rmap_walk_anon, folio_add_new_anon_rmap, folio_remove_rmap_pte/pmd)
 *   @see set_pinpage (RFC), __SetPageMovable
 *   @see VM_BUG_ON in include/linux/mmdebug.h
 *
 * `parseSee(text)` turns one tag's text into kernel symbols (functions, macros, flags, `struct`/`enum`
 * names, sysfs/procfs paths), kernel source files, and notes (a parenthesised remark that is not a
 * list of symbols, such as "(RFC)"). Rules, in order:
 *
 * 1. The text is split at top-level `,` and `;` (commas inside parentheses do not split).
 * 2. In each item a trailing `( … )` is a list of symbols when every comma-separated element in it
 *    looks like a symbol or a file; otherwise it is a note attached to the item's symbols.
 * 3. In the rest of the item: paths ending in .c/.h/.rst/… are files; `/sys/…` and `/proc/…` paths,
 *    `struct|enum|union NAME` and identifiers are symbols. An identifier must contain `_` (so prose
 *    words are skipped) unless it is the item's only word (`@see PGFAULT`, `@see fork`).
 *    `foo_bar_pte/pmd` also yields `foo_bar_pmd`; `a_begin/a_end` yields both.
 * 4. A symbol with no file of its own gets the tag's file when the tag names exactly one.
 *
 * `departures(text)` returns the sentences of a doc comment that state how hmmkit differs from the
 * kernel: sentences that begin with "Departure:", "Difference:" or "Simplification(s):", or that say
 * "differs from the kernel", "unlike the kernel", "the kernel would …", "whereas the kernel …".
 * Writing such a sentence in a symbol's summary or `@remarks` is how a difference reaches the index.
 */

const FILE_RE = /(?:[\w.+-]+\/)+[\w.+-]+\.(?:c|h|S|rs|rst|txt|cc|cpp|py|sh)\b|\b[\w+-]+\.(?:c|h|cc|rst)\b/g;
const SYSFS_RE = /\/(?:sys|proc)\/[\w/.-]*\w/g;
const STRUCT_RE = /\b(?:struct|enum|union)\s+[A-Za-z_]\w*(?:(?:\.|->)[A-Za-z_]\w*)*/g;
const IDENT_RE = /[A-Za-z_][\w]*(?:(?:\.|->)[A-Za-z_]\w*)*(?:\(\))?(?:\/[a-z]\w*)*/g;
const WORD_RE = /[A-Za-z_][\w]*/g;

/**
 * Split at top-level separators (`,` and `;`), keeping parenthesised groups whole.
 * @param {string} text
 * @returns {string[]}
 */
export function splitTopLevel(text) {
  const out = [];
  let depth = 0;
  let cur = "";
  for (const ch of text) {
    if (ch === "(" || ch === "[") depth++;
    else if ((ch === ")" || ch === "]") && depth > 0) depth--;
    if ((ch === "," || ch === ";") && depth === 0) {
      out.push(cur);
      cur = "";
    } else cur += ch;
  }
  out.push(cur);
  return out.map((s) => s.trim()).filter((s) => s.length > 0);
}

/**
 * Whether a fragment reads as one kernel symbol or file (not prose).
 * @param {string} s
 * @returns {boolean}
 */
function symbolLike(s) {
  s = s.trim();
  if (s === "") return false;
  if (/^(?:struct|enum|union)\s+[A-Za-z_]\w*$/.test(s)) return true;
  if (/^\/(?:sys|proc)\//.test(s)) return true;
  if (new RegExp(`^(?:${FILE_RE.source})$`).test(s)) return true;
  return /^[A-Za-z_]\w*(?:(?:\.|->)[A-Za-z_]\w*)*(?:\(\))?(?:\/[a-z]\w*)*$/.test(s) && /_/.test(s);
}

/**
 * Symbols and files of one fragment (no parentheses in it).
 * @param {string} s
 * @returns {{ symbols: string[], files: string[] }}
 */
function scan(s) {
  const symbols = [];
  const files = [];
  const blank = (m) => " ".repeat(m.length);
  let rest = s.replace(SYSFS_RE, (m) => {
    symbols.push(m);
    return blank(m);
  });
  rest = rest.replace(FILE_RE, (m) => {
    files.push(m);
    return blank(m);
  });
  rest = rest.replace(STRUCT_RE, (m) => {
    symbols.push(m.replace(/\s+/g, " "));
    return blank(m);
  });
  const words = rest.match(WORD_RE) ?? [];
  // A lone word is a symbol only when nothing else was found ("@see PGFAULT", not "struct page in …").
  const only = words.length === 1 && symbols.length === 0 && files.length === 0;
  for (const m of rest.matchAll(IDENT_RE)) {
    const [base, ...alts] = m[0].replace(/\(\)/g, "").split("/");
    if (base === undefined || !(base.includes("_") || only)) continue;
    // "foo_enable / _disable": a shorthand we cannot expand safely; skip the fragment.
    if (/^_[^_]/.test(base) && /\/\s*$/.test(rest.slice(0, m.index))) continue;
    symbols.push(base);
    for (const alt of alts) {
      if (alt.includes("_")) symbols.push(alt);
      else {
        const cut = base.lastIndexOf("_");
        if (cut > 0) symbols.push(`${base.slice(0, cut + 1)}${alt}`);
      }
    }
  }
  return { symbols, files };
}

/**
 * @typedef {{ name: string, files: string[], notes: string[] }} SeeSymbol
 * @typedef {{ symbols: SeeSymbol[], files: string[] }} SeeParse
 */

/**
 * Parse the text of one `@see` tag.
 * @param {string} text - the tag's text, inline code unwrapped, inline tags removed.
 * @returns {SeeParse} kernel symbols (each with its files and notes) and every file named.
 */
export function parseSee(text) {
  const clean = text.replace(/`/g, "").replace(/\s+/g, " ").trim();
  /** @type {Map<string, SeeSymbol>} */
  const symbols = new Map();
  const allFiles = [];
  const add = (name, files, notes) => {
    const prev = symbols.get(name);
    if (prev) {
      for (const f of files) if (!prev.files.includes(f)) prev.files.push(f);
      for (const n of notes) if (!prev.notes.includes(n)) prev.notes.push(n);
    } else symbols.set(name, { name, files: [...files], notes: [...notes] });
  };
  for (const item of splitTopLevel(clean)) {
    let head = item;
    let paren;
    const m = /^(.*?)\s*\(([^()]*)\)\s*[.:]?$/.exec(item);
    if (m && m[1] !== undefined && m[2] !== undefined) {
      head = m[1];
      paren = m[2].trim();
    }
    // Parentheses in the middle of an item ("foo (bar) baz") are prose: drop them.
    head = head.replace(/\([^()]*\)/g, " ");
    const h = scan(head);
    allFiles.push(...h.files);
    const parenItems = paren === undefined ? [] : splitTopLevel(paren);
    const parenIsList = parenItems.length > 0 && parenItems.every(symbolLike);
    if (parenIsList) {
      const p = scan(parenItems.join(", "));
      allFiles.push(...p.files);
      for (const s of h.symbols) add(s, h.files, []);
      for (const s of p.symbols) add(s, h.files.length > 0 ? h.files : p.files, []);
    } else {
      const notes = paren ? [paren] : [];
      for (const s of h.symbols) add(s, h.files, notes);
    }
  }
  const files = [...new Set(allFiles)];
  if (files.length === 1) for (const s of symbols.values()) if (s.files.length === 0) s.files.push(files[0]);
  return { symbols: [...symbols.values()], files };
}

const DEPARTURE_RE =
  /^(?:departure|difference|differs|simplifications?)\b\s*:|\bdiffers? from (?:the )?(?:kernel|linux|mainline)|\bunlike (?:the )?(?:kernel|linux|mainline)|\b(?:whereas|while|where) (?:the )?(?:kernel|linux|mainline)\b|\bthe kernel would\b/i;

/**
 * Sentences of a doc comment that state a difference from the kernel.
 * @param {string} text - summary and remarks, as plain text.
 * @returns {string[]}
 */
export function departures(text) {
  const clean = text.replace(/\s+/g, " ").trim();
  if (clean === "") return [];
  const sentences = clean.split(/(?<=[.!?])\s+(?=[A-Z`"(])/);
  return sentences.filter((s) => DEPARTURE_RE.test(s)).map((s) => s.trim());
}

/**
 * camelCase of a kernel identifier, to rank the hmmkit symbol named after it first
 * (`migrate_vma_setup` → `migratevmasetup`, compared case-insensitively).
 * @param {string} kernel
 * @returns {string}
 */
export function squash(kernel) {
  return kernel
    .replace(/^(?:struct|enum|union)\s+/, "")
    .replace(/[^A-Za-z0-9]/g, "")
    .toLowerCase();
}
