package integration

// RFC 6455 conformance suite, driven with raw frames. The frames are built and
// parsed here (confAppendFrame, confReadFrame), not with wsmw, so that the suite
// stays independent of the implementation it checks. The cases are in
// conformance_cases_test.go, grouped like the Autobahn TestSuite; each runs
// against three targets:
//
//   - wsmw: a wsmw.Middleware echo server (message API) with 64 KiB limits;
//   - proxy: proxy.New (64 KiB limits) behind a chi router, in front of a
//     lenient upstream that echoes frames without checking anything, so every
//     violation must be caught by the proxy itself;
//   - caddy: Caddy with the ws handler in front of the same lenient upstream.
//
// The client sees the same thing from all three. For the two proxies the
// lenient upstream's record is checked too: a violating frame never reaches it,
// it receives 1001 when the client violated the protocol, the client's close
// code otherwise, and in healthy cases exactly the client's messages and pings.

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile" // the caddyfile adapter
	"github.com/caddyserver/certmagic"
	"github.com/go-chi/chi/v5"

	_ "github.com/wsgate/wsgate/caddymodule" // the ws directive
	"github.com/wsgate/wsgate/proxy"
	"github.com/wsgate/wsgate/wsmw"
)

// Opcodes, as bytes: the suite does not use wsmw's types on the wire.
const (
	confOpCont   byte = 0x0
	confOpText   byte = 0x1
	confOpBinary byte = 0x2
	confOpClose  byte = 0x8
	confOpPing   byte = 0x9
	confOpPong   byte = 0xA

	confRSV1 byte = 0x40
	confRSV2 byte = 0x20
	confRSV3 byte = 0x10

	// confEmptyClose stands for a close frame with an empty body (1005 is never on the wire).
	confEmptyClose = 1005
	// confNoClose stands for a connection that ended without a close frame.
	confNoClose = 1006

	// confLimit is MaxFrameSize and MaxMessageSize of every target.
	confLimit = 64 << 10

	confGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
)

// confFrame is one frame as seen on the wire.
type confFrame struct {
	fin     bool
	rsv     byte // RSV bits in their wire positions
	op      byte
	masked  bool
	payload []byte
}

func (f confFrame) String() string {
	p := f.payload
	suffix := ""
	if len(p) > 24 {
		p, suffix = p[:24], fmt.Sprintf("...(%d bytes)", len(f.payload))
	}
	return fmt.Sprintf("{fin=%v rsv=%#x op=%d masked=%v %q%s}", f.fin, f.rsv, f.op, f.masked, p, suffix)
}

// confAppendHeader appends a frame header announcing length payload bytes,
// masked with key when key is non-nil.
func confAppendHeader(b []byte, fin bool, rsv, op byte, length int, key []byte) []byte {
	b0 := rsv | op
	if fin {
		b0 |= 0x80
	}
	var maskBit byte
	if key != nil {
		maskBit = 0x80
	}
	switch {
	case length <= 125:
		b = append(b, b0, maskBit|byte(length))
	case length <= 0xFFFF:
		b = append(b, b0, maskBit|126)
		b = binary.BigEndian.AppendUint16(b, uint16(length))
	default:
		b = append(b, b0, maskBit|127)
		b = binary.BigEndian.AppendUint64(b, uint64(length))
	}
	if key != nil {
		b = append(b, key...)
	}
	return b
}

// confAppendFrame appends f, masked with a fresh random key when mask is set.
func confAppendFrame(b []byte, f confFrame, mask bool) []byte {
	var key []byte
	if mask {
		key = make([]byte, 4)
		rand.Read(key)
	}
	b = confAppendHeader(b, f.fin, f.rsv, f.op, len(f.payload), key)
	start := len(b)
	b = append(b, f.payload...)
	if mask {
		for i := range b[start:] {
			b[start+i] ^= key[i%4]
		}
	}
	return b
}

var errConfTooBig = errors.New("conformance: frame larger than the reader's limit")

