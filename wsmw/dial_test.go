package wsmw_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsgate/wsgate/internal/relay"
	"github.com/wsgate/wsgate/internal/testkit"
	"github.com/wsgate/wsgate/wsmw"
)

// echoServer is our own server (wsmw.Upgrade with cfg) echoing every message.
// Each request's headers are sent on the returned channel.
func echoServer(t *testing.T, cfg *wsmw.ServerConfig) (*httptest.Server, <-chan *http.Request) {
	t.Helper()
	reqs := make(chan *http.Request, 16)
	echo := testkit.Upgrading(cfg, testkit.EchoHandler)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case reqs <- r:
		default:
		}
		echo(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, reqs
}

// rawResponder hijacks each request and writes respond(key) in one Write, where
// key is the request's Sec-WebSocket-Key; it then waits for the client to hang up.
func rawResponder(t *testing.T, respond func(key string) string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		nc, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		defer nc.Close()
		if _, err := nc.Write([]byte(respond(r.Header.Get("Sec-WebSocket-Key")))); err != nil {
			return
		}
		_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.Copy(io.Discard, nc)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// blackhole returns the ws:// URL (path /) of a server that accepts TCP
// connections and never answers.
func blackhole(t *testing.T) string {
	url, _ := testkit.Blackhole(t)
	return url + "/"
}

// resp101 builds a 101 response from header lines (each without CRLF).
func resp101(lines ...string) string {
	return "HTTP/1.1 101 Switching Protocols\r\n" + strings.Join(lines, "\r\n") + "\r\n\r\n"
}

func TestDial_ResponseRules(t *testing.T) {
	up, conn := "Upgrade: websocket", "Connection: Upgrade"
	acc := func(key string) string { return "Sec-WebSocket-Accept: " + wsmw.AcceptKey(key) }
	errHook := errors.New("hook says no")
	cases := []struct {
		name    string
		cfg     *wsmw.DialConfig
		respond func(key string) string
		status  int
		want    error
	}{
		{"AcceptNotMatchingKeyIsErrBadAccept", nil, func(key string) string {
			return resp101(up, conn, "Sec-WebSocket-Accept: "+wsmw.AcceptKey("dGhlIHNhbXBsZSBub25jZQ=="))
		}, 101, wsmw.ErrBadAccept},
		{"MissingAcceptIsErrBadAccept", nil, func(string) string { return resp101(up, conn) }, 101, wsmw.ErrBadAccept},
		{"TwoAcceptsAreErrBadAccept", nil, func(key string) string { return resp101(up, conn, acc(key), acc(key)) }, 101, wsmw.ErrBadAccept},
		{"MissingUpgradeIsErrNoHandshake", nil, func(key string) string { return resp101(conn, acc(key)) }, 101, wsmw.ErrNoHandshake},
		{"UpgradeNotWebSocketIsErrNoHandshake", nil, func(key string) string { return resp101("Upgrade: h2c", conn, acc(key)) }, 101, wsmw.ErrNoHandshake},
		{"MissingConnectionIsErrNoHandshake", nil, func(key string) string { return resp101(up, acc(key)) }, 101, wsmw.ErrNoHandshake},
		{"ConnectionWithoutUpgradeTokenIsErrNoHandshake", nil, func(key string) string { return resp101(up, "Connection: keep-alive", acc(key)) }, 101, wsmw.ErrNoHandshake},
		{"HTTP10IsErrNoHandshake", nil, func(key string) string {
			return strings.Replace(resp101(up, conn, acc(key)), "HTTP/1.1", "HTTP/1.0", 1)
		}, 101, wsmw.ErrNoHandshake},
		{"NotHTTPIsErrNoHandshakeWithoutStatus", nil, func(string) string { return "SSH-2.0-OpenSSH_9.6\r\n\r\n" }, 0, wsmw.ErrNoHandshake},
		{"SubprotocolNotOfferedIsErrBadSubprotocol", &wsmw.DialConfig{Subprotocols: []string{"chat"}}, func(key string) string {
			return resp101(up, conn, acc(key), "Sec-WebSocket-Protocol: superchat")
		}, 101, wsmw.ErrBadSubprotocol},
		{"SubprotocolWhenNoneOfferedIsErrBadSubprotocol", nil, func(key string) string {
			return resp101(up, conn, acc(key), "Sec-WebSocket-Protocol: chat")
		}, 101, wsmw.ErrBadSubprotocol},
		{"TwoSubprotocolsAreErrBadSubprotocol", &wsmw.DialConfig{Subprotocols: []string{"a", "b"}}, func(key string) string {
			return resp101(up, conn, acc(key), "Sec-WebSocket-Protocol: a", "Sec-WebSocket-Protocol: b")
		}, 101, wsmw.ErrBadSubprotocol},
		{"ExtensionNotOfferedIsErrBadExtension", &wsmw.DialConfig{
			AcceptExtensions: func([]wsmw.ExtensionOffer) (byte, error) { return wsmw.RSV1, nil },
		}, func(key string) string {
			return resp101(up, conn, acc(key), "Sec-WebSocket-Extensions: permessage-deflate")
		}, 101, wsmw.ErrBadExtension},
		{"ExtensionWithoutAcceptHookIsErrBadExtension", &wsmw.DialConfig{
			Extensions: []wsmw.ExtensionOffer{{Name: "permessage-deflate"}},
		}, func(key string) string {
			return resp101(up, conn, acc(key), "Sec-WebSocket-Extensions: permessage-deflate")
		}, 101, wsmw.ErrBadExtension},
		{"ExtensionRefusedByHookIsErrBadExtension", &wsmw.DialConfig{
			Extensions:       []wsmw.ExtensionOffer{{Name: "permessage-deflate"}},
			AcceptExtensions: func([]wsmw.ExtensionOffer) (byte, error) { return 0, errHook },
		}, func(key string) string {
			return resp101(up, conn, acc(key), "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=8")
		}, 101, errHook},
		{"RedirectIsErrBadStatus", nil, func(string) string {
			return "HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n"
		}, 302, wsmw.ErrBadStatus},
		{"UnauthorizedWithoutCredentialsIsErrUnauthorized", nil, func(string) string {
			return "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"x\"\r\nContent-Length: 0\r\n\r\n"
		}, 401, wsmw.ErrUnauthorized},
		{"ProxyAuthRequiredIsErrUnauthorized", nil, func(string) string {
			return "HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n"
		}, 407, wsmw.ErrUnauthorized},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := rawResponder(t, tc.respond)
			c, resp, err := wsmw.Dial(context.Background(), testkit.WSURL(srv.URL)+"/", tc.cfg)
			if c != nil {
				c.CloseNow()
				t.Fatal("Dial returned a Conn for a bad handshake")
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want errors.Is %v", err, tc.want)
			}
			var he *wsmw.HandshakeError
			if !errors.As(err, &he) || he.Status != tc.status {
				t.Fatalf("err = %#v, want *HandshakeError with Status %d", err, tc.status)
			}
			if tc.status != 0 && (resp == nil || resp.StatusCode != tc.status) {
				t.Fatalf("resp = %v, want the server's %d response", resp, tc.status)
			}
		})
	}
}

