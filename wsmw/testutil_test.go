package wsmw

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// maskKey is the masking key the raw test peers use for the frames they build.
var maskKey = [4]byte{0x37, 0xfa, 0x21, 0x3d}

// tcpPair returns a Conn in the given role over one end of a loopback TCP
// connection and the raw other end. Both are closed when the test ends.
func tcpPair(t testing.TB, client bool, cfg connConfig) (*Conn, net.Conn) {
	t.Helper()
	raw, nc := rawTCPPair(t)
	c := newConn(nc, nil, client, cfg)
	t.Cleanup(func() {
		c.CloseNow()
		raw.Close()
	})
	if c.rc == nil {
		t.Fatal("TCP conn did not get the readiness read path")
	}
	return c, raw
}

// rawTCPPair returns both ends of a loopback TCP connection: the dialing one first.
func rawTCPPair(tb testing.TB) (net.Conn, net.Conn) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
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
		tb.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		raw.Close()
		tb.Fatal(r.err)
	}
	return raw, r.nc
}

// pipePair is tcpPair over net.Pipe: the Conn uses the plain Read fallback path.
func pipePair(t testing.TB, client bool, cfg connConfig) (*Conn, net.Conn) {
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

// transport is a connection kind: pair returns a Conn over it and the raw other end.
type transport struct {
	name string
	pair func(testing.TB, bool, connConfig) (*Conn, net.Conn)
}

// transports lists the two connection kinds, so tests can run over both.
var transports = []transport{
	{"tcp", tcpPair},
	{"pipe", pipePair},
}

// eachTransportTwice runs f as subtests over each transport, with flag false
// (subtest "<transport>/<off>") and true ("<transport>/<on>").
func eachTransportTwice(t *testing.T, off, on string, f func(t *testing.T, tr transport, flag bool)) {
	for _, tr := range transports {
		for _, flag := range []bool{false, true} {
			name := tr.name + "/" + off
			if flag {
				name = tr.name + "/" + on
			}
			t.Run(name, func(t *testing.T) { f(t, tr, flag) })
		}
	}
}

// rawFrame builds one raw frame. masked selects client-style masking with maskKey.
func rawFrame(fin bool, rsv byte, op OpCode, masked bool, payload []byte) []byte {
	return encodeFrame(Header{Fin: fin, Rsv: rsv, OpCode: op, Masked: masked, Mask: maskKey}, payload)
}

// keyedFrame is a client frame masked with key.
func keyedFrame(key [4]byte, fin bool, op OpCode, payload []byte) []byte {
	return encodeFrame(Header{Fin: fin, OpCode: op, Masked: true, Mask: key}, payload)
}

// encodeFrame encodes h (its Length set to the payload's) and payload, masked
// with h.Mask when h.Masked.
func encodeFrame(h Header, payload []byte) []byte {
	h.Length = int64(len(payload))
	b := AppendHeader(nil, h)
	n := len(b)
	b = append(b, payload...)
	if h.Masked {
		Mask(h.Mask, 0, b[n:])
	}
	return b
}

// clientFrame is a complete masked frame, as a client sends it.
func clientFrame(op OpCode, payload string) []byte {
	return rawFrame(true, 0, op, true, []byte(payload))
}

// clientFrag is a masked frame with an explicit FIN bit.
func clientFrag(fin bool, op OpCode, payload string) []byte {
	return rawFrame(fin, 0, op, true, []byte(payload))
}

// closeBody is a close frame body for code and reason (no validation).
func closeBody(code int, reason string) string {
	return string([]byte{byte(code >> 8), byte(code)}) + reason
}

func concat(frames ...[]byte) []byte { return bytes.Join(frames, nil) }

// readRawFrame reads one frame from a raw peer connection and returns its header and
// unmasked payload.
func readRawFrame(nc net.Conn) (Header, []byte, error) {
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

// readFrame reads one frame from a raw peer within 5 s, failing the test on an error.
func readFrame(t *testing.T, c net.Conn) (Header, []byte) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	h, p, err := readRawFrame(c)
	if err != nil {
		t.Fatalf("reading a frame: %v", err)
	}
	return h, p
}

// expectClose reads frames from the raw peer until a close frame, skipping pongs,
// and returns the close frame's code and reason as parsed by ParseClosePayload,
// plus the raw payload.
func expectClose(t testing.TB, nc net.Conn, timeout time.Duration) (StatusCode, string, []byte) {
	t.Helper()
	_ = nc.SetReadDeadline(time.Now().Add(timeout))
	defer nc.SetReadDeadline(time.Time{})
	for {
		h, p, err := readRawFrame(nc)
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

// readFrames reads everything a frame-level reader returns until an error.
func readFrames(c *Conn) (frames []Header, payloads [][]byte, err error) {
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

type readMsg struct {
	op OpCode
	p  []byte
}

// readMessages reads messages with ReadMessage until an error.
func readMessages(c *Conn) ([]readMsg, error) {
	var msgs []readMsg
	for {
		op, p, err := c.readMessage()
		if err != nil {
			return msgs, err
		}
		msgs = append(msgs, readMsg{op, p})
	}
}

// readModes lists the two reading levels: frame-level and message-level.
var readModes = []struct {
	name string
	read func(*Conn) error
}{
	{"NextFrame", func(c *Conn) error { _, _, err := readFrames(c); return err }},
	{"ReadMessage", func(c *Conn) error { _, err := readMessages(c); return err }},
}

// async runs f in a goroutine and returns a channel with its error.
func async(f func() error) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- f() }()
	return ch
}

// waitErr returns the value from ch or fails the test after timeout.
func waitErr(t testing.TB, ch <-chan error, timeout time.Duration, what string) error {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case err := <-ch:
		return err
	case <-timer.C:
	}
	t.Fatalf("%s did not return within %v", what, timeout)
	return nil
}

// checkFail asserts that err is a *FailError with code whose cause matches sentinel.
func checkFail(t testing.TB, err error, code StatusCode, sentinel error) {
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

// closeReply is the close frame the raw peer answers with: masked when the
// peer plays the client (the Conn is a server).
func closeReply(connIsClient bool, code StatusCode) []byte {
	return rawFrame(true, 0, OpClose, !connIsClient, AppendClosePayload(nil, code, ""))
}

// readMessage reads the next whole message into a new slice.
func (c *Conn) readMessage() (OpCode, []byte, error) { return c.appendMessage(nil) }

// memConn is an in-memory net.Conn: reads come from r (at most chunk bytes per
// Read when chunk > 0), writes go to out (dropped when it is nil). After Close,
// reads and writes fail.
type memConn struct {
	r      io.Reader
	chunk  int
	out    *bytes.Buffer
	closed bool
}

type memAddr struct{}

func (memAddr) Network() string { return "mem" }
func (memAddr) String() string  { return "mem" }

func (c *memConn) Read(p []byte) (int, error) {
	if c.closed {
		return 0, net.ErrClosed
	}
	if c.chunk > 0 && len(p) > c.chunk {
		p = p[:c.chunk]
	}
	return c.r.Read(p)
}

func (c *memConn) Write(p []byte) (int, error) {
	switch {
	case c.closed:
		return 0, net.ErrClosed
	case c.out == nil:
		return len(p), nil
	}
	return c.out.Write(p)
}

func (c *memConn) Close() error                     { c.closed = true; return nil }
func (c *memConn) LocalAddr() net.Addr              { return memAddr{} }
func (c *memConn) RemoteAddr() net.Addr             { return memAddr{} }
func (c *memConn) SetDeadline(time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }
