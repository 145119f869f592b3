// uWebSockets.js (npm package `uwebsockets`) server speaking Helios-Starling
// JSON, with uWS's native pub/sub for rooms: node uws-server.js PORT
'use strict';
const uWS = require('uwebsockets');
const { welcome, makeHandler, counts } = require('./starling');

const port = Number(process.argv[2] || 7704);
const subs = counts();
const decoder = new TextDecoder();
let app;
const rooms = {
  subscribe(ws, topic) { if (ws.subscribe(topic)) { subs.add(topic); ws.getUserData().topics.add(topic); } },
  unsubscribe(ws, topic) { if (ws.unsubscribe(topic)) { subs.remove(topic); ws.getUserData().topics.delete(topic); } },
  publish(topic, frame) { app.publish(topic, frame, false); return subs.get(topic); },
};
const handle = makeHandler(rooms);
app = uWS.App().ws('/*', {
  compression: uWS.DISABLED,
  maxPayloadLength: 1 << 20,
  idleTimeout: 0,
  maxBackpressure: 64 * 1024 * 1024,
  open(ws) { ws.getUserData().topics = new Set(); ws.send(welcome(), false); },
  message(ws, msg) { handle(ws, decoder.decode(msg), (s) => ws.send(s, false)); },
  close(ws) { for (const t of ws.getUserData().topics) subs.remove(t); },
}).listen('127.0.0.1', port, (token) => {
  if (!token) { console.error(`uws: cannot listen on ${port}`); process.exit(1); }
  console.error(`uws listening on ws://127.0.0.1:${port}/ws`);
});