func TestDial_ResponseAccepted(t *testing.T) {
	up, conn := "Upgrade: websocket", "Connection: upgrade, keep-alive"
	acc := func(key string) string { return "Sec-WebSocket-Accept: " + wsmw.AcceptKey(key) }
	cases := []struct {
		name                     string
		cfg                      *wsmw.DialConfig
		extra                    []string
		wantProto, wantExtension string
	}{
		{"TokensAreCaseInsensitiveAndListed", nil, []string{"X-Other: 1"}, "", ""},
		{"OfferedSubprotocolIsSelected", &wsmw.DialConfig{Subprotocols: []string{"a", "b"}}, []string{"Sec-WebSocket-Protocol: b"}, "b", ""},
		{"OfferedExtensionAcceptedByHook", &wsmw.DialConfig{
			Extensions:       []wsmw.ExtensionOffer{{Name: "permessage-deflate", Params: []wsmw.ExtensionParam{{Name: "client_max_window_bits"}}}},
			AcceptExtensions: func(a []wsmw.ExtensionOffer) (byte, error) { return wsmw.RSV1, nil },
		}, []string{"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover"}, "", "permessage-deflate; server_no_context_takeover"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := rawResponder(t, func(key string) string {
				return resp101(append([]string{strings.ToUpper(up), conn, acc(key)}, tc.extra...)...)
			})
			c, resp, err := wsmw.Dial(context.Background(), testkit.WSURL(srv.URL)+"/", tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer c.CloseNow()
			if resp.StatusCode != 101 || !true {
				t.Fatalf("status %d, client %v", resp.StatusCode, true)
			}
			if c.Subprotocol() != tc.wantProto || c.Extensions() != tc.wantExtension {
				t.Fatalf("subprotocol %q extensions %q, want %q %q", c.Subprotocol(), c.Extensions(), tc.wantProto, tc.wantExtension)
			}
		})
	}
}

