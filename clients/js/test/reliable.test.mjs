// Reliable delivery: notifyReliable() against a real helios (the server
// acknowledges with helios:ack and drops copies), and the receiving side
// (ack + dedupe of ackId notifications, resent server requests) against a
// scripted server, since `helios serve` exposes no way to send those.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { WebSocketServer } from "ws";
import { Starling } from "../dist/index.js";
import { nextEvent, recordingWebSocket, sleep, startHelios, startProxy, waitFor } from "./helpers/server.mjs";

const sentAcked = (sent, ackId) => sent.filter((f) => f.includes(`"ackId":"${ackId}"`)).length;

describe("reliable delivery (real server)", { timeout: 45 * 60_000 }, () => {
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

  test("notifyReliable resolves on the server's helios:ack; the peer gets it once", { timeout: 15_000 }, async () => {
    const rec = await recordingWebSocket();
    const a = client(undefined, { WebSocket: rec.WebSocket });
    const b = client();
    await Promise.all([a.connect(), b.connect()]);
    await b.identify("reliable-b");
    const got = [];
    b.on("notification", (n) => n.topic === "app:order" && got.push(n.data));
    await a.notifyReliable("app:order", { id: 1 }, { peer: { name: "reliable-b" } });
    await waitFor(() => got.length === 1, 5000, "the delivery");
    await sleep(200);
    assert.deepEqual(got, [{ id: 1 }]);
    const frames = rec.sent.filter((f) => f.includes('"app:order"')).map((f) => JSON.parse(f));
    assert.equal(frames.length, 1, "acknowledged at once: sent once");
    assert.equal(typeof frames[0].notification.ackId, "string");
  });

  test("a lost acknowledgement: resent with the same ackId, handled once by the server", { timeout: 20_000 }, async () => {
    const px = await proxy();
    const rec = await recordingWebSocket();
    const a = client(px.url, { WebSocket: rec.WebSocket });
    const b = client();
    await Promise.all([a.connect(), b.connect()]);
    await b.identify("reliable-b2");
    const got = [];
    b.on("notification", (n) => n.topic === "app:dedupe" && got.push(n.data));
    // Acks from the server cannot reach a; its notifications still go out.
    const frozen = px.freeze({ up: false, down: true });
    const done = a.notifyReliable("app:dedupe", { n: 1 }, { peer: { name: "reliable-b2" }, retries: 10, delay: 50 });
    await waitFor(() => rec.sent.filter((f) => f.includes('"app:dedupe"')).length >= 3, 5000, "resends");
    frozen.release();
    await done;
    const frames = rec.sent.filter((f) => f.includes('"app:dedupe"')).map((f) => JSON.parse(f));
    assert.ok(frames.length >= 3, `${frames.length} sends`);
    assert.equal(new Set(frames.map((f) => f.notification.ackId)).size, 1, "one ackId for every copy");
    await sleep(200);
    assert.deepEqual(got, [{ n: 1 }], "the server relayed the first copy only");
  });

  test("no acknowledgement at all: REQUEST_TIMEOUT after 1 + retries sends", { timeout: 20_000 }, async () => {
    const px = await proxy();
    const rec = await recordingWebSocket();
    const a = client(px.url, { WebSocket: rec.WebSocket });
    await a.connect();
    px.freeze({ up: false, down: true });
    await assert.rejects(a.notifyReliable("app:lost", {}, { retries: 2, delay: 50 }), { code: "REQUEST_TIMEOUT" });
    assert.equal(rec.sent.filter((f) => f.includes('"app:lost"')).length, 3);
  });

  test("sent while the link is down: waits for the (recovered) connection, then is acknowledged", { timeout: 20_000 }, async () => {
    const px = await proxy();
    const a = client(px.url);
    const b = client();
    await Promise.all([a.connect(), b.connect()]);
    await b.identify("reliable-b3");
    const got = [];
    b.on("notification", (n) => n.topic === "app:later" && got.push(n.data));
    await sleep(200);
    await waitFor(() => a.recoveryToken, 5000, "a recovery token");
    px.down = true;
    const disconnected = nextEvent(a, "disconnected", 5000);
    px.cut();
    await disconnected;
    const done = a.notifyReliable("app:later", "queued", { peer: { name: "reliable-b3" } });
    await sleep(200);
    px.down = false;
    await done;
    await waitFor(() => got.length === 1, 5000, "the delivery");
    assert.deepEqual(got, ["queued"]);
  });

  test("close() rejects what is not acknowledged; no connection rejects NOT_CONNECTED", { timeout: 10_000 }, async () => {
    const px = await proxy();
    const a = client(px.url);
    await a.connect();
    px.freeze({ up: false, down: true });
    const pending = a.notifyReliable("app:never", {}, { delay: 1000 }).then(
      () => null,
      (e) => e,
    );
    await sleep(50);
    await a.close();
    assert.equal((await pending)?.code, "CONNECTION_CLOSED");
    await assert.rejects(a.notifyReliable("app:never", {}), { code: "NOT_CONNECTED" });
  });
});

