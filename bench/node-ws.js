// Node.js `ws` server speaking Helios-Starling JSON: node node-ws.js PORT
'use strict';
const { WebSocketServer } = require('ws');
const { welcome, makeHandler, setRooms } = require('./starling');

const port = Number(process.argv[2] || 7703);
const rooms = setRooms((ws, frame) => ws.send(frame));
const handle = makeHandler(rooms);
const wss = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate: false, maxPayload: 1 << 20 });
wss.on('connection', (ws) => {
  ws.send(welcome());
  const send = (s) => ws.send(s);
  ws.on('message', (data) => handle(ws, data.toString(), send));
  ws.on('close', () => rooms.leaveAll(ws));
  ws.on('error', () => {});
});
wss.on('listening', () => console.error(`node-ws listening on ws://127.0.0.1:${port}/ws`));
