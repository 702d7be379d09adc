#!/usr/bin/env node
/**
 * `pnpm run docs:symbols`: generate the kernel-symbol index of the API site from the TSDoc `@see`
 * tags of every exported symbol. Never edit its output by hand: `pnpm run docs` runs this first.
 *
 * How: typedoc converts the four packages exactly as the site build does (typedoc.json, packages
 * mode, without the project documents), the project is serialised to typedoc's JSON model, and
 * every documented reflection that will be rendered (exported declarations and their members;
 * no @internal, no private, no inherited copies) is read for `@see` tags. scripts/docs-see.mjs
 * parses each tag into kernel symbols, files and notes, and picks "Departure:"-style sentences out
 * of the summary and `@remarks` (its header lists the rules).
 *
 * Writes (both gitignored, regenerated on every build):
 *   docs/generated/kernel-symbols.md    the page, a typedoc project document. Each hmmkit API is a
 *                                       `{@link @hmmkit/pkg!Path#member}` declaration reference, so
 *                                       typedoc resolves it to the member's URL and fails the build
 *                                       (invalidLink validation) if one does not resolve.
 *   docs/generated/kernel-symbols.json  the same data, machine-readable (used by test/docs).
 *
 * Usage: node scripts/docs-symbols.mjs [--from-json FILE] [--out DIR] [--quiet]
 *   --from-json FILE  read a `typedoc --json` dump instead of converting (faster when you have one)
 *   --out DIR         output directory (default docs/generated)
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { departures, parseSee, squash } from "./docs-see.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

// typedoc's ReflectionKind values (stable across 0.2x; see typedoc's models/kind.ts).
const K = {
  Project: 0x1,
  Module: 0x2,
  Namespace: 0x4,
  Enum: 0x8,
  EnumMember: 0x10,
  Variable: 0x20,
  Function: 0x40,
  Class: 0x80,
  Interface: 0x100,
  Constructor: 0x200,
  Property: 0x400,
  Method: 0x800,
  Accessor: 0x40000,
  TypeAlias: 0x200000,
  Reference: 0x400000,
};
const KIND_LABEL = new Map([
  [K.Namespace, "namespace"],
  [K.Enum, "enum"],
  [K.EnumMember, "enum member"],
  [K.Variable, "constant"],
  [K.Function, "function"],
  [K.Class, "class"],
  [K.Interface, "interface"],
  [K.Constructor, "constructor"],
  [K.Property, "property"],
  [K.Method, "method"],
  [K.Accessor, "accessor"],
  [K.TypeAlias, "type"],
]);
const PACKAGE_ORDER = ["@hmmkit/core", "@hmmkit/device-emu", "@hmmkit/drivers", "@hmmkit/lab"];

function parseArgs(argv) {
  const opts = { fromJson: undefined, out: path.join(ROOT, "docs", "generated"), quiet: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--from-json") opts.fromJson = argv[++i];
    else if (a === "--out") opts.out = path.resolve(argv[++i] ?? "");
    else if (a === "--quiet") opts.quiet = true;
    else if (a === "--help" || a === "-h") {
      console.log("usage: node scripts/docs-symbols.mjs [--from-json FILE] [--out DIR] [--quiet]");
      process.exit(0);
    } else throw new Error(`docs-symbols: unknown argument ${a}`);
  }
  return opts;
}

/** Convert the packages with typedoc and return the project's JSON model. */
async function convertProject() {
  const { Application, LogLevel } = await import("typedoc");
  const app = await Application.bootstrapWithPlugins({
    options: path.join(ROOT, "typedoc.json"),
    projectDocuments: [],
    readme: "none",
    logLevel: LogLevel.Warn,
  });
  const project = await app.convert();
  if (!project || app.logger.hasErrors()) throw new Error("docs-symbols: typedoc could not convert the project");
  return app.serializer.projectToObject(project, ROOT);
}

/** Plain text of a list of typedoc comment parts. */
function partsText(parts = [], { keepBackticks = false } = {}) {
  return parts
    .map((p) => {
      if (p.kind === "code") return keepBackticks ? p.text : p.text.replace(/^`+|`+$/g, "");
      if (p.kind === "inline-tag") return p.text;
      return p.text;
    })
    .join("");
}

