'use strict';
// A WebSocket client over HTTP/2 (RFC 8441) on Node's own http2 module, for
// wsgate's integration tests: an implementation independent of Go's. It opens
// the WebSocket with an extended CONNECT once the server's SETTINGS allow it,
// and frames the stream itself (RFC 6455: masked frames out, unmasked in).
//
//   node h2client.js URL [SUBPROTOCOL]      (URL: https://host:port/path, or http:// for h2c)
//
// Events and commands are those of client.js (stdout / stdin JSON lines), plus
// {"ev":"stream-end","message":"end"|"reset <code>"} when the server's side of
// the stream ends: in order (END_STREAM) or with a RST_STREAM. Self-signed
// certificates are accepted.

const http2 = require('http2');
const crypto = require('crypto');
const { emit, describe, commands, apply } = require('./common');

const [url, protocol] = process.argv.slice(2);
if (!url) {
  console.error('usage: node h2client.js URL [SUBPROTOCOL]');
  process.exit(2);
}

const lifetime = setTimeout(() => {
  emit({ ev: 'error', message: 'client lifetime of 30 s exceeded' });
  process.exit(3);
}, 30000);

const OP = { cont: 0, text: 1, binary: 2, close: 8, ping: 9, pong: 10 };

// encode builds one masked client frame.
function encode(fin, op, payload) {
  const n = payload.length;
  const ext = n < 126 ? 0 : n < 65536 ? 2 : 8;
  const head = Buffer.alloc(2 + ext + 4);
  head[0] = (fin ? 0x80 : 0) | op;
  head[1] = 0x80 | (ext === 0 ? n : ext === 2 ? 126 : 127);
  if (ext === 2) head.writeUInt16BE(n, 2);
  if (ext === 8) head.writeBigUInt64BE(BigInt(n), 2);
  const key = crypto.randomBytes(4);
  key.copy(head, 2 + ext);
  const body = Buffer.from(payload);
  for (let i = 0; i < n; i++) body[i] ^= key[i & 3];
  return Buffer.concat([head, body]);
}

// H2WebSocket has the methods common.js's apply calls on a ws WebSocket.
class H2WebSocket {
  constructor(stream) {
    this.stream = stream;
    this.buf = Buffer.alloc(0);
    this.parts = null; // received fragments of the message in progress
    this.partType = '';
    this.sending = false; // a fragmented message is being sent
    this.closeSent = false;
    this.closed = false;
    this.sawEnd = false;
    stream.on('data', (chunk) => this.onData(chunk));
    stream.on('end', () => {
      this.sawEnd = true;
    });
    stream.on('close', () => this.onStreamClose());
    stream.on('error', (err) => emit({ ev: 'error', message: err.message }));
  }

  write(fin, op, payload) {
    if (!this.stream.writable) return;
    this.stream.write(encode(fin, op, payload));
  }

  send(data, { binary, fin = true }) {
    const op = this.sending ? OP.cont : binary ? OP.binary : OP.text;
    this.write(fin, op, data);
    this.sending = !fin;
  }

  ping(data) {
    this.write(true, OP.ping, data);
  }

  pong(data) {
    this.write(true, OP.pong, data);
  }

  close(code, reason) {
    if (this.closeSent) return;
    this.closeSent = true;
    const r = Buffer.from(reason || '', 'utf8');
    const body = Buffer.alloc(2 + r.length);
    body.writeUInt16BE(code, 0);
    r.copy(body, 2);
    this.write(true, OP.close, body);
  }

  terminate() {
    this.stream.close(http2.constants.NGHTTP2_CANCEL);
  }

  onData(chunk) {
    this.buf = Buffer.concat([this.buf, chunk]);
    for (;;) {
      const f = this.parse();
      if (!f) return;
      this.onFrame(f);
    }
  }

