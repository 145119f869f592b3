// Server→client requests through the peer relay, notify, and cancellation.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { ErrorCodes, Starling, StarlingError } from "../dist/index.js";
import { startHelios, waitFor } from "./helpers/server.mjs";

describe("peer relay and methods", { timeout: 45 * 60_000 }, () => {
  let server;
  const clients = [];
  let n = 0;
  const connected = async (count) => {
    const cs = Array.from({ length: count }, () => new Starling(server.url, { heartbeatInterval: 0 }));
    clients.push(...cs);
    await Promise.all(cs.map((c) => c.connect()));
    return cs;
  };
  const uniqueName = (base) => `${base}${++n}`;

  before(async () => {
    server = await startHelios();
  }, { timeout: 45 * 60_000 });

  after(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await server?.stop();
  });

  test("a method on one client answers a request relayed by name", { timeout: 10_000 }, async () => {
    const [a, b] = await connected(2);
    const name = uniqueName("calc");
    await a.identify(name);
    const seen = [];
    a.method("calc:add", (p, ctx) => {
      seen.push(ctx);
      return p.a + p.b;
    });
    assert.equal(await b.request("calc:add", { a: 2, b: 3 }, { peer: { name } }), 5);
    assert.equal(seen.length, 1);
    assert.equal(seen[0].method, "calc:add");
    assert.ok(seen[0].signal instanceof AbortSignal);
  });

  test("a method answers a request relayed by starlingId, async handlers too", { timeout: 10_000 }, async () => {
    const [a, b] = await connected(2);
    a.method("calc:slowdouble", async (p) => {
      await new Promise((r) => setTimeout(r, 50));
      return { doubled: p * 2 };
    });
    assert.deepEqual(await b.request("calc:slowdouble", 21, { peer: { id: a.starlingId } }), { doubled: 42 });
  });

  test("a handler that throws answers METHOD_ERROR; a StarlingError keeps its code", { timeout: 10_000 }, async () => {
    const [a, b] = await connected(2);
    const name = uniqueName("fail");
    await a.identify(name);
    a.method("app:boom", () => {
      throw new Error("it broke");
    });
    a.method("app:denied", () => {
      throw new StarlingError("APP_DENIED", "not you", { why: "test" });
    });
    await assert.rejects(b.request("app:boom", {}, { peer: { name } }), (err) => {
      assert.ok(err instanceof StarlingError);
      assert.equal(err.code, ErrorCodes.METHOD_ERROR);
      assert.match(err.message, /it broke/);
      return true;
    });
    await assert.rejects(b.request("app:denied", {}, { peer: { name } }), (err) => {
      assert.equal(err.code, "APP_DENIED");
      assert.deepEqual(err.details, { why: "test" });
      return true;
    });
  });

  test("a method the peer does not have answers METHOD_NOT_FOUND", { timeout: 10_000 }, async () => {
    const [a, b] = await connected(2);
    const name = uniqueName("empty");
    await a.identify(name);
    await assert.rejects(b.request("app:missing", {}, { peer: { name } }), { code: ErrorCodes.METHOD_NOT_FOUND });
  });

  test("a request to an unknown peer fails with PEER_NOT_FOUND", { timeout: 10_000 }, async () => {
    const [b] = await connected(1);
    await assert.rejects(b.request("app:x", {}, { peer: { name: "nobody-has-this-name" } }), {
      code: ErrorCodes.PEER_NOT_FOUND,
    });
  });

  test("a local timeout rejects with REQUEST_TIMEOUT and cancels the callee", { timeout: 15_000 }, async () => {
    const [a, b] = await connected(2);
    const name = uniqueName("slow");
    await a.identify(name);
    let aborted = null;
    a.method("app:slow", (_p, ctx) => {
      return new Promise((resolve) => {
        const t = setTimeout(() => resolve("too late"), 5000);
        ctx.signal.addEventListener("abort", () => {
          clearTimeout(t);
          aborted = ctx.signal.reason;
          resolve("aborted");
        });
      });
    });
    const started = Date.now();
    await assert.rejects(b.request("app:slow", {}, { peer: { name }, timeout: 300 }), (err) => {
      assert.ok(err instanceof StarlingError);
      assert.equal(err.code, ErrorCodes.REQUEST_TIMEOUT);
      return true;
    });
    assert.ok(Date.now() - started < 2000, "the local timeout fired on time");
    await waitFor(() => aborted !== null, 3000, "the callee's signal to abort");
  });

  test("aborting the signal rejects with REQUEST_CANCELLED and sends helios:cancel", { timeout: 15_000 }, async () => {
    const [a, b] = await connected(2);
    const name = uniqueName("cancel");
    await a.identify(name);
    let started = false;
    let abortedWith = null;
    a.method("app:wait", (_p, ctx) => {
      started = true;
      return new Promise((resolve) => {
        const t = setTimeout(() => resolve("done"), 5000);
        ctx.signal.addEventListener("abort", () => {
          clearTimeout(t);
          abortedWith = ctx.signal.reason;
          resolve("aborted");
        });
      });
    });
    const ac = new AbortController();
    const p = b.request("app:wait", {}, { peer: { name }, signal: ac.signal, timeout: 10_000 });
    await waitFor(() => started, 3000, "the callee to start");
    ac.abort();
    await assert.rejects(p, { code: ErrorCodes.REQUEST_CANCELLED });
    await waitFor(() => abortedWith !== null, 3000, "the cancel to reach the callee");
    assert.equal(abortedWith.code, ErrorCodes.REQUEST_CANCELLED);
    // Both stay usable.
    assert.equal((await b.request("system:ping", {})).pong, true);
    assert.equal((await a.request("system:ping", {})).pong, true);
  });

  test("notify with a peer delivers a notification to that client", { timeout: 10_000 }, async () => {
    const [a, b] = await connected(2);
    const name = uniqueName("inbox");
    await a.identify(name);
    const got = [];
    a.on("notification", (n) => got.push(n));
    b.notify("app:hello", { from: "b" }, { peer: { name } });
    await waitFor(() => got.some((n) => n.topic === "app:hello"), 3000, "the relayed notification");
    const n0 = got.find((n) => n.topic === "app:hello");
    assert.deepEqual(n0.data, { from: "b" });
  });
});
