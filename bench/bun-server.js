// Bun server speaking Helios-Starling JSON, with Bun's native pub/sub for
// rooms (server.publish): bun bun-server.js PORT
'use strict';
const { welcome, makeHandler, counts } = require('./starling');

const port = Number(process.argv[2] || 7702);
const subs = counts();
let server;
const rooms = {
  subscribe(ws, topic) { if (!ws.isSubscribed(topic)) { ws.subscribe(topic); subs.add(topic); } },
  unsubscribe(ws, topic) { if (ws.isSubscribed(topic)) { ws.unsubscribe(topic); subs.remove(topic); } },
  publish(topic, frame) { server.publish(topic, frame); return subs.get(topic); },
};
const handle = makeHandler(rooms);
server = Bun.serve({
  hostname: '127.0.0.1',
  port,
  fetch(req, srv) {
    if (srv.upgrade(req)) return undefined;
    return new Response('WebSocket only', { status: 400 });
  },
  websocket: {
    perMessageDeflate: false,
    maxPayloadLength: 1 << 20,
    idleTimeout: 960,
    open(ws) { ws.send(welcome()); },
    message(ws, msg) { handle(ws, typeof msg === 'string' ? msg : msg.toString(), (s) => ws.send(s)); },
    close(ws) { for (const t of ws.subscriptions || []) subs.remove(t); },
  },
});
console.error(`bun listening on ws://127.0.0.1:${port}/ws`);
