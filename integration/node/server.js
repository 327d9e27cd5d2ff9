'use strict';
// A `ws` WebSocket echo server driven by JSON lines, for wsgate's integration tests.
//
//   node server.js
//
// It listens on 127.0.0.1 on a free port and echoes every message with its type.
// stdout events: {"ev":"listening",port}, {"ev":"connection",id,protocol,path,extensions},
//   {"ev":"message",id,type,length,sha256,data?}, {"ev":"ping"|"pong",id,data},
//   {"ev":"close",id,code,reason}, {"ev":"error",message}.
// stdin commands, applied to every open connection: those of client.js (common.js apply).
// The process exits when stdin closes (or after 60 s).

const { WebSocketServer } = require('ws');
const { emit, describe, commands, apply } = require('./common');

const lifetime = setTimeout(() => {
  emit({ ev: 'error', message: 'server lifetime of 60 s exceeded' });
  process.exit(3);
}, 60000);

const wss = new WebSocketServer({
  host: '127.0.0.1',
  port: 0,
  maxPayload: 64 << 20,
  // WSGATE_DEFLATE=1 accepts permessage-deflate (with context takeover, every message compressed).
  perMessageDeflate: process.env.WSGATE_DEFLATE === '1' ? { threshold: 0 } : false,
  handleProtocols: (protocols) => (protocols.size ? protocols.values().next().value : false),
});
let nextID = 0;

wss.on('listening', () => emit({ ev: 'listening', port: wss.address().port }));
wss.on('error', (err) => emit({ ev: 'error', message: err.message }));
wss.on('connection', (ws, req) => {
  const id = ++nextID;
  emit({ ev: 'connection', id, protocol: ws.protocol, path: req.url, extensions: ws.extensions });
  ws.on('message', (data, isBinary) => {
    emit({ ev: 'message', id, ...describe(data, isBinary) });
    ws.send(data, { binary: isBinary });
  });
  ws.on('ping', (data) => emit({ ev: 'ping', id, data: data.toString('utf8') }));
  ws.on('pong', (data) => emit({ ev: 'pong', id, data: data.toString('utf8') }));
  ws.on('error', (err) => emit({ ev: 'error', id, message: err.message }));
  ws.on('close', (code, reason) => emit({ ev: 'close', id, code, reason: reason.toString('utf8') }));
});

const rl = commands((cmd) => {
  for (const ws of wss.clients) apply(ws, cmd);
});
rl.on('close', () => {
  clearTimeout(lifetime);
  for (const ws of wss.clients) ws.terminate();
  wss.close();
});