// confReadFrame reads one frame, unmasking its payload. Frames longer than max are refused.
func confReadFrame(br *bufio.Reader, max int64) (confFrame, error) {
	var h [2]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		return confFrame{}, err
	}
	f := confFrame{fin: h[0]&0x80 != 0, rsv: h[0] & 0x70, op: h[0] & 0x0F, masked: h[1]&0x80 != 0}
	n := uint64(h[1] & 0x7F)
	switch n {
	case 126:
		var e [2]byte
		if _, err := io.ReadFull(br, e[:]); err != nil {
			return f, err
		}
		n = uint64(binary.BigEndian.Uint16(e[:]))
	case 127:
		var e [8]byte
		if _, err := io.ReadFull(br, e[:]); err != nil {
			return f, err
		}
		n = binary.BigEndian.Uint64(e[:])
	}
	if n > uint64(max) {
		return f, fmt.Errorf("%w: %d bytes", errConfTooBig, n)
	}
	var key [4]byte
	if f.masked {
		if _, err := io.ReadFull(br, key[:]); err != nil {
			return f, err
		}
	}
	f.payload = make([]byte, n)
	if _, err := io.ReadFull(br, f.payload); err != nil {
		return f, err
	}
	if f.masked {
		for i := range f.payload {
			f.payload[i] ^= key[i%4]
		}
	}
	return f, nil
}

// confCloseCode decodes a close body: confEmptyClose for an empty body, -1 for a malformed (1-byte) one.
func confCloseCode(p []byte) int {
	switch len(p) {
	case 0:
		return confEmptyClose
	case 1:
		return -1
	}
	return int(binary.BigEndian.Uint16(p))
}

func confAcceptKey(key string) string {
	h := sha1.Sum([]byte(key + confGUID))
	return base64.StdEncoding.EncodeToString(h[:])
}

// confClient is a raw WebSocket client connection.
type confClient struct {
	nc net.Conn
	br *bufio.Reader
}

// confDial opens a connection to addr and performs the opening handshake by hand.
func confDial(addr, path string) (*confClient, error) {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	var k [16]byte
	rand.Read(k[:])
	key := base64.StdEncoding.EncodeToString(k[:])
	req := "GET " + path + " HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + key + "\r\nSec-WebSocket-Version: 13\r\n\r\n"
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(nc, req); err != nil {
		nc.Close()
		return nil, err
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		nc.Close()
		return nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		nc.Close()
		return nil, fmt.Errorf("handshake: status %s", resp.Status)
	}
	if got := resp.Header.Get("Sec-WebSocket-Accept"); got != confAcceptKey(key) {
		nc.Close()
		return nil, fmt.Errorf("handshake: bad Sec-WebSocket-Accept %q", got)
	}
	nc.SetDeadline(time.Time{})
	return &confClient{nc: nc, br: br}, nil
}

// write sends f masked, in chunks of chop bytes (all at once if chop is 0).
func (c *confClient) write(f confFrame, chop int) error {
	return c.writeRaw(confAppendFrame(nil, f, true), chop)
}

func (c *confClient) writeRaw(b []byte, chop int) error {
	c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if chop <= 0 {
		_, err := c.nc.Write(b)
		return err
	}
	for len(b) > 0 {
		n := min(chop, len(b))
		if _, err := c.nc.Write(b[:n]); err != nil {
			return err
		}
		b = b[n:]
		time.Sleep(time.Millisecond)
	}
	return nil
}

// read reads the next frame from the server, waiting at most d.
func (c *confClient) read(d time.Duration) (confFrame, error) {
	c.nc.SetReadDeadline(time.Now().Add(d))
	return confReadFrame(c.br, 1<<20)
}

// waitEOF waits up to d for the server to close the TCP connection, discarding what arrives.
func (c *confClient) waitEOF(d time.Duration) error {
	c.nc.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c.br)
	if err == nil {
		return nil // EOF
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("server did not close the TCP connection within %v", d)
	}
	return nil // reset: closed too
}

// ---------------------------------------------------------------------------
// The lenient upstream.

