package proxy

// Compression modes (compression.go). Clients and upstreams are coder/websocket
// (context takeover or not) and gorilla/websocket, never wsmw, so that a wsmw
// bug cannot hide itself; a TCP tap shows what crossed each leg on the wire.
// Every helper name starts with "cz".

import (
	"bytes"
	"context"
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

	"github.com/wsgate/wsgate/internal/testkit"
	"github.com/wsgate/wsgate/wsmw"
)

// tap is a TCP forwarder to target that records the bytes of its first
// connection in each direction: up (towards target) and down.
type tap struct {
	*testkit.RawServer

	mu       sync.Mutex
	targets  []net.Conn
	n        int
	up, down bytes.Buffer
}

func startTap(t *testing.T, target string) *tap {
	t.Helper()
	tp := &tap{}
	tp.RawServer = testkit.StartTCPServer(t, func(a *testkit.Conn) {
		b, err := net.Dial("tcp", target)
		if err != nil {
			return
		}
		tp.mu.Lock()
		tp.targets = append(tp.targets, b)
		first := tp.n == 0
		tp.n++
		tp.mu.Unlock()
		up := make(chan struct{})
		go func() {
			defer close(up)
			tp.copy(b, a.R, first, &tp.up)
		}()
		tp.copy(a.Conn, b, first, &tp.down)
		<-up
	})
	t.Cleanup(func() { // before the RawServer closes the client side and waits
		tp.mu.Lock()
		defer tp.mu.Unlock()
		for _, b := range tp.targets {
			b.Close()
		}
	})
	return tp
}

func (tp *tap) copy(dst net.Conn, src io.Reader, record bool, buf *bytes.Buffer) {
	var w io.Writer = dst
	if record {
		w = io.MultiWriter(dst, lockedWriter{&tp.mu, buf})
	}
	io.Copy(w, src)
	// Half-close like a real network would: the peer sees EOF, then the other copy ends.
	if tc, ok := dst.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// frames parses the data frames recorded in one direction, after the HTTP
// handshake; a frame cut short at the end is left out.
func (tp *tap) frames(up bool) []testkit.Frame {
	tp.mu.Lock()
	data := tp.up.Bytes()
	if !up {
		data = tp.down.Bytes()
	}
	data = bytes.Clone(data)
	tp.mu.Unlock()
	i := bytes.Index(data, []byte("\r\n\r\n"))
	if i < 0 {
		return nil
	}
	r := bytes.NewReader(data[i+4:])
	var out []testkit.Frame
	for {
		f, err := testkit.ReadFrame(r, testkit.DefaultMaxFrame)
		if err != nil {
			return out
		}
		if f.Op < 0x8 {
			out = append(out, f)
		}
	}
}

// messagesOf groups data frames into messages: the first frame of each with
// the total wire length of its payload.
type wireMessage struct {
	first testkit.Frame
	wire  int
}

func messagesOf(frames []testkit.Frame) []wireMessage {
	var out []wireMessage
	for _, f := range frames {
		if f.Op != wsmw.OpContinuation {
			out = append(out, wireMessage{first: f})
		}
		if len(out) > 0 {
			out[len(out)-1].wire += len(f.Payload)
		}
	}
	return out
}

// wantCompressed checks that messages idx of msgs crossed the leg (up: towards
// the upstream) compressed: with RSV1, in fewer than under bytes on the wire.
func wantCompressed(t *testing.T, leg string, up bool, msgs []wireMessage, idx []int, under int) {
	t.Helper()
	for _, i := range idx {
		if m := msgs[i]; m.first.Rsv != 0x40 || m.wire >= under {
			t.Errorf("%s leg (up=%v) message %d: rsv %#x, %d bytes on the wire; want RSV1 and compressed", leg, up, i, m.first.Rsv, m.wire)
		}
	}
}

// span returns 0, 1, ..., n-1.
func span(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}

// messages returns the messages the tap saw in one direction (up: towards
// the target) of the leg, failing the test unless there are want.
func (tp *tap) messages(t *testing.T, leg string, up bool, want int) []wireMessage {
	t.Helper()
	msgs := messagesOf(tp.frames(up))
	if len(msgs) != want {
		t.Fatalf("%s leg (up=%v): %d messages on the wire, want %d", leg, up, len(msgs), want)
	}
	return msgs
}

// coderUpstream is a coder/websocket upstream with the given compression; it
// records the handshake requests and runs handle per connection.
type coderUpstream struct {
	*httptest.Server
	URL  string
	wg   sync.WaitGroup
	mu   sync.Mutex
	reqs []http.Header
	ws   []*coder.Conn
}

func startCoderUpstream(t *testing.T, mode coder.CompressionMode, handle func(ctx context.Context, c *coder.Conn)) *coderUpstream {
	t.Helper()
	s := &coderUpstream{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.wg.Add(1)
		defer s.wg.Done()
		s.mu.Lock()
		s.reqs = append(s.reqs, r.Header.Clone())
		s.mu.Unlock()
		c, err := coder.Accept(w, r, &coder.AcceptOptions{CompressionMode: mode, InsecureSkipVerify: true})
		if err != nil {
			return
		}
		c.SetReadLimit(1 << 20)
		s.mu.Lock()
		s.ws = append(s.ws, c)
		s.mu.Unlock()
		defer c.CloseNow()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		handle(ctx, c)
	}))
	s.URL = testkit.WSURL(s.Server.URL)
	t.Cleanup(s.Close)
	return s
}

