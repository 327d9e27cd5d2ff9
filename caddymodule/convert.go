package caddymodule

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/wsgate/wsgate/proxy"
	"github.com/wsgate/wsgate/wsmw"
)

// LoadBalancing configures upstream selection and dial retries, with the
// JSON shape of reverse_proxy's load_balancing.
type LoadBalancing struct {
	// SelectionPolicyRaw chooses the upstream of each new session: one of
	// reverse_proxy's selection policies (http.reverse_proxy.selection_policies.*,
	// third-party ones included), with the same JSON, so that for the same
	// request and upstreams ws picks what reverse_proxy picks. least_conn and
	// random_choose count the proxy's active sessions. Default: random.
	SelectionPolicyRaw json.RawMessage `json:"selection_policy,omitempty" caddy:"namespace=http.reverse_proxy.selection_policies inline_key=policy"`

	// Retries is how many more tries a failed dial gets, after the default
	// failover (a dial refused, unreachable or failing TLS is tried at once on
	// the next upstream not tried yet, within dial_timeout). Default: 0.
	Retries int `json:"retries,omitempty"`

	// TryDuration keeps retrying failed dials for this long. Default: 0
	// (no time-based retries).
	TryDuration caddy.Duration `json:"try_duration,omitempty"`

	// TryInterval is the pause between retries. Default: 250ms.
	TryInterval caddy.Duration `json:"try_interval,omitempty"`

	selection reverseproxy.Selector
}

// HealthChecks configures active and passive health checks, with the JSON
// shape of reverse_proxy's health_checks.
type HealthChecks struct {
	// Active probes every known upstream with a WebSocket handshake.
	Active *ActiveHealthChecks `json:"active,omitempty"`
	// Passive marks an upstream down after failed dials.
	Passive *PassiveHealthChecks `json:"passive,omitempty"`
}

// ActiveHealthChecks are periodic WebSocket handshakes to each upstream.
type ActiveHealthChecks struct {
	// URI is the probe's path and query. Default: the upstream URL's path, or "/".
	URI string `json:"uri,omitempty"`
	// Headers are added to the probe request.
	Headers http.Header `json:"headers,omitempty"`
	// Interval is the time between probe rounds. Default: 30s.
	Interval caddy.Duration `json:"interval,omitempty"`
	// Timeout bounds one probe. Default: 5s.
	Timeout caddy.Duration `json:"timeout,omitempty"`
	// Passes is the consecutive passes that mark a down upstream up. Default: 1.
	Passes int `json:"passes,omitempty"`
	// Fails is the consecutive failures that mark an upstream down. Default: 1.
	Fails int `json:"fails,omitempty"`
}

// PassiveHealthChecks mark an upstream down after failed dials or handshakes.
type PassiveHealthChecks struct {
	// FailDuration is how long a failure is remembered; > 0 enables passive
	// checks. Default: 0.
	FailDuration caddy.Duration `json:"fail_duration,omitempty"`
	// MaxFails is the failures within FailDuration that mark an upstream
	// down. Default: 1 (when FailDuration is set).
	MaxFails int `json:"max_fails,omitempty"`
}

// Headers edits handshake headers: Request those sent upstream, Response
// those of the 101 (or relayed refusal) sent to the client.
type Headers struct {
	Request  *HeaderOps `json:"request,omitempty"`
	Response *HeaderOps `json:"response,omitempty"`
}

// HeaderOps edits a header set: Delete first, then Set, then Add.
type HeaderOps struct {
	Add    http.Header `json:"add,omitempty"`
	Set    http.Header `json:"set,omitempty"`
	Delete []string    `json:"delete,omitempty"`
}

// RateLimit limits each session, per direction, with token buckets.
type RateLimit struct {
	// MessagesPerSecond is the message rate. Default: 0 (no message limit).
	MessagesPerSecond float64 `json:"messages_per_second,omitempty"`
	// BytesPerSecond is the payload byte rate. Default: 0 (no byte limit).
	BytesPerSecond float64 `json:"bytes_per_second,omitempty"`
	// MessageBurst is the messages allowed at once. Default: one second's worth.
	MessageBurst int `json:"message_burst,omitempty"`
	// ByteBurst is the bytes allowed at once. Default: one second's worth.
	ByteBurst int `json:"byte_burst,omitempty"`
	// Mode is "delay" (hold messages: back-pressure) or "close" (close the
	// session with 1008). Default: delay.
	Mode string `json:"mode,omitempty"`
}

