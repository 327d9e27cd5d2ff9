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
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	coder "github.com/coder/websocket"
	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/internal/testkit"
	"github.com/wsgate/wsgate/proxy"
	"github.com/wsgate/wsgate/wsmw"
)

// waitTimeout bounds every single wait of these tests.
const waitTimeout = 10 * time.Second

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// sizeClasses are the size classes of the echo tests: empty, the largest 7-bit
// length, the smallest 16-bit one, the largest 16-bit one, the smallest 64-bit
// one, and 1 MiB.
var sizeClasses = []int{0, 125, 126, 65535, 65536, 1 << 20}

// ---------------------------------------------------------------------------
// The proxy in front: a chi router as examples/chi builds it.

// demoFront is the proxy on a chi router, listening on loopback.
type demoFront struct {
	URL   string // http://127.0.0.1:port
	WSURL string // ws://127.0.0.1:port/ws
	Proxy *proxy.Proxy
	srv   *httptest.Server
}

// demoPage reads the examples/chi demo page (the same file that it embeds).
func demoPage(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "examples", "chi", "page.html"))
	if err != nil {
		t.Fatalf("reading the demo page: %v", err)
	}
	return b
}

// startDemoFront starts cfg's proxy on the routes of examples/chi: the demo
// page at /, the proxy at /ws through p.Middleware. It stops at cleanup.
func startDemoFront(t testing.TB, cfg proxy.Config) *demoFront {
	t.Helper()
	p, err := proxy.New(cfg)
	if err != nil {
		t.Fatalf("proxy.New: %v", err)
	}
	r := demoRouter(t)
	r.With(p.Middleware).Get("/ws", notWS)
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	testkit.StopAtEnd(t, p, 0)
	return &demoFront{
		URL:   srv.URL,
		WSURL: "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws",
		Proxy: p,
		srv:   srv,
	}
}

// ---------------------------------------------------------------------------
// Upstreams built on gorilla/websocket and coder/websocket.

// closeInfo is how one upstream connection ended, as its library reported it.
type closeInfo struct {
	Code   int // the close code received; -1 when none arrived
	Reason string
	Err    error
}

// wireFrame is one frame header seen on the wire by a sniffing connection.
type wireFrame struct {
	Op      byte
	Fin     bool
	Len     int64
	Code    int    // of a close frame
	Payload string // of a control frame (a close frame's reason)
}

// upConn is one accepted upstream connection.
type upConn struct {
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
	Closed chan closeInfo
	// Path is the request path the upstream saw.
	Path string
	// Header is the upgrade request's header as the upstream saw it.
	Header http.Header

	sniff *sniffConn
}

// Frames returns the frame headers the upstream received so far (client to upstream direction).
func (c *upConn) Frames() []wireFrame { return c.sniff.frames() }

// echoUpstream is a WebSocket echo server on loopback.
type echoUpstream struct {
	URL      string // ws://127.0.0.1:port/
	Accepted chan *upConn
	ln       *killableListener
	srv      *httptest.Server
}

// Kill closes every TCP connection of the upstream at once, without a close frame:
// what a crashed upstream process looks like to the proxy.
func (u *echoUpstream) Kill() { u.ln.killAll() }

// Next returns the next accepted connection.
func (u *echoUpstream) Next(t testing.TB) *upConn {
	t.Helper()
	return testkit.Recv(t, u.Accepted, waitTimeout, "a connection to the upstream")
}

type connKey struct{}

func startEchoUpstream(t testing.TB, h func(w http.ResponseWriter, r *http.Request, sniff *sniffConn)) *echoUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pl := &killableListener{Listener: ln}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sc, _ := r.Context().Value(connKey{}).(*sniffConn)
		h(w, r, sc)
	}))
	srv.Listener.Close()
	srv.Listener = pl
	srv.Config.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		return context.WithValue(ctx, connKey{}, c)
	}
	srv.Start()
	u := &echoUpstream{URL: "ws://" + ln.Addr().String() + "/", ln: pl, srv: srv}
	t.Cleanup(func() {
		pl.killAll()
		srv.Close()
	})
	return u
}

