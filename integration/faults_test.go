package integration

// Fault tests: the proxy between misbehaving peers. Everything runs on
// loopback, every test is bounded in time and stops by itself, and each one
// checks with checkLeaks that its goroutines and descriptors are gone at the end.
// Clients are gorilla/websocket or the raw conformance client; upstreams are
// raw servers (testkit.RawServer), so that they can misbehave in any way.

import (
	"bufio"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/internal/testkit"
	"github.com/wsgate/wsgate/proxy"
	"github.com/wsgate/wsgate/wsmw"
)

// proxyFront serves a proxy for cfg on a chi router behind srv (a fresh
// http.Server if nil). When the test ends it waits for the sessions to end,
// then shuts the proxy down, then the server.
func proxyFront(t testing.TB, cfg proxy.Config, srv *http.Server) (*proxy.Proxy, string) {
	t.Helper()
	p, err := proxy.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := chi.NewRouter()
	r.Use(p.Middleware)
	r.Get("/*", func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "not a websocket", http.StatusTeapot) })
	addr := testkit.Serve(t, r, srv)
	testkit.StopAtEnd(t, p, 10*time.Second)
	return p, addr
}

// echoFront is proxyFront for cfg in front of a gorilla echo upstream.
func echoFront(t testing.TB, cfg proxy.Config) (*proxy.Proxy, string) {
	t.Helper()
	cfg.Upstreams = []string{testkit.StartGorillaEcho(t).URL}
	return proxyFront(t, cfg, nil)
}

// idle polls until the proxy has no active session. Sessions run in
// goroutines of their own after ServeHTTP returns, so this is how a test knows
// they are over.
func idle(p *proxy.Proxy, d time.Duration) bool {
	return testkit.Eventually(d, func() bool { return p.ActiveSessions() == 0 })
}

// dial dials addr with gorilla/websocket. The handshake timeout is
// generous: under -race on a busy machine, the load tests' handshakes queue
// behind hundreds of streaming sessions.
func dial(addr, path string) (*websocket.Conn, *http.Response, error) {
	d := websocket.Dialer{HandshakeTimeout: 20 * time.Second}
	return d.Dial("ws://"+addr+path, nil)
}

// readClose reads until the connection ends and returns the close code
// (noClose if it ended without a close frame) and how long it took.
func readClose(c *websocket.Conn, limit time.Duration) (int, time.Duration, error) {
	start := time.Now()
	c.SetReadDeadline(start.Add(limit))
	for {
		_, _, err := c.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return ce.Code, time.Since(start), nil
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return 0, time.Since(start), err
		}
		return noClose, time.Since(start), err
	}
}

// closeClean sends a close (1000) from a gorilla client and expects 1000 back.
func closeClean(c *websocket.Conn) error {
	if err := c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(5*time.Second)); err != nil {
		return err
	}
	code, _, err := readClose(c, 10*time.Second)
	if code != 1000 {
		return fmt.Errorf("close reply %d (%v)", code, err)
	}
	return nil
}

// rawClose reads frames from a raw client until the server's close and
// returns its code (gorilla/websocket v1.5 refuses 1014 as a close code, so the
// 1014 checks use the raw client). It answers the close and waits for the
// server to close the TCP connection.
func rawClose(c *testkit.Conn, limit time.Duration) (code int, data []testkit.Frame, d time.Duration, err error) {
	start := time.Now()
	deadline := start.Add(limit)
	for {
		f, err := c.ReadFrameTimeout(time.Until(deadline))
		if err != nil {
			return noClose, data, time.Since(start), err
		}
		if f.Op == wsmw.OpClose {
			code = closeCodeOf(f.Payload)
			d = time.Since(start)
			body := f.Payload[:min(2, len(f.Payload))]
			c.Send(testkit.Frame{Fin: true, Op: wsmw.OpClose, Payload: body})
			return code, data, d, waitEOF(c, 3*time.Second)
		}
		data = append(data, f)
	}
}

// dialRefused dials addr with gorilla/websocket and fails the test unless the
// handshake is refused with a response, which it returns.
func dialRefused(t *testing.T, addr, path string) *http.Response {
	t.Helper()
	c, resp, err := dial(addr, path)
	if err == nil {
		c.Close()
		t.Fatal("handshake succeeded")
	}
	if resp == nil {
		t.Fatalf("no response: %v", err)
	}
	return resp
}

