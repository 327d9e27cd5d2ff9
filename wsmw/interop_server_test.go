package wsmw_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	coder "github.com/coder/websocket"
	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/internal/testkit"
	"github.com/wsgate/wsgate/wsmw"
)

// middlewareEcho is our server in its simplest form: the Middleware with an echo
// handler built on ReadMessage / WriteMessage. The handler's final read error is
// sent on the returned channel.
func middlewareEcho(t *testing.T, cfg *wsmw.ServerConfig) (*httptest.Server, <-chan error) {
	t.Helper()
	done := make(chan error, 4)
	h := func(c *wsmw.Conn, _ *http.Request) { done <- testkit.Echo(c) }
	srv := httptest.NewServer(wsmw.Middleware(h, cfg)(http.NotFoundHandler()))
	t.Cleanup(srv.Close)
	return srv, done
}

var sizes = []int{0, 1, 125, 126, 65535, 65536, 3 << 20}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// dialCoder dials srv with coder/websocket; it returns the connection, closed
// when the test ends, and a context for the test's use of it (testContext).
func dialCoder(t *testing.T, srv *httptest.Server) (*coder.Conn, context.Context) {
	t.Helper()
	ctx := testContext(t)
	c, _, err := coder.Dial(ctx, testkit.WSURL(srv.URL)+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c, ctx
}

func TestInteropServer_GorillaEcho(t *testing.T) {
	srv, _ := middlewareEcho(t, nil)
	ws := dialGorilla(t, testkit.WSURL(srv.URL)+"/", nil)
	for _, text := range []bool{true, false} {
		for _, n := range sizes {
			typ := websocket.BinaryMessage
			if text {
				typ = websocket.TextMessage
			}
			t.Run(fmt.Sprintf("type%d_%dbytes", typ, n), func(t *testing.T) {
				p := testkit.Pattern(n, text)
				if err := ws.WriteMessage(typ, p); err != nil {
					t.Fatal(err)
				}
				gt, got, err := ws.ReadMessage()
				if err != nil {
					t.Fatal(err)
				}
				if gt != typ || !bytes.Equal(got, p) {
					t.Fatalf("echo: type %d, %d bytes; want type %d, %d bytes", gt, len(got), typ, n)
				}
			})
		}
	}
}

func TestInteropServer_CoderEcho(t *testing.T) {
	srv, _ := middlewareEcho(t, nil)
	c, ctx := dialCoder(t, srv)
	c.SetReadLimit(4 << 20)
	for _, typ := range []coder.MessageType{coder.MessageText, coder.MessageBinary} {
		for _, n := range sizes {
			t.Run(fmt.Sprintf("%v_%dbytes", typ, n), func(t *testing.T) {
				p := testkit.Pattern(n, typ == coder.MessageText)
				if err := c.Write(ctx, typ, p); err != nil {
					t.Fatal(err)
				}
				gt, got, err := c.Read(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if gt != typ || !bytes.Equal(got, p) {
					t.Fatalf("echo: %v, %d bytes; want %v, %d bytes", gt, len(got), typ, n)
				}
			})
		}
	}
	if err := c.Close(coder.StatusNormalClosure, ""); err != nil {
		t.Fatalf("close handshake: %v", err)
	}
}

// gorilla's NextWriter emits a frame each time its write buffer fills: with a
// 1 KiB buffer a 10 KiB message arrives in many fragments, and is echoed whole.
func TestInteropServer_GorillaFragmentedMessage(t *testing.T) {
	frames := make(chan int, 1)
	h := func(c *wsmw.Conn, _ *http.Request) {
		// Count the frames at frame level, then echo the reassembled message.
		var msg []byte
		n := 0
		for {
			hd, payload, err := c.NextFrame()
			if err != nil {
				return
			}
			if hd.OpCode.IsControl() {
				continue
			}
			n++
			p, err := io.ReadAll(payload)
			if err != nil {
				return
			}
			msg = append(msg, p...)
			if hd.Fin {
				break
			}
		}
		frames <- n
		_ = c.Write(context.Background(), wsmw.MessageText, msg)
	}
	srv := httptest.NewServer(wsmw.Middleware(h, nil)(http.NotFoundHandler()))
	defer srv.Close()

	d := websocket.Dialer{WriteBufferSize: 1024}
	ws, _, err := d.Dial(testkit.WSURL(srv.URL)+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	msg := testkit.Pattern(10<<10, true)
	w, err := ws.NextWriter(websocket.TextMessage)
	if err != nil {
		t.Fatal(err)
	}
	for chunk := range slices.Chunk(msg, 700) {
		if _, err := w.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if n := <-frames; n < 2 {
		t.Fatalf("gorilla sent the message in %d frame(s); the test needs fragments", n)
	}
	_, got, err := ws.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("echo of the fragmented message: %d bytes, want %d identical bytes", len(got), len(msg))
	}
}

// gorilla's WriteMessage sends a large message as frames of its 4 KiB write
// buffer: a 3 MiB message arrives in ~770 fragments. ReadMessage must reassemble
// it in linear time and memory, not by reallocating the message per fragment.
func TestInteropServer_ManyFragmentsReassembledLinearly(t *testing.T) {
	const size = 3 << 20
	allocated := make(chan uint64, 1)
	h := func(c *wsmw.Conn, _ *http.Request) {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, p, err := c.Read(context.Background(), nil)
		runtime.ReadMemStats(&after)
		if err != nil || len(p) != size {
			allocated <- math.MaxUint64
			return
		}
		allocated <- after.TotalAlloc - before.TotalAlloc
	}
	srv := httptest.NewServer(wsmw.Middleware(h, nil)(http.NotFoundHandler()))
	defer srv.Close()
	ws := dialGorilla(t, testkit.WSURL(srv.URL)+"/", nil)
	if err := ws.WriteMessage(websocket.BinaryMessage, testkit.Pattern(size, false)); err != nil {
		t.Fatal(err)
	}
	select {
	case n := <-allocated:
		t.Logf("reading the message allocated %d bytes", n)
		if n > 16*size { // geometric growth allocates a small multiple; per-fragment regrowth hundreds of times the message
			t.Fatalf("reading a %d-byte message of 4 KiB fragments allocated %d bytes (%.0fx the message)", size, n, float64(n)/size)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("server did not read the message")
	}
}

// A coder client's Ping is answered by our automatic pong.
func TestInteropServer_CoderPingAnswered(t *testing.T) {
	srv, _ := middlewareEcho(t, nil)
	c, ctx := dialCoder(t, srv)
	// coder reads the pong in Read: keep a reader running.
	go func() {
		for {
			if _, _, err := c.Read(ctx); err != nil {
				return
			}
		}
	}()
	for i := 0; i < 3; i++ {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := c.Ping(pctx)
		cancel()
		if err != nil {
			t.Fatalf("ping %d: %v", i, err)
		}
	}
}

// Our server's ping reaches gorilla's PingHandler, and gorilla's pong reaches ours.
func TestInteropServer_ServerPingReachesGorilla(t *testing.T) {
	h := func(c *wsmw.Conn, _ *http.Request) {
		pong := make(chan string, 1)
		c.SetPongHandler(func(p []byte) error {
			select {
			case pong <- string(p):
			default:
			}
			return nil
		})
		if err := c.Ping([]byte("are you there")); err != nil {
			return
		}
		go func() {
			select {
			case p := <-pong:
				_ = c.Write(context.Background(), wsmw.MessageText, []byte("pong:"+p))
			case <-time.After(5 * time.Second):
				_ = c.Write(context.Background(), wsmw.MessageText, []byte("no pong"))
			}
		}()
		for {
			if _, _, err := c.Read(context.Background(), nil); err != nil {
				return
			}
		}
	}
	srv := httptest.NewServer(wsmw.Middleware(h, nil)(http.NotFoundHandler()))
	defer srv.Close()
	ws := dialGorilla(t, testkit.WSURL(srv.URL)+"/", nil)
	pings := make(chan string, 1)
	ws.SetPingHandler(func(p string) error {
		pings <- p
		return ws.WriteControl(websocket.PongMessage, []byte(p), time.Now().Add(5*time.Second))
	})
	_, msg, err := ws.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := testkit.Ready(pings); !ok {
		t.Fatal("gorilla's PingHandler was not called")
	} else if p != "are you there" {
		t.Errorf("gorilla's PingHandler got %q", p)
	}
	if string(msg) != "pong:are you there" {
		t.Fatalf("server reported %q, want our pong handler to see gorilla's pong", msg)
	}
}

func TestInteropServer_GorillaClosesWithCode(t *testing.T) {
	srv, done := middlewareEcho(t, nil)
	ws := dialGorilla(t, testkit.WSURL(srv.URL)+"/", nil)
	roundTrip(t, ws, "before close")
	if err := ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4001, "bye"), time.Now().Add(5*time.Second)); err != nil {
		t.Fatal(err)
	}
	// The server's ReadMessage returns the peer's close ...
	err := handlerResult(t, done)
	var ce *wsmw.CloseError
	if !errors.As(err, &ce) || ce.Code != 4001 || ce.Reason != "bye" {
		t.Fatalf("server ReadMessage error = %#v, want *CloseError{4001, \"bye\"}", err)
	}
	// ... and echoes its code.
	_, _, err = ws.ReadMessage()
	var gce *websocket.CloseError
	if !errors.As(err, &gce) || gce.Code != 4001 {
		t.Fatalf("client read after close = %v, want the echoed 4001", err)
	}
}

func TestInteropServer_CoderClosesWithCode(t *testing.T) {
	srv, done := middlewareEcho(t, nil)
	c, _ := dialCoder(t, srv)
	// coder's Close succeeds only if the peer answers with the same code.
	if err := c.Close(4001, "bye"); err != nil {
		t.Fatalf("coder Close(4001): %v", err)
	}
	err := handlerResult(t, done)
	var ce *wsmw.CloseError
	if !errors.As(err, &ce) || ce.Code != 4001 || ce.Reason != "bye" {
		t.Fatalf("server ReadMessage error = %#v, want *CloseError{4001, \"bye\"}", err)
	}
}

// closingServer is a server whose handler closes with 4002 "done" at once.
func closingServer(t *testing.T) (*httptest.Server, <-chan error) {
	t.Helper()
	done := make(chan error, 1)
	h := func(c *wsmw.Conn, _ *http.Request) {
		done <- c.Close(4002, "done")
	}
	srv := httptest.NewServer(wsmw.Middleware(h, nil)(http.NotFoundHandler()))
	t.Cleanup(srv.Close)
	return srv, done
}

func TestInteropServer_ServerClosesWithCode_Gorilla(t *testing.T) {
	srv, done := closingServer(t)
	ws := dialGorilla(t, testkit.WSURL(srv.URL)+"/", nil)
	expectGorillaClose(t, ws, 4002, "done") // gorilla's default close handler answers
	if err := handlerResult(t, done); err != nil {
		t.Fatalf("server Close: %v", err)
	}
}

func TestInteropServer_ServerClosesWithCode_Coder(t *testing.T) {
	srv, done := closingServer(t)
	c, ctx := dialCoder(t, srv)
	_, _, err := c.Read(ctx)
	if got := coder.CloseStatus(err); got != 4002 {
		t.Fatalf("coder Read error = %v (status %d), want close 4002", err, got)
	}
	var ce coder.CloseError
	if !errors.As(err, &ce) || ce.Reason != "done" {
		t.Errorf("coder close reason = %q, want \"done\"", ce.Reason)
	}
	if err := handlerResult(t, done); err != nil {
		t.Fatalf("server Close: %v", err)
	}
}

// A client breaking a server rule gets the matching close code, and the server's
// ReadMessage returns a *FailError for it.
func TestInteropServer_ClientViolationsCloseCodes(t *testing.T) {
	tests := []struct {
		name     string
		typ      int
		payload  []byte
		code     int
		sentinel error
	}{
		{name: "OverMaxMessageSize_1009", typ: websocket.BinaryMessage, payload: make([]byte, 1001), code: 1009, sentinel: wsmw.ErrPayloadTooBig},
		{name: "InvalidUTF8_1007", typ: websocket.TextMessage, payload: []byte("ok\xff\xfe ok"), code: 1007, sentinel: wsmw.ErrInvalidUTF8},
		{name: "TruncatedUTF8_1007", typ: websocket.TextMessage, payload: []byte("ok\xe2\x82"), code: 1007, sentinel: wsmw.ErrInvalidUTF8},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv, done := middlewareEcho(t, &wsmw.ServerConfig{MaxMessageSize: 1000})
			ws := dialGorilla(t, testkit.WSURL(srv.URL)+"/", nil)
			roundTrip(t, ws, strings.Repeat("x", 1000)) // exactly the limit passes
			start := time.Now()
			if err := ws.WriteMessage(tc.typ, tc.payload); err != nil {
				t.Fatal(err)
			}
			_, _, err := ws.ReadMessage()
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != tc.code {
				t.Fatalf("client read = %v, want close %d", err, tc.code)
			}
			serr := handlerResult(t, done)
			var fe *wsmw.FailError
			if !errors.As(serr, &fe) || int(fe.Code) != tc.code || !errors.Is(serr, tc.sentinel) {
				t.Fatalf("server error = %v, want *FailError %d wrapping %v", serr, tc.code, tc.sentinel)
			}
			// gorilla answered the close at once: the server must not sit out its close timeout.
			if d := time.Since(start); d > time.Second {
				t.Errorf("failing the connection took %v; the peer's close answer was missed", d)
			}
		})
	}
}

// handlerResult waits for the error the server's handler ended with.
func handlerResult(t *testing.T, ch <-chan error) error {
	t.Helper()
	return testkit.Recv(t, ch, 10*time.Second, "the server handler")
}