// gorillaUpstream starts an echo upstream on gorilla/websocket. A non-zero
// writeBuf makes it send messages larger than that in several frames.
func gorillaUpstream(t testing.TB, writeBuf int) *echoUpstream {
	var u *echoUpstream
	u = startEchoUpstream(t, func(w http.ResponseWriter, r *http.Request, sniff *sniffConn) {
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
		pc := &upConn{
			Pongs:  make(chan string, 16),
			Closed: make(chan closeInfo, 1),
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
			err := c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(waitTimeout))
			if err != nil {
				return err
			}
			select { // the echo loop ends when the peer's close arrives
			case err := <-closeDone:
				return err
			case <-time.After(waitTimeout):
				return errors.New("no close from the peer")
			}
		}
		pc.Ping = func(_ context.Context, data string) error {
			return c.WriteControl(websocket.PingMessage, []byte(data), time.Now().Add(waitTimeout))
		}
		pc.Send = func(text bool, p []byte) error {
			wmu.Lock()
			defer wmu.Unlock()
			return c.WriteMessage(gorillaType(text), p)
		}
		u.Accepted <- pc
		for {
			mt, rd, err := c.NextReader()
			if err != nil {
				pc.Closed <- closeOfGorilla(err)
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
	u.Accepted = make(chan *upConn, 8)
	return u
}

// coderUpstream starts an echo upstream on coder/websocket.
func coderUpstream(t testing.TB) *echoUpstream {
	var u *echoUpstream
	u = startEchoUpstream(t, func(w http.ResponseWriter, r *http.Request, sniff *sniffConn) {
		c, err := coder.Accept(w, r, &coder.AcceptOptions{
			InsecureSkipVerify: true, // the proxy forwards the browser's Origin; this is a test upstream
			Subprotocols:       websocket.Subprotocols(r),
		})
		if err != nil {
			return
		}
		defer c.CloseNow()
		c.SetReadLimit(64 << 20)
		pc := &upConn{
			Closed: make(chan closeInfo, 1),
			Path:   r.URL.Path,
			Header: r.Header.Clone(),
			sniff:  sniff,
		}
		pc.Close = func(code int, reason string) error { return c.Close(coder.StatusCode(code), reason) }
		pc.Ping = func(ctx context.Context, _ string) error { return c.Ping(ctx) }
		pc.Send = func(text bool, p []byte) error {
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			return c.Write(ctx, coderType(text), p)
		}
		u.Accepted <- pc
		ctx := context.Background()
		for {
			mt, rd, err := c.Reader(ctx)
			if err != nil {
				pc.Closed <- closeOfCoder(err)
				return
			}
			wctx, cancel := context.WithTimeout(ctx, waitTimeout)
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
	u.Accepted = make(chan *upConn, 8)
	return u
}

func gorillaType(text bool) int {
	if text {
		return websocket.TextMessage
	}
	return websocket.BinaryMessage
}

func coderType(text bool) coder.MessageType {
	if text {
		return coder.MessageText
	}
	return coder.MessageBinary
}

func closeOfGorilla(err error) closeInfo {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return closeInfo{Code: ce.Code, Reason: ce.Text, Err: err}
	}
	return closeInfo{Code: -1, Err: err}
}

func closeOfCoder(err error) closeInfo {
	var ce coder.CloseError
	if errors.As(err, &ce) {
		return closeInfo{Code: int(ce.Code), Reason: ce.Reason, Err: err}
	}
	return closeInfo{Code: -1, Err: err}
}

// waitClose waits for how an upstream connection ended and checks code and reason.
func waitClose(t testing.TB, c *upConn, code int, reason string) {
	t.Helper()
	select {
	case got := <-c.Closed:
		if got.Code != code || got.Reason != reason {
			t.Errorf("upstream saw close %d %q (%v), want %d %q", got.Code, got.Reason, got.Err, code, reason)
		}
	case <-time.After(waitTimeout):
		t.Errorf("upstream saw no close within %v (want %d %q)", waitTimeout, code, reason)
	}
}

// ---------------------------------------------------------------------------
// A listener whose connections can be killed and whose inbound frames are recorded.

type killableListener struct {
	net.Listener
	mu    sync.Mutex
	conns []*sniffConn
}

func (l *killableListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	sc := &sniffConn{Conn: c}
	l.mu.Lock()
	l.conns = append(l.conns, sc)
	l.mu.Unlock()
	return sc, nil
}

func (l *killableListener) killAll() {
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

// sniffConn records the WebSocket frame headers it reads after the HTTP
// request or response, and the (unmasked) payloads of control frames.
type sniffConn struct {
	net.Conn

	mu       sync.Mutex
	pastHTTP bool // the blank line after the HTTP header has been read
	tail     uint32
	hdr      []byte
	skip     int64  // data payload bytes still to skip
	ctrl     []byte // control payload being collected
	ctrlNeed int
	masked   bool
	mask     [4]byte
	records  []wireFrame
}

func (c *sniffConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.feed(p[:n])
	}
	return n, err
}

func (c *sniffConn) frames() []wireFrame {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]wireFrame(nil), c.records...)
}

// closes returns the close frames read so far.
func (c *sniffConn) closes() []wireFrame {
	var out []wireFrame
	for _, f := range c.frames() {
		if f.Op == 0x8 {
			out = append(out, f)
		}
	}
	return out
}

func (c *sniffConn) feed(p []byte) {
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
			h, err := wsmw.ReadHeader(bytes.NewReader(c.hdr))
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				continue // not the whole header yet
			}
			c.records = append(c.records, wireFrame{Op: byte(h.OpCode), Fin: h.Fin, Len: h.Length})
			c.hdr, c.masked, c.mask = c.hdr[:0], h.Masked, h.Mask
			if h.OpCode.IsControl() {
				c.ctrl, c.ctrlNeed = c.ctrl[:0], int(h.Length)
				if h.Length == 0 {
					c.endControl()
				}
			} else {
				c.skip = h.Length
			}
		}
	}
}

