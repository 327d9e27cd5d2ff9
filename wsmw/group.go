package wsmw

import (
	"context"
	"net/http"
	"sync"
)

// Group tracks the connections its handlers serve, so that a server can end
// them all on shutdown: Shutdown sends each a close frame with a code (1001
// going away, or 1012 service restart) and waits for their handlers to return,
// as http.Server.Shutdown does for HTTP requests, which cannot see hijacked
// connections. The zero value is ready to use.
//
//	var conns wsmw.Group
//	r.With(wsmw.Middleware(conns.Handler(chat), nil)).Get("/chat", page)
//	...
//	conns.Shutdown(ctx, wsmw.StatusGoingAway, "server shutting down")
type Group struct {
	mu      sync.Mutex
	conns   map[*Conn]struct{}
	wg      sync.WaitGroup
	closing bool
	code    StatusCode
	reason  string
}

// Handler returns h with its connections tracked by g. A connection that
// arrives after Shutdown began is closed at once with Shutdown's code.
func (g *Group) Handler(h Handler) Handler {
	return func(c *Conn, r *http.Request) {
		if !g.add(c) {
			_ = c.Close(g.code, g.reason)
			return
		}
		defer g.remove(c)
		h(c, r)
	}
}

// add tracks c, unless g is shutting down.
func (g *Group) add(c *Conn) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closing {
		return false
	}
	if g.conns == nil {
		g.conns = make(map[*Conn]struct{})
	}
	g.conns[c] = struct{}{}
	g.wg.Add(1)
	return true
}

func (g *Group) remove(c *Conn) {
	g.mu.Lock()
	delete(g.conns, c)
	g.mu.Unlock()
	g.wg.Done()
}

// Len returns the number of connections whose handlers are running.
func (g *Group) Len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.conns)
}

// Shutdown closes every tracked connection with code and reason, each with a
// close handshake bounded by its close timeout, and waits until their
// handlers have returned. A handler reading the connection sees the peer's
// answer as a *CloseError and should return. If ctx ends first, the
// connections still open are closed without a handshake and ctx's error is
// returned. Shutdown may be called more than once; later calls only wait.
func (g *Group) Shutdown(ctx context.Context, code StatusCode, reason string) error {
	g.mu.Lock()
	if !g.closing {
		g.closing, g.code, g.reason = true, code, reason
	}
	conns := make([]*Conn, 0, len(g.conns))
	for c := range g.conns {
		conns = append(conns, c)
	}
	g.mu.Unlock()
	for _, c := range conns {
		go c.Close(g.code, g.reason)
	}
	done := make(chan struct{})
	go func() {
		g.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		g.mu.Lock()
		for c := range g.conns {
			c.CloseNow()
		}
		g.mu.Unlock()
		return ctx.Err()
	}
}
