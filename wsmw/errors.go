package wsmw

import (
	"errors"
	"fmt"
)

// Sentinel errors, usable with errors.Is. They mirror the failure classes of the
// handshake (RFC 6455 §4) and of framing (§5); the typed errors below wrap them.
var (
	// ErrNoHandshake: the request or response is not a WebSocket handshake
	// (missing Upgrade/Connection tokens, wrong method or HTTP version).
	ErrNoHandshake = errors.New("websocket: not a websocket handshake")
	// ErrNoVersion: the client sent no Sec-WebSocket-Version.
	ErrNoVersion = errors.New("websocket: missing Sec-WebSocket-Version")
	// ErrUnsupportedVersion: Sec-WebSocket-Version is not 13.
	ErrUnsupportedVersion = errors.New("websocket: unsupported Sec-WebSocket-Version")
	// ErrNoKey: Sec-WebSocket-Key is missing or does not decode to 16 bytes.
	ErrNoKey = errors.New("websocket: missing or invalid Sec-WebSocket-Key")
	// ErrBadAccept: the server's Sec-WebSocket-Accept does not match the key.
	ErrBadAccept = errors.New("websocket: invalid Sec-WebSocket-Accept")
	// ErrBadOrigin: the Origin header is not allowed by the origin policy.
	ErrBadOrigin = errors.New("websocket: origin not allowed")
	// ErrBadStatus: the server answered the handshake with a status other than 101.
	ErrBadStatus = errors.New("websocket: handshake refused")
	// ErrUnauthorized: the server answered 401 (or 407) and the credentials, if any, did not satisfy it.
	ErrUnauthorized = errors.New("websocket: unauthorized")
	// ErrBadSubprotocol: the server chose a subprotocol the client did not offer.
	ErrBadSubprotocol = errors.New("websocket: server chose a subprotocol that was not offered")
	// ErrBadExtension: the server accepted an extension the client did not offer or cannot use.
	ErrBadExtension = errors.New("websocket: server accepted an unsupported extension")

	// ErrProtocol: the peer violated RFC 6455 framing; the connection is failed with 1002.
	ErrProtocol = errors.New("websocket: protocol error")
	// ErrInvalidUTF8: a text message or close reason is not valid UTF-8; failed with 1007.
	ErrInvalidUTF8 = errors.New("websocket: invalid utf-8")
	// ErrPayloadTooBig: a frame or message exceeds the configured limit; failed with 1009.
	ErrPayloadTooBig = errors.New("websocket: payload too big")
	// ErrIncompleteFrame: the connection ended in the middle of a frame.
	ErrIncompleteFrame = errors.New("websocket: incomplete frame")
	// ErrClosed: the connection was closed; no more frames can be read or written.
	ErrClosed = errors.New("websocket: connection closed")
	// ErrCloseSent: a close frame was already written; data frames can no longer be sent.
	ErrCloseSent = errors.New("websocket: close frame already sent")
	// ErrBadWrite: the caller asked for a frame RFC 6455 forbids (oversized control frame, invalid close code ...).
	ErrBadWrite = errors.New("websocket: invalid frame for writing")
)

// HandshakeError is a refused handshake: the HTTP status that was (server role) or
// should be (proxy relay) answered, a short reason, and the sentinel cause.
type HandshakeError struct {
	Status int    // HTTP status, e.g. 400, 403, 426
	Reason string // short, human-readable, also written as the response body
	Err    error  // sentinel cause (ErrNoKey, ErrBadOrigin ...)
}

func (e *HandshakeError) Error() string {
	return fmt.Sprintf("websocket: handshake failed (%d): %s", e.Status, e.Reason)
}

func (e *HandshakeError) Unwrap() error { return e.Err }

// DialError is a Dial that failed before the server's answer could be read.
// Op is the step that failed: "connect" (DNS or TCP), "TLS handshake",
// "write request", "read response", or "handshake" (ctx ended). After a failed
// connect or TLS handshake the server has seen nothing of the request, so
// trying another server is always safe.
type DialError struct {
	URL string // the URL dialed, without its password
	Op  string
	Err error
}

func (e *DialError) Error() string {
	return fmt.Sprintf("websocket: dial %s: %s: %v", e.URL, e.Op, e.Err)
}

func (e *DialError) Unwrap() error { return e.Err }

// CloseError is the close frame the peer sent: its status code and reason.
// A close frame without a body is reported as StatusNoStatusRcvd (1005).
type CloseError struct {
	Code   StatusCode
	Reason string
}

func (e *CloseError) Error() string {
	if e.Reason == "" {
		return fmt.Sprintf("websocket: peer closed with %v", e.Code)
	}
	return fmt.Sprintf("websocket: peer closed with %v: %q", e.Code, e.Reason)
}

// FailError reports that this endpoint failed the connection (RFC 6455 §7.1.7):
// it sent a close frame with Code because of Err (ErrProtocol, ErrInvalidUTF8, ErrPayloadTooBig ...).
type FailError struct {
	Code   StatusCode
	Reason string
	Err    error
}

func (e *FailError) Error() string {
	return fmt.Sprintf("websocket: failed connection with %v (%s): %v", e.Code, e.Reason, e.Err)
}

func (e *FailError) Unwrap() error { return e.Err }

// CloseStatus returns the close code carried by err: the peer's code for a
// *CloseError, the code we sent for a *FailError, and -1 otherwise.
func CloseStatus(err error) StatusCode {
	var ce *CloseError
	if errors.As(err, &ce) {
		return ce.Code
	}
	var fe *FailError
	if errors.As(err, &fe) {
		return fe.Code
	}
	return -1
}
