package wsmw_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	coder "github.com/coder/websocket"
	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/internal/relay"
	"github.com/wsgate/wsgate/internal/testkit"
	"github.com/wsgate/wsgate/wsmw"
)

// subprotocol is the subprotocol both foreign servers speak; clients offer it second.
const subprotocol = "chat.v2"

// foreignServer is a foreign WebSocket server; its handler routes by path:
// /echo echoes messages, /ping pings us and reports the pong, /close closes
// with 4002 "done", /expect-close reports the close code it receives.
type foreignServer struct {
	name    string
	handler func(events chan<- string) http.Handler
}

var foreignServers = []foreignServer{
	{"gorilla", gorillaServer},
	{"coder", coderServer},
}

func gorillaServer(events chan<- string) http.Handler {
	up := websocket.Upgrader{Subprotocols: []string{subprotocol}}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			events <- "upgrade: " + err.Error()
			return
		}
		defer c.Close()
		deadline := time.Now().Add(5 * time.Second)
		switch r.URL.Path {
		case "/echo":
			testkit.GorillaEcho(c)
			return
		case "/ping":
			c.SetPongHandler(func(s string) error { events <- "pong:" + s; return nil })
			if err := c.WriteControl(websocket.PingMessage, []byte("srv-ping"), deadline); err != nil {
				events <- "ping: " + err.Error()
				return
			}
		case "/close":
			if err := c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4002, "done"), deadline); err != nil {
				events <- "close: " + err.Error()
				return
			}
		}
		// Read until the close: it answers pings, delivers pongs and reports the close code.
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				var ce *websocket.CloseError
				if errors.As(err, &ce) {
					events <- fmt.Sprintf("close:%d:%s", ce.Code, ce.Text)
				} else {
					events <- "read: " + err.Error()
				}
				return
			}
		}
	})
}

func coderServer(events chan<- string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := coder.Accept(w, r, &coder.AcceptOptions{Subprotocols: []string{subprotocol}})
		if err != nil {
			events <- "accept: " + err.Error()
			return
		}
		defer c.CloseNow()
		c.SetReadLimit(8 << 20)
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		switch r.URL.Path {
		case "/echo":
			testkit.CoderEcho(ctx, c)
			return
		case "/ping":
			ctx := c.CloseRead(ctx)
			if err := c.Ping(ctx); err != nil {
				events <- "ping: " + err.Error()
				return
			}
			events <- "pong:"
			<-ctx.Done()
			return
		case "/close":
			if err := c.Close(4002, "done"); err != nil {
				events <- "close: " + err.Error()
			} else {
				events <- "closed"
			}
			return
		}
		_, _, err = c.Read(ctx)
		var ce coder.CloseError
		if errors.As(err, &ce) {
			events <- fmt.Sprintf("close:%d:%s", ce.Code, ce.Reason)
		} else {
			events <- fmt.Sprintf("read: %v", err)
		}
	})
}

