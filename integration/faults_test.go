package integration

// Fault tests: the proxy between misbehaving peers. Everything runs on
// loopback, every test is bounded in time and stops by itself, and each one
// checks with leakCheck that its goroutines and descriptors are gone at the end.
// Clients are gorilla/websocket or the raw conformance client; upstreams are
// raw TCP servers (confStartRaw), so that they can misbehave in any way.

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/proxy"
)

// faultFront serves a proxy for cfg on a chi router behind srv (a fresh
// http.Server if nil). When the test ends it waits for the sessions to end,
// then shuts the proxy and the server down.
func faultFront(t testing.TB, cfg proxy.Config, srv *http.Server) (*proxy.Proxy, string) {
	t.Helper()
	p, err := proxy.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := chi.NewRouter()
	r.Use(p.Middleware)
	r.Get("/*", func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "not a websocket", http.StatusTeapot) })
	if srv == nil {
		srv = &http.Server{ReadHeaderTimeout: 5 * time.Second}
	}
	srv.Handler = r
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() {
		if !faultWaitSessions(p, 10*time.Second) {
			t.Errorf("%d sessions still active when the test ended", p.ActiveSessions())
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			t.Errorf("proxy shutdown: %v", err)
		}
		srv.Close()
	})
	return p, ln.Addr().String()
}

