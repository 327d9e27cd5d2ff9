package wsmw_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/wsgate/wsgate/wsmw"
)

// Headers set on the ResponseWriter before Upgrade (by middleware, or a
// proxy's sticky-session cookie) go out on the 101, after which
// ServerConfig.ResponseHeader's; the handshake's own headers cannot be
// overridden by either.
func TestUpgradeSendsResponseWriterHeaders(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: "lb", Value: "abc", Path: "/", HttpOnly: true})
		w.Header().Set("X-Middleware", "yes")
		w.Header().Set("Sec-WebSocket-Accept", "forged")
		w.Header().Set("Upgrade", "h2c")
		w.Header().Set("Content-Length", "12")
		c, err := wsmw.Upgrade(w, r, &wsmw.ServerConfig{ResponseHeader: http.Header{"X-Config": {"1"}, "Sec-Websocket-Protocol": {"forged"}}})
		if err != nil {
			return
		}
		c.Close(wsmw.StatusNormalClosure, "")
	}))
	defer srv.Close()
	c, resp, err := wsmw.Dial(context.Background(), "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatalf("Dial: %v (the forged handshake headers must not reach the client)", err)
	}
	defer c.CloseNow()
	for k, want := range map[string]string{"Set-Cookie": "lb=abc; Path=/; HttpOnly", "X-Middleware": "yes", "X-Config": "1", "Upgrade": "websocket"} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("101 %s = %q, want %q", k, got, want)
		}
	}
	for _, k := range []string{"Content-Length", "Sec-Websocket-Protocol"} {
		if v, ok := resp.Header[k]; ok {
			t.Errorf("101 has %s %q", k, v)
		}
	}
}
