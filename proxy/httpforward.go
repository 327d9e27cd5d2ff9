package proxy

import (
	"context"
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"

	"go.uber.org/zap"
)

// HTTPHandler returns a handler that forwards plain HTTP requests, through
// net/http/httputil's ReverseProxy, to an upstream the proxy's Balancer picks
// among the healthy ones: ws:// upstreams are spoken to as http://, wss:// as
// https:// with UpstreamTLS, and their paths and HeaderUp apply as they do to
// the WebSocket handshake. Behind the proxy's Middleware, one route then
// serves both the WebSocket upgrades and the plain requests of frameworks
// that begin with HTTP long-polling (Socket.IO, SockJS, SignalR) from one
// upstream set, and a StickyCookie balancer keeps each client on one upstream
// across both:
//
//	r.With(p.Middleware).Handle("/socket.io/*", p.HTTPHandler())
func (p *Proxy) HTTPHandler() http.Handler {
	t := http.DefaultTransport.(*http.Transport).Clone()
	if p.cfg.UpstreamTLS != nil {
		t.TLSClientConfig = p.cfg.UpstreamTLS.Clone()
	}
	f := &httpForwarder{p: p}
	f.rp = &httputil.ReverseProxy{
		Rewrite:      f.rewrite,
		Transport:    t,
		ErrorHandler: f.failed,
		ErrorLog:     zap.NewStdLog(p.log),
	}
	return f
}

// httpForwarder is HTTPHandler's handler.
type httpForwarder struct {
	p  *Proxy
	rp *httputil.ReverseProxy
}

// upstreamKey is the request context key of the upstream picked for a request.
type upstreamKey struct{}

func (f *httpForwarder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	pool, err := f.p.candidates(r)
	if err != nil {
		http.Error(w, "upstream lookup failed", http.StatusBadGateway)
		return
	}
	var up *Upstream
	if healthy := f.p.healthy(pool); len(healthy) > 0 {
		up = f.p.cfg.Balancer.Select(healthy, r, w)
	}
	if up == nil {
		http.Error(w, "no upstream available", http.StatusServiceUnavailable)
		return
	}
	f.rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), upstreamKey{}, up)))
}

// rewrite points the outgoing request at the picked upstream: its scheme and
// host, and its path when it has one (else the client's), as a WebSocket
// handshake would be; the client's Host, X-Forwarded-* as the proxy sets them
// for WebSockets, and HeaderUp.
func (f *httpForwarder) rewrite(pr *httputil.ProxyRequest) {
	up := pr.In.Context().Value(upstreamKey{}).(*Upstream)
	out := pr.Out.URL
	out.Scheme, out.Host = httpScheme(up.URL), up.URL.Host
	if up.URL.Path != "" && up.URL.Path != "/" {
		out.Path, out.RawPath = up.URL.Path, up.URL.RawPath
		if up.URL.RawQuery != "" {
			out.RawQuery = up.URL.RawQuery
		}
	}
	pr.Out.Host = pr.In.Host
	if f.p.cfg.TrustForwarded {
		pr.Out.Header["X-Forwarded-For"] = pr.In.Header["X-Forwarded-For"]
	}
	pr.SetXForwarded()
	var expand func(string) string
	if f.p.cfg.Replace != nil {
		expand = func(v string) string { return f.p.cfg.Replace(pr.In, v) }
	}
	f.p.cfg.HeaderUp.apply(pr.Out.Header, expand)
}

// httpScheme maps an upstream's WebSocket scheme to its HTTP one.
func httpScheme(u *url.URL) string {
	if u.Scheme == "wss" {
		return "https"
	}
	return "http"
}

// failed answers a request the upstream could not serve: 504 on a timeout,
// 502 otherwise, counting it as a passive health failure unless the client left.
func (f *httpForwarder) failed(w http.ResponseWriter, r *http.Request, err error) {
	up := r.Context().Value(upstreamKey{}).(*Upstream)
	if r.Context().Err() == nil {
		up.recordFailure(time.Now(), f.p.cfg.PassiveHealth.MaxFails, f.p.cfg.PassiveHealth.FailDuration)
	}
	status := http.StatusBadGateway
	if isTimeout(err) {
		status = http.StatusGatewayTimeout
	}
	if ce := f.p.log.Check(zap.WarnLevel, "http request to upstream failed"); ce != nil {
		ce.Write(f.p.requestFields(r, zap.String("upstream", up.Address()), zap.Int("status", status), zap.Error(err))...)
	}
	w.WriteHeader(status)
}
