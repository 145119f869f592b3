// Starts a real `helios` binary for the tests, and a TCP proxy that can cut
// the link between a client and it.
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
/** The repository root (clients/js is two levels below it). */
export const repoRoot = path.resolve(here, "../../../..");
/** The server binary; `HELIOS_BIN` points at another build and skips cargo. */
export const heliosBin = process.env.HELIOS_BIN ?? path.join(repoRoot, "target", "release", "helios");

/** A secret for the recovery tests (at least 32 bytes). */
export const RECOVERY_SECRET = "starling-js-tests-recovery-secret-0123456789abcdef";

const built = new Set();

/**
 * Builds the server with `cargo build --release --bin helios` (a no-op when
 * it is up to date). Throws with cargo's output when the build fails.
 */
export function buildHelios() {
  if (process.env.HELIOS_BIN) return;
  cargoBuild(["--bin", "helios"], heliosBin);
}

/** The file drop example server (streams), built on first use. */
export const fileDropBin = path.join(repoRoot, "target", "release", "example-file-drop");

function cargoBuild(what, bin) {
  const key = what.join(" ");
  if (built.has(key)) return;
  const timeoutMs = Number(process.env.HELIOS_BUILD_TIMEOUT_MS ?? 40 * 60_000);
  const r = spawnSync("cargo", ["build", "--release", ...what], {
    cwd: repoRoot,
    encoding: "utf8",
    timeout: timeoutMs,
    stdio: ["ignore", "pipe", "pipe"],
  });
  if (r.error) throw new Error(`cargo build failed to run: ${r.error.message}`);
  if (r.status !== 0 || !existsSync(bin)) {
    const out = `${r.stdout ?? ""}${r.stderr ?? ""}`.trim().split("\n").slice(-25).join("\n");
    throw new Error(`cargo build --release ${key} failed (status ${r.status}):\n${out}`);
  }
  built.add(key);
}

/** Starts the file drop example on a free port (see examples/file-drop). */
export async function startFileDrop() {
  cargoBuild(["-p", "example-file-drop"], fileDropBin);
  const port = await freePort();
  return spawnServer(fileDropBin, ["--bind", `127.0.0.1:${port}`], { ...process.env, RUST_LOG: "warn" }, port, "example-file-drop");
}

/** A free TCP port on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function canConnect(port) {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: "127.0.0.1" });
    const done = (ok) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(500, () => done(false));
    s.once("connect", () => done(true));
    s.once("error", () => done(false));
  });
}

/**
 * Starts `helios serve --bind 127.0.0.1:PORT` and waits (at most 20 s) until
 * it accepts connections.
 *
 * `config` is the text of a TOML file passed with `--config`; `port` reuses
 * a port (a restarted server).
 *
 * @param {{env?: Record<string,string>, recovery?: boolean, args?: string[], config?: string, port?: number}} [opts]
 */
export async function startHelios(opts = {}) {
  buildHelios();
  const port = opts.port ?? (await freePort());
  const env = { ...process.env, HELIOS_LOG_LEVEL: process.env.HELIOS_LOG_LEVEL ?? "warn", ...(opts.env ?? {}) };
  delete env.HELIOS_RECOVERY_SECRET;
  if (opts.recovery) env.HELIOS_RECOVERY_SECRET = RECOVERY_SECRET;
  const args = ["serve", "--bind", `127.0.0.1:${port}`, ...(opts.args ?? [])];
  if (opts.config !== undefined) {
    const file = path.join(mkdtempSync(path.join(os.tmpdir(), "starling-helios-")), "helios.toml");
    writeFileSync(file, opts.config);
    args.push("--config", file);
  }
  return spawnServer(heliosBin, args, env, port, "helios");
}

