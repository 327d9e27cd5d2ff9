package wsmw

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

// failCase is a byte stream a peer sends that must make the Conn fail the
// connection with code (on the wire and in the returned *FailError).
type failCase struct {
	name     string
	client   bool // the Conn under test plays the client (the raw peer is a server)
	cfg      connConfig
	input    []byte
	code     StatusCode
	sentinel error
	// unsent: the input stops inside a frame whose payload is never sent. The drain
	// then skips what is left of that frame (it cannot tell) and the peer's close is
	// not seen: the Conn closes after its close timeout instead.
	unsent bool
	// garbage: bytes follow a malformed header, whose length cannot be trusted; the
	// drain parses them as frames and may stop early, so the peer's close can arrive
	// after the Conn closed (a TCP reset instead of a clean EOF).
	garbage bool
}

// rawHeader builds a masked header by hand, for encodings AppendHeader never produces.
func rawHeader(b0, lenByte byte, ext []byte) []byte {
	b := []byte{b0, 0x80 | lenByte}
	b = append(b, ext...)
	return append(b, maskKey[:]...)
}

func u16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func failCases() []failCase {
	var cases []failCase
	add := func(name string, code StatusCode, sentinel error, input ...[]byte) {
		cases = append(cases, failCase{name: name, input: concat(input...), code: code, sentinel: sentinel})
	}
	proto := func(name string, input ...[]byte) { add(name, StatusProtocolError, ErrProtocol, input...) }
	utf := func(name string, input ...[]byte) { add(name, StatusInvalidPayload, ErrInvalidUTF8, input...) }

	// §5.1: masking.
	proto("UnmaskedClientText", rawFrame(true, 0, OpText, false, []byte("hi")))
	proto("UnmaskedClientPing", rawFrame(true, 0, OpPing, false, nil))
	proto("UnmaskedClientClose", rawFrame(true, 0, OpClose, false, []byte(closeBody(1000, ""))))
	proto("UnmaskedAfterGoodFrame", clientFrame(OpText, "ok"), rawFrame(true, 0, OpBinary, false, []byte("x")))
	cases = append(cases,
		failCase{name: "MaskedServerText", client: true, input: clientFrame(OpText, "hi"), code: StatusProtocolError, sentinel: ErrProtocol},
		failCase{name: "MaskedServerPing", client: true, input: clientFrame(OpPing, ""), code: StatusProtocolError, sentinel: ErrProtocol},
	)

	// §5.2: RSV bits without a negotiated extension.
	for _, rsv := range []byte{RSV1, RSV2, RSV3, RSV1 | RSV2 | RSV3} {
		proto(fmt.Sprintf("RSV%02x/Text", rsv), rawFrame(true, rsv, OpText, true, []byte("a")))
		proto(fmt.Sprintf("RSV%02x/Binary", rsv), rawFrame(true, rsv, OpBinary, true, nil))
		proto(fmt.Sprintf("RSV%02x/Ping", rsv), rawFrame(true, rsv, OpPing, true, nil))
		proto(fmt.Sprintf("RSV%02x/Continuation", rsv), clientFrag(false, OpText, "a"), rawFrame(true, rsv, OpContinuation, true, []byte("b")))
	}
	// RSV1 negotiated: allowed on a message's first frame only.
	rsv1 := connConfig{rsvAllowed: RSV1}
	for _, c := range []struct {
		name  string
		input []byte
	}{
		{"RSV1Negotiated/Continuation", concat(rawFrame(false, RSV1, OpText, true, []byte("a")), rawFrame(true, RSV1, OpContinuation, true, []byte("b")))},
		{"RSV1Negotiated/ContinuationOfPlain", concat(clientFrag(false, OpBinary, "a"), rawFrame(true, RSV1, OpContinuation, true, []byte("b")))},
		{"RSV1Negotiated/Ping", rawFrame(true, RSV1, OpPing, true, nil)},
		{"RSV1Negotiated/Close", rawFrame(true, RSV1, OpClose, true, []byte(closeBody(1000, "")))},
		{"RSV1Negotiated/RSV2", rawFrame(true, RSV2, OpText, true, []byte("a"))},
		{"RSV1Negotiated/RSV3", rawFrame(true, RSV1|RSV3, OpBinary, true, []byte("a"))},
	} {
		cases = append(cases, failCase{name: c.name, cfg: rsv1, input: c.input, code: StatusProtocolError, sentinel: ErrProtocol})
	}

	// §5.2: unknown opcodes.
	for _, op := range []OpCode{3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF} {
		proto(fmt.Sprintf("Opcode%X", byte(op)), rawFrame(true, 0, op, true, []byte("x")))
		proto(fmt.Sprintf("Opcode%X/Empty", byte(op)), rawFrame(true, 0, op, true, nil))
	}
	proto("Opcode3InsideMessage", clientFrag(false, OpText, "a"), rawFrame(false, 0, 3, true, nil))

	// §5.5: control frames are at most 125 bytes and never fragmented.
	big := strings.Repeat("p", 126)
	proto("Ping126", clientFrame(OpPing, big))
	proto("Pong126", clientFrame(OpPong, big))
	proto("Close126", clientFrame(OpClose, closeBody(1000, big[:124])))
	unsent := func(name string, code StatusCode, sentinel error, input ...[]byte) {
		cases = append(cases, failCase{name: name, input: concat(input...), code: code, sentinel: sentinel, unsent: true})
	}
	unsent("Ping126HeaderOnly", StatusProtocolError, ErrProtocol, rawHeader(0x89, 126, u16(126)))
	unsent("PingLength64Bit", StatusProtocolError, ErrProtocol, rawHeader(0x89, 127, u64(1<<16)))
	proto("FragmentedPing", clientFrag(false, OpPing, "a"))
	proto("FragmentedPong", clientFrag(false, OpPong, ""))
	proto("FragmentedClose", clientFrag(false, OpClose, closeBody(1000, "")))
	proto("FragmentedPingInsideMessage", clientFrag(false, OpText, "a"), clientFrag(false, OpPing, "p"), clientFrag(true, OpContinuation, "b"))

	// §5.4: fragmentation order.
	proto("ContinuationWithoutStart", clientFrag(true, OpContinuation, "a"))
	proto("ContinuationWithoutStartNotFin", clientFrag(false, OpContinuation, "a"))
	proto("ContinuationAfterCompleteMessage", clientFrame(OpText, "a"), clientFrag(true, OpContinuation, "b"))
	proto("ContinuationAfterFinalFragment", clientFrag(false, OpText, "a"), clientFrag(true, OpContinuation, "b"), clientFrag(true, OpContinuation, "c"))
	proto("TextInsideFragmentedMessage", clientFrag(false, OpText, "a"), clientFrag(true, OpText, "b"))
	proto("BinaryInsideFragmentedMessage", clientFrag(false, OpText, "a"), clientFrag(true, OpBinary, "b"))
	proto("TextInsideFragmentedBinary", clientFrag(false, OpBinary, "a"), clientFrag(false, OpContinuation, "b"), clientFrag(true, OpText, "c"))
	proto("TextInsideAfterPing", clientFrag(false, OpText, "a"), clientFrame(OpPing, "p"), clientFrag(true, OpText, "b"))

	// §5.2: "the minimal number of bytes MUST be used to encode the length".
	proto("NonMinimal16/0", rawHeader(0x82, 126, u16(0)))
	garbage := func(name string, input ...[]byte) {
		cases = append(cases, failCase{name: name, input: concat(input...), code: StatusProtocolError, sentinel: ErrProtocol, garbage: true})
	}
	garbage("NonMinimal16/5", rawHeader(0x82, 126, u16(5)), []byte("hello"))
	proto("NonMinimal16/125", rawHeader(0x82, 126, u16(125)))
	proto("NonMinimal64/0", rawHeader(0x82, 127, u64(0)))
	garbage("NonMinimal64/5", rawHeader(0x82, 127, u64(5)), []byte("hello"))
	proto("NonMinimal64/126", rawHeader(0x82, 127, u64(126)))
	proto("NonMinimal64/65535", rawHeader(0x82, 127, u64(65535)))
	proto("Length64MSB", rawHeader(0x82, 127, u64(1<<63)))
	proto("Length64MSBAll", rawHeader(0x82, 127, u64(^uint64(0))))

	// §8.1: text must be UTF-8, checked across fragments, failing at the first bad byte.
	for _, s := range []string{"\xff", "\xfe", "a\xc0\xafb", "\xc1\xbf", "\xc3\x28", "\x80", "ab\xbf",
		"\xed\xa0\x80", "\xed\xbf\xbf", "\xf4\x90\x80\x80", "\xf5\x80\x80\x80", "\xf8\x88\x80\x80\x80",
		"\xe0\x80\xaf", "\xf0\x80\x80\xaf", "κόσμε\xed\xa0\x80edited", "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited"} {
		utf(fmt.Sprintf("InvalidUTF8/%q", s), clientFrame(OpText, s))
	}
	for _, parts := range [][]string{
		{"\xce", "\x41"},
		{"\xed", "\xa0\x80"},
		{"\xed\xa0", "\x80"},
		{"\xf4", "\x90\x80\x80"},
		{"\xf4\x90", "\x80\x80"},
		{"\xce\xba\xe1", "\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", "\xed\xa0\x80edited"},
		{"\xce\xba\xe1\xbd", "\xb9\xcf\x83\xce\xbc\xce", "\xb5\xf4\x90\x80\x80"},
		{"abc", "", "\xff"},
	} {
		var frames [][]byte
		for i, p := range parts {
			op := OpContinuation
			if i == 0 {
				op = OpText
			}
			frames = append(frames, clientFrag(i == len(parts)-1, op, p))
		}
		utf(fmt.Sprintf("InvalidUTF8Fragmented/%q", parts), frames...)
	}
	utf("InvalidUTF8AfterPing", clientFrag(false, OpText, "\xce"), clientFrame(OpPing, "p"), clientFrag(true, OpContinuation, "\x41"))
	// Valid so far, but the message ends inside a character.
	utf("EndsMidCharacter/2", clientFrame(OpText, "\xce"))
	utf("EndsMidCharacter/3", clientFrame(OpText, "ok\xe1\xbd"))
	utf("EndsMidCharacter/4", clientFrame(OpText, "\xf0\x9f\x98"))
	utf("EndsMidCharacter/EmptyFinalFrame", clientFrag(false, OpText, "\xce"), clientFrag(true, OpContinuation, ""))
	utf("EndsMidCharacter/Fragmented", clientFrag(false, OpText, "\xce\xba"), clientFrag(false, OpContinuation, "\xe1"), clientFrag(true, OpContinuation, "\xbd"))

	// §5.5.1, §7.4: close frame payloads.
	proto("CloseOneByte", clientFrame(OpClose, "\x03"))
	for _, code := range []int{0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535} {
		proto(fmt.Sprintf("CloseCode%d", code), clientFrame(OpClose, closeBody(code, "")))
	}
	proto("CloseReasonInvalidUTF8", clientFrame(OpClose, closeBody(1000, "bye\xff")))
	proto("CloseReasonSurrogate", clientFrame(OpClose, closeBody(1000, "\xed\xa0\x80")))
	proto("CloseReasonTruncated", clientFrame(OpClose, closeBody(1000, "\xce")))
	proto("CloseInsideMessageInvalid", clientFrag(false, OpText, "a"), clientFrame(OpClose, "\x03"))

	// Limits: 1009 as soon as the header is read, before the payload arrives.
	small := connConfig{maxFrame: 1000, maxMessage: 2500}
	tooBig := func(name string, input ...[]byte) {
		cases = append(cases, failCase{name: name, cfg: small, input: concat(input...), code: StatusMessageTooBig, sentinel: ErrPayloadTooBig, unsent: true})
	}
	tooBig("FrameOverMaxFrameSize/HeaderOnly", rawHeader(0x82, 126, u16(1001)))
	tooBig("FrameOverMaxFrameSize/Text64", rawHeader(0x81, 127, u64(1<<40)))
	tooBig("FrameOverMaxFrameSize/Continuation", clientFrag(false, OpBinary, "a"), rawHeader(0x80, 126, u16(1001)))
	k := strings.Repeat("k", 1000)
	tooBig("MessageOverMaxMessageSize", clientFrag(false, OpBinary, k), clientFrag(false, OpContinuation, k), rawHeader(0x80, 126, u16(501)))
	tooBig("MessageOverMaxMessageSize/Text", clientFrag(false, OpText, k), clientFrag(false, OpContinuation, k), clientFrag(false, OpContinuation, ""), rawHeader(0x80, 126, u16(501)))
	tooBig("MessageOverMaxMessageSize/AfterPing", clientFrag(false, OpText, k), clientFrame(OpPing, ""), clientFrag(false, OpContinuation, k), rawHeader(0x80, 126, u16(501)))
	return cases
}

