package caddymodule

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"go.uber.org/zap"

	"github.com/wsgate/wsgate/proxy"
	"github.com/wsgate/wsgate/wsmw"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Handler proxies WebSocket sessions to upstreams, frame by frame, with
// limits, inspection, load balancing and health checks. Requests that are
// not WebSocket upgrades are passed on to the next handler, so the directive
// can share a route with file_server, respond or reverse_proxy.
//
// The sessions are owned by a proxy kept outside the handler, keyed by the
// handler's configuration: a config reload that leaves the handler unchanged
// keeps its sessions; one that changes or removes it drains them with
// drain_code, spread over drain_window (see the package documentation).
type Handler struct {
	// Upstreams are the static upstreams: ws:// or wss:// URLs (http:// and
	// https:// are aliases), or host:port, which is ws:// (wss:// when tls is
	// set). A URL path, if any, replaces the client's request path; otherwise
	// the client's path and query are used.
	Upstreams []string `json:"upstreams,omitempty"`

	// DynamicUpstreamsRaw loads one of reverse_proxy's upstream sources
	// (http.reverse_proxy.upstreams.a, .srv, .multi ...) to look the upstreams
	// up per session; each returned dial address host:port is dialed with
	// ws:// (wss:// when tls is set). Mutually exclusive with upstreams.
	DynamicUpstreamsRaw json.RawMessage `json:"dynamic_upstreams,omitempty" caddy:"namespace=http.reverse_proxy.upstreams inline_key=source"`

	// LoadBalancing chooses the upstream of each new session and retries
	// failed dials. Default: random, no retries.
	LoadBalancing *LoadBalancing `json:"load_balancing,omitempty"`

	// HealthChecks mark upstreams down: actively, with a real WebSocket
	// handshake, or passively, from failed dials. Default: none.
	HealthChecks *HealthChecks `json:"health_checks,omitempty"`

	// TLS configures wss:// upstreams, as reverse_proxy's transport http tls
	// does (the same JSON: server_name, ca, client_certificate_file, ...).
	// When set, bare host:port and dynamic upstreams are dialed with wss://.
	// Default: nil (system roots for wss:// URLs).
	TLS *reverseproxy.TLSConfig `json:"tls,omitempty"`

	// Headers edits the upstream handshake request (request) and the 101 or
	// relayed refusal sent to the client (response). Request header values
	// may use placeholders such as {remote_host}. Default: none.
	Headers *Headers `json:"headers,omitempty"`

	// Origins are the browser origins allowed beyond the request's own host
	// ("*" allows all, patterns like https://*.example.com). Default: same host only.
	Origins []string `json:"origins,omitempty"`

	// MaxHeaderBytes bounds the client's handshake header fields, counted as
	// "Name: value" plus CRLF each: the proxy forwards them, so beyond it the
	// client gets 431 before any upstream is dialed. Default: 32KiB.
	MaxHeaderBytes int64 `json:"max_header_bytes,omitempty"`

	// MaxHeaders bounds the number of the client's handshake header fields;
	// 431 beyond. Default: 100.
	MaxHeaders int `json:"max_headers,omitempty"`

	// Subprotocols, if set, restricts the subprotocols offered by the client
	// that are passed upstream. Default: all are passed.
	Subprotocols []string `json:"subprotocols,omitempty"`

	// MaxFrameSize bounds a frame's payload in bytes, in both directions;
	// 1009 to the sender beyond. Default: 16MiB (wsmw.DefaultMaxFrameSize).
	MaxFrameSize int64 `json:"max_frame_size,omitempty"`

	// MaxMessageSize bounds a message's payload in bytes, in both directions;
	// 1009 to the sender beyond. Default: 32MiB (wsmw.DefaultMaxMessageSize).
	MaxMessageSize int64 `json:"max_message_size,omitempty"`

	// Allow restricts messages to "text" or "binary"; the other kind closes
	// the session with 1003. Default: both.
	Allow string `json:"allow,omitempty"`

	// ValidatePayload lists payload checks: "json" closes the session with
	// 1007 on a text message that is not valid JSON (text messages are then
	// reassembled before forwarding); "utf8" is accepted and always on
	// (wsmw validates text messages and fails them with 1007). Default: none.
	ValidatePayload []string `json:"validate,omitempty"`

	// RateLimit limits messages and bytes per second per session and
	// direction. Default: none.
	RateLimit *RateLimit `json:"rate_limit,omitempty"`

	// Compression is the permessage-deflate (RFC 7692) mode: "off" strips
	// the client's offer; "passthrough" negotiates end to end and forwards
	// compressed frames untouched (inflating a bounded copy when validate
	// json needs the payload, with no context takeover forced in that
	// direction); "terminate" compresses towards the client and talks to
	// the upstream uncompressed, inflating and recompressing each message.
	// Default: off.
	Compression string `json:"compression,omitempty"`

	// DialTimeout bounds one upstream dial including its handshake; 504
	// beyond. Default: 10s.
	DialTimeout caddy.Duration `json:"dial_timeout,omitempty"`

	// IdleTimeout closes a session (1001) after this long without a data
	// message in either direction. Default: 0 (none).
	IdleTimeout caddy.Duration `json:"idle_timeout,omitempty"`

	// MaxLifetime closes a session (1001) this long after it started.
	// Default: 0 (none).
	MaxLifetime caddy.Duration `json:"max_lifetime,omitempty"`

	// WriteTimeout bounds a write to either leg: a reader slower than that
	// is dropped. Default: 30s.
	WriteTimeout caddy.Duration `json:"write_timeout,omitempty"`

	// CloseTimeout bounds the close handshake on each leg. Default: 5s.
	CloseTimeout caddy.Duration `json:"close_timeout,omitempty"`

	// PingInterval makes the proxy ping both legs this often; a leg silent
	// for PingTimeout after a ping is dead. Default: 0 (no pings).
	PingInterval caddy.Duration `json:"ping_interval,omitempty"`

	// PingTimeout is how long a leg has to answer a ping; it must be shorter
	// than PingInterval. Default: PingInterval/2.
	PingTimeout caddy.Duration `json:"ping_timeout,omitempty"`

	// MaxSessions limits concurrent sessions; upgrades beyond get 503.
	// Default: 0 (no limit).
	MaxSessions int `json:"max_sessions,omitempty"`

	// DrainCode is the close code sent to both legs of each session when the
	// handler is removed or changed by a config reload, or Caddy stops: 1012
	// (service restart: reconnect) or 1001 (going away) are the meaningful
	// ones; any code valid on the wire is accepted. Default: 1012.
	DrainCode int `json:"drain_code,omitempty"`

	// DrainWindow spreads the drain closes evenly over this long, so clients
	// do not all reconnect at once. Default: 0 (all at once).
	DrainWindow caddy.Duration `json:"drain_window,omitempty"`

	dynamic     reverseproxy.UpstreamSource
	upstreamTLS *tls.Config
	logger      *zap.Logger
	key         string
	pooled      *pooledProxy
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.ws",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision loads the dynamic upstream source and takes a reference to the
// pooled proxy for this configuration, building it if none exists.
//
// It validates first: Caddy calls Validate only after Provision, and a proxy
// must not be built (nor sessions served) from a configuration that is invalid.
func (h *Handler) Provision(ctx caddy.Context) error {
	if err := h.Validate(); err != nil {
		return err
	}
	h.logger = ctx.Logger()
	key, err := configKey(h) // before LoadModule, which clears DynamicUpstreamsRaw
	if err != nil {
		return err
	}
	if err := h.loadModules(ctx); err != nil {
		return err
	}
	pp, err := acquire(key, h, ctx.GetMetricsRegistry())
	if err != nil {
		return err
	}
	h.key, h.pooled = key, pp
	return nil
}

// loadModules loads what the handler takes from Caddy: the dynamic upstream
// source, the selection policy, and the upstream TLS configuration.
func (h *Handler) loadModules(ctx caddy.Context) error {
	if h.DynamicUpstreamsRaw != nil {
		mod, err := ctx.LoadModule(h, "DynamicUpstreamsRaw")
		if err != nil {
			return fmt.Errorf("loading upstream source module: %v", err)
		}
		h.dynamic = mod.(reverseproxy.UpstreamSource)
	}
	if lb := h.LoadBalancing; lb != nil && lb.SelectionPolicyRaw != nil {
		mod, err := ctx.LoadModule(lb, "SelectionPolicyRaw")
		if err != nil {
			return fmt.Errorf("loading load balancing selection policy: %v", err)
		}
		lb.selection = mod.(reverseproxy.Selector)
	}
	if h.TLS != nil {
		if err := checkPEMFiles(h.TLS.RootCAPEMFiles); err != nil {
			return err
		}
		var err error
		if h.upstreamTLS, err = h.TLS.MakeTLSClientConfig(ctx); err != nil {
			return fmt.Errorf("tls: %v", err)
		}
	}
	return nil
}

// checkPEMFiles reports a trusted CA file that cannot be read or holds no
// certificate, which Caddy's TLS loader would silently skip.
func checkPEMFiles(files []string) error {
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("tls: reading trusted CA: %v", err)
		}
		if !x509.NewCertPool().AppendCertsFromPEM(b) {
			return fmt.Errorf("tls: no certificate in %s", f)
		}
	}
	return nil
}

