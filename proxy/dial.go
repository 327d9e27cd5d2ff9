package proxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/wsgate/wsgate/wsmw"
)

// dialUpstream selects upstreams and dials them until one completes the
// handshake (see tries for which failures are tried again, and where). It
// returns the upstream and its connection; or an upstream's refusal (a
// response of status 300 or more), which is relayed and not retried; or the
// proxy's own refusal, naming why. w receives what the balancer sets for the
// client's response (a sticky cookie).
func (p *Proxy) dialUpstream(w http.ResponseWriter, r *http.Request) (*Upstream, *wsmw.Conn, *http.Response, refusal) {
	req := p.upstreamRequest(r)
	t := p.newTries()
	var lastErr error
	var lastResp *http.Response
	for {
		pool, err := p.candidates(r)
		if err != nil {
			return nil, nil, nil, refusal{&wsmw.HandshakeError{Status: http.StatusBadGateway, Reason: "upstream lookup failed", Err: err}, "upstream_lookup"}
		}
		healthy := p.healthy(pool)
		var up *Upstream
		if len(healthy) > 0 {
			up = p.cfg.Balancer.Select(t.fresh(healthy), r, w)
		}
		if up == nil && lastErr == nil {
			return nil, nil, nil, refusal{&wsmw.HandshakeError{Status: http.StatusServiceUnavailable, Reason: "no upstream available", Err: ErrNoUpstream}, "no_upstream"}
		}
		if up != nil {
			conn, resp, err := t.dial(r, up, func(ctx context.Context) (*wsmw.Conn, *http.Response, error) {
				return p.dialOne(ctx, up, r, req)
			})
			switch {
			case err == nil:
				return up, conn, resp, refusal{}
			case errors.Is(err, wsmw.ErrBadHeader):
				// The request the proxy built is invalid: a configuration error, not the upstream's failure.
				return nil, nil, nil, refusal{&wsmw.HandshakeError{Status: http.StatusInternalServerError, Reason: "invalid upstream request", Err: err}, "config"}
			case resp != nil && resp.StatusCode >= 300:
				if resp.StatusCode >= 500 {
					up.recordFailure(time.Now(), p.cfg.PassiveHealth.MaxFails, p.cfg.PassiveHealth.FailDuration)
				}
				return up, nil, resp, refusal{}
			}
			lastErr, lastResp = err, resp
			p.dialFailed(r, up, t.n, err)
		}
		if !t.again(r.Context(), lastErr, healthy) {
			return nil, nil, nil, dialRefusal(r.Context(), lastErr, lastResp)
		}
	}
}

// healthy returns the members of pool that may be selected now.
func (p *Proxy) healthy(pool []*Upstream) []*Upstream {
	now := time.Now()
	ph := p.cfg.PassiveHealth
	out := make([]*Upstream, 0, len(pool))
	for _, u := range pool {
		if u.Healthy(now, ph.MaxFails, ph.FailDuration) {
			out = append(out, u)
		}
	}
	return out
}

// dialFailed records a failed try: a passive health failure of up (unless the
// client left, which is not the upstream's fault), and a debug line.
func (p *Proxy) dialFailed(r *http.Request, up *Upstream, tries int, err error) {
	if r.Context().Err() == nil {
		up.recordFailure(time.Now(), p.cfg.PassiveHealth.MaxFails, p.cfg.PassiveHealth.FailDuration)
	}
	if ce := p.log.Check(zap.DebugLevel, "upstream dial failed"); ce != nil {
		ce.Write(zap.String("upstream", up.Address()), zap.Int("attempt", tries), zap.Error(err))
	}
}

// upstreamReq is what every try of a client's dial sends: the headers, the
// subprotocols offered, and the permessage-deflate offers relayed in passthrough mode.
type upstreamReq struct {
	header  http.Header
	offered []string
	deflate []wsmw.ExtensionOffer
}

// upstreamRequest derives the upstream handshake from the client's.
func (p *Proxy) upstreamRequest(r *http.Request) upstreamReq {
	return upstreamReq{
		header:  p.upstreamHeader(r),
		offered: p.filterSubprotocols(wsmw.Subprotocols(r.Header)),
		deflate: p.deflateOffers(r),
	}
}

// dialOne dials one upstream and performs the client handshake.
func (p *Proxy) dialOne(ctx context.Context, up *Upstream, r *http.Request, req upstreamReq) (*wsmw.Conn, *http.Response, error) {
	target := *up.URL
	if target.Path == "" || target.Path == "/" {
		target.Path, target.RawPath = r.URL.Path, r.URL.RawPath
		target.RawQuery = r.URL.RawQuery
	} else if target.RawQuery == "" {
		target.RawQuery = r.URL.RawQuery
	}
	cfg := &wsmw.DialConfig{
		Header:           req.header,
		Subprotocols:     req.offered,
		TLSConfig:        p.cfg.UpstreamTLS,
		HandshakeTimeout: p.cfg.DialTimeout,
		Credentials:      p.cfg.UpstreamCredentials,
		MaxFrameSize:     p.cfg.MaxFrameSize,
		MaxMessageSize:   firstPositive(p.cfg.MaxMessageSizeDown, p.cfg.MaxMessageSize),
		CloseTimeout:     p.cfg.CloseTimeout,
	}
	p.dialCompression(cfg, req.deflate)
	start := time.Now()
	conn, resp, err := wsmw.Dial(ctx, target.String(), cfg)
	p.cfg.Metrics.dialDuration(up.Address(), time.Since(start), err)
	return conn, resp, err
}

// readFullish reads into buf until it is full or r ends.
func readFullish(r io.Reader, buf []byte) (int, error) {
	n, err := io.ReadFull(r, buf)
	if err == io.ErrUnexpectedEOF || err == io.EOF {
		err = nil
	}
	return n, err
}