// confRawUpstream is a TCP server that performs the WebSocket handshake by hand
// and hands each connection to serve. Every connection is tracked and closed
// (and waited for) when the test ends.
type confRawUpstream struct {
	ln    net.Listener
	serve func(nc net.Conn, br *bufio.Reader, req *http.Request)

	accepted sync.WaitGroup
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	count    int
}

// confStartRaw starts a raw upstream. If handshake is false, serve gets the
// connection before anything was answered (to answer garbage); req is then nil.
func confStartRaw(t testing.TB, handshake bool, serve func(nc net.Conn, br *bufio.Reader, req *http.Request)) *confRawUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &confRawUpstream{ln: ln, serve: serve, conns: make(map[net.Conn]struct{})}
	u.accepted.Add(1)
	go func() {
		defer u.accepted.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			u.mu.Lock()
			u.conns[nc] = struct{}{}
			u.count++
			u.mu.Unlock()
			u.accepted.Add(1)
			go func() {
				defer u.accepted.Done()
				defer func() {
					nc.Close()
					u.mu.Lock()
					delete(u.conns, nc)
					u.mu.Unlock()
				}()
				br := bufio.NewReader(nc)
				if !handshake {
					serve(nc, br, nil)
					return
				}
				req, ok := confServerHandshake(nc, br)
				if ok {
					serve(nc, br, req)
				}
			}()
		}
	}()
	t.Cleanup(u.close)
	return u
}

func (u *confRawUpstream) addr() string { return u.ln.Addr().String() }

// connections returns how many connections the upstream accepted.
func (u *confRawUpstream) connections() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.count
}

func (u *confRawUpstream) close() {
	u.ln.Close()
	u.mu.Lock()
	for nc := range u.conns {
		nc.Close()
	}
	u.mu.Unlock()
	u.accepted.Wait()
}

// confServerHandshake reads the opening handshake and answers 101.
func confServerHandshake(nc net.Conn, br *bufio.Reader) (*http.Request, bool) {
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	req, err := http.ReadRequest(br)
	nc.SetReadDeadline(time.Time{})
	if err != nil {
		return nil, false
	}
	key := req.Header.Get("Sec-WebSocket-Key")
	resp := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Accept: " + confAcceptKey(key) + "\r\n\r\n"
	if _, err := io.WriteString(nc, resp); err != nil {
		return nil, false
	}
	return req, true
}

// confUpRecord is what the lenient upstream received on one connection.
type confUpRecord struct {
	mu        sync.Mutex
	frames    []confFrame
	closeCode int // confNoClose until a close frame arrives
	done      chan struct{}
}

func (r *confUpRecord) snapshot() ([]confFrame, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]confFrame(nil), r.frames...), r.closeCode
}

// confLenient is the lenient echo upstream: it echoes every data frame as it
// came (opcode, RSV bits, fragmentation; unmasked), answers pings with pongs,
// ignores pongs, echoes the close frame's body and closes. It checks nothing.
// What each connection received is recorded under its request path.
type confLenient struct {
	*confRawUpstream
	mu   sync.Mutex
	recs map[string]*confUpRecord
}

func confStartLenient(t testing.TB) *confLenient {
	l := &confLenient{recs: make(map[string]*confUpRecord)}
	l.confRawUpstream = confStartRaw(t, true, l.serve)
	return l
}

func (l *confLenient) record(path string) *confUpRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	r, ok := l.recs[path]
	if !ok {
		r = &confUpRecord{closeCode: confNoClose, done: make(chan struct{})}
		l.recs[path] = r
	}
	return r
}

func (l *confLenient) serve(nc net.Conn, br *bufio.Reader, req *http.Request) {
	rec := l.record(req.URL.Path)
	defer close(rec.done)
	for {
		f, err := confReadFrame(br, 64<<20)
		if err != nil {
			return
		}
		rec.mu.Lock()
		rec.frames = append(rec.frames, f)
		rec.mu.Unlock()
		var out confFrame
		switch f.op {
		case confOpPong:
			continue
		case confOpPing:
			out = confFrame{fin: true, op: confOpPong, payload: f.payload}
		default:
			out = confFrame{fin: f.fin, rsv: f.rsv, op: f.op, payload: f.payload}
		}
		nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := nc.Write(confAppendFrame(nil, out, false)); err != nil {
			return
		}
		if f.op == confOpClose {
			rec.mu.Lock()
			rec.closeCode = confCloseCode(f.payload)
			rec.mu.Unlock()
			return
		}
	}
}

