package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/internal/testkit"
)

// startHTTPForward serves p.HTTPHandler() for cfg on a front server; the
// proxy is stopped when the test ends.
func startHTTPForward(t *testing.T, cfg Config) (*Proxy, *httptest.Server) {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	testkit.StopAtEnd(t, p, 3*time.Second)
	front := httptest.NewServer(p.HTTPHandler())
	t.Cleanup(front.Close)
	return p, front
}

// newRequest is http.NewRequest that fails the test on an error.
func newRequest(t *testing.T, method, url, body string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// lastSeen returns the last request up saw.
func lastSeen(t *testing.T, up *testkit.Named) testkit.Seen {
	t.Helper()
	seen := up.Seen()
	if len(seen) == 0 {
		t.Fatalf("%s saw no request", up.Name)
	}
	return seen[len(seen)-1]
}

// Plain requests are forwarded as they came (method, path, query, body),
// with the client's Host, X-Forwarded-* set by the proxy and HeaderUp applied;
// an upstream URL's path replaces the client's.
func TestHTTPHandlerForwardsPlainRequests(t *testing.T) {
	up := testkit.StartNamed(t, "up", nil)
	for _, trust := range []bool{false, true} {
		_, front := startHTTPForward(t, Config{
			Upstreams:      []string{up.WS},
			TrustForwarded: trust,
			HeaderUp:       HeaderOps{Set: http.Header{"X-Static": {"yes"}}, Delete: []string{"X-Drop"}},
		})
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			body := ""
			if method == http.MethodPost {
				body = strings.Repeat("payload ", 10000)
			}
			req := newRequest(t, method, front.URL+"/socket.io/?EIO=4&transport=polling&t=x%20y", body)
			req.Host = "app.example"
			req.Header.Set("X-Drop", "1")
			req.Header.Set("X-Forwarded-For", "203.0.113.9")
			name, resp, got := testkit.NamedHTTP(t, nil, req)
			if name != "up" || resp.StatusCode != http.StatusOK || got != "up" {
				t.Fatalf("%s: %d %q from %q", method, resp.StatusCode, got, name)
			}
			s := lastSeen(t, up)
			wantXFF := "127.0.0.1"
			if trust {
				wantXFF = "203.0.113.9, 127.0.0.1"
			}
			for what, pair := range map[string][2]string{
				"method":            {s.Method, method},
				"URI":               {s.URI, "/socket.io/?EIO=4&transport=polling&t=x%20y"},
				"body":              {s.Body, body},
				"Host":              {s.Host, "app.example"},
				"X-Forwarded-For":   {s.Header.Get("X-Forwarded-For"), wantXFF},
				"X-Forwarded-Host":  {s.Header.Get("X-Forwarded-Host"), "app.example"},
				"X-Forwarded-Proto": {s.Header.Get("X-Forwarded-Proto"), "http"},
				"X-Static":          {s.Header.Get("X-Static"), "yes"},
				"X-Drop":            {s.Header.Get("X-Drop"), ""},
			} {
				if pair[0] != pair[1] {
					t.Errorf("trust=%v %s: upstream saw %s %q, want %q", trust, method, what, pair[0], pair[1])
				}
			}
		}
	}
	_, front := startHTTPForward(t, Config{Upstreams: []string{up.WS + "/base"}})
	testkit.NamedHTTP(t, nil, newRequest(t, http.MethodGet, front.URL+"/a/b?x=1", ""))
	if s := lastSeen(t, up); s.URI != "/base?x=1" {
		t.Errorf("with an upstream path: upstream saw %q, want /base?x=1", s.URI)
	}
}