/** Every comment of a reflection: its own, its signatures', its accessors'. */
function commentsOf(d) {
  const out = [];
  if (d.comment) out.push(d.comment);
  for (const s of d.signatures ?? []) if (s.comment) out.push(s.comment);
  if (d.getSignature?.comment) out.push(d.getSignature.comment);
  if (d.setSignature?.comment) out.push(d.setSignature.comment);
  return out;
}

function refSegment(name) {
  return /^[A-Za-z_$][\w$]*$/.test(name) ? name : JSON.stringify(name);
}

/** Area of a top-level declaration: its source directory (or file) inside the package. */
function areaOf(d) {
  const file = d.sources?.[0]?.fileName;
  if (!file) return "";
  const rel = file.replace(/^.*?\/src\//, "");
  const dir = path.posix.dirname(rel);
  return dir === "." ? path.posix.basename(rel).replace(/\.m?ts$/, "") : dir.split("/")[0];
}

/**
 * Walk the JSON model and collect one record per documented API with `@see` tags.
 * @returns {{ apis: object[], undocumented: number }}
 */
export function collectApis(projectJson) {
  const apis = [];
  let withoutSee = 0;
  const modules = (projectJson.children ?? []).filter((c) => c.kind === K.Module);
  // `parent.link === false`: the parent is a type literal nested in a member (a property typed
  // `{ a: number }`); typedoc gives its members no anchor, so they link to the nearest owner.
  const visit = (d, pkg, parent, area) => {
    if (d.kind === K.Reference || d.inheritedFrom || d.flags?.isExternal || d.flags?.isPrivate) return;
    const inClassLike = parent !== undefined && (parent.kind === K.Class || parent.kind === K.Interface);
    const sep = inClassLike && !d.flags?.isStatic && d.kind !== K.Constructor ? "#" : ".";
    const ref = parent ? `${parent.ref}${sep}${refSegment(d.name)}` : `${pkg}!${refSegment(d.name)}`;
    const linkRef = parent && !parent.linkable ? parent.linkRef : ref;
    const label = parent ? `${parent.label}.${d.name}` : d.name;
    const myArea = area ?? areaOf(d);
    const see = [];
    const diffs = [];
    for (const c of commentsOf(d)) {
      for (const t of c.blockTags ?? []) if (t.tag === "@see") see.push(partsText(t.content));
      const prose = [partsText(c.summary, { keepBackticks: true })];
      for (const t of c.blockTags ?? []) if (t.tag === "@remarks") prose.push(partsText(t.content, { keepBackticks: true }));
      for (const s of departures(prose.join("\n\n"))) if (!diffs.includes(s)) diffs.push(s);
    }
    if (d.kind !== K.Module) {
      if (see.length > 0) {
        apis.push({ ref: linkRef, label, package: pkg, area: myArea, kind: KIND_LABEL.get(d.kind) ?? "symbol", see, departures: diffs });
      } else withoutSee++;
    }
    const me = { ref, linkRef, label, kind: d.kind, linkable: parent === undefined || parent.linkable };
    for (const c of d.children ?? []) visit(c, pkg, me, myArea);
    if (d.type?.type === "reflection") {
      // A top-level variable's object literal (MIGRATE_PFN) gets member anchors; a member's does not.
      const lit = { ref, linkRef, label, kind: K.Namespace, linkable: parent === undefined };
      for (const c of d.type.declaration?.children ?? []) visit(c, pkg, lit, myArea);
    }
  };
  for (const mod of modules) for (const c of mod.children ?? []) visit(c, mod.name, undefined, undefined);
  return { apis, withoutSee };
}

/**
 * Build the index: kernel symbol → hmmkit APIs, and kernel file → hmmkit APIs.
 */
export function buildIndex(apis) {
  const symbols = new Map();
  const files = new Map();
  for (const api of apis) {
    for (const text of api.see) {
      const parsed = parseSee(text);
      for (const s of parsed.symbols) {
        let e = symbols.get(s.name);
        if (!e) symbols.set(s.name, (e = { kernel: s.name, files: [], notes: [], apis: [] }));
        for (const f of s.files) if (!e.files.includes(f)) e.files.push(f);
        for (const n of s.notes) if (!e.notes.includes(n)) e.notes.push(n);
        if (!e.apis.some((a) => a.ref === api.ref && a.label === api.label)) {
          e.apis.push({
            ref: api.ref,
            label: api.label,
            package: api.package,
            area: api.area,
            kind: api.kind,
            departures: api.departures,
            only: parsed.symbols.length === 1,
          });
        }
      }
      for (const f of parsed.files) {
        let e = files.get(f);
        if (!e) files.set(f, (e = { file: f, apis: [] }));
        if (!e.apis.some((a) => a.ref === api.ref && a.label === api.label))
          e.apis.push({ ref: api.ref, label: api.label, package: api.package });
      }
    }
  }
  const pkgRank = (p) => {
    const i = PACKAGE_ORDER.indexOf(p);
    return i < 0 ? PACKAGE_ORDER.length : i;
  };
  for (const e of symbols.values()) {
    const want = squash(e.kernel);
    const score = (a) => {
      const last = a.label.split(".").pop() ?? "";
      return (last.toLowerCase() === want ? 0 : 4) + (a.only ? 0 : 2) + (a.kind === "property" || a.kind === "enum member" ? 1 : 0);
    };
    e.apis.sort((a, b) => score(a) - score(b) || pkgRank(a.package) - pkgRank(b.package) || a.label.localeCompare(b.label));
    const primary = e.apis[0];
    e.section = primary ? `${primary.package} · ${primary.area || "(root)"}` : "other";
    e.sectionRank = primary ? pkgRank(primary.package) : 99;
  }
  const sortedSymbols = [...symbols.values()].sort((a, b) => a.kernel.localeCompare(b.kernel, "en", { sensitivity: "base" }));
  const sortedFiles = [...files.values()].sort((a, b) => a.file.localeCompare(b.file));
  return { symbols: sortedSymbols, files: sortedFiles };
}

function esc(text) {
  return text
    .replace(/\\/g, "\\\\")
    .replace(/\|/g, "\\|")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/\{@/g, "{\\@")
    .replace(/\s+/g, " ")
    .trim();
}

function codeCell(text) {
  return `\`${text.replace(/`/g, "'").replace(/\|/g, "\\|")}\``;
}

