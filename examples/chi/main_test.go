package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/wsgate/wsgate/internal/testkit"
	"github.com/wsgate/wsgate/wsmw"
)

// startDemo serves the demo router on a free port, as main does.
func startDemo(t *testing.T, args ...string) string {
	t.Helper()
	return startDemoWithLogger(t, newLogger(false), args...)
}

func startDemoWithLogger(t *testing.T, log *zap.Logger, args ...string) string {
	t.Helper()
	o, err := parseFlags(args, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h, p, echo, err := newRouter(o, ln.Addr().String(), log)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() {
		p.Shutdown(t.Context())
		echo.Shutdown(t.Context(), wsmw.StatusGoingAway, "")
		srv.Close()
	})
	return ln.Addr().String()
}

// serveDemo runs serve, as main does, with args on a free port and returns
// its address, and stop, which ends serve as a signal does and returns what
// serve returned. stop runs when the test ends, if the test did not call it.
func serveDemo(t *testing.T, args ...string) (addr string, stop func() error) {
	t.Helper()
	o, err := parseFlags(append([]string{"-listen", "127.0.0.1:0"}, args...), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan string, 1)
	served := make(chan error, 1)
	go func() { served <- serve(ctx, o, zap.NewNop(), func(a string) { addrc <- a }) }()
	var once sync.Once
	var serr error
	stop = func() error {
		once.Do(func() {
			cancel()
			serr = testkit.Recv(t, served, 15*time.Second, "serve's return after the drain")
		})
		return serr
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return testkit.Recv(t, addrc, 5*time.Second, "the listener"), stop
}

func TestPageIsServed(t *testing.T) {
	addr := startDemo(t)
	status, body := testkit.Get(t, "http://"+addr+"/")
	if status != 200 || !strings.Contains(body, "new WebSocket(") {
		t.Fatalf("status %d, page %q...", status, body[:min(len(body), 80)])
	}
}

func TestEchoAndProxyEndpoints(t *testing.T) {
	addr := startDemo(t)
	for _, path := range []string{"/echo", "/ws"} {
		t.Run(path, func(t *testing.T) {
			h := http.Header{"Origin": {"http://" + addr}}
			c, _, err := websocket.DefaultDialer.Dial("ws://"+addr+path, h)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			for _, msg := range []string{"hello", strings.Repeat("é", 40000)} {
				c.WriteMessage(websocket.TextMessage, []byte(msg))
				_, got, err := c.ReadMessage()
				if err != nil || string(got) != msg {
					t.Fatalf("echo of %d bytes: got %d bytes, %v", len(msg), len(got), err)
				}
			}
			c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(4000, "done"))
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, _, err := c.ReadMessage(); !websocket.IsCloseError(err, 4000) {
				t.Fatalf("close: %v", err)
			}
		})
	}
}

func TestLimitsFromFlags(t *testing.T) {
	addr := startDemo(t, "-max-message-size", "1000")
	c, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.WriteMessage(websocket.BinaryMessage, make([]byte, 2000))
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, _, err := c.ReadMessage(); !websocket.IsCloseError(err, 1009) {
		t.Fatalf("want 1009, got %v", err)
	}
}

