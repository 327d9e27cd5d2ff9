package wsmw

// Helpers of the HTTP/2 and HTTP/3 tests (stream_test.go): servers that speak
// each protocol, clients through Go's HTTP/2 transport and quic-go's HTTP/3
// transport, and a raw client that sees how a stream ends.

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"golang.org/x/net/http2"

	"github.com/wsgate/wsgate/internal/xconnect"
)

// TestMain turns on extended CONNECT in net/http's HTTP/2 server, which reads
// GODEBUG before any test code runs, by re-executing the test binary with
// GODEBUG=http2xconnect=1 (see internal/xconnect).
func TestMain(m *testing.M) {
	if err := xconnect.Reexec(); err != nil {
		fmt.Fprintln(os.Stderr, "HTTP/2 WebSocket tests will be skipped:", err)
	}
	os.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
	os.Exit(m.Run())
}

// requireXConnect skips t when net/http's HTTP/2 server cannot take WebSockets.
func requireXConnect(t testing.TB) {
	t.Helper()
	if !xconnect.Enabled() {
		t.Skip("GODEBUG=http2xconnect=1 is not set: net/http's HTTP/2 server refuses extended CONNECT")
	}
}

// streamServer is a server of one protocol, and what a client needs to reach it.
type streamServer struct {
	proto string // "h2c", "h2" (TLS) or "h3"
	URL   string // ws:// or wss://
	dial  DialConfig
}

// streamProtos are the protocols the stream tests run over.
var streamProtos = []string{"h2c", "h2", "h3"}

// startStream serves h over proto until the test ends. configure, if given,
// edits the http.Server of h2c and h2 before it starts.
func startStream(t testing.TB, proto string, h http.Handler, configure ...func(*http.Server)) *streamServer {
	t.Helper()
	requireXConnect(t)
	switch proto {
	case "h2c", "h2":
		srv := httptest.NewUnstartedServer(h)
		for _, f := range configure {
			f(srv.Config)
		}
		srv.Config.Protocols = new(http.Protocols)
		srv.Config.Protocols.SetHTTP1(true)
		// net/http's Transport refuses the :protocol pseudo-header; x/net's speaks extended CONNECT.
		tr := &http2.Transport{}
		if proto == "h2c" {
			srv.Config.Protocols.SetUnencryptedHTTP2(true)
			srv.Start()
			tr.AllowHTTP = true
			tr.DialTLSContext = func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, addr)
			}
		} else {
			srv.Config.Protocols.SetHTTP2(true)
			srv.EnableHTTP2 = true
			srv.StartTLS()
			tr.TLSClientConfig = srv.Client().Transport.(*http.Transport).TLSClientConfig
		}
		t.Cleanup(func() {
			tr.CloseIdleConnections()
			srv.Close()
		})
		scheme := map[string]string{"h2c": "ws", "h2": "wss"}[proto]
		return &streamServer{proto: proto, URL: scheme + strings.TrimPrefix(srv.URL, strings.Split(srv.URL, ":")[0]), dial: DialConfig{HTTP2: tr}}
	case "h3":
		cert, pool := selfSigned(t)
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http3.Server{Handler: h, TLSConfig: http3.ConfigureTLSConfig(&tls.Config{Certificates: []tls.Certificate{cert}})}
		go srv.Serve(pc)
		tr := &http3.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
		t.Cleanup(func() {
			tr.Close()
			srv.Close()
			pc.Close()
		})
		return &streamServer{proto: proto, URL: "wss://" + pc.LocalAddr().String(), dial: DialConfig{HTTP3: tr}}
	}
	t.Fatalf("unknown protocol %q", proto)
	return nil
}

