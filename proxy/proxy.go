package proxy

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/wsgate/wsgate/internal/relay"
	"github.com/wsgate/wsgate/wsmw"
)

// UpstreamSource supplies upstream addresses per request (dynamic upstreams such
// as DNS A/SRV lookups). Addresses are ws:// or wss:// URLs or host:port (ws://).
type UpstreamSource interface {
	Upstreams(r *http.Request) ([]string, error)
}

// ErrShuttingDown is returned by ServeHTTP paths once Shutdown has begun.
var ErrShuttingDown = errors.New("proxy: shutting down")

// Proxy forwards WebSocket sessions to upstreams, frame by frame, enforcing limits
// and inspector verdicts. It is an http.Handler for upgrade requests and provides
// Middleware for routers. Create it with New; it is safe for concurrent use.
type Proxy struct {
	cfg    Config
	log    *zap.Logger
	server wsmw.ServerConfig
	// inflates, by Direction: an inspector needs the payload of messages in that
	// direction, so compressed ones are inflated (passthrough forces no context takeover).
	inflates [2]bool

	mu            sync.Mutex
	upstreams     map[string]*Upstream // by address: state survives dynamic refreshes
	static        []*Upstream
	sessions      map[*session]struct{}
	draining      bool
	drainDeadline time.Time     // the Drain context's deadline, for sessions that start during it
	done          chan struct{} // closed when draining and the last session ended

	active  atomic.Int64
	clock   *coarseClock // for write deadlines (session.armWrite)
	nextID  atomic.Uint64
	health  *HealthChecker
	closing sync.Once
}

// New validates cfg, fills in defaults and returns a ready Proxy. Active health
// checks, if configured, start now and stop in Shutdown.
func New(cfg Config) (*Proxy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	p := &Proxy{
		cfg:       cfg,
		log:       cfg.Logger,
		upstreams: make(map[string]*Upstream),
		sessions:  make(map[*session]struct{}),
	}
	if p.log == nil {
		p.log = zap.NewNop()
	}
	p.clock = newCoarseClock(cfg.WriteTimeout/8, p.active.Load)
	for _, dir := range []Direction{ClientToUpstream, UpstreamToClient} {
		p.inflates[dir] = cfg.Inspectors.NeedsPayload(dir, wsmw.OpText) || cfg.Inspectors.NeedsPayload(dir, wsmw.OpBinary)
	}
	for _, raw := range cfg.Upstreams {
		u, err := p.upstream(raw)
		if err != nil {
			return nil, err
		}
		p.static = append(p.static, u)
	}
	p.server = wsmw.ServerConfig{
		Origins:        cfg.Origins,
		CheckOrigin:    cfg.CheckOrigin,
		MaxFrameSize:   cfg.MaxFrameSize,
		MaxMessageSize: firstPositive(cfg.MaxMessageSizeUp, cfg.MaxMessageSize),
		CloseTimeout:   cfg.CloseTimeout,
		Logger:         p.log,
	}
	cfg.Metrics.attach(p)
	if cfg.ActiveHealth != nil {
		ah := *cfg.ActiveHealth
		if ah.Dial == nil {
			// Probes dial as sessions do: same TLS settings and credentials.
			ah.Dial = HandshakeProbe(&wsmw.DialConfig{
				TLSConfig:        cfg.UpstreamTLS,
				Credentials:      cfg.UpstreamCredentials,
				HandshakeTimeout: ah.Timeout,
			})
		}
		p.health = NewHealthChecker(ah, p.knownUpstreams, p.log)
		p.health.Start()
	}
	return p, nil
}

func firstPositive(vs ...int64) int64 {
	for _, v := range vs {
		if v > 0 {
			return v
		}
	}
	return 0
}

// upstream returns the *Upstream for an address, creating it on first use.
func (p *Proxy) upstream(raw string) (*Upstream, error) {
	u, err := parseUpstreamURL(raw, p.cfg.UpstreamTLS != nil)
	if err != nil {
		return nil, err
	}
	key := u.String()
	p.mu.Lock()
	defer p.mu.Unlock()
	if up, ok := p.upstreams[key]; ok {
		return up, nil
	}
	up := &Upstream{URL: u, addr: key, hostPort: hostPort(u)}
	p.upstreams[key] = up
	return up, nil
}

// knownUpstreams lists every upstream the proxy has state for (for active health checks).
func (p *Proxy) knownUpstreams() []*Upstream {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*Upstream, 0, len(p.upstreams))
	for _, u := range p.upstreams {
		out = append(out, u)
	}
	return out
}