// holdHandlers returns a channel that raw upstream handlers block on; release
// must be called after the upstream is started, so that the channel is closed
// (by a Cleanup) before the upstream waits for its handlers.
func holdHandlers() (hold chan struct{}, release func(testing.TB)) {
	hold = make(chan struct{})
	return hold, func(t testing.TB) { t.Cleanup(func() { close(hold) }) }
}

// killedUpstream runs a proxy (CloseTimeout 1s) in front of a raw upstream
// that sends the client sent, waits 50ms and closes the TCP connection without
// a close frame; it returns the proxy and the raw client.
func killedUpstream(t *testing.T, sent []byte) (*proxy.Proxy, *testkit.Conn) {
	up := testkit.StartRawServer(t, func(uc *testkit.Conn) {
		uc.Write(sent)
		time.Sleep(50 * time.Millisecond)
		// The handler returns: the connection is closed without a close frame.
	})
	p, addr := proxyFront(t, proxy.Config{Upstreams: []string{up.Addr()}, CloseTimeout: time.Second}, nil)
	return p, dialRaw(t, addr, "/")
}

// wantIdle checks that p's sessions end within 5 s.
func wantIdle(t *testing.T, p *proxy.Proxy) {
	t.Helper()
	if !idle(p, 5*time.Second) {
		t.Error("session did not end")
	}
}

// TestFaultUpstreamKilledMidMessage: the upstream's TCP connection ends in the
// middle of a message; the client gets 1014 (bad gateway).
func TestFaultUpstreamKilledMidMessage(t *testing.T) {
	t.Run("while-sending-a-fragmented-message", func(t *testing.T) {
		checkLeaks(t)
		b := appendFrame(nil, testkit.Frame{Op: wsmw.OpText, Payload: []byte("first fragment")}, false)
		b = appendHeader(b, false, wsmw.OpContinuation, 100, nil) // a frame of 100 bytes ...
		b = append(b, "only ten b"...)                            // ... of which 10 are sent
		p, c := killedUpstream(t, b)
		code, data, d, err := rawClose(c, 5*time.Second)
		if code != 1014 || err != nil {
			t.Fatalf("client got close %d (%v), want 1014", code, err)
		}
		if len(data) != 1 || data[0].Op != wsmw.OpText || data[0].Fin || string(data[0].Payload) != "first fragment" {
			t.Errorf("client got %v before the close, want the first fragment", data)
		}
		t.Logf("client got 1014 after %v", d.Round(time.Millisecond))
		wantIdle(t, p)
	})
	t.Run("inside-a-frame-after-a-message", func(t *testing.T) {
		checkLeaks(t)
		b := appendFrame(nil, testkit.Text("whole message"), false)
		b = appendHeader(b, true, wsmw.OpBinary, 5000, nil)
		p, c := killedUpstream(t, append(b, make([]byte, 1000)...))
		code, data, _, err := rawClose(c, 5*time.Second)
		if code != 1014 || err != nil {
			t.Fatalf("client got close %d (%v), want 1014", code, err)
		}
		if len(data) != 1 || string(data[0].Payload) != "whole message" {
			t.Errorf("client got %v before the close, want the whole message only", data)
		}
		wantIdle(t, p)
	})
	t.Run("inside-a-large-frame-partly-forwarded", func(t *testing.T) {
		// The proxy streams frames: once part of a frame went to the client, a
		// close frame cannot follow (it would be read as payload), so the only
		// correct ending is to close the client's connection. It must do so
		// promptly, and the session must end.
		checkLeaks(t)
		b := appendHeader(nil, true, wsmw.OpBinary, 1<<20, nil)
		p, c := killedUpstream(t, append(b, make([]byte, 200<<10)...))
		start := time.Now()
		c.SetReadDeadline(start.Add(5 * time.Second))
		n, err := io.Copy(io.Discard, c.R)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("the client connection was not closed within 5s (%d bytes read)", n)
		}
		t.Logf("client connection closed after %v and %d KiB of the frame", time.Since(start).Round(time.Millisecond), n>>10)
		if n >= 1<<20 {
			t.Errorf("the client got %d bytes: more than the upstream sent", n)
		}
		wantIdle(t, p)
	})
	t.Run("while-the-client-sends-a-fragmented-message", func(t *testing.T) {
		checkLeaks(t)
		got := make(chan testkit.Frame, 1)
		up := testkit.StartRawServer(t, func(uc *testkit.Conn) {
			f, err := testkit.ReadFrame(uc.R, 1<<20)
			if err == nil {
				got <- f
			}
			// Killed after the first fragment: return closes the connection.
		})
		p, addr := proxyFront(t, proxy.Config{Upstreams: []string{up.Addr()}, CloseTimeout: time.Second}, nil)
		c := dialRaw(t, addr, "/")
		if err := c.Send(frag(false, wsmw.OpText, "fragment 1 of 3")); err != nil {
			t.Fatal(err)
		}
		select {
		case f := <-got:
			if string(f.Payload) != "fragment 1 of 3" || f.Fin {
				t.Errorf("upstream got %v", f)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("upstream did not get the first fragment")
		}
		f, err := c.ReadFrameTimeout(5 * time.Second)
		for err == nil && f.Op != wsmw.OpClose {
			f, err = c.ReadFrameTimeout(5 * time.Second)
		}
		if err != nil {
			t.Fatalf("no close: %v", err)
		}
		if code := closeCodeOf(f.Payload); code != 1014 {
			t.Fatalf("client got close %d, want 1014", code)
		}
		c.Send(testkit.CloseFrame(1014, ""))
		if err := waitEOF(c, 3*time.Second); err != nil {
			t.Error(err)
		}
		wantIdle(t, p)
	})
}

