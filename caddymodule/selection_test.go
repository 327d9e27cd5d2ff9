package caddymodule

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/internal/testkit"
	"github.com/wsgate/wsgate/internal/testkit/caddytest"
	"github.com/wsgate/wsgate/proxy"
)

// loadSelector loads and provisions a selection policy from its JSON, as the
// handler's load_balancing.selection_policy.
func loadSelector(t *testing.T, ctx caddy.Context, raw string) reverseproxy.Selector {
	t.Helper()
	lb := &LoadBalancing{SelectionPolicyRaw: json.RawMessage(raw)}
	mod, err := ctx.LoadModule(lb, "SelectionPolicyRaw")
	if err != nil {
		t.Fatalf("loading %s: %v", raw, err)
	}
	return mod.(reverseproxy.Selector)
}

// randomPools returns a pool of n upstreams as the proxy knows them (ws://
// and wss:// URLs, some without a port) and as reverse_proxy knows the same
// ones (their dial addresses, host:port).
func randomPools(n int) ([]*proxy.Upstream, reverseproxy.UpstreamPool) {
	ours := make([]*proxy.Upstream, n)
	caddys := make(reverseproxy.UpstreamPool, n)
	for i := range n {
		host := fmt.Sprintf("10.%d.%d.%d", rand.IntN(256), rand.IntN(256), rand.IntN(256))
		if rand.IntN(4) == 0 {
			host = fmt.Sprintf("backend-%d.internal", rand.IntN(1000))
		}
		scheme, port := "ws", fmt.Sprint(1024+rand.IntN(60000))
		u := &url.URL{Scheme: scheme, Host: net.JoinHostPort(host, port), Path: "/"}
		switch rand.IntN(4) {
		case 0: // the scheme's default port, implicit in the URL
			u.Host, port = host, "80"
		case 1:
			u.Scheme, u.Host, port = "wss", host, "443"
		}
		ours[i] = &proxy.Upstream{URL: u}
		caddys[i] = &reverseproxy.Upstream{Dial: net.JoinHostPort(host, port)}
	}
	return ours, caddys
}

// randomToken returns a short random string of URL- and header-safe characters.
func randomToken() string {
	const chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_."
	b := make([]byte, 1+rand.IntN(24))
	for i := range b {
		b[i] = chars[rand.IntN(len(chars))]
	}
	return string(b)
}

// randomRequest returns a request with a random client address (v4 or v6,
// also as the client IP Caddy's server would have set), URI, query values,
// X-User header and Host.
func randomRequest() *http.Request {
	target := "/" + randomToken() + "/" + randomToken()
	if rand.IntN(2) == 0 {
		q := url.Values{}
		for range 1 + rand.IntN(3) { // several values of one key are joined
			q.Add("user", randomToken())
		}
		q.Set("t", randomToken())
		target += "?" + q.Encode()
	}
	r := httptest.NewRequest(http.MethodGet, target, nil)
	ip := net.IPv4(byte(rand.IntN(256)), byte(rand.IntN(256)), byte(rand.IntN(256)), byte(rand.IntN(256))).String()
	if rand.IntN(3) == 0 {
		ip = fmt.Sprintf("2001:db8::%x", rand.IntN(1<<16))
	}
	r.RemoteAddr = net.JoinHostPort(ip, fmt.Sprint(1024+rand.IntN(60000)))
	r.Host = randomToken() + ".example"
	if rand.IntN(4) != 0 {
		r.Header.Set("X-User", randomToken())
	}
	return r.WithContext(context.WithValue(r.Context(), caddyhttp.VarsCtxKey, map[string]any{caddyhttp.ClientIPVarKey: ip}))
}