function link(api) {
  return `{@link ${api.ref} ${api.label}}`;
}

const FILE_LINKS_MAX = 24;

/** Render the index as a typedoc project document (markdown with front matter). */
export function renderMarkdown(index, stats) {
  const lines = [];
  lines.push("---", "title: Kernel symbol index", "group: Reference", "---", "");
  lines.push("# Kernel symbol index", "");
  lines.push(
    "Every kernel symbol that an hmmkit API names in its `@see` tag, with the API that models it. " +
      "Generated by `scripts/docs-symbols.mjs` from the doc comments on every build (`pnpm run docs`); " +
      "do not edit it, change the doc comment instead.",
    "",
  );
  lines.push(
    `**${index.symbols.length}** kernel symbols and sysfs/procfs paths → **${stats.apis}** documented hmmkit APIs; ` +
      `**${index.files.length}** kernel source files; **${stats.departures}** stated differences.`,
    "",
  );
  lines.push(
    "How to read a row: *Kernel symbol* is what to grep for in the kernel tree; *hmmkit* links to the API " +
      "reference of the hmmkit symbol that models it (the first one is the closest match); *Kernel source* " +
      "is the file named with it; *Differences and notes* quotes the doc comment's sentences that state a " +
      'departure from the kernel ("Departure: …", "unlike the kernel …") and the tag\'s own remarks, ' +
      'such as "RFC" for an interface that was only proposed on the mailing list (the pinpage subsystem of ' +
      "2013, THP reservations).",
    "",
  );
  lines.push(
    "To add a row, name the kernel symbol in the API's doc comment: `@see migrate_vma_setup`, " +
      "`@see struct dev_pagemap_ops`, `@see mm/rmap.c (rmap_walk_anon)`. To state a difference, " +
      'write a sentence that begins with "Departure:" in its summary or `@remarks`.',
    "",
  );

  const sections = new Map();
  for (const e of index.symbols) {
    let s = sections.get(e.section);
    if (!s) sections.set(e.section, (s = { name: e.section, rank: e.sectionRank, rows: [] }));
    s.rows.push(e);
  }
  const ordered = [...sections.values()].sort((a, b) => a.rank - b.rank || a.name.localeCompare(b.name));
  lines.push(`Sections: ${ordered.map((s) => `${s.name} (${s.rows.length})`).join(", ")}.`, "");
  for (const s of ordered) {
    lines.push(`## ${s.name.replace(/^@hmmkit\//, "")}`, "");
    lines.push("| Kernel symbol | hmmkit | Kernel source | Differences and notes |", "| --- | --- | --- | --- |");
    for (const e of s.rows) {
      const apis = e.apis.map(link).join(", ");
      const files = e.files.map(codeCell).join(", ");
      const notes = [];
      for (const n of e.notes) notes.push(`(${esc(n)})`);
      const multi = e.apis.length > 1;
      const seen = new Set();
      for (const a of e.apis) {
        for (const d of a.departures) {
          if (seen.has(d)) continue;
          seen.add(d);
          notes.push(multi ? `${esc(a.label)}: ${esc(d)}` : esc(d));
        }
      }
      lines.push(`| ${codeCell(e.kernel)} | ${apis} | ${files} | ${notes.join(" ")} |`);
    }
    lines.push("");
  }

  lines.push("## Kernel source files", "");
  lines.push("Each kernel (or reference driver) source file named in an `@see` tag, with the hmmkit APIs that name it.", "");
  lines.push("| File | hmmkit |", "| --- | --- |");
  for (const f of index.files) {
    const shown = f.apis.slice(0, FILE_LINKS_MAX).map(link);
    if (f.apis.length > FILE_LINKS_MAX) shown.push(`and ${f.apis.length - FILE_LINKS_MAX} more`);
    lines.push(`| ${codeCell(f.file)} | ${shown.join(", ")} |`);
  }
  lines.push("");
  return lines.join("\n");
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const t0 = Date.now();
  const json = opts.fromJson ? JSON.parse(readFileSync(opts.fromJson, "utf8")) : await convertProject();
  const { apis, withoutSee } = collectApis(json);
  const index = buildIndex(apis);
  const stats = {
    apis: new Set(index.symbols.flatMap((e) => e.apis.map((a) => a.ref))).size,
    departures: new Set(apis.flatMap((a) => a.departures)).size,
    withoutSee,
  };
  mkdirSync(opts.out, { recursive: true });
  writeFileSync(path.join(opts.out, "kernel-symbols.md"), renderMarkdown(index, stats));
  const data = {
    $comment: "Generated by scripts/docs-symbols.mjs from the TSDoc @see tags; do not edit.",
    stats: { symbols: index.symbols.length, files: index.files.length, ...stats },
    symbols: index.symbols.map(({ section, sectionRank, ...e }) => ({
      ...e,
      section,
      apis: e.apis.map(({ only, ...a }) => a),
    })),
    files: index.files,
  };
  writeFileSync(path.join(opts.out, "kernel-symbols.json"), `${JSON.stringify(data, null, 1)}\n`);
  if (!opts.quiet) {
    console.log(
      `docs-symbols: ${index.symbols.length} kernel symbols, ${index.files.length} files, ${stats.apis} APIs with @see ` +
        `(${withoutSee} documented members have none), ${stats.departures} differences → ${path.relative(ROOT, opts.out)}/kernel-symbols.md ` +
        `(${((Date.now() - t0) / 1000).toFixed(1)} s)`,
    );
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((err) => {
    console.error(err instanceof Error ? err.message : err);
    process.exit(1);
  });
}