/** Spawns a server and waits (at most 20 s) until it accepts connections on `port`. */
async function spawnServer(bin, args, env, port, what) {
  const child = spawn(bin, args, {
    cwd: repoRoot,
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let log = "";
  const keep = (chunk) => {
    log = (log + chunk.toString()).slice(-20_000);
  };
  child.stdout.on("data", keep);
  child.stderr.on("data", keep);
  let exited = null;
  child.once("exit", (code, signal) => {
    exited = { code, signal };
  });
  const deadline = Date.now() + 20_000;
  while (!(await canConnect(port))) {
    if (exited) throw new Error(`${what} exited (${JSON.stringify(exited)}) before listening:\n${log}`);
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`${what} did not listen on 127.0.0.1:${port} within 20 s:\n${log}`);
    }
    await sleep(50);
  }
  return {
    port,
    url: `ws://127.0.0.1:${port}/ws`,
    get log() {
      return log;
    },
    get exited() {
      return exited;
    },
    /** Stops the server (SIGTERM, then SIGKILL after 5 s). */
    async stop() {
      if (exited) return;
      const gone = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      const t = setTimeout(() => child.kill("SIGKILL"), 5000);
      await gone;
      clearTimeout(t);
    },
  };
}

/**
 * A TCP proxy on 127.0.0.1 in front of `targetPort`. `cut()` destroys every
 * proxied connection (the client sees an abnormal close); while `down` is
 * set, new connections are closed at once.
 */
export async function startProxy(targetPort) {
  const pairs = new Set();
  const accepts = [];
  let down = false;
  const server = net.createServer((client) => {
    accepts.push(Date.now());
    if (down) {
      client.resetAndDestroy();
      return;
    }
    const upstream = net.connect({ port: targetPort, host: "127.0.0.1" });
    const pair = { client, upstream, frozen: false };
    pairs.add(pair);
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on("error", end).on("close", end);
    upstream.on("error", end).on("close", end);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const { port } = server.address();
  return {
    port,
    url: `ws://127.0.0.1:${port}/ws`,
    /** Times at which connections were accepted. */
    accepts,
    get open() {
      return pairs.size;
    },
    set down(v) {
      down = v;
    },
    get down() {
      return down;
    },
    /**
     * Freezes the current connections, as a dead link would: `up` stops
     * forwarding client → server (the server's pings go unanswered), `down`
     * server → client (what the server sends stays in buffers). Returns a
     * handle to `release()` them or `cut()` just them.
     */
    freeze({ up = true, down = true } = {}) {
      const frozen = [...pairs];
      for (const p of frozen) {
        p.frozen = true;
        if (up) {
          p.client.unpipe(p.upstream);
          p.client.pause();
        }
        if (down) {
          p.upstream.unpipe(p.client);
          p.upstream.pause();
        }
      }
      return {
        release() {
          for (const p of frozen) {
            if (up) p.client.pipe(p.upstream);
            if (down) p.upstream.pipe(p.client);
          }
        },
        cut() {
          for (const p of frozen) {
            pairs.delete(p);
            p.client.resetAndDestroy();
            p.upstream.destroy();
          }
        },
      };
    },
    /** Breaks every proxied connection, as a network failure would. */
    cut() {
      for (const { client, upstream } of pairs) {
        client.resetAndDestroy();
        upstream.destroy();
      }
      pairs.clear();
    },
    close() {
      this.cut();
      return new Promise((r) => server.close(() => r()));
    },
  };
}

/**
 * A WebSocket constructor (the `ws` package) that records the URL of every
 * socket it opens and counts the frames sent, for the tests to inspect.
 */
export async function recordingWebSocket() {
  const { WebSocket } = await import("ws");
  const urls = [];
  const sent = [];
  class Recording extends WebSocket {
    constructor(url, protocols) {
      super(url, protocols);
      urls.push(url);
    }
    send(data, ...rest) {
      sent.push(typeof data === "string" ? data : String(data));
      return super.send(data, ...rest);
    }
  }
  return { WebSocket: Recording, urls, sent };
}

/** A signed HS256 JWT with `claims` (for `--auth-jwt-secret`). */
export async function signJwt(claims, secret) {
  const { createHmac } = await import("node:crypto");
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}`;
  return `${body}.${createHmac("sha256", secret).update(body).digest("base64url")}`;
}

export function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls `pred` every 10 ms until it is truthy; fails after `ms`. */
export async function waitFor(pred, ms, what) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await pred();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(10);
  }
}

/** Resolves with the next `event` of a Starling client; fails after `ms`. */
export function nextEvent(client, event, ms = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no ${event} event within ${ms} ms`));
    }, ms);
    const off = client.once(event, (arg) => {
      clearTimeout(timer);
      resolve(arg);
    });
  });
}
