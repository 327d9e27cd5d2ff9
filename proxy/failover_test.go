package proxy

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wsgate/wsgate/internal/testkit"
)

// unresolvable is an upstream whose host name cannot be resolved, without
// asking a DNS server: a label longer than 63 bytes is no domain name.
var unresolvable = "ws://" + strings.Repeat("x", 64) + ".test:80"

// tlsFailing starts a server that accepts TCP connections and closes them
// after delay, before a TLS handshake could complete: its wss:// URL and the
// server, which counts the connections.
func tlsFailing(t *testing.T, delay time.Duration) (string, *testkit.RawServer) {
	t.Helper()
	s := testkit.StartTCPServer(t, func(c *testkit.Conn) { time.Sleep(delay) })
	return "wss://" + s.Addr(), s
}

// dialCounts returns the proxy's dial attempts per upstream address, from
// the upstream_dial_duration_seconds histogram of metrics on reg.
func dialCounts(t *testing.T, reg *prometheus.Registry, addrs ...string) []float64 {
	t.Helper()
	out := make([]float64, len(addrs))
	for i, a := range addrs {
		for _, result := range []string{"ok", "error"} {
			out[i] += max(0, metric(t, reg, "t_upstream_dial_duration_seconds_count", map[string]string{"upstream": a, "result": result}))
		}
	}
	return out
}

// newMetrics returns metrics named t_* on a fresh registry.
func newMetrics(t *testing.T) (*Metrics, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg, "t")
	if err != nil {
		t.Fatal(err)
	}
	return m, reg
}

// A dial that fails before the upstream saw anything (refused, DNS, TLS) is
// tried on the next upstream, retries or not: with one such upstream beside a
// live one, every session is served, whatever the policy.
func TestFailoverServesEverySession(t *testing.T) {
	testkit.CheckGoroutines(t)
	for _, bad := range []string{"refused", "dns", "tls"} {
		for _, policy := range []string{"random", "round_robin", "first", "least_conn", "ip_hash", "uri_hash", "cookie"} {
			t.Run(bad+"/"+policy, func(t *testing.T) {
				cfg := Config{}
				var upTLS *tls.Config
				switch bad {
				case "refused":
					cfg.Upstreams = []string{testkit.DeadURL(t)}
				case "dns":
					cfg.Upstreams = []string{unresolvable}
				case "tls":
					failing, _ := tlsFailing(t, 0)
					cfg.Upstreams = []string{failing}
					upTLS, cfg.UpstreamTLS = &tls.Config{}, &tls.Config{InsecureSkipVerify: true}
				}
				cfg.Upstreams = append(cfg.Upstreams, testkit.StartNamed(t, "alive", upTLS).WS)
				var err error
				if cfg.Balancer, err = ParseBalancer(policy); err != nil {
					t.Fatal(err)
				}
				e := startProxy(t, cfg)
				for i := range 40 {
					if name, resp := testkit.NamedWS(t, nil, e.ws(fmt.Sprintf("/s/%d", i)), nil); name != "alive" {
						t.Fatalf("session %d: %q %v, want it served by alive", i, name, resp)
					}
				}
			})
		}
	}
}

