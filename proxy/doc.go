// Package proxy is wsgate's inspect-and-forward engine: an http.Handler (and
// router middleware) that terminates a client's WebSocket, dials an upstream
// WebSocket in client mode, and forwards frames between them, enforcing limits
// and inspector verdicts. It builds on wsmw and knows nothing of chi or Caddy.
//
// # A session
//
// ServeHTTP validates the client's handshake, picks an upstream with the
// Balancer among the healthy ones, and dials it before answering: the client's
// 101 carries the upstream's choice of subprotocol (and, with compression, of
// extension parameters); an upstream refusal is relayed with its status and a
// bounded body; an unreachable upstream is retried and then answered with 502,
// 504 on a timeout, 503 when none is available. After the upgrade ServeHTTP
// returns and the session runs in two goroutines, one per direction, so that
// net/http frees its per-connection buffers.
//
// A client on HTTP/2 or HTTP/3 opens its WebSocket with an extended CONNECT
// (RFC 8441, RFC 9220) on a stream of a connection it already has; the
// upstream is still dialed with an HTTP/1.1 upgrade, as Caddy's reverse_proxy
// does. The stream ends when ServeHTTP returns, so for such a client
// ServeHTTP waits until both legs are closed: a complete close handshake ends
// the client's stream in order, anything else resets it. Everything else is the
// same; the session's log line and metrics name the client leg's protocol
// (client_proto: http/1.1, h2 or h3).
//
// Each direction is a relayer (relay.go): it reads a frame header, decides,
// and streams the payload to the other leg without reassembling the message.
// Data frames go through relay.Forward, which converts the masking in one
// pass (client frames are re-masked with a fresh key, text checked as UTF-8
// on the way) and gathers frames that arrive back to back into one write,
// flushed before the relayer waits for its source; large upstream binary
// frames move socket to socket in the kernel (splice). Control frames are
// forwarded as they come, between fragments too; the proxy's own keepalive
// pongs are not. A message is reassembled only when an inspector asks for its
// payload (or compression in terminate mode needs it), bounded by the size
// limit; it then keeps its fragmentation unless it is replaced.
//
// # Closes
//
// A close from either side is forwarded with its code and reason, and the
// answer travels back the same way. The side that did nothing wrong hears at
// once (close.go): a leg that vanished, stopped reading or stopped answering
// pings, or that broke the protocol, a limit or a policy, gets its own code
// (1002, 1007, 1009, the verdict's) while the other leg gets 1014 if the
// offender was the upstream, 1001 if it was the client, without waiting for
// the offender's close handshake, which goes on in the background. Shutdown
// closes the upstream leg first, forwards what it still sends, and then gives
// the client the drain code (1012 by default). Every close handshake is
// bounded by CloseTimeout; then both connections close and both goroutines end.
//
// # Memory and cost
//
// An idle session holds no buffers: two wsmw.Conns, the session, and two
// goroutines that wait on 2 KiB stacks, about 9 KiB in all (plus what
// crypto/tls keeps for a TLS leg). A relay goroutine whose stack grew (through
// crypto/tls, or forwarding a large frame) hands its work to a fresh one
// before it waits (stacktrim.go), since Go never gives a parked goroutine's
// stack back. On a plain socket, frames that arrive whole are relayed inside
// relay.Burst, which waits for the next ones without the read that finds the
// socket empty first: a small message costs two system calls (its read and
// its write) instead of three. Forwarding allocates nothing per frame;
// message and byte counters are summed from live sessions only when
// Prometheus scrapes, and the session's log line is written once, at the end.
// A slow reader is bounded by WriteTimeout: the proxy never queues frames.
package proxy
