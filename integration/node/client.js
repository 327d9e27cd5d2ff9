'use strict';
// A `ws` WebSocket client driven by JSON lines, for wsgate's integration tests.
//
//   node client.js URL [SUBPROTOCOL]
//
// stdout events: {"ev":"open","protocol","extensions"}, {"ev":"message",type,length,sha256,data?},
//   {"ev":"ping"|"pong",data}, {"ev":"close",code,reason}, {"ev":"unexpected-response",status},
//   {"ev":"error",message}.
// stdin commands: {"op":"text",data|size}, {"op":"binary",b64|size},
//   {"op":"fragments","type":"text"|"binary","parts":[...]} (one message, one frame per part),
//   {"op":"ping",data}, {"op":"pong",data}, {"op":"close",code,reason}, {"op":"terminate"}.
// The end of stdin closes with 1000. The process exits after the close event
// (or 30 s at most).

const WebSocket = require('ws');
const { emit, describe, commands, apply } = require('./common');

const [url, protocol] = process.argv.slice(2);
if (!url) {
  console.error('usage: node client.js URL [SUBPROTOCOL]');
  process.exit(2);
}

const lifetime = setTimeout(() => {
  emit({ ev: 'error', message: 'client lifetime of 30 s exceeded' });
  process.exit(3);
}, 30000);

// The defaults of ws are kept (it offers permessage-deflate, which the proxy
// does not forward), except the largest message it accepts.
const ws = new WebSocket(url, protocol ? [protocol] : [], { maxPayload: 64 << 20, handshakeTimeout: 5000 });

// Commands that arrive before the handshake completes wait for it.
let pending = [];
ws.on('open', () => {
  emit({ ev: 'open', protocol: ws.protocol, extensions: ws.extensions });
  const queued = pending;
  pending = null;
  queued.forEach((cmd) => apply(ws, cmd));
});
ws.on('message', (data, isBinary) => emit({ ev: 'message', ...describe(data, isBinary) }));
ws.on('ping', (data) => emit({ ev: 'ping', data: data.toString('utf8') }));
ws.on('pong', (data) => emit({ ev: 'pong', data: data.toString('utf8') }));
ws.on('unexpected-response', (req, res) => {
  emit({ ev: 'unexpected-response', status: res.statusCode });
  req.destroy();
});
ws.on('error', (err) => emit({ ev: 'error', message: err.message }));
ws.on('close', (code, reason) => {
  emit({ ev: 'close', code, reason: reason.toString('utf8') });
  clearTimeout(lifetime);
  rl.close();
  process.stdin.destroy();
});

const rl = commands((cmd) => (pending ? pending.push(cmd) : apply(ws, cmd)));
// The end of stdin closes the connection normally (once it is open).
rl.on('close', () => {
  const bye = { op: 'close', code: 1000, reason: '' };
  if (pending) pending.push(bye);
  else if (ws.readyState === WebSocket.OPEN) apply(ws, bye);
});