// dial opens a WebSocket to path on s with cfg's other settings.
func (s *streamServer) dialWS(t testing.TB, path string, cfg *DialConfig) *Conn {
	t.Helper()
	c, resp, err := s.dialErr(path, cfg)
	if err != nil {
		t.Fatalf("dial %s over %s: %v (response %v)", path, s.proto, err, resp)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

func (s *streamServer) dialErr(path string, cfg *DialConfig) (*Conn, *http.Response, error) {
	var dc DialConfig
	if cfg != nil {
		dc = *cfg
	}
	dc.HTTP2, dc.HTTP3 = s.dial.HTTP2, s.dial.HTTP3
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return Dial(ctx, s.URL+path, &dc)
}

// selfSigned returns a certificate for 127.0.0.1 and localhost, and a pool that trusts it.
func selfSigned(t testing.TB) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "wsmw test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// rawStream is a client WebSocket on a stream, written and read frame by
// frame with the test's raw frames, which also sees how the stream ends.
type rawStream struct {
	resp *http.Response
	pw   *io.PipeWriter
	br   *bufio.Reader
}

// openRaw sends an extended CONNECT for path with hdr and returns the response,
// and the raw stream when it is a 200.
func (s *streamServer) openRaw(t testing.TB, path string, hdr http.Header) (*rawStream, *http.Response) {
	t.Helper()
	return s.openRawProtocol(t, path, "websocket", hdr)
}

// openRawProtocol is openRaw with another :protocol.
func (s *streamServer) openRawProtocol(t testing.TB, path, protocol string, hdr http.Header) (*rawStream, *http.Response) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	pr, pw := io.Pipe()
	req, err := http.NewRequestWithContext(ctx, http.MethodConnect, s.httpURL(path), pr)
	if err != nil {
		t.Fatal(err)
	}
	rt := s.roundTripper()
	if s.proto == "h3" {
		req.Proto = protocol
	} else {
		req.Header.Set(":protocol", protocol)
	}
	req.Header.Set("Sec-WebSocket-Version", "13")
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatalf("extended CONNECT over %s: %v", s.proto, err)
	}
	t.Cleanup(func() {
		pw.Close()
		resp.Body.Close()
	})
	if resp.StatusCode != http.StatusOK {
		return nil, resp
	}
	return &rawStream{resp: resp, pw: pw, br: bufio.NewReader(resp.Body)}, resp
}

// httpURL is the http:// or https:// URL of path.
func (s *streamServer) httpURL(path string) string {
	if s.proto == "h2c" {
		return "http" + strings.TrimPrefix(s.URL, "ws") + path
	}
	return "https" + strings.TrimPrefix(s.URL, "wss") + path
}

func (s *streamServer) roundTripper() http.RoundTripper {
	if s.proto == "h3" {
		return s.dial.HTTP3
	}
	return s.dial.HTTP2
}

// get sends a plain GET for path.
func (s *streamServer) get(path string) (*http.Response, error) {
	req, err := http.NewRequest(http.MethodGet, s.httpURL(path), nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.roundTripper().RoundTrip(req)
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	return resp, err
}

// readAll reads and closes a response body.
func readAll(t testing.TB, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// write sends raw bytes.
func (r *rawStream) write(t testing.TB, b []byte) {
	t.Helper()
	if _, err := r.pw.Write(b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// readFrame reads one frame from the server, unmasked.
func (r *rawStream) readFrame() (Header, []byte, error) {
	h, err := ReadHeader(r.br)
	if err != nil {
		return h, nil, err
	}
	p := make([]byte, h.Length)
	if _, err := io.ReadFull(r.br, p); err != nil {
		return h, nil, err
	}
	if h.Masked {
		Mask(h.Mask, 0, p)
	}
	return h, p, nil
}

// readClose reads frames until the server's close and returns its code.
func (r *rawStream) readClose(t testing.TB) StatusCode {
	t.Helper()
	for {
		h, p, err := r.readFrame()
		if err != nil {
			t.Fatalf("waiting for the server's close: %v", err)
		}
		if h.OpCode == OpClose {
			code, _, err := ParseClosePayload(p)
			if err != nil {
				t.Fatalf("close payload %q: %v", p, err)
			}
			return code
		}
	}
}

// ending is how a stream ended, as its peer saw it.
type ending string

const (
	endStream ending = "end of stream" // END_STREAM (HTTP/2) or FIN (HTTP/3)
	endReset  ending = "reset"         // RST_STREAM or RESET_STREAM
)

// streamEnding reads the rest of the server's side of the stream and tells
// how it ended.
func (r *rawStream) streamEnding(t testing.TB) ending {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, r.br)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			return endStream
		}
		if isReset(err) {
			return endReset
		}
		t.Fatalf("the stream ended with %v, neither an end nor a reset", err)
	case <-time.After(5 * time.Second):
		t.Fatal("the server did not end the stream")
	}
	return ""
}

// isReset reports whether err is a stream reset by the peer, as x/net's
// HTTP/2 transport or quic-go reports it.
func isReset(err error) bool {
	var h2e http2.StreamError
	var h3e *quic.StreamError
	return errors.As(err, &h2e) || errors.As(err, &h3e) && h3e.Remote
}
