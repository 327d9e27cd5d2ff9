package integration

// The conformance cases, written from RFC 6455 and grouped like the Autobahn
// TestSuite: 1 framing, 2 pings and pongs, 3 reserved bits, 4 opcodes,
// 5 fragmentation, 6 UTF-8, 7 close handling, 9 limits. Each frame the client
// sends has a payload unique within its case, so that the upstream check can
// tell which frames were forwarded.

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"time"
)

// Frame constructors.

func confText(s string) confFrame { return confFrame{fin: true, op: confOpText, payload: []byte(s)} }

func confBin(p []byte) confFrame { return confFrame{fin: true, op: confOpBinary, payload: p} }

func confFr(fin bool, op byte, p string) confFrame {
	return confFrame{fin: fin, op: op, payload: []byte(p)}
}

func confPing(p string) confFrame { return confFrame{fin: true, op: confOpPing, payload: []byte(p)} }

func confPong(p string) confFrame { return confFrame{fin: true, op: confOpPong, payload: []byte(p)} }

// confCloseFrame is a close frame with code (any 16-bit value, even 1005) and reason.
func confCloseFrame(code int, reason string) confFrame {
	body := binary.BigEndian.AppendUint16(nil, uint16(code))
	return confFrame{fin: true, op: confOpClose, payload: append(body, reason...)}
}

// Step constructors.

func confOK(fs ...confFrame) []confStep {
	out := make([]confStep, len(fs))
	for i, f := range fs {
		out[i] = confStep{f: f}
	}
	return out
}

func confBad(f confFrame) confStep { return confStep{f: f, bad: true} }

func confSteps(parts ...any) []confStep {
	var out []confStep
	for _, p := range parts {
		switch v := p.(type) {
		case confFrame:
			out = append(out, confStep{f: v})
		case confStep:
			out = append(out, v)
		case []confStep:
			out = append(out, v...)
		default:
			panic(fmt.Sprintf("confSteps: %T", p))
		}
	}
	return out
}

// Expected message constructors.

func confTextMsg(s string) confMsg { return confMsg{op: confOpText, payload: []byte(s)} }

func confBinMsg(p []byte) confMsg { return confMsg{op: confOpBinary, payload: p} }

func confPongs(ps ...string) [][]byte {
	out := make([][]byte, len(ps))
	for i, p := range ps {
		out[i] = []byte(p)
	}
	return out
}

// confPattern returns n bytes of a deterministic pattern (binary) or ASCII (text).
func confPattern(n int, text bool) []byte {
	b := make([]byte, n)
	for i := range b {
		if text {
			b[i] = 'a' + byte(i%26)
		} else {
			b[i] = byte(i*7 + i/251)
		}
	}
	return b
}