  // parse takes one whole frame off the buffer, or returns null.
  parse() {
    const b = this.buf;
    if (b.length < 2) return null;
    let n = b[1] & 0x7f;
    let off = 2;
    if (n === 126) {
      if (b.length < 4) return null;
      n = b.readUInt16BE(2);
      off = 4;
    } else if (n === 127) {
      if (b.length < 10) return null;
      n = Number(b.readBigUInt64BE(2));
      off = 10;
    }
    if (b[1] & 0x80) {
      emit({ ev: 'error', message: 'masked frame from the server' });
      off += 4;
    }
    if (b.length < off + n) return null;
    this.buf = b.subarray(off + n);
    return { fin: (b[0] & 0x80) !== 0, op: b[0] & 0x0f, payload: b.subarray(off, off + n) };
  }

  onFrame(f) {
    switch (f.op) {
      case OP.text:
      case OP.binary:
        this.partType = f.op === OP.binary ? 'binary' : 'text';
        this.parts = [f.payload];
        break;
      case OP.cont:
        if (!Array.isArray(this.parts)) {
          emit({ ev: 'error', message: 'continuation without a message' });
          return;
        }
        this.parts.push(f.payload);
        break;
      case OP.ping:
        emit({ ev: 'ping', data: f.payload.toString('utf8') });
        this.pong(f.payload);
        return;
      case OP.pong:
        emit({ ev: 'pong', data: f.payload.toString('utf8') });
        return;
      case OP.close: {
        const code = f.payload.length >= 2 ? f.payload.readUInt16BE(0) : 1005;
        const reason = f.payload.subarray(2).toString('utf8');
        if (!this.closeSent) {
          this.closeSent = true;
          this.write(true, OP.close, f.payload.subarray(0, 2));
        }
        this.closed = true;
        emit({ ev: 'close', code, reason });
        this.stream.end(); // the close handshake is complete: END_STREAM
        return;
      }
      default:
        emit({ ev: 'error', message: 'opcode ' + f.op });
        return;
    }
    if (f.fin) {
      emit({ ev: 'message', ...describe(this.parts, this.partType === 'binary') });
      this.parts = null;
    }
  }

  onStreamClose() {
    const how = this.sawEnd ? 'end' : 'reset ' + this.stream.rstCode;
    emit({ ev: 'stream-end', message: how });
    if (!this.closed) emit({ ev: 'close', code: 1006, reason: '' });
    finish();
  }
}

// finish lets the process exit: no more commands, no more streams.
function finish() {
  clearTimeout(lifetime);
  rl.close();
  process.stdin.destroy();
  session.close();
}

const target = new URL(url);
const session = http2.connect(target.origin, { rejectUnauthorized: false });
session.on('error', (err) => emit({ ev: 'error', message: err.message }));

let ws = null;
let pending = [];

session.once('remoteSettings', (settings) => {
  if (!settings.enableConnectProtocol) {
    emit({ ev: 'error', message: 'the server does not allow extended CONNECT' });
    session.close();
    process.exit(4);
  }
  const headers = {
    ':method': 'CONNECT',
    ':protocol': 'websocket',
    ':scheme': target.protocol.replace(':', ''),
    ':authority': target.host,
    ':path': target.pathname + target.search,
    'sec-websocket-version': '13',
    origin: target.origin,
  };
  if (protocol) headers['sec-websocket-protocol'] = protocol;
  const stream = session.request(headers, { endStream: false });
  stream.on('response', (h) => {
    const status = h[':status'];
    if (status !== 200) {
      emit({ ev: 'unexpected-response', status });
      stream.close(http2.constants.NGHTTP2_CANCEL);
      finish();
      return;
    }
    ws = new H2WebSocket(stream);
    emit({ ev: 'open', protocol: h['sec-websocket-protocol'] || '', extensions: h['sec-websocket-extensions'] || '' });
    const queued = pending;
    pending = null;
    queued.forEach((cmd) => apply(ws, cmd));
  });
});

const rl = commands((cmd) => (pending ? pending.push(cmd) : apply(ws, cmd)));
// The end of stdin closes the connection normally (once it is open).
rl.on('close', () => {
  const bye = { op: 'close', code: 1000, reason: '' };
  if (pending) pending.push(bye);
  else if (ws && !ws.closeSent) apply(ws, bye);
});
