package proxy

// Helpers of the proxy's tests. Upstreams and raw peers are written with
// gorilla/websocket, coder/websocket, raw net/http or testkit's raw codec,
// never with wsmw's Conn, so that a wsmw bug cannot hide itself on both sides
// of the proxy.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	coder "github.com/coder/websocket"
	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/wsgate/wsgate/internal/testkit"
	"github.com/wsgate/wsgate/wsmw"
)

// ---------------------------------------------------------------------------
// Upstreams.

// seenRequest is what an upstream saw of one handshake request.
type seenRequest struct {
	Host   string
	URI    string
	Header http.Header
}

// upstream is a test upstream that counts and records every request.
type upstream struct {
	*httptest.Server
	hits atomic.Int64

	mu   sync.Mutex
	seen []seenRequest
}

func (s *upstream) record(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		s.mu.Lock()
		s.seen = append(s.seen, seenRequest{Host: r.Host, URI: r.RequestURI, Header: r.Header.Clone()})
		s.mu.Unlock()
		h.ServeHTTP(w, r)
	})
}

// startUpstream starts an upstream serving h; it is closed when the test ends.
func startUpstream(t *testing.T, h http.Handler) *upstream {
	t.Helper()
	s := &upstream{}
	s.Server = httptest.NewServer(s.record(h))
	t.Cleanup(s.Close)
	return s
}

// startTLSUpstream starts a TLS upstream serving h (handshake errors are not logged).
func startTLSUpstream(t *testing.T, h http.Handler) *upstream {
	t.Helper()
	s := &upstream{}
	s.Server = httptest.NewUnstartedServer(s.record(h))
	s.Config.ErrorLog = discardLog()
	s.StartTLS()
	t.Cleanup(s.Close)
	return s
}

// last returns the last request the upstream saw.
func (s *upstream) last(t *testing.T) seenRequest {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.seen) == 0 {
		t.Fatal("upstream saw no request")
	}
	return s.seen[len(s.seen)-1]
}

// ws returns the upstream's ws:// (or wss://) URL.
func (s *upstream) ws() string { return testkit.WSURL(s.URL) }

