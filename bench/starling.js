// The Helios-Starling JSON protocol for the peer servers: the same frames
// Helios sends (welcome, responses, room deliveries), shared by the Node
// `ws`, Bun and uWebSockets.js servers. Rooms are plugged in per server so
// each uses its own native fan-out where it has one (Bun and uWS publish).
'use strict';

const PROTOCOL = 'helios-starling';
const VERSION = '1.0.0';
let nextId = 0;

function welcome() {
  return JSON.stringify({
    protocol: PROTOCOL, version: VERSION, timestamp: Date.now(), type: 'notification',
    notification: {
      topic: 'helios:welcome',
      data: { starlingId: `peer-${process.pid}-${++nextId}`, recovered: false, serverTime: Date.now() },
    },
  });
}

function ok(requestId, data) {
  return JSON.stringify({
    protocol: PROTOCOL, version: VERSION, timestamp: Date.now(), type: 'response',
    requestId, success: true, data,
  });
}

function fail(requestId, code, message) {
  return JSON.stringify({
    protocol: PROTOCOL, version: VERSION, timestamp: Date.now(), type: 'response',
    requestId, success: false, error: { code, message },
  });
}

function delivery(topic, data, offset) {
  return JSON.stringify({
    protocol: PROTOCOL, version: VERSION, timestamp: Date.now(), type: 'notification',
    notification: { topic, data, offset, epoch: 'bench' },
  });
}

// rooms: { subscribe(conn, topic), unsubscribe(conn, topic), publish(topic, frame) -> delivered }
function makeHandler(rooms) {
  const offsets = new Map();
  return function handle(conn, text, send) {
    let msg;
    try { msg = JSON.parse(text); } catch (e) {
      send(JSON.stringify({ protocol: PROTOCOL, version: VERSION, timestamp: Date.now(), type: 'notification',
        notification: { topic: 'helios:error', data: { code: 'INVALID_MESSAGE_FORMAT', message: String(e) } } }));
      return;
    }
    if (msg.type !== 'request' || typeof msg.requestId !== 'string') return;
    const id = msg.requestId;
    const p = msg.payload;
    switch (msg.method) {
      case 'system:echo':
        send(ok(id, p === undefined ? null : p));
        return;
      case 'system:ping':
        send(ok(id, { pong: true, timestamp: Date.now() }));
        return;
      case 'helios:subscribe':
        rooms.subscribe(conn, p.topic);
        send(ok(id, { topic: p.topic, subscribed: true }));
        return;
      case 'helios:unsubscribe':
        rooms.unsubscribe(conn, p.topic);
        send(ok(id, { topic: p.topic, subscribed: false }));
        return;
      case 'helios:publish': {
        const offset = (offsets.get(p.topic) || 0) + 1;
        offsets.set(p.topic, offset);
        // Encoded once, the same string goes to every subscriber.
        const delivered = rooms.publish(p.topic, delivery(p.topic, p.data, offset));
        send(ok(id, { topic: p.topic, delivered }));
        return;
      }
      default:
        send(fail(id, 'METHOD_NOT_FOUND', `no method ${JSON.stringify(msg.method)}`));
    }
  };
}

// Room bookkeeping for servers without native pub/sub (Node ws): topic -> Set.
function setRooms(sendTo) {
  const rooms = new Map();
  return {
    subscribe(conn, topic) {
      let s = rooms.get(topic);
      if (!s) rooms.set(topic, (s = new Set()));
      s.add(conn);
      (conn.topics || (conn.topics = new Set())).add(topic);
    },
    unsubscribe(conn, topic) {
      const s = rooms.get(topic);
      if (s) s.delete(conn);
      if (conn.topics) conn.topics.delete(topic);
    },
    leaveAll(conn) {
      if (!conn.topics) return;
      for (const t of conn.topics) { const s = rooms.get(t); if (s) s.delete(conn); }
    },
    publish(topic, frame) {
      const s = rooms.get(topic);
      if (!s) return 0;
      for (const c of s) sendTo(c, frame);
      return s.size;
    },
  };
}

// Subscriber counts for servers with native pub/sub (Bun, uWS).
function counts() {
  const n = new Map();
  return {
    add(t) { n.set(t, (n.get(t) || 0) + 1); },
    remove(t) { n.set(t, Math.max(0, (n.get(t) || 0) - 1)); },
    get(t) { return n.get(t) || 0; },
  };
}

module.exports = { welcome, makeHandler, setRooms, counts };
