package proxy

import (
	"context"
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
	"go.uber.org/goleak"

	"github.com/wsgate/wsgate/wsmw"
)

// An upstream's refusal reaches the client as is: status, end-to-end headers and
// body; it is not retried; only a 5xx counts against the upstream's health.
func TestHandshakeUpstreamRefusalIsRelayed(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
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
			up := hsStart(t, hsRefuse(tc.status, hdr, tc.body))
			delete(hdr, "Connection")
			delete(hdr, "X-Hop")
			e := hsProxy(t, Config{
				Upstreams:     []string{up.ws()},
				Retries:       2, // a refusal is an answer: never retried
				PassiveHealth: hsPassive,
				HeaderDown:    HeaderOps{Set: http.Header{"X-Via": {"wsgate"}}},
			})
			r := hsHandshake(t, e, "GET", "/room", nil)
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
			if got := hsHealthy(e.p.static[0]); got != tc.wantHealthy {
				t.Errorf("upstream healthy = %v after a %d, want %v", got, tc.status, tc.wantHealthy)
			}
		})
	}
}

// A refusal's body is relayed up to wsmw.DefaultMaxErrorBody bytes.
func TestHandshakeRefusalBodyIsBounded(t *testing.T) {
	big := strings.Repeat("x", 100<<10)
	up := hsStart(t, hsRefuse(http.StatusForbidden, nil, big))
	e := hsProxy(t, Config{Upstreams: []string{up.ws()}})
	r := hsHandshake(t, e, "GET", "/", nil)
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
			up := hsStart(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				nc, brw, err := http.NewResponseController(w).Hijack()
				if err != nil {
					return
				}
				defer nc.Close()
				lines := strings.ReplaceAll(tc.lines, "{accept}", hsAccept(r.Header.Get("Sec-WebSocket-Key")))
				brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" + lines + "\r\n")
				brw.Flush()
				nc.SetReadDeadline(time.Now().Add(2 * time.Second))
				brw.ReadByte() // until the proxy hangs up
			}))
			e := hsProxy(t, Config{Upstreams: []string{up.ws()}, PassiveHealth: hsPassive})
			r := hsHandshake(t, e, "GET", "/", nil)
			if r.resp.StatusCode != http.StatusBadGateway {
				t.Fatalf("status %d, want 502", r.resp.StatusCode)
			}
			if hsHealthy(e.p.static[0]) {
				t.Error("an invalid 101 did not count against the upstream")
			}
		})
	}
}

// An unreachable upstream is a 502; Retries move on to the next upstream.
func TestHandshakeUnreachableUpstream(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	t.Run("single dead upstream is 502", func(t *testing.T) {
		e := hsProxy(t, Config{Upstreams: []string{hsDeadAddr(t)}})
		r := hsHandshake(t, e, "GET", "/", nil)
		if r.resp.StatusCode != http.StatusBadGateway || r.body != "upstream unreachable\n" {
			t.Fatalf("got %d %q, want 502 %q", r.resp.StatusCode, r.body, "upstream unreachable\n")
		}
	})
	for _, retries := range []int{0, 1} {
		t.Run("dead then alive with retries="+string(rune('0'+retries)), func(t *testing.T) {
			alive := hsStart(t, hsEcho(websocket.Upgrader{}, nil))
			e := hsProxy(t, Config{
				Upstreams: []string{hsDeadAddr(t), alive.ws()},
				Balancer:  First(),
				Retries:   retries,
			})
			c, resp, err := hsDial(t, e.ws("/"), nil)
			if retries == 0 {
				if err == nil {
					c.Close()
					t.Fatal("upgraded without retries although the first upstream is dead")
				}
				if resp == nil || resp.StatusCode != http.StatusBadGateway {
					t.Fatalf("got %v, want 502", err)
				}
				if alive.hits.Load() != 0 {
					t.Error("second upstream dialed without retries")
				}
				return
			}
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			hsEchoOnce(t, c, "via the second")
			if got := [2]int64{e.p.static[0].ActiveSessions(), e.p.static[1].ActiveSessions()}; got != [2]int64{0, 1} {
				t.Errorf("active sessions per upstream %v, want [0 1]", got)
			}
			if alive.hits.Load() != 1 {
				t.Errorf("second upstream saw %d requests, want 1", alive.hits.Load())
			}
			hsCloseGorilla(t, c)
		})
	}
}

