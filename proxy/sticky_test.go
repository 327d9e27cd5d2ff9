package proxy

import (
	"maps"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/internal/testkit"
)

// namedPool returns ups' ws:// URLs, for Config.Upstreams.
func namedPool(ups []*testkit.Named) []string {
	out := make([]string, len(ups))
	for i, u := range ups {
		out[i] = u.WS
	}
	return out
}

// namedAddr returns the host:port of the upstream called name in ups.
func namedAddr(t *testing.T, ups []*testkit.Named, name string) string {
	t.Helper()
	for _, u := range ups {
		if u.Name == name {
			return u.Addr
		}
	}
	t.Fatalf("no upstream called %q", name)
	return ""
}

// onlyCookie returns the one cookie resp sets, failing the test unless there is exactly one.
func onlyCookie(t *testing.T, resp *http.Response) *http.Cookie {
	t.Helper()
	cs := resp.Cookies()
	if len(cs) != 1 {
		t.Fatalf("%d cookies set (%q), want 1", len(cs), resp.Header.Values("Set-Cookie"))
	}
	return cs[0]
}

// A client whose first request is the WebSocket gets Caddy's cookie on the
// 101 (the HMAC of the upstream's host:port, Path=/, HttpOnly, SameSite=Lax,
// Max-Age) and is sticky from then on; clients without the cookie spread.
func TestStickyCookieSetOn101AndFollowed(t *testing.T) {
	testkit.CheckGoroutines(t)
	ups := testkit.StartNamedSet(t, 3)
	e := startProxy(t, Config{Upstreams: namedPool(ups), Balancer: &StickyCookie{Name: "sid", Secret: "s3cret", MaxAge: time.Hour}})
	spread := map[string]bool{}
	for range 20 {
		first, resp := testkit.NamedWS(t, nil, e.ws("/chat"), nil)
		if first == "" {
			t.Fatalf("upgrade refused: %v", resp)
		}
		spread[first] = true
		ck := onlyCookie(t, resp)
		if want := testkit.LBCookie("s3cret", namedAddr(t, ups, first)); ck.Name != "sid" || ck.Value != want {
			t.Fatalf("cookie %s=%s, want sid=%s (the HMAC of %s's host:port)", ck.Name, ck.Value, want, first)
		}
		if raw := resp.Header.Get("Set-Cookie"); !strings.HasSuffix(raw, "; Path=/; Max-Age=3600; HttpOnly; SameSite=Lax") {
			t.Fatalf("Set-Cookie %q, want Path=/; Max-Age=3600; HttpOnly; SameSite=Lax and no Secure", raw)
		}
		for range 3 {
			got, resp := testkit.NamedWS(t, nil, e.ws("/chat"), http.Header{"Cookie": {"sid=" + ck.Value}})
			if got != first {
				t.Fatalf("with the cookie of %s the upgrade went to %s", first, got)
			}
			if sc := resp.Header.Values("Set-Cookie"); len(sc) != 0 {
				t.Fatalf("a valid cookie was set again: %q", sc)
			}
		}
	}
	if len(spread) < 2 {
		t.Errorf("20 clients without a cookie all went to %v", spread)
	}
}

// Over TLS on the client leg the cookie is Secure and SameSite=None, as Caddy sets it.
func TestStickyCookieOverTLSIsSecure(t *testing.T) {
	testkit.CheckGoroutines(t)
	ups := testkit.StartNamedSet(t, 2)
	p, err := New(Config{Upstreams: namedPool(ups), Balancer: &StickyCookie{}})
	if err != nil {
		t.Fatal(err)
	}
	testkit.StopAtEnd(t, p, 3*time.Second)
	front := httptest.NewTLSServer(p)
	t.Cleanup(front.Close)
	d := &websocket.Dialer{TLSClientConfig: front.Client().Transport.(*http.Transport).TLSClientConfig, HandshakeTimeout: 5 * time.Second}
	name, resp := testkit.NamedWS(t, d, testkit.WSURL(front.URL)+"/", nil)
	if name == "" {
		t.Fatalf("upgrade refused: %v", resp)
	}
	ck := onlyCookie(t, resp)
	if ck.Name != "lb" || ck.Value != testkit.LBCookie("", namedAddr(t, ups, name)) || ck.Path != "/" || !ck.HttpOnly || !ck.Secure || ck.SameSite != http.SameSiteNoneMode || ck.MaxAge != 0 {
		t.Errorf("Set-Cookie %q, want lb=<HMAC>; Path=/; HttpOnly; Secure; SameSite=None, a session cookie", resp.Header.Get("Set-Cookie"))
	}
}

