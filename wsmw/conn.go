package wsmw

import (
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Default limits and timeouts; each can be changed per connection.
const (
	// DefaultMaxFrameSize bounds one frame's payload (16 MiB). Larger frames fail with 1009.
	DefaultMaxFrameSize = 16 << 20
	// DefaultMaxMessageSize bounds one message's payload across its fragments (32 MiB); 1009 beyond.
	DefaultMaxMessageSize = 32 << 20
	// DefaultCloseTimeout bounds the wait for the peer's close frame in the close handshake.
	DefaultCloseTimeout = 5 * time.Second
)

// Conn is one WebSocket connection, in the server or client role, from Upgrade,
// Middleware or Dial. It is used at one of two levels: messages (Read, Write) or
// frames (NextFrame, WriteFrame), plus Ping and the close handshake (Close).
//
// One goroutine may read while any number of goroutines write: every frame is
// written whole under a lock, so control frames can go between the fragments
// of a message but never inside a frame.
type Conn struct {
	nc     net.Conn
	rc     syscall.RawConn // set when reads can wait for readiness without holding a buffer
	client bool

	subprotocol string
	extensions  string
	rsvAllowed  byte // RSV bits a negotiated extension may set

	pmd *deflateState // permessage-deflate (compress.go); nil when off

	maxFrame     int64
	maxMessage   int64
	closeTimeout time.Duration

	rd     reader
	readDL atomic.Int64 // the read deadline set with SetReadDeadline, in unix nanoseconds; 0 if none

	// Write side.
	wmu      sync.Mutex // held while one frame is written
	msgMu    sync.Mutex // held while a message is compressed and written (the compressor's state)
	whdr     [MaxHeaderSize]byte
	wbufs    [2][]byte
	wv       net.Buffers
	wsent    atomic.Bool // a close frame was written (or is being written); set under wmu
	writeErr error       // sticky: a failed write leaves the stream unusable
	batch    *batch      // frames gathered by forwardFrame, nil when none (forward.go)

	pingHandler func([]byte) error
	pongHandler func([]byte) error

	// Close state.
	closeRecv   atomic.Pointer[CloseError] // the peer's close, once received
	peerDone    chan struct{}              // closed when the reader sees a close frame or a read error
	peerOnce    sync.Once
	closed      atomic.Bool
	closeNCOnce sync.Once
	failed      atomic.Pointer[FailError] // set when this end failed the connection (fail.go)
	lingering   chan struct{}             // closed when a failed connection's wait for the peer's close ended
}

// connConfig is what both roles configure on a new Conn.
type connConfig struct {
	maxFrame, maxMessage int64
	closeTimeout         time.Duration
	subprotocol          string
	extensions           string
	rsvAllowed           byte
	pmd                  *deflateState
}

func orDefault[T int64 | time.Duration](v, d T) T {
	if v > 0 {
		return v
	}
	return d
}

// newConn wraps an established, handshaken connection. buffered holds bytes
// already read past the handshake; they are the start of the frame stream.
func newConn(nc net.Conn, buffered []byte, client bool, cfg connConfig) *Conn {
	c := &Conn{
		nc:           nc,
		client:       client,
		subprotocol:  cfg.subprotocol,
		extensions:   cfg.extensions,
		rsvAllowed:   cfg.rsvAllowed,
		pmd:          cfg.deflate(client),
		maxFrame:     orDefault(cfg.maxFrame, DefaultMaxFrameSize),
		maxMessage:   orDefault(cfg.maxMessage, DefaultMaxMessageSize),
		closeTimeout: orDefault(cfg.closeTimeout, DefaultCloseTimeout),
		peerDone:     make(chan struct{}),
	}
	c.rd.init(c, buffered)
	return c
}

// Subprotocol returns the negotiated subprotocol, or "" if none.
func (c *Conn) Subprotocol() string { return c.subprotocol }

// Extensions returns the negotiated Sec-WebSocket-Extensions value, or "" if none.
func (c *Conn) Extensions() string { return c.extensions }

// LocalAddr returns the local network address.
func (c *Conn) LocalAddr() net.Addr { return c.nc.LocalAddr() }

// RemoteAddr returns the peer's network address.
func (c *Conn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// SetReadDeadline sets the deadline for reads. A read that times out breaks the connection.
func (c *Conn) SetReadDeadline(t time.Time) error {
	if c.rd.tls != nil {
		return c.rd.tls.setDeadline(c.nc, t)
	}
	var ns int64
	if !t.IsZero() {
		ns = max(t.UnixNano(), 1)
	}
	c.readDL.Store(ns)
	return c.nc.SetReadDeadline(t)
}

// SetWriteDeadline sets the deadline for writes. A write that times out breaks the connection.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.nc.SetWriteDeadline(t) }

// SetPingHandler sets the function called for each received ping, from the reading
// goroutine. The default (and nil) answers with a pong carrying the same payload.
// A proxy that forwards pings installs a handler that does nothing.
func (c *Conn) SetPingHandler(h func(payload []byte) error) { c.pingHandler = h }

// SetPongHandler sets the function called for each received pong; the default ignores pongs.
func (c *Conn) SetPongHandler(h func(payload []byte) error) { c.pongHandler = h }

// closeReceived returns the close frame the peer sent, or nil if none arrived yet.
func (c *Conn) closeReceived() *CloseError { return c.closeRecv.Load() }

// signalPeerDone records that no more frames will come from the peer.
func (c *Conn) signalPeerDone() {
	c.peerOnce.Do(func() { close(c.peerDone) })
}

// CloseNow closes the network connection without a close handshake. It is safe to
// call more than once and from any goroutine; later calls return nil.
func (c *Conn) CloseNow() error {
	var err error
	c.closeNCOnce.Do(func() {
		c.closed.Store(true)
		err = c.closeNetConn()
		c.signalPeerDone()
		c.releaseBuffers()
	})
	return err
}

// releaseBuffers gives a closed connection's pooled buffers back, unless a
// read or a write holds them at the moment: the read buffer that still holds
// the last frame read (the peer's close, typically), and a write batch. When
// many connections close at once, their buffers then serve each other
// instead of each waiting for the garbage collector.
func (c *Conn) releaseBuffers() {
	if c.rd.mu.TryLock() {
		c.rd.drop()
		c.rd.mu.Unlock()
	}
	if c.wmu.TryLock() {
		if c.batch != nil {
			c.batch.n, c.batch.w, c.batch.start = 0, 0, 0
			c.putBatch()
		}
		c.wmu.Unlock()
	}
}

// closeSent reports whether a close frame has been written on c.
func (c *Conn) closeSent() bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.wsent.Load()
}
