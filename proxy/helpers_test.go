package proxy

// Helpers for the handshake tests (handshake_test.go, headers_test.go). Every
// name starts with "hs" so they cannot collide with other test files. Upstreams
// are written with gorilla/websocket or raw net/http, never with wsmw, so that a
// wsmw bug cannot hide itself.

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
)

// hsSeen is what an upstream saw of one handshake request.
type hsSeen struct {
	Host   string
	URI    string
	Header http.Header
}

// hsServer is a test upstream that counts and records every request.
type hsServer struct {
	*httptest.Server
	hits atomic.Int64

	mu   sync.Mutex
	seen []hsSeen
}

func hsRecord(s *hsServer, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		s.mu.Lock()
		s.seen = append(s.seen, hsSeen{Host: r.Host, URI: r.RequestURI, Header: r.Header.Clone()})
		s.mu.Unlock()
		h.ServeHTTP(w, r)
	})
}

// hsStart starts an upstream serving h; it is closed when the test ends.
func hsStart(t *testing.T, h http.Handler) *hsServer {
	t.Helper()
	s := &hsServer{}
	s.Server = httptest.NewServer(hsRecord(s, h))
	t.Cleanup(s.Close)
	return s
}

// hsStartTLS starts a TLS upstream serving h (handshake errors are not logged).
func hsStartTLS(t *testing.T, h http.Handler) *hsServer {
	t.Helper()
	s := &hsServer{}
	s.Server = httptest.NewUnstartedServer(hsRecord(s, h))
	s.Config.ErrorLog = hsDiscardLog()
	s.StartTLS()
	t.Cleanup(s.Close)
	return s
}

// last returns the last request the upstream saw.
func (s *hsServer) last(t *testing.T) hsSeen {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.seen) == 0 {
		t.Fatal("upstream saw no request")
	}
	return s.seen[len(s.seen)-1]
}

// ws returns the upstream's ws:// (or wss://) URL.
func (s *hsServer) ws() string { return "ws" + strings.TrimPrefix(s.URL, "http") }

// hsEcho returns a gorilla upstream handler: it upgrades with u (any origin
// allowed unless u.CheckOrigin is set) and respHeader, then echoes until close.
func hsEcho(u websocket.Upgrader, respHeader http.Header) http.HandlerFunc {
	if u.CheckOrigin == nil {
		u.CheckOrigin = func(*http.Request) bool { return true }
	}
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := u.Upgrade(w, r, respHeader)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			mt, p, err := c.ReadMessage()
			if err != nil {
				return
			}
			if err := c.WriteMessage(mt, p); err != nil {
				return
			}
		}
	}
}

