package proxy

import (
	"encoding/base64"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/gorilla/websocket"
	"github.com/wsgate/wsgate/internal/testkit"
)

// headerCheck is one expectation on a header set: Want nil means absent.
type headerCheck struct {
	Name string
	Want []string
}

func checkHeaders(t *testing.T, who string, h http.Header, checks []headerCheck) {
	t.Helper()
	for _, c := range checks {
		if got := h.Values(c.Name); !slices.Equal(got, c.Want) {
			t.Errorf("%s: %s = %q, want %q", who, c.Name, got, c.Want)
		}
	}
}

// upgradeAndSee upgrades through a fresh proxy for cfg (raw client, headers
// hdr, request target) and returns what the upstream saw and the client's 101.
func upgradeAndSee(t *testing.T, cfg Config, upstreamPath, target string, hdr http.Header, respHeader http.Header) (seenRequest, *rawHandshake, *proxyEnv) {
	t.Helper()
	up := startUpstream(t, testkit.GorillaEchoHandler(websocket.Upgrader{}, respHeader))
	cfg.Upstreams = []string{up.ws() + upstreamPath}
	e := startProxy(t, cfg)
	r := handshake(t, e, "GET", target, hdr)
	defer r.close(t)
	if r.resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d (%q), want 101", r.resp.StatusCode, r.body)
	}
	if up.hits.Load() != 1 {
		t.Fatalf("upstream saw %d requests, want 1", up.hits.Load())
	}
	return up.last(t), r, e
}

// X-Forwarded-* describe the client; incoming ones are kept only when trusted.
func TestHeadersXForwarded(t *testing.T) {
	testkit.CheckGoroutines(t)
	incoming := http.Header{
		"X-Forwarded-For":   {"1.2.3.4"},
		"X-Forwarded-Proto": {"https"},
		"X-Forwarded-Host":  {"public.example"},
	}
	cases := []struct {
		name  string
		trust bool
		hdr   http.Header
		want  func(front string) []headerCheck
	}{
		{"set from the connection", false, nil, func(front string) []headerCheck {
			return []headerCheck{{"X-Forwarded-For", []string{"127.0.0.1"}}, {"X-Forwarded-Proto", []string{"http"}},
				{"X-Forwarded-Host", []string{front}}}
		}},
		{"untrusted incoming replaced", false, incoming, func(front string) []headerCheck {
			return []headerCheck{{"X-Forwarded-For", []string{"127.0.0.1"}}, {"X-Forwarded-Proto", []string{"http"}},
				{"X-Forwarded-Host", []string{front}}}
		}},
		{"trusted incoming appended", true, incoming, func(front string) []headerCheck {
			return []headerCheck{{"X-Forwarded-For", []string{"1.2.3.4, 127.0.0.1"}}, {"X-Forwarded-Proto", []string{"https"}},
				{"X-Forwarded-Host", []string{"public.example"}}}
		}},
		{"trusted without incoming", true, nil, func(front string) []headerCheck {
			return []headerCheck{{"X-Forwarded-For", []string{"127.0.0.1"}}, {"X-Forwarded-Proto", []string{"http"}},
				{"X-Forwarded-Host", []string{front}}}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			seen, _, e := upgradeAndSee(t, Config{TrustForwarded: tc.trust}, "", "/", tc.hdr, nil)
			checkHeaders(t, "upstream", seen.Header, tc.want(e.host()))
			if seen.Host != e.host() {
				t.Errorf("upstream Host %q, want the front's %q", seen.Host, e.host())
			}
		})
	}
}