// dialForeign starts s and dials path on it with subprotocol negotiation.
func dialForeign(t *testing.T, s foreignServer, path string) (*wsmw.Conn, <-chan string) {
	t.Helper()
	events := make(chan string, 8)
	srv := httptest.NewServer(s.handler(events))
	t.Cleanup(srv.Close)
	c, resp, err := wsmw.Dial(context.Background(), "ws"+strings.TrimPrefix(srv.URL, "http")+path,
		&wsmw.DialConfig{Subprotocols: []string{"chat.v1", subprotocol}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	if resp.StatusCode != http.StatusSwitchingProtocols || c.Subprotocol() != subprotocol {
		t.Fatalf("status %d subprotocol %q, want 101 %q", resp.StatusCode, c.Subprotocol(), subprotocol)
	}
	return c, events
}

func TestInteropClient_Echo(t *testing.T) {
	msgs := []struct {
		name string
		op   wsmw.MessageType
		p    []byte
	}{
		{"Text", wsmw.MessageText, []byte("hello, wörld")},
		{"EmptyText", wsmw.MessageText, nil},
		{"EmptyBinary", wsmw.MessageBinary, nil},
		{"Binary125", wsmw.MessageBinary, testkit.Pattern(125, false)},
		{"Binary126", wsmw.MessageBinary, testkit.Pattern(126, false)},
		{"Binary65535", wsmw.MessageBinary, testkit.Pattern(65535, false)},
		{"Binary65536", wsmw.MessageBinary, testkit.Pattern(65536, false)},
		{"Binary3MiB", wsmw.MessageBinary, testkit.Pattern(3<<20, false)},
		{"Text3MiB", wsmw.MessageText, bytes.Repeat([]byte("é"), 3<<19)},
	}
	eachServer(t, "/echo", func(t *testing.T, s foreignServer, c *wsmw.Conn, events <-chan string) {
		for _, m := range msgs {
			if err := c.Write(context.Background(), m.op, m.p); err != nil {
				t.Fatalf("%s: write: %v", m.name, err)
			}
			op, p, err := c.Read(context.Background(), nil)
			if err != nil || op != m.op || !bytes.Equal(p, m.p) {
				t.Fatalf("%s: echo %v %d bytes %v, want %v %d bytes", m.name, op, len(p), err, m.op, len(m.p))
			}
		}
		if err := c.Close(wsmw.StatusNormalClosure, ""); err != nil {
			t.Fatal(err)
		}
		if e, ok := testkit.Ready(events); ok {
			t.Fatalf("server reported %q", e)
		}
	})
}

func TestInteropClient_FragmentedMessage(t *testing.T) {
	eachServer(t, "/echo", func(t *testing.T, s foreignServer, c *wsmw.Conn, _ <-chan string) {
		op := wsmw.OpText
		for _, part := range []string{"frag", "ment", "ed ✓"} {
			if err := c.WriteFrame(wsmw.Header{OpCode: op}, []byte(part)); err != nil {
				t.Fatal(err)
			}
			op = wsmw.OpContinuation
		}
		if err := c.WriteFrame(wsmw.Header{Fin: true, OpCode: op}, nil); err != nil {
			t.Fatal(err)
		}
		if op, p, err := c.Read(context.Background(), nil); err != nil || op != wsmw.MessageText || string(p) != "fragmented ✓" {
			t.Fatalf("echo %v %q %v", op, p, err)
		}
	})
}

func TestInteropClient_OurPingGetsTheirPong(t *testing.T) {
	eachServer(t, "/echo", func(t *testing.T, s foreignServer, c *wsmw.Conn, _ <-chan string) {
		pongs := make(chan string, 1)
		c.SetPongHandler(func(p []byte) error { pongs <- string(p); return nil })
		if err := c.Ping([]byte("cli-ping")); err != nil {
			t.Fatal(err)
		}
		// The pong is handled by the reader, before the echo of the next message.
		if err := c.Write(context.Background(), wsmw.MessageText, []byte("after")); err != nil {
			t.Fatal(err)
		}
		if _, p, err := c.Read(context.Background(), nil); err != nil || string(p) != "after" {
			t.Fatalf("echo %q %v", p, err)
		}
		if p, ok := testkit.Ready(pongs); !ok {
			t.Fatal("no pong before the echo")
		} else if p != "cli-ping" {
			t.Fatalf("pong payload %q", p)
		}
	})
}

func TestInteropClient_TheirPingGetsOurPong(t *testing.T) {
	want := map[string]string{"gorilla": "pong:srv-ping", "coder": "pong:"}
	eachServer(t, "/ping", func(t *testing.T, s foreignServer, c *wsmw.Conn, events <-chan string) {
		read := make(chan error, 1)
		go func() { _, _, err := c.Read(context.Background(), nil); read <- err }()
		if e := nextEvent(t, events); e != want[s.name] {
			t.Fatalf("server reported %q, want %q", e, want[s.name])
		}
		c.Close(wsmw.StatusNormalClosure, "")
		<-read
	})
}

func TestInteropClient_OurCloseCodeReachesThem(t *testing.T) {
	eachServer(t, "/expect-close", func(t *testing.T, s foreignServer, c *wsmw.Conn, events <-chan string) {
		if err := c.Close(4001, "bye"); err != nil {
			t.Fatal(err)
		}
		if e := nextEvent(t, events); e != "close:4001:bye" {
			t.Fatalf("server reported %q, want close:4001:bye", e)
		}
		if ce := relay.CloseReceived(c); ce == nil || ce.Code != 4001 {
			t.Fatalf("their answer to our close: %v, want 4001 echoed", ce)
		}
	})
}

func TestInteropClient_TheirCloseCodeReachesUs(t *testing.T) {
	want := map[string]string{"gorilla": "close:4002:", "coder": "closed"}
	eachServer(t, "/close", func(t *testing.T, s foreignServer, c *wsmw.Conn, events <-chan string) {
		_, _, err := c.Read(context.Background(), nil)
		var ce *wsmw.CloseError
		if !errors.As(err, &ce) || ce.Code != 4002 || ce.Reason != "done" {
			t.Fatalf("ReadMessage err = %v, want *CloseError 4002 done", err)
		}
		// We answered their close: gorilla sees our echoed code, coder's Close completes.
		if e := nextEvent(t, events); e != want[s.name] {
			t.Fatalf("server reported %q, want %q", e, want[s.name])
		}
	})
}

// eachServer runs f as a subtest for each foreign server, with a connection
// dialed to path on it and the server's reports.
func eachServer(t *testing.T, path string, f func(t *testing.T, s foreignServer, c *wsmw.Conn, events <-chan string)) {
	for _, s := range foreignServers {
		t.Run(s.name, func(t *testing.T) {
			c, events := dialForeign(t, s, path)
			f(t, s, c, events)
		})
	}
}

// nextEvent waits for the server's next report.
func nextEvent(t *testing.T, events <-chan string) string {
	t.Helper()
	return testkit.Recv(t, events, 5*time.Second, "a report from the server")
}
