package proxy

import (
	"net"
	"net/http"
	"strings"

	"github.com/cespare/xxhash/v2"
)

// IPHash returns a Balancer that maps each client IP (r.RemoteAddr without its
// port; chi's RealIP may have set it) to the same upstream, for sessions that
// stick without cookies. It is Caddy's ip_hash: for the same request and
// upstreams, both pick the same one.
func IPHash() Balancer { return BalancerFunc(ipHash) }

func ipHash(pool []*Upstream, r *http.Request, _ http.ResponseWriter) *Upstream {
	ip, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		ip = r.RemoteAddr
	}
	return hashSelect(pool, ip)
}

// URIHash returns a Balancer that maps each request URI (path and query) to
// the same upstream: Caddy's uri_hash.
func URIHash() Balancer { return BalancerFunc(uriHash) }

func uriHash(pool []*Upstream, r *http.Request, _ http.ResponseWriter) *Upstream {
	return hashSelect(pool, r.RequestURI)
}

// QueryHash returns a Balancer that maps each value of query parameter key
// (all its values, comma-joined) to the same upstream, and requests without it
// to a random one: Caddy's query policy.
func QueryHash(key string) Balancer { return queryHash(key) }

type queryHash string

func (k queryHash) Select(pool []*Upstream, r *http.Request, w http.ResponseWriter) *Upstream {
	v := strings.Join(r.URL.Query()[string(k)], ",")
	if v == "" {
		return randomUpstream(pool, r, w)
	}
	return hashSelect(pool, v)
}

// HeaderHash returns a Balancer that maps each value of request header field
// to the same upstream ("Host" is r.Host), and requests without it to a random
// one: Caddy's header policy.
func HeaderHash(field string) Balancer { return headerHash(http.CanonicalHeaderKey(field)) }

type headerHash string

func (h headerHash) Select(pool []*Upstream, r *http.Request, w http.ResponseWriter) *Upstream {
	v := r.Header.Get(string(h))
	if h == "Host" {
		v = r.Host
	}
	if v == "" {
		return randomUpstream(pool, r, w)
	}
	return hashSelect(pool, v)
}

// hashSelect is rendezvous (highest random weight) hashing as Caddy does it:
// each upstream's weight for key is the xxHash of its host:port followed by the
// key, and the heaviest wins. Every proxy instance (and Caddy's reverse_proxy)
// agrees on the choice, and removing an upstream only remaps the keys it won.
func hashSelect(pool []*Upstream, key string) *Upstream {
	var best *Upstream
	var bestW uint64
	var d xxhash.Digest
	for _, u := range pool {
		d.Reset()
		_, _ = d.WriteString(u.HostPort())
		_, _ = d.WriteString(key)
		if w := d.Sum64(); w > bestW {
			best, bestW = u, w
		}
	}
	return best
}
