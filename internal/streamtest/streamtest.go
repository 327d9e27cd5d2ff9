// Package streamtest serves handlers over HTTP/2 and HTTP/3 for the module's
// tests of WebSockets on streams (RFC 8441, RFC 9220), and opens raw
// extended CONNECT streams to them. It knows nothing of WebSocket framing.
//
// net/http's HTTP/2 server takes extended CONNECT only when the process
// started with GODEBUG=http2xconnect=1: a test package's TestMain calls
// xconnect.Reexec first, and Start skips HTTP/2 tests when it is off.
package streamtest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"golang.org/x/net/http2"

	"github.com/wsgate/wsgate/internal/selfsigned"
	"github.com/wsgate/wsgate/internal/xconnect"
)

// Protos are the protocols a handler is served over: HTTP/2 without TLS
// (prior knowledge), HTTP/2 over TLS, and HTTP/3 (quic-go).
var Protos = []string{"h2c", "h2", "h3"}

// Server serves a handler over one protocol until the test ends.
type Server struct {
	Proto string // "h2c", "h2" or "h3"
	URL   string // ws://host:port (h2c) or wss://host:port
	// HTTP2 is an x/net HTTP/2 transport to the server (h2c, h2): net/http's
	// Transport refuses the :protocol pseudo-header. HTTP3 is quic-go's (h3).
	HTTP2 *http2.Transport
	HTTP3 *http3.Transport
	// CertPool trusts the server's certificate (h2, h3).
	CertPool *x509.CertPool
}

func init() {
	// quic-go warns on every server when it cannot enlarge the UDP buffers; tests do not care.
	os.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
}

// Start serves h over proto on loopback until t ends. configure, if given,
// edits the http.Server of h2c and h2 before it starts. HTTP/2 tests are
// skipped when extended CONNECT is off in this process.
func Start(t testing.TB, proto string, h http.Handler, configure ...func(*http.Server)) *Server {
	t.Helper()
	switch proto {
	case "h2c", "h2":
		RequireXConnect(t)
		srv := httptest.NewUnstartedServer(h)
		for _, f := range configure {
			f(srv.Config)
		}
		srv.Config.Protocols = new(http.Protocols)
		srv.Config.Protocols.SetHTTP1(true)
		s := &Server{Proto: proto, HTTP2: &http2.Transport{}}
		if proto == "h2c" {
			srv.Config.Protocols.SetUnencryptedHTTP2(true)
			srv.Start()
			s.HTTP2.AllowHTTP = true
			s.HTTP2.DialTLSContext = func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, addr)
			}
			s.URL = "ws://" + srv.Listener.Addr().String()
		} else {
			cert, pool := SelfSigned(t)
			srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
			srv.Config.Protocols.SetHTTP2(true)
			srv.EnableHTTP2 = true
			srv.StartTLS()
			s.HTTP2.TLSClientConfig = &tls.Config{RootCAs: pool}
			s.URL, s.CertPool = "wss://"+srv.Listener.Addr().String(), pool
		}
		t.Cleanup(func() {
			s.HTTP2.CloseIdleConnections()
			srv.Close()
		})
		return s
	case "h3":
		cert, pool := SelfSigned(t)
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http3.Server{Handler: h, TLSConfig: http3.ConfigureTLSConfig(&tls.Config{Certificates: []tls.Certificate{cert}})}
		go srv.Serve(pc)
		s := &Server{Proto: proto, URL: "wss://" + pc.LocalAddr().String(), CertPool: pool,
			HTTP3: &http3.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
		t.Cleanup(func() {
			s.HTTP3.Close()
			srv.Close()
			pc.Close()
		})
		return s
	}
	t.Fatalf("streamtest: unknown protocol %q", proto)
	return nil
}

// Main is a TestMain for packages with tests on HTTP/2 streams: it re-executes
// the test binary with GODEBUG=http2xconnect=1, without which net/http's
// HTTP/2 server (and so Caddy's) refuses extended CONNECT; net/http reads it
// before any test code runs (see internal/xconnect). If that fails, the
// tests that need it skip (RequireXConnect).
func Main(m *testing.M) {
	if err := xconnect.Reexec(); err != nil {
		fmt.Fprintln(os.Stderr, "HTTP/2 WebSocket tests will be skipped:", err)
	}
	os.Exit(m.Run())
}

// RequireXConnect skips t when net/http's HTTP/2 server refuses extended CONNECT.
func RequireXConnect(t testing.TB) {
	t.Helper()
	if !xconnect.Enabled() {
		t.Skip("GODEBUG=http2xconnect=1 is not set: net/http's HTTP/2 server refuses extended CONNECT")
	}
}

// HTTPURL is the http:// or https:// URL of path on s.
func (s *Server) HTTPURL(path string) string {
	if s.Proto == "h2c" {
		return "http" + strings.TrimPrefix(s.URL, "ws") + path
	}
	return "https" + strings.TrimPrefix(s.URL, "wss") + path
}

// RoundTripper is the transport to s.
func (s *Server) RoundTripper() http.RoundTripper {
	if s.HTTP3 != nil {
		return s.HTTP3
	}
	return s.HTTP2
}

// Transports returns the transport to s in the place wsmw.DialConfig's HTTP2
// and HTTP3 fields want it, the other one a nil interface (a nil
// *http2.Transport in an interface is not).
func (s *Server) Transports() (h2, h3 http.RoundTripper) {
	if s.HTTP3 != nil {
		return nil, s.HTTP3
	}
	return s.HTTP2, nil
}

