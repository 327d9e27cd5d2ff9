package wsmw

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzParseHeader: ReadHeader never panics on arbitrary bytes, and a header it
// accepts re-encodes (AppendHeader, shortest form) to exactly the bytes it read.
func FuzzParseHeader(f *testing.F) {
	for _, h := range []Header{
		{Fin: true, OpCode: OpText, Length: 5},
		{Fin: true, OpCode: OpBinary, Masked: true, Mask: maskKey, Length: 126},
		{OpCode: OpContinuation, Length: 65535},
		{Fin: true, Rsv: RSV1, OpCode: OpBinary, Length: 65536},
		{Fin: true, OpCode: OpPing, Masked: true, Length: 1<<63 - 1},
	} {
		f.Add(append(AppendHeader(nil, h), "payload"...))
	}
	f.Add([]byte{})
	f.Add([]byte{0x81})
	f.Add([]byte{0x82, 126, 0, 5})
	f.Add([]byte{0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		h, err := ReadHeader(r)
		n := len(data) - r.Len()
		if err != nil {
			if !errors.Is(err, ErrProtocol) && err != io.EOF && err != io.ErrUnexpectedEOF {
				t.Fatalf("ReadHeader(%x): unexpected error %v", data, err)
			}
			return
		}
		if n > MaxHeaderSize || h.Size() != n || h.Length < 0 {
			t.Fatalf("ReadHeader(%x) = %+v after %d bytes", data, h, n)
		}
		if enc := AppendHeader(nil, h); !bytes.Equal(enc, data[:n]) {
			t.Fatalf("ReadHeader(%x) = %+v, which encodes to %x", data[:n], h, enc)
		}
		if !h.Masked && h.Mask != [4]byte{} {
			t.Fatalf("unmasked header with a mask key: %+v", h)
		}
	})
}

const (
	fuzzMaxFrame   = 2000
	fuzzMaxMessage = 5000
)

// Flags of FuzzReadFrames.
const (
	fuzzClient    = 1 << iota // the Conn is a client: it expects unmasked frames
	fuzzRSV1                  // RSV1 is negotiated
	fuzzFrameMode             // read with NextFrame/ReadPayload instead of ReadMessage
	fuzzChunked               // the connection returns a few bytes per Read
)

