package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wsgate/wsgate/internal/testkit"
	"github.com/wsgate/wsgate/wsmw"
)

// An upstream's refusal reaches the client as is: status, end-to-end headers and
// body; it is not retried; only a 5xx counts against the upstream's health.
func TestHandshakeUpstreamRefusalIsRelayed(t *testing.T) {
	testkit.CheckGoroutines(t)
	cases := []struct {
		name        string
		status      int
		header      http.Header
		body        string
		wantHealthy bool
	}{
		{"401 with challenge", 401, http.Header{"Www-Authenticate": {`Basic realm="upstream"`}}, "log in first", true},
		{"403", 403, nil, "not you", true},
		{"404", 404, nil, "no such room", true},
		{"503 with Retry-After", 503, http.Header{"Retry-After": {"7"}}, "busy, come back later", false},
		{"302 with Location", 302, http.Header{"Location": {"/elsewhere"}}, "moved", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			hdr := http.Header{"X-Upstream": {"yes"}, "Content-Type": {"text/plain; charset=utf-8"}}
			for k, vs := range tc.header {
				hdr[k] = vs
			}
			hop := http.Header{"Connection": {"X-Hop"}, "X-Hop": {"upstream leg only"}}
			for k, vs := range hop {
				hdr[k] = vs
			}
			up := startUpstream(t, refuse(tc.status, hdr, tc.body))
			delete(hdr, "Connection")
			delete(hdr, "X-Hop")
			e := startProxy(t, Config{
				Upstreams:     []string{up.ws()},
				Retries:       2, // a refusal is an answer: never retried
				PassiveHealth: passiveHealth,
				HeaderDown:    HeaderOps{Set: http.Header{"X-Via": {"wsgate"}}},
			})
			r := handshake(t, e, "GET", "/room", nil)
			if r.resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", r.resp.StatusCode, tc.status)
			}
			if r.body != tc.body {
				t.Errorf("body %q, want %q", r.body, tc.body)
			}
			for k, vs := range hdr {
				if got := r.resp.Header.Values(k); !slices.Equal(got, vs) {
					t.Errorf("header %s = %q, want %q", k, got, vs)
				}
			}
			if got := r.resp.Header.Values("X-Hop"); got != nil {
				t.Errorf("hop-by-hop X-Hop relayed: %q", got)
			}
			if got := r.resp.Header.Get("X-Via"); got != "wsgate" {
				t.Errorf("HeaderDown not applied to the refusal: X-Via %q", got)
			}
			if n := up.hits.Load(); n != 1 {
				t.Errorf("upstream saw %d requests, want 1", n)
			}
			if got := healthy(e.p.static[0]); got != tc.wantHealthy {
				t.Errorf("upstream healthy = %v after a %d, want %v", got, tc.status, tc.wantHealthy)
			}
		})
	}
}

// A refusal's body is relayed up to wsmw.DefaultMaxErrorBody bytes.
func TestHandshakeRefusalBodyIsBounded(t *testing.T) {
	big := strings.Repeat("x", 100<<10)
	up := startUpstream(t, refuse(http.StatusForbidden, nil, big))
	e := startProxy(t, Config{Upstreams: []string{up.ws()}})
	r := handshake(t, e, "GET", "/", nil)
	if r.resp.StatusCode != http.StatusForbidden {
		t.Fatalf("status %d, want 403", r.resp.StatusCode)
	}
	if len(r.body) != wsmw.DefaultMaxErrorBody || r.body != big[:wsmw.DefaultMaxErrorBody] {
		t.Errorf("body of %d bytes, want the first %d of the upstream's", len(r.body), wsmw.DefaultMaxErrorBody)
	}
	if cl := r.resp.Header.Get("Content-Length"); cl != "" && cl != "4096" {
		t.Errorf("Content-Length %s does not describe the relayed body", cl)
	}
}

// A 101 that fails the client-side checks is not relayed: 502.
func TestHandshakeInvalidUpstream101Is502(t *testing.T) {
	cases := []struct {
		name  string
		lines string
	}{
		{"wrong accept", "Sec-WebSocket-Accept: dGhlIHNhbXBsZSBub25jZQ==\r\n"},
		{"unoffered subprotocol", "Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: nope\r\n"},
		{"unoffered extension", "Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Extensions: permessage-deflate\r\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			up := startUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				nc, brw, err := http.NewResponseController(w).Hijack()
				if err != nil {
					return
				}
				defer nc.Close()
				lines := strings.ReplaceAll(tc.lines, "{accept}", testkit.AcceptKey(r.Header.Get("Sec-WebSocket-Key")))
				brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" + lines + "\r\n")
				brw.Flush()
				nc.SetReadDeadline(time.Now().Add(2 * time.Second))
				brw.ReadByte() // until the proxy hangs up
			}))
			e := startProxy(t, Config{Upstreams: []string{up.ws()}, PassiveHealth: passiveHealth})
			r := handshake(t, e, "GET", "/", nil)
			if r.resp.StatusCode != http.StatusBadGateway {
				t.Fatalf("status %d, want 502", r.resp.StatusCode)
			}
			if healthy(e.p.static[0]) {
				t.Error("an invalid 101 did not count against the upstream")
			}
		})
	}
}

// An unreachable upstream is a 502 naming the cause; a refused dial fails
// over to the next upstream by default, retries or not.
func TestHandshakeUnreachableUpstream(t *testing.T) {
	testkit.CheckGoroutines(t)
	t.Run("single dead upstream is 502", func(t *testing.T) {
		e := startProxy(t, Config{Upstreams: []string{testkit.DeadURL(t)}})
		r := handshake(t, e, "GET", "/", nil)
		if r.resp.StatusCode != http.StatusBadGateway || r.body != "upstream refused the connection\n" {
			t.Fatalf("got %d %q, want 502 %q", r.resp.StatusCode, r.body, "upstream refused the connection\n")
		}
	})
	for _, retries := range []int{0, 1} {
		t.Run("dead then alive with retries="+string(rune('0'+retries)), func(t *testing.T) {
			alive := startUpstream(t, testkit.GorillaEchoHandler(websocket.Upgrader{}, nil))
			e := startProxy(t, Config{
				Upstreams: []string{testkit.DeadURL(t), alive.ws()},
				Balancer:  First(),
				Retries:   retries,
			})
			c, _ := mustDial(t, e.ws("/"), nil)
			echoOnce(t, c, "via the second")
			if got := [2]int64{e.p.static[0].ActiveSessions(), e.p.static[1].ActiveSessions()}; got != [2]int64{0, 1} {
				t.Errorf("active sessions per upstream %v, want [0 1]", got)
			}
			if alive.hits.Load() != 1 {
				t.Errorf("second upstream saw %d requests, want 1", alive.hits.Load())
			}
			closeGorilla(t, c)
		})
	}
}

// TryDuration keeps retrying every TryInterval until the duration is spent.
func TestHandshakeTryDurationRetriesUntilSpent(t *testing.T) {
	b := &countingBalancer{}
	e := startProxy(t, Config{
		Upstreams:   []string{testkit.DeadURL(t)},
		Balancer:    b,
		TryDuration: 300 * time.Millisecond,
		TryInterval: 50 * time.Millisecond,
	})
	start := time.Now()
	r := handshake(t, e, "GET", "/", nil)
	elapsed := time.Since(start)
	if r.resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("status %d, want 502", r.resp.StatusCode)
	}
	// Tries stop once elapsed+TryInterval reaches TryDuration: ≥ 250ms, ≤ 6 tries 50ms apart.
	if elapsed < 250*time.Millisecond || elapsed > 2*time.Second {
		t.Errorf("gave up after %v, want 250ms..2s", elapsed)
	}
	if n := b.selects.Load(); n < 3 || n > 6 {
		t.Errorf("%d tries, want 3..6", n)
	}
}

// An upstream that accepts TCP but never answers is a 504 after DialTimeout.
func TestHandshakeSilentUpstreamTimesOut(t *testing.T) {
	addr, accepted := testkit.Blackhole(t)
	e := startProxy(t, Config{Upstreams: []string{addr}, DialTimeout: 200 * time.Millisecond, PassiveHealth: passiveHealth})
	start := time.Now()
	r := handshake(t, e, "GET", "/", nil)
	elapsed := time.Since(start)
	if r.resp.StatusCode != http.StatusGatewayTimeout || r.body != "upstream timed out\n" {
		t.Fatalf("got %d %q, want 504 %q", r.resp.StatusCode, r.body, "upstream timed out\n")
	}
	if elapsed < 200*time.Millisecond || elapsed > 2*time.Second {
		t.Errorf("answered after %v, want 200ms..2s", elapsed)
	}
	if accepted.Load() != 1 {
		t.Errorf("%d connections, want 1", accepted.Load())
	}
	if healthy(e.p.static[0]) {
		t.Error("a timed-out dial did not count against the upstream")
	}
}

// Once passive health marks the only upstream down, requests get 503 without a dial.
func TestHandshakeNoHealthyUpstreamIs503(t *testing.T) {
	b := &countingBalancer{}
	e := startProxy(t, Config{Upstreams: []string{testkit.DeadURL(t)}, Balancer: b, PassiveHealth: passiveHealth})
	if r := handshake(t, e, "GET", "/", nil); r.resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("first request: status %d, want 502", r.resp.StatusCode)
	}
	if healthy(e.p.static[0]) {
		t.Fatal("upstream still healthy after a failed dial")
	}
	r := handshake(t, e, "GET", "/", nil)
	if r.resp.StatusCode != http.StatusServiceUnavailable || r.body != "no upstream available\n" {
		t.Fatalf("second request: got %d %q, want 503 %q", r.resp.StatusCode, r.body, "no upstream available\n")
	}
	if n := b.selects.Load(); n != 1 {
		t.Errorf("balancer asked %d times, want 1 (not for the second request)", n)
	}
}

// A client that gives up during the upstream dial does not count against the upstream.
func TestHandshakeClientAbortDoesNotMarkUpstreamDown(t *testing.T) {
	addr, accepted := testkit.Blackhole(t)
	e := startProxy(t, Config{Upstreams: []string{addr}, DialTimeout: 5 * time.Second, PassiveHealth: passiveHealth})
	nc, err := net.Dial("tcp", e.host())
	if err != nil {
		t.Fatal(err)
	}
	req := "GET / HTTP/1.1\r\nHost: " + e.host() + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + testkit.NewKey() + "\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := nc.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for accepted.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	nc.Close()
	if !idle(e.p, 3*time.Second) {
		t.Fatal("handshake still running 3s after the client left")
	}
	if !healthy(e.p.static[0]) {
		t.Error("the client's abort marked the upstream down")
	}
}

// A dynamic Source: its error is a 502, an empty answer a 503, an address works.
func TestHandshakeSource(t *testing.T) {
	alive := startUpstream(t, testkit.GorillaEchoHandler(websocket.Upgrader{}, nil))
	e := startProxy(t, Config{Source: sourceFunc(func(r *http.Request) ([]string, error) {
		switch r.URL.Path {
		case "/error":
			return nil, errors.New("lookup failed")
		case "/empty":
			return nil, nil
		}
		return []string{strings.TrimPrefix(alive.URL, "http://")}, nil
	})})
	for _, tc := range []struct {
		path   string
		status int
	}{{"/error", 502}, {"/empty", 503}} {
		if r := handshake(t, e, "GET", tc.path, nil); r.resp.StatusCode != tc.status {
			t.Errorf("%s: status %d, want %d", tc.path, r.resp.StatusCode, tc.status)
		}
	}
	c, _ := mustDial(t, e.ws("/ok"), nil)
	echoOnce(t, c, "dynamic")
	closeGorilla(t, c)
	if alive.hits.Load() != 1 || alive.last(t).URI != "/ok" {
		t.Errorf("upstream hits %d, want 1 for /ok", alive.hits.Load())
	}
}

// MaxSessions refuses further upgrades with 503 while full, without dialing.
func TestHandshakeMaxSessions(t *testing.T) {
	testkit.CheckGoroutines(t)
	t.Run("", func(t *testing.T) {
		up := startUpstream(t, testkit.GorillaEchoHandler(websocket.Upgrader{}, nil))
		refusing := startUpstream(t, refuse(http.StatusForbidden, nil, "no"))
		dead := testkit.DeadURL(t)
		e := startProxy(t, Config{MaxSessions: 1, Source: sourceFunc(func(r *http.Request) ([]string, error) {
			switch r.URL.Path {
			case "/dead":
				return []string{dead}, nil
			case "/refuse":
				return []string{refusing.ws()}, nil
			}
			return []string{up.ws()}, nil
		})})
		// Failed handshakes give their slot back.
		for _, tc := range []struct {
			path   string
			hdr    http.Header
			status int
		}{{"/dead", nil, 502}, {"/refuse", nil, 403}, {"/", http.Header{"Sec-WebSocket-Key": {"bad"}}, 400}} {
			if r := handshake(t, e, "GET", tc.path, tc.hdr); r.resp.StatusCode != tc.status {
				t.Fatalf("%s: status %d, want %d", tc.path, r.resp.StatusCode, tc.status)
			}
		}
		if n := e.p.ActiveSessions(); n != 0 {
			t.Fatalf("%d sessions counted after failed handshakes, want 0", n)
		}
		first, _ := mustDial(t, e.ws("/"), nil)
		echoOnce(t, first, "one")
		dialRefused(t, e.ws("/"), nil, http.StatusServiceUnavailable) // beyond MaxSessions 1
		if up.hits.Load() != 1 {
			t.Errorf("upstream saw %d requests, want 1", up.hits.Load())
		}
		closeGorilla(t, first)
		if !idle(e.p, 3*time.Second) {
			t.Fatal("first session did not end")
		}
		third, _ := mustDial(t, e.ws("/"), nil)
		echoOnce(t, third, "three")
		closeGorilla(t, third)
	})
}

// Malformed client handshakes are answered by the proxy itself, without a dial.
func TestHandshakeClientErrorsAnsweredByProxy(t *testing.T) {
	testkit.CheckGoroutines(t)
	cases := []struct {
		name       string
		method     string
		header     http.Header
		origins    []string
		status     int
		wantHeader http.Header
	}{
		{"bad version", "GET", http.Header{"Sec-WebSocket-Version": {"8"}}, nil, 426,
			http.Header{"Sec-Websocket-Version": {"13"}}},
		{"missing version", "GET", http.Header{"Sec-WebSocket-Version": {}}, nil, 426,
			http.Header{"Sec-Websocket-Version": {"13"}}},
		{"bad key", "GET", http.Header{"Sec-WebSocket-Key": {"c2hvcnQ="}}, nil, 400, nil},
		{"missing key", "GET", http.Header{"Sec-WebSocket-Key": {}}, nil, 400, nil},
		{"not GET", "POST", http.Header{"Content-Length": {"0"}}, nil, 405, http.Header{"Allow": {"GET"}}},
		{"foreign origin", "GET", http.Header{"Origin": {"http://evil.example"}}, nil, 403, nil},
		{"foreign origin allowed by pattern", "GET", http.Header{"Origin": {"http://evil.example"}},
			[]string{"*.example"}, 101, nil},
		{"same-host origin", "GET", http.Header{"Origin": {"http://{host}"}}, nil, 101, nil},
		{"keep-alive, Upgrade and mixed case", "GET", http.Header{"Connection": {"keep-alive, Upgrade"}, "Upgrade": {"WebSocket"}},
			nil, 101, nil},
		{"non-token subprotocol", "GET", http.Header{"Sec-WebSocket-Protocol": {"chat/v1"}}, nil, 400, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			up := startUpstream(t, testkit.GorillaEchoHandler(websocket.Upgrader{}, nil))
			e := startProxy(t, Config{Upstreams: []string{up.ws()}, Origins: tc.origins, PassiveHealth: passiveHealth})
			for k, vs := range tc.header {
				for i, v := range vs {
					vs[i] = strings.ReplaceAll(v, "{host}", e.host())
				}
				tc.header[k] = vs
			}
			r := handshake(t, e, tc.method, "/", tc.header)
			defer r.close(t)
			if r.resp.StatusCode != tc.status {
				t.Fatalf("status %d (%q), want %d", r.resp.StatusCode, r.body, tc.status)
			}
			for k, vs := range tc.wantHeader {
				if got := r.resp.Header.Values(k); !slices.Equal(got, vs) {
					t.Errorf("header %s = %q, want %q", k, got, vs)
				}
			}
			wantHits := int64(0)
			if tc.status == 101 {
				wantHits = 1
			}
			if n := up.hits.Load(); n != wantHits {
				t.Errorf("upstream saw %d requests, want %d", n, wantHits)
			}
			if !healthy(e.p.static[0]) {
				t.Error("a client's error counted against the upstream")
			}
		})
	}
}

// The upstream's subprotocol choice is the client's; Config.Subprotocols filters the offer.
func TestHandshakeSubprotocols(t *testing.T) {
	cases := []struct {
		name      string
		allowed   []string // Config.Subprotocols
		upstream  []string // the upstream's supported list
		wantOffer []string // Sec-WebSocket-Protocol values the upstream saw
		want      string   // what the client gets
	}{
		{"upstream picks b", nil, []string{"b"}, []string{"a, b"}, "b"},
		{"upstream picks none", nil, nil, []string{"a, b"}, ""},
		{"offer filtered to a", []string{"a"}, []string{"b", "a"}, []string{"a"}, "a"},
		{"offer filtered to nothing", []string{"c"}, []string{"a", "b", "c"}, nil, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			up := startUpstream(t, testkit.GorillaEchoHandler(websocket.Upgrader{Subprotocols: tc.upstream}, nil))
			e := startProxy(t, Config{Upstreams: []string{up.ws()}, Subprotocols: tc.allowed})
			c, resp := mustDial(t, e.ws("/"), nil, "a", "b")
			defer closeGorilla(t, c)
			if c.Subprotocol() != tc.want || resp.Header.Get("Sec-WebSocket-Protocol") != tc.want {
				t.Errorf("client got %q (header %q), want %q", c.Subprotocol(), resp.Header.Get("Sec-WebSocket-Protocol"), tc.want)
			}
			if got := up.last(t).Header.Values("Sec-WebSocket-Protocol"); !slices.Equal(got, tc.wantOffer) {
				t.Errorf("upstream was offered %q, want %q", got, tc.wantOffer)
			}
			echoOnce(t, c, "sub")
		})
	}
}

// wss:// upstreams are verified with UpstreamTLS.
func TestHandshakeTLSUpstream(t *testing.T) {
	testkit.CheckGoroutines(t)
	t.Run("trusted CA", func(t *testing.T) {
		up := startTLSUpstream(t, testkit.GorillaEchoHandler(websocket.Upgrader{}, nil))
		pool := x509.NewCertPool()
		pool.AddCert(up.Certificate())
		e := startProxy(t, Config{Upstreams: []string{up.ws()}, UpstreamTLS: &tls.Config{RootCAs: pool}})
		if !strings.HasPrefix(e.p.static[0].Address(), "wss://") {
			t.Fatalf("upstream %s is not wss", e.p.static[0].Address())
		}
		c, _ := mustDial(t, e.ws("/"), nil)
		echoOnce(t, c, "over tls")
		closeGorilla(t, c)
	})
	t.Run("unknown CA", func(t *testing.T) {
		up := startTLSUpstream(t, testkit.GorillaEchoHandler(websocket.Upgrader{}, nil))
		e := startProxy(t, Config{Upstreams: []string{up.ws()}})
		r := handshake(t, e, "GET", "/", nil)
		if r.resp.StatusCode != http.StatusBadGateway {
			t.Fatalf("status %d, want 502", r.resp.StatusCode)
		}
		if up.hits.Load() != 0 {
			t.Error("upstream served a request over an unverified connection")
		}
	})
}

// Active health probes dial wss:// upstreams with UpstreamTLS, as sessions do:
// an upstream whose CA only UpstreamTLS trusts stays healthy.
func TestActiveHealthProbesUseUpstreamTLS(t *testing.T) {
	testkit.CheckGoroutines(t)
	for _, trusted := range []bool{true, false} {
		t.Run(fmt.Sprint("trusted=", trusted), func(t *testing.T) {
			up := startTLSUpstream(t, testkit.GorillaEchoHandler(websocket.Upgrader{}, nil))
			pool := x509.NewCertPool()
			pool.AddCert(up.Certificate())
			cfg := Config{Upstreams: []string{up.ws()}, ActiveHealth: &ActiveHealth{Interval: time.Hour, Timeout: 2 * time.Second}}
			if trusted {
				cfg.UpstreamTLS = &tls.Config{RootCAs: pool}
			}
			e := startProxy(t, cfg)
			u := e.p.static[0]
			// The checker probes at once when it starts; CheckNow skips an
			// upstream whose probe is still running, so wait for a result.
			probed := func() bool {
				u.mu.Lock()
				defer u.mu.Unlock()
				return u.probePasses+u.probeFails > 0
			}
			if !testkit.Eventually(5*time.Second, probed) {
				t.Fatal("no probe result")
			}
			if got := activeUp(u); got != trusted {
				t.Errorf("upstream healthy after a probe: %v (probe error %v)", got, u.lastProbeErr)
			}
		})
	}
}

// UpstreamCredentials authenticate the proxy to the upstream.
func TestHandshakeUpstreamBasicAuth(t *testing.T) {
	protected := func(user, pass string) http.HandlerFunc {
		echo := testkit.GorillaEchoHandler(websocket.Upgrader{}, nil)
		return func(w http.ResponseWriter, r *http.Request) {
			u, p, ok := r.BasicAuth()
			if !ok || u != user || p != pass {
				w.Header().Set("WWW-Authenticate", `Basic realm="up"`)
				http.Error(w, "who are you", http.StatusUnauthorized)
				return
			}
			echo.ServeHTTP(w, r)
		}
	}
	cases := []struct {
		name      string
		creds     *wsmw.Credentials
		clientHdr http.Header
		status    int
		hits      int64
	}{
		{"basic up front", &wsmw.Credentials{Username: "proxy", Password: "s3cret", Scheme: wsmw.AuthBasic}, nil, 101, 1},
		{"any answers the challenge", &wsmw.Credentials{Username: "proxy", Password: "s3cret"}, nil, 101, 2},
		{"without credentials 401 is relayed", nil, nil, 401, 1},
		{"wrong password 401 is relayed", &wsmw.Credentials{Username: "proxy", Password: "nope", Scheme: wsmw.AuthBasic}, nil, 401, 1},
		{"client Authorization replaced by the credentials",
			&wsmw.Credentials{Username: "proxy", Password: "s3cret", Scheme: wsmw.AuthBasic},
			http.Header{"Authorization": {"Bearer client-token"}}, 101, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			up := startUpstream(t, protected("proxy", "s3cret"))
			e := startProxy(t, Config{Upstreams: []string{up.ws()}, UpstreamCredentials: tc.creds, PassiveHealth: passiveHealth})
			if tc.status == 101 {
				c, _ := mustDial(t, e.ws("/"), tc.clientHdr)
				echoOnce(t, c, "authenticated")
				closeGorilla(t, c)
			} else { // without valid credentials
				resp := dialRefused(t, e.ws("/"), tc.clientHdr, tc.status)
				if got := resp.Header.Get("WWW-Authenticate"); got != `Basic realm="up"` {
					t.Errorf("WWW-Authenticate %q not relayed", got)
				}
			}
			if n := up.hits.Load(); n != tc.hits {
				t.Errorf("upstream saw %d requests, want %d", n, tc.hits)
			}
			if !healthy(e.p.static[0]) {
				t.Error("upstream marked down")
			}
		})
	}
}

