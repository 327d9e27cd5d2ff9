package caddymodule

import (
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/internal/testkit"
	"github.com/wsgate/wsgate/internal/testkit/caddytest"
)

// TestHeaderLimitsThroughCaddy: max_header_bytes and max_headers from the
// Caddyfile (and the defaults, 32 KiB and 100 fields, on a route without them)
// refuse oversized handshakes with 431 naming the limit, without a request to
// the upstream, and count them as headers_too_large; a handshake at the limit
// is proxied.
func TestHeaderLimitsThroughCaddy(t *testing.T) {
	var hits atomic.Int64
	echo := testkit.GorillaEchoHandler(websocket.Upgrader{}, nil)
	up := testkit.Serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		echo.ServeHTTP(w, r)
	}), nil)
	port := testkit.FreePort(t)
	// Caddy's own server refuses more than 16 KiB of headers by default:
	// raised, so that the ws limits are the ones that apply.
	global := strings.Replace(caddytest.Global, "admin off", "admin off\n\tservers {\n\t\tmax_header_size 1MiB\n\t}", 1)
	caddytest.Load(t, global+fmt.Sprintf(`:%d {
	ws /small/* %[2]s {
		max_header_bytes 2KiB
		max_headers 20
	}
	ws /default/* %[2]s
	handle /metrics {
		metrics
	}
}
`, port, up))
	addr := fmt.Sprintf("127.0.0.1:%d", port)

	// send makes a handshake for path with n fields in all (the 5 of a
	// handshake, Host included, and fillers), plus extra.
	send := func(path string, n int, extra http.Header) (*http.Response, string) {
		t.Helper()
		h := testkit.UpgradeHeader(addr)
		for i := range n - len(h) {
			h.Set(fmt.Sprintf("X-Filler-%05d", i), "abcdefgh")
		}
		for k, vs := range extra {
			h[k] = vs
		}
		c, resp, body, err := testkit.RawHandshake(addr, http.MethodGet, path, h)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if c != nil {
			c.SendClose(1000, "")
			c.WaitEOF(3 * time.Second)
			c.Close()
		}
		return resp, body
	}
	const tooLarge = "request header fields too large: "
	for _, tc := range []struct {
		name  string
		path  string
		n     int
		extra http.Header
		why   string // how the 431's body ends; "" for a 101
	}{
		{"20 fields with max_headers 20", "/small/x", 20, nil, ""},
		{"21 fields with max_headers 20", "/small/x", 21, nil, "21 header fields, over the limit of 20\n"},
		{"3 KiB of fields with max_header_bytes 2KiB", "/small/x", 5, http.Header{"X-Big": {strings.Repeat("b", 3<<10)}},
			"bytes of header fields, over the limit of 2048\n"},
		{"100 fields by default", "/default/x", 100, nil, ""},
		{"10,000 fields (210 KB) by default", "/default/x", 10005, nil, "10005 header fields, over the limit of 100\n"},
		{"one field of 40 KiB by default", "/default/x", 5, http.Header{"X-Big": {strings.Repeat("b", 40<<10)}},
			"bytes of header fields, over the limit of 32768\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := hits.Load()
			resp, body := send(tc.path, tc.n, tc.extra)
			if tc.why == "" {
				if resp.StatusCode != http.StatusSwitchingProtocols || hits.Load() != before+1 {
					t.Errorf("status %d %q, upstream requests %d; want 101 and 1", resp.StatusCode, body, hits.Load()-before)
				}
				return
			}
			if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge || !strings.HasPrefix(body, tooLarge) || !strings.HasSuffix(body, tc.why) {
				t.Errorf("got %d %q, want 431 %q...%q", resp.StatusCode, body, tooLarge, tc.why)
			}
			if n := hits.Load() - before; n != 0 {
				t.Errorf("upstream saw %d requests, want none", n)
			}
		})
	}
	want := `caddy_ws_handshake_failures_total{reason="headers_too_large"} 4`
	if metrics := httpGet(t, fmt.Sprintf("http://%s/metrics", addr)); !strings.Contains(metrics, want) {
		t.Errorf("metrics lack %s in\n%s", want, grepLines(metrics, "caddy_ws_handshake"))
	}
}