// TestFaultUpstreamHangs: the upstream completes the handshake and then never
// reads. The client keeps sending; with WriteTimeout 300ms the proxy gives up
// on the upstream and the client gets 1014, within a few seconds.
func TestFaultUpstreamHangs(t *testing.T) {
	checkLeaks(t)
	hold, release := holdHandlers()
	up := testkit.StartRawServer(t, func(uc *testkit.Conn) {
		if tc, ok := uc.Conn.(*net.TCPConn); ok {
			tc.SetReadBuffer(16 << 10)
		}
		<-hold // never reads
	})
	release(t)
	p, addr := proxyFront(t, proxy.Config{
		Upstreams:    []string{up.Addr()},
		WriteTimeout: 300 * time.Millisecond,
		CloseTimeout: time.Second,
	}, nil)
	c := dialRaw(t, addr, "/")

	start := time.Now()
	var sent atomic.Int64
	stop := make(chan struct{})
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		frame := appendFrame(nil, testkit.Binary(make([]byte, 64<<10)), true)
		for time.Since(start) < 10*time.Second {
			select {
			case <-stop:
				return
			default:
			}
			c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
			n, err := c.Write(frame)
			sent.Add(int64(n))
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() && n == 0 {
					continue // the proxy is not reading either: keep trying until it closes
				}
				return // a partial frame: the connection is unusable from here on
			}
		}
	}()
	var code int
	var d time.Duration
	var rerr error
	deadline := time.Now().Add(8 * time.Second)
	for {
		f, err := c.ReadFrameTimeout(time.Until(deadline))
		if err != nil {
			code, d, rerr = noClose, time.Since(start), err
			break
		}
		if f.Op == wsmw.OpClose {
			code, d = closeCodeOf(f.Payload), time.Since(start)
			break
		}
	}
	close(stop)
	<-writerDone
	c.Close()
	var ne net.Error
	if errors.As(rerr, &ne) && ne.Timeout() {
		t.Fatalf("the client got neither a close nor the end of the connection within 8s")
	}
	if code != 1014 && code != noClose {
		t.Fatalf("client got close %d (%v), want 1014 or the connection closed", code, rerr)
	}
	if d > 5*time.Second {
		t.Errorf("the session took %v to close", d)
	}
	if !idle(p, 5*time.Second) {
		t.Fatal("session did not end")
	}
	t.Logf("client got %d (%v) after %v, having sent %d KiB; session over after %v", code, rerr, d.Round(time.Millisecond), sent.Load()>>10, time.Since(start).Round(time.Millisecond))
}

