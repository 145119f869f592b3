// Session recovery: recovery token, reconnection with ?recover=, replay of
// missed room messages without duplicates.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Starling } from "../dist/index.js";
import { nextEvent, sleep, startHelios, startProxy, waitFor } from "./helpers/server.mjs";

describe("recovery (HELIOS_RECOVERY_SECRET set)", { timeout: 45 * 60_000 }, () => {
  let server;
  const clients = [];
  const proxies = [];
  const client = (url, opts = {}) => {
    const c = new Starling(url ?? server.url, { heartbeatInterval: 0, reconnectDelay: 50, maxReconnectDelay: 500, ...opts });
    clients.push(c);
    return c;
  };
  const proxy = async () => {
    const p = await startProxy(server.port);
    proxies.push(p);
    return p;
  };

  before(async () => {
    server = await startHelios({ recovery: true });
  }, { timeout: 45 * 60_000 });

  after(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all(proxies.map((p) => p.close()));
    await server?.stop();
  });

  test("starling:getToken returns a JWT and an expiry", { timeout: 10_000 }, async () => {
    const c = client();
    await c.connect();
    const t = await c.request("starling:getToken", {});
    assert.equal(typeof t.token, "string");
    assert.equal(t.token.split(".").length, 3, "a JWT has three parts");
    assert.equal(typeof t.expiresIn, "number");
    assert.ok(t.expiresIn > 0);
  });

  test("the client keeps a recovery token on its own", { timeout: 10_000 }, async () => {
    const c = client();
    await c.connect();
    await waitFor(() => c.recoveryToken, 5000, "a recovery token");
    assert.equal(c.recoveryToken.split(".").length, 3);
  });

  test("after a cut the session is recovered: same id, rooms kept, missed messages replayed once", { timeout: 30_000 }, async () => {
    const px = await proxy();
    const a = client(px.url);
    const b = client();
    await Promise.all([a.connect(), b.connect()]);
    const firstId = a.starlingId;
    const got = [];
    const metas = [];
    await a.subscribe("news:recover", (data, meta) => {
      got.push(data);
      metas.push(meta);
    });
    for (let i = 1; i <= 3; i++) await b.publish("news:recover", { i });
    await waitFor(() => got.length === 3, 5000, "three live deliveries");
    // A token that already knows about the subscription.
    await sleep(200);
    await waitFor(() => a.recoveryToken, 5000, "a recovery token");

    px.down = true;
    const disconnected = nextEvent(a, "disconnected", 5000);
    px.cut();
    assert.equal((await disconnected).willReconnect, true);
    for (let i = 4; i <= 6; i++) await b.publish("news:recover", { i });
    await sleep(300);
    assert.equal(got.length, 3, "nothing arrives while the link is down");

    const recovered = nextEvent(a, "recovered", 10_000);
    const connected = nextEvent(a, "connected", 10_000);
    px.down = false;
    const ev = await connected;
    assert.equal(ev.recovered, true, "the welcome says recovered");
    assert.equal(ev.reconnect, true);
    const rec = await recovered;
    assert.equal(rec.starlingId, firstId);
    assert.deepEqual(rec.topics, ["news:recover"]);
    assert.equal(a.starlingId, firstId, "same starlingId after recovery");

    await waitFor(() => got.length >= 6, 5000, "the missed messages");
    await b.publish("news:recover", { i: 7 });
    await waitFor(() => got.length >= 7, 5000, "a live message after recovery");
    await sleep(200);
    assert.deepEqual(
      got.map((m) => m.i),
      [1, 2, 3, 4, 5, 6, 7],
      "missed messages replayed in order before live traffic, each exactly once",
    );
    const offsets = metas.map((m) => m.offset);
    assert.equal(new Set(offsets).size, offsets.length);
    // Requests keep working on the recovered session.
    assert.equal((await a.request("system:ping", {})).pong, true);
  });

  test("a recovered session keeps its peer name", { timeout: 30_000 }, async () => {
    const px = await proxy();
    const a = client(px.url);
    const b = client();
    await Promise.all([a.connect(), b.connect()]);
    await a.identify("recovering-peer");
    a.method("app:who", () => "a");
    assert.equal(await b.request("app:who", {}, { peer: { name: "recovering-peer" } }), "a");
    await sleep(200);
    await waitFor(() => a.recoveryToken, 5000, "a recovery token");
    const recovered = nextEvent(a, "recovered", 10_000);
    px.cut();
    await recovered;
    assert.equal(await b.request("app:who", {}, { peer: { name: "recovering-peer" } }), "a");
  });

  test("a recovery token from an earlier client resumes its session (page reload)", { timeout: 30_000 }, async () => {
    const a = client();
    const b = client();
    await Promise.all([a.connect(), b.connect()]);
    const got = [];
    await a.subscribe("news:reload", (d) => got.push(d));
    await sleep(200);
    const token = await waitFor(() => a.recoveryToken, 5000, "a recovery token");
    const id = a.starlingId;
    // The "page" goes away without a goodbye: drop the socket, stop the client.
    a.reconnect();
    await a.close();
    await b.publish("news:reload", "while away");
    const a2 = client(undefined, { recoveryToken: token });
    const got2 = [];
    a2.on("notification", (n) => n.topic === "news:reload" && got2.push(n.data));
    const welcome = await a2.connect();
    assert.equal(welcome.recovered, true);
    assert.equal(a2.starlingId, id);
    await waitFor(() => got2.length === 1, 5000, "the message published while away");
    assert.equal(got2[0], "while away");
  });
});