// proxyConfig translates the handler into a proxy.Config, without touching
// the file system: before Provision, UpstreamTLS only has the shape of the TLS
// settings. The logger, metrics and dynamic source are set by the pool.
func (h *Handler) proxyConfig() (proxy.Config, error) {
	cfg := proxy.Config{
		Upstreams:      h.Upstreams,
		MaxFrameSize:   h.MaxFrameSize,
		MaxMessageSize: h.MaxMessageSize,
		Origins:        h.Origins,
		Subprotocols:   h.Subprotocols,
		DialTimeout:    time.Duration(h.DialTimeout),
		IdleTimeout:    time.Duration(h.IdleTimeout),
		MaxLifetime:    time.Duration(h.MaxLifetime),
		WriteTimeout:   time.Duration(h.WriteTimeout),
		CloseTimeout:   time.Duration(h.CloseTimeout),
		PingInterval:   time.Duration(h.PingInterval),
		PingTimeout:    time.Duration(h.PingTimeout),
		MaxSessions:    h.MaxSessions,
		MaxHeaderBytes: int(min(h.MaxHeaderBytes, math.MaxInt32)),
		MaxHeaders:     h.MaxHeaders,
		DrainCode:      wsmw.StatusCode(h.DrainCode),
		Replace:        replacePlaceholders,
	}
	if h.TLS != nil {
		cfg.UpstreamTLS = h.upstreamTLS
		if cfg.UpstreamTLS == nil { // not provisioned yet: its shape, for validation
			cfg.UpstreamTLS = &tls.Config{ServerName: h.TLS.ServerName, InsecureSkipVerify: h.TLS.InsecureSkipVerify}
		}
	}
	var err error
	h.LoadBalancing.apply(&cfg)
	h.HealthChecks.apply(&cfg)
	if hd := h.Headers; hd != nil {
		cfg.HeaderUp = hd.Request.proxyOps()
		cfg.HeaderDown = hd.Response.proxyOps()
	}
	if cfg.Inspectors, err = h.inspectors(); err != nil {
		return cfg, err
	}
	if cfg.Compression, err = compressionMode(h.Compression); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// apply sets the selection and retry fields of cfg.
func (lb *LoadBalancing) apply(cfg *proxy.Config) {
	if lb == nil {
		cfg.Balancer = proxy.Random()
		return
	}
	cfg.Balancer = balancer(lb.selection)
	cfg.Retries = lb.Retries
	cfg.TryDuration = time.Duration(lb.TryDuration)
	cfg.TryInterval = time.Duration(lb.TryInterval)
}

// apply sets the health check fields of cfg.
func (hc *HealthChecks) apply(cfg *proxy.Config) {
	if hc == nil {
		return
	}
	if p := hc.Passive; p != nil {
		cfg.PassiveHealth = proxy.PassiveHealth{MaxFails: p.MaxFails, FailDuration: time.Duration(p.FailDuration)}
		if p.FailDuration > 0 && p.MaxFails == 0 {
			cfg.PassiveHealth.MaxFails = 1 // as in reverse_proxy
		}
	}
	if a := hc.Active; a != nil {
		cfg.ActiveHealth = &proxy.ActiveHealth{
			Path:     a.URI,
			Interval: time.Duration(a.Interval),
			Timeout:  time.Duration(a.Timeout),
			Passes:   a.Passes,
			Fails:    a.Fails,
			Header:   a.Headers,
		}
	}
}

// replacePlaceholders expands the placeholders of a header value with the
// request's Caddy replacer (proxy.Config.Replace).
func replacePlaceholders(r *http.Request, v string) string {
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		return repl.ReplaceAll(v, "")
	}
	return v
}

// compressionMode maps compression to the proxy's mode ("" is off).
func compressionMode(s string) (proxy.CompressionMode, error) {
	m, err := proxy.ParseCompressionMode(s)
	if err != nil {
		return 0, fmt.Errorf("compression: unknown mode %q (valid: off, passthrough, terminate)", s)
	}
	return m, nil
}

