package wsmw

// WebSockets over HTTP/2 (RFC 8441) and HTTP/3 (RFC 9220): the handshake,
// every message and frame API, limits, close paths and how the stream ends,
// each over h2c, h2 (TLS) and h3 (quic-go).

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsgate/wsgate/internal/streamtest"
)

// echoHandler echoes messages with the message API until the peer closes.
func echoHandler(c *Conn, r *http.Request) {
	for {
		typ, p, err := c.Read(context.Background(), nil)
		if err != nil {
			return
		}
		if err := c.Write(context.Background(), typ, p); err != nil {
			return
		}
	}
}

// forEachProto runs f as a subtest for every stream protocol.
func forEachProto(t *testing.T, f func(t *testing.T, proto string)) {
	for _, proto := range streamtest.Protos {
		t.Run(proto, func(t *testing.T) { f(t, proto) })
	}
}

func TestStreamEcho(t *testing.T) {
	forEachProto(t, func(t *testing.T, proto string) {
		saw := make(chan *http.Request, 1)
		h := Middleware(func(c *Conn, r *http.Request) {
			saw <- r
			echoHandler(c, r)
		}, nil)(http.NotFoundHandler())
		s := startStream(t, proto, h)
		c := s.dialWS(t, "/echo", nil)
		ctx := context.Background()
		for _, m := range []struct {
			typ MessageType
			p   []byte
		}{
			{MessageText, []byte("hello")},
			{MessageBinary, []byte{0, 1, 2}},
			{MessageText, nil},
			{MessageBinary, bytes.Repeat([]byte{7}, 1<<20)},
			{MessageText, []byte(strings.Repeat("é", 40000))},
		} {
			if err := c.Write(ctx, m.typ, m.p); err != nil {
				t.Fatal(err)
			}
			typ, p, err := c.Read(ctx, nil)
			if err != nil || typ != m.typ || !bytes.Equal(p, m.p) {
				t.Fatalf("echo of %d bytes: %v %d bytes %v", len(m.p), typ, len(p), err)
			}
		}
		// A fragmented message with a ping between its fragments.
		pongs := make(chan string, 1)
		c.SetPongHandler(func(p []byte) error { pongs <- string(p); return nil })
		for _, f := range []struct {
			h Header
			p string
		}{
			{Header{OpCode: OpText}, "frag"},
			{Header{Fin: true, OpCode: OpPing}, "ping!"},
			{Header{OpCode: OpContinuation}, "men"},
			{Header{Fin: true, OpCode: OpContinuation}, "ted"},
		} {
			if err := c.WriteFrame(f.h, []byte(f.p)); err != nil {
				t.Fatal(err)
			}
		}
		typ, p, err := c.Read(ctx, nil)
		if err != nil || typ != MessageText || string(p) != "fragmented" {
			t.Fatalf("fragmented echo: %v %q %v", typ, p, err)
		}
		if got := <-pongs; got != "ping!" {
			t.Fatalf("pong %q", got)
		}
		if err := c.Close(StatusNormalClosure, "bye"); err != nil {
			t.Fatal(err)
		}
		r := <-saw
		if want := map[string]int{"h2c": 2, "h2": 2, "h3": 3}[proto]; r.ProtoMajor != want || r.Method != http.MethodConnect {
			t.Errorf("handler saw %s %s", r.Method, r.Proto)
		}
		if c.RemoteAddr() == nil || c.RemoteAddr().String() == "" || c.LocalAddr() == nil {
			t.Errorf("client addresses %v %v", c.LocalAddr(), c.RemoteAddr())
		}
	})
}

