package wsmw

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// wtKey is the masking key the raw test peers use for the frames they build.
var wtKey = [4]byte{0x37, 0xfa, 0x21, 0x3d}

// wtTCPPair returns a Conn in the given role over one end of a loopback TCP
// connection and the raw other end. Both are closed when the test ends.
func wtTCPPair(t testing.TB, client bool, cfg connConfig) (*Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		nc  net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		nc, err := ln.Accept()
		ch <- res{nc, err}
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		raw.Close()
		t.Fatal(r.err)
	}
	c := newConn(r.nc, nil, client, cfg)
	t.Cleanup(func() {
		c.CloseNow()
		raw.Close()
	})
	if c.rc == nil {
		t.Fatal("TCP conn did not get the readiness read path")
	}
	return c, raw
}

// wtPipePair is wtTCPPair over net.Pipe: the Conn uses the plain Read fallback path.
func wtPipePair(t testing.TB, client bool, cfg connConfig) (*Conn, net.Conn) {
	t.Helper()
	a, b := net.Pipe()
	c := newConn(a, nil, client, cfg)
	t.Cleanup(func() {
		c.CloseNow()
		b.Close()
	})
	if c.rc != nil {
		t.Fatal("pipe conn got the readiness read path")
	}
	return c, b
}

// wtTransports lists the two connection kinds, so tests can run over both.
var wtTransports = []struct {
	name string
	pair func(testing.TB, bool, connConfig) (*Conn, net.Conn)
}{
	{"tcp", wtTCPPair},
	{"pipe", wtPipePair},
}

// frame builds one raw frame. masked selects client-style masking with wtKey.
func wtFrame(fin bool, rsv byte, op OpCode, masked bool, payload []byte) []byte {
	h := Header{Fin: fin, Rsv: rsv, OpCode: op, Masked: masked, Length: int64(len(payload))}
	if masked {
		h.Mask = wtKey
	}
	b := AppendHeader(nil, h)
	n := len(b)
	b = append(b, payload...)
	if masked {
		Mask(wtKey, 0, b[n:])
	}
	return b
}

// cf is a complete masked frame, as a client sends it.
func wtCF(op OpCode, payload string) []byte { return wtFrame(true, 0, op, true, []byte(payload)) }

// cfrag is a masked frame with an explicit FIN bit.
func wtFrag(fin bool, op OpCode, payload string) []byte {
	return wtFrame(fin, 0, op, true, []byte(payload))
}

// closeBody is a close frame body for code and reason (no validation).
func wtCloseBody(code int, reason string) string {
	return string([]byte{byte(code >> 8), byte(code)}) + reason
}

func wtCat(frames ...[]byte) []byte { return bytes.Join(frames, nil) }

// wtReadFrame reads one frame from a raw peer connection and returns its header and
// unmasked payload.
func wtReadFrame(nc net.Conn) (Header, []byte, error) {
	h, err := ReadHeader(nc)
	if err != nil {
		return h, nil, err
	}
	p := make([]byte, h.Length)
	if _, err := io.ReadFull(nc, p); err != nil {
		return h, nil, err
	}
	if h.Masked {
		Mask(h.Mask, 0, p)
	}
	return h, p, nil
}

// wtExpectClose reads frames from the raw peer until a close frame, skipping pongs,
// and returns the close frame's code and reason as parsed by ParseClosePayload,
// plus the raw payload.
func wtExpectClose(t testing.TB, nc net.Conn, timeout time.Duration) (StatusCode, string, []byte) {
	t.Helper()
	_ = nc.SetReadDeadline(time.Now().Add(timeout))
	defer nc.SetReadDeadline(time.Time{})
	for {
		h, p, err := wtReadFrame(nc)
		if err != nil {
			t.Fatalf("peer: reading the close frame: %v", err)
		}
		switch h.OpCode {
		case OpPong, OpPing:
			continue
		case OpClose:
			if !h.Fin || h.Rsv != 0 {
				t.Fatalf("peer: malformed close frame header %+v", h)
			}
			code, reason, err := ParseClosePayload(p)
			if err != nil {
				t.Fatalf("peer: close payload %x does not parse: %v", p, err)
			}
			return code, reason, p
		default:
			t.Fatalf("peer: got %v frame while waiting for close", h.OpCode)
		}
	}
}

// readAll reads everything a frame-level reader returns until an error.
func wtReadFrames(c *Conn) (frames []Header, payloads [][]byte, err error) {
	for {
		h, err := c.nextFrame()
		if err != nil {
			return frames, payloads, err
		}
		p, err := io.ReadAll(payloadReader{c})
		frames = append(frames, h)
		payloads = append(payloads, p)
		if err != nil {
			return frames, payloads, err
		}
	}
}

type wtMessage struct {
	op OpCode
	p  []byte
}

// wtReadMessages reads messages with ReadMessage until an error.
func wtReadMessages(c *Conn) ([]wtMessage, error) {
	var msgs []wtMessage
	for {
		op, p, err := c.readMessage()
		if err != nil {
			return msgs, err
		}
		msgs = append(msgs, wtMessage{op, p})
	}
}

// wtReadModes lists the two reading levels: frame-level and message-level.
var wtReadModes = []struct {
	name string
	read func(*Conn) error
}{
	{"NextFrame", func(c *Conn) error { _, _, err := wtReadFrames(c); return err }},
	{"ReadMessage", func(c *Conn) error { _, err := wtReadMessages(c); return err }},
}

// async runs f in a goroutine and returns a channel with its error.
func wtAsync(f func() error) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- f() }()
	return ch
}

// wait returns the value from ch or fails the test after timeout.
func wtWait(t testing.TB, ch <-chan error, timeout time.Duration, what string) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(timeout):
		t.Fatalf("%s did not return within %v", what, timeout)
		return nil
	}
}

// wtCheckFail asserts that err is a *FailError with code whose cause matches sentinel.
func wtCheckFail(t testing.TB, err error, code StatusCode, sentinel error) {
	t.Helper()
	var fe *FailError
	if !errors.As(err, &fe) {
		t.Fatalf("error %v (%T) is not a *FailError", err, err)
	}
	if fe.Code != code {
		t.Errorf("FailError code = %v, want %v", fe.Code, code)
	}
	if !errors.Is(err, sentinel) {
		t.Errorf("error %v does not match %v", err, sentinel)
	}
	if CloseStatus(err) != code {
		t.Errorf("CloseStatus = %v, want %v", CloseStatus(err), code)
	}
}

// wtCloseReply is the close frame the raw peer answers with: masked when the
// peer plays the client (the Conn is a server).
func wtCloseReply(connIsClient bool, code StatusCode) []byte {
	return wtFrame(true, 0, OpClose, !connIsClient, AppendClosePayload(nil, code, ""))
}

// readMessage reads the next whole message into a new slice.
func (c *Conn) readMessage() (OpCode, []byte, error) { return c.appendMessage(nil) }