// candidates returns the upstreams for r, static or from the Source.
func (p *Proxy) candidates(r *http.Request) ([]*Upstream, error) {
	if p.cfg.Source == nil {
		return p.static, nil
	}
	addrs, err := p.cfg.Source.Upstreams(r)
	if err != nil {
		return nil, err
	}
	out := make([]*Upstream, 0, len(addrs))
	for _, a := range addrs {
		u, err := p.upstream(a)
		if err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, nil
}

// Middleware returns router middleware: WebSocket upgrade requests are proxied,
// everything else goes to the next handler. It fits chi's r.Use and r.With.
func (p *Proxy) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !wsmw.IsUpgradeRequest(r) {
			next.ServeHTTP(w, r)
			return
		}
		p.ServeHTTP(w, r)
	})
}

// ServeHTTP proxies one WebSocket upgrade request. The upstream is dialed before
// the client is answered, so its refusal (status and bounded body) or its
// unavailability (502/503/504) reaches the client as an HTTP response. After an
// HTTP/1.1 upgrade the session continues in its own goroutines and ServeHTTP
// returns. On HTTP/2 and HTTP/3 (an extended CONNECT, RFC 8441 and RFC 9220)
// the client leg is the request's stream, which ends when ServeHTTP returns:
// the session runs in ServeHTTP's goroutine, and ServeHTTP returns when it
// has ended. The upstream leg is an HTTP/1.1 upgrade either way.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if rf, ok := p.checkRequest(r); !ok {
		p.refuse(w, r, rf)
		return
	}
	if !p.admit() {
		p.refuse(w, r, refusal{&wsmw.HandshakeError{Status: http.StatusServiceUnavailable, Reason: "too many sessions or shutting down", Err: ErrShuttingDown}, "capacity"})
		return
	}
	admitted := true
	defer func() {
		if admitted {
			p.release()
		}
	}()
	up, conn, resp, rf := p.dialUpstream(w, r)
	switch {
	case rf.HandshakeError != nil:
		p.refuse(w, r, rf)
		return
	case conn == nil:
		p.relayRefusal(w, r, resp)
		return
	}
	client, err := wsmw.Upgrade(w, r, p.clientConfig(resp, conn))
	if err != nil {
		conn.Close(wsmw.StatusGoingAway, "client handshake failed")
		p.cfg.Metrics.handshakeFailure("client_upgrade")
		return
	}
	admitted = false
	if r.ProtoMajor >= 2 {
		// The client leg is this request's stream: the session must end before ServeHTTP does.
		<-p.startSession(r, client, conn, up, true).ended
		relay.EndStream(client)
		return
	}
	// The session runs in goroutines of its own and ServeHTTP returns, so net/http
	// frees the buffers it holds per connection for as long as a handler runs.
	p.startSession(r, client, conn, up, false)
}

// checkRequest checks the client's handshake before anything is dialed: the
// rules of RFC 6455 and the origin policy, subprotocols that can be
// forwarded, and headers within MaxHeaders and MaxHeaderBytes.
func (p *Proxy) checkRequest(r *http.Request) (refusal, bool) {
	if err := wsmw.CheckHandshake(r, &p.server); err != nil {
		var he *wsmw.HandshakeError
		if !errors.As(err, &he) {
			he = &wsmw.HandshakeError{Status: http.StatusBadRequest, Reason: err.Error(), Err: err}
		}
		return refusal{he, "bad_handshake"}, false
	}
	if !validSubprotocols(wsmw.Subprotocols(r.Header)) {
		return refusal{&wsmw.HandshakeError{Status: http.StatusBadRequest, Reason: "Sec-WebSocket-Protocol must list tokens", Err: wsmw.ErrNoHandshake}, "bad_handshake"}, false
	}
	if rf, tooLarge := p.headerRefusal(r); tooLarge {
		return rf, false
	}
	return refusal{}, true
}

// clientConfig is the client's handshake after the upstream's: its choice of
// subprotocol, its end-to-end headers (edited by HeaderDown), and compression.
func (p *Proxy) clientConfig(resp *http.Response, conn *wsmw.Conn) *wsmw.ServerConfig {
	hdr := endToEnd(resp.Header)
	p.cfg.HeaderDown.apply(hdr, nil)
	sc := p.server
	sc.SelectSubprotocol = func(*http.Request, []string) string { return conn.Subprotocol() }
	sc.ResponseHeader = hdr
	p.clientCompression(&sc, conn)
	return &sc
}