// FuzzReadFrames feeds arbitrary bytes to a Conn. Reading must neither panic nor
// hang and must end with an error of a known kind; what it returns must obey the
// limits and (for uncompressed text) be valid UTF-8; what it writes back must be
// well-formed frames, with at most one close frame, last, carrying a valid code.
func FuzzReadFrames(f *testing.F) {
	for _, seed := range [][]byte{
		clientFrame(OpText, "hello"),
		concat(clientFrag(false, OpText, "κό"), clientFrame(OpPing, "p"), clientFrag(true, OpContinuation, "σμε")),
		concat(clientFrame(OpBinary, strings.Repeat("b", 300)), clientFrame(OpClose, closeBody(1000, "bye"))),
		clientFrame(OpText, "\xce"),
		clientFrame(OpClose, "\x03"),
		rawHeader(0x82, 126, u16(5000)),
		rawFrame(true, RSV1, OpText, true, []byte("\xff")),
		rawFrame(true, 0, OpText, false, []byte("server text")),
	} {
		for flags := byte(0); flags < 16; flags += 5 {
			f.Add(seed, flags)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, flags byte) {
		client := flags&fuzzClient != 0
		mc := &memConn{r: bytes.NewReader(data), out: new(bytes.Buffer)}
		if flags&fuzzChunked != 0 {
			mc.chunk = 1 + int(flags>>4)
		}
		cfg := connConfig{maxFrame: fuzzMaxFrame, maxMessage: fuzzMaxMessage, closeTimeout: 10 * time.Millisecond}
		if flags&fuzzRSV1 != 0 {
			cfg.rsvAllowed = RSV1
		}
		c := newConn(mc, nil, client, cfg)

		var err error
		if flags&fuzzFrameMode != 0 {
			err = fuzzReadFrames(t, c, len(data))
		} else {
			err = fuzzReadMessages(t, c, len(data))
		}

		var fe *FailError
		var ce *CloseError
		switch {
		case errors.As(err, &fe):
			switch {
			case fe.Code == StatusProtocolError && errors.Is(err, ErrProtocol):
			case fe.Code == StatusInvalidPayload && errors.Is(err, ErrInvalidUTF8):
			case fe.Code == StatusMessageTooBig && errors.Is(err, ErrPayloadTooBig):
			default:
				t.Fatalf("unexpected failure %v", err)
			}
		case errors.As(err, &ce):
			if !ce.Code.ValidOnWire() && ce.Code != StatusNoStatusRcvd {
				t.Fatalf("close with invalid code accepted: %v", err)
			}
		case errors.Is(err, io.EOF), errors.Is(err, ErrIncompleteFrame):
		default:
			t.Fatalf("unexpected error %v (%T)", err, err)
		}

		// A failed connection waits for the peer's close in the background, then closes.
		if ch := c.drained(); fe != nil && ch != nil {
			select {
			case <-ch:
			case <-time.After(5 * time.Second):
				t.Fatal("a failed connection did not end its wait for the peer's close")
			}
		}

		// What the Conn wrote: pongs and at most one close frame, last.
		out := bytes.NewReader(mc.out.Bytes())
		var lastClose *StatusCode
		for out.Len() > 0 {
			if lastClose != nil {
				t.Fatalf("frames written after the close frame")
			}
			h, err := ReadHeader(out)
			if err != nil {
				t.Fatalf("Conn wrote an unparsable frame: %v", err)
			}
			if h.Masked != client || h.Rsv != 0 || !h.Fin || h.Length > 125 || int64(out.Len()) < h.Length {
				t.Fatalf("Conn wrote a bad frame %+v", h)
			}
			p := make([]byte, h.Length)
			out.Read(p)
			if h.Masked {
				Mask(h.Mask, 0, p)
			}
			switch h.OpCode {
			case OpPong:
			case OpClose:
				code, _, err := ParseClosePayload(p)
				if err != nil {
					t.Fatalf("Conn wrote an invalid close payload %x: %v", p, err)
				}
				lastClose = &code
			default:
				t.Fatalf("Conn wrote a %v frame", h.OpCode)
			}
		}
		if fe != nil && (lastClose == nil || *lastClose != fe.Code) {
			t.Fatalf("failed with %v but wrote close %v", fe.Code, lastClose)
		}
		if ce != nil && flags&fuzzFrameMode == 0 && (lastClose == nil || *lastClose != ce.Code) {
			t.Fatalf("peer closed with %v but the echo was %v", ce.Code, lastClose)
		}
		if !mc.closed && (fe != nil || (ce != nil && flags&fuzzFrameMode == 0)) {
			t.Fatal("connection left open after a failure or a close")
		}
	})
}

func fuzzReadMessages(t *testing.T, c *Conn, n int) error {
	compressed := c.rsvAllowed&RSV1 != 0
	for i := 0; ; i++ {
		if i > n {
			t.Fatalf("%d messages from %d bytes", i, n)
		}
		op, p, err := c.readMessage()
		if err != nil {
			return err
		}
		if !op.IsData() || len(p) > fuzzMaxMessage {
			t.Fatalf("ReadMessage returned %v with %d bytes", op, len(p))
		}
		if op == OpText && !compressed && !utf8.Valid(p) {
			t.Fatalf("invalid UTF-8 text message %q", p)
		}
	}
}

func fuzzReadFrames(t *testing.T, c *Conn, n int) error {
	var msg []byte
	var msgOp OpCode
	compressed, skipped := false, false
	buf := make([]byte, 7)
	for i := 0; ; i++ {
		if i > n {
			t.Fatalf("%d frames from %d bytes", i, n)
		}
		h, err := c.nextFrame()
		if err != nil {
			return err
		}
		if h.Masked == c.client || h.Length > fuzzMaxFrame || !h.OpCode.valid() || h.Rsv&^c.rsvAllowed != 0 {
			t.Fatalf("NextFrame returned a frame that breaks the rules: %+v", h)
		}
		if h.OpCode.IsControl() && (h.Length > 125 || !h.Fin || h.Rsv != 0) {
			t.Fatalf("NextFrame returned a bad control frame %+v", h)
		}
		if !h.OpCode.IsControl() && h.OpCode != OpContinuation {
			msgOp, msg, compressed, skipped = h.OpCode, msg[:0], h.Rsv&RSV1 != 0, false
		}
		// Read the payload in small pieces, or now and then leave it for NextFrame to skip.
		if i%3 == 2 && !h.OpCode.IsControl() {
			skipped = true
			continue
		}
		var p []byte
		for {
			k, err := c.readPayload(buf)
			p = append(p, buf[:k]...)
			if err == io.EOF {
				break
			}
			if err != nil {
				return err
			}
		}
		if int64(len(p)) != h.Length {
			t.Fatalf("read %d payload bytes of %d", len(p), h.Length)
		}
		if h.OpCode.IsControl() {
			continue
		}
		msg = append(msg, p...)
		if len(msg) > fuzzMaxMessage {
			t.Fatalf("message of %d bytes", len(msg))
		}
		if h.Fin && !skipped && msgOp == OpText && !compressed && !utf8.Valid(msg) {
			t.Fatalf("invalid UTF-8 text message %q", msg)
		}
	}
}

