// The client in real headless Chromium (playwright-core) against a live helios.
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { sleep, startFileDrop, startHelios, startProxy } from "./helpers/server.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const pkgRoot = path.resolve(here, "..");
const artifacts = path.join(pkgRoot, "test-artifacts");
const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

const TYPES = { ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".map": "application/json", ".ts": "text/plain" };

/** Serves the test page at / and the built client at /dist/. */
function startStatic() {
  const srv = http.createServer((req, res) => {
    const url = new URL(req.url, "http://127.0.0.1");
    let file;
    if (url.pathname === "/favicon.ico") {
      res.writeHead(204).end();
      return;
    }
    if (url.pathname === "/" || url.pathname === "/index.html") file = path.join(here, "browser", "index.html");
    else if (url.pathname.startsWith("/dist/")) file = path.join(pkgRoot, path.normalize(url.pathname).replace(/^([/\\])+/, ""));
    if (!file || !file.startsWith(pkgRoot) || !existsSync(file)) {
      res.writeHead(404).end("not found");
      return;
    }
    res.writeHead(200, { "content-type": TYPES[path.extname(file)] ?? "application/octet-stream", "cache-control": "no-store" });
    res.end(readFileSync(file));
  });
  return new Promise((resolve) => srv.listen(0, "127.0.0.1", () => resolve(srv)));
}

