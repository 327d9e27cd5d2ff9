package integration

// Helpers of the third-party peer tests (peers_test.go, browser_test.go,
// peers_caddy_test.go). Every name starts with "peer": other files of this
// package belong to other suites.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	coder "github.com/coder/websocket"
	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/proxy"
)

// peerTimeout bounds every single wait of these tests.
const peerTimeout = 10 * time.Second

// peerInCI reports whether a missing third-party peer must fail the test
// instead of skipping it (CI sets CI=true).
func peerInCI() bool {
	v := strings.ToLower(os.Getenv("CI"))
	return v == "true" || v == "1"
}

// peerRequire skips the test (locally) or fails it (in CI) when ok is false.
func peerRequire(t testing.TB, ok bool, format string, args ...any) {
	t.Helper()
	if ok {
		return
	}
	msg := fmt.Sprintf(format, args...)
	if peerInCI() {
		t.Fatalf("%s (CI=true: a missing peer fails instead of skipping)", msg)
	}
	t.Skip(msg)
}

// peerPattern returns n deterministic bytes: binary i%251, or text from the
// lower-case alphabet. node/common.js builds the same.
func peerPattern(n int, text bool) []byte {
	b := make([]byte, n)
	for i := range b {
		if text {
			b[i] = 'a' + byte(i%26)
		} else {
			b[i] = byte(i % 251)
		}
	}
	return b
}

func peerSHA(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// peerSizes are the size classes of the echo tests: empty, the largest 7-bit
// length, the smallest 16-bit one, the largest 16-bit one, the smallest 64-bit
// one, and 1 MiB.
var peerSizes = []int{0, 125, 126, 65535, 65536, 1 << 20}

// ---------------------------------------------------------------------------
// The proxy in front: a chi router as examples/chi builds it.

// peerFront is the proxy on a chi router, listening on loopback.
type peerFront struct {
	URL   string // http://127.0.0.1:port
	WSURL string // ws://127.0.0.1:port/ws
	Proxy *proxy.Proxy
	srv   *httptest.Server
}

// peerPage reads the examples/chi demo page (the same file that it embeds).
func peerPage(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "examples", "chi", "page.html"))
	if err != nil {
		t.Fatalf("reading the demo page: %v", err)
	}
	return b
}

// peerStartFront starts cfg's proxy on the routes of examples/chi: the demo
// page at /, the proxy at /ws through p.Middleware. It stops at cleanup.
func peerStartFront(t testing.TB, cfg proxy.Config) *peerFront {
	t.Helper()
	p, err := proxy.New(cfg)
	if err != nil {
		t.Fatalf("proxy.New: %v", err)
	}
	page := peerPage(t)
	r := chi.NewRouter()
	r.Use(middleware.RequestID, middleware.RealIP, middleware.Recoverer)
	r.Get("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(page)
	})
	r.Get("/favicon.ico", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	notWS := func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "this endpoint speaks WebSocket", http.StatusUpgradeRequired)
	}
	r.With(p.Middleware).Get("/ws", notWS)
	srv := httptest.NewServer(r)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			t.Errorf("proxy shutdown: %v", err)
		}
		srv.Close()
	})
	return &peerFront{
		URL:   srv.URL,
		WSURL: "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws",
		Proxy: p,
		srv:   srv,
	}
}

// ---------------------------------------------------------------------------
// Upstreams built on gorilla/websocket and coder/websocket.

// peerClose is how one upstream connection ended, as its library reported it.
type peerClose struct {
	Code   int // the close code received; -1 when none arrived
	Reason string
	Err    error
}

// peerFrame is one frame header seen on the wire by a sniffing connection.
type peerFrame struct {
	Op      byte
	Fin     bool
	Len     int64
	Code    int    // of a close frame
	Payload string // of a control frame (a close frame's reason)
}