// The proxy's own hashing policies (what chi users get) pick exactly the
// upstream Caddy's modules pick for the same request and upstreams, and so
// does ws, which runs Caddy's module over the proxy's upstreams.
func TestProxyBalancersPickWhatCaddyPicks(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	for _, tc := range []struct {
		caddy string
		ours  proxy.Balancer
		key   string // the header field or query key hashed, without which the choice is random
	}{
		{`{"policy":"ip_hash"}`, proxy.IPHash(), ""},
		{`{"policy":"client_ip_hash"}`, mustParseBalancer(t, "client_ip_hash"), ""},
		{`{"policy":"uri_hash"}`, proxy.URIHash(), ""},
		{`{"policy":"query","key":"user"}`, proxy.QueryHash("user"), "?user"},
		{`{"policy":"header","field":"X-User"}`, proxy.HeaderHash("X-User"), "X-User"},
		{`{"policy":"header","field":"Host"}`, proxy.HeaderHash("Host"), ""},
		{`{"policy":"first"}`, proxy.First(), ""},
	} {
		t.Run(tc.caddy, func(t *testing.T) {
			sel := loadSelector(t, ctx, tc.caddy)
			ws := balancer(sel)
			compared := 0
			for range 3000 {
				ours, caddys := randomPools(1 + rand.IntN(6))
				r := randomRequest()
				if q, ok := strings.CutPrefix(tc.key, "?"); ok && !r.URL.Query().Has(q) || !ok && tc.key != "" && r.Header.Get(tc.key) == "" {
					continue // a random choice
				}
				want := slices.Index(caddys, sel.Select(caddys, r, nil))
				got := slices.Index(ours, tc.ours.Select(ours, r, nil))
				viaWS := slices.Index(ours, ws.Select(ours, r, nil))
				if got != want || viaWS != want {
					t.Fatalf("pool %v, request %s %s from %s, X-User %q: Caddy picks %d, the proxy %d, ws %d",
						dials(caddys), r.Host, r.RequestURI, r.RemoteAddr, r.Header.Get("X-User"), want, got, viaWS)
				}
				compared++
			}
			if compared < 500 {
				t.Fatalf("only %d requests compared", compared)
			}
		})
	}
}

// proxy.StickyCookie is Caddy's cookie policy: for the same name, secret,
// max_age and fallback it picks the same upstream and sets the same
// Set-Cookie (none for a valid cookie), over plain HTTP and over TLS.
func TestStickyCookieIsCaddysCookiePolicy(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	sel := loadSelector(t, ctx, `{"policy":"cookie","name":"sid","secret":"s3cret","max_age":"1h","fallback":{"policy":"first"}}`)
	ours := &proxy.StickyCookie{Name: "sid", Secret: "s3cret", MaxAge: time.Hour, Fallback: proxy.First()}
	ws := balancer(sel)
	for i := range 2000 {
		oursPool, caddys := randomPools(1 + rand.IntN(6))
		r := randomRequest()
		if i%2 == 1 {
			r.TLS = &tls.ConnectionState{}
		}
		switch rand.IntN(3) {
		case 0: // a cookie Caddy set for one of the upstreams
			w := httptest.NewRecorder()
			sel.Select(reverseproxy.UpstreamPool{caddys[rand.IntN(len(caddys))]}, r, w)
			r.Header.Set("Cookie", w.Result().Cookies()[0].String())
		case 1: // a cookie that names none
			r.AddCookie(&http.Cookie{Name: "sid", Value: randomToken()})
		}
		wc, wo, ww := httptest.NewRecorder(), httptest.NewRecorder(), httptest.NewRecorder()
		want := slices.Index(caddys, sel.Select(caddys, r, wc))
		got := slices.Index(oursPool, ours.Select(oursPool, r, wo))
		viaWS := slices.Index(oursPool, ws.Select(oursPool, r, ww))
		cookies := [3][]string{wc.Header().Values("Set-Cookie"), wo.Header().Values("Set-Cookie"), ww.Header().Values("Set-Cookie")}
		if got != want || viaWS != want || !slices.Equal(cookies[1], cookies[0]) || !slices.Equal(cookies[2], cookies[0]) {
			t.Fatalf("pool %v, cookie %q, TLS %v: Caddy picks %d and sets %q, the proxy %d %q, ws %d %q",
				dials(caddys), r.Header.Get("Cookie"), r.TLS != nil, want, cookies[0], got, cookies[1], viaWS, cookies[2])
		}
	}
}

// dials lists a Caddy pool's dial addresses.
func dials(pool reverseproxy.UpstreamPool) []string {
	out := make([]string, len(pool))
	for i, u := range pool {
		out[i] = u.Dial
	}
	return out
}