// TestReceiveRulesFail runs every rule violation over both transports and both
// reading levels. The raw peer must receive a close frame with the exact code,
// and once it answers with its own close the reader must return promptly with
// a *FailError carrying the same code and the matching sentinel.
func TestReceiveRulesFail(t *testing.T) {
	for _, tr := range transports {
		for _, mode := range readModes {
			for _, tc := range failCases() {
				t.Run(tr.name+"/"+mode.name+"/"+tc.name, func(t *testing.T) {
					t.Parallel()
					cfg := tc.cfg
					cfg.closeTimeout = 3 * time.Second
					if tc.unsent {
						cfg.closeTimeout = 200 * time.Millisecond
					}
					c, raw := tr.pair(t, tc.client, cfg)
					go raw.Write(tc.input)
					res := async(func() error { return mode.read(c) })
					code, _, _ := expectClose(t, raw, 2*time.Second)
					if code != tc.code {
						t.Errorf("close code on the wire = %v, want %v", code, tc.code)
					}
					// Answer the close: the Conn's drain must find it and close at once,
					// well before its 3s close timeout.
					go raw.Write(closeReply(tc.client, StatusNormalClosure))
					start := time.Now()
					err := waitErr(t, res, 5*time.Second, "read")
					if d := time.Since(start); d > time.Second && !tc.unsent && !tc.garbage {
						t.Errorf("reader returned %v after the peer's close: the drain missed it", d)
					}
					checkFail(t, err, tc.code, tc.sentinel)
					if tc.garbage {
						return
					}
					// The connection is closed after the failure: the peer sees EOF.
					_ = raw.SetReadDeadline(time.Now().Add(2 * time.Second))
					if n, err := io.Copy(io.Discard, raw); err != nil || n != 0 {
						t.Errorf("after the close frame: %d more bytes, err %v; want a clean EOF", n, err)
					}
				})
			}
		}
	}
}

