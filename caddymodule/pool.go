package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/wsgate/wsgate/proxy"
)

// pool holds the proxies, which own the sessions, outside the handler
// instances, keyed by configuration: a reload provisions the new handlers
// (taking references) before cleaning up the old ones (dropping theirs), so
// an unchanged handler's proxy, and its sessions, live on.
var pool = caddy.NewUsagePool()

// drains counts the drains in progress, which a graceful process exit waits for.
var (
	drains       sync.WaitGroup
	registerExit sync.Once
)

// metrics are shared by every proxy and registered on each config's registry
// (Caddy makes a new registry per config load), so counts survive reloads.
var (
	metricsOnce sync.Once
	metrics     *proxy.Metrics
	metricsErr  error
)

// pooledProxy is a pool value: the proxy and the handlers using it. The
// newest handler still provisioned supplies the logger and dynamic upstream
// source, so those follow the running config even when the proxy outlives it.
type pooledProxy struct {
	proxy        *proxy.Proxy
	drainWindow  time.Duration
	closeTimeout time.Duration
	log          *zap.Logger

	mu      sync.Mutex
	owners  []*Handler // in provisioning order
	retired *Handler   // the last owner released, for the drain's log lines
}

// acquire takes a reference to the proxy for key, building it from h if there
// is none, and makes h its current owner.
func acquire(key string, h *Handler, reg *prometheus.Registry) (*pooledProxy, error) {
	m, err := sharedMetrics(reg)
	if err != nil {
		return nil, err
	}
	val, _, err := pool.LoadOrNew(key, func() (caddy.Destructor, error) {
		return newPooledProxy(h, m)
	})
	if err != nil {
		return nil, err
	}
	pp := val.(*pooledProxy)
	pp.mu.Lock()
	pp.owners = append(pp.owners, h)
	pp.mu.Unlock()
	return pp, nil
}

func newPooledProxy(h *Handler, m *proxy.Metrics) (*pooledProxy, error) {
	cfg, err := h.proxyConfig()
	if err != nil {
		return nil, err
	}
	pp := &pooledProxy{
		drainWindow:  time.Duration(h.DrainWindow),
		closeTimeout: time.Duration(h.CloseTimeout),
	}
	if pp.closeTimeout <= 0 {
		pp.closeTimeout = proxy.DefaultCloseTimeout
	}
	pp.log = zap.New(ownerCore{pp: pp}).Named("http.handlers.ws")
	cfg.Logger = pp.log
	cfg.Metrics = m
	if h.dynamic != nil {
		cfg.Source = dynamicSource{pp: pp}
	}
	if pp.proxy, err = proxy.New(cfg); err != nil {
		return nil, err
	}
	return pp, nil
}

// sharedMetrics returns the metrics and registers them on reg if needed.
func sharedMetrics(reg *prometheus.Registry) (*proxy.Metrics, error) {
	metricsOnce.Do(func() { metrics, metricsErr = proxy.NewMetrics(nil, "caddy_ws") })
	if metricsErr != nil || reg == nil {
		return metrics, metricsErr
	}
	if err := reg.Register(metrics); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return nil, fmt.Errorf("registering metrics: %v", err)
		}
	}
	return metrics, nil
}

// release removes h from the owners.
func (pp *pooledProxy) release(h *Handler) {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	for i := len(pp.owners) - 1; i >= 0; i-- {
		if pp.owners[i] == h {
			pp.owners = append(pp.owners[:i], pp.owners[i+1:]...)
			if len(pp.owners) == 0 {
				pp.retired = h
			}
			return
		}
	}
}

// owner is the newest handler using the proxy; when none is left, the last
// one (nil if it was never owned).
func (pp *pooledProxy) owner() *Handler {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	if len(pp.owners) == 0 {
		return pp.retired
	}
	return pp.owners[len(pp.owners)-1]
}

// Destruct is called when the last handler using the proxy is cleaned up:
// the route was removed or changed, or Caddy is stopping. It drains the
// sessions with the drain code spread over the drain window, in the
// background so as not to hold up the reload; the drain is bounded by
// drain_window + close_timeout (plus a second). A graceful process exit
// waits for drains in progress, within that bound.
func (pp *pooledProxy) Destruct() error {
	bound := pp.drainWindow + pp.closeTimeout + time.Second
	n := pp.proxy.ActiveSessions()
	if n > 0 {
		pp.log.Info("draining sessions", zap.Int("sessions", n), zap.Duration("drain_window", pp.drainWindow))
	}
	registerExit.Do(func() { caddy.OnExit(waitDrains) })
	drains.Add(1)
	go func() {
		defer drains.Done()
		ctx, cancel := context.WithTimeout(context.Background(), bound)
		defer cancel()
		if err := pp.proxy.Drain(ctx, pp.drainWindow); err != nil {
			pp.log.Warn("drain incomplete", zap.Int("sessions", pp.proxy.ActiveSessions()), zap.Error(err))
		}
	}()
	return nil
}

// waitDrains waits for the drains in progress, or until ctx is done.
func waitDrains(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		drains.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// dynamicSource adapts the owner's reverse_proxy upstream source to
// proxy.UpstreamSource: each upstream's dial address, host:port, which the
// proxy dials with ws://, or wss:// when TLS is set.
type dynamicSource struct {
	pp *pooledProxy
}

func (s dynamicSource) Upstreams(r *http.Request) ([]string, error) {
	h := s.pp.owner()
	if h == nil || h.dynamic == nil {
		return nil, errors.New("no upstream source")
	}
	ups, err := h.dynamic.GetUpstreams(r)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(ups))
	for _, u := range ups {
		if _, _, err := net.SplitHostPort(u.Dial); err != nil {
			return nil, fmt.Errorf("dynamic upstream %q: want host:port", u.Dial)
		}
		out = append(out, u.Dial)
	}
	return out, nil
}

// ownerCore writes to the owner's logger core, so that the proxy logs through
// the running config's logging even when it outlives the config it was built in.
type ownerCore struct {
	pp     *pooledProxy
	fields []zapcore.Field
}

// core is the owner's core with the fields added by With.
func (c ownerCore) core() zapcore.Core {
	h := c.pp.owner()
	if h == nil || h.logger == nil {
		return zapcore.NewNopCore()
	}
	core := h.logger.Core()
	if len(c.fields) > 0 {
		core = core.With(c.fields)
	}
	return core
}

func (c ownerCore) Enabled(l zapcore.Level) bool {
	h := c.pp.owner()
	return h != nil && h.logger != nil && h.logger.Core().Enabled(l)
}

func (c ownerCore) With(fields []zapcore.Field) zapcore.Core {
	return ownerCore{pp: c.pp, fields: append(c.fields[:len(c.fields):len(c.fields)], fields...)}
}

func (c ownerCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	return c.core().Check(e, ce)
}

func (c ownerCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	return c.core().Write(e, fields)
}

func (c ownerCore) Sync() error { return c.core().Sync() }
