package wsmw

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// originCase is one Origin header checked against the policy; host is the
// request's Host header.
type originCase struct {
	name     string
	host     string
	origin   string // "" sends no Origin
	patterns []string
	allow    bool
}

var originCases = []originCase{
	{name: "NoOrigin_NonBrowserPasses", host: "example.com", allow: true},
	{name: "SameHost", host: "example.com", origin: "https://example.com", allow: true},
	{name: "SameHost_WithPort", host: "example.com:8080", origin: "http://example.com:8080", allow: true},
	{name: "SameHost_DifferentCase", host: "Example.COM:8080", origin: "http://EXAMPLE.com:8080", allow: true},
	{name: "SameHost_OtherPortRefused", host: "example.com:8080", origin: "http://example.com:9090"},
	{name: "SameHost_PortOnlyOnOneSideRefused", host: "example.com:8080", origin: "http://example.com"},
	{name: "OtherHostRefused", host: "example.com", origin: "https://evil.org"},
	{name: "OtherHost_SuffixRefused", host: "example.com", origin: "https://evilexample.com"},
	{name: "OtherHost_SubdomainRefusedWithoutPattern", host: "example.com", origin: "https://api.example.com"},

	{name: "HostPattern_Subdomain", host: "app.test", origin: "https://api.example.com", patterns: []string{"*.example.com"}, allow: true},
	{name: "HostPattern_AnyScheme", host: "app.test", origin: "http://api.example.com", patterns: []string{"*.example.com"}, allow: true},
	{name: "HostPattern_DeepSubdomain", host: "app.test", origin: "https://a.b.example.com", patterns: []string{"*.example.com"}, allow: true},
	{name: "HostPattern_CaseInsensitive", host: "app.test", origin: "https://API.Example.COM", patterns: []string{"*.EXAMPLE.com"}, allow: true},
	{name: "HostPattern_ApexRefused", host: "app.test", origin: "https://example.com", patterns: []string{"*.example.com"}},
	{name: "HostPattern_LookalikeRefused", host: "app.test", origin: "https://evil-example.com", patterns: []string{"*.example.com"}},
	{name: "HostPattern_SuffixAttackRefused", host: "app.test", origin: "https://api.example.com.evil.org", patterns: []string{"*.example.com"}},
	{name: "HostPattern_PortRefused", host: "app.test", origin: "https://api.example.com:8443", patterns: []string{"*.example.com"}},

	{name: "OriginPattern_HTTPS", host: "app.test", origin: "https://api.example.com", patterns: []string{"https://*.example.com"}, allow: true},
	{name: "OriginPattern_HTTPRefused", host: "app.test", origin: "http://api.example.com", patterns: []string{"https://*.example.com"}},
	{name: "OriginPattern_SchemeCase", host: "app.test", origin: "HTTPS://api.example.com", patterns: []string{"https://*.example.com"}, allow: true},
	{name: "OriginPattern_PortRefused", host: "app.test", origin: "https://api.example.com:8443", patterns: []string{"https://*.example.com"}},

	{name: "PortPattern_Localhost", host: "app.test", origin: "http://localhost:3000", patterns: []string{"localhost:*"}, allow: true},
	{name: "PortPattern_LocalhostHTTPS", host: "app.test", origin: "https://localhost:8443", patterns: []string{"localhost:*"}, allow: true},
	{name: "PortPattern_NoPortRefused", host: "app.test", origin: "http://localhost", patterns: []string{"localhost:*"}},
	{name: "PortPattern_OtherHostRefused", host: "app.test", origin: "http://localhost.evil.org:3000", patterns: []string{"localhost:*"}},

	{name: "Wildcard_AllowsAll", host: "app.test", origin: "https://anything.org", patterns: []string{"*"}, allow: true},
	{name: "Wildcard_AllowsWithPort", host: "app.test", origin: "http://10.0.0.1:8080", patterns: []string{"*"}, allow: true},
	{name: "SeveralPatterns_SecondMatches", host: "app.test", origin: "http://localhost:5173", patterns: []string{"https://*.example.com", "localhost:*"}, allow: true},
	{name: "InvalidPatternIgnored", host: "app.test", origin: "https://a.example.com", patterns: []string{"[", "*.example.com"}, allow: true},

	{name: "Malformed_Null", host: "example.com", origin: "null"},
	{name: "Malformed_NoScheme", host: "example.com", origin: "example.com"},
	{name: "Malformed_NotAURL", host: "example.com", origin: "not a url"},
	{name: "Malformed_EmptyHost", host: "example.com", origin: "http://"},
	{name: "Malformed_BadIPv6", host: "example.com", origin: "http://[::1"},
	{name: "Malformed_ControlChar", host: "example.com", origin: "http://exa\x7fmple.com"},
}