// Get sends a plain GET for path, and reads and closes the response body.
func (s *Server) Get(path string) (*http.Response, []byte, error) {
	req, err := http.NewRequest(http.MethodGet, s.HTTPURL(path), nil)
	if err != nil {
		return nil, nil, err
	}
	resp, err := s.RoundTripper().RoundTrip(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

// Open sends an extended CONNECT for path with :protocol protocol and hdr
// (plus Sec-WebSocket-Version: 13 unless hdr has one). It returns the
// response, and the stream when the answer is a 200; both end with t.
func (s *Server) Open(t testing.TB, path, protocol string, hdr http.Header) (*Stream, *http.Response) {
	t.Helper()
	st, resp, err := s.Connect(path, protocol, hdr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if resp.StatusCode != http.StatusOK {
		return nil, resp
	}
	return st, resp
}

// Connect is Open for callers that close the stream themselves (it is
// returned whatever the status) and handle errors.
func (s *Server) Connect(path, protocol string, hdr http.Header) (*Stream, *http.Response, error) {
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	req, err := http.NewRequestWithContext(ctx, http.MethodConnect, s.HTTPURL(path), pr)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	if s.Proto == "h3" {
		req.Proto = protocol // quic-go takes :protocol from Proto
	} else {
		req.Header.Set(":protocol", protocol) // x/net takes it from the header
	}
	req.Header.Set("Sec-WebSocket-Version", "13")
	for k, vs := range hdr {
		req.Header[http.CanonicalHeaderKey(k)] = vs
	}
	resp, err := s.RoundTripper().RoundTrip(req)
	if err != nil {
		cancel()
		return nil, nil, fmt.Errorf("extended CONNECT over %s: %w", s.Proto, err)
	}
	return &Stream{body: resp.Body, pw: pw, cancel: cancel, remote: s.URL}, resp, nil
}

// Stream is the client side of an extended CONNECT stream as a net.Conn:
// writes go into the request body, reads come from the response body. A
// deadline that passes resets the stream (reads and writes then fail with
// os.ErrDeadlineExceeded).
type Stream struct {
	body   io.ReadCloser
	pw     *io.PipeWriter
	cancel context.CancelFunc
	remote string

	mu      sync.Mutex
	timers  [2]*time.Timer // read, write
	expired [2]bool
	once    sync.Once
}

func (s *Stream) Read(p []byte) (int, error) {
	n, err := s.body.Read(p)
	return n, s.deadlineErr(0, err)
}

func (s *Stream) Write(p []byte) (int, error) {
	n, err := s.pw.Write(p)
	return n, s.deadlineErr(1, err)
}

func (s *Stream) deadlineErr(i int, err error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil && s.expired[i] {
		return os.ErrDeadlineExceeded
	}
	return err
}

// CloseWrite ends the client's side of the stream in order (END_STREAM, FIN).
func (s *Stream) CloseWrite() error { return s.pw.Close() }

// Close resets the stream, unless both sides have ended it already.
func (s *Stream) Close() error {
	s.once.Do(func() {
		s.SetDeadline(time.Time{})
		s.cancel()
		s.pw.CloseWithError(net.ErrClosed)
		s.body.Close()
	})
	return nil
}

func (s *Stream) SetReadDeadline(t time.Time) error  { return s.setDeadline(0, t) }
func (s *Stream) SetWriteDeadline(t time.Time) error { return s.setDeadline(1, t) }
func (s *Stream) SetDeadline(t time.Time) error {
	s.setDeadline(0, t)
	return s.setDeadline(1, t)
}

func (s *Stream) setDeadline(i int, t time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.timers[i] != nil {
		s.timers[i].Stop()
		s.timers[i] = nil
	}
	if !t.IsZero() {
		s.timers[i] = time.AfterFunc(time.Until(t), func() {
			s.mu.Lock()
			s.expired[i] = true
			s.mu.Unlock()
			s.cancel()
		})
	}
	return nil
}

func (s *Stream) LocalAddr() net.Addr  { return addr("local") }
func (s *Stream) RemoteAddr() net.Addr { return addr(s.remote) }

type addr string

func (a addr) Network() string { return "stream" }
func (a addr) String() string  { return string(a) }

// Ending is how the server ended its side of a stream.
type Ending string

const (
	EndStream Ending = "end of stream" // END_STREAM (HTTP/2) or FIN (HTTP/3)
	EndReset  Ending = "reset"         // RST_STREAM or RESET_STREAM
)

// Ending reads the rest of the server's side of the stream, for at most d,
// and tells how it ended: in order, reset, or (with an error) neither.
func (s *Stream) Ending(d time.Duration) (Ending, error) {
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, s.body)
		done <- err
	}()
	select {
	case err := <-done:
		switch {
		case err == nil:
			return EndStream, nil
		case IsReset(err):
			return EndReset, nil
		}
		return "", err
	case <-time.After(d):
		return "", errors.New("streamtest: the server did not end the stream")
	}
}

// IsReset reports whether err is a stream reset by the peer, as x/net's
// HTTP/2 transport or quic-go reports it.
func IsReset(err error) bool {
	var h2e http2.StreamError
	var h3e *quic.StreamError
	return errors.As(err, &h2e) || errors.As(err, &h3e) && h3e.Remote
}

// SelfSigned returns a certificate for 127.0.0.1 and localhost, and a pool that trusts it.
func SelfSigned(t testing.TB) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	c, err := selfsigned.New("wsgate test")
	if err != nil {
		t.Fatal(err)
	}
	return c.TLS, c.Pool
}
