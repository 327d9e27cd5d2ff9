package wsmw

import (
	"crypto/tls"
	"net"
	"net/http"
	"net/netip"
)

// stream is the net.Conn of a Conn whose WebSocket is an HTTP/2 or HTTP/3
// stream: streamConn in the server role, clientStream in the client role.
type stream interface {
	net.Conn
	// writeBuffers writes the buffers of v, a frame's header and payload, together.
	writeBuffers(v net.Buffers) (int64, error)
	// end ends the stream, in order (the close handshake is complete) or
	// abruptly (reset), once; Close is end(false).
	end(orderly bool)
}

// streamAddr is the address of a stream's peer when it is not an IP:port.
type streamAddr struct{ network, addr string }

func (a streamAddr) Network() string { return a.network }
func (a streamAddr) String() string  { return a.addr }

// parseAddr turns a request's RemoteAddr into a net.Addr of network.
func parseAddr(network, s string) net.Addr {
	ap, err := netip.ParseAddrPort(s)
	switch {
	case err != nil:
		return streamAddr{network, s}
	case network == "udp":
		return net.UDPAddrFromAddrPort(ap)
	}
	return net.TCPAddrFromAddrPort(ap)
}

// quietReads reports whether reads from nc should wait in the reader's small
// head array instead of a pooled buffer (see quietFill): on a stream or a TLS
// connection, which have no RawConn to wait for readiness on, and where the
// second read of a frame costs no system call (the rest of the record or of
// the stream's data is buffered below).
func quietReads(nc net.Conn) bool {
	switch nc.(type) {
	case stream, *tls.Conn:
		return true
	}
	return false
}

// quietFill waits for the next bytes holding no pooled buffer: it reads at
// most a frame header's worth into r.head, then moves them into a buffer from
// the pool. An idle stream thus costs the Conn no read buffer, as a socket
// does with its readiness wait.
func (r *reader) quietFill() error {
	if h := testHookWait.Load(); h != nil {
		(*h)(false)
	}
	n, err := r.c.nc.Read(r.head[:])
	if n == 0 {
		return err // nil: a read of nothing, tried again
	}
	r.acquire()
	r.w = copy(r.bp[:], r.head[:n])
	return nil // an error that came with data comes again with the next read
}

// writev writes c.wv, header and payload of one frame, in one go: a vectored
// write on a socket, one flush on a stream.
func (c *Conn) writev() (int64, error) {
	if s, ok := c.nc.(stream); ok {
		return s.writeBuffers(c.wv)
	}
	return c.wv.WriteTo(c.nc)
}

// closeNetConn closes c's connection for CloseNow. A stream ends in order
// when the close handshake is complete: a close frame went each way.
func (c *Conn) closeNetConn() error {
	if s, ok := c.nc.(stream); ok {
		s.end(c.wsent.Load() && c.closeRecv.Load() != nil)
		return nil
	}
	return c.nc.Close()
}

// onStream reports whether c is the server side of an HTTP/2 or HTTP/3 stream.
func (c *Conn) onStream() bool {
	_, ok := c.nc.(*streamConn)
	return ok
}

// endStream is called, once c is closed, by the handler that served c,
// just before it returns. An HTTP/3 stream that ended abruptly is reset by
// panicking with http.ErrAbortHandler, which quic-go's server answers by
// resetting both directions of the stream (net/http's HTTP/2 server has
// already reset its stream in end).
func (c *Conn) endStream() {
	if s, ok := c.nc.(*streamConn); ok && s.h3 && s.aborted.Load() {
		panic(http.ErrAbortHandler)
	}
}
