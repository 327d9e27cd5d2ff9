package main

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wsgate/wsgate/internal/testkit"
)

// A client sending its request headers slower than -read-header-timeout
// (slowloris) is cut off by the http.Server after that time.
func TestReadHeaderTimeoutFlagCutsSlowClients(t *testing.T) {
	const timeout = 300 * time.Millisecond
	addr, _ := serveDemo(t, "-read-header-timeout", timeout.String())
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	closed := make(chan time.Time, 1)
	go func() {
		nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		io.Copy(io.Discard, nc)
		closed <- time.Now()
	}()
	start := time.Now()
	req := "GET /echo HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + testkit.NewKey() + "\r\nSec-WebSocket-Version: 13\r\n\r\n"
	sent := 0
	var end time.Time
	for end.IsZero() && sent < len(req) {
		if _, err := nc.Write([]byte{req[sent]}); err != nil {
			break
		}
		sent++
		select {
		case end = <-closed:
		case <-time.After(50 * time.Millisecond): // all of it would take 10 s
		}
	}
	if end.IsZero() {
		end = testkit.Recv(t, closed, 5*time.Second, "the server to close the connection")
	}
	if d := end.Sub(start); d < timeout-50*time.Millisecond || d > timeout+2*time.Second {
		t.Errorf("connection closed after %v, want about -read-header-timeout (%v)", d, timeout)
	}
	if sent == len(req) {
		t.Error("the whole request was sent before the server closed the connection")
	}
}

// Request headers over -max-header-bytes get net/http's 431; the same
// handshake upgrades with the default (64 KiB).
func TestMaxHeaderBytesFlag(t *testing.T) {
	for _, tc := range []struct {
		name   string
		args   []string
		status int
		body   string
	}{
		{"-max-header-bytes 4096", []string{"-max-header-bytes", "4096"}, http.StatusRequestHeaderFieldsTooLarge, "431 Request Header Fields Too Large"},
		{"default", nil, http.StatusSwitchingProtocols, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, _ := serveDemo(t, tc.args...)
			h := testkit.UpgradeHeader(addr)
			h.Set("X-Big", strings.Repeat("b", 16<<10)) // net/http allows MaxHeaderBytes + 4 KiB
			c, resp, body, err := testkit.RawHandshake(addr, http.MethodGet, "/echo", h)
			if err != nil {
				t.Fatal(err)
			}
			if c != nil {
				c.Close()
			}
			if resp.StatusCode != tc.status || body != tc.body {
				t.Errorf("got %d %q, want %d %q", resp.StatusCode, body, tc.status, tc.body)
			}
		})
	}
}