// faultWaitSessions polls until the proxy has no active session. Sessions run in
// goroutines of their own after ServeHTTP returns, so this is how a test knows
// they are over.
func faultWaitSessions(p *proxy.Proxy, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for p.ActiveSessions() != 0 {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// faultDial dials addr with gorilla/websocket. The handshake timeout is
// generous: under -race on a busy machine, the load tests' handshakes queue
// behind hundreds of streaming sessions.
func faultDial(addr, path string) (*websocket.Conn, *http.Response, error) {
	d := websocket.Dialer{HandshakeTimeout: 20 * time.Second}
	return d.Dial("ws://"+addr+path, nil)
}

// faultReadClose reads until the connection ends and returns the close code
// (confNoClose if it ended without a close frame) and how long it took.
func faultReadClose(c *websocket.Conn, limit time.Duration) (int, time.Duration, error) {
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
		return confNoClose, time.Since(start), err
	}
}

// faultRawClose reads frames from a raw client until the server's close and
// returns its code (gorilla/websocket v1.5 refuses 1014 as a close code, so the
// 1014 checks use the raw client). It answers the close and waits for the
// server to close the TCP connection.
func faultRawClose(c *confClient, limit time.Duration) (code int, data []confFrame, d time.Duration, err error) {
	start := time.Now()
	deadline := start.Add(limit)
	for {
		f, err := c.read(time.Until(deadline))
		if err != nil {
			return confNoClose, data, time.Since(start), err
		}
		if f.op == confOpClose {
			code = confCloseCode(f.payload)
			d = time.Since(start)
			body := f.payload[:min(2, len(f.payload))]
			c.write(confFrame{fin: true, op: confOpClose, payload: body}, 0)
			return code, data, d, c.waitEOF(3 * time.Second)
		}
		data = append(data, f)
	}
}

// faultHold returns a channel that raw upstream handlers block on; release
// must be called after the upstream is started, so that the channel is closed
// (by a Cleanup) before the upstream waits for its handlers.
func faultHold() (hold chan struct{}, release func(testing.TB)) {
	hold = make(chan struct{})
	return hold, func(t testing.TB) { t.Cleanup(func() { close(hold) }) }
}

// TestFaultUpstreamKilledMidMessage: the upstream's TCP connection ends in the
// middle of a message; the client gets 1014 (bad gateway).
func TestFaultUpstreamKilledMidMessage(t *testing.T) {
	t.Run("while-sending-a-fragmented-message", func(t *testing.T) {
		leakCheck(t)
		up := confStartRaw(t, true, func(nc net.Conn, br *bufio.Reader, _ *http.Request) {
			var b []byte
			b = confAppendFrame(b, confFrame{op: confOpText, payload: []byte("first fragment")}, false)
			b = confAppendHeader(b, false, 0, confOpCont, 100, nil) // a frame of 100 bytes ...
			b = append(b, "only ten b"...)                          // ... of which 10 are sent
			nc.Write(b)
			time.Sleep(50 * time.Millisecond)
			// The handler returns: the connection is closed without a close frame.
		})
		p, addr := faultFront(t, proxy.Config{Upstreams: []string{up.addr()}, CloseTimeout: time.Second}, nil)
		c, err := confDial(addr, "/")
		if err != nil {
			t.Fatal(err)
		}
		defer c.nc.Close()
		code, data, d, err := faultRawClose(c, 5*time.Second)
		if code != 1014 || err != nil {
			t.Fatalf("client got close %d (%v), want 1014", code, err)
		}
		if len(data) != 1 || data[0].op != confOpText || data[0].fin || string(data[0].payload) != "first fragment" {
			t.Errorf("client got %v before the close, want the first fragment", data)
		}
		t.Logf("client got 1014 after %v", d.Round(time.Millisecond))
		if !faultWaitSessions(p, 5*time.Second) {
			t.Error("session did not end")
		}
	})
	t.Run("inside-a-frame-after-a-message", func(t *testing.T) {
		leakCheck(t)
		up := confStartRaw(t, true, func(nc net.Conn, br *bufio.Reader, _ *http.Request) {
			var b []byte
			b = confAppendFrame(b, confText("whole message"), false)
			b = confAppendHeader(b, true, 0, confOpBinary, 5000, nil)
			b = append(b, make([]byte, 1000)...)
			nc.Write(b)
			time.Sleep(50 * time.Millisecond)
		})
		p, addr := faultFront(t, proxy.Config{Upstreams: []string{up.addr()}, CloseTimeout: time.Second}, nil)
		c, err := confDial(addr, "/")
		if err != nil {
			t.Fatal(err)
		}
		defer c.nc.Close()
		code, data, _, err := faultRawClose(c, 5*time.Second)
		if code != 1014 || err != nil {
			t.Fatalf("client got close %d (%v), want 1014", code, err)
		}
		if len(data) != 1 || string(data[0].payload) != "whole message" {
			t.Errorf("client got %v before the close, want the whole message only", data)
		}
		if !faultWaitSessions(p, 5*time.Second) {
			t.Error("session did not end")
		}
	})
	t.Run("inside-a-large-frame-partly-forwarded", func(t *testing.T) {
		// The proxy streams frames: once part of a frame went to the client, a
		// close frame cannot follow (it would be read as payload), so the only
		// correct ending is to close the client's connection. It must do so
		// promptly, and the session must end.
		leakCheck(t)
		up := confStartRaw(t, true, func(nc net.Conn, br *bufio.Reader, _ *http.Request) {
			var b []byte
			b = confAppendHeader(b, true, 0, confOpBinary, 1<<20, nil)
			b = append(b, make([]byte, 200<<10)...)
			nc.Write(b)
			time.Sleep(50 * time.Millisecond)
		})
		p, addr := faultFront(t, proxy.Config{Upstreams: []string{up.addr()}, CloseTimeout: time.Second}, nil)
		c, err := confDial(addr, "/")
		if err != nil {
			t.Fatal(err)
		}
		defer c.nc.Close()
		start := time.Now()
		c.nc.SetReadDeadline(start.Add(5 * time.Second))
		n, err := io.Copy(io.Discard, c.br)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("the client connection was not closed within 5s (%d bytes read)", n)
		}
		t.Logf("client connection closed after %v and %d KiB of the frame", time.Since(start).Round(time.Millisecond), n>>10)
		if n >= 1<<20 {
			t.Errorf("the client got %d bytes: more than the upstream sent", n)
		}
		if !faultWaitSessions(p, 5*time.Second) {
			t.Error("session did not end")
		}
	})
	t.Run("while-the-client-sends-a-fragmented-message", func(t *testing.T) {
		leakCheck(t)
		got := make(chan confFrame, 1)
		up := confStartRaw(t, true, func(nc net.Conn, br *bufio.Reader, _ *http.Request) {
			f, err := confReadFrame(br, 1<<20)
			if err == nil {
				got <- f
			}
			// Killed after the first fragment: return closes the connection.
		})
		p, addr := faultFront(t, proxy.Config{Upstreams: []string{up.addr()}, CloseTimeout: time.Second}, nil)
		c, err := confDial(addr, "/")
		if err != nil {
			t.Fatal(err)
		}
		defer c.nc.Close()
		if err := c.write(confFr(false, confOpText, "fragment 1 of 3"), 0); err != nil {
			t.Fatal(err)
		}
		select {
		case f := <-got:
			if string(f.payload) != "fragment 1 of 3" || f.fin {
				t.Errorf("upstream got %v", f)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("upstream did not get the first fragment")
		}
		f, err := c.read(5 * time.Second)
		for err == nil && f.op != confOpClose {
			f, err = c.read(5 * time.Second)
		}
		if err != nil {
			t.Fatalf("no close: %v", err)
		}
		if code := confCloseCode(f.payload); code != 1014 {
			t.Fatalf("client got close %d, want 1014", code)
		}
		c.write(confCloseFrame(1014, ""), 0)
		if err := c.waitEOF(3 * time.Second); err != nil {
			t.Error(err)
		}
		if !faultWaitSessions(p, 5*time.Second) {
			t.Error("session did not end")
		}
	})
}

// TestFaultUpstreamHangs: the upstream completes the handshake and then never
// reads. The client keeps sending; with WriteTimeout 300ms the proxy gives up
// on the upstream and the client gets 1014, within a few seconds.
func TestFaultUpstreamHangs(t *testing.T) {
	leakCheck(t)
	hold, release := faultHold()
	up := confStartRaw(t, true, func(nc net.Conn, br *bufio.Reader, _ *http.Request) {
		if tc, ok := nc.(*net.TCPConn); ok {
			tc.SetReadBuffer(16 << 10)
		}
		<-hold // never reads
	})
	release(t)
	p, addr := faultFront(t, proxy.Config{
		Upstreams:    []string{up.addr()},
		WriteTimeout: 300 * time.Millisecond,
		CloseTimeout: time.Second,
	}, nil)
	c, err := confDial(addr, "/")
	if err != nil {
		t.Fatal(err)
	}
	defer c.nc.Close()

	start := time.Now()
	var sent atomic.Int64
	stop := make(chan struct{})
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		frame := confAppendFrame(nil, confBin(make([]byte, 64<<10)), true)
		for time.Since(start) < 10*time.Second {
			select {
			case <-stop:
				return
			default:
			}
			c.nc.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
			n, err := c.nc.Write(frame)
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
		f, err := c.read(time.Until(deadline))
		if err != nil {
			code, d, rerr = confNoClose, time.Since(start), err
			break
		}
		if f.op == confOpClose {
			code, d = confCloseCode(f.payload), time.Since(start)
			break
		}
	}
	close(stop)
	<-writerDone
	c.nc.Close()
	var ne net.Error
	if errors.As(rerr, &ne) && ne.Timeout() {
		t.Fatalf("the client got neither a close nor the end of the connection within 8s")
	}
	if code != 1014 && code != confNoClose {
		t.Fatalf("client got close %d (%v), want 1014 or the connection closed", code, rerr)
	}
	if d > 5*time.Second {
		t.Errorf("the session took %v to close", d)
	}
	if !faultWaitSessions(p, 5*time.Second) {
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
			leakCheck(t)
			hold, release := faultHold()
			up := confStartRaw(t, false, func(nc net.Conn, br *bufio.Reader, _ *http.Request) {
				nc.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				nc.Write(tc.answer)
				if tc.keep {
					<-hold
				}
			})
			release(t)
			p, addr := faultFront(t, proxy.Config{Upstreams: []string{up.addr()}, DialTimeout: 2 * time.Second}, nil)
			start := time.Now()
			c, resp, err := faultDial(addr, "/")
			if err == nil {
				c.Close()
				t.Fatal("handshake succeeded")
			}
			if resp == nil {
				t.Fatalf("no response: %v", err)
			}
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
			leakCheck(t)
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
			_, addr := faultFront(t, proxy.Config{Upstreams: []string{up.URL}}, nil)
			c, resp, err := faultDial(addr, "/")
			if err == nil {
				c.Close()
				t.Fatal("handshake succeeded")
			}
			if resp == nil {
				t.Fatalf("no response: %v", err)
			}
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
		{"after-a-fragment", confAppendFrame(nil, confFr(false, confOpText, "fragment one"), true)},
		{"inside-a-frame", append(confAppendFrame(nil, confFr(false, confOpBinary, "fragment one"), true),
			confAppendHeader(nil, false, 0, confOpCont, 1000, []byte{1, 2, 3, 4})...)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			leakCheck(t)
			up := confStartLenient(t)
			p, addr := faultFront(t, proxy.Config{Upstreams: []string{up.addr()}, CloseTimeout: time.Second}, nil)
			c, err := confDial(addr, "/vanish")
			if err != nil {
				t.Fatal(err)
			}
			if err := c.writeRaw(tc.send, 0); err != nil {
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
			c.nc.Close()
			select {
			case <-rec.done:
			case <-time.After(5 * time.Second):
				t.Fatal("upstream connection did not end")
			}
			if _, code := rec.snapshot(); code != 1001 {
				t.Errorf("upstream got close %d, want 1001", code)
			}
			if !faultWaitSessions(p, 5*time.Second) {
				t.Error("session did not end")
			}
		})
	}
}

// TestFaultSlowClient: a client that never reads while the upstream pushes 64 KiB
// messages as fast as it can. The proxy's memory stays bounded (it stops
// reading the upstream while the client's socket is full) and the session ends
// after WriteTimeout.
func TestFaultSlowClient(t *testing.T) {
	leakCheck(t)
	const (
		msgSize      = 64 << 10
		pushLimit    = 64 << 20
		writeTimeout = 500 * time.Millisecond
	)
	var pushed atomic.Int64
	upResult := make(chan string, 1)
	up := confStartRaw(t, true, func(nc net.Conn, br *bufio.Reader, _ *http.Request) {
		// The upstream: a reader that records the close, and a writer that pushes.
		closed := make(chan int, 1)
		go func() {
			for {
				f, err := confReadFrame(br, 1<<20)
				if err != nil {
					closed <- confNoClose
					return
				}
				if f.op == confOpClose {
					closed <- confCloseCode(f.payload)
					return
				}
			}
		}()
		frame := confAppendFrame(nil, confBin(make([]byte, msgSize)), false)
		for pushed.Load() < pushLimit {
			nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if _, err := nc.Write(frame); err != nil {
				upResult <- "write failed: " + err.Error()
				nc.Close()
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
	p, addr := faultFront(t, proxy.Config{
		Upstreams:    []string{up.addr()},
		WriteTimeout: writeTimeout,
		CloseTimeout: time.Second,
	}, nil)

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	var peak atomic.Uint64
	peak.Store(base)
	sampleDone := make(chan struct{})
	stopSampling := make(chan struct{})
	go func() {
		defer close(sampleDone)
		var ms runtime.MemStats
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopSampling:
				return
			case <-tick.C:
			}
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
		}
	}()

	start := time.Now()
	c, err := confDial(addr, "/")
	if err != nil {
		t.Fatal(err)
	}
	defer c.nc.Close()
	if tc, ok := c.nc.(*net.TCPConn); ok {
		tc.SetReadBuffer(4 << 10)
	}
	// Never read. The session must end by itself.
	ended := faultWaitSessions(p, 10*time.Second)
	took := time.Since(start)
	close(stopSampling)
	<-sampleDone
	if !ended {
		t.Fatal("session did not end within 10s")
	}
	var result string
	select {
	case result = <-upResult:
	case <-time.After(5 * time.Second):
		t.Fatal("upstream writer did not finish")
	}
	growth := int64(peak.Load()) - int64(base)
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
	leakCheck(t)
	up := confStartLenient(t)
	p, addr := faultFront(t, proxy.Config{Upstreams: []string{up.addr()}}, &http.Server{ReadHeaderTimeout: time.Second})
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
	if n := up.connections(); n != 0 {
		t.Errorf("upstream got %d connections", n)
	}
	if p.ActiveSessions() != 0 {
		t.Errorf("%d active sessions", p.ActiveSessions())
	}
}

// TestFaultOversizedHeaders: a handshake with headers beyond the server's
// MaxHeaderBytes is refused with 431 before the proxy sees it.
func TestFaultOversizedHeaders(t *testing.T) {
	leakCheck(t)
	up := confStartLenient(t)
	_, addr := faultFront(t, proxy.Config{Upstreams: []string{up.addr()}}, &http.Server{ReadHeaderTimeout: 5 * time.Second, MaxHeaderBytes: 4 << 10})
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
	if n := up.connections(); n != 0 {
		t.Errorf("upstream got %d connections", n)
	}
}

// faultEchoUpstream is a gorilla/websocket echo server.
func faultEchoUpstream(t testing.TB) *httptest.Server {
	t.Helper()
	upg := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := upg.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			mt, p, err := c.ReadMessage()
			if err != nil {
				return
			}
			if err := c.WriteMessage(mt, p); err != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestFaultConnectionChurn: 10,000 sessions through the proxy, 50 at a time,
// each opening, exchanging one message and closing. Sessions and descriptors
// return to zero and baseline.
func TestFaultConnectionChurn(t *testing.T) {
	leakCheck(t)
	const (
		total       = 10000
		concurrency = 50
	)
	up := faultEchoUpstream(t)
	p, addr := faultFront(t, proxy.Config{Upstreams: []string{up.URL}}, nil)

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
				if err := faultChurnOne(addr, int(i)); err != nil {
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
	if !faultWaitSessions(p, 10*time.Second) {
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

func faultChurnOne(addr string, i int) error {
	c, _, err := faultDial(addr, "/churn")
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
	if err := c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(5*time.Second)); err != nil {
		return err
	}
	code, _, err := faultReadClose(c, 10*time.Second)
	if code != 1000 {
		return fmt.Errorf("close reply %d (%v)", code, err)
	}
	return nil
}
