package wsmw

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"github.com/wsgate/wsgate/internal/streamtest"
)

var benchSizes = []int{128, 1 << 10, 64 << 10}

func BenchmarkHeaderEncode(b *testing.B) {
	h := Header{Fin: true, OpCode: OpBinary, Masked: true, Mask: [4]byte{1, 2, 3, 4}, Length: 70000}
	var a [MaxHeaderSize]byte
	b.ReportAllocs()
	for b.Loop() {
		AppendHeader(a[:0], h)
	}
}

func BenchmarkHeaderParse(b *testing.B) {
	enc := AppendHeader(nil, Header{Fin: true, OpCode: OpBinary, Masked: true, Mask: [4]byte{1, 2, 3, 4}, Length: 70000})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parseHeader(enc); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMask(b *testing.B) {
	key := [4]byte{0xa1, 0xb2, 0xc3, 0xd4}
	for _, n := range []int{16, 128, 1 << 10, 64 << 10} {
		p := make([]byte, n)
		b.Run(fmt.Sprintf("word/%d", n), func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				Mask(key, 1, p)
			}
		})
		b.Run(fmt.Sprintf("bytewise/%d", n), func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				naiveMask(key, 1, p)
			}
		})
	}
}

func BenchmarkUTF8(b *testing.B) {
	inputs := map[string][]byte{
		"ascii": bytes.Repeat([]byte("hello, world. "), 1<<12),
		"mixed": bytes.Repeat([]byte("héllo wörld, こんにちは "), 1<<10),
	}
	for name, p := range inputs {
		b.Run("wsmw/"+name, func(b *testing.B) {
			b.SetBytes(int64(len(p)))
			for b.Loop() {
				var v utf8Validator
				if !v.write(p) {
					b.Fatal("invalid")
				}
			}
		})
		b.Run("stdlib/"+name, func(b *testing.B) {
			b.SetBytes(int64(len(p)))
			for b.Loop() {
				if !utf8.Valid(p) {
					b.Fatal("invalid")
				}
			}
		})
	}
}

// loopReader replays the same bytes forever: frame reads without I/O cost.
type loopReader struct {
	data []byte
	off  int
}

func (l *loopReader) Read(p []byte) (int, error) {
	n := copy(p, l.data[l.off:])
	l.off = (l.off + n) % len(l.data)
	return n, nil
}

// maskedFrame is a final client frame of n bytes 'a'.
func maskedFrame(op OpCode, n int) []byte {
	return keyedFrame([4]byte{9, 8, 7, 6}, true, op, bytes.Repeat([]byte{'a'}, n))
}

