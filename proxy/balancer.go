package proxy

import "net/http"

// Balancer chooses the upstream for a new session, or for a plain HTTP request
// forwarded by HTTPHandler, among the available ones (healthy, not yet tried
// for this request). It returns nil when it cannot choose. w is the client's
// response: a policy may set headers on it, such as StickyCookie's cookie,
// which reach the client on the 101, on a refusal, or on the HTTP response.
// The signature is that of Caddy's selection policies.
// Implementations must be safe for concurrent use.
type Balancer interface {
	Select(pool []*Upstream, r *http.Request, w http.ResponseWriter) *Upstream
}

// BalancerFunc adapts a function to Balancer.
type BalancerFunc func(pool []*Upstream, r *http.Request, w http.ResponseWriter) *Upstream

// Select calls f.
func (f BalancerFunc) Select(pool []*Upstream, r *http.Request, w http.ResponseWriter) *Upstream {
	return f(pool, r, w)
}
