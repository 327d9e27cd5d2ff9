package proxy

import (
	"bytes"
	"testing"

	"github.com/wsgate/wsgate/wsmw"
)

// msg builds a complete message with its payload.
func msg(dir Direction, op wsmw.OpCode, payload string) *Message {
	return &Message{Direction: dir, OpCode: op, Payload: []byte(payload), Length: int64(len(payload)), Final: true}
}

// streamed builds a message seen at its first frame, without payload.
func streamed(dir Direction, op wsmw.OpCode, length int64) *Message {
	return &Message{Direction: dir, OpCode: op, Length: length}
}

// checkVerdict fails unless v has the action and code wanted, and a reason when closing.
func checkVerdict(t *testing.T, v Verdict, action Action, code wsmw.StatusCode) {
	t.Helper()
	if v.Action != action || v.Code != code {
		t.Fatalf("verdict = %+v, want action %d code %d", v, action, code)
	}
	if action == Close && v.Reason == "" {
		t.Fatalf("close verdict without reason: %+v", v)
	}
}

func TestSizeLimit(t *testing.T) {
	tests := []struct {
		name   string
		max    int64
		m      *Message
		action Action
		code   wsmw.StatusCode
	}{
		{"under limit passes", 10, streamed(ClientToUpstream, wsmw.OpBinary, 9), Pass, 0},
		{"at limit passes", 10, streamed(UpstreamToClient, wsmw.OpText, 10), Pass, 0},
		{"first frame over limit closes 1009", 10, streamed(ClientToUpstream, wsmw.OpBinary, 11), Close, wsmw.StatusMessageTooBig},
		{"whole message over limit closes 1009", 3, msg(UpstreamToClient, wsmw.OpText, "abcd"), Close, wsmw.StatusMessageTooBig},
		{"zero max disables", 0, streamed(ClientToUpstream, wsmw.OpBinary, 1<<40), Pass, 0},
		{"negative max disables", -1, streamed(ClientToUpstream, wsmw.OpBinary, 1), Pass, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := SizeLimit{Max: tt.max}
			checkVerdict(t, l.Inspect(tt.m), tt.action, tt.code)
			if l.NeedsPayload(tt.m.Direction, tt.m.OpCode) {
				t.Fatal("SizeLimit needs the payload")
			}
		})
	}
}

func TestAllowTypes(t *testing.T) {
	tests := []struct {
		name   string
		only   wsmw.OpCode
		op     wsmw.OpCode
		action Action
		reason string
	}{
		{"text only passes text", wsmw.OpText, wsmw.OpText, Pass, ""},
		{"text only closes binary 1003", wsmw.OpText, wsmw.OpBinary, Close, "binary messages not allowed"},
		{"binary only passes binary", wsmw.OpBinary, wsmw.OpBinary, Pass, ""},
		{"binary only closes text 1003", wsmw.OpBinary, wsmw.OpText, Close, "text messages not allowed"},
		{"zero value passes text", 0, wsmw.OpText, Pass, ""},
		{"zero value passes binary", 0, wsmw.OpBinary, Pass, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := AllowTypes{Only: tt.only}
			for _, dir := range []Direction{ClientToUpstream, UpstreamToClient} {
				v := a.Inspect(streamed(dir, tt.op, 5))
				code := wsmw.StatusCode(0)
				if tt.action == Close {
					code = wsmw.StatusUnsupportedData
				}
				checkVerdict(t, v, tt.action, code)
				if v.Reason != tt.reason {
					t.Fatalf("reason = %q, want %q", v.Reason, tt.reason)
				}
				if a.NeedsPayload(dir, tt.op) {
					t.Fatal("AllowTypes needs the payload")
				}
			}
		})
	}
}

func TestValidateJSON(t *testing.T) {
	tests := []struct {
		name   string
		m      *Message
		action Action
		code   wsmw.StatusCode
	}{
		{"valid object passes", msg(ClientToUpstream, wsmw.OpText, `{"a":[1,2,{"b":null}]}`), Pass, 0},
		{"valid scalar passes", msg(UpstreamToClient, wsmw.OpText, ` "x" `), Pass, 0},
		{"truncated object closes 1007", msg(ClientToUpstream, wsmw.OpText, `{"a":1`), Close, wsmw.StatusInvalidPayload},
		{"two values close 1007", msg(UpstreamToClient, wsmw.OpText, `{} {}`), Close, wsmw.StatusInvalidPayload},
		{"empty text closes 1007", msg(ClientToUpstream, wsmw.OpText, ""), Close, wsmw.StatusInvalidPayload},
		{"binary passes untouched", msg(ClientToUpstream, wsmw.OpBinary, "\x00not json"), Pass, 0},
		{"missing payload passes", streamed(ClientToUpstream, wsmw.OpText, 7), Pass, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkVerdict(t, ValidateJSON{}.Inspect(tt.m), tt.action, tt.code)
		})
	}
	t.Run("needs payload for text only", func(t *testing.T) {
		for _, dir := range []Direction{ClientToUpstream, UpstreamToClient} {
			if !(ValidateJSON{}).NeedsPayload(dir, wsmw.OpText) || (ValidateJSON{}).NeedsPayload(dir, wsmw.OpBinary) {
				t.Fatalf("NeedsPayload(%v) wrong", dir)
			}
		}
	})
}

