package caddymodule

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wsgate/wsgate/internal/testkit"
	"github.com/wsgate/wsgate/internal/testkit/caddytest"
)

// dialAttempts returns how many times ws dialed upstream (its URL), from the
// caddy_ws_upstream_dial_duration_seconds histogram.
func dialAttempts(t *testing.T, upstream string) uint64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	if err := reg.Register(metrics); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, mf := range mfs {
		if mf.GetName() != "caddy_ws_upstream_dial_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "upstream" && l.GetValue() == upstream {
					n += m.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	return n
}

// refusedWS upgrades to path on addr and returns the refusal and its body,
// failing the test if the upgrade succeeds.
func refusedWS(t *testing.T, addr, path string) (*http.Response, string) {
	t.Helper()
	c, resp, body, err := testkit.RawHandshake(addr, http.MethodGet, path, testkit.UpgradeHeader(addr))
	if err != nil {
		t.Fatal(err)
	}
	if c != nil {
		c.Close()
		t.Fatalf("%s upgraded, want a refusal", path)
	}
	return resp, body
}

// Through Caddy, without lb_retries, a dial that fails before the upstream
// saw anything (refused, TLS) goes to the next upstream: every session is
// served, each upstream is dialed at most once per session, promptly; a
// failure after the upstream saw the handshake, or a stalled upstream, is
// not sent elsewhere; lb_retries and lb_try_duration still retry after
// lb_try_interval.
func TestFailoverThroughCaddy(t *testing.T) {
	alive := testkit.StartNamed(t, "alive", nil)
	dead := testkit.FreeAddr(t)
	dead2, dead3 := testkit.FreeAddr(t), testkit.FreeAddr(t)
	var tlsFailing []*testkit.RawServer
	for range 2 {
		tlsFailing = append(tlsFailing, testkit.StartTCPServer(t, func(*testkit.Conn) {}))
	}
	refusing := testkit.Serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "busy", http.StatusServiceUnavailable)
	}), nil)
	hole, accepted := testkit.Blackhole(t)
	hole = strings.TrimPrefix(hole, "ws://")
	port := testkit.FreePort(t)
	caddytest.Load(t, caddytest.Global+fmt.Sprintf(`:%d {
	ws /random/* %[2]s %[3]s
	ws /round_robin/* %[2]s %[3]s {
		lb_policy round_robin
	}
	ws /ip_hash/* %[2]s %[3]s {
		lb_policy ip_hash
	}
	ws /cookie/* %[2]s %[3]s {
		lb_policy cookie
	}
	ws /first/* %[2]s %[3]s {
		lb_policy first
	}
	ws /all_refused/* %[2]s %[4]s %[5]s
	ws /all_tls/* %[6]s %[7]s {
		tls
	}
	ws /refusal/* %[8]s %[3]s {
		lb_policy first
	}
	ws /stalled/* %[9]s %[3]s {
		lb_policy first
		dial_timeout 300ms
	}
	ws /retries/* %[9]s %[3]s {
		lb_policy first
		dial_timeout 200ms
		lb_retries 1
		lb_try_interval 150ms
	}
	ws /try_duration/* %[9]s %[3]s {
		lb_policy first
		dial_timeout 200ms
		lb_try_duration 2s
		lb_try_interval 100ms
	}
	respond "fallback"
}
`, port, dead, alive.WS, dead2, dead3, tlsFailing[0].Addr(), tlsFailing[1].Addr(), refusing, hole))
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	base := "ws://" + addr

	for _, policy := range []string{"random", "round_robin", "ip_hash", "cookie", "first"} {
		t.Run("one refusing upstream, "+policy, func(t *testing.T) {
			before := dialAttempts(t, "ws://"+dead)
			for i := range 40 {
				if name, resp := testkit.NamedWS(t, nil, fmt.Sprintf("%s/%s/%d", base, policy, i), nil); name != "alive" {
					t.Fatalf("session %d: %q %v, want it served by alive", i, name, resp)
				}
			}
			if n := dialAttempts(t, "ws://"+dead) - before; n > 40 {
				t.Errorf("the refusing upstream was dialed %d times for 40 sessions", n)
			}
		})
	}
	t.Run("all refusing", func(t *testing.T) {
		var before []uint64
		for _, a := range []string{dead, dead2, dead3} {
			before = append(before, dialAttempts(t, "ws://"+a))
		}
		start := time.Now()
		resp, body := refusedWS(t, addr, "/all_refused/x")
		if resp.StatusCode != http.StatusBadGateway || body != "upstream refused the connection\n" {
			t.Fatalf("got %d %q, want 502 upstream refused the connection", resp.StatusCode, body)
		}
		if elapsed := time.Since(start); elapsed > time.Second {
			t.Errorf("answered after %v, want at once (dial_timeout is 10s)", elapsed)
		}
		for i, a := range []string{dead, dead2, dead3} {
			if n := dialAttempts(t, "ws://"+a) - before[i]; n != 1 {
				t.Errorf("%s dialed %d times, want 1", a, n)
			}
		}
	})
	t.Run("all failing TLS", func(t *testing.T) {
		resp, body := refusedWS(t, addr, "/all_tls/x")
		if resp.StatusCode != http.StatusBadGateway || body != "upstream TLS handshake failed\n" {
			t.Fatalf("got %d %q, want 502 upstream TLS handshake failed", resp.StatusCode, body)
		}
		for i, s := range tlsFailing {
			if s.Connections() != 1 {
				t.Errorf("upstream %d accepted %d connections, want 1", i, s.Connections())
			}
		}
	})
	t.Run("refusal not failed over", func(t *testing.T) {
		seen := len(alive.Seen())
		resp, body := refusedWS(t, addr, "/refusal/x")
		if resp.StatusCode != http.StatusServiceUnavailable || body != "busy\n" {
			t.Fatalf("got %d %q, want the upstream's 503", resp.StatusCode, body)
		}
		if len(alive.Seen()) != seen {
			t.Error("the refused session was sent to the next upstream")
		}
	})
	t.Run("stalled upstream spends dial_timeout", func(t *testing.T) {
		seen := len(alive.Seen())
		start := time.Now()
		resp, body := refusedWS(t, addr, "/stalled/x")
		elapsed := time.Since(start)
		if resp.StatusCode != http.StatusGatewayTimeout || body != "upstream timed out\n" {
			t.Fatalf("got %d %q, want 504 upstream timed out", resp.StatusCode, body)
		}
		if elapsed < 300*time.Millisecond || elapsed > 1500*time.Millisecond {
			t.Errorf("answered after %v, want dial_timeout (300ms)", elapsed)
		}
		if len(alive.Seen()) != seen {
			t.Error("the session was sent to the next upstream after the dial timeout")
		}
	})
	for _, route := range []string{"retries", "try_duration"} {
		t.Run(route+" after a stalled upstream", func(t *testing.T) {
			holes := accepted.Load()
			start := time.Now()
			if name, resp := testkit.NamedWS(t, nil, base+"/"+route+"/x", nil); name != "alive" {
				t.Fatalf("%q %v, want the retry served by alive", name, resp)
			}
			if elapsed := time.Since(start); elapsed < 300*time.Millisecond {
				t.Errorf("served after %v, want dial_timeout and lb_try_interval first", elapsed)
			}
			if accepted.Load()-holes != 1 {
				t.Errorf("stalled upstream dialed %d times, want 1", accepted.Load()-holes)
			}
		})
	}
}