// admit counts a new session unless the proxy is full or draining.
func (p *Proxy) admit() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.draining {
		return false
	}
	if max := p.cfg.MaxSessions; max > 0 && p.active.Load() >= int64(max) {
		return false
	}
	p.active.Add(1)
	return true
}

func (p *Proxy) release() {
	if p.active.Add(-1) == 0 {
		p.mu.Lock()
		if p.draining && p.done != nil {
			select {
			case <-p.done:
			default:
				close(p.done)
			}
		}
		p.mu.Unlock()
	}
}

// ActiveSessions returns the number of sessions being proxied (or handshaking).
func (p *Proxy) ActiveSessions() int { return int(p.active.Load()) }

// refuse answers a refused handshake with its status and a body naming the
// cause, counts it, and logs it: at warn level when the upstream side failed
// (5xx), at info for oversized headers, at debug for other bad requests.
func (p *Proxy) refuse(w http.ResponseWriter, r *http.Request, rf refusal) {
	p.cfg.Metrics.handshakeFailure(rf.metric)
	level := zap.DebugLevel
	switch {
	case rf.Status >= 500:
		level = zap.WarnLevel
	case rf.Status == http.StatusRequestHeaderFieldsTooLarge:
		level = zap.InfoLevel
	}
	if ce := p.log.Check(level, "handshake refused"); ce != nil {
		ce.Write(p.requestFields(r, zap.Int("status", rf.Status), zap.String("reason", rf.metric), zap.Error(rf.HandshakeError))...)
	}
	relay.RefuseHandshake(w, r, rf.HandshakeError)
}

// relayRefusal passes an upstream's refusal (a status of 300 or more) on to
// the client, with its end-to-end headers and a bounded body.
func (p *Proxy) relayRefusal(w http.ResponseWriter, r *http.Request, resp *http.Response) {
	p.cfg.Metrics.handshakeFailure("upstream_refused")
	if ce := p.log.Check(zap.DebugLevel, "upstream refused handshake"); ce != nil {
		ce.Write(p.requestFields(r, zap.Int("status", resp.StatusCode))...)
	}
	h := endToEnd(resp.Header)
	h.Del("Content-Length")
	p.cfg.HeaderDown.apply(h, nil)
	for k, vs := range h {
		w.Header()[k] = append(w.Header()[k], vs...) // after what the balancer set (a sticky cookie)
	}
	w.WriteHeader(resp.StatusCode)
	if resp.Body != nil {
		buf := make([]byte, wsmw.DefaultMaxErrorBody)
		n, _ := readFullish(resp.Body, buf)
		w.Write(buf[:n])
	}
}

func (p *Proxy) requestFields(r *http.Request, extra ...zap.Field) []zap.Field {
	fields := []zap.Field{zap.String("client_addr", r.RemoteAddr), zap.String("uri", r.RequestURI)}
	if p.cfg.LogFields != nil {
		fields = append(fields, p.cfg.LogFields(r)...)
	}
	return append(fields, extra...)
}

// Shutdown stops accepting sessions, closes every active session with the drain
// code on both legs, and waits until they have ended or ctx is done.
func (p *Proxy) Shutdown(ctx context.Context) error { return p.Drain(ctx, 0) }

// Drain is Shutdown with the closes spread evenly over window, so that clients
// do not all reconnect at the same moment.
func (p *Proxy) Drain(ctx context.Context, window time.Duration) error {
	deadline, _ := ctx.Deadline()
	p.mu.Lock()
	p.draining = true
	p.drainDeadline = deadline
	if p.done == nil {
		p.done = make(chan struct{})
		if p.active.Load() == 0 {
			close(p.done)
		}
	}
	done := p.done
	sessions := make([]*session, 0, len(p.sessions))
	for s := range p.sessions {
		sessions = append(sessions, s)
	}
	p.mu.Unlock()
	p.closing.Do(func() {
		if p.health != nil {
			p.health.Stop()
		}
	})
	defer p.cfg.Metrics.detach(p)
	go func() {
		step := time.Duration(0)
		if len(sessions) > 1 && window > 0 {
			step = window / time.Duration(len(sessions))
		}
		for i, s := range sessions {
			if i > 0 && step > 0 {
				select {
				case <-time.After(step):
				case <-ctx.Done():
				}
			}
			go s.drain(p.cfg.DrainCode, "server shutting down", deadline)
		}
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