func TestForeignOriginRefused(t *testing.T) {
	addr := startDemo(t)
	_, resp, err := websocket.DefaultDialer.Dial("ws://"+addr+"/ws", http.Header{"Origin": {"http://evil.example"}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("want 403, got %v %v", resp, err)
	}
	addr = startDemo(t, "-origin", "http://*.example")
	c, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/ws", http.Header{"Origin": {"http://evil.example"}})
	if err != nil {
		t.Fatalf("allowed by -origin: %v", err)
	}
	c.Close()
}

func TestNonWebSocketRequestsReachRoutes(t *testing.T) {
	addr := startDemo(t)
	if status, _ := testkit.Get(t, "http://"+addr+"/ws"); status != http.StatusUpgradeRequired {
		t.Fatalf("plain GET /ws: %d", status)
	}
}

func TestHelpDocumentsEveryFlag(t *testing.T) {
	var out bytes.Buffer
	if _, err := parseFlags([]string{"-h"}, &out); err == nil {
		t.Fatal("-h should stop parsing")
	}
	for _, f := range []string{"-listen", "-upstream", "-lb", "-max-message-size", "-max-frame-size", "-origin", "-idle-timeout", "-drain-timeout", "-debug", "-compression", "-read-header-timeout", "-max-header-bytes"} {
		if !strings.Contains(out.String(), f) {
			t.Errorf("-h does not document %s", f)
		}
	}
}

// TestChiRequestIDAndRealIPReachUpstreamAndLog checks the chi integration: the
// client IP that chi's RealIP derives from X-Real-IP becomes the upstream's
// X-Forwarded-For, and chi's request ID is in the session's log line.
func TestChiRequestIDAndRealIPReachUpstreamAndLog(t *testing.T) {
	seen := make(chan http.Header, 1)
	echo := testkit.GorillaEchoHandler(websocket.Upgrader{}, nil)
	up := testkit.Serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Clone()
		echo.ServeHTTP(w, r)
	}), nil)

	core, logs := observer.New(zap.InfoLevel)
	addr := startDemoWithLogger(t, zap.New(core), "-upstream", "ws://"+up+"/")
	c, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/ws", http.Header{"X-Real-Ip": {"203.0.113.7"}})
	if err != nil {
		t.Fatal(err)
	}
	h := <-seen
	if got := h.Get("X-Forwarded-For"); got != "203.0.113.7" {
		t.Errorf("upstream X-Forwarded-For = %q, want the real IP 203.0.113.7", got)
	}
	c.WriteMessage(websocket.TextMessage, []byte("hi"))
	if _, p, err := c.ReadMessage(); err != nil || string(p) != "hi" {
		t.Fatalf("echo: %q %v", p, err)
	}
	c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""))
	c.ReadMessage()
	c.Close()
	testkit.Eventually(3*time.Second, func() bool { return logs.FilterMessage("session closed").Len() != 0 })
	entries := logs.FilterMessage("session closed").All()
	if len(entries) != 1 {
		t.Fatalf("want one session log line, got %d", len(entries))
	}
	fields := entries[0].ContextMap()
	if id, _ := fields["request_id"].(string); id == "" {
		t.Errorf("session log has no chi request_id: %v", fields)
	}
	if fields["client_addr"] != "203.0.113.7" {
		t.Errorf("client_addr = %v, want the real IP", fields["client_addr"])
	}
	if fields["msgs_up"] != int64(1) || fields["close_code"] != int64(1000) || fields["closed_by"] != "client" {
		t.Errorf("session fields: %v", fields)
	}
}

// TestCompressionFlag checks -compression: off strips the offer, passthrough
// relays the demo echo's answer, terminate answers the client itself; the
// echo works compressed in each mode, and an unknown mode is refused.
func TestCompressionFlag(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		wantExt string
	}{
		{nil, ""},
		{[]string{"-compression", "off"}, ""},
		{[]string{"-compression", "passthrough"}, "permessage-deflate; server_no_context_takeover; client_no_context_takeover"},
		{[]string{"-compression", "terminate"}, "permessage-deflate; server_no_context_takeover; client_no_context_takeover"},
	} {
		t.Run(strings.Join(append([]string{"default"}, tc.args...), " "), func(t *testing.T) {
			addr := startDemo(t, tc.args...)
			d := websocket.Dialer{EnableCompression: true, HandshakeTimeout: 3 * time.Second}
			c, resp, err := d.Dial("ws://"+addr+"/ws", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if got := resp.Header.Get("Sec-WebSocket-Extensions"); got != tc.wantExt {
				t.Errorf("Sec-WebSocket-Extensions %q, want %q", got, tc.wantExt)
			}
			msg := strings.Repeat("compress me ", 1000)
			for range 2 {
				c.WriteMessage(websocket.TextMessage, []byte(msg))
				c.SetReadDeadline(time.Now().Add(2 * time.Second))
				if _, got, err := c.ReadMessage(); err != nil || string(got) != msg {
					t.Fatalf("echo: %d bytes, %v", len(got), err)
				}
			}
		})
	}
	o, err := parseFlags([]string{"-compression", "gzip"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := newRouter(o, "127.0.0.1:1", newLogger(false)); err == nil || !strings.Contains(err.Error(), "gzip") {
		t.Errorf("-compression gzip: %v", err)
	}
}

// A signal (here: the context ending) drains the demo: a proxied session gets
// 1012, an /echo connection 1001, and serve returns once both have ended.
func TestShutdownDrainsBothEndpoints(t *testing.T) {
	addr, stop := serveDemo(t)
	codes := make(chan int, 2)
	for _, path := range []string{"/ws", "/echo"} {
		c, _, err := websocket.DefaultDialer.Dial("ws://"+addr+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.WriteMessage(websocket.TextMessage, []byte("hi")); err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.ReadMessage(); err != nil {
			t.Fatal(err)
		}
		go func() {
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, _, err := c.ReadMessage()
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				codes <- ce.Code
			} else {
				codes <- -1
			}
		}()
	}
	if err := stop(); err != nil {
		t.Fatalf("serve: %v", err)
	}
	got := map[int]bool{<-codes: true, <-codes: true}
	if !got[1012] || !got[1001] {
		t.Errorf("close codes %v, want 1012 (/ws) and 1001 (/echo)", got)
	}
}
