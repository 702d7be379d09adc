/**
 * Vitest config of the docs tests (`pnpm run test:docs`): the kernel-symbol index and its links,
 * the guides' included code, the driver scaffold, and the site in headless Chromium. Separate from
 * the root config because these need the built site (global-setup.ts builds it when missing).
 */
import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    root: new URL("../..", import.meta.url).pathname,
    include: ["test/docs/**/*.test.ts"],
    globalSetup: ["test/docs/global-setup.ts"],
    pool: "forks",
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 300_000,
  },
});
