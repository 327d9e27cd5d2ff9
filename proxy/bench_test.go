package proxy

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/wsgate/wsgate/wsmw"
)

// benchEcho is a raw WebSocket echo upstream: after a hand-made handshake it
// unmasks each frame from the proxy and sends it back unmasked. It allocates
// nothing per message, so the allocations measured are the proxy's.
func benchEcho(tb testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go benchEchoConn(c)
		}
	}()
	return "ws://" + ln.Addr().String()
}

func benchEchoConn(c net.Conn) {
	defer c.Close()
	br := bufio.NewReaderSize(c, 64<<10)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
		wsmw.AcceptKey(req.Header.Get("Sec-WebSocket-Key")))
	buf := make([]byte, 1<<20)
	out := make([]byte, 0, 1<<20+wsmw.MaxHeaderSize)
	for {
		h, err := benchReadHeader(br)
		if err != nil || h.OpCode == wsmw.OpClose {
			return
		}
		p := buf[:h.Length]
		if _, err := io.ReadFull(br, p); err != nil {
			return
		}
		wsmw.Mask(h.Mask, 0, p)
		out = wsmw.AppendHeader(out[:0], wsmw.Header{Fin: h.Fin, OpCode: h.OpCode, Length: h.Length})
		out = append(out, p...)
		if _, err := c.Write(out); err != nil {
			return
		}
	}
}

// BenchmarkForwardEcho sends a binary message through the proxy to an echo
// upstream and reads the echo back: two forwarded frames per iteration. The
// client and the upstream are hand-written and allocate nothing per message,
// so allocs/op is the proxy's (zero in steady state).
func BenchmarkForwardEcho(b *testing.B) {
	for _, size := range []int{128, 1 << 10, 16 << 10, 64 << 10} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			p, err := New(Config{Upstreams: []string{benchEcho(b)}})
			if err != nil {
				b.Fatal(err)
			}
			front := httptest.NewServer(p)
			defer front.Close()
			c, err := net.Dial("tcp", strings.TrimPrefix(front.URL, "http://"))
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
			br := bufio.NewReaderSize(c, 128<<10)
			resp, err := http.ReadResponse(br, nil)
			if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
				b.Fatalf("handshake: %v %v", resp, err)
			}
			key := [4]byte{1, 2, 3, 4}
			payload := make([]byte, size)
			wsmw.Mask(key, 0, payload)
			frame := append(wsmw.AppendHeader(nil, wsmw.Header{Fin: true, OpCode: wsmw.OpBinary, Masked: true, Mask: key, Length: int64(size)}), payload...)
			in := make([]byte, size)
			roundTrip := func() {
				if _, err := c.Write(frame); err != nil {
					b.Fatal(err)
				}
				h, err := benchReadHeader(br)
				if err != nil || h.Length != int64(size) {
					b.Fatalf("echo header %+v %v", h, err)
				}
				if _, err := io.ReadFull(br, in); err != nil {
					b.Fatal(err)
				}
			}
			for range 100 { // warm the pools
				roundTrip()
			}
			b.SetBytes(int64(2 * size))
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				roundTrip()
			}
			b.StopTimer()
			b.ReportMetric(float64(2*b.N)/b.Elapsed().Seconds(), "frames/s")
		})
	}
}

// benchReadHeader parses a frame header from br without allocating (unlike
// wsmw.ReadHeader, whose buffer escapes through io.ReadFull).
func benchReadHeader(br *bufio.Reader) (wsmw.Header, error) {
	b, err := br.Peek(2)
	if err != nil {
		return wsmw.Header{}, err
	}
	n := 2
	switch b[1] & 0x7F {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if b[1]&0x80 != 0 {
		n += 4
	}
	if b, err = br.Peek(n); err != nil {
		return wsmw.Header{}, err
	}
	h := wsmw.Header{Fin: b[0]&0x80 != 0, OpCode: wsmw.OpCode(b[0] & 0x0F), Masked: b[1]&0x80 != 0, Length: int64(b[1] & 0x7F)}
	i := 2
	switch h.Length {
	case 126:
		h.Length = int64(binary.BigEndian.Uint16(b[2:]))
		i += 2
	case 127:
		h.Length = int64(binary.BigEndian.Uint64(b[2:]))
		i += 8
	}
	if h.Masked {
		copy(h.Mask[:], b[i:i+4])
	}
	_, err = br.Discard(n)
	return h, err
}

// BenchmarkStackAfterMessage reports how much goroutine stack a session keeps
// once it has forwarded one message each way and gone idle again: the growth
// of the process's stacks from right after the handshakes to after one echo
// on each session, per session. The client is driven from the benchmark's
// goroutine and the upstream's goroutines have grown already during the
// handshake, so the growth is the proxy's: its two relay goroutines start with
// 2 KiB stacks, and a forwarding path deeper than they allow doubles them for
// the rest of the session (Go never shrinks a stack back to 2 KiB).
func BenchmarkStackAfterMessage(b *testing.B) {
	for _, tlsOn := range []bool{false, true} {
		for _, size := range []int{128, 1 << 10, 16 << 10, 64 << 10} {
			name := fmt.Sprint(size)
			if tlsOn {
				name = "tls/" + name
			}
			b.Run(name, func(b *testing.B) { benchStackAfterMessage(b, tlsOn, size) })
		}
	}
}

func benchStackAfterMessage(b *testing.B, tlsOn bool, size int) {
	const sessions = 200
	p, err := New(Config{Upstreams: []string{benchEcho(b)}})
	if err != nil {
		b.Fatal(err)
	}
	front := httptest.NewUnstartedServer(p)
	if tlsOn {
		front.StartTLS()
	} else {
		front.Start()
	}
	defer front.Close()
	payload := make([]byte, size)
	key := [4]byte{1, 2, 3, 4}
	frame := append(wsmw.AppendHeader(nil, wsmw.Header{Fin: true, OpCode: wsmw.OpBinary, Masked: true, Mask: key, Length: int64(size)}), payload...)
	in := make([]byte, size)
	var grown int64
	for range b.N {
		conns := make([]net.Conn, sessions)
		readers := make([]*bufio.Reader, sessions)
		for i := range conns {
			conns[i], readers[i] = benchHandshake(b, front)
		}
		time.Sleep(50 * time.Millisecond) // the sessions' goroutines start and wait
		before := stackInuse()
		for i, c := range conns {
			if _, err := c.Write(frame); err != nil {
				b.Fatal(err)
			}
			if _, err := benchReadHeader(readers[i]); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(readers[i], in); err != nil {
				b.Fatal(err)
			}
		}
		time.Sleep(50 * time.Millisecond)
		grown += stackInuse() - before
		for _, c := range conns {
			c.Close()
		}
	}
	b.ReportMetric(float64(grown)/float64(b.N*sessions), "stack-B/session")
}

// benchHandshake opens a raw client connection through the proxy served by
// front (over TLS if front is).
func benchHandshake(tb testing.TB, front *httptest.Server) (net.Conn, *bufio.Reader) {
	addr := front.Listener.Addr().String()
	var c net.Conn
	var err error
	if front.TLS != nil {
		c, err = tls.Dial("tcp", addr, front.Client().Transport.(*http.Transport).TLSClientConfig)
	} else {
		c, err = net.Dial("tcp", addr)
	}
	if err != nil {
		tb.Fatal(err)
	}
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	br := bufio.NewReaderSize(c, 128<<10)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		tb.Fatalf("handshake: %v %v", resp, err)
	}
	return c, br
}

// stackInuse returns the bytes of goroutine stacks in use.
func stackInuse() int64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.StackInuse)
}