// TestRSV1NegotiatedFirstFrame checks that a negotiated RSV1 is accepted on a
// message's first frame (and its payload is not validated as text here: it is compressed).
func TestRSV1NegotiatedFirstFrame(t *testing.T) {
	for _, mode := range []string{"NextFrame", "ReadMessage"} {
		t.Run(mode, func(t *testing.T) {
			c, raw := tcpPair(t, false, connConfig{rsvAllowed: RSV1})
			go raw.Write(concat(
				rawFrame(true, RSV1, OpText, true, []byte("\xff\x00compressed")),
				rawFrame(false, RSV1, OpBinary, true, []byte("ab")),
				clientFrag(true, OpContinuation, "cd"),
				clientFrame(OpText, "plain"),
			))
			if mode == "NextFrame" {
				want := []Header{
					{Fin: true, Rsv: RSV1, OpCode: OpText, Length: 12},
					{Fin: false, Rsv: RSV1, OpCode: OpBinary, Length: 2},
					{Fin: true, OpCode: OpContinuation, Length: 2},
					{Fin: true, OpCode: OpText, Length: 5},
				}
				for i, w := range want {
					h, err := c.nextFrame()
					if err != nil {
						t.Fatalf("frame %d: %v", i, err)
					}
					h.Masked, h.Mask = false, [4]byte{}
					if h != w {
						t.Errorf("frame %d = %+v, want %+v", i, h, w)
					}
				}
				return
			}
			for i, w := range []readMsg{{OpText, []byte("\xff\x00compressed")}, {OpBinary, []byte("abcd")}, {OpText, []byte("plain")}} {
				op, p, err := c.readMessage()
				if err != nil {
					t.Fatalf("readMsg %d: %v", i, err)
				}
				if op != w.op || !bytes.Equal(p, w.p) {
					t.Errorf("readMsg %d = %v %q, want %v %q", i, op, p, w.op, w.p)
				}
			}
		})
	}
}

