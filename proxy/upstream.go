package proxy

import (
	"fmt"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// Upstream is one backend WebSocket server and its live state: active sessions
// (for least_conn) and health. The same address always maps to the same
// *Upstream within a Proxy, so state survives dynamic upstream refreshes.
type Upstream struct {
	// URL is the ws:// or wss:// address dialed. An empty or "/" path means the
	// client's request path and query are used.
	URL *url.URL

	addr     string       // URL.String(), computed once
	hostPort string       // URL's host:port, the default port made explicit
	active   atomic.Int64 // sessions currently forwarded to this upstream

	mu           sync.Mutex
	failures     []time.Time // passive health: recent failed dials, expiring after FailDuration
	activeDown   bool        // active health: last probes failed
	probePasses  int
	probeFails   int
	lastProbeErr error
}

// Address returns the upstream's URL as a string, the key of its state.
func (u *Upstream) Address() string {
	if u.addr != "" {
		return u.addr
	}
	return u.URL.String()
}

// HostPort returns the host:port dialed, with the scheme's default port made
// explicit: the address Caddy's reverse_proxy knows the same backend by, and
// what hashing policies and sticky cookies are computed over.
func (u *Upstream) HostPort() string {
	if u.hostPort != "" {
		return u.hostPort
	}
	return hostPort(u.URL)
}

// hostPort is u's host:port; ws:// and wss:// default to 80 and 443.
func hostPort(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	port := "80"
	if u.Scheme == "wss" || u.Scheme == "https" {
		port = "443"
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// ActiveSessions returns the number of sessions currently forwarded to u.
func (u *Upstream) ActiveSessions() int64 { return u.active.Load() }

// Healthy reports whether u may be selected at now: it is not marked down by
// active probes, and has fewer than maxFails passive failures within failDuration.
func (u *Upstream) Healthy(now time.Time, maxFails int, failDuration time.Duration) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.activeDown {
		return false
	}
	if maxFails <= 0 || failDuration <= 0 {
		return true
	}
	u.expireFailures(now, failDuration)
	return len(u.failures) < maxFails
}

// expireFailures drops failures older than failDuration; u.mu is held.
func (u *Upstream) expireFailures(now time.Time, failDuration time.Duration) {
	i := 0
	for i < len(u.failures) && now.Sub(u.failures[i]) >= failDuration {
		i++
	}
	if i > 0 {
		u.failures = append(u.failures[:0], u.failures[i:]...)
	}
}

// recordFailure notes a failed dial or handshake for passive health checks.
func (u *Upstream) recordFailure(now time.Time, maxFails int, failDuration time.Duration) {
	if maxFails <= 0 || failDuration <= 0 {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.expireFailures(now, failDuration)
	if len(u.failures) < 64 {
		u.failures = append(u.failures, now)
	}
}

// parseUpstreamURL parses an upstream address: a ws:// or wss:// URL (http://
// and https:// are aliases), or host:port[/path], which is ws://, or wss://
// when secure (the proxy has upstream TLS settings).
func parseUpstreamURL(raw string, secure bool) (*url.URL, error) {
	s := raw
	if !hasScheme(s) {
		s = map[bool]string{false: "ws://", true: "wss://"}[secure] + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("%q does not parse: %v", raw, err)
	}
	switch u.Scheme {
	case "ws", "wss":
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	default:
		return nil, fmt.Errorf("%q: scheme must be ws or wss", raw)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("%q has no host", raw)
	}
	return u, nil
}

// hasScheme reports whether s starts with a URL scheme and "//".
func hasScheme(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == ':':
			return i+2 < len(s) && s[i+1] == '/' && s[i+2] == '/'
		case c == '/' || c == '.':
			return false
		}
	}
	return false
}