// peerUpConn is one accepted upstream connection.
type peerUpConn struct {
	// Close starts the upstream's close handshake with code and reason; it
	// returns what the library's close call returned once the handshake ended.
	Close func(code int, reason string) error
	// Ping sends a ping with data (gorilla) or waits for a pong (coder).
	Ping func(ctx context.Context, data string) error
	// Send writes one message.
	Send func(text bool, p []byte) error
	// Pongs receives the payloads of pongs the upstream got (gorilla only).
	Pongs chan string
	// Closed receives how the connection ended.
	Closed chan peerClose
	// Path is the request path the upstream saw.
	Path string
	// Header is the upgrade request's header as the upstream saw it.
	Header http.Header

	sniff *peerSniffConn
}

// Frames returns the frame headers the upstream received so far (client to upstream direction).
func (c *peerUpConn) Frames() []peerFrame { return c.sniff.frames() }

// peerUpstream is a WebSocket echo server on loopback.
type peerUpstream struct {
	URL      string // ws://127.0.0.1:port/
	Accepted chan *peerUpConn
	ln       *peerListener
	srv      *httptest.Server
}

// Kill closes every TCP connection of the upstream at once, without a close frame:
// what a crashed upstream process looks like to the proxy.
func (u *peerUpstream) Kill() { u.ln.killAll() }

// Next returns the next accepted connection.
func (u *peerUpstream) Next(t testing.TB) *peerUpConn {
	t.Helper()
	select {
	case c := <-u.Accepted:
		return c
	case <-time.After(peerTimeout):
		t.Fatal("the upstream accepted no connection")
		return nil
	}
}

type peerConnKey struct{}

func peerStartUpstream(t testing.TB, h func(w http.ResponseWriter, r *http.Request, sniff *peerSniffConn)) *peerUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pl := &peerListener{Listener: ln}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sc, _ := r.Context().Value(peerConnKey{}).(*peerSniffConn)
		h(w, r, sc)
	}))
	srv.Listener.Close()
	srv.Listener = pl
	srv.Config.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		return context.WithValue(ctx, peerConnKey{}, c)
	}
	srv.Start()
	u := &peerUpstream{URL: "ws://" + ln.Addr().String() + "/", ln: pl, srv: srv}
	t.Cleanup(func() {
		pl.killAll()
		srv.Close()
	})
	return u
}

// peerGorillaUpstream starts an echo upstream on gorilla/websocket. A non-zero
// writeBuf makes it send messages larger than that in several frames.
func peerGorillaUpstream(t testing.TB, writeBuf int) *peerUpstream {
	var u *peerUpstream
	u = peerStartUpstream(t, func(w http.ResponseWriter, r *http.Request, sniff *peerSniffConn) {
		up := websocket.Upgrader{
			WriteBufferSize:   writeBuf,
			CheckOrigin:       func(*http.Request) bool { return true },
			Subprotocols:      websocket.Subprotocols(r),
			EnableCompression: false,
		}
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		pc := &peerUpConn{
			Pongs:  make(chan string, 16),
			Closed: make(chan peerClose, 1),
			Path:   r.URL.Path,
			Header: r.Header.Clone(),
			sniff:  sniff,
		}
		c.SetPongHandler(func(s string) error {
			select {
			case pc.Pongs <- s:
			default:
			}
			return nil
		})
		var wmu sync.Mutex // gorilla allows one concurrent writer of data messages
		closeDone := make(chan error, 1)
		pc.Close = func(code int, reason string) error {
			err := c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(peerTimeout))
			if err != nil {
				return err
			}
			select { // the echo loop ends when the peer's close arrives
			case err := <-closeDone:
				return err
			case <-time.After(peerTimeout):
				return errors.New("no close from the peer")
			}
		}
		pc.Ping = func(_ context.Context, data string) error {
			return c.WriteControl(websocket.PingMessage, []byte(data), time.Now().Add(peerTimeout))
		}
		pc.Send = func(text bool, p []byte) error {
			wmu.Lock()
			defer wmu.Unlock()
			return c.WriteMessage(peerGorillaType(text), p)
		}
		u.Accepted <- pc
		for {
			mt, rd, err := c.NextReader()
			if err != nil {
				pc.Closed <- peerCloseOfGorilla(err)
				closeDone <- nil
				return
			}
			wmu.Lock()
			wr, err := c.NextWriter(mt)
			if err == nil {
				_, err = io.Copy(wr, rd)
				if cerr := wr.Close(); err == nil {
					err = cerr
				}
			}
			wmu.Unlock()
			if err != nil {
				// A message the echo could not finish; the read reports how the connection ended.
				continue
			}
		}
	})
	u.Accepted = make(chan *peerUpConn, 8)
	return u
}