// refuse returns a handler answering status with header and body.
func refuse(status int, header http.Header, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		for k, vs := range header {
			w.Header()[k] = vs
		}
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

// startGorilla starts a gorilla/websocket upstream running handle per connection.
func startGorilla(t *testing.T, handle func(c *websocket.Conn)) *testkit.GorillaServer {
	t.Helper()
	return testkit.StartGorillaServer(t, websocket.Upgrader{}, handle)
}

// startReporting starts a gorilla/websocket upstream running handle per
// connection; what handle returns (how the connection ended, as the upstream
// saw it) is sent on the returned channel.
func startReporting(t *testing.T, handle func(c *websocket.Conn) error) (*testkit.GorillaServer, <-chan error) {
	t.Helper()
	upGot := make(chan error, 1)
	return startGorilla(t, func(c *websocket.Conn) { upGot <- handle(c) }), upGot
}

// gorillaMessage is a message as a gorilla peer read it.
type gorillaMessage struct {
	op int
	p  []byte
}

// startRecording starts a gorilla/websocket upstream that sends every message
// it reads on the returned channel (buffered n) and, if reply is set, answers
// it with reply's payload, of the same type.
func startRecording(t *testing.T, n int, reply func(op int, p []byte) []byte) (*testkit.GorillaServer, <-chan gorillaMessage) {
	t.Helper()
	got := make(chan gorillaMessage, n)
	up := startGorilla(t, func(c *websocket.Conn) {
		for {
			op, p, err := c.ReadMessage()
			if err != nil {
				return
			}
			got <- gorillaMessage{op, p}
			if reply == nil {
				continue
			}
			if err := c.WriteMessage(op, reply(op, p)); err != nil {
				return
			}
		}
	})
	return up, got
}

// gorillaEcho is a gorilla handler echoing every message until an error; the
// error (the close the upstream saw) is sent on got, if non-nil.
func gorillaEcho(got chan<- error) func(c *websocket.Conn) {
	return func(c *websocket.Conn) {
		err := testkit.GorillaEcho(c)
		if got != nil {
			got <- err
		}
	}
}

// sizeReply is a gorilla handler answering every message with the text
// "got N" (its length) until an error, which is sent on got: an echo that does
// not send large messages back.
func sizeReply(got chan<- error) func(c *websocket.Conn) {
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

// startRaw starts a raw upstream (testkit.RawServer) running handle per connection.
func startRaw(t *testing.T, handle func(c *testkit.Conn)) *testkit.RawServer {
	t.Helper()
	return testkit.StartRawServer(t, handle)
}

// fragment is a frame with the given FIN bit, opcode and payload.
func fragment(fin bool, op wsmw.OpCode, p string) testkit.Frame {
	return testkit.Frame{Fin: fin, Op: op, Payload: []byte(p)}
}

// sameFrame reports whether got has want's FIN bit, opcode and payload.
func sameFrame(got, want testkit.Frame) bool {
	return got.Fin == want.Fin && got.Op == want.Op && string(got.Payload) == string(want.Payload)
}

// sendThrough runs a proxy with the inspector in, in front of a raw upstream
// that records what it reads before the client's close and answers the close
// with 1000. A raw client sends frames, then a close (1000); sendThrough
// returns the frames the upstream got and the close the client got back.
func sendThrough(t *testing.T, in Inspector, frames ...testkit.Frame) ([]testkit.Frame, *testkit.Frame, error) {
	t.Helper()
	upSaw := make(chan []testkit.Frame, 1)
	up := startRaw(t, func(c *testkit.Conn) {
		_, seen, _ := c.ReadUntilClose(3 * time.Second)
		upSaw <- seen
		c.SendClose(1000, "")
	})
	e := startSession(t, up.URL, Config{Inspectors: Chain{in}})
	raw := testkit.DialRaw(t, e.URL)
	for _, f := range frames {
		raw.Send(f)
	}
	raw.SendClose(1000, "")
	f, _, err := raw.ReadUntilClose(3 * time.Second)
	return testkit.Recv(t, upSaw, 3*time.Second, "upstream frames"), f, err
}

// trickle writes b to w in pieces parts, pausing gap after each: a peer
// sending slowly, its bytes arriving all along.
func trickle(w io.Writer, b []byte, pieces int, gap time.Duration) error {
	for off, step := 0, len(b)/pieces+1; off < len(b); off += step {
		if _, err := w.Write(b[off:min(off+step, len(b))]); err != nil {
			return fmt.Errorf("write failed at %d: %w", off, err)
		}
		time.Sleep(gap)
	}
	return nil
}

// ---------------------------------------------------------------------------
// The proxy under test.

// proxyEnv is a proxy under test behind an httptest front server.
type proxyEnv struct {
	t     *testing.T
	p     *Proxy
	front *httptest.Server
	URL   string                 // the front's ws:// URL
	logs  *observer.ObservedLogs // the session log lines, when observed
}

// startProxy creates a proxy for cfg behind a front server. When the test ends
// it checks that every session has ended, then shuts the proxy down and closes the front.
func startProxy(t *testing.T, cfg Config) *proxyEnv {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	front := httptest.NewServer(p)
	t.Cleanup(front.Close)
	testkit.StopAtEnd(t, p, 3*time.Second)
	return &proxyEnv{t: t, p: p, front: front, URL: testkit.WSURL(front.URL)}
}

// startSession builds a proxy for cfg (CloseTimeout defaults to 500ms here) in
// front of upstream. Unless cfg has a Logger, the session log lines are
// observed. When the test ends it waits until the proxy has no session left,
// checks that each session logged exactly one "session closed" line, then
// closes the front server.
func startSession(t *testing.T, upstream string, cfg Config) *proxyEnv {
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
	e := &proxyEnv{t: t, p: p, front: front, URL: testkit.WSURL(front.URL), logs: logs}
	t.Cleanup(func() {
		waitSessions(t, p, 5*time.Second)
		if logs != nil {
			if n, want := logs.FilterMessage("session closed").Len(), int(p.nextID.Load()); n != want {
				t.Errorf("%d \"session closed\" log lines for %d sessions", n, want)
			}
		}
		front.Close()
	})
	return e
}

// ws returns the front's ws:// URL for path (with query).
func (e *proxyEnv) ws(path string) string { return e.URL + path }

// host returns the front's host:port.
func (e *proxyEnv) host() string { return strings.TrimPrefix(e.front.URL, "http://") }

// wantEnd waits for the proxy's sessions to end and checks how the last one
// ended, as logged (and counted in the metrics): its close code and initiator.
func (e *proxyEnv) wantEnd(code int, by string) {
	e.t.Helper()
	waitSessions(e.t, e.p, 5*time.Second)
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

// idle waits until p has no active session (or handshake).
func idle(p *Proxy, d time.Duration) bool {
	return testkit.Eventually(d, func() bool { return p.ActiveSessions() == 0 })
}

// waitSessions waits until p has no active session, failing the test after d.
func waitSessions(t *testing.T, p *Proxy, d time.Duration) {
	t.Helper()
	if !idle(p, d) {
		t.Errorf("proxy still has %d active sessions after %v", p.ActiveSessions(), d)
	}
}

// ---------------------------------------------------------------------------
// Clients.

// dial dials url with gorilla. On a refused handshake it returns the
// response with its (gorilla-truncated) body.
func dial(t *testing.T, url string, hdr http.Header, subprotocols ...string) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	d := websocket.Dialer{Subprotocols: subprotocols, HandshakeTimeout: 5 * time.Second}
	return d.Dial(url, hdr)
}

// mustDial dials url with gorilla and fails the test unless it upgrades; the
// connection is closed when the test ends.
func mustDial(t *testing.T, url string, hdr http.Header, subprotocols ...string) (*websocket.Conn, *http.Response) {
	t.Helper()
	return testkit.DialGorilla(t, &websocket.Dialer{Subprotocols: subprotocols, HandshakeTimeout: 5 * time.Second}, url, hdr)
}

// dialRefused dials url with gorilla and header hdr, and fails the test
// unless the handshake is refused with status; it returns the response.
func dialRefused(t *testing.T, url string, hdr http.Header, status int) *http.Response {
	t.Helper()
	c, resp, err := dial(t, url, hdr)
	if err == nil {
		c.Close()
		t.Fatalf("upgraded, want %d", status)
	}
	if resp == nil || resp.StatusCode != status {
		t.Fatalf("got %v, want %d", err, status)
	}
	return resp
}

// dialEcho is the common setup of the session tests: a proxy for cfg in front
// of a gorilla echo upstream that sends the error that ended it on the
// returned channel, and a gorilla client.
func dialEcho(t *testing.T, cfg Config) (*proxyEnv, *websocket.Conn, <-chan error) {
	t.Helper()
	up, upGot := startReporting(t, testkit.GorillaEcho)
	e, c := dialSession(t, up.URL, cfg)
	return e, c, upGot
}

// dialSession is startSession and a gorilla client of it.
func dialSession(t *testing.T, upstream string, cfg Config) (*proxyEnv, *websocket.Conn) {
	t.Helper()
	e := startSession(t, upstream, cfg)
	c, _ := mustDial(t, e.URL, nil)
	return e, c
}

// echoOnce sends msg and expects it back.
func echoOnce(t *testing.T, c *websocket.Conn, msg string) {
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

// closeGorilla closes c with 1000 and waits for the proxy's close (or EOF).
func closeGorilla(t *testing.T, c *websocket.Conn) {
	t.Helper()
	defer c.Close()
	sendClose(c, websocket.CloseNormalClosure, "")
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

// sendClose sends a close frame with code and reason from a gorilla peer.
func sendClose(c *websocket.Conn, code int, reason string) error {
	return c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
}

// closeOf extracts a gorilla close error's code and text (-1 if err is not one).
func closeOf(err error) (int, string) {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return ce.Code, ce.Text
	}
	return -1, ""
}

// wantClose checks that err is a gorilla close error with code and reason.
func wantClose(t *testing.T, who string, err error, code int, reason string) {
	t.Helper()
	gotCode, gotReason := closeOf(err)
	if gotCode != code || gotReason != reason {
		t.Errorf("%s saw %v, want close %d %q", who, err, code, reason)
	}
}

// readErr reads from a gorilla conn until an error (messages discarded), bounded by d.
func readErr(c *websocket.Conn, d time.Duration) error {
	c.SetReadDeadline(time.Now().Add(d))
	for {
		if _, _, err := c.ReadMessage(); err != nil {
			return err
		}
	}
}

// wantCloses checks how each leg of a gorilla session ended: the close the
// client c reads and the one the upstream reports on upGot.
func wantCloses(t *testing.T, c *websocket.Conn, upGot <-chan error, clientCode int, clientReason string, upCode int, upReason string) {
	t.Helper()
	wantClose(t, "client", readErr(c, 3*time.Second), clientCode, clientReason)
	wantClose(t, "upstream", testkit.Recv(t, upGot, 3*time.Second, "upstream close"), upCode, upReason)
}

// closeAndWant is the clean end of a gorilla session: the client sends a close
// with code and reason, then sees the close the proxy relays (1000 ""), and
// the upstream reports the close it got.
func closeAndWant(t *testing.T, c *websocket.Conn, upGot <-chan error, code int, reason string) {
	t.Helper()
	sendClose(c, code, reason)
	wantCloses(t, c, upGot, 1000, "", code, reason)
}

// wantRawClose checks a raw close frame's code and reason.
func wantRawClose(t *testing.T, who string, f *testkit.Frame, err error, code int, reason string) {
	t.Helper()
	if err != nil || f == nil {
		t.Errorf("%s: no close frame: %v", who, err)
		return
	}
	gotCode, gotReason := f.CloseCode()
	if gotCode != code || gotReason != reason {
		t.Errorf("%s saw close %d %q (payload %x), want %d %q", who, gotCode, gotReason, f.Payload, code, reason)
	}
}

// clientClose reads the raw client's frames until the close, within d, and
// checks its code and reason; it returns the frames that came before it.
func clientClose(t *testing.T, raw *testkit.Conn, d time.Duration, code int, reason string) []testkit.Frame {
	t.Helper()
	f, seen, err := raw.ReadUntilClose(d)
	wantRawClose(t, "client", f, err, code, reason)
	return seen
}

// closeRaw sends a raw client's close (1000 with reason) and checks that the
// close coming back is 1000 without a reason.
func closeRaw(t *testing.T, raw *testkit.Conn, reason string) {
	t.Helper()
	raw.SendClose(1000, reason)
	clientClose(t, raw, 3*time.Second, 1000, "")
}

// wantEOF checks that the proxy closes raw's connection within 3 s.
func wantEOF(t *testing.T, raw *testkit.Conn) {
	t.Helper()
	if !raw.WaitEOF(3 * time.Second) {
		t.Error("proxy did not close the client connection")
	}
}

// dialCoder dials url with coder/websocket in the given compression mode (it
// accepts 1014, which gorilla 1.5.3 refuses). It returns the connection, the
// extension the proxy answered and a context bounding the test's use of c.
func dialCoder(t *testing.T, url string, mode coder.CompressionMode) (*coder.Conn, string, context.Context) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	c, resp, err := coder.Dial(ctx, url, &coder.DialOptions{CompressionMode: mode})
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { c.CloseNow() })
	c.SetReadLimit(1 << 20)
	return c, resp.Header.Get("Sec-WebSocket-Extensions"), ctx
}

// wantCoderClose checks that err carries a coder close error with code and reason.
func wantCoderClose(t *testing.T, who string, err error, code int, reason string) {
	t.Helper()
	var ce coder.CloseError
	if !errors.As(err, &ce) || int(ce.Code) != code || ce.Reason != reason {
		t.Errorf("%s saw %v, want close %d %q", who, err, code, reason)
	}
}

// ---------------------------------------------------------------------------
// Handshakes written by hand.

// rawHandshake is the result of a raw handshake: the response, its body
// (non-101), and, after a 101, the open connection.
type rawHandshake struct {
	resp *http.Response
	body string
	key  string // the Sec-WebSocket-Key sent
	conn *testkit.Conn
}

// handshake writes a handshake request by hand (testkit.RawHandshake), so any
// header (hop-by-hop, Sec-WebSocket-*, bad values) can be sent. hdr's entries
// replace the defaults (Host, Upgrade, Connection, Sec-WebSocket-Key,
// Sec-WebSocket-Version); an entry with an empty value list removes the
// default. After a 101 the caller must call close.
func handshake(t *testing.T, e *proxyEnv, method, target string, hdr http.Header) *rawHandshake {
	t.Helper()
	h := testkit.UpgradeHeader(e.host())
	for k, vs := range hdr {
		h[http.CanonicalHeaderKey(k)] = vs
	}
	c, resp, body, err := testkit.RawHandshake(e.host(), method, target, h)
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	return &rawHandshake{resp: resp, body: body, key: h.Get("Sec-Websocket-Key"), conn: c}
}

// close sends a masked close frame (1000) and waits for the connection to end.
func (r *rawHandshake) close(t *testing.T) {
	t.Helper()
	if r.conn == nil {
		return
	}
	defer r.conn.Close()
	if err := r.conn.Send(testkit.Frame{Fin: true, Op: wsmw.OpClose, Key: [4]byte{1, 2, 3, 4}, Payload: []byte{0x03, 0xe8}}); err != nil {
		t.Errorf("write close: %v", err)
		return
	}
	r.conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.Copy(io.Discard, r.conn.R); err != nil {
		t.Errorf("waiting for the proxy to close: %v", err)
	}
}

// ---------------------------------------------------------------------------
// Configuration pieces and metrics.

// countingBalancer counts Select calls and delegates to First().
type countingBalancer struct {
	selects atomic.Int64
}

func (b *countingBalancer) Select(pool []*Upstream, r *http.Request, w http.ResponseWriter) *Upstream {
	b.selects.Add(1)
	return First().Select(pool, r, w)
}

// sourceFunc is an UpstreamSource from a function.
type sourceFunc func(r *http.Request) ([]string, error)

func (f sourceFunc) Upstreams(r *http.Request) ([]string, error) { return f(r) }

// healthy reports u's passive health under passiveHealth.
func healthy(u *Upstream) bool { return u.Healthy(time.Now(), 1, time.Minute) }

// passiveHealth is the passive health configuration of the tests: one failure marks down.
var passiveHealth = PassiveHealth{MaxFails: 1, FailDuration: time.Minute}

// discardLog is an http.Server error log that drops everything.
func discardLog() *log.Logger { return log.New(io.Discard, "", 0) }

// gather gathers reg into name{label="value",...} -> value (sorted labels;
// histograms as _count and _sum).
func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := make(map[string]float64)
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			labels := make(map[string]string)
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			name := mf.GetName()
			switch {
			case m.Counter != nil:
				out[metricKey(name, labels)] = m.GetCounter().GetValue()
			case m.Gauge != nil:
				out[metricKey(name, labels)] = m.GetGauge().GetValue()
			case m.Histogram != nil:
				out[metricKey(name+"_count", labels)] = float64(m.GetHistogram().GetSampleCount())
				out[metricKey(name+"_sum", labels)] = m.GetHistogram().GetSampleSum()
			case m.Untyped != nil:
				out[metricKey(name, labels)] = m.GetUntyped().GetValue()
			}
		}
	}
	return out
}

// metricKey is gather's key for name with labels: name{a="1",b="2"}.
func metricKey(name string, labels map[string]string) string {
	if len(labels) == 0 {
		return name
	}
	var parts []string
	for k, v := range labels {
		parts = append(parts, k+`="`+v+`"`)
	}
	slices.Sort(parts)
	return name + "{" + strings.Join(parts, ",") + "}"
}

// metric returns the value of the counter or gauge name with exactly labels (-1 if absent).
func metric(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	if v, ok := gather(t, reg)[metricKey(name, labels)]; ok {
		return v
	}
	return -1
}