// offered returns the Sec-WebSocket-Extensions the upstream was offered last.
func (s *coderUpstream) offered() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.reqs) == 0 {
		return "<no request>"
	}
	return strings.Join(s.reqs[len(s.reqs)-1].Values("Sec-Websocket-Extensions"), ", ")
}

// Close closes the server and every connection and waits for the handlers.
func (s *coderUpstream) Close() {
	s.Server.Close()
	s.mu.Lock()
	for _, c := range s.ws {
		c.CloseNow()
	}
	s.ws = nil
	s.mu.Unlock()
	s.wg.Wait()
}

// coderEcho echoes every message; the error that ended it goes to got.
func coderEcho(got chan<- error) func(ctx context.Context, c *coder.Conn) {
	return func(ctx context.Context, c *coder.Conn) {
		err := testkit.CoderEcho(ctx, c)
		if got != nil {
			got <- err
		}
	}
}

// coderEchoOnce sends msg and expects it back.
func coderEchoOnce(t *testing.T, ctx context.Context, c *coder.Conn, typ coder.MessageType, msg string) {
	t.Helper()
	if err := c.Write(ctx, typ, []byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
	gotTyp, p, err := c.Read(ctx)
	if err != nil || gotTyp != typ || string(p) != msg {
		t.Fatalf("echo of %d bytes: got type %v, %d bytes, %v", len(msg), gotTyp, len(p), err)
	}
}

// closeCoder closes c normally and waits for the session to end.
func closeCoder(t *testing.T, e *proxyEnv, c *coder.Conn) {
	t.Helper()
	if err := c.Close(coder.StatusNormalClosure, "done"); err != nil {
		t.Errorf("close: %v", err)
	}
	waitSessions(t, e.p, 5*time.Second)
}

// deflateParams returns the permessage-deflate parameters of the proxy's one
// session: as negotiated with the client and with the upstream.
func deflateParams(t *testing.T, p *Proxy) (client, up wsmw.DeflateParams, okClient, okUp bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		p.mu.Lock()
		for s := range p.sessions {
			client, okClient = s.client.conn.Compression()
			up, okUp = s.up.conn.Compression()
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatal("no session")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// jsonText is compressible text of about n bytes: valid JSON.
func jsonText(n int) string {
	var b strings.Builder
	b.WriteString(`{"items":[`)
	for i := 0; b.Len() < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"name":"item","value":"the quick brown fox jumps over the lazy dog"}`)
	}
	b.WriteString("]}")
	return b.String()
}

// wordsText is text of about n bytes that compresses to about half: a repeat of
// it is much smaller again only with context takeover.
func wordsText(n int) string {
	words := []string{"alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo", "lima"}
	var b strings.Builder
	x := uint32(2463534242)
	for b.Len() < n {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b.WriteString(words[x%uint32(len(words))])
		b.WriteByte(byte('0' + x>>8%10))
		b.WriteByte(' ')
	}
	return b.String()
}

// hostOf returns the host:port of a ws:// URL.
func hostOf(u string) string { return strings.TrimPrefix(u, "ws://") }

func TestCompressionModeParse(t *testing.T) {
	for s, want := range map[string]CompressionMode{"": CompressionOff, "off": CompressionOff, "passthrough": CompressionPassthrough, "terminate": CompressionTerminate} {
		if got, err := ParseCompressionMode(s); err != nil || got != want {
			t.Errorf("ParseCompressionMode(%q) = %v, %v; want %v", s, got, err, want)
		}
		if s != "" && want.String() != s {
			t.Errorf("%v.String() = %q", want, want.String())
		}
	}
	if _, err := ParseCompressionMode("on"); err == nil {
		t.Error(`ParseCompressionMode("on"): no error`)
	}
	if _, err := New(Config{Upstreams: []string{"ws://127.0.0.1:1"}, Compression: 7}); err == nil {
		t.Error("New accepted compression mode 7")
	}
	p, err := New(Config{Upstreams: []string{"ws://127.0.0.1:1"}, Compression: CompressionTerminate})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(context.Background())
	if c := p.cfg.ClientCompression; c == nil || *c != (wsmw.CompressionOptions{ServerNoContextTakeover: true}) || p.cfg.UpstreamCompression != nil {
		t.Errorf("terminate defaults: client %+v upstream %v, want server_no_context_takeover and nil", c, p.cfg.UpstreamCompression)
	}
}

// Off (the default): the offer is stripped, neither leg is compressed although both could.
func TestCompressionOffStripsOffer(t *testing.T) {
	testkit.CheckGoroutines(t)
	up := startCoderUpstream(t, coder.CompressionContextTakeover, coderEcho(nil))
	e := startSession(t, up.URL, Config{})

	c, ext, ctx := dialCoder(t, e.URL, coder.CompressionContextTakeover)
	if ext != "" {
		t.Errorf("client got Sec-WebSocket-Extensions %q, want none", ext)
	}
	coderEchoOnce(t, ctx, c, coder.MessageText, jsonText(4000))
	if got := up.offered(); got != "" {
		t.Errorf("upstream was offered %q, want nothing", got)
	}
	if _, _, okC, okU := deflateParams(t, e.p); okC || okU {
		t.Errorf("compression in effect: client leg %v, upstream leg %v", okC, okU)
	}
	closeCoder(t, e, c)
}

// Passthrough without inspectors: negotiated end to end with context takeover,
// compressed frames cross the upstream leg as the client sent them.
func TestCompressionPassthroughContextTakeover(t *testing.T) {
	testkit.CheckGoroutines(t)
	up := startCoderUpstream(t, coder.CompressionContextTakeover, coderEcho(nil))
	tap := startTap(t, hostOf(up.URL))
	e := startSession(t, "ws://"+tap.Addr(), Config{Compression: CompressionPassthrough})

	c, ext, ctx := dialCoder(t, e.URL, coder.CompressionContextTakeover)
	if ext != "permessage-deflate" {
		t.Errorf("client got Sec-WebSocket-Extensions %q, want the upstream's plain permessage-deflate", ext)
	}
	if got := up.offered(); got != "permessage-deflate" {
		t.Errorf("upstream was offered %q, want the client's offer as it is", got)
	}
	msg := wordsText(8000)
	for range 3 {
		coderEchoOnce(t, ctx, c, coder.MessageText, msg)
	}
	coderEchoOnce(t, ctx, c, coder.MessageBinary, string(bytes.Repeat([]byte{1, 2, 3, 4}, 5000)))
	coderEchoOnce(t, ctx, c, coder.MessageText, "short")
	pc, pu, okC, okU := deflateParams(t, e.p)
	if !okC || !okU || pc.ClientNoContextTakeover || pc.ServerNoContextTakeover || pu != pc {
		t.Errorf("negotiated: client leg %+v (%v), upstream leg %+v (%v); want the same, with context takeover", pc, okC, pu, okU)
	}
	closeCoder(t, e, c)

	for _, dir := range []bool{true, false} {
		msgs := tap.messages(t, "upstream", dir, 5)
		wantCompressed(t, "upstream", dir, msgs, span(4), len(msg)*3/4)
		// coder's sender (stdlib BestSpeed) gains little from the window: that
		// context takeover is in force shows in the parameters and in coder's
		// receiver inflating later messages with the window of earlier ones.
		if m := msgs[4]; m.first.Rsv != 0 || string(m.first.Payload) != "short" {
			t.Errorf("upstream leg (up=%v): short message rsv %#x payload %q, want it uncompressed", dir, m.first.Rsv, m.first.Payload)
		}
	}
}

// Passthrough with a payload inspector in both directions: no context takeover
// is forced both ways, compressed messages are inflated for ValidateJSON and
// forwarded compressed, an invalid one gets 1007.
func TestCompressionPassthroughInspected(t *testing.T) {
	bad := `{"broken":` + strings.Repeat(" ", 2000)
	for _, tc := range []struct {
		name                   string
		trigger                string // what the client sends to make things go wrong
		clientCode, upCode     int
		clientReason, upReason string
	}{
		{"invalid from client", bad, 1007, 1001, "invalid json", "client message refused"},
		{"invalid from upstream", `{"send":"bad"}`, 1014, 1007, "upstream message refused", "invalid json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testkit.CheckGoroutines(t)
			upGot := make(chan error, 1)
			up := startCoderUpstream(t, coder.CompressionContextTakeover, func(ctx context.Context, c *coder.Conn) {
				for {
					typ, p, err := c.Read(ctx)
					if err == nil {
						if string(p) == `{"send":"bad"}` {
							p = []byte(bad)
						}
						err = c.Write(ctx, typ, p)
					}
					if err != nil {
						upGot <- err
						return
					}
				}
			})
			tap := startTap(t, hostOf(up.URL))
			e := startSession(t, "ws://"+tap.Addr(), Config{Compression: CompressionPassthrough, Inspectors: Chain{ValidateJSON{}}})

			c, ext, ctx := dialCoder(t, e.URL, coder.CompressionContextTakeover)
			if got := up.offered(); got != "permessage-deflate; client_no_context_takeover; server_no_context_takeover" {
				t.Errorf("upstream was offered %q, want no context takeover asked both ways", got)
			}
			if !strings.Contains(ext, "client_no_context_takeover") || !strings.Contains(ext, "server_no_context_takeover") {
				t.Errorf("client got %q, want no context takeover both ways", ext)
			}
			pc, pu, okC, okU := deflateParams(t, e.p)
			if !okC || !okU || !pc.ClientNoContextTakeover || !pu.ServerNoContextTakeover {
				t.Errorf("negotiated: client leg %+v (%v), upstream leg %+v (%v); want the client's and the upstream's sending without context takeover", pc, okC, pu, okU)
			}
			msg := jsonText(6000)
			for range 3 {
				coderEchoOnce(t, ctx, c, coder.MessageText, msg)
			}
			coderEchoOnce(t, ctx, c, coder.MessageBinary, "not json, binary passes")

			if err := c.Write(ctx, coder.MessageText, []byte(tc.trigger)); err != nil {
				t.Fatal(err)
			}
			_, _, err := c.Read(ctx)
			wantCoderClose(t, "client", err, tc.clientCode, tc.clientReason)
			wantCoderClose(t, "upstream", testkit.Recv(t, upGot, 5*time.Second, "upstream end"), tc.upCode, tc.upReason)
			e.wantEnd(1007, initiatorProxy)

			// The valid messages crossed the upstream leg compressed, both ways.
			for _, dir := range []bool{true, false} {
				msgs := messagesOf(tap.frames(dir))
				if len(msgs) < 3 {
					t.Fatalf("upstream leg (up=%v): %d messages", dir, len(msgs))
				}
				wantCompressed(t, "upstream", dir, msgs, span(3), len(msg)/2)
			}
		})
	}
}

// Passthrough with an inspector: a small compressed message that inflates past
// MaxMessageSize is refused with 1009 and never reaches the upstream.
func TestCompressionPassthroughBomb(t *testing.T) {
	testkit.CheckGoroutines(t)
	upGot := make(chan error, 1)
	up := startCoderUpstream(t, coder.CompressionContextTakeover, coderEcho(upGot))
	e := startSession(t, up.URL, Config{Compression: CompressionPassthrough, MaxMessageSize: 64 << 10, Inspectors: Chain{ValidateJSON{}}})

	c, _, ctx := dialCoder(t, e.URL, coder.CompressionNoContextTakeover)
	coderEchoOnce(t, ctx, c, coder.MessageText, jsonText(40<<10)) // under the limit: passes
	bomb := `"` + strings.Repeat("a", 1<<20) + `"`                // about 1 KiB compressed
	if err := c.Write(ctx, coder.MessageText, []byte(bomb)); err != nil {
		t.Fatal(err)
	}
	_, _, err := c.Read(ctx)
	wantCoderClose(t, "client", err, 1009, "message too big")
	wantCoderClose(t, "upstream", testkit.Recv(t, upGot, 5*time.Second, "upstream end"), 1001, "client message refused")
	e.wantEnd(1009, initiatorProxy)
}

// Passthrough: the upstream's answer is checked against the offer the proxy
// sent. One that does not confirm server_no_context_takeover (asked for by the
// proxy for an inspector) or answers a window the client did not offer fails
// the dial (502); one that leaves out client_no_context_takeover, which the
// proxy needs, gets it added in the answer relayed to the client.
func TestCompressionPassthroughUpstreamAnswer(t *testing.T) {
	for _, tc := range []struct {
		name       string
		inspect    bool
		answer     string
		wantStatus int
		wantExt    string // the client's answer on success
	}{
		{"server_no_context_takeover not confirmed", true, "permessage-deflate", http.StatusBadGateway, ""},
		{"client_max_window_bits not offered", false, "permessage-deflate; client_max_window_bits=10", http.StatusBadGateway, ""},
		{"twice", false, "permessage-deflate, permessage-deflate", http.StatusBadGateway, ""},
		{"unknown parameter", false, "permessage-deflate; x=1", http.StatusBadGateway, ""},
		{"client_no_context_takeover added", true, "permessage-deflate; server_no_context_takeover",
			http.StatusSwitchingProtocols, "permessage-deflate; server_no_context_takeover; client_no_context_takeover"},
		{"relayed as it is", false, "permessage-deflate; server_max_window_bits=10",
			http.StatusSwitchingProtocols, "permessage-deflate; server_max_window_bits=10"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testkit.CheckGoroutines(t)
			var wg sync.WaitGroup
			offered := make(chan string, 4)
			up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				wg.Add(1)
				defer wg.Done()
				offered <- r.Header.Get("Sec-WebSocket-Extensions")
				nc, brw, err := http.NewResponseController(w).Hijack()
				if err != nil {
					return
				}
				defer nc.Close()
				brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
					testkit.AcceptKey(r.Header.Get("Sec-WebSocket-Key")) + "\r\nSec-WebSocket-Extensions: " + tc.answer + "\r\n\r\n")
				brw.Flush()
				nc.SetReadDeadline(time.Now().Add(3 * time.Second))
				io.Copy(io.Discard, nc)
			}))
			defer wg.Wait()
			defer up.Close()
			cfg := Config{Compression: CompressionPassthrough}
			if tc.inspect {
				cfg.Inspectors = Chain{ValidateJSON{}}
			}
			e := startSession(t, "ws"+strings.TrimPrefix(up.URL, "http"), cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, resp, err := coder.Dial(ctx, e.URL, &coder.DialOptions{CompressionMode: coder.CompressionContextTakeover})
			if resp == nil || resp.StatusCode != tc.wantStatus {
				t.Fatalf("want status %d, got %v (%v)", tc.wantStatus, resp, err)
			}
			if c != nil {
				if got := resp.Header.Get("Sec-WebSocket-Extensions"); got != tc.wantExt {
					t.Errorf("client got %q, want %q", got, tc.wantExt)
				}
				c.Close(coder.StatusNormalClosure, "")
			}
			got := testkit.Recv(t, offered, time.Second, "upstream request")
			if want := "permessage-deflate"; tc.inspect {
				want += "; client_no_context_takeover; server_no_context_takeover"
				if got != want {
					t.Errorf("upstream was offered %q, want %q", got, want)
				}
			} else if got != want {
				t.Errorf("upstream was offered %q, want %q", got, want)
			}
		})
	}
}

// Terminate: a compressed client leg and a plain gorilla upstream. Messages are
// inflated for the upstream and compressed again for the client; an inspector
// sees (and replaces) the plain payload.
func TestCompressionTerminatePlainUpstream(t *testing.T) {
	testkit.CheckGoroutines(t)
	up := startGorilla(t, gorillaEcho(nil)) // gorilla's Upgrader without EnableCompression
	upTap := startTap(t, hostOf(up.URL))
	upper := InspectFunc(func(dir Direction, op wsmw.OpCode) bool { return dir == ClientToUpstream }, func(m *Message) Verdict {
		if rest, ok := bytes.CutPrefix(m.Payload, []byte("upper:")); ok {
			return Verdict{Action: Replace, Payload: bytes.ToUpper(rest)}
		}
		return Verdict{Action: Pass}
	})
	e := startSession(t, "ws://"+upTap.Addr(), Config{Compression: CompressionTerminate, Inspectors: Chain{upper}})
	front := startTap(t, hostOf(e.URL))

	c, ext, ctx := dialCoder(t, "ws://"+front.Addr(), coder.CompressionContextTakeover)
	if !strings.HasPrefix(ext, "permessage-deflate") {
		t.Errorf("client got Sec-WebSocket-Extensions %q, want permessage-deflate", ext)
	}
	msg := jsonText(8000)
	for range 3 {
		coderEchoOnce(t, ctx, c, coder.MessageText, msg)
	}
	coderEchoOnce(t, ctx, c, coder.MessageBinary, string(bytes.Repeat([]byte("binary"), 3000)))
	coderEchoOnce(t, ctx, c, coder.MessageText, "short")
	long := "upper:" + strings.Repeat("make me loud ", 200)
	if err := c.Write(ctx, coder.MessageText, []byte(long)); err != nil {
		t.Fatal(err)
	}
	if _, p, err := c.Read(ctx); err != nil || string(p) != strings.ToUpper(long[6:]) {
		t.Fatalf("replaced echo: %d bytes %v", len(p), err)
	}
	pc, _, okC, okU := deflateParams(t, e.p)
	if !okC || okU || pc.ClientNoContextTakeover || !pc.ServerNoContextTakeover {
		t.Errorf("client leg %+v (%v), upstream leg compressed %v; want the client's context takeover but not the proxy's, upstream plain", pc, okC, okU)
	}
	closeCoder(t, e, c)

	for _, dir := range []bool{true, false} {
		// Upstream leg: plain, every byte of every message.
		msgs := upTap.messages(t, "upstream", dir, 6)
		for i, m := range msgs {
			if m.first.Rsv != 0 {
				t.Errorf("upstream leg (up=%v) message %d has rsv %#x, want plain", dir, i, m.first.Rsv)
			}
		}
		if msgs[0].wire != len(msg) {
			t.Errorf("upstream leg (up=%v): first message %d bytes, want %d plain", dir, msgs[0].wire, len(msg))
		}
		// Client leg: compressed both ways (all but the short one).
		cm := front.messages(t, "client", dir, 6)
		wantCompressed(t, "client", dir, cm, []int{0, 1, 2, 3, 5}, len(msg)/4)
	}
}

// Terminate with both legs compressed, each with its own context.
func TestCompressionTerminateBothCompressed(t *testing.T) {
	testkit.CheckGoroutines(t)
	up := startCoderUpstream(t, coder.CompressionContextTakeover, coderEcho(nil))
	tap := startTap(t, hostOf(up.URL))
	e := startSession(t, "ws://"+tap.Addr(), Config{
		Compression:         CompressionTerminate,
		ClientCompression:   &wsmw.CompressionOptions{ServerNoContextTakeover: true},
		UpstreamCompression: &wsmw.CompressionOptions{Level: 6},
	})

	c, ext, ctx := dialCoder(t, e.URL, coder.CompressionContextTakeover)
	if !strings.Contains(ext, "server_no_context_takeover") {
		t.Errorf("client got %q, want the client options' server_no_context_takeover", ext)
	}
	if got := up.offered(); !strings.HasPrefix(got, "permessage-deflate") || strings.Contains(got, "no_context_takeover") {
		t.Errorf("upstream was offered %q, want the upstream options' offer", got)
	}
	msg := wordsText(8000)
	for range 3 {
		coderEchoOnce(t, ctx, c, coder.MessageText, msg)
	}
	pc, pu, okC, okU := deflateParams(t, e.p)
	if !okC || !okU || !pc.ServerNoContextTakeover || pu.ServerNoContextTakeover || pu.ClientNoContextTakeover {
		t.Errorf("client leg %+v (%v), upstream leg %+v (%v)", pc, okC, pu, okU)
	}
	closeCoder(t, e, c)
	for _, dir := range []bool{true, false} {
		msgs := tap.messages(t, "upstream", dir, 3)
		wantCompressed(t, "upstream", dir, msgs, span(len(msgs)), len(msg)*3/4)
		if dir && msgs[2].wire*4 > msgs[0].wire { // sent by the proxy's own compressor
			t.Errorf("upstream leg (up=%v): repeated message %d bytes vs first %d: context takeover not in use", dir, msgs[2].wire, msgs[0].wire)
		}
	}
}

// Terminate: corrupt compressed data from the client gets 1007, the upstream 1001.
func TestCompressionTerminateCorrupt(t *testing.T) {
	testkit.CheckGoroutines(t)
	upGot := make(chan error, 1)
	up := startGorilla(t, gorillaEcho(upGot))
	e := startSession(t, up.URL, Config{Compression: CompressionTerminate})

	// A raw client: the handshake offers permessage-deflate by hand.
	raw, resp, err := testkit.Handshake(hostOf(e.URL), "/", http.Header{"Sec-WebSocket-Extensions": {"permessage-deflate"}})
	if err != nil || resp.StatusCode != 101 || !strings.HasPrefix(resp.Header.Get("Sec-WebSocket-Extensions"), "permessage-deflate") {
		t.Fatalf("handshake: %v %v", resp, err)
	}
	defer raw.Close()
	raw.Send(testkit.Frame{Fin: true, Rsv: 0x40, Op: wsmw.OpText, Payload: []byte{0xff, 0xff, 0xff, 0xff}})
	clientClose(t, raw, 3*time.Second, 1007, "invalid compressed data")
	raw.SendClose(1007, "")
	wantClose(t, "upstream", testkit.Recv(t, upGot, 3*time.Second, "upstream end"), 1001, "client message refused")
	e.wantEnd(1007, initiatorProxy)
}

// dialGorillaCompressed dials with gorilla and EnableCompression (no context takeover only).
func dialGorillaCompressed(t *testing.T, url string) (*websocket.Conn, string) {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second, EnableCompression: true}
	c, resp, err := d.Dial(url, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	return c, resp.Header.Get("Sec-WebSocket-Extensions")
}

// Passthrough between gorilla peers (no context takeover offered by the client,
// accepted by the upstream): the parameters come through unchanged.
func TestCompressionPassthroughGorilla(t *testing.T) {
	testkit.CheckGoroutines(t)
	up := testkit.StartGorillaServer(t, websocket.Upgrader{EnableCompression: true}, gorillaEcho(nil))
	e := startSession(t, up.URL, Config{Compression: CompressionPassthrough})
	c, ext := dialGorillaCompressed(t, e.URL)
	defer c.Close()
	if ext != "permessage-deflate; server_no_context_takeover; client_no_context_takeover" {
		t.Errorf("client got %q", ext)
	}
	c.EnableWriteCompression(true)
	msg := jsonText(5000)
	for range 2 {
		if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		if _, p, err := c.ReadMessage(); err != nil || string(p) != msg {
			t.Fatalf("echo: %d bytes %v", len(p), err)
		}
	}
	sendClose(c, 1000, "")
	readErr(c, 3*time.Second)
	waitSessions(t, e.p, 5*time.Second)
}

// Passthrough: an inspector that drops binary messages at their first frame.
// With no context takeover (gorilla) the drop is harmless; with it (coder), a
// dropped compressed message would break the upstream's window, so the
// session is closed with 1011 instead. Uncompressed messages drop either way.
func TestCompressionPassthroughDrop(t *testing.T) {
	dropBinary := InspectFunc(nil, func(m *Message) Verdict {
		if m.OpCode == wsmw.OpBinary && m.Direction == ClientToUpstream {
			return Verdict{Action: Drop}
		}
		return Verdict{Action: Pass}
	})
	big := bytes.Repeat([]byte("0123456789"), 1000)
	t.Run("no context takeover", func(t *testing.T) {
		testkit.CheckGoroutines(t)
		up := testkit.StartGorillaServer(t, websocket.Upgrader{EnableCompression: true}, gorillaEcho(nil))
		e := startSession(t, up.URL, Config{Compression: CompressionPassthrough, Inspectors: Chain{dropBinary}})
		c, ext := dialGorillaCompressed(t, e.URL)
		defer c.Close()
		if !strings.HasPrefix(ext, "permessage-deflate") {
			t.Fatalf("client got %q", ext)
		}
		c.EnableWriteCompression(true)
		c.WriteMessage(websocket.BinaryMessage, big)
		c.WriteMessage(websocket.TextMessage, big)
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		if typ, p, err := c.ReadMessage(); err != nil || typ != websocket.TextMessage || !bytes.Equal(p, big) {
			t.Fatalf("after the dropped binary message: type %d, %d bytes, %v", typ, len(p), err)
		}
		sendClose(c, 1000, "")
		readErr(c, 3*time.Second)
		waitSessions(t, e.p, 5*time.Second)
	})
	t.Run("context takeover", func(t *testing.T) {
		testkit.CheckGoroutines(t)
		upGot := make(chan error, 1)
		up := startCoderUpstream(t, coder.CompressionContextTakeover, coderEcho(upGot))
		e := startSession(t, up.URL, Config{Compression: CompressionPassthrough, Inspectors: Chain{dropBinary}})
		c, ext, ctx := dialCoder(t, e.URL, coder.CompressionContextTakeover)
		if ext != "permessage-deflate" {
			t.Fatalf("client got %q, want context takeover kept (no inspector reads payloads)", ext)
		}
		c.Write(ctx, coder.MessageBinary, []byte("tiny")) // under coder's threshold: sent uncompressed, dropped
		coderEchoOnce(t, ctx, c, coder.MessageText, string(big))
		c.Write(ctx, coder.MessageBinary, big)
		_, _, err := c.Read(ctx)
		wantCoderClose(t, "client", err, 1011, "compressed message cannot be dropped")
		wantCoderClose(t, "upstream", testkit.Recv(t, upGot, 5*time.Second, "upstream end"), 1001, "client message refused")
		e.wantEnd(1011, initiatorProxy)
	})
}