func confCases() []confCase {
	var cs []confCase
	add := func(c confCase) { cs = append(cs, c) }

	// ---- 1 Framing: each payload length class, text and binary.
	const g1 = "1-framing"
	for _, n := range []int{0, 1, 125, 126, 127, 128, 65535, 65536} {
		txt := confPattern(n, true)
		add(confCase{group: g1, name: fmt.Sprintf("text-%d", n),
			steps: confOK(confFrame{fin: true, op: confOpText, payload: txt}),
			msgs:  []confMsg{{confOpText, txt}}})
		bin := confPattern(n, false)
		add(confCase{group: g1, name: fmt.Sprintf("binary-%d", n),
			steps: confOK(confBin(bin)),
			msgs:  []confMsg{confBinMsg(bin)}})
	}
	{
		txt := confPattern(65535, true)
		add(confCase{group: g1, name: "text-65535-in-997-byte-chops",
			steps: []confStep{{f: confFrame{fin: true, op: confOpText, payload: txt}, chop: 997}},
			msgs:  []confMsg{{confOpText, txt}}})
		bin := confPattern(65536, false)
		add(confCase{group: g1, name: "binary-65536-in-4093-byte-chops-then-text",
			steps: []confStep{{f: confBin(bin), chop: 4093}, {f: confText("after")}},
			msgs:  []confMsg{confBinMsg(bin), confTextMsg("after")}})
		var hdr []byte
		hdr = confAppendFrame(hdr, confText("chopped header"), true)
		add(confCase{group: g1, name: "frame-sent-byte-by-byte",
			steps: []confStep{{raw: hdr, chop: 1}},
			msgs:  []confMsg{confTextMsg("chopped header")}})
	}
	add(confCase{group: g1, name: "messages-in-order",
		steps: confOK(confText("one"), confBin([]byte("two")), confText("three"), confBin(nil), confText("")),
		msgs:  []confMsg{confTextMsg("one"), confBinMsg([]byte("two")), confTextMsg("three"), confBinMsg(nil), confTextMsg("")}})
	{
		// §5.1: a server must fail a connection on an unmasked client frame.
		raw := confAppendFrame(nil, confText("unmasked"), false)
		add(confCase{group: g1, name: "unmasked-client-frame",
			steps: []confStep{{raw: raw, bad: true}}, close: 1002})
	}

	// ---- 2 Pings and pongs.
	const g2 = "2-pingpong"
	add(confCase{group: g2, name: "ping-empty",
		steps: confOK(confPing("")), pongs: confPongs("")})
	add(confCase{group: g2, name: "ping-text",
		steps: confOK(confPing("Hello, world!")), pongs: confPongs("Hello, world!")})
	{
		p := string(confPattern(125, false))
		add(confCase{group: g2, name: "ping-binary-125",
			steps: confOK(confPing(p)), pongs: confPongs(p)})
		p126 := string(confPattern(126, false))
		add(confCase{group: g2, name: "ping-126-is-1002",
			steps: []confStep{confBad(confPing(p126))}, close: 1002})
		add(confCase{group: g2, name: "ping-126-after-text-is-1002",
			steps: confSteps(confText("before"), confBad(confPing(p126))),
			msgs:  []confMsg{confTextMsg("before")}, close: 1002})
	}
	add(confCase{group: g2, name: "unsolicited-pong-empty-ignored",
		steps: confOK(confPong(""), confText("after pong")), msgs: []confMsg{confTextMsg("after pong")}})
	add(confCase{group: g2, name: "unsolicited-pong-payload-ignored",
		steps: confOK(confPong("unsolicited"), confText("after pong"), confPong("again")),
		msgs:  []confMsg{confTextMsg("after pong")}})
	add(confCase{group: g2, name: "unsolicited-pong-then-ping",
		steps: confOK(confPong("unsolicited"), confPing("solicited")), pongs: confPongs("solicited")})
	{
		var pings []confFrame
		var want []string
		for i := range 10 {
			pings = append(pings, confPing(fmt.Sprintf("ping-%d", i)))
			want = append(want, fmt.Sprintf("ping-%d", i))
		}
		add(confCase{group: g2, name: "ten-pings-answered-in-order",
			steps: confOK(pings...), pongs: confPongs(want...)})
		var chopped []confStep
		for _, p := range pings {
			chopped = append(chopped, confStep{f: p, chop: 2})
		}
		add(confCase{group: g2, name: "ten-pings-chopped",
			steps: chopped, pongs: confPongs(want...)})
	}
	add(confCase{group: g2, name: "ping-message-ping",
		steps: confOK(confPing("first"), confText("message"), confPing("second")),
		msgs:  []confMsg{confTextMsg("message")}, pongs: confPongs("first", "second")})

	// ---- 3 Reserved bits: no extension is negotiated, so any RSV bit fails with 1002.
	const g3 = "3-rsv"
	rsvCases := []struct {
		name string
		f    confFrame
	}{
		{"text-rsv1", confFrame{fin: true, rsv: confRSV1, op: confOpText, payload: []byte("rsv1")}},
		{"text-rsv2", confFrame{fin: true, rsv: confRSV2, op: confOpText, payload: []byte("rsv2")}},
		{"text-rsv3", confFrame{fin: true, rsv: confRSV3, op: confOpText, payload: []byte("rsv3")}},
		{"binary-rsv1-rsv3", confFrame{fin: true, rsv: confRSV1 | confRSV3, op: confOpBinary, payload: []byte("rsv5")}},
		{"binary-rsv-all", confFrame{fin: true, rsv: confRSV1 | confRSV2 | confRSV3, op: confOpBinary, payload: []byte("rsv7")}},
		{"ping-rsv2", confFrame{fin: true, rsv: confRSV2, op: confOpPing, payload: []byte("rsv ping")}},
		{"pong-rsv3", confFrame{fin: true, rsv: confRSV3, op: confOpPong, payload: []byte("rsv pong")}},
		{"close-rsv1", confFrame{fin: true, rsv: confRSV1, op: confOpClose, payload: []byte{0x03, 0xE8}}},
	}
	for _, rc := range rsvCases {
		add(confCase{group: g3, name: rc.name, steps: []confStep{confBad(rc.f)}, close: 1002})
	}
	add(confCase{group: g3, name: "text-then-rsv-then-ping",
		steps: confSteps(confText("hello"), confBad(confFrame{fin: true, rsv: confRSV2, op: confOpText, payload: []byte("rsv frame")}), confPing("after rsv")),
		msgs:  []confMsg{confTextMsg("hello")}, close: 1002})
	add(confCase{group: g3, name: "continuation-rsv1",
		steps: confSteps(confFr(false, confOpText, "first "), confBad(confFrame{fin: true, rsv: confRSV1, op: confOpCont, payload: []byte("rsv continuation")})),
		close: 1002})

	// ---- 4 Opcodes: reserved data (3-7) and control (11-15) opcodes fail with 1002.
	const g4 = "4-opcodes"
	for _, op := range []byte{3, 4, 5, 6, 7, 11, 12, 13, 14, 15} {
		add(confCase{group: g4, name: fmt.Sprintf("opcode-%d", op),
			steps: []confStep{confBad(confFrame{fin: true, op: op, payload: []byte(fmt.Sprintf("reserved %d", op))})}, close: 1002})
	}
	add(confCase{group: g4, name: "opcode-5-empty-after-text",
		steps: confSteps(confText("before"), confBad(confFrame{fin: true, op: 5}), confPing("after")),
		msgs:  []confMsg{confTextMsg("before")}, close: 1002})
	add(confCase{group: g4, name: "opcode-11-after-text",
		steps: confSteps(confText("before"), confBad(confFrame{fin: true, op: 11, payload: []byte("ctl 11")}), confPing("after")),
		msgs:  []confMsg{confTextMsg("before")}, close: 1002})

	// ---- 5 Fragmentation.
	const g5 = "5-fragmentation"
	add(confCase{group: g5, name: "fragmented-ping-is-1002",
		steps: confSteps(confBad(confFr(false, confOpPing, "ping frag 1")), confFr(true, confOpCont, "ping frag 2")), close: 1002})
	add(confCase{group: g5, name: "fragmented-pong-is-1002",
		steps: confSteps(confBad(confFr(false, confOpPong, "pong frag 1")), confFr(true, confOpCont, "pong frag 2")), close: 1002})
	add(confCase{group: g5, name: "fragmented-close-is-1002",
		steps: confSteps(confBad(confFrame{fin: false, op: confOpClose, payload: []byte{0x03, 0xE8, 'a'}}), confFr(true, confOpCont, "close frag 2")), close: 1002})
	add(confCase{group: g5, name: "text-2-fragments",
		steps: confOK(confFr(false, confOpText, "fragment1"), confFr(true, confOpCont, "fragment2")),
		msgs:  []confMsg{confTextMsg("fragment1fragment2")}})
	add(confCase{group: g5, name: "binary-3-fragments",
		steps: confOK(confFrame{op: confOpBinary, payload: []byte{1, 2, 3}}, confFrame{op: confOpCont, payload: []byte{4, 5}}, confFrame{fin: true, op: confOpCont, payload: []byte{6}}),
		msgs:  []confMsg{confBinMsg([]byte{1, 2, 3, 4, 5, 6})}})
	{
		s := "fragmented-1-byte"
		var fs []confFrame
		for i := range len(s) {
			op := confOpCont
			if i == 0 {
				op = confOpText
			}
			fs = append(fs, confFr(i == len(s)-1, op, s[i:i+1]))
		}
		add(confCase{group: g5, name: "text-1-byte-fragments", steps: confOK(fs...), msgs: []confMsg{confTextMsg(s)}})
		big := confPattern(3*20000, false)
		add(confCase{group: g5, name: "binary-60000-in-3-fragments",
			steps: confOK(confFrame{op: confOpBinary, payload: big[:20000]}, confFrame{op: confOpCont, payload: big[20000:40000]}, confFrame{fin: true, op: confOpCont, payload: big[40000:]}),
			msgs:  []confMsg{confBinMsg(big)}})
	}
	add(confCase{group: g5, name: "empty-fragments",
		steps: confOK(confFr(false, confOpText, ""), confFr(false, confOpCont, ""), confFr(true, confOpCont, "")),
		msgs:  []confMsg{confTextMsg("")}})
	add(confCase{group: g5, name: "empty-fragment-in-the-middle",
		steps: confOK(confFr(false, confOpText, "a"), confFr(false, confOpCont, ""), confFr(true, confOpCont, "b")),
		msgs:  []confMsg{confTextMsg("ab")}})
	add(confCase{group: g5, name: "ping-between-fragments",
		steps: confOK(confFr(false, confOpText, "fragment1"), confPing("between"), confFr(true, confOpCont, "fragment2")),
		msgs:  []confMsg{confTextMsg("fragment1fragment2")}, pongs: confPongs("between")})
	add(confCase{group: g5, name: "pong-between-fragments",
		steps: confOK(confFr(false, confOpText, "fragment1"), confPong("between"), confFr(true, confOpCont, "fragment2")),
		msgs:  []confMsg{confTextMsg("fragment1fragment2")}})
	add(confCase{group: g5, name: "five-fragments-two-pings-with-pauses",
		steps: []confStep{
			{f: confFr(false, confOpText, "f1-")}, {f: confPing("p1"), pause: 10 * time.Millisecond},
			{f: confFr(false, confOpCont, "f2-"), pause: 10 * time.Millisecond}, {f: confFr(false, confOpCont, "f3-")},
			{f: confPing("p2"), pause: 10 * time.Millisecond}, {f: confFr(false, confOpCont, "f4-")},
			{f: confFr(true, confOpCont, "f5"), pause: 10 * time.Millisecond},
		},
		msgs: []confMsg{confTextMsg("f1-f2-f3-f4-f5")}, pongs: confPongs("p1", "p2")})
	add(confCase{group: g5, name: "fragmented-then-whole-messages",
		steps: confOK(confFr(false, confOpBinary, "b1"), confFr(true, confOpCont, "b2"), confText("whole"), confFr(false, confOpText, "t1"), confFr(true, confOpCont, "t2")),
		msgs:  []confMsg{confBinMsg([]byte("b1b2")), confTextMsg("whole"), confTextMsg("t1t2")}})
	add(confCase{group: g5, name: "continuation-fin-without-start",
		steps: []confStep{confBad(confFr(true, confOpCont, "orphan final"))}, close: 1002})
	add(confCase{group: g5, name: "continuation-nonfin-without-start",
		steps: confSteps(confBad(confFr(false, confOpCont, "orphan 1")), confFr(true, confOpCont, "orphan 2")), close: 1002})
	add(confCase{group: g5, name: "continuation-after-final",
		steps: confSteps(confText("complete"), confBad(confFr(true, confOpCont, "late continuation"))),
		msgs:  []confMsg{confTextMsg("complete")}, close: 1002})
	add(confCase{group: g5, name: "text-inside-fragmented-text",
		steps: confSteps(confFr(false, confOpText, "outer 1"), confBad(confFr(true, confOpText, "inner text"))), close: 1002})
	add(confCase{group: g5, name: "binary-inside-fragmented-text",
		steps: confSteps(confFr(false, confOpText, "outer 1"), confFr(false, confOpCont, "outer 2"), confBad(confFr(true, confOpBinary, "inner binary"))), close: 1002})
	add(confCase{group: g5, name: "text-inside-fragmented-binary-nonfin",
		steps: confSteps(confFr(false, confOpBinary, "outer b"), confBad(confFr(false, confOpText, "inner nonfin")), confFr(true, confOpCont, "tail")), close: 1002})

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
		add(confCase{group: g6, name: "valid-" + v.name, steps: confOK(confText(v.s)), msgs: []confMsg{confTextMsg(v.s)}})
	}
	{
		// Valid text split into two fragments at every byte position, then into 1-byte fragments.
		s := "κόσμε-€-𝄞-\U0010ffff"
		for i := 1; i < len(s); i++ {
			add(confCase{group: g6, name: fmt.Sprintf("valid-split-at-%02d", i),
				steps: confOK(confFr(false, confOpText, s[:i]), confFr(true, confOpCont, s[i:])),
				msgs:  []confMsg{confTextMsg(s)}})
		}
		var fs []confFrame
		for i := range len(s) {
			op := confOpCont
			if i == 0 {
				op = confOpText
			}
			fs = append(fs, confFr(i == len(s)-1, op, s[i:i+1]))
		}
		add(confCase{group: g6, name: "valid-1-byte-fragments", steps: confOK(fs...), msgs: []confMsg{confTextMsg(s)}})
		// Split into three fragments with a ping in the middle of a 4-byte sequence.
		cut := strings.Index(s, "𝄞") + 2
		add(confCase{group: g6, name: "valid-split-with-ping-inside-character",
			steps: confOK(confFr(false, confOpText, s[:cut]), confPing("mid-char"), confFr(true, confOpCont, s[cut:])),
			msgs:  []confMsg{confTextMsg(s)}, pongs: confPongs("mid-char")})
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
		add(confCase{group: g6, name: "invalid-" + v.name, steps: []confStep{confBad(confText(v.s))}, close: 1007})
	}
	add(confCase{group: g6, name: "invalid-after-valid-message",
		steps: confSteps(confText("valid first"), confBad(confText("\xed\xa0\x80 invalid"))),
		msgs:  []confMsg{confTextMsg("valid first")}, close: 1007})
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
		var steps []confStep
		for i, p := range ff.frags {
			op := confOpCont
			if i == 0 {
				op = confOpText
			}
			st := confStep{f: confFr(i == len(ff.frags)-1, op, p)}
			if i == ff.violating {
				st.bad = true
			}
			if i == len(ff.frags)-1 {
				st.waitClose = true
			}
			steps = append(steps, st)
		}
		// The steps between the violating fragment and the final one (if any) may be in flight.
		add(confCase{group: g6, name: "fail-fast-" + ff.name, steps: steps, close: 1007})
	}
	add(confCase{group: g6, name: "truncated-at-end-of-fragmented-message",
		steps: confSteps(confFr(false, confOpText, "κόσμ"), confBad(confFr(true, confOpCont, "\xce"))), close: 1007})
	{
		// Fail fast inside one frame: a 60000-byte text frame whose second chop
		// holds an invalid byte; the close must arrive before the rest is sent.
		payload := confPattern(60000, true)
		copy(payload[150:], "\xed\xa0\x80") // a surrogate
		frame := confAppendFrame(nil, confFrame{fin: true, op: confOpText, payload: payload}, true)
		hdrLen := len(frame) - len(payload)
		add(confCase{group: g6, name: "fail-fast-inside-a-frame",
			steps: []confStep{
				{raw: frame[:hdrLen+100], bad: true},
				{raw: frame[hdrLen+100 : hdrLen+200], pause: 20 * time.Millisecond},
				{raw: frame[hdrLen+200:], waitClose: true},
			},
			close: 1007})
	}

	// ---- 7 Close handling.
	const g7 = "7-close"
	for _, code := range []int{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999} {
		add(confCase{group: g7, name: fmt.Sprintf("close-%d-echoed", code),
			steps: confOK(confCloseFrame(code, "reason")), close: code, clientClosed: true})
	}
	add(confCase{group: g7, name: "close-empty-echoed-empty",
		steps: confOK(confFrame{fin: true, op: confOpClose}), close: confEmptyClose, clientClosed: true})
	add(confCase{group: g7, name: "close-1000-without-reason",
		steps: confOK(confCloseFrame(1000, "")), close: 1000, clientClosed: true})
	add(confCase{group: g7, name: "close-after-message",
		steps: confOK(confText("last words"), confCloseFrame(1000, "bye")),
		msgs:  []confMsg{confTextMsg("last words")}, close: 1000, clientClosed: true})
	add(confCase{group: g7, name: "close-1-byte-is-1002",
		steps: []confStep{confBad(confFrame{fin: true, op: confOpClose, payload: []byte{0x03}})}, close: 1002})
	for _, code := range []int{0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535} {
		add(confCase{group: g7, name: fmt.Sprintf("close-code-%d-is-1002", code),
			steps: []confStep{confBad(confCloseFrame(code, "bad code"))}, close: 1002})
	}
	add(confCase{group: g7, name: "close-invalid-utf8-reason-is-1002",
		steps: []confStep{confBad(confCloseFrame(1000, "bad \xed\xa0\x80 reason"))}, close: 1002})
	add(confCase{group: g7, name: "close-truncated-utf8-reason-is-1002",
		steps: []confStep{confBad(confCloseFrame(1000, "cut \xce"))}, close: 1002})
	add(confCase{group: g7, name: "close-123-byte-reason",
		steps: confOK(confCloseFrame(1000, strings.Repeat("r", 123))), close: 1000, clientClosed: true})
	add(confCase{group: g7, name: "close-124-byte-reason-is-1002",
		steps: []confStep{confBad(confCloseFrame(1000, strings.Repeat("r", 124)))}, close: 1002})
	add(confCase{group: g7, name: "close-multibyte-reason",
		steps: confOK(confCloseFrame(4000, "κόσμε €")), close: 4000, clientClosed: true})
	add(confCase{group: g7, name: "data-after-close-ignored",
		steps: []confStep{{f: confCloseFrame(1000, "")}, {f: confText("after close"), dropped: true}},
		close: 1000, clientClosed: true})
	add(confCase{group: g7, name: "ping-after-close-ignored",
		steps: []confStep{{f: confCloseFrame(3000, "")}, {f: confPing("after close"), dropped: true}},
		close: 3000, clientClosed: true})
	add(confCase{group: g7, name: "close-in-the-middle-of-fragmented-message",
		steps: confOK(confFr(false, confOpText, "unfinished"), confCloseFrame(1000, "")),
		close: 1000, clientClosed: true})

	// ---- 9 Limits: 64 KiB frames and messages.
	const g9 = "9-limits"
	{
		big := confAppendHeader(nil, true, 0, confOpBinary, confLimit+1, []byte{1, 2, 3, 4})
		add(confCase{group: g9, name: "frame-over-max-header-only",
			steps: []confStep{{raw: append(big, bytes.Repeat([]byte{0}, 100)...), bad: true}}, close: 1009, abandon: true})
		txt := confAppendHeader(nil, true, 0, confOpText, 1<<30, []byte{1, 2, 3, 4})
		add(confCase{group: g9, name: "text-frame-1GiB-header-only",
			steps: []confStep{{raw: txt, bad: true}}, close: 1009, abandon: true})
		half := confPattern(40000, false)
		add(confCase{group: g9, name: "message-over-max-in-2-fragments",
			steps: confSteps(confFrame{op: confOpBinary, payload: half}, confBad(confFrame{fin: true, op: confOpCont, payload: confPattern(30000, false)})),
			close: 1009})
		full := confPattern(confLimit, false)
		add(confCase{group: g9, name: "message-at-max-in-2-fragments",
			steps: confOK(confFrame{op: confOpBinary, payload: full[:confLimit/2]}, confFrame{fin: true, op: confOpCont, payload: full[confLimit/2:]}),
			msgs:  []confMsg{confBinMsg(full)}})
		add(confCase{group: g9, name: "frame-over-max-after-message",
			steps: confSteps(confText("small first"), confStep{raw: confAppendHeader(nil, true, 0, confOpText, confLimit+1, []byte{9, 9, 9, 9}), bad: true}),
			msgs:  []confMsg{confTextMsg("small first")}, close: 1009, abandon: true})
	}
	return cs
}
