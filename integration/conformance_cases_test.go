package integration

// The conformance cases, written from RFC 6455 and grouped like the Autobahn
// TestSuite: 1 framing, 2 pings and pongs, 3 reserved bits, 4 opcodes,
// 5 fragmentation, 6 UTF-8, 7 close handling, 9 limits. Each frame the client
// sends has a payload unique within its case, so that the upstream check can
// tell which frames were forwarded.

import (
	"bytes"
	"fmt"
	"strings"
	"time"

	"github.com/wsgate/wsgate/internal/testkit"
	"github.com/wsgate/wsgate/wsmw"
)

// Frame constructors.

func frag(fin bool, op wsmw.OpCode, p string) testkit.Frame {
	return testkit.Frame{Fin: fin, Op: op, Payload: []byte(p)}
}

// byteFragments is the text message s in fragments of one byte each.
func byteFragments(s string) []testkit.Frame {
	var fs []testkit.Frame
	for i := range len(s) {
		op := wsmw.OpContinuation
		if i == 0 {
			op = wsmw.OpText
		}
		fs = append(fs, frag(i == len(s)-1, op, s[i:i+1]))
	}
	return fs
}

// Step constructors.

func okSteps(fs ...testkit.Frame) []step {
	out := make([]step, len(fs))
	for i, f := range fs {
		out[i] = step{f: f}
	}
	return out
}

func badStep(f testkit.Frame) step { return step{f: f, bad: true} }

func stepsOf(parts ...any) []step {
	var out []step
	for _, p := range parts {
		switch v := p.(type) {
		case testkit.Frame:
			out = append(out, step{f: v})
		case step:
			out = append(out, v)
		case []step:
			out = append(out, v...)
		default:
			panic(fmt.Sprintf("stepsOf: %T", p))
		}
	}
	return out
}

// Expected message constructors.

func textMsg(s string) message { return message{Op: wsmw.OpText, Payload: []byte(s)} }

func binMsg(p []byte) message { return message{Op: wsmw.OpBinary, Payload: p} }

func payloads(ps ...string) [][]byte {
	out := make([][]byte, len(ps))
	for i, p := range ps {
		out[i] = []byte(p)
	}
	return out
}