// ---------------------------------------------------------------------------
// Targets.

// confTarget is a server the suite runs against.
type confTarget struct {
	name string
	addr string
	up   *confLenient // nil when the target is the echo server itself
	// dial, if set, opens the client's connection instead of confDial (a
	// WebSocket on an HTTP/2 or HTTP/3 stream: streams_test.go).
	dial func(path string) (*confClient, error)
}

// confEcho echoes each message with the message API: text as text, binary as binary.
func confEcho(c *wsmw.Conn, _ *http.Request) {
	for {
		op, p, err := c.Read(context.Background(), nil)
		if err != nil {
			return
		}
		if err := c.Write(context.Background(), op, p); err != nil {
			return
		}
	}
}

// confServe serves h on a fresh loopback listener until the test ends.
func confServe(t testing.TB, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return ln.Addr().String()
}

// confWsmwTarget is a wsmw echo server with 64 KiB limits.
func confWsmwTarget(t testing.TB) confTarget {
	cfg := &wsmw.ServerConfig{MaxFrameSize: confLimit, MaxMessageSize: confLimit, CloseTimeout: 2 * time.Second}
	h := wsmw.Middleware(confEcho, cfg)(http.NotFoundHandler())
	return confTarget{name: "wsmw", addr: confServe(t, h)}
}

// confProxyTarget is the proxy (64 KiB limits) on a chi router in front of a lenient upstream.
func confProxyTarget(t testing.TB) confTarget {
	up := confStartLenient(t)
	p, err := proxy.New(proxy.Config{
		Upstreams:      []string{"ws://" + up.addr()},
		MaxFrameSize:   confLimit,
		MaxMessageSize: confLimit,
		CloseTimeout:   2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	r := chi.NewRouter()
	r.Use(p.Middleware)
	r.Get("/*", http.NotFound)
	addr := confServe(t, r)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.Shutdown(ctx)
	})
	return confTarget{name: "proxy", addr: addr, up: up}
}

// ---------------------------------------------------------------------------
// Cases.

// confStep is one thing the client sends.
type confStep struct {
	f confFrame
	// raw, if set, is sent instead of f (masked frames built by hand, partial frames).
	raw []byte
	// chop sends the bytes in pieces of this size with a pause in between.
	chop int
	// bad marks the frame that violates the protocol: from it on, nothing the
	// client sends may reach the upstream.
	bad bool
	// dropped marks a frame that is not a violation but must be ignored (data
	// after the client's close): it must not reach the upstream either.
	dropped bool
	// waitClose: the server's close must have arrived before this step is sent
	// (fail fast); the step is then sent after it, to complete a partial frame.
	waitClose bool
	// pause before sending.
	pause time.Duration
}

// confMsg is an expected data message.
type confMsg struct {
	op      byte
	payload []byte
}

// confCase is one conformance case.
type confCase struct {
	group, name string
	steps       []confStep
	// msgs and pongs are the echoed messages and the pongs expected, each in order.
	// When the server closes (close != 0) they may be cut short by the close.
	msgs  []confMsg
	pongs [][]byte
	// close is the code of the server's close frame (confEmptyClose: empty body);
	// 0: the connection stays healthy, which the suite checks with a 1000 close handshake.
	close int
	// clientClosed: the client started the close handshake in its steps.
	clientClosed bool
	// abandon: the client is in the middle of a frame when the close arrives, so
	// it cannot answer with a close frame; it closes the TCP connection instead.
	abandon bool
	// upClose is the close code the upstream must receive (0: 1000 when healthy,
	// 1001 after a violation, close when the client closed).
	upClose int
}

