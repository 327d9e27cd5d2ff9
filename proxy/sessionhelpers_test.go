package proxy

// Helpers for the session and close-path tests (session_test.go, close_test.go).
// Upstreams and raw peers here deliberately do not use wsmw: frames are read and
// written by the small independent codec below, or by gorilla/websocket, so that
// a bug in wsmw cannot hide itself on both sides of the proxy.

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
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	coder "github.com/coder/websocket"
	"github.com/gorilla/websocket"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// Opcodes of the raw codec (RFC 6455 §5.2), independent of wsmw's constants.
const (
	ssOpCont   byte = 0x0
	ssOpText   byte = 0x1
	ssOpBinary byte = 0x2
	ssOpClose  byte = 0x8
	ssOpPing   byte = 0x9
	ssOpPong   byte = 0xA
)

const ssGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// ssFrame is one frame as seen on the wire. Payload is unmasked.
type ssFrame struct {
	Fin     bool
	Rsv     byte // the three RSV bits, in wire position (0x70)
	Op      byte
	Masked  bool
	Key     [4]byte
	Payload []byte
}

func (f ssFrame) String() string {
	return fmt.Sprintf("{op=%#x fin=%v masked=%v len=%d}", f.Op, f.Fin, f.Masked, len(f.Payload))
}

// closeCode decodes a close payload: code 0 for an empty body.
func (f ssFrame) closeCode() (int, string) {
	if len(f.Payload) < 2 {
		return 0, ""
	}
	return int(binary.BigEndian.Uint16(f.Payload)), string(f.Payload[2:])
}

func ssMaskBytes(key [4]byte, p []byte) {
	for i := range p {
		p[i] ^= key[i&3]
	}
}

// ssReadFrame reads one frame, applying no rule beyond the framing itself.
func ssReadFrame(r io.Reader) (ssFrame, error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return ssFrame{}, err
	}
	f := ssFrame{Fin: h[0]&0x80 != 0, Rsv: h[0] & 0x70, Op: h[0] & 0x0f, Masked: h[1]&0x80 != 0}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return f, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return f, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	if f.Masked {
		if _, err := io.ReadFull(r, f.Key[:]); err != nil {
			return f, err
		}
	}
	if n > 64<<20 {
		return f, fmt.Errorf("ss: frame of %d bytes", n)
	}
	f.Payload = make([]byte, n)
	if _, err := io.ReadFull(r, f.Payload); err != nil {
		return f, err
	}
	if f.Masked {
		ssMaskBytes(f.Key, f.Payload)
	}
	return f, nil
}

// ssEncodeFrame encodes f; when f.Masked the payload is masked with f.Key (a copy).
func ssEncodeFrame(f ssFrame) []byte {
	b0 := f.Op | f.Rsv
	if f.Fin {
		b0 |= 0x80
	}
	out := []byte{b0}
	var m byte
	if f.Masked {
		m = 0x80
	}
	n := len(f.Payload)
	switch {
	case n <= 125:
		out = append(out, m|byte(n))
	case n <= 0xffff:
		out = append(out, m|126, byte(n>>8), byte(n))
	default:
		out = append(out, m|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	if f.Masked {
		out = append(out, f.Key[:]...)
	}
	start := len(out)
	out = append(out, f.Payload...)
	if f.Masked {
		ssMaskBytes(f.Key, out[start:])
	}
	return out
}

func ssClosePayload(code int, reason string) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(code))
	return append(b, reason...)
}

// ssRaw is a raw WebSocket endpoint over TCP: the client role masks what it sends.
type ssRaw struct {
	net.Conn
	br     *bufio.Reader
	client bool
	wmu    sync.Mutex
}

func (c *ssRaw) ReadFrame() (ssFrame, error) { return ssReadFrame(c.br) }

// ReadFrameTimeout reads one frame with a read deadline d from now.
func (c *ssRaw) ReadFrameTimeout(d time.Duration) (ssFrame, error) {
	c.SetReadDeadline(time.Now().Add(d))
	defer c.SetReadDeadline(time.Time{})
	return ssReadFrame(c.br)
}

