package proxy

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestNewRejectsInvalidConfig(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   Config
		field string
	}{
		{"no upstreams", Config{}, "Upstreams"},
		{"bad scheme", Config{Upstreams: []string{"ftp://x"}}, "Upstreams"},
		{"negative retries", Config{Upstreams: []string{"ws://x"}, Retries: -1}, "Retries"},
		{"negative size", Config{Upstreams: []string{"ws://x"}, MaxMessageSize: -1}, "MaxMessageSize"},
		{"negative idle timeout", Config{Upstreams: []string{"ws://x"}, IdleTimeout: -1}, "IdleTimeout"},
		{"ping timeout too long", Config{Upstreams: []string{"ws://x"}, PingInterval: 1, PingTimeout: 2}, "PingTimeout"},
		{"ping timeout without interval", Config{Upstreams: []string{"ws://x"}, PingTimeout: 2}, "PingTimeout"},
		{"drain code 1005", Config{Upstreams: []string{"ws://x"}, DrainCode: 1005}, "DrainCode"},
		{"header_up sets key", Config{Upstreams: []string{"ws://x"}, HeaderUp: HeaderOps{Set: http.Header{"Sec-WebSocket-Key": {"x"}}}}, "HeaderUp"},
		{"header_up adds upgrade", Config{Upstreams: []string{"ws://x"}, HeaderUp: HeaderOps{Add: http.Header{"upgrade": {"h2c"}}}}, "HeaderUp"},
		{"negative health interval", Config{Upstreams: []string{"ws://x"}, ActiveHealth: &ActiveHealth{Interval: -1}}, "ActiveHealth.Interval"},
		{"unknown compression", Config{Upstreams: []string{"ws://x"}, Compression: 9}, "Compression"},
	} {
		_, err := New(tc.cfg)
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Field != tc.field {
			t.Errorf("%s: New = %v, want a *ConfigError for %s", tc.name, err, tc.field)
		}
	}
}

func TestForwardedHeaderDroppedUnlessTrusted(t *testing.T) {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set("Forwarded", "for=1.2.3.4")
	for _, trust := range []bool{false, true} {
		p, err := New(Config{Upstreams: []string{"ws://x"}, TrustForwarded: trust})
		if err != nil {
			t.Fatal(err)
		}
		got := p.upstreamHeader(r).Get("Forwarded")
		if want := map[bool]string{false: "", true: "for=1.2.3.4"}[trust]; got != want {
			t.Errorf("trust=%v: Forwarded = %q, want %q", trust, got, want)
		}
	}
	if !strings.Contains(r.Header.Get("Forwarded"), "1.2.3.4") {
		t.Fatal("the client's request was modified")
	}
}

// Bare host:port upstreams are ws://, or wss:// when the proxy has upstream
// TLS settings; URLs keep their scheme (http:// and https:// are aliases).
func TestParseUpstreamURL(t *testing.T) {
	for _, tc := range []struct {
		raw    string
		secure bool
		want   string
	}{
		{"a:1", false, "ws://a:1"},
		{"a:1", true, "wss://a:1"},
		{"a:1/x?q=http://b", false, "ws://a:1/x?q=http://b"},
		{"ws://a:1/x", true, "ws://a:1/x"},
		{"wss://a:1", false, "wss://a:1"},
		{"http://a:1", false, "ws://a:1"},
		{"https://a:1", false, "wss://a:1"},
	} {
		u, err := parseUpstreamURL(tc.raw, tc.secure)
		if err != nil || u.String() != tc.want {
			t.Errorf("parseUpstreamURL(%q, %v) = %v, %v; want %s", tc.raw, tc.secure, u, err, tc.want)
		}
	}
	for _, raw := range []string{"ftp://a:1", "ws:///x", "ws://a b:1"} {
		if _, err := parseUpstreamURL(raw, false); err == nil {
			t.Errorf("parseUpstreamURL(%q) accepted it", raw)
		}
	}
}
