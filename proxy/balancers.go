package proxy

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
)

// The selection policies below follow Caddy's reverse_proxy lb_policy names and
// behaviour. All are safe for concurrent use; round_robin, least_conn, random,
// random_choose (n <= 8) and first do not allocate per Select.

// RoundRobin returns a Balancer that cycles through the pool in order, so
// sessions spread evenly whatever their length.
func RoundRobin() Balancer { return &roundRobin{} }

type roundRobin struct{ next atomic.Uint64 }

func (b *roundRobin) Select(pool []*Upstream, _ *http.Request) *Upstream {
	if len(pool) == 0 {
		return nil
	}
	return pool[(b.next.Add(1)-1)%uint64(len(pool))]
}

// LeastConn returns a Balancer that picks the upstream with the fewest active
// sessions, ties broken at random, because WebSocket sessions are long-lived and
// a count of open ones is the best cheap measure of load.
func LeastConn() Balancer { return BalancerFunc(leastLoaded) }

// leastLoaded returns the upstream of pool with the fewest active sessions; ties
// are broken uniformly at random by reservoir sampling, in one pass.
func leastLoaded(pool []*Upstream, _ *http.Request) *Upstream {
	var best *Upstream
	var least int64
	ties := 0
	for _, u := range pool {
		n := u.ActiveSessions()
		switch {
		case best == nil || n < least:
			best, least, ties = u, n, 1
		case n == least:
			ties++
			if rand.IntN(ties) == 0 {
				best = u
			}
		}
	}
	return best
}

// Random returns a Balancer that picks an upstream uniformly at random: Caddy's
// default policy, stateless and fair on average.
func Random() Balancer { return BalancerFunc(randomUpstream) }

// randomUpstream returns a uniformly random member of pool, or nil if it is empty.
func randomUpstream(pool []*Upstream, _ *http.Request) *Upstream {
	if len(pool) == 0 {
		return nil
	}
	return pool[rand.IntN(len(pool))]
}

// RandomChoose returns a Balancer that samples n distinct upstreams at random
// and takes the least loaded of them ("power of n choices"): nearly as even as
// least_conn without herding every new session onto the same upstream. n < 2
// means 2.
func RandomChoose(n int) Balancer { return randomChoose(max(n, 2)) }

type randomChoose int

// maxStackChoices is the sample size up to which randomChoose does not allocate.
const maxStackChoices = 8

func (k randomChoose) Select(pool []*Upstream, r *http.Request) *Upstream {
	n, want := len(pool), int(k)
	if want >= n {
		return leastLoaded(pool, r)
	}
	// Robert Floyd's sampling: want distinct indices of [0, n) in want draws.
	var buf [maxStackChoices]int
	idx := buf[:0]
	if want > len(buf) {
		idx = make([]int, 0, want)
	}
	for j := n - want; j < n; j++ {
		t := rand.IntN(j + 1)
		for _, i := range idx {
			if i == t {
				t = j
				break
			}
		}
		idx = append(idx, t)
	}
	var best *Upstream
	ties := 0
	for _, i := range idx {
		u := pool[i]
		switch {
		case best == nil || u.ActiveSessions() < best.ActiveSessions():
			best, ties = u, 1
		case u.ActiveSessions() == best.ActiveSessions():
			ties++
			if rand.IntN(ties) == 0 {
				best = u
			}
		}
	}
	return best
}

// First returns a Balancer that picks the first available upstream in
// configured order, for active/standby setups where later upstreams are backups.
func First() Balancer { return BalancerFunc(firstUpstream) }

// firstUpstream returns pool[0], or nil if pool is empty.
func firstUpstream(pool []*Upstream, _ *http.Request) *Upstream {
	if len(pool) == 0 {
		return nil
	}
	return pool[0]
}

// IPHash returns a Balancer that maps each client IP (r.RemoteAddr, with or
// without a port, as left by chi's RealIP) to the same upstream, for sticky
// sessions without cookies. It uses rendezvous hashing over Address() with FNV-1a,
// so every proxy instance agrees and removing an upstream only moves its own clients.
func IPHash() Balancer { return BalancerFunc(ipHash) }

// ipHash selects by the rendezvous hash of r's client IP.
func ipHash(pool []*Upstream, r *http.Request) *Upstream {
	return hashSelect(pool, clientIP(r.RemoteAddr))
}

// clientIP strips the port (and IPv6 brackets) from a RemoteAddr that may be
// "ip:port" (net/http) or a bare IP (chi's RealIP middleware).
func clientIP(remoteAddr string) string {
	if host, _, err := net.SplitHostPort(remoteAddr); err == nil {
		return host
	}
	return strings.TrimSuffix(strings.TrimPrefix(remoteAddr, "["), "]")
}