// TestInvalidUTF8FailsFast: a text frame announces 1 MiB and its first bytes are
// invalid; the peer then stops. The Conn must fail with 1007 without waiting for the rest.
func TestInvalidUTF8FailsFast(t *testing.T) {
	for _, tr := range transports {
		for _, mode := range []string{"NextFrame", "ReadMessage"} {
			t.Run(tr.name+"/"+mode, func(t *testing.T) {
				t.Parallel()
				c, raw := tr.pair(t, false, connConfig{closeTimeout: 300 * time.Millisecond})
				h := Header{Fin: true, OpCode: OpText, Masked: true, Mask: maskKey, Length: 1 << 20}
				first := []byte("valid prefix κ then \xc0 invalid")
				Mask(maskKey, 0, first)
				go raw.Write(append(AppendHeader(nil, h), first...))
				res := async(func() error {
					switch mode {
					case "NextFrame":
						if _, err := c.nextFrame(); err != nil {
							return fmt.Errorf("NextFrame failed on a valid header: %w", err)
						}
						_, err := io.ReadAll(payloadReader{c})
						return err
					}
					_, _, err := c.readMessage()
					return err
				})
				code, _, _ := expectClose(t, raw, 2*time.Second)
				if code != StatusInvalidPayload {
					t.Errorf("close code = %v, want 1007", code)
				}
				err := waitErr(t, res, 3*time.Second, "read")
				checkFail(t, err, StatusInvalidPayload, ErrInvalidUTF8)
			})
		}
	}
}

