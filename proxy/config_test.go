package proxy

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestNewRejectsInvalidConfig(t *testing.T) {
	for name, cfg := range map[string]Config{
		"no upstreams":           {},
		"bad scheme":             {Upstreams: []string{"ftp://x"}},
		"negative retries":       {Upstreams: []string{"ws://x"}, Retries: -1},
		"negative size":          {Upstreams: []string{"ws://x"}, MaxMessageSize: -1},
		"ping timeout too long":  {Upstreams: []string{"ws://x"}, PingInterval: 1, PingTimeout: 2},
		"drain code 1005":        {Upstreams: []string{"ws://x"}, DrainCode: 1005},
		"header_up sets key":     {Upstreams: []string{"ws://x"}, HeaderUp: HeaderOps{Set: http.Header{"Sec-WebSocket-Key": {"x"}}}},
		"header_up adds upgrade": {Upstreams: []string{"ws://x"}, HeaderUp: HeaderOps{Add: http.Header{"upgrade": {"h2c"}}}},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New accepted it", name)
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
