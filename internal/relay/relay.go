// Package relay is the part of wsmw that only a proxy needs: forwarding a frame
// from one connection to another the cheapest way that applies, the batch
// behind it, and the lower-level access a proxy has to a connection's close
// handshake and compression. Package wsmw implements it; keeping it here, in a
// package internal to the module, keeps it out of wsmw's public API.
package relay

import (
	"net"
	"net/http"

	"github.com/wsgate/wsgate/internal/hook"
	"github.com/wsgate/wsgate/wsmw"
)

// Ops is what wsmw implements for this package (see the functions below).
type Ops interface {
	Forward(dst, src *wsmw.Conn, h wsmw.Header, splice bool, progress func()) error
	Burst(c *wsmw.Conn, b interface {
		Step() bool
		BeforeWait() bool
	}) bool
	Flush(c *wsmw.Conn) error
	FrameReady(c *wsmw.Conn) bool
	Idle(c *wsmw.Conn) bool
	ControlPayload(c *wsmw.Conn) []byte
	WriteFrameInPlace(c *wsmw.Conn, h wsmw.Header, payload []byte) error
	SendClose(c *wsmw.Conn, code wsmw.StatusCode, reason string) error
	CloseSent(c *wsmw.Conn) bool
	CloseReceived(c *wsmw.Conn) *wsmw.CloseError
	Inflate(c *wsmw.Conn, dst, compressed []byte) ([]byte, error)
	CheckDeflateOffer(o wsmw.ExtensionOffer) error
	CheckDeflateAnswer(offer, answer wsmw.ExtensionOffer) (wsmw.DeflateParams, error)
	RefuseHandshake(w http.ResponseWriter, r *http.Request, err error)
	EndStream(c *wsmw.Conn)
	NetConn(c *wsmw.Conn) net.Conn
	Drained(c *wsmw.Conn) <-chan struct{}
}

// ops is wsmw's implementation, registered in hook.Relay by wsmw's init.
var ops = hook.Relay.(Ops)

// Forward sends src's current data frame, which NextFrame just returned and
// none of whose payload was read, to dst as a frame with h's FIN, RSV bits and
// opcode, the cheapest way that applies:
//   - socket to socket in the kernel (splice) when splice is true, dst is a
//     server-role TCP connection, the frame is unmasked binary (or compressed)
//     data of 32 KiB or more from a TCP connection;
//   - otherwise through dst's batch: the masking converted in one pass (and
//     uncompressed text checked as UTF-8 on the way), gathered with the frames
//     that follow it back to back into one write.
//
// Gathered frames are written when the batch fills, by any other write on dst,
// by Flush, and before a read from src would wait; the caller must call Flush
// before it waits for anything else (FrameReady tells whether it would wait).
// progress, if set, is called after each read from src inside the frame (a
// sign that src is alive while a long frame arrives slowly; splice reports it
// only every 256 KiB).
//
// An error wrapping wsmw.ErrIncompleteFrame is src's failure, also returned by
// src's next read (a text frame that is not UTF-8 fails src with 1007); dst
// stays usable when nothing of the frame was written. Any other error is dst's.
func Forward(dst, src *wsmw.Conn, h wsmw.Header, splice bool, progress func()) error {
	return ops.Forward(dst, src, h, splice, progress)
}

// Burster is what Burst hands a connection's frames to.
type Burster interface {
	// Step reads and handles the connection's next frame (NextFrame, then
	// its payload), which is all buffered; false ends the burst.
	Step() bool
	// BeforeWait runs when the burst begins and before each wait for the
	// network (the place to Flush what Forward gathered); false ends the burst.
	BeforeWait() bool
}

// Burst hands c's frames to b as they arrive, as long as each arrives whole
// and is not a close, and waits for the network between them without the
// extra read that finds a socket empty before each wait. It applies to plain
// TCP and Unix sockets with nothing buffered (it returns false at once
// otherwise). It returns when b ends it, or at the first frame that needs
// more than the bytes already read, a close, an error or the end of the
// stream, all of which c's next read returns as usual. It reports whether
// b.Step ended it.
func Burst(c *wsmw.Conn, b Burster) bool { return ops.Burst(c, b) }

