package wsmw

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/wsgate/wsgate/internal/streamtest"
)

// BenchmarkIdleStreamMemory reports heap+stack bytes held per idle WebSocket
// on an HTTP/2 stream (h2c), each with its handler blocked reading, next to
// the same blocked handler without a WebSocket (what net/http's HTTP/2 server
// holds for any open stream: its stream state, the request, the response
// writer with its 4 KiB buffer, and the handler's goroutine). The streams
// share one TCP connection, opened by a client built on x/net's framer that
// holds nothing per stream.
func BenchmarkIdleStreamMemory(b *testing.B) {
	streamtest.RequireXConnect(b)
	const streams = 1000
	run := func(b *testing.B, h http.Handler, ready <-chan func()) {
		srv := httptest.NewUnstartedServer(h)
		srv.Config.Protocols = new(http.Protocols)
		srv.Config.Protocols.SetUnencryptedHTTP2(true)
		srv.Config.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: streams + 1}
		srv.Start()
		defer srv.Close()
		heap0, stack0 := heapAndStacks()
		cl := newFramerClient(b, srv.Listener.Addr().String())
		defer cl.close()
		closers := make([]func(), 0, streams)
		for i := range streams {
			cl.openStream(b, uint32(2*i+1))
			closers = append(closers, <-ready)
		}
		cl.waitResponses(b, streams)
		time.Sleep(50 * time.Millisecond)
		heap1, stack1 := heapAndStacks()
		b.ReportMetric(float64(heap1-heap0)/streams, "heap-B/stream")
		b.ReportMetric(float64(stack1-stack0)/streams, "stack-B/stream")
		for _, c := range closers {
			c()
		}
	}
	b.Run("wsmw-middleware", func(b *testing.B) {
		for b.Loop() {
			ready := make(chan func(), streams)
			h := Middleware(func(c *Conn, r *http.Request) {
				ready <- func() { c.CloseNow() }
				c.nextFrame()
			}, nil)(http.NotFoundHandler())
			run(b, h, ready)
		}
	})
	b.Run("net-http-blocked-handler", func(b *testing.B) {
		for b.Loop() {
			ready := make(chan func(), streams)
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusOK)
				http.NewResponseController(w).Flush()
				ready <- func() { r.Body.Close() }
				var p [1]byte
				r.Body.Read(p[:])
			})
			run(b, h, ready)
		}
	})
}

// framerClient opens extended CONNECT streams on one h2c connection and
// reads the answers, keeping nothing per stream.
type framerClient struct {
	nc        net.Conn
	fr        *http2.Framer
	hbuf      bytes.Buffer
	enc       *hpack.Encoder
	responses chan uint32
	done      chan struct{}
}

func newFramerClient(b *testing.B, addr string) *framerClient {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	c := &framerClient{nc: nc, fr: http2.NewFramer(nc, nc), responses: make(chan uint32, 1<<16), done: make(chan struct{})}
	c.enc = hpack.NewEncoder(&c.hbuf)
	io.WriteString(nc, http2.ClientPreface)
	c.fr.WriteSettings()
	go c.read()
	return c
}

func (c *framerClient) openStream(b *testing.B, id uint32) {
	c.hbuf.Reset()
	for _, f := range [][2]string{
		{":method", "CONNECT"}, {":protocol", "websocket"}, {":scheme", "http"},
		{":path", "/"}, {":authority", "x"}, {"sec-websocket-version", "13"},
	} {
		c.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.hbuf.Bytes(), EndHeaders: true}); err != nil {
		b.Fatal(err)
	}
}

// read answers the server's settings and counts the streams it answered.
func (c *framerClient) read() {
	defer close(c.done)
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				c.fr.WriteSettingsAck()
			}
		case *http2.HeadersFrame:
			c.responses <- f.StreamID
		case *http2.PingFrame:
			if !f.IsAck() {
				c.fr.WritePing(true, f.Data)
			}
		}
	}
}

func (c *framerClient) waitResponses(b *testing.B, n int) {
	for range n {
		select {
		case <-c.responses:
		case <-time.After(10 * time.Second):
			b.Fatal("the server did not answer every stream")
		}
	}
}

func (c *framerClient) close() {
	c.nc.Close()
	<-c.done
}