// With every upstream failing before it saw anything, each is tried exactly
// once, at once, and the client gets 502 naming the cause.
func TestFailoverTriesEachUpstreamOnce(t *testing.T) {
	t.Run("refused", func(t *testing.T) {
		m, reg := newMetrics(t)
		dead := []string{testkit.DeadURL(t), testkit.DeadURL(t), testkit.DeadURL(t)}
		e := startProxy(t, Config{Upstreams: dead, Metrics: m})
		start := time.Now()
		r := handshake(t, e, "GET", "/", nil)
		if r.resp.StatusCode != http.StatusBadGateway || r.body != "upstream refused the connection\n" {
			t.Fatalf("got %d %q, want 502 upstream refused the connection", r.resp.StatusCode, r.body)
		}
		if elapsed := time.Since(start); elapsed > time.Second {
			t.Errorf("answered after %v, want at once (the dial timeout is 10s)", elapsed)
		}
		if got := dialCounts(t, reg, dead...); fmt.Sprint(got) != "[1 1 1]" {
			t.Errorf("dial attempts per upstream %v, want [1 1 1]", got)
		}
	})
	t.Run("tls", func(t *testing.T) {
		var urls []string
		var servers []*testkit.RawServer
		for range 3 {
			u, s := tlsFailing(t, 0)
			urls, servers = append(urls, u), append(servers, s)
		}
		e := startProxy(t, Config{Upstreams: urls, UpstreamTLS: &tls.Config{}})
		r := handshake(t, e, "GET", "/", nil)
		if r.resp.StatusCode != http.StatusBadGateway || r.body != "upstream TLS handshake failed\n" {
			t.Fatalf("got %d %q, want 502 upstream TLS handshake failed", r.resp.StatusCode, r.body)
		}
		for i, s := range servers {
			if n := s.Connections(); n != 1 {
				t.Errorf("upstream %d accepted %d connections, want 1", i, n)
			}
		}
	})
	t.Run("dns", func(t *testing.T) {
		e := startProxy(t, Config{Upstreams: []string{unresolvable}})
		r := handshake(t, e, "GET", "/", nil)
		if r.resp.StatusCode != http.StatusBadGateway || r.body != "upstream host not found\n" {
			t.Fatalf("got %d %q, want 502 upstream host not found", r.resp.StatusCode, r.body)
		}
	})
}

// A failure after the upstream got the handshake (an invalid 101, a refusal,
// a connection closed before the answer) is not sent elsewhere without retries.
func TestFailoverNotAfterTheUpstreamSawTheRequest(t *testing.T) {
	for _, tc := range []struct {
		name   string
		bad    func(t *testing.T) string
		status int
	}{
		{"invalid 101", func(t *testing.T) string {
			return testkit.StartTCPServer(t, func(c *testkit.Conn) {
				if _, err := http.ReadRequest(c.R); err == nil {
					io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: wrong\r\n\r\n")
					c.WaitEOF(2 * time.Second)
				}
			}).URL
		}, http.StatusBadGateway},
		{"503 refusal", func(t *testing.T) string {
			return startUpstream(t, refuse(http.StatusServiceUnavailable, nil, "busy")).ws()
		}, http.StatusServiceUnavailable},
		{"closed before answering", func(t *testing.T) string {
			return testkit.StartTCPServer(t, func(c *testkit.Conn) { http.ReadRequest(c.R) }).URL
		}, http.StatusBadGateway},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := tc.bad(t)
			alive := testkit.StartNamed(t, "alive", nil)
			e := startProxy(t, Config{Upstreams: []string{bad, alive.WS}, Balancer: First()})
			r := handshake(t, e, "GET", "/", nil)
			if r.resp.StatusCode != tc.status {
				t.Fatalf("got %d %q, want %d", r.resp.StatusCode, r.body, tc.status)
			}
			if n := len(alive.Seen()); n != 0 {
				t.Errorf("the second upstream got %d requests, want none", n)
			}
		})
	}
}