// HeaderHash returns a Balancer that maps each value of request header name to
// the same upstream (rendezvous hashing, as IPHash). "Host" uses r.Host. Like
// Caddy, requests without the header fall back to Random.
func HeaderHash(name string) Balancer { return headerHash(http.CanonicalHeaderKey(name)) }

type headerHash string

func (h headerHash) Select(pool []*Upstream, r *http.Request) *Upstream {
	v := r.Header.Get(string(h))
	if h == "Host" && r.Host != "" {
		v = r.Host
	}
	if v == "" {
		return randomUpstream(pool, r)
	}
	return hashSelect(pool, v)
}

// CookieHash returns a Balancer that maps each value of cookie name to the same
// upstream (rendezvous hashing, as IPHash). Like Caddy, requests without the
// cookie fall back to Random; unlike Caddy, no cookie is set on the response
// (the 101 belongs to the upstream), so the application must issue it.
func CookieHash(name string) Balancer { return cookieHash(name) }

type cookieHash string

func (c cookieHash) Select(pool []*Upstream, r *http.Request) *Upstream {
	ck, err := r.Cookie(string(c))
	if err != nil || ck.Value == "" {
		return randomUpstream(pool, r)
	}
	return hashSelect(pool, ck.Value)
}

// hashSelect is rendezvous (highest random weight) hashing: each upstream's
// weight for key is a hash of its address and the key, and the heaviest wins.
// Removing an upstream only remaps the keys it won; the hash is FNV-1a, fixed
// across processes, followed by a 64-bit finalizer for avalanche.
func hashSelect(pool []*Upstream, key string) *Upstream {
	var best *Upstream
	var bestW uint64
	for _, u := range pool {
		w := mix64(fnv1a(fnv1a(fnvOffset, u.Address()), key))
		if best == nil || w > bestW {
			best, bestW = u, w
		}
	}
	return best
}

// FNV-1a 64-bit parameters, as in hash/fnv.
const (
	fnvOffset uint64 = 14695981039346656037
	fnvPrime  uint64 = 1099511628211
)

// fnv1a continues the FNV-1a hash h over s; inlined rather than hash/fnv so
// that hashing a string does not allocate.
func fnv1a(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime
	}
	return h
}

// mix64 is the MurmurHash3 finalizer: FNV-1a mixes its last bytes poorly into
// the high bits, which rendezvous comparisons depend on most.
func mix64(h uint64) uint64 {
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

// balancerPolicies are the policy names ParseBalancer accepts, as in Caddy's lb_policy.
var balancerPolicies = []string{
	"random", "random_choose", "round_robin", "least_conn", "first",
	"ip_hash", "client_ip_hash", "header", "cookie",
}

// ParseBalancer builds a Balancer from a Caddy-style lb_policy name and its
// arguments: random_choose [n] (default 2, at least 2), header <name>,
// cookie <name>; the others take none. "" means random, Caddy's default.
func ParseBalancer(policy string, args ...string) (Balancer, error) {
	if policy != "" && !slices.Contains(balancerPolicies, policy) {
		return nil, fmt.Errorf("proxy: unknown lb policy %q (valid: %s)", policy, strings.Join(balancerPolicies, ", "))
	}
	minArgs, maxArgs := 0, 0
	switch policy {
	case "random_choose":
		maxArgs = 1
	case "header", "cookie":
		minArgs, maxArgs = 1, 1
	}
	if len(args) < minArgs || len(args) > maxArgs {
		return nil, fmt.Errorf("proxy: lb policy %q takes %d to %d arguments, got %d", policy, minArgs, maxArgs, len(args))
	}
	switch policy {
	case "random_choose":
		n := 2
		if len(args) == 1 {
			var err error
			if n, err = strconv.Atoi(args[0]); err != nil || n < 2 {
				return nil, fmt.Errorf("proxy: lb policy random_choose: choose must be an integer >= 2, got %q", args[0])
			}
		}
		return RandomChoose(n), nil
	case "round_robin":
		return RoundRobin(), nil
	case "least_conn":
		return LeastConn(), nil
	case "first":
		return First(), nil
	case "ip_hash", "client_ip_hash":
		return IPHash(), nil
	case "header", "cookie":
		if args[0] == "" {
			return nil, fmt.Errorf("proxy: lb policy %s: empty name", policy)
		}
		if policy == "header" {
			return HeaderHash(args[0]), nil
		}
		return CookieHash(args[0]), nil
	}
	return Random(), nil
}
