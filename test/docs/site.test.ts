/**
 * The API site as a reader uses it, in a real browser: start the docs server (scripts/docs-serve.mjs,
 * ephemeral port), open the site in headless Chromium (Debian's /usr/bin/chromium driven by
 * playwright-core; CI installs it), type `migrateVmaSetup` in the site's search box, follow the
 * result, and check that the member shows its kernel cross-reference (`migrate_vma_setup` under
 * "See"). Screenshots go to docs/out/ (gitignored). Also follows the kernel-symbol index's row for
 * migrate_vma_setup to the same member.
 *
 * Chromium: $HMMKIT_CHROMIUM or /usr/bin/chromium. Without it the test fails under CI=true and is
 * skipped elsewhere (install: `apt-get install -y chromium`).
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { type BrowserContext, chromium, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startDocsServer } from "../../scripts/docs-serve.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const OUT = path.join(ROOT, "docs/out");
const CHROMIUM = process.env.HMMKIT_CHROMIUM ?? "/usr/bin/chromium";
const haveChromium = existsSync(CHROMIUM);
if (!haveChromium && process.env.CI) throw new Error(`${CHROMIUM} not found: CI must install Debian's chromium (see .ci/run)`);

// The flags known to work on this machine kind: no sandbox as root, no GPU, and no background
// networking (the network is closed; Chromium's own connections would be refused).
const FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

describe.skipIf(!haveChromium)("API site in headless Chromium", () => {
  let server: Awaited<ReturnType<typeof startDocsServer>>;
  let context: BrowserContext;
  let page: Page;
  let profile: string;
  const consoleErrors: string[] = [];

  beforeAll(async () => {
    mkdirSync(OUT, { recursive: true });
    server = await startDocsServer({ root: path.join(ROOT, "docs/api"), port: 0 });
    profile = mkdtempSync(path.join(tmpdir(), "hmmkit-chromium-"));
    // A fresh --user-data-dir: playwright takes it as launchPersistentContext's first argument.
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: FLAGS,
      viewport: { width: 1280, height: 860 },
      timeout: 60_000,
    });
    page = context.pages()[0] ?? (await context.newPage());
    page.on("console", (msg) => {
      if (msg.type() === "error" && !msg.text().startsWith("Failed to load resource")) consoleErrors.push(msg.text());
    });
    // Every request the site makes must succeed (the browser's own /favicon.ico probe aside).
    page.on("response", (res) => {
      if (res.status() >= 400 && new URL(res.url()).pathname !== "/favicon.ico") consoleErrors.push(`${res.status()} ${res.url()}`);
    });
    page.on("pageerror", (err) => consoleErrors.push(String(err)));
  });

  afterAll(async () => {
    await context?.close();
    await server?.close();
    if (profile) rmSync(profile, { recursive: true, force: true });
  });

  it("serves the home page with its navigation", async () => {
    const res = await page.goto(server.url);
    expect(res?.status()).toBe(200);
    await expect(page.title()).resolves.toContain("hmmkit");
    await page.locator("#tsd-nav-container").waitFor({ state: "visible" });
    const nav = await page.locator(".site-menu").textContent();
    expect(nav).toContain("@hmmkit/core");
    expect(nav).toContain("Kernel symbol index");
  });

  it("finds migrateVmaSetup with the search box and shows its kernel cross-reference", async () => {
    await page.goto(server.url);
    await page.locator("#tsd-search-trigger").click();
    const input = page.locator("#tsd-search-input");
    await input.waitFor({ state: "visible" });
    await input.fill("migrateVmaSetup");
    const hit = page.locator("#tsd-search-results li a", { hasText: "migrateVmaSetup" }).first();
    await hit.waitFor({ state: "visible", timeout: 15_000 });
    await page.screenshot({ path: path.join(OUT, "search-migrateVmaSetup.png") });
    await hit.click();
    await page.waitForURL(/MigrateDevice\.html#migratevmasetup$/i, { timeout: 15_000 });

    const member = page.locator("section.tsd-member", { has: page.locator("#migratevmasetup") });
    await member.waitFor({ state: "visible" });
    const text = await member.textContent();
    expect(text).toContain("See");
    expect(text).toContain("migrate_vma_setup");
    const see = member.getByText("migrate_vma_setup", { exact: true });
    await expect(see.isVisible()).resolves.toBe(true);
    await member.scrollIntoViewIfNeeded();
    await page.evaluate(() => document.querySelector("#migratevmasetup")?.scrollIntoView({ block: "start" }));
    await page.screenshot({ path: path.join(OUT, "migrateVmaSetup.png") });
  });

  it("follows the kernel-symbol index from migrate_vma_setup to the same member", async () => {
    await page.goto(new URL("documents/Kernel_symbol_index.html", server.url).href);
    const row = page.locator("tr", { has: page.locator("td:first-child code", { hasText: /^migrate_vma_setup$/ }) });
    await row.first().scrollIntoViewIfNeeded();
    await page.screenshot({ path: path.join(OUT, "kernel-symbol-index.png") });
    await row.first().locator("td").nth(1).locator("a").first().click();
    await page.waitForURL(/MigrateDevice\.html#migratevmasetup$/i);
  });

  it("renders the tutorial with the code included from examples/tutorial", async () => {
    await page.goto(new URL("documents/Write_your_first_driver.html", server.url).href);
    const heading = page.getByRole("heading", { name: /Migrate to the device/ });
    await heading.scrollIntoViewIfNeeded();
    await expect(page.locator("pre code", { hasText: "this.m.migrate.migrateVmaSetup(args)" }).first().isVisible()).resolves.toBe(true);
    await page.evaluate(() => window.scrollBy(0, -40));
    await page.screenshot({ path: path.join(OUT, "tutorial.png") });
  });

  it("logged no script error and no failed request", () => {
    expect(consoleErrors).toEqual([]);
  });
});
