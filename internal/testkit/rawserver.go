package testkit

import (
	"bufio"
	"net"
	"sync"
	"testing"
)

// RawServer is an upstream on loopback that does the server handshake by hand
// and gives each connection to a handler, so that it can misbehave in any way.
// Every connection is tracked; Close (also run when the test ends) closes the
// listener and the connections and waits for the handlers.
type RawServer struct {
	URL string // ws://127.0.0.1:port

	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	count int
	done  bool
}

// StartRawServer starts a RawServer that completes the opening handshake (a
// request that is not an upgrade gets 400) and then runs serve with the
// connection in the server role (its Req is the request).
func StartRawServer(t testing.TB, serve func(c *Conn)) *RawServer {
	t.Helper()
	return startRaw(t, func(nc net.Conn, br *bufio.Reader) {
		if req, ok := acceptHandshake(nc, br); ok {
			c := NewConn(nc, br, false)
			c.Req = req
			serve(c)
		}
	})
}

// StartTCPServer starts a RawServer that answers nothing by itself: serve gets
// each connection before its handshake was read (to answer garbage, or never).
func StartTCPServer(t testing.TB, serve func(c *Conn)) *RawServer {
	t.Helper()
	return startRaw(t, func(nc net.Conn, br *bufio.Reader) { serve(NewConn(nc, br, false)) })
}

func startRaw(t testing.TB, serve func(nc net.Conn, br *bufio.Reader)) *RawServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &RawServer{URL: "ws://" + ln.Addr().String(), ln: ln, conns: make(map[net.Conn]struct{})}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			if s.done {
				s.mu.Unlock()
				nc.Close()
				return
			}
			s.conns[nc] = struct{}{}
			s.count++
			s.wg.Add(1)
			s.mu.Unlock()
			go func() {
				defer s.wg.Done()
				defer func() {
					nc.Close()
					s.mu.Lock()
					delete(s.conns, nc)
					s.mu.Unlock()
				}()
				serve(nc, bufio.NewReader(nc))
			}()
		}
	}()
	t.Cleanup(s.Close)
	return s
}

// Addr returns the server's host:port.
func (s *RawServer) Addr() string { return s.ln.Addr().String() }

// Connections returns how many connections the server accepted.
func (s *RawServer) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count
}

// Close closes the listener and every connection, then waits for the handlers.
// It may be called more than once.
func (s *RawServer) Close() {
	s.mu.Lock()
	s.done = true
	for nc := range s.conns {
		nc.Close()
	}
	s.mu.Unlock()
	s.ln.Close()
	s.wg.Wait()
}
