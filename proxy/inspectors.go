package proxy

import (
	"encoding/json"

	"github.com/wsgate/wsgate/wsmw"
)

// The built-in inspectors apply to both directions; wrap one in Only to
// restrict it to one. All are safe for concurrent use and do not allocate when
// a message passes.

// SizeLimit closes the session when a message is longer than Max bytes, so a
// route (or, wrapped in Only, one direction) can be stricter than the leg limit.
//
// It sees only m.Length at the first frame (it never asks for the payload): a
// single frame over Max is caught before its payload is read, but for a
// streamed message that is the first frame's length only. Limits across
// fragments are enforced natively too: the engine sets wsmw's size limits on
// each leg, and the frame reader fails the connection with 1009 as soon as a
// header takes a message over them.
// Max <= 0 disables the check.
type SizeLimit struct {
	Max int64 // largest message allowed, in bytes
}

// NeedsPayload reports false: the length is enough.
func (SizeLimit) NeedsPayload(Direction, wsmw.OpCode) bool { return false }

// Inspect closes with 1009 (message too big) when m.Length exceeds Max.
func (l SizeLimit) Inspect(m *Message) Verdict {
	if l.Max > 0 && m.Length > l.Max {
		return Verdict{Action: Close, Code: wsmw.StatusMessageTooBig, Reason: "message too big"}
	}
	return Verdict{Action: Pass}
}

// AllowTypes restricts a route to text-only or binary-only messages, closing
// the session when the other kind arrives. Only is wsmw.OpText or
// wsmw.OpBinary; any other value (the zero value included) allows both.
type AllowTypes struct {
	Only wsmw.OpCode // the one data opcode allowed
}

// NeedsPayload reports false: the opcode is enough.
func (AllowTypes) NeedsPayload(Direction, wsmw.OpCode) bool { return false }

// Inspect closes with 1003 (unsupported data) a message of the other data type.
func (a AllowTypes) Inspect(m *Message) Verdict {
	switch {
	case a.Only == wsmw.OpText && m.OpCode == wsmw.OpBinary:
		return Verdict{Action: Close, Code: wsmw.StatusUnsupportedData, Reason: "binary messages not allowed"}
	case a.Only == wsmw.OpBinary && m.OpCode == wsmw.OpText:
		return Verdict{Action: Close, Code: wsmw.StatusUnsupportedData, Reason: "text messages not allowed"}
	}
	return Verdict{Action: Pass}
}

// ValidateJSON closes the session when a text message is not valid JSON, so
// upstreams that speak JSON never see malformed input. Binary messages pass
// untouched. It needs the whole text payload, so text messages are
// reassembled (within the size limit) before they are forwarded.
type ValidateJSON struct{}

// NeedsPayload reports true for text messages only.
func (ValidateJSON) NeedsPayload(_ Direction, op wsmw.OpCode) bool { return op == wsmw.OpText }

// Inspect closes with 1007 (invalid payload) a text message that is not valid
// JSON. A message whose payload was not provided (an adapter that hid
// NeedsPayload) cannot be checked and passes.
func (ValidateJSON) Inspect(m *Message) Verdict {
	if m.OpCode != wsmw.OpText || int64(len(m.Payload)) != m.Length {
		return Verdict{Action: Pass}
	}
	if !json.Valid(m.Payload) {
		return Verdict{Action: Close, Code: wsmw.StatusInvalidPayload, Reason: "invalid json"}
	}
	return Verdict{Action: Pass}
}

// InspectFunc turns functions into an Inspector, for hooks written inline.
// needsPayload may be nil (the payload is never needed); fn must be safe for
// concurrent use.
func InspectFunc(needsPayload func(Direction, wsmw.OpCode) bool, fn func(*Message) Verdict) Inspector {
	return funcInspector{needs: needsPayload, fn: fn}
}

// funcInspector is the Inspector built by InspectFunc.
type funcInspector struct {
	needs func(Direction, wsmw.OpCode) bool
	fn    func(*Message) Verdict
}

// NeedsPayload calls needs, if set.
func (f funcInspector) NeedsPayload(dir Direction, op wsmw.OpCode) bool {
	return f.needs != nil && f.needs(dir, op)
}

// Inspect calls fn.
func (f funcInspector) Inspect(m *Message) Verdict { return f.fn(m) }

// Only applies in to messages travelling in dir; the other direction passes
// and never needs the payload. If in is a SessionInspector the result is one
// too, so per-session state (a RateLimit) survives the wrapping.
func Only(dir Direction, in Inspector) Inspector {
	o := only{dir: dir, in: in}
	if _, ok := in.(SessionInspector); ok {
		return onlySession{o}
	}
	return o
}

// only is the Inspector built by Only.
type only struct {
	dir Direction
	in  Inspector
}

// NeedsPayload asks in, for dir only.
func (o only) NeedsPayload(dir Direction, op wsmw.OpCode) bool {
	return dir == o.dir && o.in.NeedsPayload(dir, op)
}

// Inspect runs in on messages in dir and passes the others.
func (o only) Inspect(m *Message) Verdict {
	if m.Direction != o.dir {
		return Verdict{Action: Pass}
	}
	return o.in.Inspect(m)
}

// onlySession is Only around a SessionInspector.
type onlySession struct{ only }

// ForSession wraps in's per-session inspector in the same Only.
func (o onlySession) ForSession(s *SessionInfo) Inspector {
	return Only(o.dir, o.in.(SessionInspector).ForSession(s))
}