/**
 * A minimal server speaking the protocol, driven by the test: `peer()` gives
 * the next connection, with `send(msg)` and a queue of received messages.
 */
async function scriptedServer() {
  const wss = new WebSocketServer({ port: 0, host: "127.0.0.1", handleProtocols: (protocols) => [...protocols][0] ?? false });
  await new Promise((r) => wss.once("listening", r));
  const waiting = [];
  const conns = [];
  wss.on("connection", (ws) => {
    const received = [];
    const conn = {
      ws,
      received,
      send(msg) {
        ws.send(JSON.stringify({ protocol: "helios-starling", version: "1.0.0", timestamp: Date.now(), ...msg }));
      },
      notify(topic, data, extra = {}) {
        this.send({ type: "notification", notification: { topic, data, ...extra } });
      },
    };
    ws.on("message", (data) => received.push(JSON.parse(data.toString())));
    conn.notify("helios:welcome", { starlingId: `scripted-${conns.length}`, recovered: false, serverTime: Date.now() });
    conns.push(conn);
    waiting.shift()?.(conn);
  });
  return {
    url: `ws://127.0.0.1:${wss.address().port}/ws`,
    next() {
      return new Promise((r) => waiting.push(r));
    },
    close() {
      for (const c of conns) c.ws.terminate();
      return new Promise((r) => wss.close(() => r()));
    },
  };
}

describe("reliable delivery, receiving side (scripted server)", { timeout: 60_000 }, () => {
  let srv;
  const clients = [];
  before(async () => {
    srv = await scriptedServer();
  });
  after(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await srv?.close();
  });
  const client = () => {
    const c = new Starling(srv.url, { heartbeatInterval: 0, recovery: false, reconnect: false });
    clients.push(c);
    return c;
  };

  test("a notification with ackId is acknowledged every time and delivered once", { timeout: 10_000 }, async () => {
    const c = client();
    const conn = srv.next();
    await c.connect();
    const s = await conn;
    const got = [];
    c.on("notification", (n) => got.push(n));
    for (let i = 0; i < 3; i++) s.notify("order:shipped", { id: 7 }, { ackId: "ack-1" });
    s.notify("order:shipped", { id: 8 }, { ackId: "ack-2" });
    const acks = () => s.received.filter((m) => m.type === "notification" && m.notification.topic === "helios:ack");
    await waitFor(() => acks().length === 4, 5000, "four acks");
    assert.deepEqual(
      acks().map((m) => m.notification.data),
      [{ ackId: "ack-1" }, { ackId: "ack-1" }, { ackId: "ack-1" }, { ackId: "ack-2" }],
    );
    await sleep(50);
    assert.deepEqual(
      got.map((n) => [n.data.id, n.ackId]),
      [
        [7, "ack-1"],
        [8, "ack-2"],
      ],
    );
  });

  test("the dedupe window is bounded: an ackId far in the past is delivered again", { timeout: 10_000 }, async () => {
    const c = client();
    const conn = srv.next();
    await c.connect();
    const s = await conn;
    let got = 0;
    c.on("notification", () => got++);
    s.notify("t:x", 0, { ackId: "old" });
    for (let i = 0; i < 1100; i++) s.notify("t:x", i, { ackId: `id-${i}` });
    s.notify("t:x", 0, { ackId: "old" });
    await waitFor(() => got === 1102, 5000, `1102 deliveries (got ${got})`);
  });

  test("a resent request: ignored while running, the same answer once answered", { timeout: 10_000 }, async () => {
    const c = client();
    const conn = srv.next();
    await c.connect();
    const s = await conn;
    let calls = 0;
    let release;
    const gate = new Promise((r) => (release = r));
    c.method("app:work", async (payload) => {
      calls++;
      await gate;
      return { done: payload.n, calls };
    });
    const req = { type: "request", requestId: "req-1", method: "app:work", payload: { n: 1 }, timeout: 5000 };
    s.send(req);
    await waitFor(() => calls === 1, 5000, "the handler to start");
    s.send(req); // resent while the handler runs
    await sleep(100);
    assert.equal(calls, 1, "the copy did not start a second handler");
    assert.equal(s.received.filter((m) => m.type === "response").length, 0);
    release();
    const responses = () => s.received.filter((m) => m.type === "response" && m.requestId === "req-1");
    await waitFor(() => responses().length === 1, 5000, "the answer");
    s.send(req); // resent after the answer (it crossed the resend)
    await waitFor(() => responses().length === 2, 5000, "the repeated answer");
    assert.equal(calls, 1, "answered from the cache, not run again");
    assert.deepEqual(responses()[1].data, responses()[0].data);
    assert.deepEqual(responses()[0].data, { done: 1, calls: 1 });
    // The server saying it did not need the repeat is not an error.
    const errors = [];
    c.on("error", (e) => errors.push(e));
    s.notify("helios:error", { code: "INVALID_MESSAGE_FORMAT", message: "response to an unknown requestId", requestId: "req-1" });
    await sleep(50);
    assert.equal(errors.length, 0);
  });
});
