// Streams (uploads and downloads) against the file drop example server
// (examples/file-drop), a real Rust app on the helios library.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { STREAM_WINDOW, Starling, StarlingError } from "../dist/index.js";
import { sleep, startFileDrop } from "./helpers/server.mjs";

/** Bytes that differ at every position (a lost or reordered chunk shows). */
function pattern(n, seed = 0) {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (i * 31 + seed + (i >> 9)) & 0xff;
  return out;
}

describe("streams (file drop)", { timeout: 10 * 60_000 }, () => {
  let server;
  const clients = [];
  const client = async () => {
    const c = new Starling(server.url, { heartbeatInterval: 0 });
    clients.push(c);
    await c.connect();
    return c;
  };

  before(async () => {
    server = await startFileDrop();
  }, { timeout: 45 * 60_000 });

  after(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await server?.stop();
  });

  async function put(c, name, data) {
    const size = typeof data === "string" ? new TextEncoder().encode(data).length : data.length;
    const { stream, response } = c.requestStreaming("files:put", {}, { name, size });
    await stream.write(data);
    await stream.end();
    return response;
  }

  test("a file goes up and comes down unchanged, between two clients", { timeout: 60_000 }, async () => {
    const [alice, bob] = [await client(), await client()];
    const photo = pattern(1_500_007, 3);
    assert.deepEqual(await put(alice, "photo.bin", photo), { name: "photo.bin", bytes: photo.length });
    assert.deepEqual(await put(alice, "note.txt", "héllo ✓"), { name: "note.txt", bytes: 10 });
    const listed = await bob.request("files:list", {});
    assert.deepEqual(listed, [
      { name: "note.txt", bytes: 10 },
      { name: "photo.bin", bytes: photo.length },
    ]);
    const { stream, response } = bob.requestWithStream("files:get", { name: "photo.bin" });
    const file = await stream;
    assert.equal(file.name, "photo.bin");
    assert.equal(file.size, photo.length);
    const got = await file.readAll();
    assert.deepEqual(await response, { name: "photo.bin", bytes: photo.length });
    assert.equal(got.length, photo.length);
    assert.ok(Buffer.from(got).equals(Buffer.from(photo)), "same bytes");
    // for await over a stream, and text back as text.
    const note = bob.requestWithStream("files:get", { name: "note.txt" });
    const parts = [];
    for await (const chunk of await note.stream) parts.push(chunk);
    await note.response;
    assert.equal(new TextDecoder().decode(Buffer.concat(parts)), "héllo ✓");
  });

  test("the server sends no more than the credit window to a client that does not read", { timeout: 60_000 }, async () => {
    const c = await client();
    const big = pattern(48 * 1024 * (STREAM_WINDOW * 3), 9);
    await put(c, "big.bin", big);
    const { stream, response } = c.requestWithStream("files:get", { name: "big.bin" });
    const file = await stream;
    await sleep(400);
    assert.equal(file.queued, STREAM_WINDOW, "a full window, then the server waits");
    const got = await file.readAll();
    await response;
    assert.ok(Buffer.from(got).equals(Buffer.from(big)));
  });

  test("errors: an unknown file, an aborted upload, an oversized one", { timeout: 120_000 }, async () => {
    const c = await client();
    const missing = c.requestWithStream("files:get", { name: "nope" });
    await assert.rejects(missing.response, (e) => e instanceof StarlingError && e.code === "NOT_FOUND");
    await assert.rejects(missing.stream, (e) => e.code === "STREAM_ERROR" && /no stream/.test(e.message));

    const aborted = c.requestStreaming("files:put", {}, { name: "half.bin" });
    await aborted.stream.write(pattern(1000));
    aborted.stream.abort("changed my mind");
    await assert.rejects(aborted.response, (e) => e.code === "STREAM_ERROR" && /changed my mind/.test(e.message));

    const huge = c.requestStreaming("files:put", {}, { name: "huge.bin" });
    const chunk = pattern(1 << 20);
    let refused;
    for (let i = 0; i < 20 && !refused; i++) {
      await huge.stream.write(chunk).catch((e) => (refused = e));
    }
    assert.equal(refused?.code, "STREAM_ERROR");
    assert.match(refused.message, /stopped by the receiver/);
    await assert.rejects(huge.response, (e) => e.code === "STREAM_ERROR");
    const names = (await c.request("files:list", {})).map((f) => f.name);
    assert.ok(!names.includes("huge.bin") && !names.includes("half.bin"), names.join(","));
  });
});