func (c *sniffConn) endControl() {
	b := append([]byte(nil), c.ctrl...)
	if c.masked {
		wsmw.Mask(c.mask, 0, b)
	}
	f := &c.records[len(c.records)-1]
	f.Payload = string(b)
	if f.Op == 0x8 && len(b) >= 2 {
		f.Code, f.Payload = testkit.CloseCode(b)
	}
	c.ctrl, c.ctrlNeed = c.ctrl[:0], 0
}

// ---------------------------------------------------------------------------
// Node.js peers (node/client.js and node/server.js, on the pinned `ws` package).

// nodeEvent is one JSON line of a Node peer.
type nodeEvent struct {
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

// nodeProc is a running Node peer.
type nodeProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	events chan nodeEvent
	stderr *testkit.SyncBuffer
	exited chan struct{}
}

// nodeReady skips (or, in CI, fails) unless node and the npm packages are installed.
func nodeReady(t testing.TB) string {
	t.Helper()
	node, err := exec.LookPath("node")
	testkit.RequirePeer(t, err == nil, "node not installed: run integration/setup.sh")
	_, err = os.Stat(filepath.Join("node_modules", "ws", "package.json"))
	testkit.RequirePeer(t, err == nil, "npm package ws not installed in integration/node_modules: run integration/setup.sh")
	return node
}

// startNode runs node/<script> with args; it is killed at cleanup (and after 40 s).
func startNode(t testing.TB, script string, args ...string) *nodeProc {
	t.Helper()
	node := nodeReady(t)
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
	p := &nodeProc{cmd: cmd, stdin: stdin, events: make(chan nodeEvent, 256), stderr: &testkit.SyncBuffer{}, exited: make(chan struct{})}
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
			var ev nodeEvent
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				ev = nodeEvent{Ev: "error", Message: "unparsable line: " + sc.Text()}
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
func (p *nodeProc) Send(t testing.TB, cmd map[string]any) {
	t.Helper()
	b, _ := json.Marshal(cmd)
	if _, err := p.stdin.Write(append(b, '\n')); err != nil {
		t.Fatalf("command %s to node: %v", b, err)
	}
}

// Expect returns the next event, which must be of kind ev: any other event
// (an "error" above all) fails the test, so every event is accounted for.
func (p *nodeProc) Expect(t testing.TB, ev string) nodeEvent {
	t.Helper()
	timeout := time.After(waitTimeout)
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
			t.Fatalf("no %q event from node within %v; stderr: %s", ev, waitTimeout, p.stderr.String())
		}
	}
}