// The client's end-to-end headers pass; hop-by-hop and Sec-WebSocket-* belong to one leg.
func TestHeadersHopByHopAndWebSocketHeadersStop(t *testing.T) {
	clientKey := testkit.NewKey()
	hdr := http.Header{
		"Connection":               {"Upgrade, X-Hop"},
		"X-Hop":                    {"per-connection"},
		"Keep-Alive":               {"timeout=5"},
		"Proxy-Authorization":      {"Basic cHJveHk6cHc="},
		"Proxy-Connection":         {"keep-alive"},
		"Te":                       {"trailers"},
		"Sec-WebSocket-Key":        {clientKey},
		"Sec-WebSocket-Extensions": {"permessage-deflate; client_max_window_bits"},
		"Sec-WebSocket-Foo":        {"bar"},
		"Origin":                   {"http://{front}"},
		"Cookie":                   {"sid=42"},
		"Authorization":            {"Bearer t0ken"},
		"User-Agent":               {"hs-test/1.0"},
		"X-Api-Key":                {"k-123"},
	}
	seen, _, e := upgradeAndSeeWithOrigin(t, Config{}, hdr)
	checkHeaders(t, "upstream", seen.Header, []headerCheck{
		{"X-Hop", nil}, {"Keep-Alive", nil}, {"Proxy-Authorization", nil}, {"Proxy-Connection", nil}, {"Te", nil},
		{"Sec-Websocket-Extensions", nil}, {"Sec-Websocket-Foo", nil}, {"Sec-Websocket-Protocol", nil},
		{"Sec-Websocket-Version", []string{"13"}},
		{"Connection", []string{"Upgrade"}}, {"Upgrade", []string{"websocket"}},
		{"Origin", []string{"http://" + e.host()}}, {"Cookie", []string{"sid=42"}},
		{"Authorization", []string{"Bearer t0ken"}}, {"User-Agent", []string{"hs-test/1.0"}},
		{"X-Api-Key", []string{"k-123"}},
	})
	keys := seen.Header.Values("Sec-WebSocket-Key")
	if len(keys) != 1 || keys[0] == clientKey {
		t.Fatalf("upstream key %q, want one fresh key (client's %q)", keys, clientKey)
	}
	if b, err := base64.StdEncoding.DecodeString(keys[0]); err != nil || len(b) != 16 {
		t.Errorf("upstream key %q is not 16 base64 bytes", keys[0])
	}
}

// upgradeAndSeeWithOrigin is upgradeAndSee with "{front}" in header values
// replaced by the front's host, which is only known once the proxy runs.
func upgradeAndSeeWithOrigin(t *testing.T, cfg Config, hdr http.Header) (seenRequest, *rawHandshake, *proxyEnv) {
	t.Helper()
	up := startUpstream(t, testkit.GorillaEchoHandler(websocket.Upgrader{}, nil))
	cfg.Upstreams = []string{up.ws()}
	e := startProxy(t, cfg)
	h := make(http.Header, len(hdr))
	for k, vs := range hdr {
		for _, v := range vs {
			h[k] = append(h[k], replaceFront(v, e.host()))
		}
	}
	r := handshake(t, e, "GET", "/", h)
	defer r.close(t)
	if r.resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d (%q), want 101", r.resp.StatusCode, r.body)
	}
	return up.last(t), r, e
}

func replaceFront(v, host string) string { return strings.ReplaceAll(v, "{front}", host) }