// TestFrameOverMaxFrameSizeBeforePayload: 1009 is sent right after the header of
// an oversized frame, without any of its payload having been sent.
func TestFrameOverMaxFrameSizeBeforePayload(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			c, raw := tr.pair(t, false, connConfig{maxFrame: 64 << 10, closeTimeout: 300 * time.Millisecond})
			h := Header{Fin: true, OpCode: OpBinary, Masked: true, Mask: maskKey, Length: 64<<10 + 1}
			go raw.Write(AppendHeader(nil, h))
			res := async(func() error { _, _, err := c.readMessage(); return err })
			code, _, _ := expectClose(t, raw, 2*time.Second)
			if code != StatusMessageTooBig {
				t.Errorf("close code = %v, want 1009", code)
			}
			checkFail(t, waitErr(t, res, 3*time.Second, "read"), StatusMessageTooBig, ErrPayloadTooBig)
		})
	}
}

// TestFrameOverMaxFrameSizeWholeFrameSent: a conforming peer sent the whole
// oversized frame before reading the 1009; its close reply must still be found.
func TestFrameOverMaxFrameSizeWholeFrameSent(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			c, raw := tr.pair(t, false, connConfig{maxFrame: 1000, closeTimeout: 3 * time.Second})
			payload := bytes.Repeat([]byte{0x88, 0x80, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06}, 2000/8)
			go raw.Write(rawFrame(true, 0, OpBinary, true, payload))
			res := async(func() error { _, _, err := c.readMessage(); return err })
			code, _, _ := expectClose(t, raw, 2*time.Second)
			if code != StatusMessageTooBig {
				t.Errorf("close code = %v, want 1009", code)
			}
			go raw.Write(closeReply(false, StatusNormalClosure))
			start := time.Now()
			checkFail(t, waitErr(t, res, 5*time.Second, "read"), StatusMessageTooBig, ErrPayloadTooBig)
			if d := time.Since(start); d > time.Second {
				t.Errorf("reader returned %v after the peer's close: the drain missed it", d)
			}
		})
	}
}

