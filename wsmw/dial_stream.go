package wsmw

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// method is the handshake request's method: CONNECT on a stream, GET otherwise.
func (cfg *DialConfig) method() string {
	if cfg.HTTP2 != nil || cfg.HTTP3 != nil {
		return http.MethodConnect
	}
	return http.MethodGet
}

// streamHandshake is one attempt of Dial as an extended CONNECT (RFC 8441 §5,
// RFC 9220 §3) through cfg.HTTP2 or cfg.HTTP3: the request carries
// Sec-WebSocket-Version, subprotocols and extensions but no key, a 200
// answers it, and the frames flow on the request's stream: written into its
// body, read from the response's.
func (t *dialTarget) streamHandshake(ctx context.Context, cfg *DialConfig, authz string) (*Conn, *http.Response, error) {
	rt, h3 := cfg.HTTP2, false
	if rt == nil {
		rt, h3 = cfg.HTTP3, true
	}
	// The stream outlives ctx, which bounds the handshake only; cancel resets it.
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s := &clientStream{cancel: cancel}
	req, pw := t.connectRequest(sctx, cfg, authz, h3, s)
	abandon := func() {
		cancel()
		pw.Close()
	}
	stop := context.AfterFunc(ctx, cancel)
	resp, err := rt.RoundTrip(req)
	if !stop() && err == nil {
		resp.Body.Close()
		err = ctx.Err()
	}
	if err != nil {
		abandon()
		return nil, nil, t.netErr(ctx, "extended CONNECT", err)
	}
	if resp.StatusCode != http.StatusOK {
		err := refused(resp, orDefault(cfg.MaxErrorBody, DefaultMaxErrorBody))
		abandon()
		return nil, resp, err
	}
	cc := connConfig{maxFrame: cfg.MaxFrameSize, maxMessage: cfg.MaxMessageSize, closeTimeout: cfg.CloseTimeout}
	if cc, err = checkNegotiation(resp, cfg, cc); err != nil {
		abandon()
		resp.Body.Close()
		return nil, resp, err
	}
	s.body, s.pw = resp.Body, pw
	if s.remote == nil {
		s.remote, s.local = streamAddr{"tcp", t.addr}, streamAddr{"tcp", ""}
	}
	c := newConn(s, nil, true, cc)
	s.linger = c.closeTimeout
	return c, resp, nil
}

// connectRequest builds the extended CONNECT request of one attempt: its body
// is a pipe, whose writer the Conn writes its frames to. The connection's
// addresses are recorded in s when the transport reports them.
func (t *dialTarget) connectRequest(ctx context.Context, cfg *DialConfig, authz string, h3 bool, s *clientStream) (*http.Request, *io.PipeWriter) {
	u := *t.u
	u.User = nil
	u.Scheme = "http"
	if t.secure {
		u.Scheme = "https"
	}
	trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		if info.Conn != nil {
			s.local, s.remote = info.Conn.LocalAddr(), info.Conn.RemoteAddr()
		}
	}}
	pr, pw := io.Pipe()
	req := (&http.Request{
		Method:        http.MethodConnect,
		URL:           &u,
		Header:        make(http.Header),
		Body:          pr,
		ContentLength: -1,
		Host:          t.host,
	}).WithContext(httptrace.WithClientTrace(ctx, trace))
	if h3 {
		req.Proto = "websocket" // quic-go's http3 takes :protocol from Proto
	} else {
		req.Header.Set(":protocol", "websocket") // x/net's http2 takes it from the header
	}
	for k, vs := range cfg.Header {
		if !strings.EqualFold(k, "Host") {
			req.Header[http.CanonicalHeaderKey(k)] = vs
		}
	}
	req.Header.Set("Sec-WebSocket-Version", "13")
	if len(cfg.Subprotocols) > 0 {
		req.Header.Set("Sec-WebSocket-Protocol", strings.Join(cfg.Subprotocols, ", "))
	}
	if offers := cfg.extensionOffers(); len(offers) > 0 {
		req.Header.Set("Sec-WebSocket-Extensions", FormatExtensions(offers))
	}
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	return req, pw
}

// clientStream is the net.Conn of a Conn dialed over an HTTP/2 or HTTP/3
// stream: frames are written into the request body's pipe and read from the
// response body. Deadlines are timers that reset the stream when they pass
// (a timed-out read or write breaks a Conn anyway); the read or write they
// interrupt returns os.ErrDeadlineExceeded.
type clientStream struct {
	body          io.ReadCloser
	pw            *io.PipeWriter
	cancel        context.CancelFunc // resets the stream (RST_STREAM, or the HTTP/3 equivalent)
	local, remote net.Addr
	linger        time.Duration // how long an orderly end waits for the server's end of the stream

	mu             sync.Mutex
	rtimer, wtimer *time.Timer
	rexp, wexp     atomic.Bool // a deadline passed
	once           sync.Once
}

func (s *clientStream) Read(p []byte) (int, error) {
	n, err := s.body.Read(p)
	if err != nil && s.rexp.Load() {
		err = fmt.Errorf("%w: %w", os.ErrDeadlineExceeded, err)
	}
	return n, err
}

func (s *clientStream) Write(p []byte) (int, error) {
	n, err := s.pw.Write(p)
	if err != nil && s.wexp.Load() {
		err = fmt.Errorf("%w: %w", os.ErrDeadlineExceeded, err)
	}
	return n, err
}

func (s *clientStream) writeBuffers(v net.Buffers) (int64, error) {
	var n int64
	for _, b := range v {
		k, err := s.Write(b)
		n += int64(k)
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func (s *clientStream) SetReadDeadline(t time.Time) error {
	s.setDeadline(&s.rtimer, &s.rexp, t)
	return nil
}

func (s *clientStream) SetWriteDeadline(t time.Time) error {
	s.setDeadline(&s.wtimer, &s.wexp, t)
	return nil
}

func (s *clientStream) SetDeadline(t time.Time) error {
	s.SetReadDeadline(t)
	return s.SetWriteDeadline(t)
}

// setDeadline arms timer to reset the stream at t (zero: never), recording in
// expired that it did.
func (s *clientStream) setDeadline(timer **time.Timer, expired *atomic.Bool, t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if *timer != nil {
		(*timer).Stop()
		*timer = nil
	}
	if t.IsZero() {
		return
	}
	*timer = time.AfterFunc(time.Until(t), func() {
		expired.Store(true)
		s.cancel()
	})
}

func (s *clientStream) LocalAddr() net.Addr  { return s.local }
func (s *clientStream) RemoteAddr() net.Addr { return s.remote }

// Close resets the stream.
func (s *clientStream) Close() error {
	s.end(false)
	return nil
}

// end ends the stream, once: abruptly by resetting it, in order by ending the
// request body (END_STREAM, or FIN) and reading the response to its end, for
// at most the close timeout (then it is reset), so that neither side resets a
// stream whose WebSocket closed cleanly.
func (s *clientStream) end(orderly bool) {
	s.once.Do(func() {
		s.SetDeadline(time.Time{})
		if orderly {
			s.pw.Close()
			t := time.AfterFunc(s.linger, s.cancel)
			_, _ = io.Copy(io.Discard, s.body)
			t.Stop()
		}
		s.cancel()
		s.pw.CloseWithError(net.ErrClosed)
		s.body.Close()
	})
}
