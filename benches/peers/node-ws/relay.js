// A relay on Node's `ws` with wshub's routing, for side-by-side load runs.
//
// ws://127.0.0.1:PORT/ROOM/NAME joins ROOM as NAME. A plain message goes to
// every other client in the sender's room; a JSON object with a string
// "receiver" goes to the clients with that name. No offline queue, no
// limits beyond `ws`'s own: the shortest correct relay people write with it.
//
// usage: node relay.js [PORT]   (PORT 0, the default, picks a free one)
// prints: listening on ws://127.0.0.1:PORT

'use strict';
const { WebSocketServer, WebSocket } = require('ws');

const port = Number(process.argv[2] || process.env.PORT || 0);
const rooms = new Map(); // room -> Set of sockets
const names = new Map(); // name -> Set of sockets

const wss = new WebSocketServer({
  host: '127.0.0.1',
  port,
  perMessageDeflate: false,
  maxPayload: 64 << 20,
});

function joinSet(map, key, ws) {
  let set = map.get(key);
  if (!set) map.set(key, (set = new Set()));
  set.add(ws);
  return set;
}

function leaveSet(map, key, ws) {
  const set = map.get(key);
  if (set && set.delete(ws) && set.size === 0) map.delete(key);
}

// The "receiver" of a directed JSON message, or null.
function receiverOf(data, isBinary) {
  if (isBinary || data.length === 0 || data[0] !== 0x7b /* { */) return null;
  try {
    const obj = JSON.parse(data.toString('utf8'));
    return typeof obj.receiver === 'string' ? obj.receiver : null;
  } catch {
    return null;
  }
}

wss.on('connection', (ws, req) => {
  const segments = new URL(req.url, 'http://relay').pathname.split('/').filter(Boolean);
  const name = segments.pop() || `anon-${Math.random().toString(36).slice(2)}`;
  const room = segments.join('/');
  const peers = joinSet(rooms, room, ws);
  joinSet(names, name, ws);
  ws.on('message', (data, isBinary) => {
    const receiver = receiverOf(data, isBinary);
    const targets = receiver === null ? peers : names.get(receiver) || [];
    for (const peer of targets) {
      if (peer !== ws && peer.readyState === WebSocket.OPEN) peer.send(data, { binary: isBinary });
    }
  });
  ws.on('close', () => {
    leaveSet(rooms, room, ws);
    leaveSet(names, name, ws);
  });
  ws.on('error', () => {});
});

wss.on('listening', () => {
  console.log(`listening on ws://127.0.0.1:${wss.address().port}`);
});