// Flush writes the frames Forward gathered on c and not written yet.
func Flush(c *wsmw.Conn) error { return ops.Flush(c) }

// FrameReady reports whether c's next frame can be read without waiting for the
// network: its header (and a control frame's payload) is buffered, or c failed.
func FrameReady(c *wsmw.Conn) bool { return ops.FrameReady(c) }

// Idle reports whether nothing is buffered below c's reader (in a TLS layer,
// say), so that its next read waits for the network, and arranges for that
// wait to be a shallow one: a goroutine that starts now and reads c waits on a
// 2 KiB stack. It reads what a TLS layer holds, without waiting, to know; a
// connection it cannot tell about (an HTTP/2 or HTTP/3 stream) reports false.
func Idle(c *wsmw.Conn) bool { return ops.Idle(c) }

// ControlPayload returns the payload of the control frame NextFrame just
// returned, without a copy: it aliases c's buffer until the next read.
func ControlPayload(c *wsmw.Conn) []byte { return ops.ControlPayload(c) }

// WriteFrameInPlace is WriteFrame for a payload the caller gives up: a client
// masks it in place instead of copying it.
func WriteFrameInPlace(c *wsmw.Conn, h wsmw.Header, payload []byte) error {
	return ops.WriteFrameInPlace(c, h, payload)
}

// SendClose sends a close frame without waiting for the answer (Close
// completes the handshake). 1005, 1006 and 1015 are sent as an empty body.
func SendClose(c *wsmw.Conn, code wsmw.StatusCode, reason string) error {
	return ops.SendClose(c, code, reason)
}

// CloseSent reports whether a close frame was written on c.
func CloseSent(c *wsmw.Conn) bool { return ops.CloseSent(c) }

// CloseReceived returns the close frame c's peer sent, or nil if none arrived yet.
func CloseReceived(c *wsmw.Conn) *wsmw.CloseError { return ops.CloseReceived(c) }

// Inflate appends to dst the payload of a compressed message received on c
// (compressed: its frames' payloads, concatenated), within c's message size
// limit (wsmw.ErrPayloadTooBig) and without failing c: corrupt data is
// wsmw.ErrInvalidCompression, and text is not checked as UTF-8. With context
// takeover every compressed message received must go through it, in order.
func Inflate(c *wsmw.Conn, dst, compressed []byte) ([]byte, error) {
	return ops.Inflate(c, dst, compressed)
}

// CheckDeflateOffer validates a client's permessage-deflate offer (RFC 7692 §7.1).
func CheckDeflateOffer(o wsmw.ExtensionOffer) error { return ops.CheckDeflateOffer(o) }

// CheckDeflateAnswer validates a server's permessage-deflate answer to offer
// (RFC 7692 §7.1) and returns the parameters then in force.
func CheckDeflateAnswer(offer, answer wsmw.ExtensionOffer) (wsmw.DeflateParams, error) {
	return ops.CheckDeflateAnswer(offer, answer)
}

// RefuseHandshake answers r's refused handshake as wsmw.Upgrade does: the
// status of a *wsmw.HandshakeError (400 otherwise), a short text body, and the
// headers RFC 6455 asks for with it.
func RefuseHandshake(w http.ResponseWriter, r *http.Request, err error) {
	ops.RefuseHandshake(w, r, err)
}

// EndStream is called by the handler that served c, an HTTP/2 or HTTP/3
// stream, once c is closed and just before the handler returns. If c ended
// abruptly on HTTP/3 it panics with http.ErrAbortHandler, the way an HTTP/3
// handler resets its stream; otherwise it does nothing.
func EndStream(c *wsmw.Conn) { ops.EndStream(c) }

// Drained returns a channel closed when c, failed for breaking a rule (a read
// returned a *wsmw.FailError), has ended its close handshake in the background
// and is closed; nil when c did not fail. Closing c before would cut that
// handshake short and risk losing the close frame sent to the peer.
func Drained(c *wsmw.Conn) <-chan struct{} { return ops.Drained(c) }

// NetConn returns c's underlying connection. Reading or writing it corrupts the stream.
func NetConn(c *wsmw.Conn) net.Conn { return ops.NetConn(c) }