// FuzzUTF8: the incremental validator agrees with unicode/utf8, whole and fed in
// two parts, and rejects the first part exactly when it can no longer become valid.
func FuzzUTF8(f *testing.F) {
	for _, s := range utf8Cases {
		f.Add([]byte(s), uint(len(s)/2))
	}
	f.Fuzz(func(t *testing.T, data []byte, split uint) {
		want := utf8.Valid(data)
		if got := validUTF8(data); got != want {
			t.Fatalf("validUTF8(%q) = %v, utf8.Valid = %v", data, got, want)
		}
		k := int(split % uint(len(data)+1))
		var v utf8Validator
		ok1 := v.write(data[:k])
		if ok1 != completable(data[:k]) {
			t.Fatalf("write(%q) = %v, completable = %v", data[:k], ok1, !ok1)
		}
		got := ok1 && v.write(data[k:]) && v.complete()
		if got != want {
			t.Fatalf("validator on %q | %q = %v, utf8.Valid = %v", data[:k], data[k:], got, want)
		}
	})
}

// FuzzClosePayload: ParseClosePayload never panics and accepts only valid codes
// and UTF-8 reasons, which AppendClosePayload reproduces; AppendClosePayload
// always writes a body that parses, within the control frame limit.
func FuzzClosePayload(f *testing.F) {
	f.Add([]byte{}, uint16(1000), "")
	f.Add([]byte{0x03}, uint16(1005), "x")
	f.Add([]byte(closeBody(1000, "bye")), uint16(4999), strings.Repeat("é", 70))
	f.Add([]byte(closeBody(1005, "")), uint16(999), "reason")
	f.Add([]byte(closeBody(3000, "\xff")), uint16(3000), "bad \xff reason")
	f.Fuzz(func(t *testing.T, data []byte, code uint16, reason string) {
		c, r, err := ParseClosePayload(data)
		if err == nil {
			switch {
			case len(data) == 0:
				if c != StatusNoStatusRcvd || r != "" {
					t.Fatalf("empty body parsed as %v %q", c, r)
				}
			case !c.ValidOnWire() || !utf8.ValidString(r) || len(data) > 125:
				t.Fatalf("ParseClosePayload(%x) accepted %v %q", data, c, r)
			default:
				if enc := AppendClosePayload(nil, c, r); !bytes.Equal(enc, data) {
					t.Fatalf("ParseClosePayload(%x) = %v %q, which encodes to %x", data, c, r, enc)
				}
			}
		} else if !errors.Is(err, ErrProtocol) {
			t.Fatalf("ParseClosePayload(%x): unexpected error %v", data, err)
		}

		sc := StatusCode(code)
		body := AppendClosePayload(nil, sc, reason)
		if !sc.ValidOnWire() {
			if len(body) != 0 {
				t.Fatalf("AppendClosePayload(%v) = %x, want an empty body", sc, body)
			}
			return
		}
		if len(body) > 125 {
			t.Fatalf("AppendClosePayload wrote %d bytes", len(body))
		}
		c, r, err = ParseClosePayload(body)
		if err != nil || c != sc {
			t.Fatalf("AppendClosePayload(%v, %q) = %x, which parses as %v %q %v", sc, reason, body, c, r, err)
		}
		if !strings.HasPrefix(strings.ToValidUTF8(reason, "\uFFFD"), r) {
			t.Fatalf("AppendClosePayload(%v, %q): reason became %q", sc, reason, r)
		}
		if len(reason) <= 123 && utf8.ValidString(reason) && r != reason {
			t.Fatalf("AppendClosePayload(%v, %q): short reason changed to %q", sc, reason, r)
		}
	})
}