// peerCoderUpstream starts an echo upstream on coder/websocket.
func peerCoderUpstream(t testing.TB) *peerUpstream {
	var u *peerUpstream
	u = peerStartUpstream(t, func(w http.ResponseWriter, r *http.Request, sniff *peerSniffConn) {
		c, err := coder.Accept(w, r, &coder.AcceptOptions{
			InsecureSkipVerify: true, // the proxy forwards the browser's Origin; this is a test upstream
			Subprotocols:       websocket.Subprotocols(r),
		})
		if err != nil {
			return
		}
		defer c.CloseNow()
		c.SetReadLimit(64 << 20)
		pc := &peerUpConn{
			Closed: make(chan peerClose, 1),
			Path:   r.URL.Path,
			Header: r.Header.Clone(),
			sniff:  sniff,
		}
		pc.Close = func(code int, reason string) error { return c.Close(coder.StatusCode(code), reason) }
		pc.Ping = func(ctx context.Context, _ string) error { return c.Ping(ctx) }
		pc.Send = func(text bool, p []byte) error {
			ctx, cancel := context.WithTimeout(context.Background(), peerTimeout)
			defer cancel()
			return c.Write(ctx, peerCoderType(text), p)
		}
		u.Accepted <- pc
		ctx := context.Background()
		for {
			mt, rd, err := c.Reader(ctx)
			if err != nil {
				pc.Closed <- peerCloseOfCoder(err)
				return
			}
			wctx, cancel := context.WithTimeout(ctx, peerTimeout)
			wr, err := c.Writer(wctx, mt)
			if err == nil {
				_, err = io.Copy(wr, rd)
				if cerr := wr.Close(); err == nil {
					err = cerr
				}
			}
			cancel()
		}
	})
	u.Accepted = make(chan *peerUpConn, 8)
	return u
}

func peerGorillaType(text bool) int {
	if text {
		return websocket.TextMessage
	}
	return websocket.BinaryMessage
}

func peerCoderType(text bool) coder.MessageType {
	if text {
		return coder.MessageText
	}
	return coder.MessageBinary
}

func peerCloseOfGorilla(err error) peerClose {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return peerClose{Code: ce.Code, Reason: ce.Text, Err: err}
	}
	return peerClose{Code: -1, Err: err}
}

func peerCloseOfCoder(err error) peerClose {
	var ce coder.CloseError
	if errors.As(err, &ce) {
		return peerClose{Code: int(ce.Code), Reason: ce.Reason, Err: err}
	}
	return peerClose{Code: -1, Err: err}
}

// peerWaitClose waits for how an upstream connection ended and checks code and reason.
func peerWaitClose(t testing.TB, c *peerUpConn, code int, reason string) {
	t.Helper()
	select {
	case got := <-c.Closed:
		if got.Code != code || got.Reason != reason {
			t.Errorf("upstream saw close %d %q (%v), want %d %q", got.Code, got.Reason, got.Err, code, reason)
		}
	case <-time.After(peerTimeout):
		t.Errorf("upstream saw no close within %v (want %d %q)", peerTimeout, code, reason)
	}
}

// ---------------------------------------------------------------------------
// A listener whose connections can be killed and whose inbound frames are recorded.

type peerListener struct {
	net.Listener
	mu    sync.Mutex
	conns []*peerSniffConn
}

func (l *peerListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	sc := &peerSniffConn{Conn: c}
	l.mu.Lock()
	l.conns = append(l.conns, sc)
	l.mu.Unlock()
	return sc, nil
}

func (l *peerListener) killAll() {
	l.mu.Lock()
	conns := l.conns
	l.conns = nil
	l.mu.Unlock()
	for _, c := range conns {
		if tc, ok := c.Conn.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // a reset, as when a process dies with unread data
		}
		c.Conn.Close()
	}
}