// violation reports whether the case has a frame that violates the protocol.
func (c *confCase) violation() bool {
	for _, s := range c.steps {
		if s.bad {
			return true
		}
	}
	return false
}

// confRun runs one case against a target.
func confRun(t *testing.T, tg confTarget, cs *confCase, path string) {
	dial := func(path string) (*confClient, error) { return confDial(tg.addr, path) }
	if tg.dial != nil {
		dial = tg.dial
	}
	c, err := dial(path)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.nc.Close()

	var (
		msgs      []confMsg
		pongs     [][]byte
		partial   *confMsg // message being reassembled
		closeCode int      // 0 until the server's close arrives
	)
	// next reads one frame and files it; it reports the server's close.
	next := func(d time.Duration) error {
		f, err := c.read(d)
		if err != nil {
			return err
		}
		if f.masked {
			return fmt.Errorf("server sent a masked frame %v", f)
		}
		if f.rsv != 0 {
			return fmt.Errorf("server sent RSV bits %v", f)
		}
		switch f.op {
		case confOpText, confOpBinary:
			if partial != nil {
				return fmt.Errorf("server started a message inside another: %v", f)
			}
			partial = &confMsg{op: f.op, payload: f.payload}
		case confOpCont:
			if partial == nil {
				return fmt.Errorf("server sent a continuation without a message: %v", f)
			}
			partial.payload = append(partial.payload, f.payload...)
		case confOpPong:
			pongs = append(pongs, f.payload)
			return nil
		case confOpPing:
			return fmt.Errorf("server sent an unexpected ping %v", f)
		case confOpClose:
			closeCode = confCloseCode(f.payload)
			if closeCode == -1 {
				return fmt.Errorf("server sent a 1-byte close body")
			}
			return nil
		default:
			return fmt.Errorf("server sent opcode %d", f.op)
		}
		if f.fin {
			msgs = append(msgs, *partial)
			partial = nil
		}
		return nil
	}

	// Send the steps.
	for i, s := range cs.steps {
		if s.waitClose {
			deadline := time.Now().Add(3 * time.Second)
			for closeCode == 0 {
				if err := next(time.Until(deadline)); err != nil {
					t.Fatalf("no close before step %d was sent (fail fast): %v", i, err)
				}
			}
		}
		if s.pause > 0 {
			time.Sleep(s.pause)
		}
		b := s.raw
		if b == nil {
			b = confAppendFrame(nil, s.f, true)
		}
		if err := c.writeRaw(b, s.chop); err != nil {
			if cs.close != 0 && closeCode == 0 {
				// The server may fail the connection while the step is in flight.
				break
			}
			t.Fatalf("step %d: %v", i, err)
		}
	}

	wantMsgs, wantPongs := cs.msgs, cs.pongs
	deadline := time.Now().Add(5 * time.Second)
	if cs.close == 0 {
		// Healthy: everything expected arrives, then a clean close handshake.
		for closeCode == 0 && (len(msgs) < len(wantMsgs) || len(pongs) < len(wantPongs)) {
			if err := next(time.Until(deadline)); err != nil {
				t.Fatalf("waiting for %d messages and %d pongs (have %d, %d): %v", len(wantMsgs), len(wantPongs), len(msgs), len(pongs), err)
			}
		}
		if closeCode != 0 {
			t.Fatalf("server closed with %d; want no close", closeCode)
		}
		confCompare(t, msgs, pongs, wantMsgs, wantPongs, false)
		if err := c.write(confFrame{fin: true, op: confOpClose, payload: []byte{0x03, 0xE8, 'd', 'o', 'n', 'e'}}, 0); err != nil {
			t.Fatalf("sending close: %v", err)
		}
		for closeCode == 0 {
			if err := next(time.Until(deadline)); err != nil {
				t.Fatalf("waiting for the close reply: %v", err)
			}
		}
		if closeCode != 1000 {
			t.Errorf("close reply: code %d, want 1000", closeCode)
		}
		confCompare(t, msgs, pongs, wantMsgs, wantPongs, false) // nothing extra before the close
	} else {
		for closeCode == 0 {
			if err := next(time.Until(deadline)); err != nil {
				t.Fatalf("waiting for close %d (got %d messages, %d pongs): %v", cs.close, len(msgs), len(pongs), err)
			}
		}
		if closeCode != cs.close {
			t.Errorf("server closed with %d, want %d", closeCode, cs.close)
		}
		confCompare(t, msgs, pongs, wantMsgs, wantPongs, cs.violation())
		if cs.abandon {
			c.nc.Close()
			if tg.up != nil {
				confCheckUpstream(t, tg.up, cs, path)
			}
			return
		}
		if !cs.clientClosed {
			// Complete the close handshake.
			body := []byte{}
			if closeCode != confEmptyClose {
				body = binary.BigEndian.AppendUint16(body, uint16(closeCode))
			}
			c.write(confFrame{fin: true, op: confOpClose, payload: body}, 0)
		}
	}
	if err := c.waitEOF(3 * time.Second); err != nil {
		t.Error(err)
	}

	if tg.up != nil {
		confCheckUpstream(t, tg.up, cs, path)
	}
}

