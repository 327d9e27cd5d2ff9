package caddymodule

import (
	"net/http"
	"sync"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/wsgate/wsgate/proxy"
)

// balancer is the proxy.Balancer for a loaded reverse_proxy selection policy
// (nil: random). least_conn and random_choose compare active sessions, which
// only the proxy counts (reverse_proxy's per-host request counters cannot be
// set from outside its package), so they are the proxy's own policies of the
// same names; every other policy, third-party ones included, is Caddy's module
// itself, selecting among the upstreams the proxy's health checks let through.
func balancer(sel reverseproxy.Selector) proxy.Balancer {
	switch s := sel.(type) {
	case nil:
		return proxy.Random()
	case *reverseproxy.LeastConnSelection:
		return proxy.LeastConn()
	case *reverseproxy.RandomChoiceSelection:
		return proxy.RandomChoose(s.Choose)
	}
	return &caddyBalancer{sel: sel}
}

// caddyBalancer hands a Caddy selection policy a pool of reverseproxy.Upstreams
// that mirror the proxy's: the same dial addresses (host:port), in the same
// order, so that hashing policies pick what reverse_proxy picks for the same
// request and upstreams, and the cookie policy names them by the same HMAC.
// The mirrors are all available to the policy: the pool it gets holds only
// the upstreams the proxy's own health checks let through.
type caddyBalancer struct {
	sel     reverseproxy.Selector
	mirrors sync.Map // *proxy.Upstream → *reverseproxy.Upstream
}

func (b *caddyBalancer) Select(pool []*proxy.Upstream, r *http.Request, w http.ResponseWriter) *proxy.Upstream {
	mirrored := make(reverseproxy.UpstreamPool, len(pool))
	for i, u := range pool {
		mirrored[i] = b.mirror(u)
	}
	chosen := b.sel.Select(mirrored, r, w)
	for i, m := range mirrored {
		if m == chosen {
			return pool[i]
		}
	}
	return nil
}

// mirror returns u's reverseproxy.Upstream, made on first use.
func (b *caddyBalancer) mirror(u *proxy.Upstream) *reverseproxy.Upstream {
	if m, ok := b.mirrors.Load(u); ok {
		return m.(*reverseproxy.Upstream)
	}
	m, _ := b.mirrors.LoadOrStore(u, &reverseproxy.Upstream{Host: new(reverseproxy.Host), Dial: u.HostPort()})
	return m.(*reverseproxy.Upstream)
}
