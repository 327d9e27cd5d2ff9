package proxy

import (
	"math/rand/v2"
	"net/http"
	"sync/atomic"
)

// The selection policies follow Caddy's reverse_proxy lb_policy names and
// behaviour; the hashing ones (hashing.go) select exactly what Caddy selects
// for the same request and upstreams. All are safe for concurrent use;
// round_robin, least_conn, random, random_choose (n <= 8) and first do not
// allocate per Select.

// RoundRobin returns a Balancer that cycles through the pool in order, so
// sessions spread evenly whatever their length.
func RoundRobin() Balancer { return &roundRobin{} }

type roundRobin struct{ next atomic.Uint64 }

func (b *roundRobin) Select(pool []*Upstream, _ *http.Request, _ http.ResponseWriter) *Upstream {
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
func leastLoaded(pool []*Upstream, _ *http.Request, _ http.ResponseWriter) *Upstream {
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
func randomUpstream(pool []*Upstream, _ *http.Request, _ http.ResponseWriter) *Upstream {
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

func (k randomChoose) Select(pool []*Upstream, r *http.Request, w http.ResponseWriter) *Upstream {
	n, want := len(pool), int(k)
	if want >= n {
		return leastLoaded(pool, r, w)
	}
	var buf [maxStackChoices]int
	var best *Upstream
	ties := 0
	for _, i := range sample(buf[:0], n, want) {
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

// sample appends want distinct indices of [0, n) to idx, in want draws
// (Robert Floyd's sampling).
func sample(idx []int, n, want int) []int {
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
	return idx
}

// First returns a Balancer that picks the first available upstream in
// configured order, for active/standby setups where later upstreams are backups.
func First() Balancer { return BalancerFunc(firstUpstream) }

// firstUpstream returns pool[0], or nil if pool is empty.
func firstUpstream(pool []*Upstream, _ *http.Request, _ http.ResponseWriter) *Upstream {
	if len(pool) == 0 {
		return nil
	}
	return pool[0]
}
