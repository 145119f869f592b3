// Socket.IO 4 server with acks, the same operations as the Helios-Starling
// peers: events `echo`, `subscribe`, `publish` answered by acks, deliveries
// as `message` events. helios-bench talks to it with --proto socketio at
// ws://127.0.0.1:PORT/socket.io/?EIO=4&transport=websocket.
// node sio-server.js PORT
'use strict';
const { Server } = require('socket.io');

const port = Number(process.argv[2] || 7705);
// Long ping interval: the open-loop and fan-out readers do not answer pings.
const io = new Server(port, {
  transports: ['websocket'], perMessageDeflate: false, pingInterval: 600000, pingTimeout: 600000,
  maxHttpBufferSize: 1 << 20, serveClient: false,
});
const offsets = new Map();
io.on('connection', (socket) => {
  socket.on('echo', (p, ack) => { if (typeof ack === 'function') ack(p); });
  socket.on('subscribe', (p, ack) => { socket.join(p.topic); if (ack) ack({ topic: p.topic, subscribed: true }); });
  socket.on('unsubscribe', (p, ack) => { socket.leave(p.topic); if (ack) ack({ topic: p.topic, subscribed: false }); });
  socket.on('publish', (p, ack) => {
    const offset = (offsets.get(p.topic) || 0) + 1;
    offsets.set(p.topic, offset);
    const room = io.sockets.adapter.rooms.get(p.topic);
    io.to(p.topic).emit('message', { topic: p.topic, data: p.data, offset });
    if (ack) ack({ topic: p.topic, delivered: room ? room.size : 0 });
  });
});
console.error(`socket.io listening on ws://127.0.0.1:${port}/socket.io/?EIO=4&transport=websocket`);
