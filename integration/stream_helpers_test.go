package integration

// Helpers of the tests of WebSockets on HTTP/2 and HTTP/3 streams
// (streams_test.go): the proxy on a chi router served over each protocol,
// Caddy serving HTTP/1.1, HTTP/2 and HTTP/3 with its own certificate, and
// clients of both.

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/net/http2"

	"github.com/wsgate/wsgate/internal/streamtest"
	"github.com/wsgate/wsgate/internal/testkit"
	"github.com/wsgate/wsgate/internal/testkit/caddytest"
	"github.com/wsgate/wsgate/proxy"
)

// TestMain turns on extended CONNECT in net/http's HTTP/2 server for the
// tests on streams (see streamtest.Main).
func TestMain(m *testing.M) { streamtest.Main(m) }

// streamFront is the proxy on the routes of examples/chi, served over one
// protocol: the demo page at /, the proxy at /ws for GET and CONNECT.
type streamFront struct {
	*streamtest.Server
	Proxy *proxy.Proxy
	Logs  *observer.ObservedLogs // the proxy's info lines
	// Requests receives the method and protocol of each request to /ws.
	Requests chan string
}

func startStreamFront(t testing.TB, proto string, cfg proxy.Config) *streamFront {
	t.Helper()
	core, logs := observer.New(zap.InfoLevel)
	cfg.Logger = zap.New(core)
	p, err := proxy.New(cfg)
	if err != nil {
		t.Fatalf("proxy.New: %v", err)
	}
	f := &streamFront{Proxy: p, Logs: logs, Requests: make(chan string, 64)}
	r := demoRouter(t)
	seen := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case f.Requests <- r.Method + " " + r.Proto:
			default:
			}
			next.ServeHTTP(w, r)
		})
	}
	r.With(seen, p.Middleware).Get("/ws", notWS)
	r.With(seen, p.Middleware).Connect("/ws", notWS)
	f.Server = streamtest.Start(t, proto, r)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			t.Errorf("proxy shutdown: %v", err)
		}
	})
	return f
}

// wantClientProto checks that the proxy's session log lines name proto.
func (f *streamFront) wantClientProto(t testing.TB, proto string) {
	t.Helper()
	lines := f.Logs.FilterMessage("session closed").All()
	if len(lines) == 0 {
		t.Errorf("no session log line")
	}
	for _, l := range lines {
		if got := l.ContextMap()["client_proto"]; got != proto {
			t.Errorf("session log line with client_proto %v, want %s", got, proto)
		}
	}
}

// streamProtoName is the client_proto of a streamtest protocol.
func streamProtoName(proto string) string { return proto[:2] }

// caddyStreams runs Caddy in this process on https://127.0.0.1:port with a
// certificate of its internal CA, HTTP/1.1, HTTP/2 and HTTP/3 on the same
// port, and site (a Caddyfile fragment) as its routes. It returns the port's
// address and servers to reach it over h2 and h3, trusting any certificate.
func caddyStreams(t testing.TB, site string) (addr string, h2, h3 *streamtest.Server) {
	t.Helper()
	return caddyStreamsWith(t, "", site)
}

// caddyStreamsWith is caddyStreams with more server options (Caddyfile lines
// of the global servers block).
func caddyStreamsWith(t testing.TB, serverOptions, site string) (addr string, h2, h3 *streamtest.Server) {
	t.Helper()
	streamtest.RequireXConnect(t)
	addr = testkit.FreeAddr(t)
	port := addr[strings.LastIndex(addr, ":")+1:]
	caddytest.Load(t, fmt.Sprintf(`{
	admin off
	persist_config off
	skip_install_trust
	auto_https disable_redirects
	https_port %s
	servers {
		protocols h1 h2 h3
%s
	}
	log {
		level ERROR
	}
}
https://127.0.0.1:%s {
	tls internal
%s
}
`, port, serverOptions, port, site))
	insecure := &tls.Config{InsecureSkipVerify: true}
	// Caddy obtains its certificate in the background: wait until it has one.
	for deadline := time.Now().Add(waitTimeout); ; time.Sleep(20 * time.Millisecond) {
		c, err := tls.Dial("tcp", addr, insecure)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Caddy serves no certificate on %s: %v", addr, err)
		}
	}
	h2 = &streamtest.Server{Proto: "h2", URL: "wss://" + addr, HTTP2: &http2.Transport{TLSClientConfig: insecure}}
	h3 = &streamtest.Server{Proto: "h3", URL: "wss://" + addr, HTTP3: &http3.Transport{TLSClientConfig: insecure}}
	t.Cleanup(func() {
		h2.HTTP2.CloseIdleConnections()
		h3.HTTP3.Close()
	})
	return addr, h2, h3
}

// confStreamDial opens conformance clients on streams of s.
func confStreamDial(s *streamtest.Server) func(path string) (*testkit.Conn, error) {
	return func(path string) (*testkit.Conn, error) {
		st, resp, err := s.Connect(path, "websocket", nil)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusOK {
			st.Close()
			return nil, fmt.Errorf("handshake: status %s", resp.Status)
		}
		return testkit.NewConn(st, nil, true), nil
	}
}
