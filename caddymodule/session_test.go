package caddymodule

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/internal/testkit"
	"github.com/wsgate/wsgate/internal/testkit/caddytest"
	"github.com/wsgate/wsgate/wsmw"
)

// echoUpstream is a gorilla/websocket echo server. A "die" message makes it
// drop the TCP connection without a close frame; on a path containing /hdr/
// it first sends the X-Real-Ip and X-Static request headers it received.
func echoUpstream(t *testing.T) *httptest.Server {
	t.Helper()
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		if strings.Contains(r.URL.Path, "/hdr/") {
			c.WriteMessage(websocket.TextMessage, []byte(r.Header.Get("X-Real-Ip")+"|"+r.Header.Get("X-Static")))
		}
		for {
			mt, p, err := c.ReadMessage()
			if err != nil {
				return
			}
			if string(p) == "die" {
				c.UnderlyingConn().Close()
				return
			}
			if err := c.WriteMessage(mt, p); err != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// dialWS dials url with gorilla's default dialer; the connection is closed when the test ends.
func dialWS(t *testing.T, url string) *websocket.Conn {
	t.Helper()
	c, _ := testkit.DialGorilla(t, nil, url, nil)
	return c
}

// dialAfterReload is dialWS right after a config reload. The old server's
// accept loop may still take one last connection as it shuts down, and
// net/http closes such a connection without an answer once it has read the
// request (http.Server.Shutdown): the dial then fails with an unexpected EOF
// and no response, and a client tries again, as this does, once.
func dialAfterReload(t *testing.T, url string) *websocket.Conn {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial(url, nil)
	if errors.Is(err, io.ErrUnexpectedEOF) && resp == nil {
		c, resp, err = websocket.DefaultDialer.Dial(url, nil)
	}
	if err != nil {
		t.Fatalf("dial %s after a reload: %v (response %v)", url, err, resp)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip sends msg and expects it back.
func roundTrip(t *testing.T, c *websocket.Conn, mt int, msg string) {
	t.Helper()
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := c.WriteMessage(mt, []byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	gotType, got, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if gotType != mt || string(got) != msg {
		t.Fatalf("got %d %q, want %d %q", gotType, got, mt, msg)
	}
}

// expectClose reads until the connection closes and checks the close code.
func expectClose(t *testing.T, c *websocket.Conn, code int) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, _, err := c.ReadMessage()
		if err == nil {
			continue
		}
		if !websocket.IsCloseError(err, code) {
			t.Fatalf("read error %v, want close %d", err, code)
		}
		return
	}
}

func TestSessionsThroughCaddy(t *testing.T) {
	up := echoUpstream(t)
	port := testkit.FreePort(t)
	upstream := strings.TrimPrefix(up.URL, "http://")
	caddytest.Load(t, caddytest.Global+fmt.Sprintf(`:%d {
	ws /chat/* %[2]s
	ws /small/* %[2]s {
		max_message_size 1KiB
	}
	ws /json/* %[2]s {
		allow text
		validate utf8 json
	}
	ws /hdr/* %[2]s {
		header_up X-Real-IP {remote_host}
		header_up X-Static yes
	}
	ws /none/* 127.0.0.1:1
	handle /metrics {
		metrics
	}
	respond "fallback"
}
`, port, upstream))
	base := fmt.Sprintf("ws://127.0.0.1:%d", port)

	t.Run("echo", func(t *testing.T) {
		c := dialWS(t, base+"/chat/room")
		roundTrip(t, c, websocket.TextMessage, "hello")
		roundTrip(t, c, websocket.BinaryMessage, strings.Repeat("b", 70000))
		c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(4001, "bye"))
		expectClose(t, c, 4001)
	})
	t.Run("oversize message gets 1009", func(t *testing.T) {
		c := dialWS(t, base+"/small/x")
		roundTrip(t, c, websocket.TextMessage, strings.Repeat("s", 1024))
		c.WriteMessage(websocket.TextMessage, []byte(strings.Repeat("s", 2048)))
		expectClose(t, c, websocket.CloseMessageTooBig)
	})
	t.Run("upstream killed gives 1014", func(t *testing.T) {
		// gorilla/websocket refuses to report 1014 (its list of valid codes
		// predates it) but names it in the error: check both clients.
		c := dialWS(t, base+"/chat/x")
		roundTrip(t, c, websocket.TextMessage, "before")
		c.WriteMessage(websocket.TextMessage, []byte("die"))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, _, err := c.ReadMessage(); err == nil || !strings.Contains(err.Error(), "close code 1014") {
			t.Fatalf("gorilla read error %v, want close code 1014", err)
		}

		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		wc, _, err := wsmw.Dial(ctx, base+"/chat/y", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer wc.CloseNow()
		wc.Write(context.Background(), wsmw.MessageText, []byte("die"))
		_, _, err = wc.Read(context.Background(), nil)
		var ce *wsmw.CloseError
		if !errors.As(err, &ce) || ce.Code != wsmw.StatusBadGateway {
			t.Fatalf("wsmw read error %v, want close 1014", err)
		}
	})
	t.Run("allow text closes binary with 1003", func(t *testing.T) {
		c := dialWS(t, base+"/json/x")
		roundTrip(t, c, websocket.TextMessage, `{"ok":true}`)
		c.WriteMessage(websocket.BinaryMessage, []byte("{}"))
		expectClose(t, c, websocket.CloseUnsupportedData)
	})
	t.Run("validate json closes with 1007", func(t *testing.T) {
		c := dialWS(t, base+"/json/x")
		c.WriteMessage(websocket.TextMessage, []byte(`{"ok":`))
		expectClose(t, c, websocket.CloseInvalidFramePayloadData)
	})
	t.Run("header_up with placeholder", func(t *testing.T) {
		c := dialWS(t, base+"/hdr/x")
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, got, err := c.ReadMessage()
		if err != nil || string(got) != "127.0.0.1|yes" {
			t.Fatalf("upstream saw headers %q (%v), want 127.0.0.1|yes", got, err)
		}
	})
	t.Run("upstream down gives 502", func(t *testing.T) {
		_, resp, err := websocket.DefaultDialer.Dial(base+"/none/x", nil)
		if err == nil || resp == nil || resp.StatusCode != http.StatusBadGateway {
			t.Fatalf("dial: %v, response %v; want 502", err, resp)
		}
	})
	t.Run("metrics on the config's registry", func(t *testing.T) {
		// A session is counted when both its legs have closed, which may be just
		// after its client saw the close: scrape until the counts are there.
		wants := []string{"caddy_ws_sessions_total", `caddy_ws_closes_total{client_proto="http/1.1",code="1009"`, `caddy_ws_handshake_failures_total{reason="upstream_unreachable"}`}
		var body string
		testkit.Eventually(3*time.Second, func() bool {
			body = httpGet(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
			return containsAll(body, wants)
		})
		for _, want := range wants {
			if !strings.Contains(body, want) {
				t.Errorf("metrics lack %s in\n%s", want, grepLines(body, "caddy_ws"))
			}
		}
	})
	t.Run("non-upgrade falls through", func(t *testing.T) {
		for _, path := range []string{"/chat/room", "/elsewhere"} {
			if body := httpGet(t, fmt.Sprintf("http://127.0.0.1:%d%s", port, path)); body != "fallback" {
				t.Fatalf("GET %s: %q, want fallback", path, body)
			}
		}
	})
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// httpGet returns the body of a 200 answer to GET url.
func httpGet(t *testing.T, url string) string {
	t.Helper()
	status, body := testkit.Get(t, url)
	if status != http.StatusOK {
		t.Fatalf("GET %s: %d %q", url, status, body)
	}
	return body
}

// TestTLSUpstream dials a wss:// upstream trusted through
// tls_trusted_ca_certs, which the active health probes must use too: a
// probe failing verification would mark the only upstream down (503).
func TestTLSUpstream(t *testing.T) {
	srv := httptest.NewTLSServer(testkit.GorillaEchoHandler(websocket.Upgrader{}, nil))
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(ca, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	port := testkit.FreePort(t)
	upstream := strings.TrimPrefix(srv.URL, "https://")
	caddytest.Load(t, caddytest.Global+fmt.Sprintf(`:%d {
	ws /trusted/* %[2]s {
		tls_trusted_ca_certs %[3]s
		health_interval 50ms
		health_timeout 1s
	}
	ws /untrusted/* %[2]s {
		tls
	}
	respond "fallback"
}
`, port, upstream, ca))
	time.Sleep(300 * time.Millisecond) // a few probe rounds
	c := dialWS(t, fmt.Sprintf("ws://127.0.0.1:%d/trusted/x", port))
	roundTrip(t, c, websocket.TextMessage, "over tls")

	_, resp, err := websocket.DefaultDialer.Dial(fmt.Sprintf("ws://127.0.0.1:%d/untrusted/x", port), nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("untrusted upstream: %v, response %v; want 502", err, resp)
	}
}

// TestReloadKeepsUnchangedRoutes is the reload contract: across two reloads
// that change only route B, the session on route A carries on and each
// session on route B is closed with the drain code.
func TestReloadKeepsUnchangedRoutes(t *testing.T) {
	upA, upB := echoUpstream(t), echoUpstream(t)
	port := testkit.FreePort(t)
	config := func(bSize string) string {
		return caddytest.Global + fmt.Sprintf(`:%d {
	ws /a/* %s {
		max_message_size 1MiB
		drain_code 1012
	}
	ws /b/* %s {
		max_message_size %s
		drain_code 1012
	}
	handle /metrics {
		metrics
	}
	respond "fallback"
}
`, port, strings.TrimPrefix(upA.URL, "http://"), strings.TrimPrefix(upB.URL, "http://"), bSize)
	}
	base := fmt.Sprintf("ws://127.0.0.1:%d", port)

	caddytest.Load(t, config("64KiB"))
	a := dialWS(t, base+"/a/1")
	b1 := dialWS(t, base+"/b/1")
	roundTrip(t, a, websocket.TextMessage, "a0")
	roundTrip(t, b1, websocket.TextMessage, "b0")

	caddytest.Load(t, config("128KiB")) // reload 1: B changes
	expectClose(t, b1, 1012)
	roundTrip(t, a, websocket.TextMessage, "a1")
	b2 := dialAfterReload(t, base+"/b/2") // the new B serves at once
	roundTrip(t, b2, websocket.TextMessage, strings.Repeat("x", 100<<10))

	caddytest.Load(t, config("256KiB")) // reload 2: B changes again
	expectClose(t, b2, 1012)
	roundTrip(t, a, websocket.TextMessage, "a2")
	roundTrip(t, a, websocket.BinaryMessage, strings.Repeat("y", 512<<10))
	b3 := dialAfterReload(t, base+"/b/3")
	roundTrip(t, b3, websocket.TextMessage, strings.Repeat("z", 200<<10))

	// the metrics follow the reloads: the new registry counts the old session on A
	metrics := httpGet(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	var active float64
	var err error = errors.New("no sample")
	for _, l := range strings.Split(metrics, "\n") {
		if v, ok := strings.CutPrefix(l, "caddy_ws_sessions_active "); ok {
			active, err = strconv.ParseFloat(v, 64)
		}
	}
	if err != nil || active < 2 {
		t.Fatalf("caddy_ws_sessions_active = %v (%v), want at least 2 (a and b3)", active, err)
	}
}

// TestDrainWindowSpreadsCloses removes a route holding three sessions: the
// closes are spread over drain_window rather than sent at once.
func TestDrainWindowSpreadsCloses(t *testing.T) {
	up := echoUpstream(t)
	port := testkit.FreePort(t)
	upstream := strings.TrimPrefix(up.URL, "http://")
	caddytest.Load(t, caddytest.Global+fmt.Sprintf(`:%d {
	ws /d/* %s {
		drain_code 1001
		drain_window 900ms
	}
	respond "fallback"
}
`, port, upstream))
	var conns []*websocket.Conn
	for i := range 3 {
		c := dialWS(t, fmt.Sprintf("ws://127.0.0.1:%d/d/%d", port, i))
		roundTrip(t, c, websocket.TextMessage, "hi")
		conns = append(conns, c)
	}
	start := time.Now()
	caddytest.Load(t, caddytest.Global+fmt.Sprintf(":%d {\n\trespond \"gone\"\n}\n", port))
	closed := make(chan time.Duration, len(conns))
	for _, c := range conns {
		go func() {
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			for {
				if _, _, err := c.ReadMessage(); err != nil {
					if !websocket.IsCloseError(err, websocket.CloseGoingAway) {
						t.Errorf("read error %v, want close 1001", err)
					}
					closed <- time.Since(start)
					return
				}
			}
		}()
	}
	var first, last time.Duration
	for i := range conns {
		d := <-closed
		if i == 0 {
			first = d
		}
		last = d
	}
	if first > 400*time.Millisecond {
		t.Errorf("first close after %v, want it at once", first)
	}
	if last-first < 450*time.Millisecond {
		t.Errorf("closes spread over %v, want about 600ms (window 900ms, 3 sessions)", last-first)
	}
}

// containsAll reports whether s contains every one of subs.
func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