// TryDuration keeps retrying every TryInterval until the duration is spent.
func TestHandshakeTryDurationRetriesUntilSpent(t *testing.T) {
	b := &hsCountingBalancer{}
	e := hsProxy(t, Config{
		Upstreams:   []string{hsDeadAddr(t)},
		Balancer:    b,
		TryDuration: 300 * time.Millisecond,
		TryInterval: 50 * time.Millisecond,
	})
	start := time.Now()
	r := hsHandshake(t, e, "GET", "/", nil)
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
	addr, accepted := hsBlackhole(t)
	e := hsProxy(t, Config{Upstreams: []string{addr}, DialTimeout: 200 * time.Millisecond, PassiveHealth: hsPassive})
	start := time.Now()
	r := hsHandshake(t, e, "GET", "/", nil)
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
	if hsHealthy(e.p.static[0]) {
		t.Error("a timed-out dial did not count against the upstream")
	}
}

// Once passive health marks the only upstream down, requests get 503 without a dial.
func TestHandshakeNoHealthyUpstreamIs503(t *testing.T) {
	b := &hsCountingBalancer{}
	e := hsProxy(t, Config{Upstreams: []string{hsDeadAddr(t)}, Balancer: b, PassiveHealth: hsPassive})
	if r := hsHandshake(t, e, "GET", "/", nil); r.resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("first request: status %d, want 502", r.resp.StatusCode)
	}
	if hsHealthy(e.p.static[0]) {
		t.Fatal("upstream still healthy after a failed dial")
	}
	r := hsHandshake(t, e, "GET", "/", nil)
	if r.resp.StatusCode != http.StatusServiceUnavailable || r.body != "no upstream available\n" {
		t.Fatalf("second request: got %d %q, want 503 %q", r.resp.StatusCode, r.body, "no upstream available\n")
	}
	if n := b.selects.Load(); n != 1 {
		t.Errorf("balancer asked %d times, want 1 (not for the second request)", n)
	}
}

// A client that gives up during the upstream dial does not count against the upstream.
func TestHandshakeClientAbortDoesNotMarkUpstreamDown(t *testing.T) {
	addr, accepted := hsBlackhole(t)
	e := hsProxy(t, Config{Upstreams: []string{addr}, DialTimeout: 5 * time.Second, PassiveHealth: hsPassive})
	nc, err := net.Dial("tcp", e.host())
	if err != nil {
		t.Fatal(err)
	}
	req := "GET / HTTP/1.1\r\nHost: " + e.host() + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + hsNewKey() + "\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := nc.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for accepted.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	nc.Close()
	if !hsWaitIdle(e.p, 3*time.Second) {
		t.Fatal("handshake still running 3s after the client left")
	}
	if !hsHealthy(e.p.static[0]) {
		t.Error("the client's abort marked the upstream down")
	}
}