describe("browser (headless Chromium)", { timeout: 45 * 60_000 }, () => {
  let server;
  let fileDrop;
  let proxy;
  let web;
  let base;
  let context;
  let profile;
  const pageLogs = [];

  before(async () => {
    server = await startHelios({ recovery: true });
    fileDrop = await startFileDrop();
    proxy = await startProxy(server.port);
    web = await startStatic();
    base = `http://127.0.0.1:${web.address().port}`;
    mkdirSync(artifacts, { recursive: true });
    profile = mkdtempSync(path.join(os.tmpdir(), "starling-chromium-"));
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      timeout: 60_000,
      viewport: { width: 1000, height: 640 },
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    });
    context.setDefaultTimeout(15_000);
  }, { timeout: 45 * 60_000 });

  after(async () => {
    await context?.close().catch(() => {});
    if (profile) rmSync(profile, { recursive: true, force: true });
    await proxy?.close();
    await new Promise((r) => (web ? web.close(() => r()) : r()));
    await server?.stop();
    await fileDrop?.stop();
  });

  /** Opens the test page as client `who`, connected to `url`. */
  async function openPage(who, url) {
    const page = await context.newPage();
    page.on("console", (m) => pageLogs.push(`[${who}] ${m.type()}: ${m.text()}`));
    page.on("pageerror", (e) => pageLogs.push(`[${who}] pageerror: ${e.message}`));
    await page.goto(`${base}/`);
    await page.waitForFunction(() => window.ready === true, null, { timeout: 10_000 });
    const welcome = await page.evaluate(
      async ([w, u]) => {
        const c = window.makeClient(w, u);
        const welcome = await c.connect();
        log("connect() resolved", welcome);
        return welcome;
      },
      [who, url],
    );
    return { page, welcome };
  }

  async function shot(page, name) {
    await page.screenshot({ path: path.join(artifacts, `browser-${name}.png`), fullPage: true });
  }

  const failHelp = () => `\npage logs:\n${pageLogs.slice(-30).join("\n")}`;

  test("a page uploads a file as a stream and downloads it back", { timeout: 60_000 }, async () => {
    const { page } = await openPage("files", fileDrop.url);
    try {
      const out = await page.evaluate(async () => {
        const body = new Uint8Array(300_001);
        for (let i = 0; i < body.length; i++) body[i] = (i * 7 + (i >> 8)) & 0xff;
        const up = client.requestStreaming("files:put", {}, { name: "from-browser.bin", size: body.length });
        await up.stream.write(body);
        await up.stream.end();
        const stored = await up.response;
        const down = client.requestWithStream("files:get", { name: "from-browser.bin" });
        const file = await down.stream;
        const got = await file.readAll();
        await down.response;
        const same = got.length === body.length && got.every((b, i) => b === body[i]);
        log("uploaded", stored, "downloaded", got.length, "same", same);
        return { stored, name: file.name, size: file.size, same };
      });
      assert.deepEqual(out, {
        stored: { name: "from-browser.bin", bytes: 300_001 },
        name: "from-browser.bin",
        size: 300_001,
        same: true,
      });
      await shot(page, "streams");
    } catch (e) {
      e.message += failHelp();
      throw e;
    } finally {
      await page.close();
    }
  });

  test("a page connects and makes requests", { timeout: 60_000 }, async () => {
    const { page, welcome } = await openPage("solo", server.url);
    try {
      assert.equal(typeof welcome.starlingId, "string");
      const out = await page.evaluate(async () => {
        const pong = await client.request("system:ping", {});
        const echo = await client.request("system:echo", { hello: "browser", n: [1, 2, 3] });
        let missing;
        try {
          await client.request("nothing:here", {});
        } catch (e) {
          missing = { name: e.name, code: e.code, isStarlingError: e instanceof starling.StarlingError };
        }
        const ac = new AbortController();
        ac.abort();
        let cancelled;
        try {
          await client.request("system:ping", {}, { signal: ac.signal });
        } catch (e) {
          cancelled = e.code;
        }
        log("ping", pong, "echo", echo, "missing", missing);
        return { pong, echo, missing, cancelled, uuid: crypto.randomUUID() };
      });
      assert.equal(out.pong.pong, true);
      assert.deepEqual(out.echo, { hello: "browser", n: [1, 2, 3] });
      assert.deepEqual(out.missing, { name: "StarlingError", code: "METHOD_NOT_FOUND", isStarlingError: true });
      assert.equal(out.cancelled, "REQUEST_CANCELLED");
      await shot(page, "request");
    } catch (e) {
      e.message += failHelp();
      throw e;
    } finally {
      await page.close();
    }
  });

  test("two pages talk through a room", { timeout: 60_000 }, async () => {
    const a = await openPage("room-a", server.url);
    const b = await openPage("room-b", server.url);
    try {
      for (const { page } of [a, b]) {
        await page.evaluate(async () => {
          window.got = [];
          await client.subscribe("chat:browser", (data, meta) => {
            window.got.push({ data, offset: meta.offset });
            log("chat:browser ←", data);
          });
          log("subscribed to chat:browser");
        });
      }
      const delivered = await b.page.evaluate(async () => {
        const r1 = await client.publish("chat:browser", { from: "b", text: "hello from page B" });
        return r1.delivered;
      });
      assert.equal(delivered, 2);
      await a.page.evaluate(() => client.publish("chat:browser", { from: "a", text: "hi B, this is A" }));
      for (const { page } of [a, b]) {
        const got = await page.evaluate(() => waitUntil(() => window.got.length >= 2 && window.got, 5000, "two deliveries"));
        assert.deepEqual(
          got.map((g) => g.data.from),
          ["b", "a"],
        );
      }
      const presence = await a.page.evaluate(() => client.presence("chat:browser"));
      const text = JSON.stringify(presence);
      assert.ok(text.includes(a.welcome.starlingId) && text.includes(b.welcome.starlingId), `presence ${text}`);
      await shot(a.page, "room-a");
      await shot(b.page, "room-b");
    } catch (e) {
      e.message += failHelp();
      throw e;
    } finally {
      await a.page.close();
      await b.page.close();
    }
  });

  test("a request reaches a page through the peer relay", { timeout: 60_000 }, async () => {
    const a = await openPage("peer-a", server.url);
    const b = await openPage("peer-b", server.url);
    try {
      await a.page.evaluate(async () => {
        await client.identify("a");
        client.method("ui:greet", (payload, ctx) => {
          log("ui:greet called by", ctx.peer ?? "server", "with", payload);
          return { greeting: `hello ${payload.name}`, title: document.title };
        });
        client.method("ui:fail", () => {
          throw new Error("nope");
        });
        log("identified as a; methods ui:greet, ui:fail");
      });
      const out = await b.page.evaluate(async () => {
        const r = await client.request("ui:greet", { name: "b" }, { peer: { name: "a" } });
        let failCode;
        try {
          await client.request("ui:fail", {}, { peer: { name: "a" } });
        } catch (e) {
          failCode = e.code;
        }
        let missingCode;
        try {
          await client.request("ui:missing", {}, { peer: { name: "a" } });
        } catch (e) {
          missingCode = e.code;
        }
        log("ui:greet →", r, "ui:fail →", failCode, "ui:missing →", missingCode);
        return { r, failCode, missingCode };
      });
      assert.deepEqual(out.r, { greeting: "hello b", title: "Starling browser test" });
      assert.equal(out.failCode, "METHOD_ERROR");
      assert.equal(out.missingCode, "METHOD_NOT_FOUND");
      await shot(a.page, "peer-a");
      await shot(b.page, "peer-b");
    } catch (e) {
      e.message += failHelp();
      throw e;
    } finally {
      await a.page.close();
      await b.page.close();
    }
  });

  test("a page recovers its session after the socket is cut", { timeout: 60_000 }, async () => {
    const a = await openPage("recover-a", proxy.url);
    const b = await openPage("recover-b", server.url);
    try {
      await a.page.evaluate(async () => {
        window.got = [];
        await client.subscribe("news:browser", (data) => {
          window.got.push(data);
          log("news:browser ←", data);
        });
      });
      await b.page.evaluate(() => client.publish("news:browser", "before the cut"));
      await a.page.evaluate(() => waitUntil(() => window.got.length === 1, 5000, "first delivery"));
      await sleep(200);
      await a.page.evaluate(() => waitUntil(() => client.recoveryToken, 5000, "a recovery token"));

      proxy.down = true;
      proxy.cut();
      await a.page.evaluate(() =>
        waitUntil(() => window.events.some((e) => e.ev === "disconnected" && e.arg.willReconnect), 5000, "disconnected"),
      );
      await b.page.evaluate(() => client.publish("news:browser", "missed while cut"));
      await sleep(300);
      proxy.down = false;
      const result = await a.page.evaluate(async () => {
        await waitUntil(() => window.events.some((e) => e.ev === "recovered"), 10_000, "the recovered event");
        await waitUntil(() => window.got.length >= 2, 5000, "the missed message");
        return { got: window.got, id: client.starlingId, state: client.state };
      });
      assert.equal(result.id, a.welcome.starlingId);
      assert.equal(result.state, "open");
      await b.page.evaluate(() => client.publish("news:browser", "live again"));
      const got = await a.page.evaluate(() => waitUntil(() => window.got.length >= 3 && window.got, 5000, "a live message"));
      assert.deepEqual(got, ["before the cut", "missed while cut", "live again"]);
      await shot(a.page, "recovery");
    } catch (e) {
      await shot(a.page, "recovery-failed").catch(() => {});
      e.message += failHelp();
      throw e;
    } finally {
      await a.page.close();
      await b.page.close();
    }
  });
});
