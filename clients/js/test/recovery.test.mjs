// Session recovery: recovery token, reconnection with ?recover= and &since=,
// replay of missed room messages without duplicates, held sessions, gaps.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Starling } from "../dist/index.js";
import { nextEvent, recordingWebSocket, sleep, startHelios, startProxy, waitFor } from "./helpers/server.mjs";

// Rooms with a long history (bulk traffic) and a tiny one (gaps).
const ROOMS = `
[[rooms]]
pattern = "bulk:*"
history = 20000

[[rooms]]
pattern = "small:*"
history = 5
`;

/** The `since` parameter of a recovery URL, decoded. */
function sinceOf(url) {
  const raw = new URL(url).searchParams.get("since");
  return raw === null ? null : JSON.parse(raw);
}

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
    server = await startHelios({ recovery: true, config: ROOMS });
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
    // Publish only once the server has let go of the old socket: a
    // publication that reaches the closing connection first counts as
    // delivered (the snapshot starts after it), and this client has no
    // delivery in the room to send as \`since\`.
    await waitFor(async () => (await b.presence("news:reload")).count === 0, 5000, "the server to see the old socket close");
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

  test("since: frames lost in flight before the server saw the drop are replayed", { timeout: 30_000 }, async () => {
    const px = await proxy();
    const rec = await recordingWebSocket();
    const a = client(px.url, { WebSocket: rec.WebSocket });
    const b = client();
    await Promise.all([a.connect(), b.connect()]);
    const got = [];
    let last;
    await a.subscribe("bulk:since", (d, meta) => {
      got.push(d.i);
      last = { offset: meta.offset, epoch: meta.epoch };
    });
    for (let i = 0; i < 5; i++) await b.publish("bulk:since", { i });
    await waitFor(() => got.length === 5, 5000, "five deliveries");
    await sleep(200);
    await waitFor(() => a.recoveryToken, 5000, "a recovery token");

    const before = last;
    // The link dies silently: what the server sends now is lost in flight.
    const frozen = px.freeze({ up: false, down: true });
    for (let i = 5; i < 25; i++) await b.publish("bulk:since", { i });
    assert.equal(got.length, 5, "nothing gets through the frozen link");
    px.down = true;
    const disconnected = nextEvent(a, "disconnected", 5000);
    frozen.cut(); // the server sees the close only now, after those 20 were "sent"
    await disconnected;
    // The snapshot is taken at the server's teardown (position 25); wait for it.
    await waitFor(async () => (await b.presence("bulk:since")).count === 0, 5000, "the server to drop the old socket");
    const recovered = nextEvent(a, "recovered", 10_000);
    px.down = false;
    const ev = await recovered;
    assert.equal(ev.missed, false);
    const url = rec.urls.at(-1);
    assert.ok(url.includes("recover="), url);
    assert.deepEqual(sinceOf(url), { "bulk:since": before }, "since = the last delivery received");
    await waitFor(() => got.length >= 25, 5000, "the 20 lost in flight");
    await b.publish("bulk:since", { i: 25 });
    await waitFor(() => got.length >= 26, 5000, "a live one");
    await sleep(100);
    assert.deepEqual(got, [...Array(26).keys()], "every message once, in order");
  });

  test("a drop right after a recovery, before the fresh token arrives: recovered again", { timeout: 30_000 }, async () => {
    const px = await proxy();
    const a = client(px.url);
    const b = client();
    await Promise.all([a.connect(), b.connect()]);
    const got = [];
    await a.subscribe("bulk:again", (d) => got.push(d.i));
    await b.publish("bulk:again", { i: 0 });
    await waitFor(() => got.length === 1, 5000, "a delivery");
    // The subscription makes the client fetch a fresh token ~50 ms later:
    // wait until the token has stayed the same for 150 ms, so that no
    // answer with a newer one is still on its way at the cut.
    let settled = null;
    await waitFor(async () => {
      const token = a.recoveryToken;
      if (!token) return false;
      if (token !== settled) {
        settled = token;
        await sleep(150);
      }
      return a.recoveryToken === settled;
    }, 5000, "a recovery token that no longer changes");

    // At the first recovery the client → server direction freezes, so its
    // request for a fresh token never reaches the server.
    let frozen;
    const recoveredOnce = new Promise((resolve) => {
      a.once("connected", (ev) => {
        frozen = px.freeze({ up: true, down: false });
        resolve(ev);
      });
    });
    const firstToken = a.recoveryToken;
    px.cut();
    const first = await recoveredOnce;
    assert.equal(first.recovered, true);
    await b.publish("bulk:again", { i: 1 });
    await waitFor(() => got.length === 2, 5000, "a delivery on the recovered connection");
    assert.equal(a.recoveryToken, firstToken, "the token that served the recovery is kept until a fresh one arrives");

    const second = nextEvent(a, "connected", 10_000);
    await waitFor(async () => (await b.presence("bulk:again")).count === 1, 5000, "the room to hold the recovered connection");
    frozen.cut();
    const ev = await second;
    assert.equal(ev.recovered, true, `recovered again (reason: ${ev.reason})`);
    await b.publish("bulk:again", { i: 2 });
    await waitFor(() => got.length === 3, 5000, "a delivery after the second recovery");
    assert.deepEqual(got, [0, 1, 2]);
  });

  test("the proxy cuts the socket while messages are published: all arrive in order, once", { timeout: 60_000 }, async () => {
    const px = await proxy();
    const a = client(px.url);
    const b = client();
    await Promise.all([a.connect(), b.connect()]);
    const got = [];
    await a.subscribe("bulk:stream", (d) => got.push(d.i));
    await sleep(200);
    await waitFor(() => a.recoveryToken, 5000, "a recovery token");
    const N = 3000;
    const recoveries = [];
    a.on("recovered", (ev) => recoveries.push(ev));
    const publishing = (async () => {
      for (let i = 0; i < N; i++) {
        await b.publish("bulk:stream", { i });
        if (i % 50 === 0) await sleep(1);
      }
    })();
    // Cut three times mid-stream, with the link down a moment each time.
    for (const at of [500, 1300, 2100]) {
      await waitFor(() => got.length >= at, 20_000, `${at} deliveries`);
      px.down = true;
      px.cut();
      await sleep(50);
      px.down = false;
    }
    await publishing;
    await waitFor(() => got.length >= N, 20_000, `all ${N} messages (got ${got.length})`);
    await sleep(200);
    assert.equal(got.length, N, "no duplicates");
    for (let i = 0; i < N; i++) if (got[i] !== i) assert.fail(`position ${i} holds ${got[i]}`);
    assert.ok(recoveries.length >= 3, `recovered ${recoveries.length} times`);
    assert.ok(recoveries.every((r) => r.missed === false));
  });

  test("a session still held by the old connection: retry the recovery, never a fresh session", { timeout: 30_000 }, async () => {
    const px = await proxy();
    const a = client(px.url, { recoveryRetryDelay: 50 });
    const b = client();
    await Promise.all([a.connect(), b.connect()]);
    const id = a.starlingId;
    await a.identify("held-peer");
    const got = [];
    await a.subscribe("bulk:held", (d) => got.push(d.i));
    await b.publish("bulk:held", { i: 0 });
    await waitFor(() => got.length === 1, 5000, "a delivery");
    await sleep(200);
    await waitFor(() => a.recoveryToken, 5000, "a recovery token");
    const connected = [];
    a.on("connected", (ev) => connected.push(ev));

    // The old link hangs: the server keeps the connection (it has no reason
    // to think it dead) while the client gives up on it and reconnects.
    const frozen = px.freeze();
    const accepted = px.accepts.length;
    a.reconnect();
    for (let i = 1; i <= 5; i++) await b.publish("bulk:held", { i });
    await waitFor(() => px.accepts.length >= accepted + 3, 5000, "recovery retries");
    assert.equal(connected.length, 0, "no fresh session was accepted while the old connection held it");
    assert.equal(a.state, "reconnecting");
    // The name is still held by the old connection.
    assert.equal((await b.presence("bulk:held")).members[0].starlingId, id);

    const recovered = nextEvent(a, "recovered", 10_000);
    frozen.cut(); // now the server sees the old connection go
    const ev = await recovered;
    assert.equal(ev.starlingId, id);
    assert.equal(connected.length, 1);
    assert.equal(connected[0].recovered, true);
    await waitFor(() => got.length >= 6, 5000, "what was sent to the frozen link");
    assert.deepEqual(got, [0, 1, 2, 3, 4, 5]);
    a.method("app:who", () => "a");
    assert.equal(await b.request("app:who", {}, { peer: { name: "held-peer" } }), "a", "the name came back");
  });

  test("held until the token expires: then a fresh session, re-subscribed", { timeout: 30_000 }, async () => {
    // Tokens of this server live 2 s.
    const short = await startHelios({ recovery: true, args: ["--recovery-ttl-secs", "2"] });
    const px = await startProxy(short.port);
    proxies.push(px);
    const a = client(px.url, { recoveryRetryDelay: 50 });
    const b = client(short.url);
    try {
      await Promise.all([a.connect(), b.connect()]);
      const oldId = a.starlingId;
      const got = [];
      await a.subscribe("news:held-expiry", (d) => got.push(d));
      await sleep(200);
      await waitFor(() => a.recoveryToken, 5000, "a recovery token");
      const frozen = px.freeze();
      const connected = nextEvent(a, "connected", 10_000);
      const t0 = Date.now();
      a.reconnect();
      const ev = await connected;
      assert.equal(ev.recovered, false);
      assert.equal(ev.reconnect, true);
      assert.notEqual(ev.starlingId, oldId);
      assert.ok(Date.now() - t0 >= 300, "the recovery was retried before giving up");
      await waitFor(async () => (await b.presence("news:held-expiry")).count === 2, 5000, "the re-subscription");
      await b.publish("news:held-expiry", "fresh");
      await waitFor(() => got.includes("fresh"), 5000, "a delivery on the fresh session");
      frozen.cut();
    } finally {
      await a.close();
      await b.close();
      await short.stop();
    }
  });

  test("missed: a gap larger than the room's history is reported with its rooms", { timeout: 30_000 }, async () => {
    const px = await proxy();
    const a = client(px.url);
    const b = client();
    await Promise.all([a.connect(), b.connect()]);
    const got = [];
    await a.subscribe("small:gap", (d) => got.push(d.i));
    await a.subscribe("bulk:nogap", () => {});
    await b.publish("small:gap", { i: 0 });
    await waitFor(() => got.length === 1, 5000, "a delivery");
    await sleep(200);
    await waitFor(() => a.recoveryToken, 5000, "a recovery token");
    px.down = true;
    const disconnected = nextEvent(a, "disconnected", 5000);
    px.cut();
    await disconnected;
    for (let i = 1; i <= 20; i++) await b.publish("small:gap", { i });
    const recovered = nextEvent(a, "recovered", 10_000);
    px.down = false;
    const ev = await recovered;
    assert.equal(ev.missed, true);
    assert.deepEqual(ev.missedRooms, ["small:gap"]);
    assert.deepEqual([...ev.rooms].sort(), ["bulk:nogap", "small:gap"]);
    // What the history still holds (the last 5) is replayed.
    await waitFor(() => got.length >= 6, 5000, "the replay");
    assert.deepEqual(got, [0, 16, 17, 18, 19, 20]);
  });
});
