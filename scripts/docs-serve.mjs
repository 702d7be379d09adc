#!/usr/bin/env node
/**
 * `pnpm run docs:serve`: serve the API site (docs/api, built by `pnpm run docs`) on localhost with
 * a tiny node:http static server, no dependency, so that the site behaves as it does when published
 * (browsers restrict what file:// pages may load). Loopback only by default.
 *
 * Usage: node scripts/docs-serve.mjs [--port N] [--host H] [--dir DIR] [--build]
 *   --port N   port to listen on (default: $DOCS_PORT, else 8080; 0 picks a free port)
 *   --host H   address to bind (default 127.0.0.1: loopback only)
 *   --dir DIR  directory to serve (default docs/api)
 *   --build    run `pnpm run docs` first (otherwise the site must exist)
 * Prints `docs: serving DIR at http://HOST:PORT/` and runs until interrupted.
 *
 * As a module: `startDocsServer({ root, port = 0, host })` resolves to `{ url, port, close() }`
 * (used by test/docs/site.test.ts with port 0).
 */
import { spawnSync } from "node:child_process";
import { createReadStream, existsSync, statSync } from "node:fs";
import { createServer } from "node:http";
import path from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
export const DEFAULT_SITE = path.join(ROOT, "docs", "api");

const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".jpg": "image/jpeg",
  ".ico": "image/x-icon",
  ".woff2": "font/woff2",
  ".txt": "text/plain; charset=utf-8",
  ".md": "text/markdown; charset=utf-8",
};

/**
 * Resolve a request path to a file under `root`, or undefined (outside root, or missing).
 * @param {string} root
 * @param {string} urlPath
 */
function resolveFile(root, urlPath) {
  let rel;
  try {
    rel = decodeURIComponent(urlPath.split("?")[0]?.split("#")[0] ?? "/");
  } catch {
    return undefined;
  }
  const file = path.resolve(root, `.${path.posix.normalize(`/${rel}`)}`);
  if (file !== root && !file.startsWith(root + path.sep)) return undefined;
  if (!existsSync(file)) return undefined;
  const st = statSync(file);
  if (st.isDirectory()) {
    const index = path.join(file, "index.html");
    return existsSync(index) ? index : undefined;
  }
  return st.isFile() ? file : undefined;
}

/**
 * Start serving `root`.
 * @param {{ root?: string, port?: number, host?: string }} [opts]
 * @returns {Promise<{ url: string, port: number, close: () => Promise<void> }>}
 */
export function startDocsServer({ root = DEFAULT_SITE, port = 0, host = "127.0.0.1" } = {}) {
  const dir = path.resolve(root);
  if (!existsSync(path.join(dir, "index.html"))) {
    return Promise.reject(new Error(`docs-serve: ${dir}/index.html not found; build the site with \`pnpm run docs\``));
  }
  const server = createServer((req, res) => {
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD" }).end();
      return;
    }
    const file = resolveFile(dir, req.url ?? "/");
    if (!file) {
      res.writeHead(404, { "content-type": "text/plain; charset=utf-8" }).end(`404 not found: ${req.url}\n`);
      return;
    }
    const type = TYPES[path.extname(file).toLowerCase()] ?? "application/octet-stream";
    res.writeHead(200, { "content-type": type, "content-length": statSync(file).size, "cache-control": "no-cache" });
    if (req.method === "HEAD") res.end();
    else createReadStream(file).pipe(res);
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      const addr = server.address();
      const actual = typeof addr === "object" && addr ? addr.port : port;
      const shownHost = host.includes(":") ? `[${host}]` : host;
      resolve({
        url: `http://${shownHost}:${actual}/`,
        port: actual,
        close: () =>
          new Promise((done) => {
            server.closeAllConnections?.();
            server.close(() => done());
          }),
      });
    });
  });
}

async function main() {
  const args = process.argv.slice(2);
  let port = process.env.DOCS_PORT ? Number(process.env.DOCS_PORT) : 8080;
  let host = "127.0.0.1";
  let root = DEFAULT_SITE;
  let build = false;
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--port") port = Number(args[++i]);
    else if (a?.startsWith("--port=")) port = Number(a.slice(7));
    else if (a === "--host") host = args[++i] ?? host;
    else if (a === "--dir") root = path.resolve(args[++i] ?? root);
    else if (a === "--build") build = true;
    else if (a === "--help" || a === "-h") {
      console.log("usage: node scripts/docs-serve.mjs [--port N] [--host H] [--dir DIR] [--build]");
      return;
    } else throw new Error(`docs-serve: unknown argument ${a}`);
  }
  if (!Number.isInteger(port) || port < 0 || port > 65535)
    throw new Error(`docs-serve: --port must be an integer in 0..65535, got ${port}`);
  if (build) {
    const r = spawnSync("npx", ["-y", "pnpm@10.34.9", "run", "docs"], { cwd: ROOT, stdio: "inherit" });
    if (r.status !== 0) process.exit(r.status ?? 1);
  }
  const { url, close } = await startDocsServer({ root, port, host });
  console.log(`docs: serving ${path.relative(process.cwd(), root) || "."} at ${url}  (Ctrl-C to stop)`);
  const stop = () => close().then(() => process.exit(0));
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((err) => {
    console.error(err instanceof Error ? err.message : err);
    process.exit(1);
  });
}