// wss:// upstreams are spoken to as https://, verified with UpstreamTLS.
func TestHTTPHandlerTLSUpstream(t *testing.T) {
	up := testkit.StartNamed(t, "tls", &tls.Config{})
	roots := x509.NewCertPool()
	roots.AddCert(up.Certificate())
	_, front := startHTTPForward(t, Config{Upstreams: []string{up.WS}, UpstreamTLS: &tls.Config{RootCAs: roots}})
	if name, resp, _ := testkit.NamedHTTP(t, nil, newRequest(t, http.MethodGet, front.URL+"/", "")); name != "tls" || !lastSeen(t, up).TLS {
		t.Fatalf("%d from %q, want the TLS upstream over TLS", resp.StatusCode, name)
	}
	_, untrusted := startHTTPForward(t, Config{Upstreams: []string{up.WS}})
	if _, resp, _ := testkit.NamedHTTP(t, nil, newRequest(t, http.MethodGet, untrusted.URL+"/", "")); resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("untrusted upstream: %d, want 502", resp.StatusCode)
	}
}

// An upstream that fails the request is a 502 and a passive health failure:
// with it down, requests get 503 without a try.
func TestHTTPHandlerUpstreamFailure(t *testing.T) {
	p, front := startHTTPForward(t, Config{Upstreams: []string{testkit.DeadURL(t)}, PassiveHealth: passiveHealth})
	if _, resp, _ := testkit.NamedHTTP(t, nil, newRequest(t, http.MethodGet, front.URL+"/", "")); resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("status %d, want 502", resp.StatusCode)
	}
	if healthy(p.static[0]) {
		t.Fatal("a failed request did not count against the upstream")
	}
	if _, resp, body := testkit.NamedHTTP(t, nil, newRequest(t, http.MethodGet, front.URL+"/", "")); resp.StatusCode != http.StatusServiceUnavailable || body != "no upstream available\n" {
		t.Fatalf("with the upstream down: %d %q, want 503 no upstream available", resp.StatusCode, body)
	}
}

// On a chi route that takes both (Socket.IO's long-polling, then its
// upgrade), a StickyCookie keeps each client on one upstream: the cookie set
// on the first answer, HTTP or 101, leads the requests that follow, HTTP and
// WebSocket, to the same upstream; and clients spread.
func TestHTTPHandlerStickyWithWebSocketOnChi(t *testing.T) {
	testkit.CheckGoroutines(t)
	ups := testkit.StartNamedSet(t, 3)
	p, err := New(Config{Upstreams: namedPool(ups), Balancer: &StickyCookie{Secret: "k"}})
	if err != nil {
		t.Fatal(err)
	}
	testkit.StopAtEnd(t, p, 3*time.Second)
	r := chi.NewRouter()
	r.With(p.Middleware).Handle("/socket.io/*", p.HTTPHandler())
	front := httptest.NewServer(r)
	t.Cleanup(front.Close)

	spread := map[string]bool{}
	for i := range 20 {
		jar, _ := cookiejar.New(nil)
		client := &http.Client{Jar: jar}
		dialer := &websocket.Dialer{Jar: jar, HandshakeTimeout: 5 * time.Second}
		poll := func() string {
			name, resp, _ := testkit.NamedHTTP(t, client, newRequest(t, http.MethodPost, front.URL+"/socket.io/?EIO=4&transport=polling", "40"))
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("client %d: polling request: %d", i, resp.StatusCode)
			}
			return name
		}
		upgrade := func() string {
			name, resp := testkit.NamedWS(t, dialer, testkit.WSURL(front.URL)+"/socket.io/?EIO=4&transport=websocket", nil)
			if name == "" {
				t.Fatalf("client %d: upgrade refused: %v", i, resp)
			}
			return name
		}
		steps := []func() string{poll, poll, upgrade, poll, upgrade}
		if i%2 == 1 { // the WebSocket first
			steps = []func() string{upgrade, poll, upgrade}
		}
		first := steps[0]()
		req := newRequest(t, http.MethodGet, front.URL, "")
		spread[first] = true
		if cs := jar.Cookies(req.URL); len(cs) != 1 || cs[0].Value != testkit.LBCookie("k", namedAddr(t, ups, first)) {
			t.Fatalf("client %d: cookies %v after its first request, want lb naming %s", i, cs, first)
		}
		for j, step := range steps[1:] {
			if got := step(); got != first {
				t.Fatalf("client %d, request %d: served by %s, the first by %s", i, j+2, got, first)
			}
		}
	}
	if len(spread) < 2 {
		t.Errorf("20 clients all went to %v", spread)
	}
}
