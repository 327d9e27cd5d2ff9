package proxy

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zapcore"

	"github.com/wsgate/wsgate/internal/testkit"
)

// A refused handshake says what happened: the body the client gets, the log
// line and the handshake_failures_total reason name the cause, and the body
// gives away no address.

// startCounted is startSession for upstream with metrics on a registry of its own.
func startCounted(t *testing.T, upstream string, cfg Config) (*proxyEnv, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg, "t")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Metrics = m
	return startSession(t, upstream, cfg), reg
}

// wantRefused checks a handshake refused by the proxy itself: status and body,
// one "handshake refused" log line at level with the status and reason, and
// handshake_failures_total{reason} counted once.
func wantRefused(t *testing.T, e *proxyEnv, reg *prometheus.Registry, r *rawHandshake, status int, body string, level zapcore.Level, reason string) {
	t.Helper()
	if r.resp.StatusCode != status || r.body != body+"\n" {
		t.Errorf("got %d %q, want %d %q", r.resp.StatusCode, r.body, status, body+"\n")
	}
	lines := e.logs.FilterMessage("handshake refused").All()
	if len(lines) != 1 {
		t.Fatalf("%d \"handshake refused\" log lines, want 1", len(lines))
	}
	f := lines[0].ContextMap()
	if lines[0].Level != level || f["status"] != int64(status) || f["reason"] != reason {
		t.Errorf("log line at %v with status %v reason %v, want %v %d %s", lines[0].Level, f["status"], f["reason"], level, status, reason)
	}
	if got := metric(t, reg, "t_handshake_failures_total", map[string]string{"reason": reason}); got != 1 {
		t.Errorf("handshake_failures_total{reason=%q} = %v, want 1", reason, got)
	}
}

// answering is an upstream that reads the handshake request and writes what
// answer returns for its Sec-WebSocket-Key (nothing if ""), then waits for
// the proxy to hang up.
func answering(t *testing.T, answer func(key string) string) *testkit.RawServer {
	t.Helper()
	return testkit.StartTCPServer(t, func(c *testkit.Conn) {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		req, err := http.ReadRequest(c.R)
		if err != nil {
			return
		}
		if resp := answer(req.Header.Get("Sec-WebSocket-Key")); resp != "" {
			io.WriteString(c, resp)
			c.WaitEOF(5 * time.Second)
		}
	})
}

// upgradeLines is the start of a 101 answer without Sec-WebSocket-Accept.
const upgradeLines = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"

func TestRefusalNamesTheCause(t *testing.T) {
	testkit.CheckGoroutines(t)
	for _, tc := range []struct {
		name     string
		upstream func(t *testing.T) string
		timeout  time.Duration // DialTimeout, if not the default
		status   int
		body     string
		reason   string
	}{
		{"wrong Sec-WebSocket-Accept", func(t *testing.T) string {
			return answering(t, func(string) string {
				return upgradeLines + "Sec-WebSocket-Accept: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
			}).URL
		}, 0, 502, "upstream sent an invalid handshake: Sec-WebSocket-Accept does not match the key", "upstream_bad_handshake"},
		{"101 without Upgrade", func(t *testing.T) string {
			return answering(t, func(key string) string {
				return "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + testkit.AcceptKey(key) + "\r\n\r\n"
			}).URL
		}, 0, 502, `upstream sent an invalid handshake: "Upgrade" header must be "websocket"`, "upstream_bad_handshake"},
		{"200 instead of 101", func(t *testing.T) string {
			return answering(t, func(string) string { return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi" }).URL
		}, 0, 502, `upstream answered "200 OK" instead of 101 Switching Protocols`, "upstream_bad_handshake"},
		{"connection refused", func(t *testing.T) string { return testkit.DeadURL(t) },
			0, 502, "upstream refused the connection", "upstream_unreachable"},
		{"host not found", func(*testing.T) string { return "ws://nowhere.invalid:9000" },
			0, 502, "upstream host not found", "upstream_unreachable"},
		{"TLS handshake failed", func(t *testing.T) string {
			return startTLSUpstream(t, http.NotFoundHandler()).ws() // self-signed: not trusted
		}, 0, 502, "upstream TLS handshake failed", "upstream_tls"},
		{"silent upstream", func(t *testing.T) string { u, _ := testkit.Blackhole(t); return u },
			200 * time.Millisecond, 504, "upstream timed out", "upstream_timeout"},
		{"closed after reading the request", func(t *testing.T) string {
			return answering(t, func(string) string { return "" }).URL
		}, 0, 502, "upstream closed the connection before answering", "upstream_closed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			upstream := tc.upstream(t)
			e, reg := startCounted(t, upstream, Config{DialTimeout: tc.timeout})
			r := handshake(t, e, "GET", "/room?token=x", nil)
			wantRefused(t, e, reg, r, tc.status, tc.body, zapcore.WarnLevel, tc.reason)
			u, _ := url.Parse(upstream)
			for _, leak := range []string{u.Host, u.Hostname(), u.Port(), "/room"} {
				if strings.Contains(r.body, leak) {
					t.Errorf("body %q gives away %q", r.body, leak)
				}
			}
		})
	}
}

// An upstream's own refusal (status 300 or more) is relayed with its status
// and body, and counted as upstream_refused; it is not the proxy's refusal.
func TestRefusalOfTheUpstreamIsRelayed(t *testing.T) {
	for _, status := range []int{300, 403, 503} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			body := fmt.Sprintf("the upstream says %d", status)
			up := startUpstream(t, refuse(status, nil, body))
			e, reg := startCounted(t, up.ws(), Config{})
			r := handshake(t, e, "GET", "/", nil)
			if r.resp.StatusCode != status || r.body != body {
				t.Errorf("got %d %q, want %d %q", r.resp.StatusCode, r.body, status, body)
			}
			if got := metric(t, reg, "t_handshake_failures_total", map[string]string{"reason": "upstream_refused"}); got != 1 {
				t.Errorf("handshake_failures_total{reason=upstream_refused} = %v, want 1", got)
			}
			if n := e.logs.FilterMessage("handshake refused").Len(); n != 0 {
				t.Errorf("%d \"handshake refused\" log lines for a relayed refusal", n)
			}
		})
	}
}