// TestFaultUpstreamGarbageHandshake: an upstream that answers the handshake with
// something other than a valid 101 makes the proxy answer 502.
func TestFaultUpstreamGarbageHandshake(t *testing.T) {
	random := make([]byte, 512)
	rand.Read(random)
	// A line end makes it a malformed status line (502) on every run: without
	// one, which happens in 13% of random draws, the proxy waits for the rest
	// of the line until its dial timeout and answers 504.
	random[100] = '\n'
	cases := []struct {
		name   string
		answer []byte
		keep   bool // keep the connection open after answering
	}{
		{"200-empty-then-close", []byte("HTTP/1.1 200 OK\r\n\r\n"), false},
		{"200-empty-kept-open", []byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), true},
		{"random-bytes", random, false},
		{"random-bytes-kept-open", random, true},
		{"101-without-accept", []byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"), true},
		{"101-wrong-accept", []byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n"), true},
		{"not-http", []byte("SSH-2.0-OpenSSH_9.6\r\n"), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			hold, release := holdHandlers()
			up := testkit.StartTCPServer(t, func(uc *testkit.Conn) {
				uc.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := http.ReadRequest(uc.R); err != nil {
					return
				}
				uc.Write(tc.answer)
				if tc.keep {
					<-hold
				}
			})
			release(t)
			p, addr := proxyFront(t, proxy.Config{Upstreams: []string{up.Addr()}, DialTimeout: 2 * time.Second}, nil)
			start := time.Now()
			resp := dialRefused(t, addr, "/")
			if resp.StatusCode != http.StatusBadGateway {
				t.Errorf("status %d, want 502", resp.StatusCode)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("answer took %v", d)
			}
			if p.ActiveSessions() != 0 {
				t.Errorf("%d active sessions", p.ActiveSessions())
			}
		})
	}
}

// TestFaultUpstreamRefuses: an upstream's refusal is relayed with its status and body.
func TestFaultUpstreamRefuses(t *testing.T) {
	for _, status := range []int{http.StatusUnauthorized, http.StatusServiceUnavailable} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			checkLeaks(t)
			body := fmt.Sprintf("refused with %d: go away", status)
			up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if status == http.StatusUnauthorized {
					w.Header().Set("WWW-Authenticate", `Bearer realm="test"`)
				}
				w.Header().Set("Content-Type", "text/plain")
				w.WriteHeader(status)
				io.WriteString(w, body)
			}))
			t.Cleanup(up.Close)
			_, addr := proxyFront(t, proxy.Config{Upstreams: []string{up.URL}}, nil)
			resp := dialRefused(t, addr, "/")
			got, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != status || string(got) != body {
				t.Errorf("got %d %q, want %d %q", resp.StatusCode, got, status, body)
			}
			if status == http.StatusUnauthorized && resp.Header.Get("WWW-Authenticate") == "" {
				t.Error("WWW-Authenticate was not relayed")
			}
		})
	}
}

// TestFaultClientVanishes: the client's TCP connection ends in the middle of a
// message; the upstream gets 1001 (going away).
func TestFaultClientVanishes(t *testing.T) {
	cases := []struct {
		name string
		send []byte
	}{
		{"after-a-fragment", appendFrame(nil, frag(false, wsmw.OpText, "fragment one"), true)},
		{"inside-a-frame", append(appendFrame(nil, frag(false, wsmw.OpBinary, "fragment one"), true),
			appendHeader(nil, false, wsmw.OpContinuation, 1000, []byte{1, 2, 3, 4})...)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			up := startLenient(t)
			p, addr := proxyFront(t, proxy.Config{Upstreams: []string{up.Addr()}, CloseTimeout: time.Second}, nil)
			c := dialRaw(t, addr, "/vanish")
			if err := c.WriteChopped(tc.send, 0); err != nil {
				t.Fatal(err)
			}
			rec := up.record("/vanish")
			// Wait for the fragment to reach the upstream, then vanish.
			deadline := time.Now().Add(5 * time.Second)
			for {
				frames, _ := rec.snapshot()
				if len(frames) > 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the fragment did not reach the upstream")
				}
				time.Sleep(5 * time.Millisecond)
			}
			c.Close()
			select {
			case <-rec.done:
			case <-time.After(5 * time.Second):
				t.Fatal("upstream connection did not end")
			}
			if _, code := rec.snapshot(); code != 1001 {
				t.Errorf("upstream got close %d, want 1001", code)
			}
			wantIdle(t, p)
		})
	}
}