func TestDial_RefusedResponseBodyIsBounded(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789abcdef"), 100<<10/16) // 100 KiB
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Reason", "banned")
		w.WriteHeader(http.StatusForbidden)
		w.Write(body)
	}))
	t.Cleanup(srv.Close)
	cases := []struct {
		name string
		max  int64
		want int
	}{
		{"DefaultKeeps4KiB", 0, 4 << 10},
		{"MaxErrorBodyKeepsThatMany", 1000, 1000},
		{"BodyShorterThanMaxIsWhole", 1 << 20, len(body)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, resp, err := wsmw.Dial(context.Background(), testkit.WSURL(srv.URL)+"/", &wsmw.DialConfig{MaxErrorBody: tc.max})
			if c != nil {
				t.Fatal("got a Conn")
			}
			var he *wsmw.HandshakeError
			if !errors.As(err, &he) || he.Status != http.StatusForbidden || !errors.Is(err, wsmw.ErrBadStatus) {
				t.Fatalf("err = %v, want *HandshakeError 403 ErrBadStatus", err)
			}
			if resp.StatusCode != http.StatusForbidden || resp.Header.Get("X-Reason") != "banned" {
				t.Fatalf("resp %d %v", resp.StatusCode, resp.Header)
			}
			got, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != tc.want || !bytes.Equal(got, body[:tc.want]) || resp.ContentLength != int64(tc.want) {
				t.Fatalf("body %d bytes (ContentLength %d), want the first %d", len(got), resp.ContentLength, tc.want)
			}
			if resp.Body.Close() != nil {
				t.Fatal("closing the copied body failed")
			}
		})
	}
}

func TestDial_OurServerRefusalIsRelayed(t *testing.T) {
	srv, _ := echoServer(t, nil)
	c, resp, err := wsmw.Dial(context.Background(), testkit.WSURL(srv.URL)+"/", &wsmw.DialConfig{
		Header: http.Header{"Origin": {"https://evil.example"}},
	})
	if c != nil || !errors.Is(err, wsmw.ErrBadStatus) || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("c=%v resp=%v err=%v, want 403 ErrBadStatus", c, resp, err)
	}
	if b, _ := io.ReadAll(resp.Body); !strings.Contains(string(b), "origin not allowed") {
		t.Fatalf("body %q", b)
	}
}

func TestDial_EchoWithOurServer(t *testing.T) {
	srv, reqs := echoServer(t, &wsmw.ServerConfig{Subprotocols: []string{"v2", "v1"}, Origins: []string{"app.example"}})
	for _, scheme := range []string{"ws", "http"} {
		t.Run(scheme+"Scheme", func(t *testing.T) {
			u := scheme + strings.TrimPrefix(srv.URL, "http") + "/path?q=1"
			c, resp, err := wsmw.Dial(context.Background(), u, &wsmw.DialConfig{Subprotocols: []string{"v1", "v2"}})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close(wsmw.StatusNormalClosure, "")
			r := <-reqs
			if r.RequestURI != "/path?q=1" || r.Header.Get("Sec-WebSocket-Version") != "13" {
				t.Fatalf("request %s version %q", r.RequestURI, r.Header.Get("Sec-WebSocket-Version"))
			}
			if resp.StatusCode != 101 || c.Subprotocol() != "v2" {
				t.Fatalf("status %d subprotocol %q, want 101 v2", resp.StatusCode, c.Subprotocol())
			}
			if err := c.Write(context.Background(), wsmw.MessageText, []byte("hi")); err != nil {
				t.Fatal(err)
			}
			if op, p, err := c.Read(context.Background(), nil); err != nil || op != wsmw.MessageText || string(p) != "hi" {
				t.Fatalf("echo %v %q %v", op, p, err)
			}
		})
	}
}