func TestOriginAllowed_Policy(t *testing.T) {
	for _, tc := range originCases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/ws", nil)
			r.Host = tc.host
			if tc.origin != "" {
				r.Header.Set("Origin", tc.origin)
			}
			if got := originAllowed(r, tc.patterns); got != tc.allow {
				t.Fatalf("originAllowed(Host %q, Origin %q, %q) = %v, want %v", tc.host, tc.origin, tc.patterns, got, tc.allow)
			}
		})
	}
}

// handshakeWithOrigin sends a raw opening handshake with host and origin to srv and
// returns the response and its body.
func handshakeWithOrigin(t *testing.T, srv *httptest.Server, host, origin string) (*http.Response, string) {
	t.Helper()
	nc, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	req := "GET /ws HTTP/1.1\r\nHost: " + host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
	if origin != "" {
		req += "Origin: " + origin + "\r\n"
	}
	if _, err := io.WriteString(nc, req+"\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil {
		t.Fatal(err)
	}
	var body []byte
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ = io.ReadAll(resp.Body)
	}
	return resp, string(body)
}

// upgradeServer runs Upgrade with cfg and reports its error.
func upgradeServer(t *testing.T, cfg *ServerConfig) (*httptest.Server, <-chan error) {
	t.Helper()
	errs := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := Upgrade(w, r, cfg)
		errs <- err
		if err == nil {
			c.CloseNow()
		}
	}))
	t.Cleanup(srv.Close)
	return srv, errs
}

// upgradeResult waits for the error Upgrade returned.
func upgradeResult(t *testing.T, errs <-chan error) error {
	t.Helper()
	return waitErr(t, errs, 5*time.Second, "the handler")
}

// Through Upgrade, a refused origin is a 403 with a short body and ErrBadOrigin.
func TestUpgrade_OriginPolicy(t *testing.T) {
	for _, tc := range originCases {
		if strings.ContainsAny(tc.origin, "\x7f") {
			continue // not a valid header value on the wire
		}
		t.Run(tc.name, func(t *testing.T) {
			srv, errs := upgradeServer(t, &ServerConfig{Origins: tc.patterns})
			resp, body := handshakeWithOrigin(t, srv, tc.host, tc.origin)
			err := upgradeResult(t, errs)
			if tc.allow {
				if resp.StatusCode != http.StatusSwitchingProtocols || err != nil {
					t.Fatalf("status %d (%q), Upgrade error %v; want 101", resp.StatusCode, body, err)
				}
				return
			}
			checkOriginRefusal(t, resp, body, err)
		})
	}
}

func checkOriginRefusal(t *testing.T, resp *http.Response, body string, err error) {
	t.Helper()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("status = %d (%q), want 403", resp.StatusCode, body)
	}
	if !errors.Is(err, ErrBadOrigin) {
		t.Fatalf("Upgrade error = %v, want ErrBadOrigin", err)
	}
	var he *HandshakeError
	if !errors.As(err, &he) || he.Status != http.StatusForbidden {
		t.Fatalf("Upgrade error = %#v, want *HandshakeError with Status 403", err)
	}
	if b := strings.TrimSpace(body); b == "" || len(b) > 200 {
		t.Fatalf("body = %q, want a short non-empty text", body)
	}
}

// CheckOrigin replaces the whole policy, including the pass for same-host and
// Origin-less requests.
func TestUpgrade_CheckOriginHookOverrides(t *testing.T) {
	tests := []struct {
		name   string
		hook   func(*http.Request) bool
		host   string
		origin string
		allow  bool
	}{
		{name: "AllowsForeignOrigin", hook: func(r *http.Request) bool { return r.Header.Get("Origin") == "https://evil.org" },
			host: "example.com", origin: "https://evil.org", allow: true},
		{name: "RefusesSameHost", hook: func(*http.Request) bool { return false },
			host: "example.com", origin: "https://example.com"},
		{name: "RefusesNoOrigin", hook: func(*http.Request) bool { return false },
			host: "example.com"},
		{name: "IgnoresOriginsPatterns", hook: func(*http.Request) bool { return false },
			host: "app.test", origin: "https://a.example.com"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			called := false
			cfg := &ServerConfig{
				Origins: []string{"*.example.com"},
				CheckOrigin: func(r *http.Request) bool {
					called = true
					return tc.hook(r)
				},
			}
			srv, errs := upgradeServer(t, cfg)
			resp, body := handshakeWithOrigin(t, srv, tc.host, tc.origin)
			err := upgradeResult(t, errs)
			if !called {
				t.Error("CheckOrigin was not called")
			}
			if tc.allow {
				if resp.StatusCode != http.StatusSwitchingProtocols || err != nil {
					t.Fatalf("status %d (%q), Upgrade error %v; want 101", resp.StatusCode, body, err)
				}
				return
			}
			checkOriginRefusal(t, resp, body, err)
		})
	}
}