// TestCloseCodesAccepted: valid codes are accepted, reported and echoed by the
// message-level reader; the frame-level reader returns the close frame then the *CloseError.
func TestCloseCodesAccepted(t *testing.T) {
	codes := []StatusCode{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999}
	for _, mode := range []string{"NextFrame", "ReadMessage"} {
		for _, code := range codes {
			t.Run(fmt.Sprintf("%s/%d", mode, code), func(t *testing.T) {
				t.Parallel()
				c, raw := tcpPair(t, false, connConfig{})
				go raw.Write(clientFrame(OpClose, closeBody(int(code), "reason é")))
				var err error
				if mode == "NextFrame" {
					h, ferr := c.nextFrame()
					if ferr != nil || h.OpCode != OpClose {
						t.Fatalf("NextFrame = %+v, %v; want the close frame", h, ferr)
					}
					p, _ := io.ReadAll(payloadReader{c})
					if string(p) != closeBody(int(code), "reason é") {
						t.Errorf("close payload = %q", p)
					}
					if ce := c.closeReceived(); ce == nil || ce.Code != code || ce.Reason != "reason é" {
						t.Errorf("CloseReceived = %+v", ce)
					}
					_, err = c.nextFrame()
				} else {
					_, _, err = c.readMessage()
					got, _, _ := expectClose(t, raw, 2*time.Second)
					if got != code {
						t.Errorf("echoed close code = %v, want %v", got, code)
					}
				}
				var ce *CloseError
				if !errors.As(err, &ce) || ce.Code != code || ce.Reason != "reason é" {
					t.Fatalf("error = %v, want *CloseError %v", err, code)
				}
				var fe *FailError
				if errors.As(err, &fe) {
					t.Errorf("a valid close was treated as a failure: %v", err)
				}
			})
		}
	}
}

// TestMessageSizes: empty messages and every payload length class, as single
// frames and fragmented, over both transports and reading levels.
func TestMessageSizes(t *testing.T) {
	sizes := []int{0, 1, 125, 126, 127, 4095, 4096, 4097, 65535, 65536, 100000}
	for _, tr := range transports {
		for _, op := range []OpCode{OpText, OpBinary} {
			t.Run(tr.name+"/"+op.String(), func(t *testing.T) {
				c, raw := tr.pair(t, false, connConfig{})
				var in []byte
				var want [][]byte
				for _, n := range sizes {
					p := bytes.Repeat([]byte("abcdefghij"), n/10+1)[:n]
					in = append(in, rawFrame(true, 0, op, true, p)...)
					want = append(want, p)
				}
				// The same payloads fragmented into three frames (the first one may be empty).
				for _, n := range sizes {
					p := bytes.Repeat([]byte("0123456789"), n/10+1)[:n]
					a, b := n/3, 2*n/3
					in = append(in, rawFrame(false, 0, op, true, p[:a])...)
					in = append(in, rawFrame(false, 0, OpContinuation, true, p[a:b])...)
					in = append(in, rawFrame(true, 0, OpContinuation, true, p[b:])...)
					want = append(want, p)
				}
				go func() {
					raw.Write(in)
					raw.Close()
				}()
				msgs, err := readMessages(c)
				if !errors.Is(err, io.EOF) {
					t.Errorf("final error = %v, want io.EOF", err)
				}
				if len(msgs) != len(want) {
					t.Fatalf("got %d messages, want %d", len(msgs), len(want))
				}
				for i, m := range msgs {
					if m.op != op || !bytes.Equal(m.p, want[i]) {
						t.Errorf("readMsg %d: op %v, %d bytes; want %v, %d bytes", i, m.op, len(m.p), op, len(want[i]))
					}
				}
			})
		}
	}
	t.Run("NextFrame", func(t *testing.T) {
		c, raw := tcpPair(t, false, connConfig{})
		var in []byte
		for _, n := range sizes {
			in = append(in, rawFrame(true, 0, OpBinary, true, bytes.Repeat([]byte{byte(n)}, n))...)
		}
		go func() {
			raw.Write(in)
			raw.Close()
		}()
		hs, ps, err := readFrames(c)
		if !errors.Is(err, io.EOF) {
			t.Errorf("final error = %v, want io.EOF", err)
		}
		if len(hs) != len(sizes) {
			t.Fatalf("got %d frames, want %d", len(hs), len(sizes))
		}
		for i, n := range sizes {
			if hs[i].Length != int64(n) || !hs[i].Fin || hs[i].OpCode != OpBinary || !hs[i].Masked || hs[i].Mask != maskKey {
				t.Errorf("frame %d header %+v", i, hs[i])
			}
			if !bytes.Equal(ps[i], bytes.Repeat([]byte{byte(n)}, n)) {
				t.Errorf("frame %d: payload of %d bytes differs", i, len(ps[i]))
			}
		}
	})
}