// An upstream that accepts the connection and then stalls spends the dial
// timeout, which the failover shares: the client gets 504 once it has passed,
// however many upstreams were tried, and no further upstream is dialed.
func TestFailoverWithinTheDialTimeout(t *testing.T) {
	t.Run("stalled first", func(t *testing.T) {
		hole, accepted := testkit.Blackhole(t)
		alive := testkit.StartNamed(t, "alive", nil)
		e := startProxy(t, Config{Upstreams: []string{hole, alive.WS}, Balancer: First(), DialTimeout: 300 * time.Millisecond})
		start := time.Now()
		r := handshake(t, e, "GET", "/", nil)
		elapsed := time.Since(start)
		if r.resp.StatusCode != http.StatusGatewayTimeout || r.body != "upstream timed out\n" {
			t.Fatalf("got %d %q, want 504 upstream timed out", r.resp.StatusCode, r.body)
		}
		if elapsed < 300*time.Millisecond || elapsed > 1500*time.Millisecond {
			t.Errorf("answered after %v, want the dial timeout (300ms)", elapsed)
		}
		if accepted.Load() != 1 || len(alive.Seen()) != 0 {
			t.Errorf("stalled upstream dialed %d times, live one got %d requests; want 1 and 0", accepted.Load(), len(alive.Seen()))
		}
	})
	t.Run("failed over to a stalled one", func(t *testing.T) {
		slow, slowServer := tlsFailing(t, 400*time.Millisecond) // fails the TLS handshake after 400ms
		hole, accepted := testkit.Blackhole(t)
		e := startProxy(t, Config{
			Upstreams:   []string{slow, strings.Replace(hole, "ws://", "wss://", 1)},
			Balancer:    First(),
			UpstreamTLS: &tls.Config{InsecureSkipVerify: true},
			DialTimeout: 600 * time.Millisecond,
		})
		start := time.Now()
		r := handshake(t, e, "GET", "/", nil)
		elapsed := time.Since(start)
		if r.resp.StatusCode != http.StatusGatewayTimeout {
			t.Fatalf("got %d %q, want 504", r.resp.StatusCode, r.body)
		}
		if slowServer.Connections() != 1 || accepted.Load() != 1 {
			t.Errorf("dials: %d to the failing upstream, %d to the stalled one; want 1 each", slowServer.Connections(), accepted.Load())
		}
		// 400ms on the first, the rest of the 600ms on the second: not 400+600.
		if elapsed < 600*time.Millisecond || elapsed > 900*time.Millisecond {
			t.Errorf("answered after %v, want one dial timeout (600ms) for both tries", elapsed)
		}
	})
}

// Retries and TryDuration still extend the tries beyond the failover: a
// retry, after TryInterval, gets a dial timeout of its own and may go to any
// upstream again.
func TestFailoverRetriesExtendIt(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		min  time.Duration
	}{
		{"retries", Config{Retries: 1, TryInterval: 150 * time.Millisecond}, 350 * time.Millisecond},
		{"try duration", Config{TryDuration: 2 * time.Second, TryInterval: 100 * time.Millisecond}, 300 * time.Millisecond},
	} {
		t.Run(tc.name+" after a timeout", func(t *testing.T) {
			hole, accepted := testkit.Blackhole(t)
			alive := testkit.StartNamed(t, "alive", nil)
			cfg := tc.cfg
			cfg.Upstreams, cfg.Balancer, cfg.DialTimeout = []string{hole, alive.WS}, First(), 200*time.Millisecond
			e := startProxy(t, cfg)
			start := time.Now()
			if name, resp := testkit.NamedWS(t, nil, e.ws("/"), nil); name != "alive" {
				t.Fatalf("%q %v, want the retry served by alive", name, resp)
			}
			if elapsed := time.Since(start); elapsed < tc.min {
				t.Errorf("served after %v, want the dial timeout and a TryInterval first (%v)", elapsed, tc.min)
			}
			if accepted.Load() != 1 {
				t.Errorf("stalled upstream dialed %d times, want 1", accepted.Load())
			}
		})
	}
	t.Run("retry after every upstream failed over", func(t *testing.T) {
		m, reg := newMetrics(t)
		dead := []string{testkit.DeadURL(t), testkit.DeadURL(t)}
		e := startProxy(t, Config{Upstreams: dead, Balancer: First(), Retries: 1, TryInterval: 200 * time.Millisecond, Metrics: m})
		start := time.Now()
		r := handshake(t, e, "GET", "/", nil)
		if r.resp.StatusCode != http.StatusBadGateway {
			t.Fatalf("got %d %q, want 502", r.resp.StatusCode, r.body)
		}
		if elapsed := time.Since(start); elapsed < 200*time.Millisecond || elapsed > 2*time.Second {
			t.Errorf("answered after %v, want one TryInterval (200ms) after the failover", elapsed)
		}
		// The failover tries both, the retry the first again.
		if got := dialCounts(t, reg, dead...); fmt.Sprint(got) != "[2 1]" {
			t.Errorf("dial attempts per upstream %v, want [2 1]", got)
		}
	})
}