// An upstream's refusal is relayed with the sticky cookie, and with the
// cookies the upstream set itself, as reverse_proxy relays a response.
func TestStickyCookieOnRelayedRefusal(t *testing.T) {
	for _, upCookie := range []string{"", "app=1; Path=/"} {
		t.Run("upstream cookie "+upCookie, func(t *testing.T) {
			hdr := http.Header{}
			if upCookie != "" {
				hdr.Set("Set-Cookie", upCookie)
			}
			up := startUpstream(t, refuse(http.StatusForbidden, hdr, "no"))
			e := startProxy(t, Config{Upstreams: []string{up.ws()}, Balancer: &StickyCookie{Name: "sid", Secret: "k"}})
			r := handshake(t, e, "GET", "/", nil)
			if r.resp.StatusCode != http.StatusForbidden || r.body != "no" {
				t.Fatalf("got %d %q, want the upstream's 403", r.resp.StatusCode, r.body)
			}
			got := map[string]string{}
			for _, c := range r.resp.Cookies() {
				got[c.Name] = c.Value
			}
			want := map[string]string{"sid": testkit.LBCookie("k", strings.TrimPrefix(up.URL, "http://"))}
			if upCookie != "" {
				want["app"] = "1"
			}
			if !maps.Equal(got, want) {
				t.Errorf("refusal sets cookies %q, want %v", r.resp.Header.Values("Set-Cookie"), want)
			}
		})
	}
}

// A cookie that names no available upstream (a forged value, an upstream
// that failed) gets a fallback choice and a new cookie; a client with a
// cookie jar whose first upgrade failed over ends up sticky to the upstream
// that served it.
func TestStickyCookieReplacedWhenItsUpstreamIsGone(t *testing.T) {
	testkit.CheckGoroutines(t)
	alive := testkit.StartNamed(t, "alive", nil)
	dead := testkit.DeadURL(t)
	e := startProxy(t, Config{Upstreams: []string{dead, alive.WS}, Balancer: &StickyCookie{Fallback: First()}})

	jar, _ := cookiejar.New(nil)
	d := &websocket.Dialer{Jar: jar, HandshakeTimeout: 5 * time.Second}
	if name, resp := testkit.NamedWS(t, d, e.ws("/"), nil); name != "alive" {
		t.Fatalf("first upgrade: %q %v, want it failed over to alive", name, resp)
	}
	for range 3 {
		name, resp := testkit.NamedWS(t, d, e.ws("/"), nil)
		if name != "alive" || len(resp.Cookies()) != 0 {
			t.Fatalf("with the jar's cookie: %q, cookies %q; want alive and no new cookie", name, resp.Header.Values("Set-Cookie"))
		}
	}

	for _, value := range []string{"forged", testkit.LBCookie("", strings.TrimPrefix(dead, "ws://"))} {
		name, resp := testkit.NamedWS(t, nil, e.ws("/"), http.Header{"Cookie": {"lb=" + value}})
		if name != "alive" {
			t.Fatalf("cookie %s: %q %v, want alive", value, name, resp)
		}
		if cs := resp.Cookies(); len(cs) == 0 || cs[len(cs)-1].Value != testkit.LBCookie("", alive.Addr) {
			t.Errorf("cookie %s: Set-Cookie %q, want the last one naming alive", value, resp.Header.Values("Set-Cookie"))
		}
	}
}