// TestValidUTF8Fragmented: valid text split at every byte across fragments is accepted.
func TestValidUTF8Fragmented(t *testing.T) {
	text := "κόσμε 😀 \u07ff\u0800\uffff\U00010000\U0010ffff ascii"
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			c, raw := tr.pair(t, false, connConfig{})
			var in []byte
			for i := 0; i <= len(text); i++ {
				in = append(in, clientFrag(false, OpText, text[:i])...)
				in = append(in, clientFrame(OpPing, "")...)
				in = append(in, clientFrag(true, OpContinuation, text[i:])...)
			}
			go func() {
				raw.Write(in)
				// Drain the pongs so that net.Pipe writes do not block.
				io.Copy(io.Discard, raw)
			}()
			for i := 0; i <= len(text); i++ {
				op, p, err := c.readMessage()
				if err != nil {
					t.Fatalf("split at %d: %v", i, err)
				}
				if op != OpText || string(p) != text {
					t.Fatalf("split at %d: %v %q", i, op, p)
				}
			}
		})
	}
}

// TestControlFramesBetweenFragments: a ping between fragments is answered with a
// pong on the wire while ReadMessage still returns the whole message; pongs are ignored.
func TestControlFramesBetweenFragments(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			c, raw := tr.pair(t, false, connConfig{})
			var pongs [][]byte
			c.SetPongHandler(func(p []byte) error { pongs = append(pongs, append([]byte(nil), p...)); return nil })
			go raw.Write(concat(
				clientFrag(false, OpText, "Hello, "),
				clientFrame(OpPing, "ping-1"),
				clientFrag(false, OpContinuation, "wor"),
				clientFrame(OpPong, "unsolicited"),
				clientFrame(OpPing, ""),
				clientFrag(true, OpContinuation, "ld"),
			))
			res := make(chan readMsg, 1)
			errc := async(func() error {
				op, p, err := c.readMessage()
				res <- readMsg{op, p}
				return err
			})
			for _, want := range []string{"ping-1", ""} {
				_ = raw.SetReadDeadline(time.Now().Add(2 * time.Second))
				h, p, err := readRawFrame(raw)
				if err != nil {
					t.Fatal(err)
				}
				if h.OpCode != OpPong || !h.Fin || h.Masked || string(p) != want {
					t.Errorf("got %+v %q, want an unmasked pong %q", h, p, want)
				}
			}
			if err := waitErr(t, errc, 2*time.Second, "ReadMessage"); err != nil {
				t.Fatal(err)
			}
			if m := <-res; m.op != OpText || string(m.p) != "Hello, world" {
				t.Errorf("readMsg = %v %q", m.op, m.p)
			}
			if len(pongs) != 1 || string(pongs[0]) != "unsolicited" {
				t.Errorf("pong handler saw %q", pongs)
			}
		})
	}
}

// TestFrameLevelControlFrames: NextFrame returns control frames (after answering
// pings) and their payload through ReadPayload.
func TestFrameLevelControlFrames(t *testing.T) {
	c, raw := tcpPair(t, false, connConfig{})
	go raw.Write(concat(clientFrag(false, OpBinary, "ab"), clientFrame(OpPing, "hey"), clientFrag(true, OpContinuation, "cd")))
	var got []string
	for i := 0; i < 3; i++ {
		h, err := c.nextFrame()
		if err != nil {
			t.Fatal(err)
		}
		p, err := io.ReadAll(payloadReader{c})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%v:%v:%s", h.OpCode, h.Fin, p))
	}
	if want := "binary:false:ab ping:true:hey continuation:true:cd"; strings.Join(got, " ") != want {
		t.Errorf("frames = %q, want %q", strings.Join(got, " "), want)
	}
	_ = raw.SetReadDeadline(time.Now().Add(2 * time.Second))
	h, p, err := readRawFrame(raw)
	if err != nil || h.OpCode != OpPong || string(p) != "hey" {
		t.Errorf("peer got %+v %q %v, want pong \"hey\"", h, p, err)
	}
}