// mustParseBalancer is proxy.ParseBalancer that fails the test on an error.
func mustParseBalancer(t *testing.T, policy string, args ...string) proxy.Balancer {
	t.Helper()
	b, err := proxy.ParseBalancer(policy, args...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sameChoiceClient sends plain requests and upgrades from one local address
// (a client IP of 127.0.0.0/8), over TLS with tlsCfg if set.
type sameChoiceClient struct {
	http *http.Client
	ws   *websocket.Dialer
}

func newSameChoiceClient(ip string, tlsCfg *tls.Config) sameChoiceClient {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	return sameChoiceClient{
		http: &http.Client{Transport: &http.Transport{DialContext: d.DialContext, TLSClientConfig: tlsCfg, DisableKeepAlives: true}},
		ws:   &websocket.Dialer{NetDialContext: d.DialContext, TLSClientConfig: tlsCfg, HandshakeTimeout: 5 * time.Second},
	}
}

// get sends a plain GET of target with header (reverse_proxy's) and returns
// the upstream that served it and the cookies the answer set.
func (c sameChoiceClient) get(t *testing.T, base, target string, header http.Header) (string, []string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, base+target, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = header.Clone()
	name, resp, _ := testkit.NamedHTTP(t, c.http, req)
	if resp.StatusCode != http.StatusOK || name == "" {
		t.Fatalf("GET %s: %s, from %q", target, resp.Status, name)
	}
	return name, resp.Header.Values("Set-Cookie")
}

// upgrade upgrades to target with header (ws's) and returns the upstream
// that served it and the cookies the 101 set.
func (c sameChoiceClient) upgrade(t *testing.T, base, target string, header http.Header) (string, []string) {
	t.Helper()
	name, resp := testkit.NamedWS(t, c.ws, testkit.WSURL(base)+target, header)
	if name == "" {
		t.Fatalf("upgrade %s refused: %v", target, resp)
	}
	return name, resp.Header.Values("Set-Cookie")
}

// sameChoiceRoute is a route for the paths under prefix serving, as a
// Socket.IO app is served, plain requests with reverse_proxy and upgrades
// with ws, both with lb_policy policy over the same upstreams: wsList for ws
// (URLs or host:port), rpList for reverse_proxy (host:port).
func sameChoiceRoute(prefix, wsList, rpList, policy string) string {
	return fmt.Sprintf("\thandle %s* {\n\t\tws %s {\n\t\t\tlb_policy %s\n\t\t}\n\t\treverse_proxy %s {\n\t\t\tlb_policy %s\n\t\t}\n\t}\n",
		prefix, wsList, policy, rpList, policy)
}

// upstreamLists returns ups as ws takes them (ws:// URLs and bare host:port,
// mixed) and as reverse_proxy takes them (host:port): the same host:port
// either way, which the hashes and cookies are computed over.
func upstreamLists(ups []*testkit.Named) (ws, rp string) {
	var wsl, rpl []string
	for i, u := range ups {
		if i%2 == 0 {
			wsl = append(wsl, u.WS)
		} else {
			wsl = append(wsl, u.Addr)
		}
		rpl = append(rpl, u.Addr)
	}
	return strings.Join(wsl, " "), strings.Join(rpl, " ")
}

// For the same request and the same upstreams, ws selects the upstream
// reverse_proxy selects, for every hashing policy and first: random client
// IPs (dialing from 127.0.0.x), URIs, query values and header values.
func TestWSSelectsWhatReverseProxySelects(t *testing.T) {
	ups := testkit.StartNamedSet(t, 3)
	wsList, rpList := upstreamLists(ups)
	policies := []string{"ip_hash", "client_ip_hash", "uri_hash", "query user", "header X-User", "first"}
	port := testkit.FreePort(t)
	cfg := fmt.Sprintf("%s:%d {\n", caddytest.Global, port)
	for _, p := range policies {
		cfg += sameChoiceRoute("/"+strings.Fields(p)[0]+"/", wsList, rpList, p)
	}
	caddytest.Load(t, cfg+"}\n")
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	for _, p := range policies {
		t.Run(p, func(t *testing.T) {
			prefix := "/" + strings.Fields(p)[0] + "/"
			spread := map[string]int{}
			for range 60 {
				ip, target, h := "127.0.0.1", prefix, http.Header{}
				switch p {
				case "ip_hash", "client_ip_hash":
					ip = fmt.Sprintf("127.0.0.%d", 1+rand.IntN(254))
				case "uri_hash":
					target = prefix + randomToken() + "/?v=" + randomToken()
				case "query user":
					target = prefix + "?user=" + randomToken()
				case "header X-User":
					h.Set("X-User", randomToken())
				}
				c := newSameChoiceClient(ip, nil)
				rp, _ := c.get(t, base, target, h)
				ws, _ := c.upgrade(t, base, target, h)
				if rp != ws {
					t.Fatalf("from %s, %s, header %v: reverse_proxy chose %s, ws %s", ip, target, h, rp, ws)
				}
				spread[rp]++
			}
			if p == "first" && spread["u0"] != 60 || p != "first" && len(spread) < 2 {
				t.Errorf("choices %v", spread)
			}
		})
	}
}

// The cookie policy in ws sets reverse_proxy's cookie: the same Set-Cookie
// for the same upstream (name, HMAC, Path=/, Max-Age, HttpOnly, SameSite=Lax;
// Secure and SameSite=None over TLS), on the 101 and on a relayed refusal
// (beside the upstream's own cookies).
// Either's cookie leads the other to its upstream, and a client whose first
// request is the upgrade is sticky from then on.
func TestWSSetsReverseProxysCookie(t *testing.T) {
	ups := testkit.StartNamedSet(t, 3)
	wsList, rpList := upstreamLists(ups)
	refusing := testkit.Serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if websocket.IsWebSocketUpgrade(r) {
			w.Header().Set("Set-Cookie", "app=1")
			http.Error(w, "no", http.StatusForbidden)
			return
		}
		w.Header().Set("X-Upstream", "refusing")
		io.WriteString(w, "refusing")
	}), nil)
	ca := newTestCA(t)
	_, certFile, keyFile := ca.issue(t, "site", false, "127.0.0.1")
	const policy = "cookie sid s3cret {\n\t\t\t\tmax_age 1h\n\t\t\t}"
	plain, secure := testkit.FreePort(t), testkit.FreePort(t)
	caddytest.Load(t, caddytest.Global+
		fmt.Sprintf("http://:%d {\n", plain)+
		sameChoiceRoute("/socket.io/", wsList, rpList, policy)+
		sameChoiceRoute("/refused/", refusing, refusing, policy)+
		fmt.Sprintf("}\nhttps://:%d {\n\ttls %s %s\n", secure, certFile, keyFile)+
		sameChoiceRoute("/socket.io/", wsList, rpList, policy)+"}\n")

	for _, tc := range []struct {
		name, base, attrs string
		tls               *tls.Config
	}{
		{"plain", fmt.Sprintf("http://127.0.0.1:%d", plain), "; Path=/; Max-Age=3600; HttpOnly; SameSite=Lax", nil},
		{"tls", fmt.Sprintf("https://127.0.0.1:%d", secure), "; Path=/; Max-Age=3600; HttpOnly; Secure; SameSite=None", &tls.Config{RootCAs: ca.pool()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			set := map[string]map[string]string{"reverse_proxy": {}, "ws": {}} // who set it → upstream → Set-Cookie
			for i := range 40 {
				c := newSameChoiceClient("127.0.0.1", tc.tls)
				var first, firstBy string
				var cookies []string
				if i%2 == 0 {
					first, cookies = c.get(t, tc.base, "/socket.io/", nil)
					firstBy = "reverse_proxy"
				} else {
					first, cookies = c.upgrade(t, tc.base, "/socket.io/", nil)
					firstBy = "ws"
				}
				if len(cookies) != 1 || !strings.HasSuffix(cookies[0], tc.attrs) {
					t.Fatalf("%s set %q, want one sid cookie ending %q", firstBy, cookies, tc.attrs)
				}
				set[firstBy][first] = cookies[0]
				ck, err := http.ParseSetCookie(cookies[0])
				if err != nil {
					t.Fatal(err)
				}
				withCookie := http.Header{"Cookie": {ck.Name + "=" + ck.Value}}
				for j, next := range []func(*testing.T, string, string, http.Header) (string, []string){c.get, c.upgrade, c.upgrade} {
					got, again := next(t, tc.base, "/socket.io/", withCookie)
					if got != first || len(again) != 0 {
						t.Fatalf("request %d with the cookie %s set for %s: served by %s, setting %q", j+2, firstBy, first, got, again)
					}
				}
			}
			compared := 0
			for up, ws := range set["ws"] {
				if rp, ok := set["reverse_proxy"][up]; ok {
					compared++
					if ws != rp {
						t.Errorf("for %s ws set %q, reverse_proxy %q", up, ws, rp)
					}
				}
			}
			if compared < 2 {
				t.Errorf("cookies of %d upstreams compared (%v)", compared, set)
			}
		})
	}

	t.Run("refusal", func(t *testing.T) {
		c := newSameChoiceClient("127.0.0.1", nil)
		base := fmt.Sprintf("http://127.0.0.1:%d", plain)
		_, rpSet := c.get(t, base, "/refused/", nil)
		_, resp := testkit.NamedWS(t, c.ws, testkit.WSURL(base)+"/refused/", nil)
		if resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Fatalf("upgrade: %v, want the upstream's 403", resp)
		}
		wsSet := resp.Header.Values("Set-Cookie")
		if len(rpSet) != 1 || len(wsSet) != 2 || !slices.Contains(wsSet, rpSet[0]) || !slices.Contains(wsSet, "app=1") {
			t.Errorf("the refusal set %q, want reverse_proxy's %q and the upstream's app=1", wsSet, rpSet)
		}
	})
}
