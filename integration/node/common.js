'use strict';
// Shared helpers of the Node peers: JSON lines on stdout (events) and stdin
// (commands), and the deterministic payloads that the Go side also builds.

const crypto = require('crypto');
const readline = require('readline');

function emit(ev) {
  process.stdout.write(JSON.stringify(ev) + '\n');
}

// pattern returns n bytes: binary i%251, or text from the lower-case alphabet.
function pattern(n, text) {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = text ? 97 + (i % 26) : i % 251;
  return b;
}

// payload builds a command's data: "data" (text), "b64" (binary) or "size" (pattern).
function payload(cmd, text) {
  if (typeof cmd.size === 'number') return pattern(cmd.size, text);
  if (typeof cmd.b64 === 'string') return Buffer.from(cmd.b64, 'base64');
  return Buffer.from(cmd.data || '', 'utf8');
}

// describe reports a received message: its type, length, SHA-256 and, when
// short, its content (text as is, binary in base64).
function describe(data, isBinary) {
  const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data);
  const ev = {
    type: isBinary ? 'binary' : 'text',
    length: buf.length,
    sha256: crypto.createHash('sha256').update(buf).digest('hex'),
  };
  if (buf.length <= 256) ev.data = isBinary ? buf.toString('base64') : buf.toString('utf8');
  return ev;
}

// commands calls handle for each JSON line on stdin; a bad line is reported, not fatal.
function commands(handle) {
  const rl = readline.createInterface({ input: process.stdin, terminal: false });
  rl.on('line', (line) => {
    if (!line.trim()) return;
    let cmd;
    try {
      cmd = JSON.parse(line);
    } catch (e) {
      emit({ ev: 'error', message: 'bad command: ' + e.message });
      return;
    }
    try {
      handle(cmd);
    } catch (e) {
      emit({ ev: 'error', message: String(e && e.message ? e.message : e) });
    }
  });
  return rl;
}

// apply runs one stdin command on a connection: send a text, binary or
// fragmented message, a ping or pong, close, or terminate.
function apply(ws, cmd) {
  switch (cmd.op) {
    case 'text':
      ws.send(payload(cmd, true), { binary: false });
      break;
    case 'binary':
      ws.send(payload(cmd, false), { binary: true });
      break;
    case 'fragments': {
      const binary = cmd.type === 'binary';
      cmd.parts.forEach((part, i) => {
        ws.send(Buffer.from(part, 'utf8'), { binary, fin: i === cmd.parts.length - 1 });
      });
      break;
    }
    case 'ping':
      ws.ping(Buffer.from(cmd.data || '', 'utf8'));
      break;
    case 'pong':
      ws.pong(Buffer.from(cmd.data || '', 'utf8'));
      break;
    case 'close':
      ws.close(cmd.code, cmd.reason);
      break;
    case 'terminate':
      ws.terminate();
      break;
    default:
      emit({ ev: 'error', message: 'unknown op ' + cmd.op });
  }
}

module.exports = { emit, pattern, payload, describe, commands, apply };
