package wsmw_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	coder "github.com/coder/websocket"
	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/internal/testkit"
	"github.com/wsgate/wsgate/wsmw"
)

// byteCounter counts the bytes a connection reads and writes on the wire.
type byteCounter struct{ read, written atomic.Int64 }

type countingConn struct {
	net.Conn
	n *byteCounter
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.read.Add(int64(n))
	return n, err
}

func (c countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.n.written.Add(int64(n))
	return n, err
}

type countingListener struct {
	net.Listener
	n *byteCounter
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return countingConn{c, l.n}, nil
}

// testMessage is one payload of the exchange.
type testMessage struct {
	text bool
	p    []byte
}

// mixedMessages mixes sizes below and above the thresholds, compressible text and
// incompressible bytes; the compressible ones dominate the total.
func mixedMessages() []testMessage {
	random := make([]byte, 200<<10)
	for i := range random {
		random[i] = byte(rand.Uint32())
	}
	var js strings.Builder
	for i := 0; js.Len() < 64<<10; i++ {
		fmt.Fprintf(&js, `{"id":%d,"name":"user%d","ok":true},`, i, i%97)
	}
	return []testMessage{
		{true, []byte{}},
		{true, []byte("x")},
		{true, []byte(strings.Repeat("héllo wörld ", 20))},
		{false, []byte(js.String()[:1024])},
		{true, []byte(js.String())},
		{true, bytes.Repeat([]byte("compressible "), 1<<17)},
		{false, random},
		{true, []byte(strings.Repeat("héllo wörld ", 20))},
	}
}

func totalSize(msgs []testMessage) (n int64) {
	for _, m := range msgs {
		n += int64(len(m.p))
	}
	return n
}

// checkCompressed fails unless both directions carried well under the payload.
func checkCompressed(t *testing.T, n *byteCounter, payload int64) {
	t.Helper()
	r, w := n.read.Load(), n.written.Load()
	t.Logf("payload %d bytes each way; on the wire: %d read, %d written", payload, r, w)
	if r > payload/2 || w > payload/2 {
		t.Errorf("not compressed: %d read / %d written for %d bytes of payload", r, w, payload)
	}
}

// compressingEcho is our echo server with compression opts, counting its wire bytes.
func compressingEcho(t *testing.T, opts *wsmw.CompressionOptions, want string) (*httptest.Server, *byteCounter) {
	n := &byteCounter{}
	ts := httptest.NewUnstartedServer(testkit.Upgrading(&wsmw.ServerConfig{Compression: opts, MaxMessageSize: 8 << 20}, func(c *wsmw.Conn, _ *http.Request) {
		if got := c.Extensions(); got != want {
			t.Errorf("server negotiated %q, want %q", got, want)
		}
		testkit.Echo(c)
	}))
	ts.Listener = countingListener{ts.Listener, n}
	ts.Start()
	t.Cleanup(ts.Close)
	return ts, n
}

// coderCase is a coder/websocket peer's compression mode, our options and the
// extension negotiated.
type coderCase struct {
	name string
	mode coder.CompressionMode
	opts wsmw.CompressionOptions
	want string
}

func TestDeflateInterop_OurServer_CoderClient(t *testing.T) {
	cases := []coderCase{
		{"ContextTakeover", coder.CompressionContextTakeover, wsmw.CompressionOptions{}, "permessage-deflate"},
		{"ContextTakeover/ServerRefusesIt", coder.CompressionContextTakeover, wsmw.CompressionOptions{ServerNoContextTakeover: true, ClientNoContextTakeover: true},
			"permessage-deflate; server_no_context_takeover; client_no_context_takeover"},
		{"ContextTakeover/Level9Window12", coder.CompressionContextTakeover, wsmw.CompressionOptions{Level: 9, ServerMaxWindowBits: 12}, "permessage-deflate; server_max_window_bits=12"},
		{"NoContextTakeover", coder.CompressionNoContextTakeover, wsmw.CompressionOptions{}, "permessage-deflate; server_no_context_takeover; client_no_context_takeover"},
	}
	msgs := mixedMessages()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ts, n := compressingEcho(t, &tc.opts, tc.want)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c, _, err := coder.Dial(ctx, testkit.WSURL(ts.URL), &coder.DialOptions{CompressionMode: tc.mode})
			if err != nil {
				t.Fatal(err)
			}
			defer c.CloseNow()
			c.SetReadLimit(8 << 20)
			for i, m := range msgs {
				typ := coder.MessageBinary
				if m.text {
					typ = coder.MessageText
				}
				if err := c.Write(ctx, typ, m.p); err != nil {
					t.Fatal(err)
				}
				gt, got, err := c.Read(ctx)
				if err != nil || gt != typ || !bytes.Equal(got, m.p) {
					t.Fatalf("message %d (%d bytes): %v, %d bytes, %v", i, len(m.p), gt, len(got), err)
				}
			}
			if err := c.Close(coder.StatusNormalClosure, ""); err != nil {
				t.Fatal(err)
			}
			checkCompressed(t, n, totalSize(msgs))
		})
	}
}