func TestInspectFunc(t *testing.T) {
	t.Run("nil needsPayload never needs it", func(t *testing.T) {
		in := InspectFunc(nil, func(*Message) Verdict { return Verdict{Action: Drop} })
		if in.NeedsPayload(ClientToUpstream, wsmw.OpText) {
			t.Fatal("needs payload")
		}
		checkVerdict(t, in.Inspect(streamed(ClientToUpstream, wsmw.OpText, 1)), Drop, 0)
	})
	t.Run("needsPayload and fn are called with the message", func(t *testing.T) {
		var seen *Message
		in := InspectFunc(
			func(d Direction, op wsmw.OpCode) bool { return d == UpstreamToClient && op == wsmw.OpBinary },
			func(m *Message) Verdict { seen = m; return Verdict{Action: Pass} },
		)
		if !in.NeedsPayload(UpstreamToClient, wsmw.OpBinary) || in.NeedsPayload(ClientToUpstream, wsmw.OpBinary) {
			t.Fatal("needsPayload not forwarded")
		}
		m := msg(UpstreamToClient, wsmw.OpBinary, "x")
		checkVerdict(t, in.Inspect(m), Pass, 0)
		if seen != m {
			t.Fatal("fn did not get the message")
		}
	})
}

func TestOnly(t *testing.T) {
	in := Only(UpstreamToClient, Chain{AllowTypes{Only: wsmw.OpText}, ValidateJSON{}})
	tests := []struct {
		name   string
		m      *Message
		action Action
		code   wsmw.StatusCode
	}{
		{"applies to its direction", msg(UpstreamToClient, wsmw.OpText, "{"), Close, wsmw.StatusInvalidPayload},
		{"applies to its direction binary", msg(UpstreamToClient, wsmw.OpBinary, "x"), Close, wsmw.StatusUnsupportedData},
		{"other direction passes", msg(ClientToUpstream, wsmw.OpText, "{"), Pass, 0},
		{"other direction passes binary", msg(ClientToUpstream, wsmw.OpBinary, "x"), Pass, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkVerdict(t, in.Inspect(tt.m), tt.action, tt.code)
		})
	}
	t.Run("needs payload only in its direction", func(t *testing.T) {
		if !in.NeedsPayload(UpstreamToClient, wsmw.OpText) || in.NeedsPayload(ClientToUpstream, wsmw.OpText) {
			t.Fatal("NeedsPayload not restricted to the direction")
		}
	})
	t.Run("keeps SessionInspector", func(t *testing.T) {
		if _, ok := in.(SessionInspector); ok {
			t.Fatal("Only of a plain inspector is a SessionInspector")
		}
		rl, err := NewRateLimit(RateLimitConfig{Messages: 1, Mode: RateLimitClose})
		if err != nil {
			t.Fatal(err)
		}
		si, ok := Only(ClientToUpstream, rl).(SessionInspector)
		if !ok {
			t.Fatal("Only of a RateLimit is not a SessionInspector")
		}
		a, b := si.ForSession(&SessionInfo{ID: 1}), si.ForSession(&SessionInfo{ID: 2})
		for _, s := range []Inspector{a, b} {
			checkVerdict(t, s.Inspect(streamed(ClientToUpstream, wsmw.OpText, 1)), Pass, 0)
			checkVerdict(t, s.Inspect(streamed(ClientToUpstream, wsmw.OpText, 1)), Close, wsmw.StatusPolicyViolation)
			checkVerdict(t, s.Inspect(streamed(UpstreamToClient, wsmw.OpText, 1)), Pass, 0)
			checkVerdict(t, s.Inspect(streamed(UpstreamToClient, wsmw.OpText, 1)), Pass, 0)
		}
	})
}

// recorder is an inspector that records the payloads it saw and returns v.
type recorder struct {
	v     Verdict
	needs bool
	seen  *[]string
}

func (r recorder) NeedsPayload(Direction, wsmw.OpCode) bool { return r.needs }

func (r recorder) Inspect(m *Message) Verdict {
	*r.seen = append(*r.seen, string(m.Payload))
	return r.v
}

