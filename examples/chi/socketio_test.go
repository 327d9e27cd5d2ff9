package main

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/internal/testkit"
)

// /metrics serves the proxy's wsgate_* series, counting a session once it
// has ended, and the process collector's.
func TestMetricsEndpoint(t *testing.T) {
	up := testkit.StartNamed(t, "up", nil)
	addr := startDemo(t, "-upstream", up.WS)
	if name, resp := testkit.NamedWS(t, nil, "ws://"+addr+"/ws", nil); name != "up" {
		t.Fatalf("upgrade: %q %v", name, resp)
	}
	wants := []string{
		`wsgate_sessions_total{client_proto="http/1.1"} 1`,
		"wsgate_sessions_active 0",
		`wsgate_closes_total{client_proto="http/1.1",code="1000",initiator="client"} 1`,
		`wsgate_upstream_dial_duration_seconds_count{result="ok",upstream="` + up.WS + `"} 1`,
		"process_resident_memory_bytes ",
	}
	var body string
	testkit.Eventually(3*time.Second, func() bool {
		_, body = testkit.Get(t, "http://"+addr+"/metrics")
		for _, w := range wants {
			if !strings.Contains(body, w) {
				return false
			}
		}
		return true
	})
	for _, w := range wants {
		if !strings.Contains(body, w) {
			t.Errorf("/metrics lacks %q", w)
		}
	}
}

// /socket.io/* takes Socket.IO's long-polling requests (forwarded as plain
// HTTP) and its upgrade (proxied) to the same upstreams; with -lb
// cookie:NAME:SECRET the cookie set on the first answer keeps each client on
// one upstream, named by the HMAC of its host:port keyed by SECRET.
func TestSocketIORouteIsSticky(t *testing.T) {
	ups := testkit.StartNamedSet(t, 3)
	args := []string{"-lb", "cookie:sid:s3cret"}
	addrs := map[string]string{}
	for _, u := range ups {
		args = append(args, "-upstream", u.WS)
		addrs[u.Name] = u.Addr
	}
	addr := startDemo(t, args...)
	spread := map[string]bool{}
	for i := range 12 {
		jar, _ := cookiejar.New(nil)
		client := &http.Client{Jar: jar}
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/socket.io/?EIO=4&transport=polling", nil)
		first, resp, _ := testkit.NamedHTTP(t, client, req)
		if resp.StatusCode != http.StatusOK || first == "" {
			t.Fatalf("client %d: polling request: %d from %q", i, resp.StatusCode, first)
		}
		spread[first] = true
		if cs := jar.Cookies(req.URL); len(cs) != 1 || cs[0].Name != "sid" || cs[0].Value != testkit.LBCookie("s3cret", addrs[first]) {
			t.Fatalf("client %d: cookies %v, want sid naming %s", i, cs, first)
		}
		post, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/socket.io/?EIO=4&transport=polling", strings.NewReader("40"))
		if got, _, _ := testkit.NamedHTTP(t, client, post); got != first {
			t.Fatalf("client %d: POST served by %s, the first request by %s", i, got, first)
		}
		d := &websocket.Dialer{Jar: jar, HandshakeTimeout: 5 * time.Second}
		if got, resp := testkit.NamedWS(t, d, "ws://"+addr+"/socket.io/?EIO=4&transport=websocket", nil); got != first {
			t.Fatalf("client %d: upgrade served by %q (%v), the polling by %s", i, got, resp, first)
		}
	}
	if len(spread) < 2 {
		t.Errorf("12 clients all went to %v", spread)
	}
}

// -lb takes Caddy's policy names with their arguments after colons:
// cookie, cookie:NAME and cookie:NAME:SECRET among them.
func TestLBFlag(t *testing.T) {
	for _, lb := range []string{"round_robin", "least_conn", "random_choose:3", "first", "ip_hash", "uri_hash", "query:room", "header:X-User", "cookie", "cookie:sid", "cookie:sid:s3cret"} {
		o, err := parseFlags([]string{"-lb", lb}, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		_, p, _, err := newRouter(o, "127.0.0.1:1", newLogger(false))
		if err != nil {
			t.Errorf("-lb %s: %v", lb, err)
			continue
		}
		p.Shutdown(t.Context())
	}
	for _, lb := range []string{"cookie:a:b:c", "query", "sticky"} {
		o, _ := parseFlags([]string{"-lb", lb}, io.Discard)
		if _, _, _, err := newRouter(o, "127.0.0.1:1", newLogger(false)); err == nil {
			t.Errorf("-lb %s accepted", lb)
		}
	}
}