func conformanceCases() []conformanceCase {
	var cs []conformanceCase
	add := func(c conformanceCase) { cs = append(cs, c) }

	// ---- 1 Framing: each payload length class, text and binary.
	const g1 = "1-framing"
	for _, n := range []int{0, 1, 125, 126, 127, 128, 65535, 65536} {
		txt := testkit.Pattern(n, true)
		add(conformanceCase{group: g1, name: fmt.Sprintf("text-%d", n),
			steps: okSteps(testkit.Frame{Fin: true, Op: wsmw.OpText, Payload: txt}),
			msgs:  []message{{wsmw.OpText, txt}}})
		bin := testkit.Pattern(n, false)
		add(conformanceCase{group: g1, name: fmt.Sprintf("binary-%d", n),
			steps: okSteps(testkit.Binary(bin)),
			msgs:  []message{binMsg(bin)}})
	}
	{
		txt := testkit.Pattern(65535, true)
		add(conformanceCase{group: g1, name: "text-65535-in-997-byte-chops",
			steps: []step{{f: testkit.Frame{Fin: true, Op: wsmw.OpText, Payload: txt}, chop: 997}},
			msgs:  []message{{wsmw.OpText, txt}}})
		bin := testkit.Pattern(65536, false)
		add(conformanceCase{group: g1, name: "binary-65536-in-4093-byte-chops-then-text",
			steps: []step{{f: testkit.Binary(bin), chop: 4093}, {f: testkit.Text("after")}},
			msgs:  []message{binMsg(bin), textMsg("after")}})
		var hdr []byte
		hdr = appendFrame(hdr, testkit.Text("chopped header"), true)
		add(conformanceCase{group: g1, name: "frame-sent-byte-by-byte",
			steps: []step{{raw: hdr, chop: 1}},
			msgs:  []message{textMsg("chopped header")}})
	}
	add(conformanceCase{group: g1, name: "messages-in-order",
		steps: okSteps(testkit.Text("one"), testkit.Binary([]byte("two")), testkit.Text("three"), testkit.Binary(nil), testkit.Text("")),
		msgs:  []message{textMsg("one"), binMsg([]byte("two")), textMsg("three"), binMsg(nil), textMsg("")}})
	{
		// §5.1: a server must fail a connection on an unmasked client frame.
		raw := appendFrame(nil, testkit.Text("unmasked"), false)
		add(conformanceCase{group: g1, name: "unmasked-client-frame",
			steps: []step{{raw: raw, bad: true}}, close: 1002})
	}

	// ---- 2 Pings and pongs.
	const g2 = "2-pingpong"
	add(conformanceCase{group: g2, name: "ping-empty",
		steps: okSteps(testkit.Ping("")), pongs: payloads("")})
	add(conformanceCase{group: g2, name: "ping-text",
		steps: okSteps(testkit.Ping("Hello, world!")), pongs: payloads("Hello, world!")})
	{
		p := string(testkit.Pattern(125, false))
		add(conformanceCase{group: g2, name: "ping-binary-125",
			steps: okSteps(testkit.Ping(p)), pongs: payloads(p)})
		p126 := string(testkit.Pattern(126, false))
		add(conformanceCase{group: g2, name: "ping-126-is-1002",
			steps: []step{badStep(testkit.Ping(p126))}, close: 1002})
		add(conformanceCase{group: g2, name: "ping-126-after-text-is-1002",
			steps: stepsOf(testkit.Text("before"), badStep(testkit.Ping(p126))),
			msgs:  []message{textMsg("before")}, close: 1002})
	}
	add(conformanceCase{group: g2, name: "unsolicited-pong-empty-ignored",
		steps: okSteps(testkit.Pong(""), testkit.Text("after pong")), msgs: []message{textMsg("after pong")}})
	add(conformanceCase{group: g2, name: "unsolicited-pong-payload-ignored",
		steps: okSteps(testkit.Pong("unsolicited"), testkit.Text("after pong"), testkit.Pong("again")),
		msgs:  []message{textMsg("after pong")}})
	add(conformanceCase{group: g2, name: "unsolicited-pong-then-ping",
		steps: okSteps(testkit.Pong("unsolicited"), testkit.Ping("solicited")), pongs: payloads("solicited")})
	{
		var pings []testkit.Frame
		var want []string
		for i := range 10 {
			pings = append(pings, testkit.Ping(fmt.Sprintf("ping-%d", i)))
			want = append(want, fmt.Sprintf("ping-%d", i))
		}
		add(conformanceCase{group: g2, name: "ten-pings-answered-in-order",
			steps: okSteps(pings...), pongs: payloads(want...)})
		var chopped []step
		for _, p := range pings {
			chopped = append(chopped, step{f: p, chop: 2})
		}
		add(conformanceCase{group: g2, name: "ten-pings-chopped",
			steps: chopped, pongs: payloads(want...)})
	}
	add(conformanceCase{group: g2, name: "ping-message-ping",
		steps: okSteps(testkit.Ping("first"), testkit.Text("message"), testkit.Ping("second")),
		msgs:  []message{textMsg("message")}, pongs: payloads("first", "second")})

	// ---- 3 Reserved bits: no extension is negotiated, so any RSV bit fails with 1002.
	const g3 = "3-rsv"
	rsvCases := []struct {
		name string
		f    testkit.Frame
	}{
		{"text-rsv1", testkit.Frame{Fin: true, Rsv: wsmw.RSV1, Op: wsmw.OpText, Payload: []byte("rsv1")}},
		{"text-rsv2", testkit.Frame{Fin: true, Rsv: wsmw.RSV2, Op: wsmw.OpText, Payload: []byte("rsv2")}},
		{"text-rsv3", testkit.Frame{Fin: true, Rsv: wsmw.RSV3, Op: wsmw.OpText, Payload: []byte("rsv3")}},
		{"binary-rsv1-rsv3", testkit.Frame{Fin: true, Rsv: wsmw.RSV1 | wsmw.RSV3, Op: wsmw.OpBinary, Payload: []byte("rsv5")}},
		{"binary-rsv-all", testkit.Frame{Fin: true, Rsv: wsmw.RSV1 | wsmw.RSV2 | wsmw.RSV3, Op: wsmw.OpBinary, Payload: []byte("rsv7")}},
		{"ping-rsv2", testkit.Frame{Fin: true, Rsv: wsmw.RSV2, Op: wsmw.OpPing, Payload: []byte("rsv ping")}},
		{"pong-rsv3", testkit.Frame{Fin: true, Rsv: wsmw.RSV3, Op: wsmw.OpPong, Payload: []byte("rsv pong")}},
		{"close-rsv1", testkit.Frame{Fin: true, Rsv: wsmw.RSV1, Op: wsmw.OpClose, Payload: []byte{0x03, 0xE8}}},
	}
	for _, rc := range rsvCases {
		add(conformanceCase{group: g3, name: rc.name, steps: []step{badStep(rc.f)}, close: 1002})
	}
	add(conformanceCase{group: g3, name: "text-then-rsv-then-ping",
		steps: stepsOf(testkit.Text("hello"), badStep(testkit.Frame{Fin: true, Rsv: wsmw.RSV2, Op: wsmw.OpText, Payload: []byte("rsv frame")}), testkit.Ping("after rsv")),
		msgs:  []message{textMsg("hello")}, close: 1002})
	add(conformanceCase{group: g3, name: "continuation-rsv1",
		steps: stepsOf(frag(false, wsmw.OpText, "first "), badStep(testkit.Frame{Fin: true, Rsv: wsmw.RSV1, Op: wsmw.OpContinuation, Payload: []byte("rsv continuation")})),
		close: 1002})

	// ---- 4 Opcodes: reserved data (3-7) and control (11-15) opcodes fail with 1002.
	const g4 = "4-opcodes"
	for _, op := range []wsmw.OpCode{3, 4, 5, 6, 7, 11, 12, 13, 14, 15} {
		add(conformanceCase{group: g4, name: fmt.Sprintf("opcode-%d", op),
			steps: []step{badStep(testkit.Frame{Fin: true, Op: op, Payload: []byte(fmt.Sprintf("reserved %d", op))})}, close: 1002})
	}
	add(conformanceCase{group: g4, name: "opcode-5-empty-after-text",
		steps: stepsOf(testkit.Text("before"), badStep(testkit.Frame{Fin: true, Op: 5}), testkit.Ping("after")),
		msgs:  []message{textMsg("before")}, close: 1002})
	add(conformanceCase{group: g4, name: "opcode-11-after-text",
		steps: stepsOf(testkit.Text("before"), badStep(testkit.Frame{Fin: true, Op: 11, Payload: []byte("ctl 11")}), testkit.Ping("after")),
		msgs:  []message{textMsg("before")}, close: 1002})

	// ---- 5 Fragmentation.
	const g5 = "5-fragmentation"
	add(conformanceCase{group: g5, name: "fragmented-ping-is-1002",
		steps: stepsOf(badStep(frag(false, wsmw.OpPing, "ping frag 1")), frag(true, wsmw.OpContinuation, "ping frag 2")), close: 1002})
	add(conformanceCase{group: g5, name: "fragmented-pong-is-1002",
		steps: stepsOf(badStep(frag(false, wsmw.OpPong, "pong frag 1")), frag(true, wsmw.OpContinuation, "pong frag 2")), close: 1002})
	add(conformanceCase{group: g5, name: "fragmented-close-is-1002",
		steps: stepsOf(badStep(testkit.Frame{Fin: false, Op: wsmw.OpClose, Payload: []byte{0x03, 0xE8, 'a'}}), frag(true, wsmw.OpContinuation, "close frag 2")), close: 1002})
	add(conformanceCase{group: g5, name: "text-2-fragments",
		steps: okSteps(frag(false, wsmw.OpText, "fragment1"), frag(true, wsmw.OpContinuation, "fragment2")),
		msgs:  []message{textMsg("fragment1fragment2")}})
	add(conformanceCase{group: g5, name: "binary-3-fragments",
		steps: okSteps(testkit.Frame{Op: wsmw.OpBinary, Payload: []byte{1, 2, 3}}, testkit.Frame{Op: wsmw.OpContinuation, Payload: []byte{4, 5}}, testkit.Frame{Fin: true, Op: wsmw.OpContinuation, Payload: []byte{6}}),
		msgs:  []message{binMsg([]byte{1, 2, 3, 4, 5, 6})}})
	{
		s := "fragmented-1-byte"
		fs := byteFragments(s)
		add(conformanceCase{group: g5, name: "text-1-byte-fragments", steps: okSteps(fs...), msgs: []message{textMsg(s)}})
		big := testkit.Pattern(3*20000, false)
		add(conformanceCase{group: g5, name: "binary-60000-in-3-fragments",
			steps: okSteps(testkit.Frame{Op: wsmw.OpBinary, Payload: big[:20000]}, testkit.Frame{Op: wsmw.OpContinuation, Payload: big[20000:40000]}, testkit.Frame{Fin: true, Op: wsmw.OpContinuation, Payload: big[40000:]}),
			msgs:  []message{binMsg(big)}})
	}
	add(conformanceCase{group: g5, name: "empty-fragments",
		steps: okSteps(frag(false, wsmw.OpText, ""), frag(false, wsmw.OpContinuation, ""), frag(true, wsmw.OpContinuation, "")),
		msgs:  []message{textMsg("")}})
	add(conformanceCase{group: g5, name: "empty-fragment-in-the-middle",
		steps: okSteps(frag(false, wsmw.OpText, "a"), frag(false, wsmw.OpContinuation, ""), frag(true, wsmw.OpContinuation, "b")),
		msgs:  []message{textMsg("ab")}})
	add(conformanceCase{group: g5, name: "ping-between-fragments",
		steps: okSteps(frag(false, wsmw.OpText, "fragment1"), testkit.Ping("between"), frag(true, wsmw.OpContinuation, "fragment2")),
		msgs:  []message{textMsg("fragment1fragment2")}, pongs: payloads("between")})
	add(conformanceCase{group: g5, name: "pong-between-fragments",
		steps: okSteps(frag(false, wsmw.OpText, "fragment1"), testkit.Pong("between"), frag(true, wsmw.OpContinuation, "fragment2")),
		msgs:  []message{textMsg("fragment1fragment2")}})
	add(conformanceCase{group: g5, name: "five-fragments-two-pings-with-pauses",
		steps: []step{
			{f: frag(false, wsmw.OpText, "f1-")}, {f: testkit.Ping("p1"), pause: 10 * time.Millisecond},
			{f: frag(false, wsmw.OpContinuation, "f2-"), pause: 10 * time.Millisecond}, {f: frag(false, wsmw.OpContinuation, "f3-")},
			{f: testkit.Ping("p2"), pause: 10 * time.Millisecond}, {f: frag(false, wsmw.OpContinuation, "f4-")},
			{f: frag(true, wsmw.OpContinuation, "f5"), pause: 10 * time.Millisecond},
		},
		msgs: []message{textMsg("f1-f2-f3-f4-f5")}, pongs: payloads("p1", "p2")})
	add(conformanceCase{group: g5, name: "fragmented-then-whole-messages",
		steps: okSteps(frag(false, wsmw.OpBinary, "b1"), frag(true, wsmw.OpContinuation, "b2"), testkit.Text("whole"), frag(false, wsmw.OpText, "t1"), frag(true, wsmw.OpContinuation, "t2")),
		msgs:  []message{binMsg([]byte("b1b2")), textMsg("whole"), textMsg("t1t2")}})
	add(conformanceCase{group: g5, name: "continuation-fin-without-start",
		steps: []step{badStep(frag(true, wsmw.OpContinuation, "orphan final"))}, close: 1002})
	add(conformanceCase{group: g5, name: "continuation-nonfin-without-start",
		steps: stepsOf(badStep(frag(false, wsmw.OpContinuation, "orphan 1")), frag(true, wsmw.OpContinuation, "orphan 2")), close: 1002})
	add(conformanceCase{group: g5, name: "continuation-after-final",
		steps: stepsOf(testkit.Text("complete"), badStep(frag(true, wsmw.OpContinuation, "late continuation"))),
		msgs:  []message{textMsg("complete")}, close: 1002})
	add(conformanceCase{group: g5, name: "text-inside-fragmented-text",
		steps: stepsOf(frag(false, wsmw.OpText, "outer 1"), badStep(frag(true, wsmw.OpText, "inner text"))), close: 1002})
	add(conformanceCase{group: g5, name: "binary-inside-fragmented-text",
		steps: stepsOf(frag(false, wsmw.OpText, "outer 1"), frag(false, wsmw.OpContinuation, "outer 2"), badStep(frag(true, wsmw.OpBinary, "inner binary"))), close: 1002})
	add(conformanceCase{group: g5, name: "text-inside-fragmented-binary-nonfin",
		steps: stepsOf(frag(false, wsmw.OpBinary, "outer b"), badStep(frag(false, wsmw.OpText, "inner nonfin")), frag(true, wsmw.OpContinuation, "tail")), close: 1002})

	// ---- 6 UTF-8.
	const g6 = "6-utf8"
	valid := []struct{ name, s string }{
		{"mixed", "Hello-µ@ßöäüàá-UTF-8!!"},
		{"kosme", "κόσμε"},
		{"first-2-byte-U+0080", "\u0080"},
		{"last-2-byte-U+07FF", "\u07ff"},
		{"first-3-byte-U+0800", "\u0800"},
		{"last-before-surrogates-U+D7FF", "\ud7ff"},
		{"first-after-surrogates-U+E000", "\ue000"},
		{"U+FFFD", "\ufffd"},
		{"U+FFFE-noncharacter", "\xef\xbf\xbe"},
		{"last-3-byte-U+FFFF", "\uffff"},
		{"first-4-byte-U+10000", "\U00010000"},
		{"last-U+10FFFF", "\U0010ffff"},
		{"bom", "\ufeffBOM"},
		{"nul", "a\x00b"},
		{"all-lengths", "a\u00e9\u20ac\U0001d11e"},
	}
	for _, v := range valid {
		add(conformanceCase{group: g6, name: "valid-" + v.name, steps: okSteps(testkit.Text(v.s)), msgs: []message{textMsg(v.s)}})
	}
	{
		// Valid text split into two fragments at every byte position, then into 1-byte fragments.
		s := "κόσμε-€-𝄞-\U0010ffff"
		for i := 1; i < len(s); i++ {
			add(conformanceCase{group: g6, name: fmt.Sprintf("valid-split-at-%02d", i),
				steps: okSteps(frag(false, wsmw.OpText, s[:i]), frag(true, wsmw.OpContinuation, s[i:])),
				msgs:  []message{textMsg(s)}})
		}
		fs := byteFragments(s)
		add(conformanceCase{group: g6, name: "valid-1-byte-fragments", steps: okSteps(fs...), msgs: []message{textMsg(s)}})
		// Split into three fragments with a ping in the middle of a 4-byte sequence.
		cut := strings.Index(s, "𝄞") + 2
		add(conformanceCase{group: g6, name: "valid-split-with-ping-inside-character",
			steps: okSteps(frag(false, wsmw.OpText, s[:cut]), testkit.Ping("mid-char"), frag(true, wsmw.OpContinuation, s[cut:])),
			msgs:  []message{textMsg(s)}, pongs: payloads("mid-char")})
	}
	invalid := []struct{ name, s string }{
		{"overlong-slash-2", "\xc0\xaf"},
		{"overlong-slash-3", "\xe0\x80\xaf"},
		{"overlong-slash-4", "\xf0\x80\x80\xaf"},
		{"overlong-nul", "\xc0\x80"},
		{"overlong-U+007F", "\xc1\xbf"},
		{"overlong-U+07FF", "\xe0\x9f\xbf"},
		{"overlong-U+FFFF", "\xf0\x8f\xbf\xbf"},
		{"surrogate-U+D800", "\xed\xa0\x80"},
		{"surrogate-U+DBFF", "\xed\xaf\xbf"},
		{"surrogate-U+DC00", "\xed\xb0\x80"},
		{"surrogate-U+DFFF", "\xed\xbf\xbf"},
		{"surrogate-pair", "\xed\xa0\x80\xed\xb0\x80"},
		{"surrogate-after-valid", "κόσμε\xed\xa0\x80edited"},
		{"above-U+10FFFF-F4-90", "\xf4\x90\x80\x80"},
		{"above-U+10FFFF-F5", "\xf5\x80\x80\x80"},
		{"above-U+10FFFF-F7", "\xf7\xbf\xbf\xbf"},
		{"5-byte-sequence", "\xf8\x88\x80\x80\x80"},
		{"6-byte-sequence", "\xfc\x84\x80\x80\x80\x80"},
		{"byte-FE", "\xfe"},
		{"byte-FF", "\xff"},
		{"FE-FE-FF-FF", "\xfe\xfe\xff\xff"},
		{"lone-continuation-80", "\x80"},
		{"lone-continuation-BF", "\xbf"},
		{"continuation-after-valid", "κόσμε\x80"},
		{"truncated-2-byte-at-end", "κόσμ\xce"},
		{"truncated-3-byte-at-end", "price \xe2\x82"},
		{"truncated-4-byte-at-end", "clef \xf0\x9d\x84"},
		{"truncated-U+10FFFF-at-end", "Hello\xf4\x8f\xbf"},
		{"truncated-in-middle", "\xce space"},
		{"truncated-3-byte-in-middle", "\xe2\x82("},
	}
	for _, v := range invalid {
		add(conformanceCase{group: g6, name: "invalid-" + v.name, steps: []step{badStep(testkit.Text(v.s))}, close: 1007})
	}
	add(conformanceCase{group: g6, name: "invalid-after-valid-message",
		steps: stepsOf(testkit.Text("valid first"), badStep(testkit.Text("\xed\xa0\x80 invalid"))),
		msgs:  []message{textMsg("valid first")}, close: 1007})
	// Invalid across fragments: the close must arrive before the final fragment is sent.
	failFast := []struct {
		name      string
		frags     []string // the last one is the violating fragment, the final one follows after the close
		violating int
	}{
		{"invalid-middle-fragment", []string{"κόσμε", "\xf4\x90\x80\x80", "edited"}, 1},
		{"invalid-split-4-byte-above-max", []string{"κόσμε\xf4", "\x90\x80\x80", "edited"}, 1},
		{"invalid-split-surrogate", []string{"ab\xed", "\xa0\x80cd", "edited"}, 1},
		{"invalid-first-fragment", []string{"\xc0", "\xaf", "edited"}, 0},
		{"invalid-byte-FF-in-first-fragment", []string{"abc\xff", "def", "edited"}, 0},
		{"invalid-split-overlong-3", []string{"x\xe0", "\x80", "\xaf", "edited"}, 1},
	}
	for _, ff := range failFast {
		var steps []step
		for i, p := range ff.frags {
			op := wsmw.OpContinuation
			if i == 0 {
				op = wsmw.OpText
			}
			st := step{f: frag(i == len(ff.frags)-1, op, p)}
			if i == ff.violating {
				st.bad = true
			}
			if i == len(ff.frags)-1 {
				st.waitClose = true
			}
			steps = append(steps, st)
		}
		// The steps between the violating fragment and the final one (if any) may be in flight.
		add(conformanceCase{group: g6, name: "fail-fast-" + ff.name, steps: steps, close: 1007})
	}
	add(conformanceCase{group: g6, name: "truncated-at-end-of-fragmented-message",
		steps: stepsOf(frag(false, wsmw.OpText, "κόσμ"), badStep(frag(true, wsmw.OpContinuation, "\xce"))), close: 1007})
	{
		// Fail fast inside one frame: a 60000-byte text frame whose second chop
		// holds an invalid byte; the close must arrive before the rest is sent.
		payload := testkit.Pattern(60000, true)
		copy(payload[150:], "\xed\xa0\x80") // a surrogate
		frame := appendFrame(nil, testkit.Frame{Fin: true, Op: wsmw.OpText, Payload: payload}, true)
		hdrLen := len(frame) - len(payload)
		add(conformanceCase{group: g6, name: "fail-fast-inside-a-frame",
			steps: []step{
				{raw: frame[:hdrLen+100], bad: true},
				{raw: frame[hdrLen+100 : hdrLen+200], pause: 20 * time.Millisecond},
				{raw: frame[hdrLen+200:], waitClose: true},
			},
			close: 1007})
	}

	// ---- 7 Close handling.
	const g7 = "7-close"
	for _, code := range []int{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999} {
		add(conformanceCase{group: g7, name: fmt.Sprintf("close-%d-echoed", code),
			steps: okSteps(testkit.CloseFrame(code, "reason")), close: code, clientClosed: true})
	}
	add(conformanceCase{group: g7, name: "close-empty-echoed-empty",
		steps: okSteps(testkit.Frame{Fin: true, Op: wsmw.OpClose}), close: emptyClose, clientClosed: true})
	add(conformanceCase{group: g7, name: "close-1000-without-reason",
		steps: okSteps(testkit.CloseFrame(1000, "")), close: 1000, clientClosed: true})
	add(conformanceCase{group: g7, name: "close-after-message",
		steps: okSteps(testkit.Text("last words"), testkit.CloseFrame(1000, "bye")),
		msgs:  []message{textMsg("last words")}, close: 1000, clientClosed: true})
	add(conformanceCase{group: g7, name: "close-1-byte-is-1002",
		steps: []step{badStep(testkit.Frame{Fin: true, Op: wsmw.OpClose, Payload: []byte{0x03}})}, close: 1002})
	for _, code := range []int{0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535} {
		add(conformanceCase{group: g7, name: fmt.Sprintf("close-code-%d-is-1002", code),
			steps: []step{badStep(testkit.CloseFrame(code, "bad code"))}, close: 1002})
	}
	add(conformanceCase{group: g7, name: "close-invalid-utf8-reason-is-1002",
		steps: []step{badStep(testkit.CloseFrame(1000, "bad \xed\xa0\x80 reason"))}, close: 1002})
	add(conformanceCase{group: g7, name: "close-truncated-utf8-reason-is-1002",
		steps: []step{badStep(testkit.CloseFrame(1000, "cut \xce"))}, close: 1002})
	add(conformanceCase{group: g7, name: "close-123-byte-reason",
		steps: okSteps(testkit.CloseFrame(1000, strings.Repeat("r", 123))), close: 1000, clientClosed: true})
	add(conformanceCase{group: g7, name: "close-124-byte-reason-is-1002",
		steps: []step{badStep(testkit.CloseFrame(1000, strings.Repeat("r", 124)))}, close: 1002})
	add(conformanceCase{group: g7, name: "close-multibyte-reason",
		steps: okSteps(testkit.CloseFrame(4000, "κόσμε €")), close: 4000, clientClosed: true})
	add(conformanceCase{group: g7, name: "data-after-close-ignored",
		steps: []step{{f: testkit.CloseFrame(1000, "")}, {f: testkit.Text("after close"), dropped: true}},
		close: 1000, clientClosed: true})
	add(conformanceCase{group: g7, name: "ping-after-close-ignored",
		steps: []step{{f: testkit.CloseFrame(3000, "")}, {f: testkit.Ping("after close"), dropped: true}},
		close: 3000, clientClosed: true})
	add(conformanceCase{group: g7, name: "close-in-the-middle-of-fragmented-message",
		steps: okSteps(frag(false, wsmw.OpText, "unfinished"), testkit.CloseFrame(1000, "")),
		close: 1000, clientClosed: true})

	// ---- 9 Limits: 64 KiB frames and messages.
	const g9 = "9-limits"
	{
		big := appendHeader(nil, true, wsmw.OpBinary, frameLimit+1, []byte{1, 2, 3, 4})
		add(conformanceCase{group: g9, name: "frame-over-max-header-only",
			steps: []step{{raw: append(big, bytes.Repeat([]byte{0}, 100)...), bad: true}}, close: 1009, abandon: true})
		txt := appendHeader(nil, true, wsmw.OpText, 1<<30, []byte{1, 2, 3, 4})
		add(conformanceCase{group: g9, name: "text-frame-1GiB-header-only",
			steps: []step{{raw: txt, bad: true}}, close: 1009, abandon: true})
		half := testkit.Pattern(40000, false)
		add(conformanceCase{group: g9, name: "message-over-max-in-2-fragments",
			steps: stepsOf(testkit.Frame{Op: wsmw.OpBinary, Payload: half}, badStep(testkit.Frame{Fin: true, Op: wsmw.OpContinuation, Payload: testkit.Pattern(30000, false)})),
			close: 1009})
		full := testkit.Pattern(frameLimit, false)
		add(conformanceCase{group: g9, name: "message-at-max-in-2-fragments",
			steps: okSteps(testkit.Frame{Op: wsmw.OpBinary, Payload: full[:frameLimit/2]}, testkit.Frame{Fin: true, Op: wsmw.OpContinuation, Payload: full[frameLimit/2:]}),
			msgs:  []message{binMsg(full)}})
		add(conformanceCase{group: g9, name: "frame-over-max-after-message",
			steps: stepsOf(testkit.Text("small first"), step{raw: appendHeader(nil, true, wsmw.OpText, frameLimit+1, []byte{9, 9, 9, 9}), bad: true}),
			msgs:  []message{textMsg("small first")}, close: 1009, abandon: true})
	}
	return cs
}
