package proxy

// Helpers of the tests of client legs on HTTP/2 and HTTP/3 streams
// (stream_test.go): a gorilla/websocket upstream, the proxy on a chi router
// served over each protocol (internal/streamtest), and raw stream clients.

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/internal/streamtest"
	"github.com/wsgate/wsgate/internal/testkit"
	"github.com/wsgate/wsgate/wsmw"
)

// TestMain turns on extended CONNECT in net/http's HTTP/2 server for the
// tests on streams (see streamtest.Main).
func TestMain(m *testing.M) { streamtest.Main(m) }

// streamUpstream is a gorilla/websocket echo server on HTTP/1.1; each connection
// is handed to conns and the error its read ended with to ended.
type streamUpstream struct {
	URL   string
	conns chan *websocket.Conn
	ended chan error
}

func startStreamUpstream(t *testing.T) *streamUpstream {
	t.Helper()
	u := &streamUpstream{conns: make(chan *websocket.Conn, 16), ended: make(chan error, 16)}
	var up websocket.Upgrader
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		u.conns <- c
		for {
			typ, p, err := c.ReadMessage()
			if err != nil {
				u.ended <- err
				return
			}
			if err := c.WriteMessage(typ, p); err != nil {
				u.ended <- err
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	u.URL = "ws" + strings.TrimPrefix(srv.URL, "http")
	return u
}

// end waits for an upstream connection's end and returns its close code and
// reason (-1 without a close frame).
func (u *streamUpstream) end(t *testing.T) (int, string) {
	t.Helper()
	select {
	case err := <-u.ended:
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return ce.Code, ce.Text
		}
		return -1, err.Error()
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream connection did not end")
	}
	return 0, ""
}

// front is the proxy under test, on a chi router served over one protocol.
type front struct {
	*streamtest.Server
	p *Proxy
	// served counts the proxy's ServeHTTP calls that have returned.
	served chan struct{}
}

// startFront serves a proxy with cfg (to u unless cfg names upstreams) over proto.
func startFront(t *testing.T, proto string, u *streamUpstream, cfg Config) *front {
	t.Helper()
	if len(cfg.Upstreams) == 0 {
		cfg.Upstreams = []string{u.URL}
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f := &front{p: p, served: make(chan struct{}, 16)}
	r := chi.NewRouter()
	r.Use(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			defer func() { f.served <- struct{}{} }()
			next.ServeHTTP(w, r)
		})
	})
	r.Use(p.Middleware)
	r.HandleFunc("/*", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "not a WebSocket", http.StatusUpgradeRequired)
	})
	f.Server = streamtest.Start(t, proto, r)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.Shutdown(ctx)
	})
	return f
}

// waitServed waits until the proxy's ServeHTTP for a stream has returned.
func (f *front) waitServed(t *testing.T) {
	t.Helper()
	select {
	case <-f.served:
	case <-time.After(5 * time.Second):
		t.Fatal("ServeHTTP did not return")
	}
}

// raw is a client WebSocket on a stream, written and read frame by frame.
type raw struct {
	st *streamtest.Stream
	br *bufio.Reader
}

func (f *front) openRaw(t *testing.T, path string) *raw {
	t.Helper()
	st, resp := f.Open(t, path, "websocket", nil)
	if st == nil {
		t.Fatalf("status %d", resp.StatusCode)
	}
	return &raw{st: st, br: bufio.NewReader(st)}
}

// send writes one masked frame.
func (r *raw) send(t *testing.T, fin bool, op wsmw.OpCode, payload []byte) {
	t.Helper()
	h := wsmw.Header{Fin: fin, OpCode: op, Masked: true, Mask: [4]byte{1, 2, 3, 4}, Length: int64(len(payload))}
	b := wsmw.AppendHeader(nil, h)
	n := len(b)
	b = append(b, payload...)
	wsmw.Mask(h.Mask, 0, b[n:])
	if _, err := r.st.Write(b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// sendClose writes a close frame with code and reason.
func (r *raw) sendClose(t *testing.T, code wsmw.StatusCode, reason string) {
	t.Helper()
	r.send(t, true, wsmw.OpClose, wsmw.AppendClosePayload(nil, code, reason))
}

// readClose reads frames until the close and returns its code and reason.
func (r *raw) readClose(t *testing.T) (wsmw.StatusCode, string) {
	t.Helper()
	r.st.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		h, err := wsmw.ReadHeader(r.br)
		if err != nil {
			t.Fatalf("waiting for a close: %v", err)
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(r.br, p); err != nil {
			t.Fatalf("waiting for a close: %v", err)
		}
		if h.OpCode == wsmw.OpClose {
			r.st.SetReadDeadline(time.Time{})
			code, reason, err := wsmw.ParseClosePayload(p)
			if err != nil {
				t.Fatalf("close payload %q: %v", p, err)
			}
			return code, reason
		}
	}
}

// ending tells how the server ended its side of the stream.
func (r *raw) ending(t *testing.T) streamtest.Ending {
	t.Helper()
	e, err := r.st.Ending(5 * time.Second)
	if err != nil {
		t.Fatalf("the stream ended neither in order nor with a reset: %v", err)
	}
	return e
}

// forEachProto runs f as a subtest for every stream protocol.
func forEachProto(t *testing.T, f func(t *testing.T, proto string)) {
	for _, proto := range streamtest.Protos {
		t.Run(proto, func(t *testing.T) { f(t, proto) })
	}
}

// startDeflateEcho starts a wsmw echo upstream that negotiates permessage-deflate.
func startDeflateEcho(t *testing.T) string {
	t.Helper()
	h := wsmw.Middleware(func(c *wsmw.Conn, r *http.Request) {
		for {
			typ, p, err := c.Read(context.Background(), nil)
			if err != nil || c.Write(context.Background(), typ, p) != nil {
				return
			}
		}
	}, &wsmw.ServerConfig{Compression: &wsmw.CompressionOptions{Threshold: 1}})(http.NotFoundHandler())
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http")
}

// startEchoedSession opens a session on a stream over proto through a proxy
// with the default Config, and checks that one message comes back from the
// upstream: the session is up on both legs when it returns.
func startEchoedSession(t *testing.T, proto string) (*streamUpstream, *front, *wsmw.Conn) {
	t.Helper()
	u := startStreamUpstream(t)
	f := startFront(t, proto, u, Config{})
	c := testkit.DialStream(t, f.Server, "/", nil)
	if err := c.Write(context.Background(), wsmw.MessageText, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if _, p, err := c.Read(context.Background(), nil); err != nil || string(p) != "hi" {
		t.Fatalf("echo %q %v, want hi", p, err)
	}
	return u, f, c
}