// Validate reports the first configuration error, naming the JSON field. The
// rules of the proxy's own configuration are the proxy's (proxy.Config.Validate);
// this adds the module's: its names, placeholders and TLS files given in pairs.
// It does not touch the network or the file system.
func (h *Handler) Validate() error {
	dynamic := h.DynamicUpstreamsRaw != nil || h.dynamic != nil
	switch {
	case len(h.Upstreams) == 0 && !dynamic:
		return errors.New("no upstreams: set upstreams or dynamic_upstreams")
	case len(h.Upstreams) > 0 && dynamic:
		return errors.New("upstreams and dynamic_upstreams are mutually exclusive")
	case h.DrainWindow < 0:
		return errors.New("drain_window must not be negative")
	}
	if err := validateTLS(h.TLS); err != nil {
		return err
	}
	if err := h.Headers.validate(); err != nil {
		return err
	}
	for _, v := range h.ValidatePayload {
		if v != "utf8" && v != "json" {
			return fmt.Errorf("validate: unknown check %q (valid: utf8, json)", v)
		}
	}
	cfg, err := h.proxyConfig()
	if err != nil {
		return err
	}
	if dynamic {
		cfg.Source = dynamicSource{} // its upstreams are looked up per session
	}
	return configError(cfg.Validate())
}