func TestStreamHandshake(t *testing.T) {
	forEachProto(t, func(t *testing.T, proto string) {
		remote := make(chan string, 1)
		cfg := &ServerConfig{Subprotocols: []string{"b", "a"}, Compression: &CompressionOptions{}}
		h := Middleware(func(c *Conn, r *http.Request) {
			remote <- c.RemoteAddr().String()
			c.Close(StatusNormalClosure, "")
		}, cfg)(http.NotFoundHandler())
		s := startStream(t, proto, h)

		rs, resp := s.openRaw(t, "/", http.Header{
			"Sec-Websocket-Protocol":   {"a, b"},
			"Sec-Websocket-Extensions": {"permessage-deflate; client_max_window_bits"},
		})
		if rs == nil {
			t.Fatalf("status %d, want 200", resp.StatusCode)
		}
		if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != "b" {
			t.Errorf("subprotocol %q, want b", got)
		}
		if got := resp.Header.Get("Sec-WebSocket-Extensions"); !strings.HasPrefix(got, "permessage-deflate") {
			t.Errorf("extensions %q", got)
		}
		for _, k := range []string{"Sec-Websocket-Accept", "Upgrade", "Connection"} {
			if v, ok := resp.Header[k]; ok {
				t.Errorf("200 carries %s: %q", k, v)
			}
		}
		if got := <-remote; !strings.HasPrefix(got, "127.0.0.1:") {
			t.Errorf("server's RemoteAddr %q", got)
		}

		for _, tc := range []struct {
			name   string
			hdr    http.Header
			status int
		}{
			{"version 8", http.Header{"Sec-Websocket-Version": {"8"}}, http.StatusUpgradeRequired},
			{"bad origin", http.Header{"Origin": {"https://evil.example"}}, http.StatusForbidden},
		} {
			_, resp := s.openRaw(t, "/", tc.hdr)
			if resp.StatusCode != tc.status {
				t.Errorf("%s: status %d, want %d", tc.name, resp.StatusCode, tc.status)
			}
			if tc.status == http.StatusUpgradeRequired {
				if got := resp.Header.Get("Sec-WebSocket-Version"); got != "13" {
					t.Errorf("426 without Sec-WebSocket-Version: 13 (%q)", got)
				}
				if _, ok := resp.Header["Upgrade"]; ok {
					t.Error("426 over a stream carries Upgrade")
				}
			}
		}
	})
}

// TestStreamNotWebSocket: an extended CONNECT for another protocol, and a
// plain request, are not WebSockets: Middleware passes them on, Upgrade
// refuses them with 400.
func TestStreamNotWebSocket(t *testing.T) {
	forEachProto(t, func(t *testing.T, proto string) {
		mux := http.NewServeMux()
		mux.Handle("/mw", Middleware(echoHandler, nil)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusTeapot)
		})))
		mux.HandleFunc("/upgrade", func(w http.ResponseWriter, r *http.Request) {
			if c, err := Upgrade(w, r, nil); err == nil {
				c.CloseNow()
			}
		})
		s := startStream(t, proto, mux)
		for _, path := range []string{"/mw", "/upgrade"} {
			st, resp := s.Open(t, path, "webtransport", nil)
			want := map[string]int{"/mw": http.StatusTeapot, "/upgrade": http.StatusBadRequest}[path]
			if st != nil || resp.StatusCode != want {
				t.Errorf("%s with :protocol webtransport: status %d, want %d", path, resp.StatusCode, want)
			}
		}
		resp, _, err := s.Get("/upgrade")
		if err != nil || resp.StatusCode != http.StatusBadRequest {
			t.Errorf("GET /upgrade: %v %v, want 400", resp, err)
		}
	})
}

// TestStreamCloses checks every way a connection ends, with the close code
// each side sees and how the stream ends: END_STREAM (FIN) after a complete
// close handshake, a reset otherwise.
func TestStreamCloses(t *testing.T) {
	type result struct {
		err error
	}
	for _, tc := range []struct {
		name string
		cfg  ServerConfig
		// handler runs on the server after the handshake; it gets the
		// connection and returns when it is done.
		handler func(c *Conn)
		// client drives the raw client; it returns the close code it expects
		// the server's handler to see (0: none, the read failed).
		client func(t *testing.T, rs *rawStream) StatusCode
		end    streamtest.Ending
	}{
		{
			name:    "client closes",
			handler: func(c *Conn) { echoHandler(c, nil) },
			client: func(t *testing.T, rs *rawStream) StatusCode {
				rs.write(t, clientFrame(OpClose, closeBody(4000, "done")))
				if got := rs.readClose(t); got != 4000 {
					t.Errorf("close answer %v, want 4000", got)
				}
				return 4000
			},
			end: streamtest.EndStream,
		},
		{
			name:    "server closes",
			handler: func(c *Conn) { c.Close(4001, "server") },
			client: func(t *testing.T, rs *rawStream) StatusCode {
				if got := rs.readClose(t); got != 4001 {
					t.Errorf("server's close %v, want 4001", got)
				}
				rs.write(t, clientFrame(OpClose, closeBody(4001, "")))
				return 0
			},
			end: streamtest.EndStream,
		},
		{
			name:    "server closes, client never answers",
			cfg:     ServerConfig{CloseTimeout: 200 * time.Millisecond},
			handler: func(c *Conn) { c.Close(4002, "") },
			client: func(t *testing.T, rs *rawStream) StatusCode {
				rs.readClose(t)
				return 0
			},
			end: streamtest.EndReset,
		},
		{
			name: "server drops the connection",
			handler: func(c *Conn) {
				c.Read(context.Background(), nil) // the 200 has arrived: a reset could discard it
				c.CloseNow()
			},
			client: func(t *testing.T, rs *rawStream) StatusCode {
				rs.write(t, clientFrame(OpText, "hello"))
				return 0
			},
			end: streamtest.EndReset,
		},
		{
			name:    "message over the limit",
			cfg:     ServerConfig{MaxMessageSize: 1024},
			handler: func(c *Conn) { echoHandler(c, nil) },
			client:  violation(rawFrame(true, 0, OpBinary, true, make([]byte, 2048)), StatusMessageTooBig),
			end:     streamtest.EndStream,
		},
		{
			name:    "invalid UTF-8",
			handler: func(c *Conn) { echoHandler(c, nil) },
			client:  violation(clientFrame(OpText, "ok \xff"), StatusInvalidPayload),
			end:     streamtest.EndStream,
		},
		{
			name:    "unmasked frame",
			handler: func(c *Conn) { echoHandler(c, nil) },
			client:  violation(rawFrame(true, 0, OpText, false, []byte("bare")), StatusProtocolError),
			end:     streamtest.EndStream,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			forEachProto(t, func(t *testing.T, proto string) {
				seen := make(chan error, 1)
				done := make(chan struct{})
				cfg := tc.cfg
				h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					defer close(done)
					c, err := Upgrade(w, r, &cfg)
					if err != nil {
						seen <- err
						return
					}
					tc.handler(c)
					_, _, err = c.Read(context.Background(), nil) // the error the handler saw last
					seen <- err
					c.Close(StatusNormalClosure, "") // as Middleware does: waits for a failed connection's close handshake
					c.endStream()
				})
				s := startStream(t, proto, h)
				rs, resp := s.openRaw(t, "/", nil)
				if rs == nil {
					t.Fatalf("status %d", resp.StatusCode)
				}
				want := tc.client(t, rs)
				if got := rs.ending(t); got != tc.end {
					t.Errorf("stream ended with %s, want %s", got, tc.end)
				}
				<-done
				err := <-seen
				if want != 0 && CloseStatus(err) != want {
					t.Errorf("server saw %v, want close %v", err, want)
				}
			})
		})
	}
}