// confCompare checks the received messages and pongs. With prefix set (the
// connection was failed) they may be a prefix of what is expected.
func confCompare(t *testing.T, msgs []confMsg, pongs [][]byte, wantMsgs []confMsg, wantPongs [][]byte, prefix bool) {
	t.Helper()
	if prefix {
		if len(msgs) > len(wantMsgs) {
			t.Errorf("got %d messages, want at most %d: %s", len(msgs), len(wantMsgs), confMsgsString(msgs))
		}
		if len(pongs) > len(wantPongs) {
			t.Errorf("got %d pongs, want at most %d", len(pongs), len(wantPongs))
		}
		wantMsgs = wantMsgs[:min(len(msgs), len(wantMsgs))]
		wantPongs = wantPongs[:min(len(pongs), len(wantPongs))]
		msgs = msgs[:len(wantMsgs)]
		pongs = pongs[:len(wantPongs)]
	}
	if len(msgs) != len(wantMsgs) {
		t.Errorf("got %d messages %s, want %d %s", len(msgs), confMsgsString(msgs), len(wantMsgs), confMsgsString(wantMsgs))
	} else {
		for i := range msgs {
			if msgs[i].op != wantMsgs[i].op || string(msgs[i].payload) != string(wantMsgs[i].payload) {
				t.Errorf("message %d: got %s, want %s", i, confMsgsString(msgs[i:i+1]), confMsgsString(wantMsgs[i:i+1]))
			}
		}
	}
	if len(pongs) != len(wantPongs) {
		t.Errorf("got %d pongs %q, want %d %q", len(pongs), pongs, len(wantPongs), wantPongs)
	} else {
		for i := range pongs {
			if string(pongs[i]) != string(wantPongs[i]) {
				t.Errorf("pong %d: got %q, want %q", i, pongs[i], wantPongs[i])
			}
		}
	}
}