// A dynamic Source: its error is a 502, an empty answer a 503, an address works.
func TestHandshakeSource(t *testing.T) {
	alive := hsStart(t, hsEcho(websocket.Upgrader{}, nil))
	e := hsProxy(t, Config{Source: hsSource(func(r *http.Request) ([]string, error) {
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
		if r := hsHandshake(t, e, "GET", tc.path, nil); r.resp.StatusCode != tc.status {
			t.Errorf("%s: status %d, want %d", tc.path, r.resp.StatusCode, tc.status)
		}
	}
	c, _ := hsMustDial(t, e.ws("/ok"), nil)
	hsEchoOnce(t, c, "dynamic")
	hsCloseGorilla(t, c)
	if alive.hits.Load() != 1 || alive.last(t).URI != "/ok" {
		t.Errorf("upstream hits %d, want 1 for /ok", alive.hits.Load())
	}
}

// MaxSessions refuses further upgrades with 503 while full, without dialing.
func TestHandshakeMaxSessions(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	t.Run("", func(t *testing.T) {
		up := hsStart(t, hsEcho(websocket.Upgrader{}, nil))
		refusing := hsStart(t, hsRefuse(http.StatusForbidden, nil, "no"))
		dead := hsDeadAddr(t)
		e := hsProxy(t, Config{MaxSessions: 1, Source: hsSource(func(r *http.Request) ([]string, error) {
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
			if r := hsHandshake(t, e, "GET", tc.path, tc.hdr); r.resp.StatusCode != tc.status {
				t.Fatalf("%s: status %d, want %d", tc.path, r.resp.StatusCode, tc.status)
			}
		}
		if n := e.p.ActiveSessions(); n != 0 {
			t.Fatalf("%d sessions counted after failed handshakes, want 0", n)
		}
		first, _ := hsMustDial(t, e.ws("/"), nil)
		hsEchoOnce(t, first, "one")
		c, resp, err := hsDial(t, e.ws("/"), nil)
		if err == nil {
			c.Close()
			t.Fatal("second session admitted beyond MaxSessions 1")
		}
		if resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("second: %v, want 503", err)
		}
		if up.hits.Load() != 1 {
			t.Errorf("upstream saw %d requests, want 1", up.hits.Load())
		}
		hsCloseGorilla(t, first)
		if !hsWaitIdle(e.p, 3*time.Second) {
			t.Fatal("first session did not end")
		}
		third, _ := hsMustDial(t, e.ws("/"), nil)
		hsEchoOnce(t, third, "three")
		hsCloseGorilla(t, third)
	})
}

// Malformed client handshakes are answered by the proxy itself, without a dial.
func TestHandshakeClientErrorsAnsweredByProxy(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
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
			up := hsStart(t, hsEcho(websocket.Upgrader{}, nil))
			e := hsProxy(t, Config{Upstreams: []string{up.ws()}, Origins: tc.origins, PassiveHealth: hsPassive})
			for k, vs := range tc.header {
				for i, v := range vs {
					vs[i] = strings.ReplaceAll(v, "{host}", e.host())
				}
				tc.header[k] = vs
			}
			r := hsHandshake(t, e, tc.method, "/", tc.header)
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
			if !hsHealthy(e.p.static[0]) {
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
			up := hsStart(t, hsEcho(websocket.Upgrader{Subprotocols: tc.upstream}, nil))
			e := hsProxy(t, Config{Upstreams: []string{up.ws()}, Subprotocols: tc.allowed})
			c, resp := hsMustDial(t, e.ws("/"), nil, "a", "b")
			defer hsCloseGorilla(t, c)
			if c.Subprotocol() != tc.want || resp.Header.Get("Sec-WebSocket-Protocol") != tc.want {
				t.Errorf("client got %q (header %q), want %q", c.Subprotocol(), resp.Header.Get("Sec-WebSocket-Protocol"), tc.want)
			}
			if got := up.last(t).Header.Values("Sec-WebSocket-Protocol"); !slices.Equal(got, tc.wantOffer) {
				t.Errorf("upstream was offered %q, want %q", got, tc.wantOffer)
			}
			hsEchoOnce(t, c, "sub")
		})
	}
}

// wss:// upstreams are verified with UpstreamTLS.
func TestHandshakeTLSUpstream(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	t.Run("trusted CA", func(t *testing.T) {
		up := hsStartTLS(t, hsEcho(websocket.Upgrader{}, nil))
		pool := x509.NewCertPool()
		pool.AddCert(up.Certificate())
		e := hsProxy(t, Config{Upstreams: []string{up.ws()}, UpstreamTLS: &tls.Config{RootCAs: pool}})
		if !strings.HasPrefix(e.p.static[0].Address(), "wss://") {
			t.Fatalf("upstream %s is not wss", e.p.static[0].Address())
		}
		c, _ := hsMustDial(t, e.ws("/"), nil)
		hsEchoOnce(t, c, "over tls")
		hsCloseGorilla(t, c)
	})
	t.Run("unknown CA", func(t *testing.T) {
		up := hsStartTLS(t, hsEcho(websocket.Upgrader{}, nil))
		e := hsProxy(t, Config{Upstreams: []string{up.ws()}})
		r := hsHandshake(t, e, "GET", "/", nil)
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
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	for _, trusted := range []bool{true, false} {
		t.Run(fmt.Sprint("trusted=", trusted), func(t *testing.T) {
			up := hsStartTLS(t, hsEcho(websocket.Upgrader{}, nil))
			pool := x509.NewCertPool()
			pool.AddCert(up.Certificate())
			cfg := Config{Upstreams: []string{up.ws()}, ActiveHealth: &ActiveHealth{Interval: time.Hour, Timeout: 2 * time.Second}}
			if trusted {
				cfg.UpstreamTLS = &tls.Config{RootCAs: pool}
			}
			e := hsProxy(t, cfg)
			e.p.health.CheckNow(context.Background())
			if got := activeUp(e.p.static[0]); got != trusted {
				t.Errorf("upstream healthy after a probe: %v", got)
			}
		})
	}
}

// UpstreamCredentials authenticate the proxy to the upstream.
func TestHandshakeUpstreamBasicAuth(t *testing.T) {
	protected := func(user, pass string) http.HandlerFunc {
		echo := hsEcho(websocket.Upgrader{}, nil)
		return func(w http.ResponseWriter, r *http.Request) {
			u, p, ok := r.BasicAuth()
			if !ok || u != user || p != pass {
				w.Header().Set("WWW-Authenticate", `Basic realm="up"`)
				http.Error(w, "who are you", http.StatusUnauthorized)
				return
			}
			echo(w, r)
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
			up := hsStart(t, protected("proxy", "s3cret"))
			e := hsProxy(t, Config{Upstreams: []string{up.ws()}, UpstreamCredentials: tc.creds, PassiveHealth: hsPassive})
			c, resp, err := hsDial(t, e.ws("/"), tc.clientHdr)
			if tc.status == 101 {
				if err != nil {
					t.Fatalf("dial: %v (resp %v)", err, resp != nil && resp.StatusCode != 0)
				}
				hsEchoOnce(t, c, "authenticated")
				hsCloseGorilla(t, c)
			} else {
				if err == nil {
					c.Close()
					t.Fatal("upgraded without valid credentials")
				}
				if resp == nil || resp.StatusCode != tc.status {
					t.Fatalf("got %v, want %d", err, tc.status)
				}
				if got := resp.Header.Get("WWW-Authenticate"); got != `Basic realm="up"` {
					t.Errorf("WWW-Authenticate %q not relayed", got)
				}
			}
			if n := up.hits.Load(); n != tc.hits {
				t.Errorf("upstream saw %d requests, want %d", n, tc.hits)
			}
			if !hsHealthy(e.p.static[0]) {
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
	dead := hsDeadAddr(t)
	hole, _ := hsBlackhole(t)
	refusing := hsStart(t, hsRefuse(http.StatusForbidden, nil, "no"))
	alive := hsStart(t, hsEcho(websocket.Upgrader{}, nil))
	e := hsProxy(t, Config{
		Metrics:     m,
		DialTimeout: 200 * time.Millisecond,
		Source: hsSource(func(r *http.Request) ([]string, error) {
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

	r := hsHandshake(t, e, "GET", "/dead", nil)
	if r.resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("status %d, want 502", r.resp.StatusCode)
	}
	if got := hsGather(t, reg)[`t_handshake_failures_total{reason="upstream_unreachable"}`]; got != 1 {
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
		if r := hsHandshake(t, e, "GET", tc.path, tc.hdr); r.resp.StatusCode != tc.status {
			t.Fatalf("%s: status %d, want %d", tc.path, r.resp.StatusCode, tc.status)
		}
	}
	c, _ := hsMustDial(t, e.ws("/ok"), nil)
	hsEchoOnce(t, c, "counted")
	hsCloseGorilla(t, c)
	if !hsWaitIdle(e.p, 3*time.Second) {
		t.Fatal("session did not end")
	}

	got := hsGather(t, reg)
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
