/**
 * The kernel-symbol index (scripts/docs-symbols.mjs → docs/generated → the site): the @see parser's
 * rules, the key symbols of DESIGN.md and seed 003 with the hmmkit API they must point at, every
 * link of the rendered page landing on an existing file and anchor, and the guides' included code.
 */
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { departures, parseSee } from "../../scripts/docs-see.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const SITE = path.join(ROOT, "docs/api");
const INDEX_PAGE = path.join(SITE, "documents/Kernel_symbol_index.html");

interface IndexApi {
  ref: string;
  label: string;
  package: string;
}
interface IndexSymbol {
  kernel: string;
  files: string[];
  notes: string[];
  apis: IndexApi[];
}

describe("parseSee", () => {
  it("reads a plain symbol, a struct, and a file with a list of symbols", () => {
    expect(parseSee("migrate_vma_setup").symbols.map((s) => s.name)).toEqual(["migrate_vma_setup"]);
    expect(parseSee("struct dev_pagemap_ops").symbols.map((s) => s.name)).toEqual(["struct dev_pagemap_ops"]);
    const r = parseSee("mm/rmap.c (rmap_walk_anon, folio_add_new_anon_rmap, folio_remove_rmap_pte/pmd)");
    expect(r.files).toEqual(["mm/rmap.c"]);
    expect(r.symbols.map((s) => s.name)).toEqual([
      "rmap_walk_anon",
      "folio_add_new_anon_rmap",
      "folio_remove_rmap_pte",
      "folio_remove_rmap_pmd",
    ]);
    expect(r.symbols.every((s) => s.files.includes("mm/rmap.c"))).toBe(true);
  });

  it("keeps a parenthesised remark as a note and skips prose", () => {
    const r = parseSee("set_pinpage (RFC), __SetPageMovable");
    expect(r.symbols).toEqual([
      { name: "set_pinpage", files: [], notes: ["RFC"] },
      { name: "__SetPageMovable", files: [], notes: [] },
    ]);
    expect(parseSee("struct page in include/linux/mm_types.h").symbols).toEqual([
      { name: "struct page", files: ["include/linux/mm_types.h"], notes: [] },
    ]);
    expect(parseSee("PGFAULT").symbols.map((s) => s.name)).toEqual(["PGFAULT"]);
    expect(parseSee("the fair arbitration of a PCIe port").symbols).toEqual([]);
    expect(parseSee("uvm_push_begin/uvm_push_end").symbols.map((s) => s.name)).toEqual(["uvm_push_begin", "uvm_push_end"]);
    expect(parseSee("/sys/kernel/mm/transparent_hugepage/enabled").symbols.map((s) => s.name)).toEqual([
      "/sys/kernel/mm/transparent_hugepage/enabled",
    ]);
  });

  it("picks the sentences that state a difference from the kernel", () => {
    expect(departures("Register device memory. Departure: no hotplug notifier runs. Returns the pgmap.")).toEqual([
      "Departure: no hotplug notifier runs.",
    ]);
    expect(departures("Unlike the kernel, it never sleeps. Fine.")).toEqual(["Unlike the kernel, it never sleeps."]);
    expect(departures("Collect the pages.")).toEqual([]);
  });
});

