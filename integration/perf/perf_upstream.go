package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// echoUpstream is the upstream of every variant: a gorilla/websocket server that
// sends each message back as it came. It reuses one buffer per connection and
// takes write buffers from a pool, so an idle connection holds little.
type echoUpstream struct {
	addr     string // plain ws://, what the proxies dial
	tlsAddr  string // wss:// with the harness's certificate, for direct under -tls
	srv      *http.Server
	upgrader websocket.Upgrader
	active   atomic.Int64
}

// startEcho starts the echo upstream on loopback; with cert, also on a
// second, TLS port, so that direct has the same client leg as the proxies.
func startEcho(cert *serverCert) (*echoUpstream, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	e := &echoUpstream{addr: ln.Addr().String()}
	e.upgrader = websocket.Upgrader{
		CheckOrigin:     func(*http.Request) bool { return true },
		WriteBufferPool: &sync.Pool{},
	}
	e.srv = &http.Server{Handler: e}
	go e.srv.Serve(ln)
	if cert != nil {
		tln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			e.close()
			return nil, err
		}
		e.tlsAddr = tln.Addr().String()
		go e.srv.Serve(tls.NewListener(tln, &tls.Config{Certificates: []tls.Certificate{cert.cert}, NextProtos: []string{"http/1.1"}}))
	}
	return e, nil
}

// clientAddr is where direct's clients connect: the TLS port if there is one.
func (e *echoUpstream) clientAddr() string {
	if e.tlsAddr != "" {
		return e.tlsAddr
	}
	return e.addr
}

// ServeHTTP upgrades the request and echoes every message until the session ends.
func (e *echoUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c, err := e.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	e.active.Add(1)
	defer e.active.Add(-1)
	defer c.Close()
	var buf bytes.Buffer
	for {
		mt, rd, err := c.NextReader()
		if err != nil {
			return // a close was answered by gorilla's close handler
		}
		buf.Reset()
		if _, err := buf.ReadFrom(rd); err != nil {
			return
		}
		if err := c.WriteMessage(mt, buf.Bytes()); err != nil {
			return
		}
	}
}

// close stops the upstream.
func (e *echoUpstream) close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	e.srv.Shutdown(ctx)
}

// clientWriteBuffer is the clients' write buffer: gorilla sends a client message
// in frames of at most this size, so every message up to 64 KiB is one frame.
const clientWriteBuffer = 64 << 10

// clientDialer is the one client used against every variant. Under -tls it
// accepts the harness's self-signed certificate.
var clientDialer = websocket.Dialer{
	WriteBufferSize:  clientWriteBuffer,
	WriteBufferPool:  &sync.Pool{},
	HandshakeTimeout: 10 * time.Second,
	TLSClientConfig:  &tls.Config{InsecureSkipVerify: true},
}

// framesUp is how many frames a client sends for a message of size bytes.
func framesUp(size int) int { return max(1, (size+clientWriteBuffer-1)/clientWriteBuffer) }

// dialAll opens n client connections to url, conc at a time.
func dialAll(url string, n, conc int) ([]*websocket.Conn, error) {
	conns := make([]*websocket.Conn, n)
	errs := make(chan error, n)
	sem := make(chan struct{}, conc)
	var wg sync.WaitGroup
	for i := range conns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, resp, err := clientDialer.Dial(url, nil)
			if err != nil {
				if resp != nil {
					err = fmt.Errorf("%w (HTTP %d)", err, resp.StatusCode)
				}
				errs <- err
				return
			}
			conns[i] = c
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
		return nil, err
	}
	return conns, nil
}

// closeGracefully sends a close frame and waits (bounded) for the peer's close,
// reading and dropping whatever echoes are still on the way. Only the goroutine
// that reads c may call it.
func closeGracefully(c *websocket.Conn) {
	deadline := time.Now().Add(5 * time.Second)
	sendClose(c, deadline)
	awaitClose(c, deadline)
}

// sendClose sends a 1000 close frame on c.
func sendClose(c *websocket.Conn, deadline time.Time) {
	_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), deadline)
}

// awaitClose reads c until the peer's close (or the deadline), then closes it.
func awaitClose(c *websocket.Conn, deadline time.Time) {
	_ = c.SetReadDeadline(deadline)
	drainUntilClose(c)
	c.Close()
}

// drainUntilClose reads and drops messages until c fails or closes.
func drainUntilClose(c *websocket.Conn) {
	for {
		_, r, err := c.NextReader()
		if err != nil {
			return
		}
		if _, err := io.Copy(io.Discard, r); err != nil {
			return
		}
	}
}

// echoOne sends payload on c and reads its echo (within 10 s).
func echoOne(c *websocket.Conn, payload []byte) error {
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	if err := c.WriteMessage(websocket.BinaryMessage, payload); err != nil {
		return err
	}
	_, r, err := c.NextReader()
	if err != nil {
		return err
	}
	n, err := io.Copy(io.Discard, r)
	if err == nil && n != int64(len(payload)) {
		err = errors.New("echo differs from the message sent")
	}
	return err
}

// closeAll closes every connection without a close handshake.
func closeAll(conns []*websocket.Conn) {
	for _, c := range conns {
		c.Close()
	}
}

// isClose reports whether err is the normal end of a connection.
func isClose(err error) bool {
	var ce *websocket.CloseError
	return errors.As(err, &ce)
}
