package proxy

import "net/http"

// Balancer chooses the upstream for a new session among the available ones
// (healthy, not yet tried for this request). It returns nil when it cannot choose.
// Implementations must be safe for concurrent use.
type Balancer interface {
	Select(pool []*Upstream, r *http.Request) *Upstream
}

// BalancerFunc adapts a function to Balancer.
type BalancerFunc func(pool []*Upstream, r *http.Request) *Upstream

// Select calls f.
func (f BalancerFunc) Select(pool []*Upstream, r *http.Request) *Upstream { return f(pool, r) }
