/**
 * `pnpm run create:driver`: scaffold a driver package into a temporary directory and run its
 * generated test (and typecheck) there, as a user would right after generating it.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { driverNames } from "../../scripts/create-driver.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const tmp = mkdtempSync(path.join(tmpdir(), "hmmkit-create-driver-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe("create:driver", () => {
  it("derives the package, class and file names, and rejects a bad name", () => {
    expect(driverNames("my-gpu")).toEqual({ name: "my-gpu", pkg: "drivers-my-gpu", className: "MyGpuDriver", file: "my-gpu-driver" });
    expect(() => driverNames("My_GPU")).toThrow(/kebab-case/);
  });

  it("generates a package whose test passes and which typechecks", () => {
    const out = path.join(tmp, "drivers-demo-gpu");
    const gen = spawnSync(process.execPath, [path.join(ROOT, "scripts/create-driver.mjs"), "demo-gpu", "--out", out], {
      cwd: ROOT,
      encoding: "utf8",
      env: { ...process.env, INIT_CWD: ROOT },
    });
    expect(gen.status, gen.stderr).toBe(0);
    for (const f of [
      "package.json",
      "tsconfig.json",
      "vitest.config.ts",
      "README.md",
      "src/demo-gpu-driver.ts",
      "src/demo-gpu-driver.test.ts",
    ]) {
      expect(existsSync(path.join(out, f)), f).toBe(true);
    }
    const driver = readFileSync(path.join(out, "src/demo-gpu-driver.ts"), "utf8");
    expect(driver).toContain("export class DemoGpuDriver");
    expect(driver).not.toContain("#region");
    expect(JSON.parse(readFileSync(path.join(out, "package.json"), "utf8")).name).toBe("drivers-demo-gpu");

    // A second run refuses to overwrite.
    const again = spawnSync(process.execPath, [path.join(ROOT, "scripts/create-driver.mjs"), "demo-gpu", "--out", out], {
      encoding: "utf8",
    });
    expect(again.status).not.toBe(0);
    expect(again.stderr).toMatch(/not empty/);

    const env: NodeJS.ProcessEnv = { ...process.env, CI: "true", FORCE_COLOR: "0" };
    delete env.VITEST;
    delete env.VITEST_POOL_ID;
    delete env.VITEST_WORKER_ID;
    delete env.NODE_OPTIONS;
    const test = spawnSync(process.execPath, [path.join(out, "node_modules/.bin/vitest"), "run"], {
      cwd: out,
      encoding: "utf8",
      env,
      timeout: 120_000,
    });
    expect(test.status, `${test.stdout}\n${test.stderr}`).toBe(0);
    expect(test.stdout).toMatch(/2 passed/);

    const tsc = spawnSync(process.execPath, [path.join(out, "node_modules/.bin/tsc"), "--noEmit", "-p", "tsconfig.json"], {
      cwd: out,
      encoding: "utf8",
      timeout: 120_000,
    });
    expect(tsc.status, tsc.stdout).toBe(0);
  });
});
