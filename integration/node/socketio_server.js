'use strict';
// One node of a Socket.IO v4 cluster, for wsgate's sticky-session tests.
//
//   node socketio_server.js NODE_ID [CORS_ORIGIN]
//
// It listens on 127.0.0.1 on a free port, Socket.IO at /socket.io/ (long-polling
// first, then the upgrade to WebSocket: the defaults). With CORS_ORIGIN it
// answers cross-origin requests from that origin with credentials (cookies).
//
// What a client sees:
//   "hello" (sent on connection): {node, sid, transport}
//   "ack" (i, callback): callback({node, sid, i, n, transport}), where n counts
//     the acks of this connection and transport is the one in use on this node.
// stdout events (JSON lines), each with "node":
//   {"ev":"listening",port}
//   {"ev":"request",method,sid,transport,status,lb}   every HTTP request, once answered
//   {"ev":"upgrade_request",sid,transport,lb,ext}     every Upgrade request, on arrival; ext is
//                                                     its Sec-WebSocket-Extensions (the offer)
//   {"ev":"connection_error",sid,transport,code,message}  what engine.io refused
//   {"ev":"handshake",sid,transport}                  engine.io created session sid
//   {"ev":"upgraded",sid,transport}                   session sid moved to transport
//   {"ev":"ack",sid,i,n,transport}
//   {"ev":"disconnect",sid,reason}
// ("lb" tells whether the request carried the balancer's cookie "lb".)
// The process exits when stdin closes (or after 120 s).

const http = require('http');
const readline = require('readline');
const { Server } = require('socket.io');

const node = process.argv[2] || 'node';
const corsOrigin = process.argv[3] || '';

function emit(ev) {
  process.stdout.write(JSON.stringify({ node, ...ev }) + '\n');
}

const lifetime = setTimeout(() => {
  emit({ ev: 'error', message: 'lifetime of 120 s exceeded' });
  process.exit(3);
}, 120000);

function describe(req) {
  const q = new URL(req.url, 'http://x').searchParams;
  return {
    sid: q.get('sid') || '',
    transport: q.get('transport') || '',
    lb: /(^|;\s*)lb=/.test(req.headers.cookie || ''),
  };
}

const httpServer = http.createServer();
const io = new Server(httpServer, {
  path: '/socket.io/',
  serveClient: false,
  cors: corsOrigin ? { origin: corsOrigin, credentials: true } : undefined,
});

// Socket.IO has installed its own listeners; these run before them.
httpServer.prependListener('request', (req, res) => {
  const d = describe(req);
  res.on('finish', () => emit({ ev: 'request', method: req.method, ...d, status: res.statusCode }));
});
httpServer.prependListener('upgrade', (req) =>
  emit({ ev: 'upgrade_request', ...describe(req), ext: req.headers['sec-websocket-extensions'] || '' }));

io.engine.on('connection_error', (err) => {
  const d = err.req ? describe(err.req) : {};
  emit({ ev: 'connection_error', sid: d.sid || '', transport: d.transport || '', code: err.code, message: err.message });
});
io.engine.on('connection', (s) => {
  emit({ ev: 'handshake', sid: s.id, transport: s.transport.name });
  s.on('upgrade', (t) => emit({ ev: 'upgraded', sid: s.id, transport: t.name }));
});

io.on('connection', (socket) => {
  const sid = socket.conn.id;
  let n = 0;
  socket.emit('hello', { node, sid, transport: socket.conn.transport.name });
  socket.on('ack', (i, callback) => {
    n++;
    const transport = socket.conn.transport.name;
    emit({ ev: 'ack', sid, i, n, transport });
    if (typeof callback === 'function') callback({ node, sid, i, n, transport });
  });
  socket.on('disconnect', (reason) => emit({ ev: 'disconnect', sid, reason }));
});

httpServer.on('error', (err) => emit({ ev: 'error', message: err.message }));
httpServer.listen(0, '127.0.0.1', () => emit({ ev: 'listening', port: httpServer.address().port }));

const rl = readline.createInterface({ input: process.stdin, terminal: false });
rl.on('close', () => {
  clearTimeout(lifetime);
  io.close();
  httpServer.closeAllConnections();
  process.exit(0);
});
