// Close codes against a real helios: 4000–4099 stop reconnection; 1001,
// 4008 and 4100 reconnect and recover the session.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Starling } from "../dist/index.js";
import { buildHelios, nextEvent, recordingWebSocket, signJwt, sleep, startHelios, startProxy, waitFor } from "./helpers/server.mjs";

const BULK = `
[[rooms]]
pattern = "bulk:*"
history = 20000
`;

describe("close codes", { timeout: 45 * 60_000 }, () => {
  const clients = [];
  const proxies = [];
  const servers = [];
  const client = (url, opts = {}) => {
    const c = new Starling(url, { heartbeatInterval: 0, reconnectDelay: 50, maxReconnectDelay: 500, ...opts });
    clients.push(c);
    return c;
  };
  const server = async (opts) => {
    const s = await startHelios(opts);
    servers.push(s);
    return s;
  };
  const proxy = async (port) => {
    const p = await startProxy(port);
    proxies.push(p);
    return p;
  };

  // The tests start their own servers; build once, outside their timeouts.
  before(() => buildHelios(), { timeout: 45 * 60_000 });

  after(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all(proxies.map((p) => p.close()));
    await Promise.all(servers.map((s) => s.stop()));
  });

  test("4001 (credential expired): no reconnection, an UNAUTHORIZED error", { timeout: 30_000 }, async () => {
    const secret = "starling-js-tests-auth-secret-0123456789";
    const s = await server({ args: ["--auth-jwt-secret", secret] });
    const px = await proxy(s.port);
    const token = await signJwt({ sub: "ada", exp: Math.floor(Date.now() / 1000) + 2 }, secret);
    const c = client(`${px.url}?token=${token}`);
    const errors = [];
    c.on("error", (e) => errors.push(e));
    await c.connect();
    const ev = await nextEvent(c, "disconnected", 10_000);
    assert.equal(ev.code, 4001);
    assert.equal(ev.willReconnect, false);
    assert.equal(c.state, "idle");
    const accepts = px.accepts.length;
    await sleep(600);
    assert.equal(px.accepts.length, accepts, "no reconnection attempt");
    assert.ok(errors.some((e) => e.code === "UNAUTHORIZED" && e.details.closeCode === 4001), JSON.stringify(errors.map((e) => e.code)));
    await assert.rejects(c.request("system:ping", {}), { code: "NOT_CONNECTED" });
  });

  test("refreshAuth keeps the connection past the old token and reconnects with the new one", { timeout: 30_000 }, async () => {
    const secret = "starling-js-tests-auth-secret-0123456789";
    const s = await server({ args: ["--auth-jwt-secret", secret] });
    const px = await proxy(s.port);
    const now = Math.floor(Date.now() / 1000);
    const first = await signJwt({ sub: "ada", exp: now + 2 }, secret);
    const c = client(`${px.url}?token=${first}`);
    await c.connect();
    const second = await signJwt({ sub: "ada", exp: now + 120 }, secret);
    const answer = await c.refreshAuth(second);
    assert.equal(answer.user, "ada");
    assert.equal(answer.expiresAt, now + 120);
    const imposter = await signJwt({ sub: "bob", exp: now + 120 }, secret);
    await assert.rejects(c.refreshAuth(imposter), { code: "FORBIDDEN" });
    // Past the first token's expiry the connection stays (no 4001).
    await sleep(2600);
    assert.equal(c.state, "open");
    assert.equal((await c.request("system:ping", {})).pong, true);
    // A cut: the reconnection must carry the new token (the old one expired).
    const accepts = px.accepts.length;
    const back = nextEvent(c, "connected", 10_000);
    px.cut();
    const ev = await back;
    assert.equal(ev.reconnect, true);
    assert.ok(px.accepts.length > accepts);
    assert.equal((await c.request("system:ping", {})).pong, true);
  });

  test("4029 (rate limit abuse): no reconnection, a RATE_LIMITED error", { timeout: 30_000 }, async () => {
    const s = await server({ args: ["--rate-limit", "5", "--rate-burst", "5"] });
    const px = await proxy(s.port);
    const c = client(px.url);
    const errors = [];
    c.on("error", (e) => errors.push(e));
    await c.connect();
    const disconnected = nextEvent(c, "disconnected", 10_000);
    const flood = [];
    for (let i = 0; i < 60; i++) flood.push(c.request("system:ping", {}).catch((e) => e.code));
    const ev = await disconnected;
    const codes = await Promise.all(flood);
    assert.ok(codes.includes("RATE_LIMITED"), codes.join());
    assert.equal(ev.code, 4029);
    assert.equal(ev.willReconnect, false);
    const accepts = px.accepts.length;
    await sleep(600);
    assert.equal(px.accepts.length, accepts, "no reconnection attempt");
    assert.equal(c.state, "idle");
    assert.ok(errors.some((e) => e.code === "RATE_LIMITED" && e.details?.closeCode === 4029));
    // The application may connect again later, on purpose.
    const welcome = await c.connect();
    assert.equal(typeof welcome.starlingId, "string");
  });

  test("1001 (server shutting down): reconnect; a restarted server has no session, so a fresh one, re-subscribed", { timeout: 60_000 }, async () => {
    const s1 = await startHelios({ recovery: true });
    const port = s1.port;
    const a = client(s1.url);
    await a.connect();
    const got = [];
    await a.subscribe("news:restart", (d) => got.push(d));
    await sleep(200);
    await waitFor(() => a.recoveryToken, 5000, "a recovery token");
    const disconnected = nextEvent(a, "disconnected", 15_000);
    await s1.stop();
    const ev = await disconnected;
    assert.equal(ev.code, 1001);
    assert.equal(ev.willReconnect, true);
    const connected = nextEvent(a, "connected", 20_000);
    const s2 = await server({ recovery: true, port });
    const c = await connected;
    assert.equal(c.reconnect, true);
    assert.equal(c.recovered, false);
    assert.equal(c.reason, "the session expired or was already recovered");
    const b = client(s2.url);
    await b.connect();
    await waitFor(async () => (await b.presence("news:restart")).count === 1, 5000, "the re-subscription");
    await b.publish("news:restart", "after restart");
    await waitFor(() => got.includes("after restart"), 5000, "a delivery");
  });

  test("4100 (ping timeout): reconnect and recover, nothing lost", { timeout: 60_000 }, async () => {
    const s = await server({ recovery: true, config: BULK, args: ["--ping-interval-secs", "1", "--max-missed-pongs", "2"] });
    const px = await proxy(s.port);
    const a = client(px.url);
    const b = client(s.url);
    await Promise.all([a.connect(), b.connect()]);
    const id = a.starlingId;
    const got = [];
    await a.subscribe("bulk:ping", (d) => got.push(d.i));
    await b.publish("bulk:ping", { i: 0 });
    await waitFor(() => got.length === 1, 5000, "a delivery");
    await sleep(200);
    await waitFor(() => a.recoveryToken, 5000, "a recovery token");
    // The client's pongs stop reaching the server.
    const frozen = px.freeze({ up: true, down: false });
    const disconnected = nextEvent(a, "disconnected", 15_000);
    const recovered = nextEvent(a, "recovered", 20_000);
    for (let i = 1; i <= 5; i++) await b.publish("bulk:ping", { i });
    const ev = await disconnected;
    frozen.cut();
    assert.equal(ev.code, 4100);
    assert.equal(ev.willReconnect, true);
    const rec = await recovered;
    assert.equal(rec.starlingId, id);
    await b.publish("bulk:ping", { i: 6 });
    await waitFor(() => got.length >= 7, 5000, "every message");
    await sleep(100);
    assert.deepEqual(got, [0, 1, 2, 3, 4, 5, 6]);
  });

  test("4008 (slow consumer): reconnect, recover, and `since` replays the frames the server dropped", { timeout: 90_000 }, async () => {
    const s = await server({ recovery: true, config: BULK });
    const px = await proxy(s.port);
    const rec = await recordingWebSocket();
    const a = client(px.url, { WebSocket: rec.WebSocket });
    const b = client(s.url);
    await Promise.all([a.connect(), b.connect()]);
    const id = a.starlingId;
    const got = [];
    await a.subscribe("bulk:slow", (d) => got.push(d.i));
    await b.publish("bulk:slow", { i: 0, pad: "" });
    await waitFor(() => got.length === 1, 5000, "a delivery");
    await sleep(200);
    await waitFor(() => a.recoveryToken, 5000, "a recovery token");
    // The client stops reading: socket buffers fill, then the server's queue.
    const frozen = px.freeze({ up: false, down: true });
    const pad = "x".repeat(8 * 1024);
    let n = 1;
    const disconnected = nextEvent(a, "disconnected", 60_000);
    const recovered = nextEvent(a, "recovered", 60_000);
    // Publish until the server has given up on the reader (it leaves the room).
    for (let batch = 0; batch < 400; batch++) {
      for (let k = 0; k < 20; k++) await b.publish("bulk:slow", { i: n++, pad });
      if ((await b.presence("bulk:slow")).count === 0) break;
    }
    assert.equal((await b.presence("bulk:slow")).count, 0, `the server closed the slow consumer after ${n} messages`);
    frozen.release(); // what was buffered flows, then the close frame
    const ev = await disconnected;
    assert.equal(ev.code, 4008);
    assert.equal(ev.willReconnect, true);
    const r = await recovered;
    assert.equal(r.starlingId, id);
    assert.equal(r.missed, false);
    assert.ok(new URL(rec.urls.at(-1)).searchParams.get("since")?.includes("bulk:slow"), "the recovery said since");
    await b.publish("bulk:slow", { i: n++, pad: "" });
    await waitFor(() => got.length >= n, 20_000, `all ${n} messages (got ${got.length})`);
    await sleep(100);
    assert.equal(got.length, n, "no duplicates");
    for (let i = 0; i < n; i++) if (got[i] !== i) assert.fail(`position ${i} holds ${got[i]}`);
  });
});