func TestChain(t *testing.T) {
	t.Run("first non-pass verdict wins", func(t *testing.T) {
		var seen []string
		c := Chain{
			recorder{v: Verdict{Action: Pass}, seen: &seen},
			recorder{v: Verdict{Action: Drop}, seen: &seen},
			recorder{v: Verdict{Action: Close, Code: wsmw.StatusInternalError, Reason: "x"}, seen: &seen},
		}
		checkVerdict(t, c.Inspect(msg(ClientToUpstream, wsmw.OpText, "a")), Drop, 0)
		if len(seen) != 2 {
			t.Fatalf("inspectors run = %d, want 2", len(seen))
		}
	})
	t.Run("close from a built-in stops the chain", func(t *testing.T) {
		var seen []string
		c := Chain{SizeLimit{Max: 1}, recorder{v: Verdict{Action: Drop}, seen: &seen}}
		checkVerdict(t, c.Inspect(msg(ClientToUpstream, wsmw.OpText, "ab")), Close, wsmw.StatusMessageTooBig)
		if len(seen) != 0 {
			t.Fatal("inspector after Close ran")
		}
	})
	t.Run("replace hands the new payload on", func(t *testing.T) {
		var seen []string
		c := Chain{
			recorder{v: Verdict{Action: Replace, Payload: []byte(`{"ok":true}`)}, needs: true, seen: &seen},
			recorder{v: Verdict{Action: Pass}, seen: &seen},
			ValidateJSON{},
		}
		m := msg(ClientToUpstream, wsmw.OpText, "not json")
		v := c.Inspect(m)
		checkVerdict(t, v, Replace, 0)
		if !bytes.Equal(v.Payload, []byte(`{"ok":true}`)) {
			t.Fatalf("payload = %q", v.Payload)
		}
		if len(seen) != 2 || seen[1] != `{"ok":true}` || m.Length != int64(len(`{"ok":true}`)) {
			t.Fatalf("later inspector saw %q, length %d", seen, m.Length)
		}
	})
	t.Run("replaced payload is checked by later inspectors", func(t *testing.T) {
		var seen []string
		c := Chain{
			recorder{v: Verdict{Action: Replace, Payload: []byte("{")}, needs: true, seen: &seen},
			ValidateJSON{},
		}
		checkVerdict(t, c.Inspect(msg(ClientToUpstream, wsmw.OpText, "{}")), Close, wsmw.StatusInvalidPayload)
	})
	t.Run("needs payload if any member does", func(t *testing.T) {
		c := Chain{SizeLimit{Max: 10}, AllowTypes{Only: wsmw.OpText}, Only(UpstreamToClient, ValidateJSON{})}
		if !c.NeedsPayload(UpstreamToClient, wsmw.OpText) {
			t.Fatal("chain with ValidateJSON does not need text payload")
		}
		if c.NeedsPayload(UpstreamToClient, wsmw.OpBinary) || c.NeedsPayload(ClientToUpstream, wsmw.OpText) {
			t.Fatal("chain needs a payload no member needs")
		}
		if (Chain{}).NeedsPayload(ClientToUpstream, wsmw.OpText) {
			t.Fatal("empty chain needs the payload")
		}
	})
}

func TestInspectorsPassPathAllocs(t *testing.T) {
	rl, err := NewRateLimit(RateLimitConfig{Messages: 1e9, Bytes: 1e12})
	if err != nil {
		t.Fatal(err)
	}
	rlc, err := NewRateLimit(RateLimitConfig{Messages: 1e9, Bytes: 1e12, Mode: RateLimitClose})
	if err != nil {
		t.Fatal(err)
	}
	inspectors := []struct {
		name string
		in   Inspector
	}{
		{"SizeLimit", SizeLimit{Max: 1 << 20}},
		{"AllowTypes", AllowTypes{Only: wsmw.OpText}},
		{"ValidateJSON", ValidateJSON{}},
		{"Only InspectFunc", Only(ClientToUpstream, InspectFunc(nil, func(*Message) Verdict { return Verdict{} }))},
		{"RateLimit delay", rl},
		{"RateLimit close per session", rlc.ForSession(nil)},
		{"RateLimit close shared", rlc.Shared()},
	}
	m := msg(ClientToUpstream, wsmw.OpText, `{"a":[1,2,3],"b":"c"}`)
	m.Session = &SessionInfo{Context: t.Context()}
	for _, tt := range inspectors {
		t.Run(tt.name, func(t *testing.T) {
			if v := tt.in.Inspect(m); v.Action != Pass {
				t.Fatalf("verdict = %+v", v)
			}
			if raceEnabled && tt.name == "ValidateJSON" {
				t.Skip("json.Valid takes its scanner from a sync.Pool, whose puts the race detector drops at random")
			}
			if n := testing.AllocsPerRun(200, func() { tt.in.Inspect(m) }); n >= 1 {
				t.Fatalf("pass path allocates %v times per message", n)
			}
		})
	}
}
