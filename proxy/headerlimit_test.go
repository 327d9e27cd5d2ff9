package proxy

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/gorilla/websocket"
	"go.uber.org/zap/zapcore"

	"github.com/wsgate/wsgate/internal/testkit"
)

// MaxHeaderBytes and MaxHeaders bound the client's handshake headers, which the
// proxy would forward: beyond either, 431 before any upstream is dialed.

// fieldsOf counts the header fields of a handshake to host carrying extra, as
// the limits do: every field, Host included, and its size as "Name: value\r\n".
func fieldsOf(host string, extra http.Header) (n, size int) {
	h := testkit.UpgradeHeader(host)
	for k, vs := range extra {
		h[k] = vs
	}
	for k, vs := range h {
		for _, v := range vs {
			n++
			size += len(k) + len(": ") + len(v) + len("\r\n")
		}
	}
	return n, size
}

// fillers returns n header fields X-Filler-00000: abcdefgh and on (21 bytes each on the wire).
func fillers(n int) http.Header {
	h := make(http.Header, n)
	for i := range n {
		h[fmt.Sprintf("X-Filler-%05d", i)] = []string{"abcdefgh"}
	}
	return h
}

// padTo returns extra with X-Pad added so that the handshake's fields to host
// take exactly size bytes.
func padTo(host string, size int) http.Header {
	_, base := fieldsOf(host, http.Header{"X-Pad": {""}})
	return http.Header{"X-Pad": {strings.Repeat("p", size-base)}}
}

func TestHeaderLimits(t *testing.T) {
	testkit.CheckGoroutines(t)
	type request struct {
		name   string
		header func(host string) http.Header
	}
	for _, tc := range []struct {
		limits    Config // MaxHeaderBytes and MaxHeaders; zero: the defaults (32 KiB, 100)
		maxBytes  int
		maxFields int
		fit       []request // upgraded
		tooLarge  []request // refused with 431
	}{
		{Config{}, 32 << 10, 100,
			[]request{
				{"exactly 100 fields", func(string) http.Header { return fillers(100 - 5) }},
				{"exactly 32 KiB", func(host string) http.Header { return padTo(host, 32<<10) }},
			},
			[]request{
				{"10,000 fields (210 KB)", func(string) http.Header { return fillers(10000) }},
				{"one field of 40 KiB", func(string) http.Header { return http.Header{"X-Big": {strings.Repeat("b", 40<<10)}} }},
				{"101 fields", func(string) http.Header { return fillers(101 - 5) }},
				{"32 KiB and 1 byte", func(host string) http.Header { return padTo(host, 32<<10+1) }},
			}},
		{Config{MaxHeaderBytes: 1000, MaxHeaders: 10}, 1000, 10,
			[]request{
				{"exactly 10 fields", func(string) http.Header { return fillers(10 - 5) }},
				{"exactly 1000 bytes", func(host string) http.Header { return padTo(host, 1000) }},
			},
			[]request{
				{"11 fields", func(string) http.Header { return fillers(11 - 5) }},
				{"1001 bytes", func(host string) http.Header { return padTo(host, 1001) }},
			}},
	} {
		limits := fmt.Sprintf("limits %d bytes %d fields", tc.maxBytes, tc.maxFields)
		for _, req := range tc.fit {
			t.Run(limits+"/"+req.name, func(t *testing.T) {
				up := startUpstream(t, testkit.GorillaEchoHandler(websocket.Upgrader{}, nil))
				e := startProxy(t, Config{Upstreams: []string{up.ws()}, MaxHeaderBytes: tc.limits.MaxHeaderBytes, MaxHeaders: tc.limits.MaxHeaders})
				r := handshake(t, e, "GET", "/", req.header(e.host()))
				defer r.close(t)
				if r.resp.StatusCode != http.StatusSwitchingProtocols {
					t.Fatalf("status %d %q, want 101", r.resp.StatusCode, r.body)
				}
				if got := len(up.last(t).Header.Values("X-Pad")) + len(up.last(t).Header.Values("X-Filler-00000")); got != 1 {
					t.Errorf("upstream got %d of the client's extra fields, want them forwarded", got)
				}
			})
		}
		for _, req := range tc.tooLarge {
			t.Run(limits+"/"+req.name, func(t *testing.T) {
				up := startUpstream(t, testkit.GorillaEchoHandler(websocket.Upgrader{}, nil))
				e, reg := startCounted(t, up.ws(), Config{MaxHeaderBytes: tc.limits.MaxHeaderBytes, MaxHeaders: tc.limits.MaxHeaders})
				extra := req.header(e.host())
				r := handshake(t, e, "GET", "/", extra)
				n, size := fieldsOf(e.host(), extra)
				why := fmt.Sprintf("%d header fields, over the limit of %d", n, tc.maxFields)
				if n <= tc.maxFields {
					why = fmt.Sprintf("%d bytes of header fields, over the limit of %d", size, tc.maxBytes)
				}
				wantRefused(t, e, reg, r, http.StatusRequestHeaderFieldsTooLarge, "request header fields too large: "+why, zapcore.InfoLevel, "headers_too_large")
				if n := up.hits.Load(); n != 0 {
					t.Errorf("upstream saw %d requests, want none: the limit is checked before the dial", n)
				}
			})
		}
	}
}