func TestDeflateInterop_OurServer_GorillaClient(t *testing.T) {
	msgs := mixedMessages()
	ts, n := compressingEcho(t, &wsmw.CompressionOptions{}, "permessage-deflate; server_no_context_takeover; client_no_context_takeover")
	d := websocket.Dialer{EnableCompression: true}
	c, _, err := d.Dial(testkit.WSURL(ts.URL), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i, m := range msgs {
		typ := websocket.BinaryMessage
		if m.text {
			typ = websocket.TextMessage
		}
		if err := c.WriteMessage(typ, m.p); err != nil {
			t.Fatal(err)
		}
		gt, got, err := c.ReadMessage()
		if err != nil || gt != typ || !bytes.Equal(got, m.p) {
			t.Fatalf("message %d (%d bytes): %v, %d bytes, %v", i, len(m.p), gt, len(got), err)
		}
	}
	c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(time.Second))
	checkCompressed(t, n, totalSize(msgs))
}

// dialCounting connects our client with opts, counting its wire bytes.
func dialCounting(t *testing.T, url string, opts *wsmw.CompressionOptions) (*wsmw.Conn, *byteCounter) {
	n := &byteCounter{}
	c, _, err := wsmw.Dial(context.Background(), url, &wsmw.DialConfig{
		Compression:    opts,
		MaxMessageSize: 8 << 20,
		NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			nc, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return countingConn{nc, n}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c, n
}

// exchange sends each message, expects it back and closes.
func exchange(t *testing.T, c *wsmw.Conn, msgs []testMessage) {
	t.Helper()
	for i, m := range msgs {
		op := wsmw.MessageBinary
		if m.text {
			op = wsmw.MessageText
		}
		if err := c.Write(context.Background(), op, m.p); err != nil {
			t.Fatal(err)
		}
		gop, got, err := c.Read(context.Background(), nil)
		if err != nil || gop != op || !bytes.Equal(got, m.p) {
			t.Fatalf("message %d (%d bytes): %v, %d bytes, %v", i, len(m.p), gop, len(got), err)
		}
	}
	if err := c.Close(wsmw.StatusNormalClosure, ""); err != nil {
		t.Fatal(err)
	}
}

func TestDeflateInterop_OurClient_CoderServer(t *testing.T) {
	msgs := mixedMessages()
	for _, tc := range []coderCase{
		{"ContextTakeover", coder.CompressionContextTakeover, wsmw.CompressionOptions{}, "permessage-deflate"},
		{"ContextTakeover/WeAskNone", coder.CompressionContextTakeover, wsmw.CompressionOptions{ServerNoContextTakeover: true, ClientNoContextTakeover: true},
			"permessage-deflate; client_no_context_takeover; server_no_context_takeover"},
		{"NoContextTakeover", coder.CompressionNoContextTakeover, wsmw.CompressionOptions{}, "permessage-deflate; client_no_context_takeover; server_no_context_takeover"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				c, err := coder.Accept(w, r, &coder.AcceptOptions{CompressionMode: tc.mode})
				if err != nil {
					return
				}
				defer c.CloseNow()
				c.SetReadLimit(8 << 20)
				testkit.CoderEcho(r.Context(), c)
			}))
			defer ts.Close()
			c, n := dialCounting(t, testkit.WSURL(ts.URL), &tc.opts)
			if c.Extensions() != tc.want {
				t.Errorf("negotiated %q, want %q", c.Extensions(), tc.want)
			}
			exchange(t, c, msgs)
			checkCompressed(t, n, totalSize(msgs))
		})
	}
}

func TestDeflateInterop_OurClient_GorillaServer(t *testing.T) {
	msgs := mixedMessages()
	ts := httptest.NewServer(testkit.GorillaEchoHandler(websocket.Upgrader{EnableCompression: true}, nil))
	defer ts.Close()
	c, n := dialCounting(t, testkit.WSURL(ts.URL), &wsmw.CompressionOptions{})
	if want := "permessage-deflate; server_no_context_takeover; client_no_context_takeover"; c.Extensions() != want {
		t.Errorf("negotiated %q, want %q", c.Extensions(), want)
	}
	exchange(t, c, msgs)
	checkCompressed(t, n, totalSize(msgs))
}