func TestDial_CustomHeadersArrive(t *testing.T) {
	srv, reqs := echoServer(t, &wsmw.ServerConfig{Origins: []string{"app.example"}})
	c, _, err := wsmw.Dial(context.Background(), testkit.WSURL(srv.URL)+"/", &wsmw.DialConfig{
		Header: http.Header{
			"Origin":     {"https://app.example"},
			"Cookie":     {"session=abc"},
			"User-Agent": {"wsgate-test/1"},
			"X-Multi":    {"one", "two"},
			"Host":       {"app.example"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(wsmw.StatusNormalClosure, "")
	r := <-reqs
	checks := map[string]string{
		"Origin":     r.Header.Get("Origin"),
		"Cookie":     r.Header.Get("Cookie"),
		"User-Agent": r.UserAgent(),
		"X-Multi":    strings.Join(r.Header.Values("X-Multi"), ","),
		"Host":       r.Host,
	}
	want := map[string]string{"Origin": "https://app.example", "Cookie": "session=abc", "User-Agent": "wsgate-test/1", "X-Multi": "one,two", "Host": "app.example"}
	for k, v := range want {
		if checks[k] != v {
			t.Errorf("%s = %q, want %q", k, checks[k], v)
		}
	}
}

func TestDial_HandshakeHeadersCannotBeOverridden(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	t.Cleanup(srv.Close)
	cases := []struct {
		name string
		cfg  *wsmw.DialConfig
	}{
		{"Upgrade", &wsmw.DialConfig{Header: http.Header{"Upgrade": {"h2c"}}}},
		{"Connection", &wsmw.DialConfig{Header: http.Header{"Connection": {"close"}}}},
		{"SecWebSocketKey", &wsmw.DialConfig{Header: http.Header{"Sec-Websocket-Key": {"AAAAAAAAAAAAAAAAAAAAAA=="}}}},
		{"SecWebSocketVersionNonCanonicalKey", &wsmw.DialConfig{Header: http.Header{"sec-websocket-version": {"8"}}}},
		{"SecWebSocketProtocol", &wsmw.DialConfig{Header: http.Header{"Sec-WebSocket-Protocol": {"chat"}}}},
		{"ValueWithCRLF", &wsmw.DialConfig{Header: http.Header{"X-A": {"v\r\nX-Injected: 1"}}}},
		{"NameNotAToken", &wsmw.DialConfig{Header: http.Header{"X A": {"v"}}}},
		{"SubprotocolNotAToken", &wsmw.DialConfig{Subprotocols: []string{"a b"}}},
		{"AuthorizationWithCredentials", &wsmw.DialConfig{Header: http.Header{"Authorization": {"Bearer x"}}, Credentials: &wsmw.Credentials{Username: "u"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, resp, err := wsmw.Dial(context.Background(), testkit.WSURL(srv.URL)+"/", tc.cfg)
			if c != nil || resp != nil || !errors.Is(err, wsmw.ErrBadHeader) {
				t.Fatalf("c=%v resp=%v err=%v, want ErrBadHeader", c, resp, err)
			}
		})
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("%d requests reached the server", n)
	}
}

func TestDial_InvalidURL(t *testing.T) {
	for _, u := range []string{"ftp://example.com/", "ws:///nohost", "ws://[::1", "//example.com"} {
		if c, _, err := wsmw.Dial(context.Background(), u, nil); c != nil || err == nil {
			t.Errorf("Dial(%q) = %v, %v, want an error", u, c, err)
		}
	}
	_, _, err := wsmw.Dial(context.Background(), "ftp://user:secret@example.com/", nil)
	if err == nil || strings.Contains(err.Error(), "secret") {
		t.Fatalf("err = %v, want an error without the password", err)
	}
}

func TestDial_TimeoutAndCancel(t *testing.T) {
	url := blackhole(t)
	cases := []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
		cfg  *wsmw.DialConfig
		want []error
	}{
		{"HandshakeTimeoutBoundsSilentServer", func() (context.Context, context.CancelFunc) { return context.Background(), func() {} },
			&wsmw.DialConfig{HandshakeTimeout: 200 * time.Millisecond}, []error{context.DeadlineExceeded, os.ErrDeadlineExceeded}},
		{"ContextDeadlineBoundsSilentServer", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 200*time.Millisecond)
		}, nil, []error{context.DeadlineExceeded, os.ErrDeadlineExceeded}},
		{"ContextCancelAbortsHandshake", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(200*time.Millisecond, cancel)
			return ctx, cancel
		}, nil, []error{context.Canceled}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := tc.ctx()
			defer cancel()
			start := time.Now()
			c, resp, err := wsmw.Dial(ctx, url, tc.cfg)
			elapsed := time.Since(start)
			if c != nil || resp != nil {
				t.Fatal("got a Conn or response from a silent server")
			}
			for _, w := range tc.want {
				if !errors.Is(err, w) {
					t.Errorf("err = %v, want errors.Is %v", err, w)
				}
			}
			if elapsed < 150*time.Millisecond || elapsed > 3*time.Second {
				t.Fatalf("Dial returned after %v, want about 200ms", elapsed)
			}
		})
	}
}