// Send writes f; a client always masks, with a fresh key unless f.Key is set.
// SendRaw sends exactly what f says.
func (c *ssRaw) Send(f ssFrame) error {
	if c.client {
		f.Masked = true
		if f.Key == ([4]byte{}) {
			rand.Read(f.Key[:])
		}
	}
	return c.SendRaw(f)
}

// SendRaw writes f exactly as described (masked only if f.Masked).
func (c *ssRaw) SendRaw(f ssFrame) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := c.Write(ssEncodeFrame(f))
	return err
}

func (c *ssRaw) SendClose(code int, reason string) error {
	return c.Send(ssFrame{Fin: true, Op: ssOpClose, Payload: ssClosePayload(code, reason)})
}

// ReadUntilClose reads frames until a close frame (returned) or an error,
// bounded by d. Data and control frames read on the way are returned in seen.
func (c *ssRaw) ReadUntilClose(d time.Duration) (closeFrame *ssFrame, seen []ssFrame, err error) {
	c.SetReadDeadline(time.Now().Add(d))
	defer c.SetReadDeadline(time.Time{})
	for {
		f, err := ssReadFrame(c.br)
		if err != nil {
			return nil, seen, err
		}
		if f.Op == ssOpClose {
			return &f, seen, nil
		}
		seen = append(seen, f)
	}
}

// WaitEOF reads (and drops) until the connection ends, bounded by d; it reports
// whether the peer closed the connection (EOF or reset) rather than the deadline.
func (c *ssRaw) WaitEOF(d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	defer c.SetReadDeadline(time.Time{})
	_, err := io.Copy(io.Discard, c.br)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// ssAccept computes Sec-WebSocket-Accept by hand.
func ssAccept(key string) string {
	h := sha1.Sum([]byte(key + ssGUID))
	return base64.StdEncoding.EncodeToString(h[:])
}

// ssDialRaw performs the client handshake by hand against url (ws://host/path).
func ssDialRaw(t *testing.T, url string) *ssRaw {
	t.Helper()
	rest := strings.TrimPrefix(url, "ws://")
	host, path, _ := strings.Cut(rest, "/")
	nc, err := net.DialTimeout("tcp", host, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var k [16]byte
	rand.Read(k[:])
	key := base64.StdEncoding.EncodeToString(k[:])
	req := "GET /" + path + " HTTP/1.1\r\nHost: " + host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + key + "\r\nSec-WebSocket-Version: 13\r\n\r\n"
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(nc, req); err != nil {
		nc.Close()
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		nc.Close()
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-WebSocket-Accept") != ssAccept(key) {
		nc.Close()
		t.Fatalf("raw dial: status %d accept %q", resp.StatusCode, resp.Header.Get("Sec-WebSocket-Accept"))
	}
	nc.SetDeadline(time.Time{})
	return &ssRaw{Conn: nc, br: br, client: true}
}

// ssRawServer is an upstream that does the server handshake by hand and gives
// each connection to handle. Close closes the listener and every connection and
// waits for the handlers.
type ssRawServer struct {
	ln     net.Listener
	URL    string
	handle func(c *ssRaw)
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  []net.Conn
	closed bool
}

func ssNewRawServer(t *testing.T, handle func(c *ssRaw)) *ssRawServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &ssRawServer{ln: ln, URL: "ws://" + ln.Addr().String(), handle: handle}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			if s.closed {
				s.mu.Unlock()
				nc.Close()
				return
			}
			s.conns = append(s.conns, nc)
			s.wg.Add(1)
			s.mu.Unlock()
			go func() {
				defer s.wg.Done()
				defer nc.Close()
				c, ok := ssServerHandshake(nc)
				if ok {
					s.handle(c)
				}
			}()
		}
	}()
	return s
}

func ssServerHandshake(nc net.Conn) (*ssRaw, bool) {
	br := bufio.NewReader(nc)
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, false
	}
	key := req.Header.Get("Sec-WebSocket-Key")
	if !strings.EqualFold(req.Header.Get("Upgrade"), "websocket") || key == "" {
		io.WriteString(nc, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
		return nil, false
	}
	resp := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + ssAccept(key) + "\r\n\r\n"
	if _, err := io.WriteString(nc, resp); err != nil {
		return nil, false
	}
	nc.SetDeadline(time.Time{})
	return &ssRaw{Conn: nc, br: br}, true
}

