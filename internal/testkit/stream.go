package testkit

import (
	"context"
	"testing"
	"time"

	"github.com/wsgate/wsgate/internal/streamtest"
	"github.com/wsgate/wsgate/wsmw"
)

// DialStream opens a WebSocket to path on s as an extended CONNECT over s's
// protocol (HTTP/2 or HTTP/3), with cfg's other settings; it is closed at
// cleanup, and the test fails if the handshake does.
func DialStream(t testing.TB, s *streamtest.Server, path string, cfg *wsmw.DialConfig) *wsmw.Conn {
	t.Helper()
	var dc wsmw.DialConfig
	if cfg != nil {
		dc = *cfg
	}
	dc.HTTP2, dc.HTTP3 = s.Transports()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, resp, err := wsmw.Dial(ctx, s.URL+path, &dc)
	if err != nil {
		t.Fatalf("dial %s over %s: %v (response %v)", path, s.Proto, err, resp)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}