// peerSniffConn records the WebSocket frame headers it reads after the HTTP
// request or response, and the (unmasked) payloads of control frames.
type peerSniffConn struct {
	net.Conn

	mu       sync.Mutex
	pastHTTP bool // the blank line after the HTTP header has been read
	tail     uint32
	hdr      []byte
	skip     int64  // data payload bytes still to skip
	ctrl     []byte // control payload being collected
	ctrlNeed int
	mask     []byte
	records  []peerFrame
}

func (c *peerSniffConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.feed(p[:n])
	}
	return n, err
}

func (c *peerSniffConn) frames() []peerFrame {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]peerFrame(nil), c.records...)
}

// closes returns the close frames read so far.
func (c *peerSniffConn) closes() []peerFrame {
	var out []peerFrame
	for _, f := range c.frames() {
		if f.Op == 0x8 {
			out = append(out, f)
		}
	}
	return out
}

func (c *peerSniffConn) feed(p []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(p) > 0 {
		switch {
		case !c.pastHTTP: // still in the HTTP header: look for the blank line
			c.tail = c.tail<<8 | uint32(p[0])
			p = p[1:]
			if c.tail == 0x0d0a0d0a {
				c.pastHTTP = true
			}
		case c.skip > 0:
			k := int64(len(p))
			if k > c.skip {
				k = c.skip
			}
			c.skip -= k
			p = p[k:]
		case c.ctrlNeed > 0:
			k := min(len(p), c.ctrlNeed-len(c.ctrl))
			c.ctrl = append(c.ctrl, p[:k]...)
			p = p[k:]
			if len(c.ctrl) == c.ctrlNeed {
				c.endControl()
			}
		default:
			c.hdr = append(c.hdr, p[0])
			p = p[1:]
			if need := peerHeaderLen(c.hdr); need > 0 && len(c.hdr) == need {
				f, n := peerParseHeader(c.hdr)
				c.records = append(c.records, f)
				c.mask = nil
				if c.hdr[1]&0x80 != 0 {
					c.mask = append([]byte(nil), c.hdr[need-4:need]...)
				}
				c.hdr = c.hdr[:0]
				if f.Op >= 0x8 {
					c.ctrl, c.ctrlNeed = c.ctrl[:0], int(n)
					if n == 0 {
						c.endControl()
					}
				} else {
					c.skip = n
				}
			}
		}
	}
}

func (c *peerSniffConn) endControl() {
	b := append([]byte(nil), c.ctrl...)
	for i := range b {
		if c.mask != nil {
			b[i] ^= c.mask[i%4]
		}
	}
	f := &c.records[len(c.records)-1]
	f.Payload = string(b)
	if f.Op == 0x8 && len(b) >= 2 {
		f.Code = int(b[0])<<8 | int(b[1])
		f.Payload = string(b[2:])
	}
	c.ctrl, c.ctrlNeed = c.ctrl[:0], 0
}

// peerHeaderLen is the full header length once enough of it is known, else 0.
func peerHeaderLen(h []byte) int {
	if len(h) < 2 {
		return 0
	}
	n := 2
	switch h[1] & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if h[1]&0x80 != 0 {
		n += 4
	}
	return n
}

func peerParseHeader(h []byte) (peerFrame, int64) {
	f := peerFrame{Op: h[0] & 0x0f, Fin: h[0]&0x80 != 0}
	switch l := int64(h[1] & 0x7f); l {
	case 126:
		f.Len = int64(h[2])<<8 | int64(h[3])
	case 127:
		for _, b := range h[2:10] {
			f.Len = f.Len<<8 | int64(b)
		}
	default:
		f.Len = l
	}
	return f, f.Len
}

// ---------------------------------------------------------------------------
// Node.js peers (node/client.js and node/server.js, on the pinned `ws` package).

// peerNodeEvent is one JSON line of a Node peer.
type peerNodeEvent struct {
	Ev         string `json:"ev"`
	ID         int    `json:"id"`
	Port       int    `json:"port"`
	Protocol   string `json:"protocol"`
	Extensions string `json:"extensions"`
	Path       string `json:"path"`
	Type       string `json:"type"`
	Length     int    `json:"length"`
	SHA256     string `json:"sha256"`
	Data       string `json:"data"`
	Code       int    `json:"code"`
	Reason     string `json:"reason"`
	Status     int    `json:"status"`
	Message    string `json:"message"`
}

