package proxy

import (
	"context"
	"net/http"
	"net/url"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/wsgate/wsgate/wsmw"
)

// ActiveHealth configures active health checks: a real WebSocket handshake to
// every upstream at each Interval, because a listening port or a 200 on "/" does
// not prove the upstream still accepts WebSocket sessions.
type ActiveHealth struct {
	Path     string        // request path (and query) of the probe; default: the upstream URL's own path, or "/"
	Interval time.Duration // time between rounds; default 30s
	Timeout  time.Duration // bound on one probe; default 5s
	Passes   int           // consecutive passes that mark a down upstream up again; default 1
	Fails    int           // consecutive failures that mark an upstream down; default 1
	Header   http.Header   // extra probe request headers
	// Dial performs one probe against url, returning nil if the upstream is
	// healthy; ctx carries the Timeout. Default: wsmw.Dial, then a 1001 close.
	Dial func(ctx context.Context, url string, h http.Header) error
}

// Defaults of ActiveHealth.
const (
	DefaultHealthInterval = 30 * time.Second // ActiveHealth.Interval when zero
	DefaultHealthTimeout  = 5 * time.Second  // ActiveHealth.Timeout when zero
)

// HealthChecker runs active health checks and marks upstreams down or up, so
// balancers only see upstreams that currently complete a handshake.
type HealthChecker struct {
	cfg       ActiveHealth
	upstreams func() []*Upstream
	logger    *zap.Logger
	probePath *url.URL // parsed cfg.Path; nil keeps the upstream's path
	pathErr   error    // cfg.Path does not parse; every probe fails with it

	ctx    context.Context // ends at Stop, aborting probes in flight
	cancel context.CancelFunc

	mu       sync.Mutex
	inflight map[*Upstream]struct{} // one probe per upstream at a time
	stopped  bool                   // no probe starts after Stop
	started  bool
	wg       sync.WaitGroup // the ticker goroutine and every probe
}

// NewHealthChecker returns a HealthChecker probing the upstreams returned by
// upstreams at each round (so a dynamic list is followed); a nil logger logs nothing.
func NewHealthChecker(cfg ActiveHealth, upstreams func() []*Upstream, logger *zap.Logger) *HealthChecker {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultHealthInterval
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultHealthTimeout
	}
	cfg.Passes = max(cfg.Passes, 1)
	cfg.Fails = max(cfg.Fails, 1)
	if logger == nil {
		logger = zap.NewNop()
	}
	h := &HealthChecker{cfg: cfg, upstreams: upstreams, logger: logger, inflight: make(map[*Upstream]struct{})}
	if cfg.Dial == nil {
		h.cfg.Dial = HandshakeProbe(&wsmw.DialConfig{HandshakeTimeout: cfg.Timeout})
	}
	if cfg.Path != "" {
		h.probePath, h.pathErr = url.Parse(cfg.Path)
	}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	return h
}

// Start starts the goroutine that runs a round at once, without blocking, then
// every Interval, like Caddy. Calls after the first, or after Stop, do nothing.
func (h *HealthChecker) Start() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.started || h.stopped {
		return
	}
	h.started = true
	h.wg.Add(1)
	go h.loop()
}

// loop runs a round now and at each tick until Stop, without waiting for its probes.
func (h *HealthChecker) loop() {
	defer h.wg.Done()
	t := time.NewTicker(h.cfg.Interval)
	defer t.Stop()
	h.round(h.ctx, nil)
	for {
		select {
		case <-h.ctx.Done():
			return
		case <-t.C:
			h.round(h.ctx, nil)
		}
	}
}

// Stop stops the checker, aborts probes in flight (recording nothing for them)
// and waits for every goroutine it started to end. It is safe to call more than once.
func (h *HealthChecker) Stop() {
	h.mu.Lock()
	h.stopped = true
	h.mu.Unlock()
	h.cancel()
	h.wg.Wait()
}

// CheckNow runs one round synchronously and returns when its probes are done.
// Upstreams whose previous probe is still running are skipped: that probe's
// result will be recorded. Probes end early, recording nothing, when ctx ends or Stop is called.
func (h *HealthChecker) CheckNow(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(h.ctx, cancel)()
	var done sync.WaitGroup
	h.round(ctx, &done)
	done.Wait()
}

// round starts one probe goroutine per upstream not already being probed; done,
// if not nil, is marked when each ends.
func (h *HealthChecker) round(ctx context.Context, done *sync.WaitGroup) {
	for _, u := range h.upstreams() {
		h.mu.Lock()
		_, busy := h.inflight[u]
		if h.stopped || busy {
			h.mu.Unlock()
			continue
		}
		h.inflight[u] = struct{}{}
		h.wg.Add(1)
		h.mu.Unlock()
		if done != nil {
			done.Add(1)
		}
		go func() {
			defer h.wg.Done()
			if done != nil {
				defer done.Done()
			}
			h.probe(ctx, u)
			h.mu.Lock()
			delete(h.inflight, u)
			h.mu.Unlock()
		}()
	}
}

// probe checks u once and records the result, unless ctx ended first.
func (h *HealthChecker) probe(ctx context.Context, u *Upstream) {
	err := h.pathErr
	if err == nil {
		pctx, cancel := context.WithTimeout(ctx, h.cfg.Timeout)
		err = h.cfg.Dial(pctx, h.probeURL(u), h.cfg.Header)
		cancel()
	}
	if ctx.Err() != nil {
		return // stopped or cancelled: the result says nothing about u
	}
	h.record(u, err)
}

// probeURL is u's URL with the configured probe path, or its own path ("/" if empty).
func (h *HealthChecker) probeURL(u *Upstream) string {
	p := *u.URL
	p.Fragment, p.RawFragment = "", ""
	switch {
	case h.probePath != nil:
		p.Path, p.RawPath, p.RawQuery, p.ForceQuery = h.probePath.Path, h.probePath.RawPath, h.probePath.RawQuery, h.probePath.ForceQuery
	case p.Path == "":
		p.Path = "/"
	}
	return p.String()
}

// HandshakeProbe returns an ActiveHealth.Dial that performs a WebSocket
// handshake with dial's settings (TLS, credentials, handshake timeout) and the
// probe's headers, then closes with 1001, waiting a second at most for the
// answer: a completed handshake is what proves an upstream healthy.
func HandshakeProbe(dial *wsmw.DialConfig) func(ctx context.Context, url string, h http.Header) error {
	return func(ctx context.Context, rawURL string, hdr http.Header) error {
		cfg := *dial
		cfg.Header, cfg.CloseTimeout = hdr, time.Second
		c, _, err := wsmw.Dial(ctx, rawURL, &cfg)
		if err != nil {
			return err
		}
		_ = c.Close(wsmw.StatusGoingAway, "health check")
		return nil
	}
}

// record updates u's active health state with one probe result and logs transitions.
func (h *HealthChecker) record(u *Upstream, err error) {
	u.mu.Lock()
	u.lastProbeErr = err
	changed := false
	if err == nil {
		u.probeFails = 0
		u.probePasses++
		if u.activeDown && u.probePasses >= h.cfg.Passes {
			u.activeDown, changed = false, true
		}
	} else {
		u.probePasses = 0
		u.probeFails++
		if !u.activeDown && u.probeFails >= h.cfg.Fails {
			u.activeDown, changed = true, true
		}
	}
	u.mu.Unlock()
	if !changed {
		return
	}
	addr := u.URL.Redacted()
	if err != nil {
		h.logger.Info("upstream unhealthy", zap.String("upstream", addr), zap.Error(err))
	} else {
		h.logger.Info("upstream healthy", zap.String("upstream", addr))
	}
}