// validateTLS reports the TLS settings the module cannot use: client
// certificate files given alone, and tls_except_ports (a WebSocket upstream
// is dialed with TLS or without it by its scheme).
func validateTLS(t *reverseproxy.TLSConfig) error {
	switch {
	case t == nil:
		return nil
	case (t.ClientCertificateFile == "") != (t.ClientCertificateKeyFile == ""):
		return errors.New("tls: client_certificate_file and client_certificate_key_file go together")
	case len(t.ExceptPorts) > 0:
		return errors.New("tls: except_ports does not apply to WebSocket upstreams (use ws:// or wss:// URLs)")
	}
	return nil
}

// allowedType maps allow to the one data opcode allowed (0: both).
func allowedType(allow string) (wsmw.OpCode, error) {
	switch allow {
	case "":
		return 0, nil
	case "text":
		return wsmw.OpText, nil
	case "binary":
		return wsmw.OpBinary, nil
	}
	return 0, fmt.Errorf("allow: unknown message type %q (valid: text, binary)", allow)
}

// inspectors builds the chain from allow, validate and rate_limit: cheap
// checks first, the rate limit last so refused messages are not charged.
func (h *Handler) inspectors() (proxy.Chain, error) {
	var chain proxy.Chain
	op, err := allowedType(h.Allow)
	if err != nil {
		return nil, err
	}
	if op != 0 {
		chain = append(chain, proxy.AllowTypes{Only: op})
	}
	for _, v := range h.ValidatePayload {
		if v == "json" {
			chain = append(chain, proxy.ValidateJSON{})
			break
		}
	}
	rl, err := h.RateLimit.inspector()
	if err != nil {
		return nil, err
	}
	if rl != nil {
		chain = append(chain, rl)
	}
	return chain, nil
}

// inspector builds the rate limit; nil r gives nil.
func (r *RateLimit) inspector() (*proxy.RateLimit, error) {
	if r == nil {
		return nil, nil
	}
	mode := proxy.RateLimitDelay
	switch r.Mode {
	case "", "delay":
	case "close":
		mode = proxy.RateLimitClose
	default:
		return nil, fmt.Errorf("rate_limit: unknown mode %q (valid: delay, close)", r.Mode)
	}
	rl, err := proxy.NewRateLimit(proxy.RateLimitConfig{
		Messages:     r.MessagesPerSecond,
		MessageBurst: r.MessageBurst,
		Bytes:        r.BytesPerSecond,
		ByteBurst:    r.ByteBurst,
		Mode:         mode,
	})
	if err != nil {
		return nil, fmt.Errorf("rate_limit: %s", strings.TrimPrefix(err.Error(), "proxy: "))
	}
	return rl, nil
}

// Request headers the proxy sets itself or that decide the handshake: a
// placeholder value for them is refused, since it would depend on the client.
var reservedRequestHeaders = []string{
	"Host", "Origin", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host",
	"Proxy-Connection", "Keep-Alive", "Te", "Trailer", "Transfer-Encoding",
}

func (hd *Headers) validate() error {
	if hd == nil {
		return nil
	}
	if ops := hd.Request; ops != nil {
		for _, set := range []http.Header{ops.Set, ops.Add} {
			for k, vs := range set {
				ck := http.CanonicalHeaderKey(k)
				if hasPlaceholder(vs) && containsFold(reservedRequestHeaders, ck) {
					return fmt.Errorf("headers.request: %s cannot take a placeholder value", ck)
				}
			}
		}
	}
	if ops := hd.Response; ops != nil {
		for _, set := range []http.Header{ops.Set, ops.Add} {
			for k, vs := range set {
				if hasPlaceholder(vs) {
					return fmt.Errorf("headers.response: %s: placeholders are not supported in response headers", k)
				}
			}
		}
	}
	return nil
}

func containsFold(list []string, s string) bool {
	for _, v := range list {
		if strings.EqualFold(v, s) {
			return true
		}
	}
	return false
}

func hasPlaceholder(vs []string) bool {
	for _, v := range vs {
		if strings.Contains(v, "{") {
			return true
		}
	}
	return false
}

// proxyOps returns the operations as the proxy takes them; nil o gives none.
func (o *HeaderOps) proxyOps() proxy.HeaderOps {
	if o == nil {
		return proxy.HeaderOps{}
	}
	return proxy.HeaderOps{Add: o.Add, Set: o.Set, Delete: o.Delete}
}