// BenchmarkReadFrame reads masked frames (server role) from memory: parsing,
// unmasking and UTF-8 checking, with the payload read into a reused buffer.
func BenchmarkReadFrame(b *testing.B) {
	for _, n := range benchSizes {
		for _, op := range []OpCode{OpBinary, OpText} {
			b.Run(fmt.Sprintf("%v/%d", op, n), func(b *testing.B) {
				c := newConn(&memConn{r: &loopReader{data: maskedFrame(op, n)}}, nil, false, connConfig{})
				buf := make([]byte, 0, n)
				b.SetBytes(int64(n))
				b.ReportAllocs()
				for b.Loop() {
					if _, p, err := c.appendMessage(buf[:0]); err != nil || len(p) != n {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkWriteFrame writes frames to a sink, in both roles.
func BenchmarkWriteFrame(b *testing.B) {
	for _, n := range benchSizes {
		p := bytes.Repeat([]byte{'a'}, n)
		for _, client := range []bool{false, true} {
			role := "server"
			if client {
				role = "client"
			}
			b.Run(fmt.Sprintf("%s/%d", role, n), func(b *testing.B) {
				c := newConn(&memConn{r: strings.NewReader("")}, nil, client, connConfig{})
				b.SetBytes(int64(n))
				b.ReportAllocs()
				for b.Loop() {
					if err := c.writeMessage(OpBinary, p); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkRoundTripTCP sends a message from a client Conn to a server Conn
// over loopback TCP and reads it back: what one echoed message costs end to end.
func BenchmarkRoundTripTCP(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			a, s := rawTCPPair(b)
			client := newConn(a, nil, true, connConfig{})
			server := newConn(s, nil, false, connConfig{})
			defer client.CloseNow()
			defer server.CloseNow()
			go func() {
				buf := make([]byte, 0, n)
				for {
					op, p, err := server.appendMessage(buf[:0])
					if err != nil {
						return
					}
					if server.writeMessage(op, p) != nil {
						return
					}
				}
			}()
			msg := bytes.Repeat([]byte{'a'}, n)
			buf := make([]byte, 0, n)
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				if err := client.writeMessage(OpBinary, msg); err != nil {
					b.Fatal(err)
				}
				if _, _, err := client.appendMessage(buf[:0]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// heapAndStacks returns live heap and goroutine stack bytes after a full GC.
func heapAndStacks() (heap, stack uint64) {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc, m.StackInuse
}

// BenchmarkIdleConnMemory reports heap+stack bytes held per idle server-side
// connection, each with a goroutine blocked reading, for wsmw and, as the
// baseline of the same run, gorilla/websocket with its default buffers.
// The TCP sockets' own (kernel) memory is not counted.
func BenchmarkIdleConnMemory(b *testing.B) {
	const conns = 1000
	run := func(b *testing.B, serve func(w http.ResponseWriter, r *http.Request, ready chan<- func())) {
		ready := make(chan func(), conns)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			serve(w, r, ready)
		}))
		defer srv.Close()
		url := "ws" + strings.TrimPrefix(srv.URL, "http")
		clients := make([]net.Conn, 0, conns)
		closers := make([]func(), 0, conns)
		// Dial with raw handshakes so the client side allocates as little as possible.
		heap0, stack0 := heapAndStacks()
		for range conns {
			nc, err := net.Dial("tcp", strings.TrimPrefix(url, "ws://"))
			if err != nil {
				b.Fatal(err)
			}
			fmt.Fprintf(nc, "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
			var resp [129]byte
			if _, err := io.ReadAtLeast(nc, resp[:], 100); err != nil {
				b.Fatal(err)
			}
			clients = append(clients, nc)
			closers = append(closers, <-ready)
		}
		time.Sleep(50 * time.Millisecond)
		heap1, stack1 := heapAndStacks()
		if f := os.Getenv("WSMW_HEAPPROF"); f != "" {
			out, _ := os.Create(f + "." + strings.ReplaceAll(b.Name(), "/", "_"))
			pprof.Lookup("heap").WriteTo(out, 0)
			out.Close()
		}
		b.ReportMetric(float64(heap1-heap0)/conns, "heap-B/conn")
		b.ReportMetric(float64(stack1-stack0)/conns, "stack-B/conn")
		for _, c := range clients {
			c.Close()
		}
		for _, c := range closers {
			c()
		}
	}
	b.Run("wsmw-upgrade-in-handler", func(b *testing.B) {
		for b.Loop() {
			run(b, func(w http.ResponseWriter, r *http.Request, ready chan<- func()) {
				c, err := Upgrade(w, r, nil)
				if err != nil {
					return
				}
				ready <- func() { c.CloseNow() }
				c.nextFrame()
			})
		}
	})
	// Middleware runs the handler in its own goroutine and returns from ServeHTTP,
	// so net/http releases the buffers it keeps per connection.
	b.Run("wsmw-middleware", func(b *testing.B) {
		for b.Loop() {
			var ready chan<- func()
			mw := Middleware(func(c *Conn, r *http.Request) {
				ready <- func() { c.CloseNow() }
				c.nextFrame()
			}, nil)(http.NotFoundHandler())
			run(b, func(w http.ResponseWriter, r *http.Request, rc chan<- func()) {
				ready = rc
				mw.ServeHTTP(w, r)
			})
		}
	})
	b.Run("gorilla", func(b *testing.B) {
		for b.Loop() {
			run(b, func(w http.ResponseWriter, r *http.Request, ready chan<- func()) {
				var u websocket.Upgrader
				c, err := u.Upgrade(w, r, nil)
				if err != nil {
					return
				}
				ready <- func() { c.Close() }
				c.NextReader()
			})
		}
	})
}

// TestIdleConnHoldsNoReadBuffer checks that a connection gives its read buffer
// back to the pool before blocking for the next frame, on TCP and TLS, and
// (for contrast) that the fallback path for other net.Conns does hold one.
func TestIdleConnHoldsNoReadBuffer(t *testing.T) {
	for _, tc := range []struct {
		name string
		pair func(testing.TB) (net.Conn, net.Conn)
		want bool // holds a buffer while blocked
	}{
		{"tcp", rawTCPPair, false},
		{"tls", tlsPair, false},
		{"pipe", func(testing.TB) (net.Conn, net.Conn) { return net.Pipe() }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, s := tc.pair(t)
			client := newConn(a, nil, true, connConfig{})
			server := newConn(s, nil, false, connConfig{})
			defer client.CloseNow()
			defer server.CloseNow()
			go client.writeMessage(OpText, []byte("hello"))
			if _, p, err := server.readMessage(); err != nil || string(p) != "hello" {
				t.Fatalf("read: %q %v", p, err)
			}
			waits := make(chan bool, 16)
			hook := func(holds bool) { waits <- holds }
			testHookWait.Store(&hook)
			defer testHookWait.Store(nil)
			done := make(chan struct{})
			go func() {
				defer close(done)
				server.nextFrame()
			}()
			if holds := <-waits; holds != tc.want {
				t.Fatalf("holds a read buffer while waiting for a frame: %v, want %v", holds, tc.want)
			}
			client.CloseNow()
			<-done
		})
	}
}

// tlsPair returns the two ends of a TLS connection over loopback TCP, the
// handshake done.
func tlsPair(t testing.TB) (net.Conn, net.Conn) {
	cert, pool := streamtest.SelfSigned(t)
	a, s := rawTCPPair(t)
	client := tls.Client(a, &tls.Config{RootCAs: pool, ServerName: "localhost"})
	server := tls.Server(s, &tls.Config{Certificates: []tls.Certificate{cert}})
	errc := make(chan error, 1)
	go func() { errc <- server.Handshake() }()
	if err := client.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	return client, server
}

// TestCloseReleasesReadBuffer: the read buffer goes back to the pool as soon
// as the peer's close is read (bytes after it are never read), and CloseNow
// gives back one that still holds unread bytes, so that connections closing
// together do not each keep 4 KiB until the garbage collector runs.
func TestCloseReleasesReadBuffer(t *testing.T) {
	t.Run("peer's close", func(t *testing.T) {
		a, s := rawTCPPair(t)
		server := newConn(s, nil, false, connConfig{})
		defer server.CloseNow()
		a.Write(concat(clientFrame(OpText, "hi"), clientFrame(OpClose, closeBody(1000, "bye")), clientFrame(OpText, "after")))
		if _, p, err := server.readMessage(); err != nil || string(p) != "hi" {
			t.Fatalf("read %q %v", p, err)
		}
		if _, _, err := server.readMessage(); CloseStatus(err) != StatusNormalClosure {
			t.Fatalf("read %v, want the peer's 1000", err)
		}
		if server.rd.bp != nil {
			t.Fatal("the reader still holds its buffer after the peer's close")
		}
	})
	t.Run("CloseNow", func(t *testing.T) {
		a, s := rawTCPPair(t)
		server := newConn(s, nil, false, connConfig{})
		a.Write(concat(clientFrame(OpText, "one"), clientFrame(OpText, "two")))
		time.Sleep(20 * time.Millisecond) // both frames are in the socket: one read takes them
		if _, p, err := server.readMessage(); err != nil || string(p) != "one" {
			t.Fatalf("read %q %v", p, err)
		}
		if server.rd.bp == nil {
			t.Fatal("test premise: the second frame is buffered")
		}
		server.CloseNow()
		if server.rd.bp != nil {
			t.Fatal("CloseNow left the read buffer with the connection")
		}
	})
}