func confMsgsString(ms []confMsg) string {
	parts := make([]string, len(ms))
	for i, m := range ms {
		p, suffix := m.payload, ""
		if len(p) > 24 {
			p, suffix = p[:24], fmt.Sprintf("...(%d bytes)", len(m.payload))
		}
		parts[i] = fmt.Sprintf("op%d:%q%s", m.op, p, suffix)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// confCheckUpstream checks what the lenient upstream received for the case.
func confCheckUpstream(t *testing.T, up *confLenient, cs *confCase, path string) {
	t.Helper()
	rec := up.record(path)
	select {
	case <-rec.done:
	case <-time.After(5 * time.Second):
		t.Errorf("upstream connection for %s did not end", path)
		return
	}
	frames, code := rec.snapshot()

	// Nothing from the violating frame on may have reached the upstream.
	// (Frames are matched by opcode and payload: the cases give them unique payloads.)
	var badFrom = -1
	for i, s := range cs.steps {
		if s.bad || s.dropped {
			badFrom = i
			break
		}
	}
	if badFrom >= 0 {
		for _, s := range cs.steps[badFrom:] {
			if s.raw != nil || s.f.op == confOpClose {
				continue
			}
			for _, f := range frames {
				if f.op == s.f.op && string(f.payload) == string(s.f.payload) {
					t.Errorf("upstream received the violating, ignored or a later frame %v", f)
				}
			}
		}
	}

	want := cs.upClose
	if want == 0 {
		switch {
		case cs.violation():
			want = 1001
		case cs.clientClosed:
			want = cs.close
		default:
			want = 1000
		}
	}
	if code != want {
		t.Errorf("upstream received close %d, want %d (frames: %v)", code, want, frames)
	}

	if cs.violation() {
		return
	}
	// Healthy: the upstream got exactly the client's messages and pings.
	var msgs []confMsg
	var pings [][]byte
	var partial *confMsg
	for _, f := range frames {
		switch f.op {
		case confOpText, confOpBinary:
			partial = &confMsg{op: f.op, payload: f.payload}
		case confOpCont:
			if partial == nil {
				t.Errorf("upstream received a stray continuation %v", f)
				continue
			}
			partial.payload = append(partial.payload, f.payload...)
		case confOpPing:
			pings = append(pings, f.payload)
			continue
		default:
			continue
		}
		if f.fin {
			msgs = append(msgs, *partial)
			partial = nil
		}
	}
	if cs.close != 0 {
		// The client closed: the upstream has what came before the close.
		confCompare(t, msgs, pings, cs.msgs, cs.pongs, true)
		return
	}
	confCompare(t, msgs, pings, cs.msgs, cs.pongs, false)
}

// TestConformance runs every case against every target.
func TestConformance(t *testing.T) {
	leakCheck(t)
	cases := confCases()
	targets := []confTarget{confWsmwTarget(t), confProxyTarget(t)}
	if tg, ok := confCaddyTarget(t); ok {
		targets = append(targets, tg)
	}
	for _, tg := range targets {
		t.Run(tg.name, func(t *testing.T) {
			for i := range cases {
				cs := &cases[i]
				t.Run(cs.group+"/"+cs.name, func(t *testing.T) {
					confRun(t, tg, cs, fmt.Sprintf("/conf/%s/%d", tg.name, i))
				})
			}
		})
	}
}

// confCaddyLoad adapts caddyfile and runs it in this process, with Caddy's
// storage and autosave file (process-wide globals) in a temporary directory;
// Caddy is stopped and the directory removed when the test ends. There is one
// Caddy per process: tests that use it must not run in parallel.
func confCaddyLoad(t testing.TB, caddyfile string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "wsgate-integration-caddy-")
	if err != nil {
		t.Fatal(err)
	}
	caddy.DefaultStorage = &certmagic.FileStorage{Path: filepath.Join(dir, "storage")}
	caddy.ConfigAutosavePath = filepath.Join(dir, "autosave.json")
	t.Cleanup(func() { os.RemoveAll(dir) }) // after caddy.Stop (Cleanups run last-in first-out)
	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		t.Fatalf("adapting the Caddyfile: %v\n%s", err, caddyfile)
	}
	if err := caddy.Load(cfg, true); err != nil {
		t.Fatalf("loading the Caddy config: %v\n%s", err, cfg)
	}
	t.Cleanup(func() { caddy.Stop() })
}

// confFreePort returns a loopback address that was free a moment ago.
func confFreePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// confCaddyTarget is Caddy with the ws directive (64 KiB limits) in front of a lenient upstream.
func confCaddyTarget(t testing.TB) (confTarget, bool) {
	up := confStartLenient(t)
	addr := confFreePort(t)
	confCaddyLoad(t, fmt.Sprintf(`{
	admin off
	auto_https off
	persist_config off
	log {
		level ERROR
	}
}
http://%s {
	ws %s {
		max_frame_size 64KiB
		max_message_size 64KiB
		close_timeout 2s
	}
}
`, addr, up.addr()))
	return confTarget{name: "caddy", addr: addr, up: up}, true
}
