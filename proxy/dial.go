package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/wsgate/wsgate/wsmw"
)

// Errors of upstream selection and dialing; the handshake error carries the status.
var (
	// ErrNoUpstream: no upstream is configured or healthy (503).
	ErrNoUpstream = errors.New("proxy: no upstream available")
	// ErrUpstreamUnreachable: every try to dial an upstream failed (502).
	ErrUpstreamUnreachable = errors.New("proxy: upstream unreachable")
	// ErrUpstreamTimeout: the last try timed out (504).
	ErrUpstreamTimeout = errors.New("proxy: upstream timed out")
	// ErrClientGone: the client left while the upstream was being dialed.
	ErrClientGone = errors.New("proxy: client went away during the upstream dial")
)

// dialUpstream selects upstreams and dials them until one completes the
// handshake, within Retries and TryDuration. A non-101 answer is not retried: it
// is returned (with its response) to be relayed.
func (p *Proxy) dialUpstream(r *http.Request) (*Upstream, *wsmw.Conn, *http.Response, error) {
	start := time.Now()
	header := p.upstreamHeader(r)
	offered := p.filterSubprotocols(wsmw.Subprotocols(r.Header))
	deflate := p.deflateOffers(r)
	tried := make(map[*Upstream]bool)
	var lastErr error
	for attempt := 0; ; attempt++ {
		pool, err := p.candidates(r)
		if err != nil {
			return nil, nil, nil, &wsmw.HandshakeError{Status: http.StatusBadGateway, Reason: "upstream lookup failed", Err: err}
		}
		up := p.pick(pool, r, tried)
		if up == nil {
			if lastErr == nil {
				return nil, nil, nil, &wsmw.HandshakeError{Status: http.StatusServiceUnavailable, Reason: "no upstream available", Err: ErrNoUpstream}
			}
		} else {
			tried[up] = true
			conn, resp, err := p.dialOne(r.Context(), up, r, header, offered, deflate)
			if err == nil {
				return up, conn, resp, nil
			}
			lastErr = err
			if errors.Is(err, wsmw.ErrBadHeader) {
				// The request the proxy built is invalid: a configuration error, not the upstream's failure.
				return nil, nil, nil, &wsmw.HandshakeError{Status: http.StatusInternalServerError, Reason: "invalid upstream request", Err: err}
			}
			if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
				if resp.StatusCode >= 500 {
					up.recordFailure(time.Now(), p.cfg.PassiveHealth.MaxFails, p.cfg.PassiveHealth.FailDuration)
				}
				return up, nil, resp, err
			}
			if r.Context().Err() == nil { // a client that left is not the upstream's failure
				up.recordFailure(time.Now(), p.cfg.PassiveHealth.MaxFails, p.cfg.PassiveHealth.FailDuration)
			}
			if ce := p.log.Check(zap.DebugLevel, "upstream dial failed"); ce != nil {
				ce.Write(zap.String("upstream", up.Address()), zap.Int("attempt", attempt+1), zap.Error(err))
			}
		}
		if !p.retryAllowed(attempt, start) || r.Context().Err() != nil {
			break
		}
		select {
		case <-time.After(p.cfg.TryInterval):
		case <-r.Context().Done():
		}
	}
	if r.Context().Err() != nil {
		return nil, nil, nil, &wsmw.HandshakeError{Status: http.StatusBadGateway, Reason: "client went away", Err: errors.Join(ErrClientGone, lastErr)}
	}
	if isTimeout(lastErr) {
		return nil, nil, nil, &wsmw.HandshakeError{Status: http.StatusGatewayTimeout, Reason: "upstream timed out", Err: errors.Join(ErrUpstreamTimeout, lastErr)}
	}
	return nil, nil, nil, &wsmw.HandshakeError{Status: http.StatusBadGateway, Reason: "upstream unreachable", Err: errors.Join(ErrUpstreamUnreachable, lastErr)}
}

func (p *Proxy) retryAllowed(attempt int, start time.Time) bool {
	if attempt < p.cfg.Retries {
		return true
	}
	return p.cfg.TryDuration > 0 && time.Since(start)+p.cfg.TryInterval < p.cfg.TryDuration
}

// pick asks the balancer for a healthy upstream not tried yet for this request;
// once all healthy ones were tried, they become eligible again.
func (p *Proxy) pick(pool []*Upstream, r *http.Request, tried map[*Upstream]bool) *Upstream {
	now := time.Now()
	ph := p.cfg.PassiveHealth
	healthy := make([]*Upstream, 0, len(pool))
	for _, u := range pool {
		if u.Healthy(now, ph.MaxFails, ph.FailDuration) {
			healthy = append(healthy, u)
		}
	}
	fresh := make([]*Upstream, 0, len(healthy))
	for _, u := range healthy {
		if !tried[u] {
			fresh = append(fresh, u)
		}
	}
	if len(fresh) == 0 {
		fresh = healthy
	}
	if len(fresh) == 0 {
		return nil
	}
	return p.cfg.Balancer.Select(fresh, r)
}

// dialOne dials one upstream and performs the client handshake; deflate are the
// permessage-deflate offers relayed in passthrough mode.
func (p *Proxy) dialOne(ctx context.Context, up *Upstream, r *http.Request, header http.Header, offered []string, deflate []wsmw.ExtensionOffer) (*wsmw.Conn, *http.Response, error) {
	target := *up.URL
	if target.Path == "" || target.Path == "/" {
		target.Path, target.RawPath = r.URL.Path, r.URL.RawPath
		target.RawQuery = r.URL.RawQuery
	} else if target.RawQuery == "" {
		target.RawQuery = r.URL.RawQuery
	}
	cfg := &wsmw.DialConfig{
		Header:           header,
		Subprotocols:     offered,
		TLSConfig:        p.cfg.UpstreamTLS,
		HandshakeTimeout: p.cfg.DialTimeout,
		Credentials:      p.cfg.UpstreamCredentials,
		MaxFrameSize:     p.cfg.MaxFrameSize,
		MaxMessageSize:   firstPositive(p.cfg.MaxMessageSizeDown, p.cfg.MaxMessageSize),
		CloseTimeout:     p.cfg.CloseTimeout,
	}
	p.dialCompression(cfg, deflate)
	start := time.Now()
	conn, resp, err := wsmw.Dial(ctx, target.String(), cfg)
	p.cfg.Metrics.dialDuration(up.Address(), time.Since(start), err)
	return conn, resp, err
}

func isTimeout(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// dialFailureReason names a dial failure for the handshake-failure metric.
func dialFailureReason(err error) string {
	switch {
	case errors.Is(err, ErrNoUpstream):
		return "no_upstream"
	case errors.Is(err, ErrUpstreamTimeout):
		return "upstream_timeout"
	case errors.Is(err, ErrUpstreamUnreachable):
		return "upstream_unreachable"
	case errors.Is(err, ErrClientGone):
		return "client_gone"
	case errors.Is(err, wsmw.ErrBadHeader):
		return "config"
	}
	return "upstream_error"
}

// readFullish reads into buf until it is full or r ends.
func readFullish(r io.Reader, buf []byte) (int, error) {
	n, err := io.ReadFull(r, buf)
	if err == io.ErrUnexpectedEOF || err == io.EOF {
		err = nil
	}
	return n, err
}