// TestEOFMidFrame: the connection ending inside a frame (header or payload) is
// ErrIncompleteFrame; ending at a frame boundary is io.EOF.
func TestEOFMidFrame(t *testing.T) {
	whole := clientFrame(OpBinary, "0123456789")
	ctrl := clientFrame(OpPing, "0123456789")
	long := rawFrame(true, 0, OpBinary, true, make([]byte, 300))
	cases := []struct {
		name  string
		input []byte
	}{
		{"Header1of6", whole[:1]},
		{"Header3of6", whole[:3]},
		{"Header16Ext", long[:3]},
		{"Payload", whole[:9]},
		{"PayloadAfterHeader", whole[:6]},
		{"ControlPayload", ctrl[:8]},
		{"SecondFrame", concat(whole, whole[:8])},
		{"Fragment", concat(clientFrag(false, OpText, "ab"), clientFrag(true, OpContinuation, "cd")[:7])},
		{"LongPayload", long[:200]},
	}
	for _, tr := range transports {
		for _, mode := range readModes {
			for _, tc := range cases {
				t.Run(tr.name+"/"+mode.name+"/"+tc.name, func(t *testing.T) {
					t.Parallel()
					c, raw := tr.pair(t, false, connConfig{})
					go func() {
						raw.Write(tc.input)
						raw.Close()
					}()
					err := waitErr(t, async(func() error { return mode.read(c) }), 3*time.Second, "read")
					if !errors.Is(err, ErrIncompleteFrame) {
						t.Fatalf("error = %v, want ErrIncompleteFrame", err)
					}
					if !errors.Is(err, io.ErrUnexpectedEOF) {
						t.Errorf("error = %v, want it to wrap io.ErrUnexpectedEOF", err)
					}
					var fe *FailError
					if errors.As(err, &fe) {
						t.Errorf("EOF reported as a failure: %v", err)
					}
				})
			}
		}
	}
}

func TestEOFAtFrameBoundary(t *testing.T) {
	inputs := []struct {
		input []byte
		pings int
	}{
		{nil, 0},
		{clientFrame(OpText, "abc"), 0},
		{concat(clientFrame(OpBinary, ""), clientFrame(OpPing, "x"), clientFrame(OpText, "d")), 1},
	}
	for _, tr := range transports {
		for _, mode := range readModes {
			for _, in := range inputs {
				t.Run(fmt.Sprintf("%s/%s/%d", tr.name, mode.name, len(in.input)), func(t *testing.T) {
					c, raw := tr.pair(t, false, connConfig{})
					go func() {
						raw.Write(in.input)
						if tcp, ok := raw.(interface{ CloseWrite() error }); ok {
							tcp.CloseWrite()
							io.Copy(io.Discard, raw)
							return
						}
						// net.Pipe has no half close: take the pongs, then close.
						for i := 0; i < in.pings; i++ {
							readRawFrame(raw)
						}
						raw.Close()
					}()
					err := waitErr(t, async(func() error { return mode.read(c) }), 3*time.Second, "read")
					if !errors.Is(err, io.EOF) {
						t.Fatalf("error = %v, want io.EOF", err)
					}
					if errors.Is(err, ErrIncompleteFrame) {
						t.Errorf("error = %v: a clean EOF reported as incomplete", err)
					}
				})
			}
		}
	}
}

// TestEOFBetweenFragmentsIsIncomplete checks that a connection ending between
// the fragments of a message is reported as an incomplete message, not io.EOF.
func TestEOFBetweenFragmentsIsIncomplete(t *testing.T) {
	a, s := rawTCPPair(t)
	server := newConn(s, nil, false, connConfig{})
	defer server.CloseNow()
	key := [4]byte{1, 2, 3, 4}
	p := []byte("part")
	Mask(key, 0, p)
	frame := append(AppendHeader(nil, Header{OpCode: OpText, Masked: true, Mask: key, Length: 4}), p...)
	a.Write(frame)
	a.Close()
	_, _, err := server.readMessage()
	if !errors.Is(err, ErrIncompleteFrame) || errors.Is(err, io.EOF) {
		t.Fatalf("got %v, want ErrIncompleteFrame (and not io.EOF)", err)
	}
}
