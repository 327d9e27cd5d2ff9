package wsmw_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wsgate/wsgate/wsmw"
)

// serveGroup serves h through wsmw.Middleware with its connections in g.
func serveGroup(t *testing.T, g *wsmw.Group, h wsmw.Handler) string {
	t.Helper()
	srv := httptest.NewServer(wsmw.Middleware(g.Handler(h), &wsmw.ServerConfig{CloseTimeout: time.Second})(http.NotFoundHandler()))
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http")
}

// dialWsmw connects a wsmw client to url.
func dialWsmw(t *testing.T, url string) *wsmw.Conn {
	t.Helper()
	c, _, err := wsmw.Dial(context.Background(), url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

// readClose reads c until the peer's close and returns its code.
func readClose(t *testing.T, c *wsmw.Conn) wsmw.StatusCode {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, _, err := c.Read(context.Background(), nil); err != nil {
			return wsmw.CloseStatus(err)
		}
	}
}

// Shutdown closes every connection with its code, and returns once their
// handlers have returned; later connections are closed at once.
func TestGroupShutdownClosesWithCodeAndWaits(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) }) // after the servers' and clients' cleanups
	var g wsmw.Group
	returned := make(chan struct{}, 3)
	url := serveGroup(t, &g, func(c *wsmw.Conn, _ *http.Request) {
		defer func() { returned <- struct{}{} }()
		for {
			if _, _, err := c.Read(context.Background(), nil); err != nil {
				time.Sleep(50 * time.Millisecond) // a handler that takes its time to end
				return
			}
		}
	})
	clients := []*wsmw.Conn{dialWsmw(t, url), dialWsmw(t, url), dialWsmw(t, url)}
	for deadline := time.Now().Add(2 * time.Second); g.Len() < 3 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if g.Len() != 3 {
		t.Fatalf("Len = %d, want 3", g.Len())
	}
	codes := make(chan wsmw.StatusCode, len(clients))
	for _, c := range clients {
		go func() { codes <- readClose(t, c) }()
	}
	if err := g.Shutdown(context.Background(), wsmw.StatusServiceRestart, "restart"); err != nil {
		t.Fatal(err)
	}
	if len(returned) != 3 || g.Len() != 0 {
		t.Fatalf("Shutdown returned with %d of 3 handlers returned, Len %d", len(returned), g.Len())
	}
	for range clients {
		if code := <-codes; code != wsmw.StatusServiceRestart {
			t.Errorf("client got %v, want 1012", code)
		}
	}
	late := dialWsmw(t, url)
	if code := readClose(t, late); code != wsmw.StatusServiceRestart {
		t.Errorf("a connection after Shutdown got %v, want 1012", code)
	}
}

// A handler that does not return holds Shutdown until its context ends; the
// connections are then closed without a handshake.
func TestGroupShutdownBoundedByContext(t *testing.T) {
	var g wsmw.Group
	release := make(chan struct{})
	url := serveGroup(t, &g, func(c *wsmw.Conn, _ *http.Request) { <-release })
	defer close(release)
	c := dialWsmw(t, url)
	for deadline := time.Now().Add(2 * time.Second); g.Len() < 1 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := g.Shutdown(ctx, wsmw.StatusGoingAway, ""); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want the context's deadline", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Shutdown took %v", d)
	}
	if code := readClose(t, c); code != wsmw.StatusGoingAway && code != -1 {
		t.Errorf("client read %v, want the 1001 close or a dropped connection", code)
	}
}
