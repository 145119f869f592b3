// Rooms: subscribe, publish, presence, unsubscribe against a real helios binary.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Starling } from "../dist/index.js";
import { sleep, startHelios, waitFor } from "./helpers/server.mjs";

describe("rooms", { timeout: 45 * 60_000 }, () => {
  let server;
  const clients = [];
  const connected = async (n) => {
    const cs = Array.from({ length: n }, () => new Starling(server.url, { heartbeatInterval: 0 }));
    clients.push(...cs);
    await Promise.all(cs.map((c) => c.connect()));
    return cs;
  };

  before(async () => {
    server = await startHelios();
  }, { timeout: 45 * 60_000 });

  after(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await server?.stop();
  });

  test("subscribe resolves once confirmed; publish reaches every subscriber in order", { timeout: 15_000 }, async () => {
    const [a, b, c] = await connected(3);
    const gotA = [];
    const gotB = [];
    const metas = [];
    const unsubA = await a.subscribe("chat:lobby", (data, meta) => {
      gotA.push(data);
      metas.push(meta);
    });
    assert.equal(typeof unsubA, "function");
    await b.subscribe("chat:lobby", (data) => gotB.push(data));
    const notifications = [];
    a.on("notification", (n) => notifications.push(n));
    for (let i = 0; i < 10; i++) {
      const r = await c.publish("chat:lobby", { i, text: `message ${i}` });
      assert.equal(r.topic, "chat:lobby");
      assert.equal(r.delivered, 2);
    }
    await waitFor(() => gotA.length === 10 && gotB.length === 10, 5000, "10 deliveries to A and B");
    assert.deepEqual(gotA.map((m) => m.i), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert.deepEqual(gotB, gotA);
    // Deliveries carry the room and a position in the room's stream.
    for (const m of metas) assert.equal(m.topic, "chat:lobby");
    assert.ok(metas.every((m) => typeof m.offset === "number"), "every delivery has an offset");
    const offsets = metas.map((m) => m.offset);
    assert.deepEqual([...offsets].sort((x, y) => x - y), offsets, "offsets increase");
    assert.equal(new Set(offsets).size, offsets.length, "offsets are distinct");
    // Room deliveries also reach the generic notification event.
    assert.equal(notifications.filter((n) => n.topic === "chat:lobby").length, 10);
  });

  test("a publisher subscribed to the room receives its own message", { timeout: 10_000 }, async () => {
    const [a] = await connected(1);
    const got = [];
    await a.subscribe("chat:self", (d) => got.push(d));
    const r = await a.publish("chat:self", "me");
    assert.equal(r.delivered, 1);
    await waitFor(() => got.length === 1, 3000, "own delivery");
    assert.equal(got[0], "me");
  });

  test("two handlers on one topic share one subscription", { timeout: 10_000 }, async () => {
    const [a, b] = await connected(2);
    const one = [];
    const two = [];
    const off1 = await a.subscribe("chat:shared", (d) => one.push(d));
    const off2 = await a.subscribe("chat:shared", (d) => two.push(d));
    assert.equal((await b.publish("chat:shared", 1)).delivered, 1);
    await waitFor(() => one.length === 1 && two.length === 1, 3000, "both handlers");
    await off1();
    assert.equal((await b.publish("chat:shared", 2)).delivered, 1, "still subscribed while a handler remains");
    await waitFor(() => two.length === 2, 3000, "second handler");
    assert.equal(one.length, 1);
    await off2();
    assert.equal((await b.publish("chat:shared", 3)).delivered, 0, "unsubscribed with the last handler");
    assert.deepEqual(a.subscriptions, []);
  });

  test("unsubscribe stops deliveries", { timeout: 10_000 }, async () => {
    const [a, b] = await connected(2);
    const got = [];
    const off = await a.subscribe("news:tech", (d) => got.push(d));
    await b.publish("news:tech", "before");
    await waitFor(() => got.length === 1, 3000, "first delivery");
    await off();
    const r = await b.publish("news:tech", "after");
    assert.equal(r.delivered, 0);
    await sleep(200);
    assert.deepEqual(got, ["before"]);
  });

  test("presence lists the connections in a room", { timeout: 10_000 }, async () => {
    const [a, b, c] = await connected(3);
    await a.subscribe("room:presence", () => {});
    await b.subscribe("room:presence", () => {});
    const p = await c.presence("room:presence");
    const text = JSON.stringify(p);
    assert.ok(text.includes(a.starlingId), `presence ${text} lists A`);
    assert.ok(text.includes(b.starlingId), `presence ${text} lists B`);
    assert.ok(!text.includes(c.starlingId), `presence ${text} does not list C`);
  });

  test("a closed client leaves its rooms", { timeout: 10_000 }, async () => {
    const [a, b] = await connected(2);
    await a.subscribe("room:leave", () => {});
    assert.equal((await b.publish("room:leave", 1)).delivered, 1);
    await a.close();
    await waitFor(async () => (await b.publish("room:leave", 2)).delivered === 0, 5000, "A to leave the room");
  });
});
