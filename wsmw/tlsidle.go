//go:build unix

package wsmw

import (
	"crypto/tls"
	"errors"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// tlsIdle lets a reader on a TLS connection wait for its next frame on the
// TCP socket below instead of inside crypto/tls.
//
// A read through crypto/tls waits deep in its call chain and may be answered
// from records the TLS layer has already buffered, so a goroutine that waits
// there needs a 4 KiB stack, and one cannot simply wait on the socket. A
// proxy's relay goroutine that is about to wait therefore calls probe (in
// relay.Idle): it reads, with a deadline in the past, what the TLS layer
// holds. If it holds nothing, the next read waits until the socket is
// readable (waitSocket), which a fresh goroutine does on its 2 KiB stack.
// Because the probe uses the read deadline, the connection's own deadline is
// kept here and restored after it.
type tlsIdle struct {
	under      syscall.RawConn // the TCP connection below
	mu         sync.Mutex      // guards deadline and probing
	deadline   time.Time       // the read deadline the Conn's user set last
	probing    bool            // the probe's deadline is in place
	waitSocket bool            // the next read waits for the socket first (under the read lock)
	peek       func(fd uintptr) bool
}

// newTLSIdle returns the idle waiting of nc if it is TLS over TCP, or nil.
func newTLSIdle(nc net.Conn) *tlsIdle {
	tc, ok := nc.(*tls.Conn)
	if !ok {
		return nil
	}
	under := rawConnOf(tc.NetConn())
	if under == nil {
		return nil
	}
	t := &tlsIdle{under: under}
	t.peek = t.readable
	return t
}

// setDeadline sets nc's read deadline, unless a probe's is in place: then it
// takes effect when the probe ends.
func (t *tlsIdle) setDeadline(nc net.Conn, d time.Time) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.deadline = d
	if t.probing {
		return nil
	}
	return nc.SetReadDeadline(d)
}

// probe reads, without waiting for the network, what the TLS layer holds. It
// reports whether bytes came (now buffered in r) or the read failed (the next
// read reports it). Otherwise nothing is buffered below r, and r's next read
// waits for the socket. The caller holds the read lock.
func (r *reader) probe(t *tlsIdle) bool {
	nc := r.c.nc
	t.mu.Lock()
	t.probing = true
	_ = nc.SetReadDeadline(aLongTimeAgo)
	t.mu.Unlock()
	n, err := nc.Read(r.head[:])
	t.mu.Lock()
	t.probing = false
	_ = nc.SetReadDeadline(t.deadline)
	t.mu.Unlock()
	if n > 0 {
		r.acquire()
		r.w = copy(r.bp[:], r.head[:n])
		return true
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	t.waitSocket = true
	return false
}

// wait waits until the socket below has bytes to read, without reading them.
func (t *tlsIdle) wait() error {
	t.waitSocket = false
	return t.under.Read(t.peek)
}

// readable is wait's RawConn callback: it peeks at the socket, so that bytes
// that arrived before the wait began count as readable.
func (t *tlsIdle) readable(fd uintptr) bool {
	var b [1]byte
	for {
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch err {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		return true // bytes, the end of the stream, or an error: the TLS read will tell
	}
}