// hsRefuse returns a handler answering status with header and body.
func hsRefuse(status int, header http.Header, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		for k, vs := range header {
			w.Header()[k] = vs
		}
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

// hsEnv is a proxy under test behind an httptest front server.
type hsEnv struct {
	p     *Proxy
	front *httptest.Server
}

// hsProxy creates a proxy for cfg behind a front server. When the test ends it
// checks that every session has ended, then shuts the proxy down and closes the front.
func hsProxy(t *testing.T, cfg Config) *hsEnv {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	front := httptest.NewServer(p)
	t.Cleanup(front.Close)
	t.Cleanup(func() {
		if !hsWaitIdle(p, 3*time.Second) {
			t.Errorf("%d sessions still active at the end of the test", p.ActiveSessions())
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return &hsEnv{p: p, front: front}
}

// ws returns the front's ws:// URL for path (with query).
func (e *hsEnv) ws(path string) string { return "ws" + strings.TrimPrefix(e.front.URL, "http") + path }

// host returns the front's host:port.
func (e *hsEnv) host() string { return strings.TrimPrefix(e.front.URL, "http://") }

// hsWaitIdle waits until p has no active session (or handshake).
func hsWaitIdle(p *Proxy, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for p.ActiveSessions() != 0 {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// hsDial dials the front with gorilla. On a refused handshake it returns the
// response with its (gorilla-truncated) body.
func hsDial(t *testing.T, url string, hdr http.Header, subprotocols ...string) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	d := websocket.Dialer{Subprotocols: subprotocols, HandshakeTimeout: 5 * time.Second}
	return d.Dial(url, hdr)
}

// hsMustDial dials the front with gorilla and fails the test unless it upgrades.
func hsMustDial(t *testing.T, url string, hdr http.Header, subprotocols ...string) (*websocket.Conn, *http.Response) {
	t.Helper()
	c, resp, err := hsDial(t, url, hdr, subprotocols...)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s: %v (status %d)", url, err, status)
	}
	return c, resp
}

// hsEchoOnce sends msg and expects it back.
func hsEchoOnce(t *testing.T, c *websocket.Conn, msg string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
	mt, got, err := c.ReadMessage()
	if err != nil || mt != websocket.TextMessage || string(got) != msg {
		t.Fatalf("echo: got %d %q %v, want %q", mt, got, err, msg)
	}
	c.SetReadDeadline(time.Time{})
}

// hsCloseGorilla closes c with 1000 and waits for the proxy's close (or EOF).
func hsCloseGorilla(t *testing.T, c *websocket.Conn) {
	t.Helper()
	defer c.Close()
	c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	for {
		if _, _, err := c.ReadMessage(); err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != websocket.CloseNormalClosure {
				t.Errorf("closing: got %v, want the 1000 echoed", err)
			}
			return
		}
	}
}

// hsRaw is the result of a raw handshake: the response, its body (non-101),
// and, after a 101, the open connection.
type hsRaw struct {
	resp *http.Response
	body string
	key  string // the Sec-WebSocket-Key sent
	conn net.Conn
	br   *bufio.Reader
}

// hsNewKey returns a fresh valid Sec-WebSocket-Key.
func hsNewKey() string {
	var b [16]byte
	rand.Read(b[:])
	return base64.StdEncoding.EncodeToString(b[:])
}

// hsHandshake writes a handshake request by hand, so any header (hop-by-hop,
// Sec-WebSocket-*, bad values) can be sent. hdr's entries replace the defaults
// (Host, Upgrade, Connection, Sec-WebSocket-Key, Sec-WebSocket-Version); an entry
// with an empty value list removes the default. After a 101 the caller must call close.
func hsHandshake(t *testing.T, e *hsEnv, method, target string, hdr http.Header) *hsRaw {
	t.Helper()
	h := http.Header{
		"Host":                  {e.host()},
		"Upgrade":               {"websocket"},
		"Connection":            {"Upgrade"},
		"Sec-Websocket-Key":     {hsNewKey()},
		"Sec-Websocket-Version": {"13"},
	}
	for k, vs := range hdr {
		h[http.CanonicalHeaderKey(k)] = vs
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\n", method, target)
	for _, k := range slices.Sorted(maps.Keys(h)) {
		for _, v := range h[k] {
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
	}
	b.WriteString("\r\n")

	nc, err := net.Dial("tcp", e.host())
	if err != nil {
		t.Fatalf("dial front: %v", err)
	}
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(nc, b.String()); err != nil {
		nc.Close()
		t.Fatalf("write request: %v", err)
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		nc.Close()
		t.Fatalf("read response: %v", err)
	}
	r := &hsRaw{resp: resp, key: h.Get("Sec-Websocket-Key")}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		nc.SetDeadline(time.Time{})
		r.conn, r.br = nc, br
		return r
	}
	body, err := io.ReadAll(resp.Body)
	nc.Close()
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	r.body = string(body)
	return r
}

// close sends a masked close frame (1000) and waits for the connection to end.
func (r *hsRaw) close(t *testing.T) {
	t.Helper()
	if r.conn == nil {
		return
	}
	defer r.conn.Close()
	mask := [4]byte{1, 2, 3, 4}
	payload := []byte{0x03, 0xe8}
	frame := []byte{0x88, 0x80 | byte(len(payload)), mask[0], mask[1], mask[2], mask[3]}
	for i, c := range payload {
		frame = append(frame, c^mask[i%4])
	}
	r.conn.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := r.conn.Write(frame); err != nil {
		t.Errorf("write close: %v", err)
		return
	}
	if _, err := io.Copy(io.Discard, r.br); err != nil {
		t.Errorf("waiting for the proxy to close: %v", err)
	}
}

// hsDeadAddr returns the address of a listener that was closed: dials are refused.
func hsDeadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "ws://" + addr
}

// hsBlackhole accepts TCP connections and never answers; it returns the ws:// URL
// and the number of accepted connections.
func hsBlackhole(t *testing.T) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var accepted atomic.Int64
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return "ws://" + ln.Addr().String(), &accepted
}

// hsCountingBalancer counts Select calls and delegates to First().
type hsCountingBalancer struct {
	selects atomic.Int64
}

func (b *hsCountingBalancer) Select(pool []*Upstream, r *http.Request) *Upstream {
	b.selects.Add(1)
	return First().Select(pool, r)
}

// hsSource is an UpstreamSource from a function.
type hsSource func(r *http.Request) ([]string, error)

func (f hsSource) Upstreams(r *http.Request) ([]string, error) { return f(r) }

// hsHealthy reports u's passive health under PassiveHealth{MaxFails: 1, FailDuration: time.Minute}.
func hsHealthy(u *Upstream) bool { return u.Healthy(time.Now(), 1, time.Minute) }

// hsPassive is the passive health configuration of the tests: one failure marks down.
var hsPassive = PassiveHealth{MaxFails: 1, FailDuration: time.Minute}

// hsDiscardLog is an http.Server error log that drops everything.
func hsDiscardLog() *log.Logger { return log.New(io.Discard, "", 0) }

// hsAccept computes Sec-WebSocket-Accept for key (RFC 6455 §4.2.2), independently of wsmw.
func hsAccept(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

// hsGather gathers reg into name{label="value",...} -> value (sorted labels;
// histograms as _count and _sum).
func hsGather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := make(map[string]float64)
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, lp := range m.GetLabel() {
				labels = append(labels, lp.GetName()+`="`+lp.GetValue()+`"`)
			}
			slices.Sort(labels)
			suffix := ""
			if len(labels) > 0 {
				suffix = "{" + strings.Join(labels, ",") + "}"
			}
			name := mf.GetName()
			switch {
			case m.Counter != nil:
				out[name+suffix] = m.GetCounter().GetValue()
			case m.Gauge != nil:
				out[name+suffix] = m.GetGauge().GetValue()
			case m.Histogram != nil:
				out[name+"_count"+suffix] = float64(m.GetHistogram().GetSampleCount())
				out[name+"_sum"+suffix] = m.GetHistogram().GetSampleSum()
			case m.Untyped != nil:
				out[name+suffix] = m.GetUntyped().GetValue()
			}
		}
	}
	return out
}