// peerNodeProc is a running Node peer.
type peerNodeProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	events chan peerNodeEvent
	stderr *peerSyncBuffer
	exited chan struct{}
}

type peerSyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *peerSyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *peerSyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// peerNodeReady skips (or, in CI, fails) unless node and the npm packages are installed.
func peerNodeReady(t testing.TB) string {
	t.Helper()
	node, err := exec.LookPath("node")
	peerRequire(t, err == nil, "node not installed: run integration/setup.sh")
	_, err = os.Stat(filepath.Join("node_modules", "ws", "package.json"))
	peerRequire(t, err == nil, "npm package ws not installed in integration/node_modules: run integration/setup.sh")
	return node
}

// peerStartNode runs node/<script> with args; it is killed at cleanup (and after 40 s).
func peerStartNode(t testing.TB, script string, args ...string) *peerNodeProc {
	t.Helper()
	node := peerNodeReady(t)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	cmd := exec.CommandContext(ctx, node, append([]string{filepath.Join("node", script)}, args...)...)
	cmd.WaitDelay = 2 * time.Second
	stdin, err := cmd.StdinPipe()
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	p := &peerNodeProc{cmd: cmd, stdin: stdin, events: make(chan peerNodeEvent, 256), stderr: &peerSyncBuffer{}, exited: make(chan struct{})}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("starting node %s: %v", script, err)
	}
	go func() {
		defer close(p.events)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var ev peerNodeEvent
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				ev = peerNodeEvent{Ev: "error", Message: "unparsable line: " + sc.Text()}
			}
			p.events <- ev
		}
	}()
	go func() {
		cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		stdin.Close()
		select {
		case <-p.exited:
		case <-time.After(3 * time.Second):
			cmd.Process.Kill()
			<-p.exited
		}
		cancel()
		if t.Failed() {
			if s := p.stderr.String(); s != "" {
				t.Logf("node %s stderr:\n%s", script, s)
			}
		}
	})
	return p
}

// Send writes one command line.
func (p *peerNodeProc) Send(t testing.TB, cmd map[string]any) {
	t.Helper()
	b, _ := json.Marshal(cmd)
	if _, err := p.stdin.Write(append(b, '\n')); err != nil {
		t.Fatalf("command %s to node: %v", b, err)
	}
}

// Expect returns the next event, which must be of kind ev: any other event
// (an "error" above all) fails the test, so every event is accounted for.
func (p *peerNodeProc) Expect(t testing.TB, ev string) peerNodeEvent {
	t.Helper()
	timeout := time.After(peerTimeout)
	for {
		select {
		case e, ok := <-p.events:
			if !ok {
				t.Fatalf("node exited before the %q event; stderr: %s", ev, p.stderr.String())
			}
			if e.Ev == ev {
				return e
			}
			t.Fatalf("node sent %+v while the test expected a %q event", e, ev)
		case <-timeout:
			t.Fatalf("no %q event from node within %v; stderr: %s", ev, peerTimeout, p.stderr.String())
		}
	}
}

// Kill ends the Node process with SIGKILL and waits for it.
func (p *peerNodeProc) Kill(t testing.TB) {
	t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatalf("killing node: %v", err)
	}
	select {
	case <-p.exited:
	case <-time.After(peerTimeout):
		t.Fatal("node did not exit after SIGKILL")
	}
}

// peerExpectMessage checks a message event against the payload that was sent.
func peerExpectMessage(t testing.TB, e peerNodeEvent, text bool, want []byte) {
	t.Helper()
	typ := "binary"
	if text {
		typ = "text"
	}
	if e.Type != typ || e.Length != len(want) || e.SHA256 != peerSHA(want) {
		t.Errorf("node got %s message of %d bytes (sha %.12s), want %s of %d (sha %.12s)",
			e.Type, e.Length, e.SHA256, typ, len(want), peerSHA(want))
	}
}