// ForwardHeaders is an allow-list: only the listed client headers (and X-Forwarded-*) pass.
func TestHeadersForwardAllowList(t *testing.T) {
	cases := []struct {
		name  string
		allow []string
		hdr   http.Header
		want  []headerCheck
	}{
		{"only Cookie", []string{"Cookie"},
			http.Header{"Cookie": {"sid=42"}, "Authorization": {"Bearer x"}, "User-Agent": {"ua"}, "X-Api-Key": {"k"}, "Origin": {"http://{front}"}},
			[]headerCheck{{"Cookie", []string{"sid=42"}}, {"Authorization", nil}, {"User-Agent", nil}, {"X-Api-Key", nil},
				{"Origin", nil}, {"X-Forwarded-For", []string{"127.0.0.1"}}, {"X-Forwarded-Proto", []string{"http"}},
				{"X-Forwarded-Host", []string{"{front}"}}}},
		{"empty list passes nothing", []string{},
			http.Header{"Cookie": {"sid=42"}, "X-Api-Key": {"k"}},
			[]headerCheck{{"Cookie", nil}, {"X-Api-Key", nil}, {"X-Forwarded-For", []string{"127.0.0.1"}}}},
		{"listed hop-by-hop and websocket headers still stop", []string{"Keep-Alive", "Sec-WebSocket-Extensions", "x-api-key"},
			http.Header{"Keep-Alive": {"timeout=5"}, "Sec-WebSocket-Extensions": {"permessage-deflate"}, "X-Api-Key": {"k"}},
			[]headerCheck{{"Keep-Alive", nil}, {"Sec-Websocket-Extensions", nil}, {"X-Api-Key", []string{"k"}}}},
		{"listed but Connection-named header stops", []string{"X-Hop", "Cookie"},
			http.Header{"Connection": {"Upgrade, X-Hop"}, "X-Hop": {"per-connection"}, "Cookie": {"c=1"}},
			[]headerCheck{{"X-Hop", nil}, {"Cookie", []string{"c=1"}}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			seen, _, e := upgradeAndSeeWithOrigin(t, Config{ForwardHeaders: tc.allow}, tc.hdr)
			want := make([]headerCheck, len(tc.want))
			for i, c := range tc.want {
				want[i] = headerCheck{Name: c.Name}
				for _, v := range c.Want {
					want[i].Want = append(want[i].Want, replaceFront(v, e.host()))
				}
			}
			checkHeaders(t, "upstream", seen.Header, want)
		})
	}
}

// HeaderUp edits the upstream request, HeaderDown the client's 101; the
// upstream's own 101 headers (Set-Cookie) reach the client, its handshake headers do not.
func TestHeadersUpAndDownEdits(t *testing.T) {
	testkit.CheckGoroutines(t)
	t.Run("", func(t *testing.T) {
		cfg := Config{
			HeaderUp: HeaderOps{
				Set:    http.Header{"X-Set": {"proxy"}},
				Add:    http.Header{"X-Add": {"second"}},
				Delete: []string{"User-Agent"},
			},
			HeaderDown: HeaderOps{
				Set:    http.Header{"X-Down": {"d"}},
				Delete: []string{"X-Secret"},
			},
		}
		clientHdr := http.Header{"X-Set": {"client"}, "X-Add": {"first"}, "User-Agent": {"ua"}, "X-Keep": {"k"}}
		upResp := http.Header{"Set-Cookie": {"sid=1; Path=/"}, "X-Secret": {"internal"}, "X-Upstream": {"u"}}
		seen, r, _ := upgradeAndSee(t, cfg, "", "/", clientHdr, upResp)
		checkHeaders(t, "upstream", seen.Header, []headerCheck{
			{"X-Set", []string{"proxy"}}, {"X-Add", []string{"first", "second"}}, {"User-Agent", nil}, {"X-Keep", []string{"k"}},
		})
		checkHeaders(t, "client 101", r.resp.Header, []headerCheck{
			{"X-Down", []string{"d"}}, {"Set-Cookie", []string{"sid=1; Path=/"}}, {"X-Secret", nil}, {"X-Upstream", []string{"u"}},
			{"Upgrade", []string{"websocket"}}, {"Connection", []string{"Upgrade"}},
			{"Sec-Websocket-Accept", []string{testkit.AcceptKey(r.key)}},
		})
	})
}

// The upstream URL's path replaces the client's; without one the client's path is used. The query passes.
func TestHeadersPathAndQuery(t *testing.T) {
	cases := []struct {
		name, upstreamPath, target, want string
	}{
		{"no upstream path", "", "/chat?room=1", "/chat?room=1"},
		{"root upstream path", "/", "/chat?room=1", "/chat?room=1"},
		{"upstream path", "/backend", "/chat?room=1", "/backend?room=1"},
		{"escaped client path", "", "/a%2Fb?x=%20y", "/a%2Fb?x=%20y"},
		{"upstream path and query win", "/backend?fixed=1", "/chat?room=1", "/backend?fixed=1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			seen, _, _ := upgradeAndSee(t, Config{}, tc.upstreamPath, tc.target, nil, nil)
			if seen.URI != tc.want {
				t.Errorf("upstream request-target %q, want %q", seen.URI, tc.want)
			}
		})
	}
}
