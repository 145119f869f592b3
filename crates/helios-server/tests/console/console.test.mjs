// The web console (/console) of a real `helios serve`, driven in headless
// Chromium: it must render, update live without a reload, and its panel must
// subscribe, publish and call methods. A screenshot goes to artifacts/.
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, "../../../..");
const artifacts = path.join(here, "artifacts");
const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const heliosBin = process.env.HELIOS_BIN ?? path.join(repoRoot, "target", "debug", "helios");

let helios, base, context, profile;

function startHelios() {
  if (!process.env.HELIOS_BIN) {
    const r = spawnSync("cargo", ["build", "--bin", "helios"], { cwd: repoRoot, encoding: "utf8", timeout: 30 * 60_000 });
    if (r.status !== 0) throw new Error(`cargo build failed:\n${(r.stderr ?? "").slice(-3000)}`);
  }
  assert.ok(existsSync(heliosBin), `no binary at ${heliosBin}`);
  const child = spawn(heliosBin, ["serve", "--bind", "127.0.0.1:0", "--log-format", "text"], {
    stdio: ["ignore", "ignore", "pipe"],
    env: { ...process.env, NO_COLOR: "1" },
  });
  return new Promise((resolve, reject) => {
    let log = "";
    const timer = setTimeout(() => reject(new Error(`helios did not start:\n${log}`)), 30_000);
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk) => {
      log += chunk;
      const m = /WebSocket at ws:\/\/([0-9.]+:\d+)\//.exec(log);
      if (m) {
        clearTimeout(timer);
        resolve({ child, addr: m[1] });
      }
    });
    child.on("exit", (code) => reject(new Error(`helios exited (${code}):\n${log}`)));
  });
}

before(async () => {
  const started = await startHelios();
  helios = started.child;
  base = `http://${started.addr}`;
  profile = mkdtempSync(path.join(os.tmpdir(), "helios-console-"));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1280, height: 900 },
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
});

after(async () => {
  await context?.close().catch(() => {});
  helios?.kill("SIGTERM");
  if (profile) rmSync(profile, { recursive: true, force: true });
});

test("the console renders, updates live and drives a connection", { timeout: 120_000 }, async () => {
  const page = context.pages()[0] ?? (await context.newPage());
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });

  await page.goto(`${base}/console`);
  await page.waitForFunction(() => document.getElementById("status").textContent === "live", null, { timeout: 10_000 });
  assert.equal(await page.textContent("#c-conns"), "0");
  assert.match(await page.textContent("#conns"), /no connections/);

  // Connect from the panel: the connections table updates without a reload.
  await page.click("#connect");
  await page.waitForFunction(() => document.getElementById("c-conns").textContent === "1", null, { timeout: 10_000 });
  await page.waitForFunction(() => document.getElementById("me").textContent.startsWith("you are"), null, { timeout: 10_000 });

  // Subscribe, then publish: the delivery shows in the log, the room in the table.
  await page.fill("#sub-topic", "chat:lobby");
  await page.click("#f-sub button");
  await page.waitForFunction(() => /chat:lobby/.test(document.getElementById("rooms").textContent), null, { timeout: 10_000 });
  const roomRow = await page.textContent("#rooms");
  assert.match(roomRow, /chat:lobby\s*1/);

  await page.fill("#pub-topic", "chat:lobby");
  for (let i = 0; i < 6; i++) {
    await page.fill("#pub-data", JSON.stringify({ text: `hello ${i}` }));
    await page.click("#f-pub button");
    await page.waitForTimeout(150);
  }
  await page.waitForFunction(() => /◆ chat:lobby \{"text":"hello 5"\}/.test(document.getElementById("log").textContent), null, { timeout: 10_000 });

  // Call a method by hand.
  await page.fill("#call-method", "system:ping");
  await page.fill("#call-payload", "{}");
  await page.click("#f-call button");
  await page.waitForFunction(() => /"pong":true/.test(document.getElementById("log").textContent), null, { timeout: 10_000 });

  // An unknown method comes back as an error line.
  await page.fill("#call-method", "nope:missing");
  await page.click("#f-call button");
  await page.waitForFunction(() => /METHOD_NOT_FOUND/.test(document.getElementById("log").textContent), null, { timeout: 10_000 });

  // The rate cards and the chart fill in from polled counters.
  await page.waitForFunction(() => Number(document.getElementById("c-in").textContent) >= 0, null, { timeout: 10_000 });
  const drawn = await page.evaluate(() => {
    const c = document.getElementById("chart");
    const data = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let colored = 0;
    for (let i = 0; i < data.length; i += 4) if (data[i + 3] > 0) colored++;
    return colored;
  });
  assert.ok(drawn > 500, `chart looks empty (${drawn} painted pixels)`);

  mkdirSync(artifacts, { recursive: true });
  await page.waitForTimeout(1500); // a few more chart samples
  await page.screenshot({ path: path.join(artifacts, "console.png"), fullPage: true });

  // Disconnect: the table empties again, live.
  await page.click("#disconnect");
  await page.waitForFunction(() => document.getElementById("c-conns").textContent === "0", null, { timeout: 10_000 });
  assert.deepEqual(errors, []);
});
