package wsmw

import (
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// streamConn is what a Conn runs on when its WebSocket is an HTTP/2 or HTTP/3
// stream (RFC 8441, RFC 9220): a net.Conn that reads the request body and
// writes the response, flushing every write, with deadlines and the end of
// the stream through http.ResponseControllers.
//
// Once the handshake's 200 is sent, the stream belongs to the WebSocket as a
// hijacked connection would: frames and write deadlines go to the server's
// own ResponseWriter, under any middleware's wrappers (which may keep state
// that is not safe for the concurrent writes and deadline changes a Conn
// makes, or reset deadlines on every write). Read deadlines go through the
// handler's ResponseWriter, so that a wrapper of the request body that owns
// its read deadlines (Caddy's idle timeouts) sees them.
//
// The ResponseWriter belongs to the handler: net/http's HTTP/2 server frees
// it when the handler returns, after which any use of it crashes. So the
// handler must close the Conn before it returns, and every use of the
// ResponseWriter here holds mu shared and checks closed; end, called once by
// the Conn's CloseNow, takes mu exclusively and sets closed.
type streamConn struct {
	body   io.ReadCloser
	w      http.ResponseWriter      // the server's own, under every wrapper
	wrc    *http.ResponseController // of w: flushes and write deadlines
	rrc    *http.ResponseController // of the handler's ResponseWriter: read deadlines
	h3     bool
	local  net.Addr
	remote net.Addr

	mu      sync.RWMutex // held shared while w is used, exclusively by end
	closed  bool         // guarded by mu: w must not be used any more
	writing atomic.Int32 // writes in flight, which may be blocked (flow control)
	once    sync.Once
	aborted atomic.Bool // the stream ended abruptly (see end)
}

func newStreamConn(w http.ResponseWriter, r *http.Request) *streamConn {
	network := "tcp"
	if r.ProtoMajor == 3 {
		network = "udp"
	}
	local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if local == nil {
		local = streamAddr{network, ""}
	}
	body := r.Body
	if body == nil {
		body = http.NoBody
	}
	inner := innermost(w)
	return &streamConn{
		body:   body,
		w:      inner,
		wrc:    http.NewResponseController(inner),
		rrc:    http.NewResponseController(w),
		h3:     r.ProtoMajor == 3,
		local:  local,
		remote: parseAddr(network, r.RemoteAddr),
	}
}

// innermost unwraps w (as http.ResponseController does) down to the
// ResponseWriter of the server itself.
func innermost(w http.ResponseWriter) http.ResponseWriter {
	for {
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return w
		}
		w = u.Unwrap()
	}
}

// Read reads the request body: the frames the peer sends.
func (s *streamConn) Read(p []byte) (int, error) { return s.body.Read(p) }

// Write writes p to the response and flushes it, so that it leaves at once.
func (s *streamConn) Write(p []byte) (int, error) {
	if err := s.use(); err != nil {
		return 0, err
	}
	defer s.mu.RUnlock()
	s.writing.Add(1)
	defer s.writing.Add(-1)
	n, err := s.w.Write(p)
	if err == nil {
		err = s.wrc.Flush()
	}
	return n, err
}

// writeBuffers writes the buffers of v with a single flush, so that a
// frame's header and payload leave together.
func (s *streamConn) writeBuffers(v net.Buffers) (int64, error) {
	if err := s.use(); err != nil {
		return 0, err
	}
	defer s.mu.RUnlock()
	s.writing.Add(1)
	defer s.writing.Add(-1)
	var n int64
	for _, b := range v {
		k, err := s.w.Write(b)
		n += int64(k)
		if err != nil {
			return n, err
		}
	}
	return n, s.wrc.Flush()
}

// use takes mu shared, unless the stream is closed: the ResponseWriter may be gone.
func (s *streamConn) use() error {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return net.ErrClosed
	}
	return nil
}

// SetReadDeadline sets the stream's read deadline. Once it has passed, the
// request body is closed for good (HTTP/2), as the Conn expects of any read timeout.
func (s *streamConn) SetReadDeadline(t time.Time) error {
	if err := s.use(); err != nil {
		return err
	}
	defer s.mu.RUnlock()
	return s.rrc.SetReadDeadline(t)
}

// SetWriteDeadline sets the stream's write deadline. Once it has passed, the
// stream is reset (HTTP/2) or its writes fail (HTTP/3).
func (s *streamConn) SetWriteDeadline(t time.Time) error {
	if err := s.use(); err != nil {
		return err
	}
	defer s.mu.RUnlock()
	return s.wrc.SetWriteDeadline(t)
}

func (s *streamConn) SetDeadline(t time.Time) error {
	if err := s.SetReadDeadline(t); err != nil {
		return err
	}
	return s.SetWriteDeadline(t)
}

func (s *streamConn) LocalAddr() net.Addr  { return s.local }
func (s *streamConn) RemoteAddr() net.Addr { return s.remote }

// Close ends the stream abruptly; the Conn's CloseNow calls end instead. It
// is what a failed write calls.
func (s *streamConn) Close() error {
	s.end(false)
	return nil
}

// end ends the Conn's use of the stream, once. RFC 8441 §5 and RFC 9220 §3
// map TCP's FIN to the end of the stream and its RST to a stream reset:
//   - orderly (the close handshake is complete): reads are woken up and
//     nothing more is written; the stream ends (END_STREAM, or the FIN bit on
//     HTTP/3) when the handler returns;
//   - abrupt: the stream is reset at once on HTTP/2 (a write deadline in the
//     past makes net/http send RST_STREAM); on HTTP/3 blocked writes fail,
//     the peer is told to stop sending (STOP_SENDING), and the handler resets
//     the rest by panicking with http.ErrAbortHandler (endStream).
//
// Operations still in flight are waited for: an abrupt end wakes them, and an
// orderly end with a write in flight (which may be stuck) becomes abrupt.
// After a complete close handshake nothing is written, so that is a write
// of the close frame itself that another goroutine did not wait for.
func (s *streamConn) end(orderly bool) {
	s.once.Do(func() {
		if orderly && s.writing.Load() == 0 {
			_ = s.rrc.SetReadDeadline(aLongTimeAgo)
		} else {
			s.abort()
		}
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
	})
}

// abort resets the stream as far as the handler can before it returns.
func (s *streamConn) abort() {
	s.aborted.Store(true)
	_ = s.wrc.SetWriteDeadline(aLongTimeAgo) // HTTP/2: RST_STREAM now; HTTP/3: blocked writes fail
	_ = s.body.Close()                       // blocked reads fail; HTTP/3: STOP_SENDING
}