// TestFaultSlowClient: a client that never reads while the upstream pushes 64 KiB
// messages as fast as it can. The proxy's memory stays bounded (it stops
// reading the upstream while the client's socket is full) and the session ends
// after WriteTimeout.
func TestFaultSlowClient(t *testing.T) {
	checkLeaks(t)
	const (
		msgSize      = 64 << 10
		pushLimit    = 64 << 20
		writeTimeout = 500 * time.Millisecond
	)
	var pushed atomic.Int64
	upResult := make(chan string, 1)
	up := testkit.StartRawServer(t, func(uc *testkit.Conn) {
		// The upstream: a reader that records the close, and a writer that pushes.
		closed := make(chan int, 1)
		go func() {
			for {
				f, err := testkit.ReadFrame(uc.R, 1<<20)
				if err != nil {
					closed <- noClose
					return
				}
				if f.Op == wsmw.OpClose {
					closed <- closeCodeOf(f.Payload)
					return
				}
			}
		}()
		frame := appendFrame(nil, testkit.Binary(make([]byte, msgSize)), false)
		for pushed.Load() < pushLimit {
			uc.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if _, err := uc.Write(frame); err != nil {
				upResult <- "write failed: " + err.Error()
				uc.Close()
				<-closed
				return
			}
			pushed.Add(msgSize)
			select {
			case code := <-closed:
				upResult <- fmt.Sprintf("got close %d", code)
				return
			default:
			}
		}
		upResult <- "pushed everything"
		<-closed
	})
	p, addr := proxyFront(t, proxy.Config{
		Upstreams:    []string{up.Addr()},
		WriteTimeout: writeTimeout,
		CloseTimeout: time.Second,
	}, nil)

	heapGrowth := testkit.HeapGrowth()

	start := time.Now()
	c := dialRaw(t, addr, "/")
	if tc, ok := c.Conn.(*net.TCPConn); ok {
		tc.SetReadBuffer(4 << 10)
	}
	// Never read. The session must end by itself.
	ended := idle(p, 10*time.Second)
	took := time.Since(start)
	growth := heapGrowth()
	if !ended {
		t.Fatal("session did not end within 10s")
	}
	var result string
	select {
	case result = <-upResult:
	case <-time.After(5 * time.Second):
		t.Fatal("upstream writer did not finish")
	}
	t.Logf("session ended after %v; upstream pushed %d MiB and %s; heap in use grew by at most %.1f MiB",
		took.Round(time.Millisecond), pushed.Load()>>20, result, float64(growth)/(1<<20))
	if growth >= 32<<20 {
		t.Errorf("heap in use grew by %.1f MiB (limit 32 MiB)", float64(growth)/(1<<20))
	}
	if pushed.Load() >= pushLimit && growth >= 32<<20 {
		t.Errorf("the proxy buffered the upstream's data")
	}
	if took > writeTimeout+5*time.Second {
		t.Errorf("session took %v to end (WriteTimeout %v)", took, writeTimeout)
	}
	if result == "pushed everything" {
		t.Errorf("the upstream pushed %d MiB without being blocked or closed", pushed.Load()>>20)
	}
}

