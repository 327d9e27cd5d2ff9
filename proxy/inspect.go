package proxy

import (
	"context"
	"net/http"
	"time"

	"github.com/wsgate/wsgate/wsmw"
)

// Direction is the way a message travels through the proxy.
type Direction uint8

// Directions.
const (
	ClientToUpstream Direction = iota // "up"
	UpstreamToClient                  // "down"
)

func (d Direction) String() string {
	if d == ClientToUpstream {
		return "up"
	}
	return "down"
}

// SessionInfo describes a session to inspectors and logs. It is shared by both
// directions and must be treated as read-only.
type SessionInfo struct {
	ID          uint64
	Request     *http.Request // the client's handshake request (kept only when the proxy has inspectors)
	ClientAddr  string        // client IP:port as seen by the proxy (after chi RealIP, if used)
	Upstream    string        // upstream address
	Subprotocol string
	ClientProto string // the client leg's protocol: "http/1.1", "h2" or "h3"
	Start       time.Time
	// Context ends with the session; an inspector that waits (a rate limit
	// delaying a message) must stop waiting when it is done.
	Context context.Context
}

// Message is what an Inspector sees: one message in one direction. Payload is nil
// unless the inspector asked for it with NeedsPayload (or the proxy reassembles
// the message anyway, as compression in terminate mode does); it is then the
// whole message, inflated if it was compressed, bounded by the size limit, and
// only valid during the Inspect call.
type Message struct {
	Session   *SessionInfo
	Direction Direction
	OpCode    wsmw.OpCode // OpText or OpBinary
	Payload   []byte
	// Length is the payload length when Payload is set; for streamed messages it is
	// the length of the first frame only (the rest is not known yet).
	Length int64
	// Final reports whether the message is complete in this view (always true when Payload is set).
	Final bool
}

// Action is what an inspector decides for a message.
type Action uint8

// Actions.
const (
	Pass    Action = iota // forward unchanged
	Replace               // forward Verdict.Payload instead (needs the payload)
	Drop                  // forward nothing; the session goes on
	Close                 // close the session: Code to the sender, 1001 to the other side
)

// Verdict is an inspector's decision. For Close, a zero Code means 1008 (policy violation).
type Verdict struct {
	Action  Action
	Payload []byte
	Code    wsmw.StatusCode
	Reason  string
}

// Inspector is called once per message and direction. NeedsPayload says whether
// it needs the whole payload for this kind of message: if any inspector of a
// chain does, the proxy reassembles the message (within the size limit) before
// forwarding; otherwise frames stream through and Inspect is called at the
// first frame with Payload nil. Implementations must be safe for concurrent use
// by many sessions; per-session state goes in a SessionInspector.
type Inspector interface {
	NeedsPayload(dir Direction, op wsmw.OpCode) bool
	Inspect(m *Message) Verdict
}

// SessionInspector is implemented by inspectors with per-session state (a rate
// limit): the proxy calls ForSession once per session and uses what it returns.
type SessionInspector interface {
	Inspector
	ForSession(s *SessionInfo) Inspector
}

// Chain runs inspectors in order. The first verdict other than Pass wins, except
// Replace, whose payload is handed on to the following inspectors.
type Chain []Inspector

// NeedsPayload reports whether any inspector of the chain needs the payload.
func (c Chain) NeedsPayload(dir Direction, op wsmw.OpCode) bool {
	for _, in := range c {
		if in.NeedsPayload(dir, op) {
			return true
		}
	}
	return false
}

// Inspect runs the chain on m.
func (c Chain) Inspect(m *Message) Verdict {
	out := Verdict{Action: Pass}
	for _, in := range c {
		v := in.Inspect(m)
		switch v.Action {
		case Pass:
		case Replace:
			m.Payload = v.Payload
			m.Length = int64(len(v.Payload))
			out = v
		default:
			return v
		}
	}
	return out
}

// forSession resolves per-session inspectors of the chain.
func (c Chain) forSession(s *SessionInfo) Chain {
	var out Chain
	for i, in := range c {
		if si, ok := in.(SessionInspector); ok {
			if out == nil {
				out = append(Chain(nil), c...)
			}
			out[i] = si.ForSession(s)
		}
	}
	if out == nil {
		return c
	}
	return out
}