func TestDial_HandshakeDeadlineClearedAfterSuccess(t *testing.T) {
	srv := httptest.NewServer(testkit.Upgrading(nil, func(c *wsmw.Conn, _ *http.Request) {
		time.Sleep(400 * time.Millisecond)
		c.Write(context.Background(), wsmw.MessageText, []byte("late"))
		c.Read(context.Background(), nil)
	}))
	t.Cleanup(srv.Close)
	c, _, err := wsmw.Dial(context.Background(), testkit.WSURL(srv.URL)+"/", &wsmw.DialConfig{HandshakeTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if _, p, err := c.Read(context.Background(), nil); err != nil || string(p) != "late" {
		t.Fatalf("read after the handshake timeout: %q %v", p, err)
	}
}

func TestDial_FramesInSameWriteAs101AreNotLost(t *testing.T) {
	frame := func(op wsmw.OpCode, p string) string {
		return string(wsmw.AppendHeader(nil, wsmw.Header{Fin: true, OpCode: op, Length: int64(len(p))})) + p
	}
	srv := rawResponder(t, func(key string) string {
		return resp101("Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Accept: "+wsmw.AcceptKey(key)) +
			frame(wsmw.OpText, "first") + frame(wsmw.OpPing, "p") + frame(wsmw.OpBinary, strings.Repeat("x", 2000))
	})
	c, _, err := wsmw.Dial(context.Background(), testkit.WSURL(srv.URL)+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if op, p, err := c.Read(context.Background(), nil); err != nil || op != wsmw.MessageText || string(p) != "first" {
		t.Fatalf("first message: %v %q %v", op, p, err)
	}
	if op, p, err := c.Read(context.Background(), nil); err != nil || op != wsmw.MessageBinary || len(p) != 2000 {
		t.Fatalf("second message: %v %d bytes %v", op, len(p), err)
	}
}

func TestDial_TLS(t *testing.T) {
	srv := httptest.NewUnstartedServer(testkit.Upgrading(nil, func(c *wsmw.Conn, _ *http.Request) {
		op, p, err := c.Read(context.Background(), nil)
		if err == nil {
			c.Write(context.Background(), op, p)
			c.Close(wsmw.StatusNormalClosure, "")
		}
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the untrusted case makes the server log a TLS error
	srv.StartTLS()
	t.Cleanup(srv.Close)
	u := "wss://" + strings.TrimPrefix(srv.URL, "https://") + "/"

	t.Run("TrustedCertificate", func(t *testing.T) {
		tc := srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
		tc.NextProtos = []string{"h2", "http/1.1"} // h2 must not be negotiated
		c, _, err := wsmw.Dial(context.Background(), u, &wsmw.DialConfig{TLSConfig: tc})
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		if _, ok := relay.NetConn(c).(*tls.Conn); !ok {
			t.Fatalf("NetConn is %T, want *tls.Conn", relay.NetConn(c))
		}
		if err := c.Write(context.Background(), wsmw.MessageText, []byte("secure")); err != nil {
			t.Fatal(err)
		}
		if _, p, err := c.Read(context.Background(), nil); err != nil || string(p) != "secure" {
			t.Fatalf("echo %q %v", p, err)
		}
	})
	t.Run("RootCAsFromCertificate", func(t *testing.T) {
		pool := x509.NewCertPool()
		pool.AddCert(srv.Certificate())
		c, _, err := wsmw.Dial(context.Background(), u, &wsmw.DialConfig{TLSConfig: &tls.Config{RootCAs: pool}})
		if err != nil {
			t.Fatal(err)
		}
		c.CloseNow()
	})
	t.Run("UntrustedCertificateFails", func(t *testing.T) {
		c, _, err := wsmw.Dial(context.Background(), u, nil)
		var ve *tls.CertificateVerificationError
		if c != nil || !errors.As(err, &ve) {
			t.Fatalf("err = %v, want *tls.CertificateVerificationError", err)
		}
	})
	t.Run("ServerNameDefaultsToURLHost", func(t *testing.T) {
		pool := x509.NewCertPool()
		pool.AddCert(srv.Certificate())
		_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
		// The certificate names example.com: dial it through NetDial to the test server.
		cfg := &wsmw.DialConfig{
			TLSConfig: &tls.Config{RootCAs: pool},
			NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
				if addr != "example.com:"+port {
					t.Errorf("dialed %q", addr)
				}
				return (&net.Dialer{}).DialContext(ctx, network, srv.Listener.Addr().String())
			},
		}
		c, _, err := wsmw.Dial(context.Background(), "wss://example.com:"+port+"/", cfg)
		if err != nil {
			t.Fatal(err)
		}
		if got := relay.NetConn(c).(*tls.Conn).ConnectionState().ServerName; got != "example.com" {
			t.Errorf("ServerName %q", got)
		}
		c.CloseNow()
	})
}