// Handshake failures are counted by reason.
func TestHandshakeFailureMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg, "t")
	if err != nil {
		t.Fatal(err)
	}
	dead := testkit.DeadURL(t)
	hole, _ := testkit.Blackhole(t)
	refusing := startUpstream(t, refuse(http.StatusForbidden, nil, "no"))
	alive := startUpstream(t, testkit.GorillaEchoHandler(websocket.Upgrader{}, nil))
	e := startProxy(t, Config{
		Metrics:     m,
		DialTimeout: 200 * time.Millisecond,
		Source: sourceFunc(func(r *http.Request) ([]string, error) {
			switch r.URL.Path {
			case "/dead":
				return []string{dead}, nil
			case "/hole":
				return []string{hole}, nil
			case "/refuse":
				return []string{refusing.ws()}, nil
			case "/none":
				return nil, nil
			}
			return []string{alive.ws()}, nil
		}),
	})

	r := handshake(t, e, "GET", "/dead", nil)
	if r.resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("status %d, want 502", r.resp.StatusCode)
	}
	if got := gather(t, reg)[`t_handshake_failures_total{reason="upstream_unreachable"}`]; got != 1 {
		t.Errorf("upstream_unreachable = %v, want 1", got)
	}

	for _, tc := range []struct {
		path   string
		hdr    http.Header
		status int
	}{
		{"/hole", nil, 504},
		{"/refuse", nil, 403},
		{"/none", nil, 503},
		{"/ok", http.Header{"Sec-WebSocket-Version": {"7"}}, 426},
	} {
		if r := handshake(t, e, "GET", tc.path, tc.hdr); r.resp.StatusCode != tc.status {
			t.Fatalf("%s: status %d, want %d", tc.path, r.resp.StatusCode, tc.status)
		}
	}
	c, _ := mustDial(t, e.ws("/ok"), nil)
	echoOnce(t, c, "counted")
	closeGorilla(t, c)
	if !idle(e.p, 3*time.Second) {
		t.Fatal("session did not end")
	}

	got := gather(t, reg)
	for k, v := range map[string]float64{
		`t_handshake_failures_total{reason="bad_handshake"}`:        1,
		`t_handshake_failures_total{reason="no_upstream"}`:          1,
		`t_handshake_failures_total{reason="upstream_refused"}`:     1,
		`t_handshake_failures_total{reason="upstream_timeout"}`:     1,
		`t_handshake_failures_total{reason="upstream_unreachable"}`: 1,
		`t_sessions_total{client_proto="http/1.1"}`:                 1,
		`t_sessions_active`: 0,
	} {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	n := 0
	for k := range got {
		if strings.HasPrefix(k, "t_handshake_failures_total{") {
			n++
		}
	}
	if n != 5 {
		t.Errorf("%d handshake failure reasons, want 5: %v", n, got)
	}
	// One dial observation per dialed upstream: dead, hole and refusing failed, alive succeeded.
	for _, up := range []struct{ addr, result string }{
		{dead, "error"}, {hole, "error"}, {refusing.ws(), "error"}, {alive.ws(), "ok"},
	} {
		k := `t_upstream_dial_duration_seconds_count{result="` + up.result + `",upstream="` + up.addr + `"}`
		if got[k] != 1 {
			t.Errorf("%s = %v, want 1", k, got[k])
		}
	}
}
