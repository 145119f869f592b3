// Connection, requests, errors and reconnection against a real helios binary.
import assert from "node:assert/strict";
import net from "node:net";
import { after, before, describe, test } from "node:test";
import { ErrorCodes, Starling, StarlingError } from "../dist/index.js";
import { nextEvent, sleep, startHelios, startProxy, waitFor } from "./helpers/server.mjs";

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/i;

describe("core (no recovery secret)", { timeout: 45 * 60_000 }, () => {
  let server;
  const clients = [];
  const client = (url, opts = {}) => {
    const c = new Starling(url ?? server.url, { heartbeatInterval: 0, ...opts });
    clients.push(c);
    return c;
  };

  before(async () => {
    server = await startHelios();
  }, { timeout: 45 * 60_000 });

  after(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await server?.stop();
  });

  test("connect() resolves after the welcome, with a starlingId", { timeout: 10_000 }, async () => {
    const c = client();
    assert.equal(c.starlingId, null);
    assert.equal(c.state, "idle");
    const connected = nextEvent(c, "connected");
    const welcome = await c.connect();
    assert.equal(typeof welcome.starlingId, "string");
    assert.ok(welcome.starlingId.length > 0);
    assert.equal(welcome.recovered, false);
    assert.equal(c.starlingId, welcome.starlingId);
    assert.equal(c.state, "open");
    const ev = await connected;
    assert.equal(ev.starlingId, welcome.starlingId);
    assert.equal(ev.recovered, false);
    assert.equal(ev.reconnect, false);
    // connect() again is a no-op that resolves with the same welcome.
    assert.equal((await c.connect()).starlingId, welcome.starlingId);
  });

  test("two connections get different starlingIds", { timeout: 10_000 }, async () => {
    const a = client();
    const b = client();
    await Promise.all([a.connect(), b.connect()]);
    assert.notEqual(a.starlingId, b.starlingId);
  });

  test("system:ping and system:echo", { timeout: 10_000 }, async () => {
    const c = client();
    await c.connect();
    const pong = await c.request("system:ping", {});
    assert.equal(pong.pong, true);
    assert.equal(typeof pong.timestamp, "number");
    const payload = { text: "héllo ✓", n: 42, f: 1.5, list: [1, "two", null, { deep: true }], nested: { a: { b: [] } } };
    assert.deepEqual(await c.request("system:echo", payload), payload);
    assert.equal(await c.request("system:echo", "just a string"), "just a string");
  });

  test("many concurrent requests are matched to their responses", { timeout: 20_000 }, async () => {
    const c = client();
    await c.connect();
    const results = await Promise.all(Array.from({ length: 200 }, (_, i) => c.request("system:echo", { i })));
    results.forEach((r, i) => assert.deepEqual(r, { i }));
  });

  test("an unknown method rejects with the server's METHOD_NOT_FOUND", { timeout: 10_000 }, async () => {
    const c = client();
    await c.connect();
    await assert.rejects(c.request("nothing:here", {}), (err) => {
      assert.ok(err instanceof StarlingError);
      assert.equal(err.code, ErrorCodes.METHOD_NOT_FOUND);
      assert.equal(typeof err.message, "string");
      return true;
    });
    // The connection survives the error.
    assert.equal((await c.request("system:ping", {})).pong, true);
  });

  test("an invalid method name is refused by the server with an error code", { timeout: 10_000 }, async () => {
    const c = client();
    await c.connect();
    await assert.rejects(c.request("9bad name", {}), (err) => {
      assert.ok(err instanceof StarlingError);
      assert.equal(err.code, ErrorCodes.INVALID_MESSAGE_FORMAT);
      return true;
    });
    assert.equal((await c.request("system:ping", {})).pong, true);
  });

  test("an already aborted signal rejects with REQUEST_CANCELLED", { timeout: 10_000 }, async () => {
    const c = client();
    await c.connect();
    const ac = new AbortController();
    ac.abort();
    await assert.rejects(c.request("system:ping", {}, { signal: ac.signal }), { code: "REQUEST_CANCELLED" });
  });

  test("requests before connect() or after close() reject with NOT_CONNECTED", { timeout: 10_000 }, async () => {
    const c = client();
    await assert.rejects(c.request("system:ping", {}), { code: "NOT_CONNECTED" });
    assert.throws(() => c.notify("chat:x", 1), { code: "NOT_CONNECTED" });
    await c.connect();
    const disconnected = nextEvent(c, "disconnected");
    await c.close();
    assert.equal((await disconnected).willReconnect, false);
    assert.equal(c.state, "closed");
    await assert.rejects(c.request("system:ping", {}), { code: "NOT_CONNECTED" });
    // A closed client can connect again, as a new session.
    await c.connect();
    assert.equal((await c.request("system:ping", {})).pong, true);
  });

  test("connect() to a port nobody listens on rejects with CONNECTION_FAILED", { timeout: 10_000 }, async () => {
    const proxy = await startProxy(server.port);
    proxy.down = true;
    const c = client(proxy.url, { connectTimeout: 3000 });
    await assert.rejects(c.connect(), { code: "CONNECTION_FAILED" });
    assert.equal(c.state, "idle");
    await proxy.close();
  });

  test("close() during connect() rejects the connect at once", { timeout: 10_000 }, async () => {
    const c = client();
    const pending = c.connect();
    const started = Date.now();
    await c.close();
    await assert.rejects(pending, { code: "CONNECTION_CLOSED" });
    assert.ok(Date.now() - started < 2000);
    assert.equal(c.state, "closed");
  });

  test("close() while the upgrade is unanswered leaves no uncaught error behind", { timeout: 10_000 }, async () => {
    // A listener that accepts TCP and never answers the upgrade keeps the
    // socket CONNECTING; closing it then makes `ws` emit an error event.
    const silent = net.createServer(() => {});
    await new Promise((resolve) => silent.listen(0, "127.0.0.1", resolve));
    const uncaught = [];
    const onUncaught = (err) => uncaught.push(err);
    process.on("uncaughtException", onUncaught);
    try {
      const accepted = new Promise((resolve) => silent.once("connection", resolve));
      const c = client(`ws://127.0.0.1:${silent.address().port}/ws`);
      const pending = c.connect();
      await accepted;
      await c.close();
      await assert.rejects(pending, { code: "CONNECTION_CLOSED" });
      await sleep(200);
      assert.deepEqual(uncaught.map((e) => e.message), []);
    } finally {
      process.off("uncaughtException", onUncaught);
      await new Promise((resolve) => silent.close(resolve));
    }
  });

  test("method() refuses reserved namespaces", () => {
    const c = client();
    for (const ns of ["system", "internal", "stream", "helios"]) {
      assert.throws(() => c.method(`${ns}:thing`, () => 1), TypeError);
    }
    const off = c.method("app:thing", () => 1);
    assert.equal(typeof off, "function");
  });

  test("requests are UUID v4 and carry the protocol envelope", { timeout: 10_000 }, async () => {
    // Observe the frames the client sends by wrapping the WebSocket.
    const { WebSocket } = await import("ws");
    const sent = [];
    class Spy extends WebSocket {
      constructor(url, protocols) {
        super(url, protocols);
        sent.protocols = protocols;
      }
      send(data, ...rest) {
        sent.push(JSON.parse(data));
        return super.send(data, ...rest);
      }
    }
    const c = client(undefined, { WebSocket: Spy });
    await c.connect();
    await c.request("system:echo", { x: 1 }, { timeout: 5000 });
    assert.equal(sent.protocols, "helios-starling.v1.json");
    const req = sent.find((m) => m.method === "system:echo");
    assert.ok(req, "the echo request was sent");
    assert.equal(req.protocol, "helios-starling");
    assert.equal(req.version, "1.0.0");
    assert.equal(req.type, "request");
    assert.equal(typeof req.timestamp, "number");
    assert.ok(Math.abs(req.timestamp - Date.now()) < 10_000);
    assert.match(req.requestId, UUID_V4);
    assert.deepEqual(req.payload, { x: 1 });
    assert.equal(req.timeout, 5000);
  });

  test("a cut link reconnects with backoff, and requests made meanwhile are sent after", { timeout: 30_000 }, async () => {
    const proxy = await startProxy(server.port);
    const c = client(proxy.url, { reconnectDelay: 50, maxReconnectDelay: 400 });
    const first = await c.connect();
    proxy.down = true;
    const disconnected = nextEvent(c, "disconnected");
    const acceptsBefore = proxy.accepts.length;
    proxy.cut();
    const ev = await disconnected;
    assert.equal(ev.willReconnect, true);
    assert.equal(c.state, "reconnecting");
    // A request made while disconnected waits for the new connection.
    const echo = c.request("system:echo", { queued: true }, { timeout: 15_000 });
    await sleep(1500);
    const attempts = proxy.accepts.slice(acceptsBefore);
    assert.ok(attempts.length >= 3, `expected several attempts in 1.5 s, got ${attempts.length}`);
    assert.ok(attempts.length <= 20, `expected backoff, got ${attempts.length} attempts in 1.5 s`);
    const gaps = attempts.slice(1).map((t, i) => t - attempts[i]);
    // Delays never exceed the ceiling (plus scheduling slack).
    for (const g of gaps) assert.ok(g < 400 + 300, `gap ${g} ms over the 400 ms ceiling`);
    const connected = nextEvent(c, "connected", 5000);
    proxy.down = false;
    const ev2 = await connected;
    assert.equal(ev2.reconnect, true);
    assert.equal(ev2.recovered, false, "no recovery secret: a new session");
    assert.notEqual(c.starlingId, first.starlingId);
    assert.deepEqual(await echo, { queued: true });
    await proxy.close();
  });

  test("a request in flight when the link breaks rejects with CONNECTION_CLOSED", { timeout: 20_000 }, async () => {
    const proxy = await startProxy(server.port);
    const c = client(proxy.url, { reconnectDelay: 50 });
    await c.connect();
    // The proxy side is destroyed in the same tick as the send, so no
    // response can come back: the close must fail the request, not a timeout.
    const p = c.request("system:ping", {}, { timeout: 10_000 });
    proxy.cut();
    await assert.rejects(p, { code: ErrorCodes.CONNECTION_CLOSED });
    await waitFor(() => c.connected, 5000, "reconnection");
    await proxy.close();
  });

  test("after an unrecovered reconnection the client re-subscribes its topics", { timeout: 20_000 }, async () => {
    const proxy = await startProxy(server.port);
    const a = client(proxy.url, { reconnectDelay: 50 });
    const b = client();
    await Promise.all([a.connect(), b.connect()]);
    const got = [];
    await a.subscribe("chat:resub", (data) => got.push(data));
    const reconnected = nextEvent(a, "connected", 10_000);
    proxy.cut();
    const ev = await reconnected;
    assert.equal(ev.recovered, false);
    // Wait until the re-subscription is effective: publish until A sees one.
    await waitFor(
      async () => {
        await b.publish("chat:resub", { probe: true });
        return got.length > 0;
      },
      5000,
      "a delivery after re-subscribing",
    );
    assert.deepEqual(a.subscriptions, ["chat:resub"]);
    await proxy.close();
  });
});
