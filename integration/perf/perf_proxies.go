package main

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// tcpProxy is the baseline: accept, dial the upstream, copy both ways with
// io.Copy (which splices between TCP sockets on Linux). With buffer set, it
// copies through a buffer of that size in user space instead (no splice).
// Behind a TLS listener the client leg is a *tls.Conn: io.Copy then copies
// through its own 32 KiB buffer, and nothing can splice.
type tcpProxy struct {
	upstream string
	buffer   int
	active   atomic.Int64
}

// copyStream copies src to dst: with io.Copy (splice between two TCP
// sockets), or through a buffer of t.buffer bytes if set.
func (t *tcpProxy) copyStream(dst, src net.Conn) error {
	if t.buffer == 0 {
		_, err := io.Copy(dst, src)
		return err
	}
	// The wrappers hide ReadFrom and WriteTo, so io.CopyBuffer uses buf.
	_, err := io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, make([]byte, t.buffer))
	return err
}

// serve accepts connections on ln until it is closed.
func (t *tcpProxy) serve(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(5 * time.Millisecond) // EMFILE and the like
			continue
		}
		go t.handle(c)
	}
}

// handle proxies one connection: each direction's end is passed on as a
// half-close, an error closes both legs.
func (t *tcpProxy) handle(c net.Conn) {
	defer c.Close()
	u, err := net.Dial("tcp", t.upstream)
	if err != nil {
		return
	}
	defer u.Close()
	t.active.Add(1)
	defer t.active.Add(-1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t.pipe(u, c)
	}()
	t.pipe(c, u)
	<-done
}

// pipe copies src to dst, then half-closes dst; on an error it closes both.
func (t *tcpProxy) pipe(dst, src net.Conn) {
	if err := t.copyStream(dst, src); err != nil {
		dst.Close()
		src.Close()
		return
	}
	if hc, ok := dst.(interface{ CloseWrite() error }); ok {
		hc.CloseWrite()
	}
}

// gorillaProxy is a message-level proxy on gorilla/websocket with default
// settings: Upgrade the client, Dial the upstream, then ReadMessage→WriteMessage
// in one goroutine per direction.
type gorillaProxy struct {
	upstream string
	upgrader websocket.Upgrader
	dialer   websocket.Dialer
	active   atomic.Int64
}

// ServeHTTP dials the upstream, upgrades the client and pumps messages both ways.
func (g *gorillaProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	target := url.URL{Scheme: "ws", Host: g.upstream, Path: r.URL.Path, RawQuery: r.URL.RawQuery}
	uc, resp, err := g.dialer.Dial(target.String(), nil)
	if err != nil {
		status := http.StatusBadGateway
		if resp != nil {
			status = resp.StatusCode
		}
		http.Error(w, "upstream: "+err.Error(), status)
		return
	}
	cc, err := g.upgrader.Upgrade(w, r, nil)
	if err != nil {
		uc.Close()
		return
	}
	g.active.Add(1)
	defer g.active.Add(-1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		gorillaPump(cc, uc)
		uc.SetReadDeadline(time.Now().Add(5 * time.Second)) // the other pump ends soon
	}()
	gorillaPump(uc, cc)
	cc.SetReadDeadline(time.Now().Add(5 * time.Second))
	<-done
	cc.Close()
	uc.Close()
}

// gorillaPump forwards messages from src to dst; at the end it forwards src's
// close code (1001 if src vanished).
func gorillaPump(src, dst *websocket.Conn) {
	for {
		mt, p, err := src.ReadMessage()
		if err != nil {
			code, text := websocket.CloseGoingAway, ""
			var ce *websocket.CloseError
			if errors.As(err, &ce) && ce.Code != websocket.CloseNoStatusReceived {
				code, text = ce.Code, ce.Text
			}
			dst.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, text), time.Now().Add(time.Second))
			return
		}
		if err := dst.WriteMessage(mt, p); err != nil {
			return
		}
	}
}