// Kill ends the Node process with SIGKILL and waits for it.
func (p *nodeProc) Kill(t testing.TB) {
	t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatalf("killing node: %v", err)
	}
	select {
	case <-p.exited:
	case <-time.After(waitTimeout):
		t.Fatal("node did not exit after SIGKILL")
	}
}

// expectMessage checks a message event against the payload that was sent.
func expectMessage(t testing.TB, e nodeEvent, text bool, want []byte) {
	t.Helper()
	typ := "binary"
	if text {
		typ = "text"
	}
	if e.Type != typ || e.Length != len(want) || e.SHA256 != sha(want) {
		t.Errorf("node got %s message of %d bytes (sha %.12s), want %s of %d (sha %.12s)",
			e.Type, e.Length, e.SHA256, typ, len(want), sha(want))
	}
}

// nodeConversation runs the exchange every Node client test shares through the
// proxy, whatever the client's transport: UTF-8 and sized echoes, a fragmented
// message (checked frame by frame on the upstream), pings and an unsolicited pong
// both ways, and a client close with 4001 that gorilla echoes without the reason.
func nodeConversation(t *testing.T, node *nodeProc, uc *upConn) {
	t.Helper()
	node.Send(t, map[string]any{"op": "text", "data": utf8Text})
	if e := node.Expect(t, "message"); e.Type != "text" || e.Data != utf8Text {
		t.Errorf("utf-8 echo: %+v", e)
	}
	for _, n := range sizeClasses {
		node.Send(t, map[string]any{"op": "text", "size": n})
		expectMessage(t, node.Expect(t, "message"), true, testkit.Pattern(n, true))
		node.Send(t, map[string]any{"op": "binary", "size": n})
		expectMessage(t, node.Expect(t, "message"), false, testkit.Pattern(n, false))
	}

	before := len(uc.Frames())
	node.Send(t, map[string]any{"op": "fragments", "type": "text", "parts": []string{"frag", "mented ", "téxt"}})
	expectMessage(t, node.Expect(t, "message"), true, []byte("fragmented téxt"))
	want := []wireFrame{{Op: 0x1, Len: 4}, {Op: 0x0, Len: 7}, {Op: 0x0, Fin: true, Len: 5}}
	if got := uc.Frames()[before:]; !slices.Equal(got, want) {
		t.Errorf("upstream got frames %+v, want %+v", got, want)
	}

	node.Send(t, map[string]any{"op": "ping", "data": "node-ping"})
	if e := node.Expect(t, "pong"); e.Data != "node-ping" {
		t.Errorf("pong %q, want node-ping", e.Data)
	}
	node.Send(t, map[string]any{"op": "pong", "data": "unsolicited"})
	expectPong(t, uc, "unsolicited")
	if err := uc.Ping(context.Background(), "upstream-ping"); err != nil {
		t.Fatal(err)
	}
	if e := node.Expect(t, "ping"); e.Data != "upstream-ping" {
		t.Errorf("node got ping %q, want upstream-ping", e.Data)
	}
	expectPong(t, uc, "upstream-ping") // the client answers pings by itself

	node.Send(t, map[string]any{"op": "close", "code": 4001, "reason": "bye"})
	waitClose(t, uc, 4001, "bye")
	// gorilla echoes the code without the reason.
	if e := node.Expect(t, "close"); e.Code != 4001 || e.Reason != "" {
		t.Errorf("node got close %d %q, want 4001 \"\"", e.Code, e.Reason)
	}
}

// demoRouter is examples/chi's router without its WebSocket route: chi's
// request ID, real IP and recoverer middleware, the demo page at /.
func demoRouter(t testing.TB) chi.Router {
	t.Helper()
	page := demoPage(t)
	r := chi.NewRouter()
	r.Use(middleware.RequestID, middleware.RealIP, middleware.Recoverer)
	r.Get("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(page)
	})
	r.Get("/favicon.ico", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	return r
}

// notWS answers what reaches the handler behind the proxy's middleware: a
// request to /ws that is not a WebSocket handshake.
func notWS(w http.ResponseWriter, r *http.Request) {
	http.Error(w, "this endpoint speaks WebSocket", http.StatusUpgradeRequired)
}
