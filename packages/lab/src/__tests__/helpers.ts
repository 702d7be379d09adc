/**
 * Test helpers: small scenarios, an in-memory CLI I/O, and an XML well-formedness checker for the
 * SVG/HTML reports (no parser dependency).
 */
import { HmmError } from "@hmmkit/core";
import { expect } from "vitest";
import type { CliIo } from "../cli";
import { type ResolvedScenario, type Scenario, validateScenario } from "../scenario";

/** A small two-GPU GPU scenario (fast). */
export function smallGpuScenario(over: Partial<Scenario> & { workload?: Scenario["workload"] } = {}): ResolvedScenario {
  return validateScenario({
    name: "small",
    seed: 7,
    platform: { gpus: [{ vramMiB: 4 }, { vramMiB: 4 }], peerLinks: [{ gpus: [0, 1], preset: "nvlink3" }] },
    policy: { name: "tree-prefetch" },
    workload: { kind: "stream", workingSetMiB: 5, warps: 4 },
    ...over,
  } as Scenario);
}

/** The `arg` (field path) of the HmmError `fn` throws. */
export function errArg(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    if (e instanceof HmmError) return e.arg;
    throw e;
  }
  throw new Error("expected an HmmError");
}

/** The HmmError a promise rejects with. */
export async function rejection(p: Promise<unknown>): Promise<HmmError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof HmmError) return e;
    throw e;
  }
  throw new Error("expected a rejection");
}

/** An in-memory CLI I/O over a virtual file system. */
export class MemIo implements CliIo {
  out = "";
  err = "";
  readonly files = new Map<string, Uint8Array>();
  constructor(
    readonly cwd = "/w",
    readonly stderrIsTTY = false,
  ) {}
  stdout(t: string): void {
    this.out += t;
  }
  stderr(t: string): void {
    this.err += t;
  }
  readFile(p: string): Uint8Array {
    const f = this.files.get(p);
    if (f === undefined) throw new Error(`ENOENT ${p}`);
    return f;
  }
  exists(p: string): boolean {
    return this.files.has(p);
  }
  writeFile(p: string, d: string): void {
    this.files.set(p, new TextEncoder().encode(d));
  }
  text(p: string): string {
    return new TextDecoder().decode(this.readFile(p));
  }
  put(p: string, d: string | object): void {
    this.files.set(p, new TextEncoder().encode(typeof d === "string" ? d : JSON.stringify(d)));
  }
  private t = 0;
  nowMs(): number {
    return (this.t += 1000);
  }
}

const VOID = new Set(["meta", "br", "hr", "img", "input", "link"]);

/**
 * Check that markup is well formed: every tag closed in order, attributes quoted, no stray `<`.
 * (HTML void elements and `<!DOCTYPE>` are allowed.)
 */
export function expectWellFormed(markup: string): void {
  const stack: string[] = [];
  const re = /<(\/?)([A-Za-z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>|<!DOCTYPE html>|<(?![/A-Za-z!])/g;
  let m: RegExpExecArray | null;
  let last = 0;
  // Script content (JSON) is skipped wholesale: its `<` are escaped as \u003c.
  const text = markup.replace(/(<script[^>]*>)[\s\S]*?(<\/script>)/g, "$1$2");
  while ((m = re.exec(text)) !== null) {
    const between = text.slice(last, m.index);
    expect(between.includes(">"), `stray '>' before offset ${m.index}: ${between.slice(-40)}`).toBe(false);
    last = re.lastIndex;
    if (m[0] === "<!DOCTYPE html>") continue;
    if (m[2] === undefined) throw new Error(`stray '<' at ${m.index}: ${text.slice(m.index, m.index + 40)}`);
    const name = m[2].toLowerCase();
    if (m[1] === "/") {
      expect(stack.pop(), `closing </${name}> at ${m.index}`).toBe(name);
    } else if (m[4] !== "/" && !VOID.has(name)) {
      stack.push(name);
    }
  }
  expect(stack).toEqual([]);
}