// jsonNames renames proxy.Config's fields, as a *proxy.ConfigError names
// them, to the handler's JSON fields; longer names come first, so that no
// name is renamed by a shorter one it starts with.
var jsonNames = strings.NewReplacer(
	"ActiveHealth.Interval", "health_checks.active.interval",
	"ActiveHealth.Timeout", "health_checks.active.timeout",
	"ActiveHealth.Passes", "health_checks.active.passes",
	"ActiveHealth.Fails", "health_checks.active.fails",
	"ActiveHealth.Path", "health_checks.active.uri",
	"PassiveHealth.FailDuration", "health_checks.passive.fail_duration",
	"PassiveHealth.MaxFails", "health_checks.passive.max_fails",
	"MaxMessageSize", "max_message_size",
	"MaxHeaderBytes", "max_header_bytes",
	"MaxHeaders", "max_headers",
	"MaxFrameSize", "max_frame_size",
	"MaxSessions", "max_sessions",
	"MaxLifetime", "max_lifetime",
	"Upstreams", "upstreams",
	"Retries", "load_balancing.retries",
	"TryDuration", "load_balancing.try_duration",
	"TryInterval", "load_balancing.try_interval",
	"DialTimeout", "dial_timeout",
	"IdleTimeout", "idle_timeout",
	"WriteTimeout", "write_timeout",
	"CloseTimeout", "close_timeout",
	"PingInterval", "ping_interval",
	"PingTimeout", "ping_timeout",
	"DrainCode", "drain_code",
	"HeaderUp", "headers.request",
	"Compression", "compression",
)

// configError restates a *proxy.ConfigError with the handler's JSON names.
func configError(err error) error {
	var ce *proxy.ConfigError
	if !errors.As(err, &ce) {
		return err
	}
	return errors.New(jsonNames.Replace(ce.Field + " " + ce.Problem))
}

// Cleanup releases the handler's reference to the pooled proxy; the last
// reference drains its sessions in the background.
func (h *Handler) Cleanup() error {
	if h.pooled == nil {
		return nil
	}
	h.pooled.release(h)
	_, err := pool.Delete(h.key)
	h.pooled = nil
	return err
}

// ServeHTTP proxies WebSocket upgrade requests and passes the others on.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if !wsmw.IsUpgradeRequest(r) {
		return next.ServeHTTP(w, r)
	}
	defer liftIdleTimeouts(r)()
	h.pooled.proxy.ServeHTTP(w, r)
	return nil
}

// configKey identifies a handler configuration: the SHA-256 of its JSON.
func configKey(h *Handler) (string, error) {
	b, err := json.Marshal(h)
	if err != nil {
		return "", fmt.Errorf("hashing config: %v", err)
	}
	sum := sha256.Sum256(b)
	return "ws:" + hex.EncodeToString(sum[:]), nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