// TestFaultHandshakeSlowloris: a client that sends its handshake one byte per
// 100ms is cut off by the server's ReadHeaderTimeout (1s); no session starts.
func TestFaultHandshakeSlowloris(t *testing.T) {
	checkLeaks(t)
	up := startLenient(t)
	p, addr := proxyFront(t, proxy.Config{Upstreams: []string{up.Addr()}}, &http.Server{ReadHeaderTimeout: time.Second})
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	closed := make(chan time.Duration, 1)
	start := time.Now()
	go func() {
		nc.SetReadDeadline(time.Now().Add(6 * time.Second))
		io.Copy(io.Discard, nc)
		closed <- time.Since(start)
	}()
	req := "GET /slow HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nX-Padding: " +
		strings.Repeat("x", 100) + "\r\n\r\n"
	var d time.Duration
	sent := 0
loop:
	for sent < len(req) && time.Since(start) < 5*time.Second {
		select {
		case d = <-closed:
			break loop
		case <-time.After(100 * time.Millisecond):
		}
		if _, err := nc.Write([]byte{req[sent]}); err != nil {
			break
		}
		sent++
	}
	if d == 0 {
		select {
		case d = <-closed:
		case <-time.After(6 * time.Second):
			t.Fatal("the server did not close the connection")
		}
	}
	t.Logf("connection closed after %v, %d of %d handshake bytes sent", d.Round(time.Millisecond), sent, len(req))
	if d < 900*time.Millisecond || d > 3*time.Second {
		t.Errorf("connection closed after %v, want about 1s (ReadHeaderTimeout)", d)
	}
	if sent >= len(req) {
		t.Error("the whole handshake was sent")
	}
	if n := up.Connections(); n != 0 {
		t.Errorf("upstream got %d connections", n)
	}
	if p.ActiveSessions() != 0 {
		t.Errorf("%d active sessions", p.ActiveSessions())
	}
}

// TestFaultOversizedHeaders: a handshake with headers beyond the server's
// MaxHeaderBytes is refused with 431 before the proxy sees it.
func TestFaultOversizedHeaders(t *testing.T) {
	checkLeaks(t)
	up := startLenient(t)
	_, addr := proxyFront(t, proxy.Config{Upstreams: []string{up.Addr()}}, &http.Server{ReadHeaderTimeout: 5 * time.Second, MaxHeaderBytes: 4 << 10})
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	req := "GET /big HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
	for i := range 16 {
		req += fmt.Sprintf("X-Big-%d: %s\r\n", i, strings.Repeat("b", 1000))
	}
	req += "\r\n"
	go io.WriteString(nc, req) // the server may stop reading before the end
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("status %d, want 431", resp.StatusCode)
	}
	if n := up.Connections(); n != 0 {
		t.Errorf("upstream got %d connections", n)
	}
}

// TestFaultConnectionChurn: 10,000 sessions through the proxy, 50 at a time,
// each opening, exchanging one message and closing. Sessions and descriptors
// return to zero and baseline.
func TestFaultConnectionChurn(t *testing.T) {
	checkLeaks(t)
	const (
		total       = 10000
		concurrency = 50
	)
	p, addr := echoFront(t, proxy.Config{})

	start := time.Now()
	var next atomic.Int64
	var failures atomic.Int64
	var firstErr sync.Once
	var wg sync.WaitGroup
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= total || time.Since(start) > 60*time.Second {
					return
				}
				if err := churnOne(addr, int(i)); err != nil {
					failures.Add(1)
					firstErr.Do(func() { t.Errorf("session %d: %v", i, err) })
				}
			}
		}()
	}
	wg.Wait()
	d := time.Since(start)
	done := next.Load()
	if done > total {
		done = total
	}
	if !idle(p, 10*time.Second) {
		t.Fatalf("%d sessions still active", p.ActiveSessions())
	}
	t.Logf("%d sessions in %v (%.0f sessions/s), %d failures", done, d.Round(time.Millisecond), float64(done)/d.Seconds(), failures.Load())
	if done < total {
		t.Errorf("only %d of %d sessions ran within 60s", done, total)
	}
	if failures.Load() > 0 {
		t.Errorf("%d sessions failed", failures.Load())
	}
	if d > 60*time.Second {
		t.Errorf("churn took %v", d)
	}
}

func churnOne(addr string, i int) error {
	c, _, err := dial(addr, "/churn")
	if err != nil {
		return err
	}
	defer c.Close()
	msg := binary.BigEndian.AppendUint32([]byte("churn "), uint32(i))
	c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := c.WriteMessage(websocket.BinaryMessage, msg); err != nil {
		return err
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, got, err := c.ReadMessage()
	if err != nil {
		return err
	}
	if string(got) != string(msg) {
		return fmt.Errorf("echo %q, want %q", got, msg)
	}
	return closeClean(c)
}