// TestStreamClientGoesAway: the client resets its stream; the server's read
// fails (no close frame) and its handler returns.
func TestStreamClientGoesAway(t *testing.T) {
	forEachProto(t, func(t *testing.T, proto string) {
		seen := make(chan error, 1)
		h := Middleware(func(c *Conn, r *http.Request) {
			_, _, err := c.Read(context.Background(), nil)
			seen <- err
		}, nil)(http.NotFoundHandler())
		s := startStream(t, proto, h)
		c := s.dialWS(t, "/", nil)
		c.CloseNow()
		select {
		case err := <-seen:
			var ce *CloseError
			if err == nil || errors.As(err, &ce) {
				t.Errorf("server read %v, want a failure without a close", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the server did not notice the reset")
		}
	})
}

// TestStreamHandlerPanics: a panicking handler's client gets 1011, and the
// stream ends in order once the client answers.
func TestStreamHandlerPanics(t *testing.T) {
	forEachProto(t, func(t *testing.T, proto string) {
		h := Middleware(func(c *Conn, r *http.Request) { panic("boom") }, nil)(http.NotFoundHandler())
		s := startStream(t, proto, h)
		rs, _ := s.openRaw(t, "/", nil)
		if got := rs.readClose(t); got != StatusInternalError {
			t.Fatalf("close %v, want 1011", got)
		}
		rs.write(t, clientFrame(OpClose, closeBody(1011, "")))
		if got := rs.ending(t); got != streamtest.EndStream {
			t.Errorf("stream ended with %s", got)
		}
	})
}

func TestStreamCompression(t *testing.T) {
	forEachProto(t, func(t *testing.T, proto string) {
		opts := &CompressionOptions{Threshold: 1}
		h := Middleware(echoHandler, &ServerConfig{Compression: opts})(http.NotFoundHandler())
		s := startStream(t, proto, h)
		c := s.dialWS(t, "/", &DialConfig{Compression: opts})
		if _, ok := c.Compression(); !ok {
			t.Fatalf("permessage-deflate not negotiated: %q", c.Extensions())
		}
		msg := bytes.Repeat([]byte("compress me "), 5000)
		ctx := context.Background()
		for range 3 {
			if err := c.Write(ctx, MessageText, msg); err != nil {
				t.Fatal(err)
			}
			if _, p, err := c.Read(ctx, nil); err != nil || !bytes.Equal(p, msg) {
				t.Fatalf("echo: %d bytes, %v", len(p), err)
			}
		}
		c.Close(StatusNormalClosure, "")
	})
}

// TestStreamServerTimeoutsCleared: http.Server's read and write timeouts
// apply to each HTTP/2 stream; a WebSocket outlives them.
func TestStreamServerTimeoutsCleared(t *testing.T) {
	for _, proto := range []string{"h2c", "h2"} {
		t.Run(proto, func(t *testing.T) {
			h := Middleware(echoHandler, nil)(http.NotFoundHandler())
			s := startStream(t, proto, h, func(srv *http.Server) {
				srv.ReadTimeout = 100 * time.Millisecond
				srv.WriteTimeout = 100 * time.Millisecond
			})
			c := s.dialWS(t, "/", nil)
			time.Sleep(400 * time.Millisecond)
			ctx := context.Background()
			if err := c.Write(ctx, MessageText, []byte("still there")); err != nil {
				t.Fatal(err)
			}
			if _, p, err := c.Read(ctx, nil); err != nil || string(p) != "still there" {
				t.Fatalf("echo after the server's timeouts: %q %v", p, err)
			}
			c.Close(StatusNormalClosure, "")
		})
	}
}

// TestStreamGroupShutdown: Group closes stream connections with its code from
// another goroutine; the handlers see the client's answer and return.
func TestStreamGroupShutdown(t *testing.T) {
	forEachProto(t, func(t *testing.T, proto string) {
		var g Group
		s := startStream(t, proto, Middleware(g.Handler(echoHandler), nil)(http.NotFoundHandler()))
		var wg sync.WaitGroup
		for range 3 {
			c := s.dialWS(t, "/", nil)
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _, err := c.Read(context.Background(), nil)
				if CloseStatus(err) != StatusGoingAway {
					t.Errorf("client read %v, want 1001", err)
				}
			}()
		}
		for deadline := time.Now().Add(5 * time.Second); g.Len() < 3; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%d connections tracked, want 3", g.Len())
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := g.Shutdown(ctx, StatusGoingAway, "bye"); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
	})
}

// TestStreamDialRefused: a refused extended CONNECT is a *HandshakeError with
// the response, its body kept.
func TestStreamDialRefused(t *testing.T) {
	forEachProto(t, func(t *testing.T, proto string) {
		s := startStream(t, proto, Middleware(echoHandler, nil)(http.NotFoundHandler()))
		_, resp, err := s.dialErr("/", &DialConfig{Header: http.Header{"Origin": {"https://evil.example"}}})
		var he *HandshakeError
		if !errors.As(err, &he) || he.Status != http.StatusForbidden || resp == nil {
			t.Fatalf("dial: %v, want a 403 HandshakeError", err)
		}
		if body, _ := io.ReadAll(resp.Body); !strings.Contains(string(body), "origin not allowed") {
			t.Errorf("body %q", body)
		}
	})
}

// TestStreamIdleHoldsNoReadBuffer: a connection waiting for its next frame on
// a stream holds no pooled read buffer, as on a socket.
func TestStreamIdleHoldsNoReadBuffer(t *testing.T) {
	forEachProto(t, func(t *testing.T, proto string) {
		waits := make(chan bool, 64)
		hook := func(holds bool) { waits <- holds }
		ready := make(chan *Conn, 1)
		s := startStream(t, proto, Middleware(func(c *Conn, r *http.Request) {
			ready <- c
			echoHandler(c, r)
		}, nil)(http.NotFoundHandler()))
		c := s.dialWS(t, "/", nil)
		server := <-ready
		if !server.rd.quiet {
			t.Fatal("the server's stream connection does not read quietly")
		}
		ctx := context.Background()
		c.Write(ctx, MessageText, []byte("hello"))
		if _, p, err := c.Read(ctx, nil); err != nil || string(p) != "hello" {
			t.Fatalf("echo: %q %v", p, err)
		}
		testHookWait.Store(&hook)
		defer testHookWait.Store(nil)
		c.Write(ctx, MessageText, []byte("again"))
		c.Read(ctx, nil)
		// Every wait of both sides from now on, idle between messages, holds no buffer.
		for range 2 {
			if holds := <-waits; holds {
				t.Fatal("a stream connection holds a read buffer while it waits")
			}
		}
		testHookWait.Store(nil)
		c.Close(StatusNormalClosure, "")
	})
}

// violation is a client that sends frame, expects the server to fail the
// connection with want and answers its close.
func violation(frame []byte, want StatusCode) func(t *testing.T, rs *rawStream) StatusCode {
	return func(t *testing.T, rs *rawStream) StatusCode {
		rs.write(t, frame)
		if got := rs.readClose(t); got != want {
			t.Errorf("close %v, want %v", got, want)
		}
		rs.write(t, clientFrame(OpClose, closeBody(int(want), "")))
		return 0
	}
}