func (s *ssRawServer) Close() {
	s.mu.Lock()
	s.closed = true
	conns := s.conns
	s.mu.Unlock()
	s.ln.Close()
	for _, c := range conns {
		c.Close()
	}
	s.wg.Wait()
}

// ssGorillaServer is a gorilla/websocket upstream; handle runs per connection
// (the connection is closed when it returns). Close waits for every handler.
type ssGorillaServer struct {
	*httptest.Server
	URL string
	wg  sync.WaitGroup
	mu  sync.Mutex
	ws  []*websocket.Conn
}

func ssNewGorillaServer(t *testing.T, handle func(c *websocket.Conn)) *ssGorillaServer {
	t.Helper()
	s := &ssGorillaServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.wg.Add(1)
		defer s.wg.Done()
		u := websocket.Upgrader{}
		c, err := u.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		s.mu.Lock()
		s.ws = append(s.ws, c)
		s.mu.Unlock()
		defer c.Close()
		handle(c)
	}))
	s.URL = "ws" + strings.TrimPrefix(s.Server.URL, "http")
	return s
}

// Close closes the server and every hijacked connection, then waits for handlers.
func (s *ssGorillaServer) Close() {
	s.Server.Close()
	s.mu.Lock()
	for _, c := range s.ws {
		c.NetConn().Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// ssSizeReply is a gorilla handler answering every message with the text
// "got N" (its length) until an error, which is sent on got: an echo that does
// not send large messages back.
func ssSizeReply(got chan<- error) func(c *websocket.Conn) {
	return func(c *websocket.Conn) {
		for {
			_, p, err := c.ReadMessage()
			if err != nil {
				got <- err
				return
			}
			c.WriteMessage(websocket.TextMessage, []byte(fmt.Sprintf("got %d", len(p))))
		}
	}
}

// ssTrickle writes b to w in pieces parts, pausing gap after each: a peer
// sending slowly, its bytes arriving all along.
func ssTrickle(w io.Writer, b []byte, pieces int, gap time.Duration) error {
	for off, step := 0, len(b)/pieces+1; off < len(b); off += step {
		if _, err := w.Write(b[off:min(off+step, len(b))]); err != nil {
			return fmt.Errorf("write failed at %d: %w", off, err)
		}
		time.Sleep(gap)
	}
	return nil
}

// ssEcho is a gorilla handler echoing every message until an error; the error
// (the close the upstream saw) is sent on got, if non-nil.
func ssEcho(got chan<- error) func(c *websocket.Conn) {
	return func(c *websocket.Conn) {
		for {
			mt, p, err := c.ReadMessage()
			if err != nil {
				if got != nil {
					got <- err
				}
				return
			}
			if err := c.WriteMessage(mt, p); err != nil {
				if got != nil {
					got <- err
				}
				return
			}
		}
	}
}

// ssEnv is a proxy in front of one upstream, served by an httptest server.
type ssEnv struct {
	t     *testing.T
	p     *Proxy
	front *httptest.Server
	URL   string
	logs  *observer.ObservedLogs // nil when the test brought its own Logger
}

// ssStart builds a proxy for cfg (CloseTimeout defaults to 500ms here) in front
// of upstream. Unless cfg has a Logger, the session log lines are observed.
func ssStart(t *testing.T, upstream string, cfg Config) *ssEnv {
	t.Helper()
	cfg.Upstreams = []string{upstream}
	if cfg.CloseTimeout == 0 {
		cfg.CloseTimeout = 500 * time.Millisecond
	}
	var logs *observer.ObservedLogs
	if cfg.Logger == nil {
		var core zapcore.Core
		core, logs = observer.New(zap.InfoLevel)
		cfg.Logger = zap.New(core)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	front := httptest.NewServer(p)
	return &ssEnv{t: t, p: p, front: front, URL: "ws" + strings.TrimPrefix(front.URL, "http"), logs: logs}
}

// Close waits until the proxy has no session left, checks that each session
// logged exactly one "session closed" line, then closes the front server.
func (e *ssEnv) Close() {
	e.t.Helper()
	ssWaitSessions(e.t, e.p, 5*time.Second)
	if e.logs != nil {
		if n, want := e.logs.FilterMessage("session closed").Len(), int(e.p.nextID.Load()); n != want {
			e.t.Errorf("%d \"session closed\" log lines for %d sessions", n, want)
		}
	}
	e.front.Close()
}

// wantEnd waits for the proxy's sessions to end and checks how the last one
// ended, as logged (and counted in the metrics): its close code and initiator.
func (e *ssEnv) wantEnd(code int, by string) {
	e.t.Helper()
	ssWaitSessions(e.t, e.p, 5*time.Second)
	all := e.logs.FilterMessage("session closed").All()
	if len(all) == 0 {
		e.t.Errorf("no session closed log line")
		return
	}
	f := all[len(all)-1].ContextMap()
	if f["close_code"] != int64(code) || f["closed_by"] != by {
		e.t.Errorf("session ended with close_code %v closed_by %v, want %d %s", f["close_code"], f["closed_by"], code, by)
	}
}

// ssWaitSessions polls until p has no active session.
func ssWaitSessions(t *testing.T, p *Proxy, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for p.ActiveSessions() != 0 {
		if time.Now().After(deadline) {
			t.Errorf("proxy still has %d active sessions after %v", p.ActiveSessions(), d)
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ssDial dials the proxy with gorilla.
func ssDial(t *testing.T, url string) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	c, resp, err := d.Dial(url, nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s: %v (status %d)", url, err, status)
	}
	return c
}

// ssCloseOf extracts a gorilla close error's code and text (-1 if err is not one).
func ssCloseOf(err error) (int, string) {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return ce.Code, ce.Text
	}
	return -1, ""
}

// ssWantClose checks that err is a gorilla close error with code and reason.
func ssWantClose(t *testing.T, who string, err error, code int, reason string) {
	t.Helper()
	gotCode, gotReason := ssCloseOf(err)
	if gotCode != code || gotReason != reason {
		t.Errorf("%s saw %v, want close %d %q", who, err, code, reason)
	}
}

// ssReadErr reads from a gorilla conn until an error (messages discarded), bounded by d.
func ssReadErr(c *websocket.Conn, d time.Duration) error {
	c.SetReadDeadline(time.Now().Add(d))
	for {
		if _, _, err := c.ReadMessage(); err != nil {
			return err
		}
	}
}

// ssRecv waits for a value on ch, failing the test after d.
func ssRecv[T any](t *testing.T, ch <-chan T, d time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		t.Fatalf("timed out after %v waiting for %s", d, what)
		var zero T
		return zero
	}
}

// ssCheckRawClose checks a raw close frame's code and reason.
func ssCheckRawClose(t *testing.T, who string, f *ssFrame, err error, code int, reason string) {
	t.Helper()
	if err != nil || f == nil {
		t.Errorf("%s: no close frame: %v", who, err)
		return
	}
	gotCode, gotReason := f.closeCode()
	if gotCode != code || gotReason != reason {
		t.Errorf("%s saw close %d %q (payload %x), want %d %q", who, gotCode, gotReason, f.Payload, code, reason)
	}
}

// ssDialCoder dials the proxy with coder/websocket (it accepts 1014, which
// gorilla 1.5.3 refuses). The returned context bounds the whole test's use of c.
func ssDialCoder(t *testing.T, url string) (*coder.Conn, context.Context) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	c, _, err := coder.Dial(ctx, url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	c.SetReadLimit(-1)
	return c, ctx
}

// ssWantCoderClose checks that err carries a coder close error with code and reason.
func ssWantCoderClose(t *testing.T, who string, err error, code int, reason string) {
	t.Helper()
	var ce coder.CloseError
	if !errors.As(err, &ce) || int(ce.Code) != code || ce.Reason != reason {
		t.Errorf("%s saw %v, want close %d %q", who, err, code, reason)
	}
}
