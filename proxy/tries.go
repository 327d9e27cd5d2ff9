package proxy

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/wsgate/wsgate/wsmw"
)

// tries is what one client's dial has done so far, and decides what it does
// next after a failure:
//   - failover, by default: a dial that failed before the upstream saw any of
//     the request (connect: refused, reset, unreachable, DNS; or the TLS
//     handshake) is tried at once on the next available upstream not tried
//     yet, within the DialTimeout of the first try (as nginx's default
//     proxy_next_upstream error; a handshake that was never sent is always
//     safe to send elsewhere);
//   - retries, when configured: up to Retries more tries, or more tries until
//     TryDuration has passed, each after TryInterval, each with a DialTimeout
//     of its own; once every available upstream was tried, all are again.
type tries struct {
	cfg      *Config
	start    time.Time
	deadline time.Time // of the tries since the last retry: failover shares it
	tried    map[*Upstream]bool
	n        int // tries made
	retries  int // retries used
}

func (p *Proxy) newTries() *tries {
	now := time.Now()
	return &tries{cfg: &p.cfg, start: now, deadline: now.Add(p.cfg.DialTimeout), tried: make(map[*Upstream]bool)}
}

// fresh returns the upstreams of healthy not tried yet, or all of them once
// every one was tried.
func (t *tries) fresh(healthy []*Upstream) []*Upstream {
	out := make([]*Upstream, 0, len(healthy))
	for _, u := range healthy {
		if !t.tried[u] {
			out = append(out, u)
		}
	}
	if len(out) == 0 {
		return healthy
	}
	return out
}

// untried reports whether some upstream of healthy was not tried yet.
func (t *tries) untried(healthy []*Upstream) bool {
	for _, u := range healthy {
		if !t.tried[u] {
			return true
		}
	}
	return false
}

// dial makes one try on up, bounded by the current deadline.
func (t *tries) dial(r *http.Request, up *Upstream, dial func(context.Context) (*wsmw.Conn, *http.Response, error)) (*wsmw.Conn, *http.Response, error) {
	t.tried[up] = true
	t.n++
	ctx, cancel := context.WithDeadline(r.Context(), t.deadline)
	defer cancel() // after a successful handshake the connection no longer depends on ctx
	return dial(ctx)
}

// again reports whether to try again after err, waiting TryInterval first if
// it is a retry; false if the client left.
func (t *tries) again(ctx context.Context, err error, healthy []*Upstream) bool {
	if ctx.Err() != nil {
		return false
	}
	if failover(err) && time.Now().Before(t.deadline) && t.untried(healthy) {
		return true
	}
	if !t.retryAllowed() {
		return false
	}
	t.retries++
	timer := time.NewTimer(t.cfg.TryInterval)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-ctx.Done():
		return false
	}
	t.deadline = time.Now().Add(t.cfg.DialTimeout)
	return true
}

func (t *tries) retryAllowed() bool {
	if t.retries < t.cfg.Retries {
		return true
	}
	return t.cfg.TryDuration > 0 && time.Since(t.start)+t.cfg.TryInterval < t.cfg.TryDuration
}

// failover reports whether err is a dial that failed before the upstream saw
// anything of the handshake: safe to send elsewhere at once.
func failover(err error) bool {
	var de *wsmw.DialError
	return errors.As(err, &de) && (de.Op == "connect" || de.Op == "TLS handshake") && !isTimeout(err)
}
