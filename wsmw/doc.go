// Package wsmw is an RFC 6455 WebSocket implementation for net/http: the server
// handshake (Upgrade, Middleware), the client handshake (Dial), frames, masking,
// close codes, UTF-8 validation and limits. It knows nothing of proxying; the
// proxy package builds on its frame-level API.
//
// # Two levels
//
// The message level is what most handlers use: Read returns the next whole
// message (appended to a buffer the caller may reuse, so steady-state reads
// allocate nothing) and Write sends one, both taking a context whose end
// interrupts them. A MessageType is text or binary: control frames are not
// messages. Pings are answered, pongs passed to the pong handler, and a
// received close is answered with the same code, the connection closed and
// the peer's *CloseError returned.
//
// The frame level gives what a proxy or a protocol layer needs: NextFrame
// returns each frame's Header, after applying every receive rule of RFC 6455,
// and a reader of its payload; WriteFrame sends a frame with the given FIN,
// RSV bits and opcode, so that a message can be sent as fragments with
// control frames between them. Control frames are returned too; pings are
// answered by the ping handler (by default with a pong) and a close frame is
// recorded but not answered, so the caller decides how to complete the close
// handshake (Close). The machinery that forwards frames from one connection
// to another (splice, batched re-masking) is the proxy's, kept out of this
// package's API (package internal/relay of this module).
//
// # Concurrency
//
// One goroutine reads; any number write. Each frame is written whole under a
// lock, so control frames (pongs, pings, the close) may go between the
// fragments of a message but never inside a frame; a writer sending a message
// as fragments keeps other writers' messages out itself. Close may be called
// from any goroutine: if a read is in progress, the reader receives the peer's
// close; otherwise Close reads until it arrives, bounded by the close timeout.
// Group tracks a handler's connections, so that a server can close them all
// with a code on shutdown and wait for their handlers.
//
// # Rules and close codes
//
// A frame that breaks the protocol fails the connection (RFC 6455 §7.1.7): a
// close frame with the code is sent and the read returns a *FailError at once;
// the peer's close is awaited in the background (so it is not lost to a TCP
// reset), bounded by the close timeout, and then the connection is closed. Masking (client frames masked, server frames not),
// RSV bits without a negotiated extension, unknown opcodes, fragmented or
// oversized (>125 bytes) control frames, continuation frames out of place and
// invalid close payloads fail with 1002; invalid UTF-8 in a text message fails
// with 1007 at the first byte that cannot be completed, across fragments;
// frames over MaxFrameSize or messages over MaxMessageSize fail with 1009 as
// soon as their header is read. Codes 1005, 1006 and 1015 are never written.
//
// # Buffers and memory
//
// A connection holds no read buffer while idle: on TCP and Unix sockets the
// reader waits for readiness before taking a 4 KiB buffer from a pool, and
// gives it back as soon as it is drained. Writes need no buffer in the server
// role (header and payload go out in one vectored write); a client masks a
// copy of the payload, through a pooled buffer. Steady-state frame reads and
// writes do not allocate.
//
// With permessage-deflate an idle connection holds about 150 bytes of state,
// plus what context takeover demands (measured by TestDeflate_MemoryPerConnection):
// when the peer compresses with context takeover, its window of 2^window-bits
// bytes (32 KiB, or 1 KiB at 10 bits); when this side does, its compressor
// (about 800 KiB at level 1, 1.4 MiB at level 9, 1 MiB with a window under 15
// bits). Both are allocated with the first compressed message. Otherwise
// decompressors (about 70 KiB) and compressors come from pools for the length
// of one message. A server with many connections sets ServerNoContextTakeover,
// and ClientNoContextTakeover too to hold nothing at all.
//
// # Compression
//
// CompressionOptions in ServerConfig or DialConfig negotiate permessage-deflate
// (RFC 7692) with all four parameters. Read inflates messages whose first
// frame has RSV1 (text is then checked as UTF-8, 1007), within MaxMessageSize:
// inflation stops as soon as the output exceeds it (1009), so a small message
// that would inflate to gigabytes costs no more than the limit. Data that
// does not inflate fails with 1007 (RFC 7692 names no code). Write compresses
// messages of Threshold bytes or more; frames written with WriteFrame and
// control frames are sent as they are. The frame level passes RSV1 frames
// through untouched, as a proxy relaying them needs. A Conn whose
// permessage-deflate was accepted by the caller's own Extensions hooks reports
// it (Compression) but leaves payloads compressed at every level.
//
// # HTTP/2 and HTTP/3
//
// Browsers open a WebSocket on an existing HTTP/2 or HTTP/3 connection when
// the server advertises extended CONNECT: the handshake is a CONNECT request
// with :protocol websocket (RFC 8441, RFC 9220), answered 200, and the frames
// flow on that request's stream. IsUpgradeRequest, CheckHandshake, Upgrade and
// Middleware accept it: Sec-WebSocket-Version 13 is required (426 otherwise),
// there is no key and no accept, and subprotocols, extensions, origins, every
// limit and API work as on TCP. net/http's HTTP/2 server advertises extended
// CONNECT only when the process starts with GODEBUG=http2xconnect=1; quic-go's
// HTTP/3 server always does.
//
// The stream ends when the handler returns, so the connection cannot outlive
// ServeHTTP: Middleware runs h in ServeHTTP's goroutine on HTTP/2 and HTTP/3,
// and a handler that calls Upgrade must close the Conn before it returns. The
// way the Conn closes decides how the stream ends (RFC 8441 §5): after a
// complete close handshake the stream ends in order (END_STREAM, or FIN);
// otherwise (CloseNow, a failure, a peer gone) it is reset: at once on
// HTTP/2; on HTTP/3 the peer is told to stop sending at once and the rest is
// reset when the handler panics with http.ErrAbortHandler, as Middleware does
// when it returns. Such resets carry INTERNAL_ERROR (H3_INTERNAL_ERROR), not
// the CANCEL (H3_REQUEST_CANCELLED) of RFC 8441 and RFC 9220: net/http and
// quic-go give a handler no other way to reset its stream.
//
// An idle Conn on a stream holds no read buffer either: it waits for the next
// frame's first bytes in a 14-byte array of its own. What it costs is mostly
// what net/http's HTTP/2 server holds for any open stream (its stream state,
// the request, the response writer's 4 KiB buffer and the handler's
// goroutine); BenchmarkIdleStreamMemory measures both.
//
// DialConfig.HTTP2 and DialConfig.HTTP3 dial the same way, as a client.
//
// # Origin policy
//
// A request without Origin (a non-browser client) is accepted. A browser's
// Origin is accepted when its host equals the request's Host, or when it
// matches one of ServerConfig.Origins: patterns with "://" match the whole
// origin ("https://*.example.com"), others its host[:port] ("*.example.com",
// "localhost:*"), and "*" alone allows every origin. Anything else is 403.
package wsmw