describe("kernel-symbol index", () => {
  const data = JSON.parse(readFileSync(path.join(ROOT, "docs/generated/kernel-symbols.json"), "utf8")) as {
    symbols: IndexSymbol[];
  };
  const bySymbol = new Map(data.symbols.map((s) => [s.kernel, s]));

  // kernel symbol → the hmmkit API that must come first in its row.
  const KEY: Record<string, string> = {
    migrate_vma_setup: "MigrateDevice.migrateVmaSetup",
    migrate_vma_pages: "MigrateDevice.migrateVmaPages",
    migrate_vma_finalize: "MigrateDevice.migrateVmaFinalize",
    migrate_device_range: "MigrateDevice.migrateDeviceRange",
    memremap_pages: "Memremap.memremapPages",
    "struct dev_pagemap_ops": "DevPagemapOps",
    "struct dev_pagemap": "DevPagemap",
    "struct migrate_vma": "MigrateVma",
    MIGRATE_PFN_COMPOUND: "MIGRATE_PFN.COMPOUND",
    MIGRATE_PFN_MIGRATE: "MIGRATE_PFN.MIGRATE",
    hmm_range_fault: "hmmRangeFault",
    migrate_to_ram: "DevPagemapOps.migrateToRam",
    zone_device_page_init: "Memremap.zoneDevicePageInit",
    // seed 003, the pinpage control subsystem
    register_pinpage: "Pinpage.registerPinpage",
    unregister_pinpage: "Pinpage.unregisterPinpage",
    set_pinpage: "Pinpage.setPinpage",
    clear_pinpage: "Pinpage.clearPinpage",
    migrate_pinpage: "Pinpage.migratePinpage",
    general_add_page: "generalAddPage",
    general_del_page: "generalDelPage",
    general_find_page: "generalFindPage",
    general_create_subsys: "generalCreateSubsys",
    general_destroy_subsys: "generalDestroySubsys",
    "struct pinpage_system": "PinpageSystem",
  };

  it.each(Object.entries(KEY))("maps %s to %s", (kernel, label) => {
    const e = bySymbol.get(kernel);
    expect(e, `${kernel} is missing from the index`).toBeDefined();
    expect(e?.apis[0]?.label).toBe(label);
  });

  it("marks the RFC-only pinpage interface", () => {
    expect(bySymbol.get("set_pinpage")?.notes).toContain("RFC");
  });

  const html = existsSync(INDEX_PAGE) ? readFileSync(INDEX_PAGE, "utf8") : "";
  const content = html.slice(html.indexOf('<div class="col-content">'), html.indexOf('<div class="col-sidebar">'));

  it("is rendered into the site with every key symbol linked to its API page", () => {
    expect(html, "docs/api/documents/Kernel_symbol_index.html").not.toBe("");
    expect(content).not.toContain("{@link");
    const row = (kernel: string) => {
      const m = new RegExp(`<tr>\\s*<td><code>${kernel.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}</code></td>\\s*<td>(.*?)</td>`, "s").exec(
        content,
      );
      return m?.[1] ?? "";
    };
    expect(row("migrate_vma_setup")).toContain('href="../classes/_hmmkit_core.MigrateDevice.html#migratevmasetup"');
    expect(row("memremap_pages")).toContain('href="../classes/_hmmkit_core.Memremap.html#memremappages"');
    expect(row("hmm_range_fault")).toContain('href="../functions/_hmmkit_core.hmmRangeFault.html"');
    expect(row("MIGRATE_PFN_COMPOUND")).toContain('href="../variables/_hmmkit_core.MIGRATE_PFN.html#compound"');
    expect(row("struct dev_pagemap_ops")).toContain('href="../interfaces/_hmmkit_core.DevPagemapOps.html"');
    for (const kernel of Object.keys(KEY)) expect(row(kernel), kernel).not.toBe("");
  });

  it("has a target for every link: the file exists and so does the anchor", () => {
    const hrefs = [...content.matchAll(/<a href="([^"]+)"/g)].map((m) => m[1] as string);
    const internal = hrefs.filter((h) => !/^[a-z]+:/i.test(h) && !h.startsWith("#"));
    expect(internal.length).toBeGreaterThan(500);
    const cache = new Map<string, string>();
    const broken: string[] = [];
    for (const href of new Set(internal)) {
      const [file, anchor] = href.split("#") as [string, string | undefined];
      const target = path.resolve(path.dirname(INDEX_PAGE), decodeURI(file));
      if (!target.startsWith(SITE) || !existsSync(target)) {
        broken.push(`${href} (no file)`);
        continue;
      }
      if (anchor) {
        let text = cache.get(target);
        if (text === undefined) cache.set(target, (text = readFileSync(target, "utf8")));
        if (!text.includes(`id="${anchor}"`)) broken.push(`${href} (no anchor)`);
      }
    }
    expect(broken).toEqual([]);
  });
});

describe("guides", () => {
  const page = (name: string) => readFileSync(path.join(SITE, "documents", `${name}.html`), "utf8");

  it.each(["Concepts", "Write_your_first_driver", "Write_a_migration_policy", "Import_a_trace", "Kernel_symbol_index"])(
    "%s is in the site",
    (name) => {
      expect(existsSync(path.join(SITE, "documents", `${name}.html`))).toBe(true);
    },
  );

  it("the tutorial shows the code of examples/tutorial, included at build time", () => {
    const html = page("Write_your_first_driver");
    expect(html).not.toContain("includeCode");
    const text = html
      .replace(/<[^>]+>/g, "")
      .replace(/&quot;/g, '"')
      .replace(/&lt;/g, "<")
      .replace(/&gt;/g, ">")
      .replace(/&amp;/g, "&");
    const driver = readFileSync(path.join(ROOT, "examples/tutorial/tiny-driver.ts"), "utf8");
    // Every non-blank line of every region of the driver appears in the page.
    const regionLines = driver
      .split("\n")
      .filter((l) => l.trim() !== "" && !l.includes("#region") && !l.includes("#endregion"))
      .filter((l) => !l.startsWith("/**") && !l.startsWith(" *"));
    const missing = regionLines.map((l) => l.trim()).filter((l) => !text.includes(l));
    expect(missing).toEqual([]);
  });
});
