package testkit

import (
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// FreeAddr returns a loopback address (127.0.0.1:port) that was free a moment
// ago: for servers that must be told their address before they listen (Caddy).
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// FreePort is FreeAddr's port.
func FreePort(t testing.TB) int {
	t.Helper()
	_, port, _ := net.SplitHostPort(FreeAddr(t))
	n, _ := strconv.Atoi(port)
	return n
}

// DeadURL returns the ws:// URL of a listener that was closed: dials are refused.
func DeadURL(t testing.TB) string {
	t.Helper()
	return "ws://" + FreeAddr(t)
}

// Blackhole accepts TCP connections and never answers: a server that hangs in
// the handshake. It returns its ws:// URL and the number of connections it
// accepted; the listener and the connections are closed when the test ends.
func Blackhole(t testing.TB) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var accepted atomic.Int64
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return "ws://" + ln.Addr().String(), &accepted
}

// Serve serves h on a fresh loopback listener with srv's settings (a server
// with a 5 s ReadHeaderTimeout if nil) and returns its address; the server is
// shut down (within 5 s) when the test ends.
func Serve(t testing.TB, h http.Handler, srv *http.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if srv == nil {
		srv = &http.Server{ReadHeaderTimeout: 5 * time.Second}
	}
	srv.Handler = h
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return ln.Addr().String()
}

// Recv waits for a value on ch and fails the test after d; what names it in the failure.
func Recv[T any](t testing.TB, ch <-chan T, d time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		t.Fatalf("timed out after %v waiting for %s", d, what)
		var zero T
		return zero
	}
}

// Eventually polls cond every 5 ms until it holds (true) or d has passed (false).
func Eventually(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// Proxy is what StopAtEnd needs of a proxy; *proxy.Proxy has it.
type Proxy interface {
	ActiveSessions() int
	Shutdown(ctx context.Context) error
}

// StopAtEnd registers a cleanup that waits up to wait for p's sessions to end
// (an error if they do not; no wait if wait is 0), then shuts p down within
// 5 s (an error if that fails): every test ends with its proxy idle and stopped.
func StopAtEnd(t testing.TB, p Proxy, wait time.Duration) {
	t.Cleanup(func() {
		if wait > 0 && !Eventually(wait, func() bool { return p.ActiveSessions() == 0 }) {
			t.Errorf("%d sessions still active at the end of the test", p.ActiveSessions())
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			t.Errorf("proxy shutdown: %v", err)
		}
	})
}

// Ready returns the value waiting on ch, if there is one; it does not wait.
func Ready[T any](ch <-chan T) (v T, ok bool) {
	select {
	case v = <-ch:
		return v, true
	default:
		return v, false
	}
}

// Get fetches url with a plain GET and returns the status and the body,
// failing the test if the request fails.
func Get(t testing.TB, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}
