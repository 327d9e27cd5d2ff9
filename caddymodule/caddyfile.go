package caddymodule

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"github.com/dustin/go-humanize"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("ws", parseCaddyfile)
	// Before respond, so that reverse_proxy, php_fastcgi, file_server and
	// respond (the handlers that answer every request) come after it, while
	// abort and error (usually matched, to refuse) still come first.
	httpcaddyfile.RegisterDirectiveOrder("ws", httpcaddyfile.Before, "respond")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	ws := new(Handler)
	if err := ws.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	return ws, nil
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	ws [<matcher>] [<upstreams...>] {
//	    # upstreams
//	    to      <upstreams...>
//	    dynamic <source> [...]   # a reverse_proxy upstream source: a, srv, multi
//
//	    # load balancing
//	    lb_policy       <name> [<options...>]
//	    lb_retries      <n>
//	    lb_try_duration <duration>
//	    lb_try_interval <duration>
//
//	    # active health checks (WebSocket handshakes)
//	    health_uri      <uri>
//	    health_interval <duration>
//	    health_timeout  <duration>
//	    health_passes   <n>
//	    health_fails    <n>
//	    health_headers {
//	        <field> [<values...>]
//	    }
//
//	    # passive health checks (failed dials)
//	    fail_duration <duration>
//	    max_fails     <n>
//
//	    # upstream TLS (wss://)
//	    tls
//	    tls_server_name          <name>
//	    tls_trusted_ca_certs     <pem_files...>
//	    tls_client_auth          <cert_file> <key_file>
//	    tls_insecure_skip_verify
//
//	    # handshake
//	    header_up    [+|-]<field> [<value>]
//	    header_down  [+|-]<field> [<value>]
//	    origins      <patterns...>
//	    subprotocols <names...>
//	    max_header_bytes <size>
//	    max_headers      <n>
//
//	    # messages
//	    max_frame_size   <size>
//	    max_message_size <size>
//	    allow            text|binary
//	    validate         utf8|json...
//	    rate_limit       <msgs/s> [<bytes/s>] [burst <msgs> [<bytes>]] [delay|close]
//	    compression      off|passthrough|terminate
//
//	    # sessions
//	    dial_timeout  <duration>
//	    idle_timeout  <duration>
//	    max_lifetime  <duration>
//	    write_timeout <duration>
//	    close_timeout <duration>
//	    ping_interval <duration>
//	    ping_timeout  <duration>
//	    max_sessions  <n>
//	    drain_code    <code>
//	    drain_window  <duration>
//	}
//
// Upstreams are ws:// or wss:// URLs or host:port. Sizes take units (64KiB,
// 1MB); durations are Caddy durations (250ms, 5m, 1d).
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume the directive name
	h.Upstreams = append(h.Upstreams, d.RemainingArgs()...)
	for d.NextBlock(0) {
		parse, ok := subdirectives[d.Val()]
		if !ok {
			return d.Errf("unrecognized subdirective %s", d.Val())
		}
		if err := parse(h, d); err != nil {
			return err
		}
	}
	return nil
}

// subdirective parses one line (or block) of a ws block, the dispenser on its name.
type subdirective func(h *Handler, d *caddyfile.Dispenser) error

// subdirectives are the ws block's subdirectives, by name.
var subdirectives = map[string]subdirective{
	"to":      parseTo,
	"dynamic": parseDynamic,

	"lb_policy":       parseLBPolicy,
	"lb_retries":      func(h *Handler, d *caddyfile.Dispenser) error { return intArg(d, &h.lb().Retries) },
	"lb_try_duration": func(h *Handler, d *caddyfile.Dispenser) error { return durationArg(d, &h.lb().TryDuration) },
	"lb_try_interval": func(h *Handler, d *caddyfile.Dispenser) error { return durationArg(d, &h.lb().TryInterval) },

	"health_uri":      func(h *Handler, d *caddyfile.Dispenser) error { return stringArg(d, &h.active().URI) },
	"health_interval": func(h *Handler, d *caddyfile.Dispenser) error { return durationArg(d, &h.active().Interval) },
	"health_timeout":  func(h *Handler, d *caddyfile.Dispenser) error { return durationArg(d, &h.active().Timeout) },
	"health_passes":   func(h *Handler, d *caddyfile.Dispenser) error { return intArg(d, &h.active().Passes) },
	"health_fails":    func(h *Handler, d *caddyfile.Dispenser) error { return intArg(d, &h.active().Fails) },
	"health_headers":  parseHealthHeaders,
	"fail_duration":   func(h *Handler, d *caddyfile.Dispenser) error { return durationArg(d, &h.passive().FailDuration) },
	"max_fails":       func(h *Handler, d *caddyfile.Dispenser) error { return intArg(d, &h.passive().MaxFails) },

	"transport":                parseTransport,
	"tls":                      parseTLSShorthand,
	"tls_server_name":          parseTLSShorthand,
	"tls_trusted_ca_certs":     parseTLSShorthand,
	"tls_client_auth":          parseTLSShorthand,
	"tls_insecure_skip_verify": parseTLSShorthand,

	"header_up":        parseHeaderUpDown,
	"header_down":      parseHeaderUpDown,
	"origins":          func(h *Handler, d *caddyfile.Dispenser) error { return listArg(d, &h.Origins) },
	"subprotocols":     func(h *Handler, d *caddyfile.Dispenser) error { return listArg(d, &h.Subprotocols) },
	"max_header_bytes": func(h *Handler, d *caddyfile.Dispenser) error { return sizeArg(d, &h.MaxHeaderBytes) },
	"max_headers":      func(h *Handler, d *caddyfile.Dispenser) error { return intArg(d, &h.MaxHeaders) },

	"max_frame_size":   func(h *Handler, d *caddyfile.Dispenser) error { return sizeArg(d, &h.MaxFrameSize) },
	"max_message_size": func(h *Handler, d *caddyfile.Dispenser) error { return sizeArg(d, &h.MaxMessageSize) },
	"allow":            parseAllow,
	"validate":         parseValidate,
	"rate_limit": func(h *Handler, d *caddyfile.Dispenser) (err error) {
		h.RateLimit, err = parseRateLimit(d)
		return err
	},
	"compression": parseCompression,

	"dial_timeout":  func(h *Handler, d *caddyfile.Dispenser) error { return durationArg(d, &h.DialTimeout) },
	"idle_timeout":  func(h *Handler, d *caddyfile.Dispenser) error { return durationArg(d, &h.IdleTimeout) },
	"max_lifetime":  func(h *Handler, d *caddyfile.Dispenser) error { return durationArg(d, &h.MaxLifetime) },
	"write_timeout": func(h *Handler, d *caddyfile.Dispenser) error { return durationArg(d, &h.WriteTimeout) },
	"close_timeout": func(h *Handler, d *caddyfile.Dispenser) error { return durationArg(d, &h.CloseTimeout) },
	"ping_interval": func(h *Handler, d *caddyfile.Dispenser) error { return durationArg(d, &h.PingInterval) },
	"ping_timeout":  func(h *Handler, d *caddyfile.Dispenser) error { return durationArg(d, &h.PingTimeout) },
	"max_sessions":  func(h *Handler, d *caddyfile.Dispenser) error { return intArg(d, &h.MaxSessions) },
	"drain_code":    func(h *Handler, d *caddyfile.Dispenser) error { return intArg(d, &h.DrainCode) },
	"drain_window":  func(h *Handler, d *caddyfile.Dispenser) error { return durationArg(d, &h.DrainWindow) },
}

func parseTo(h *Handler, d *caddyfile.Dispenser) error {
	args := d.RemainingArgs()
	if len(args) == 0 {
		return d.ArgErr()
	}
	h.Upstreams = append(h.Upstreams, args...)
	return nil
}

// parseDynamic parses dynamic <source> [...], a reverse_proxy upstream source.
func parseDynamic(h *Handler, d *caddyfile.Dispenser) error {
	if !d.NextArg() {
		return d.ArgErr()
	}
	if h.DynamicUpstreamsRaw != nil {
		return d.Err("dynamic upstreams already specified")
	}
	name := d.Val()
	modID := "http.reverse_proxy.upstreams." + name
	unm, err := caddyfile.UnmarshalModule(d, modID)
	if err != nil {
		return err
	}
	source, ok := unm.(reverseproxy.UpstreamSource)
	if !ok {
		return d.Errf("module %s (%T) is not an UpstreamSource", modID, unm)
	}
	h.DynamicUpstreamsRaw = caddyconfig.JSONModuleObject(source, "source", name, nil)
	return nil
}

// parseLBPolicy parses lb_policy <name> [<args...>] [{...}] with the selection
// policy module's own Caddyfile syntax, as reverse_proxy does.
func parseLBPolicy(h *Handler, d *caddyfile.Dispenser) error {
	if !d.NextArg() {
		return d.ArgErr()
	}
	lb := h.lb()
	if lb.SelectionPolicyRaw != nil {
		return d.Err("load balancing selection policy already specified")
	}
	name := d.Val()
	modID := "http.reverse_proxy.selection_policies." + name
	unm, err := caddyfile.UnmarshalModule(d, modID)
	if err != nil {
		return err
	}
	sel, ok := unm.(reverseproxy.Selector)
	if !ok {
		return d.Errf("module %s (%T) is not a reverseproxy.Selector", modID, unm)
	}
	lb.SelectionPolicyRaw = caddyconfig.JSONModuleObject(sel, "policy", name, nil)
	return nil
}

func parseHealthHeaders(h *Handler, d *caddyfile.Dispenser) error {
	a := h.active()
	if a.Headers == nil {
		a.Headers = make(http.Header)
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		key := d.Val()
		values := d.RemainingArgs()
		if len(values) == 0 {
			values = append(values, "")
		}
		a.Headers[key] = append(a.Headers[key], values...)
	}
	return nil
}

// parseTransport parses transport http { tls ... } with reverse_proxy's own
// parser, so that its block can be copied here; of it, only the tls* options
// apply to a WebSocket upstream, and the others are refused.
func parseTransport(h *Handler, d *caddyfile.Dispenser) error {
	if !d.NextArg() {
		return d.ArgErr()
	}
	if d.Val() != "http" {
		return d.Errf("transport %s: only the http transport's tls options apply to WebSocket upstreams", d.Val())
	}
	unm, err := caddyfile.UnmarshalModule(d, "http.reverse_proxy.transport.http")
	if err != nil {
		return err
	}
	ht := unm.(*reverseproxy.HTTPTransport)
	tlsCfg := ht.TLS
	ht.TLS = nil
	if got, _ := json.Marshal(ht); string(got) != "{}" {
		return d.Errf("transport http: only the tls options apply to WebSocket upstreams (the rest of %s is HTTP transport settings)", got)
	}
	if tlsCfg == nil {
		return d.Err("transport http: no tls option: a WebSocket upstream without TLS needs no transport block")
	}
	h.TLS = tlsCfg
	return nil
}

// parseTLSShorthand parses the tls* options written directly in the ws block,
// as in reverse_proxy's transport http block.
func parseTLSShorthand(h *Handler, d *caddyfile.Dispenser) error {
	t := h.tls()
	switch d.Val() {
	case "tls":
		if d.NextArg() {
			return d.ArgErr()
		}
	case "tls_server_name":
		return stringArg(d, &t.ServerName)
	case "tls_trusted_ca_certs":
		return listArg(d, &t.RootCAPEMFiles)
	case "tls_client_auth":
		args := d.RemainingArgs()
		if len(args) != 2 {
			return d.Err("tls_client_auth takes a certificate file and a key file")
		}
		t.ClientCertificateFile, t.ClientCertificateKeyFile = args[0], args[1]
	case "tls_insecure_skip_verify":
		if d.NextArg() {
			return d.ArgErr()
		}
		t.InsecureSkipVerify = true
	}
	return nil
}

func parseHeaderUpDown(h *Handler, d *caddyfile.Dispenser) error {
	if h.Headers == nil {
		h.Headers = new(Headers)
	}
	ops := &h.Headers.Request
	if d.Val() == "header_down" {
		ops = &h.Headers.Response
	}
	if *ops == nil {
		*ops = new(HeaderOps)
	}
	return parseHeaderOp(d, *ops)
}

func parseAllow(h *Handler, d *caddyfile.Dispenser) error {
	if err := stringArg(d, &h.Allow); err != nil {
		return err
	}
	_, err := allowedType(h.Allow)
	return err
}

func parseValidate(h *Handler, d *caddyfile.Dispenser) error {
	args := d.RemainingArgs()
	if len(args) == 0 {
		return d.ArgErr()
	}
	for _, a := range args {
		if a != "utf8" && a != "json" {
			return d.Errf("validate: unknown check %q (valid: utf8, json)", a)
		}
	}
	h.ValidatePayload = append(h.ValidatePayload, args...)
	return nil
}

func parseCompression(h *Handler, d *caddyfile.Dispenser) error {
	if err := stringArg(d, &h.Compression); err != nil {
		return err
	}
	if _, err := compressionMode(h.Compression); err != nil {
		return d.Err(err.Error())
	}
	return nil
}

func (h *Handler) lb() *LoadBalancing {
	if h.LoadBalancing == nil {
		h.LoadBalancing = new(LoadBalancing)
	}
	return h.LoadBalancing
}

func (h *Handler) active() *ActiveHealthChecks {
	if h.HealthChecks == nil {
		h.HealthChecks = new(HealthChecks)
	}
	if h.HealthChecks.Active == nil {
		h.HealthChecks.Active = new(ActiveHealthChecks)
	}
	return h.HealthChecks.Active
}

func (h *Handler) passive() *PassiveHealthChecks {
	if h.HealthChecks == nil {
		h.HealthChecks = new(HealthChecks)
	}
	if h.HealthChecks.Passive == nil {
		h.HealthChecks.Passive = new(PassiveHealthChecks)
	}
	return h.HealthChecks.Passive
}

func (h *Handler) tls() *reverseproxy.TLSConfig {
	if h.TLS == nil {
		h.TLS = new(reverseproxy.TLSConfig)
	}
	return h.TLS
}

// parseHeaderOp parses [+|-]<field> [<value>] into ops.
func parseHeaderOp(d *caddyfile.Dispenser, ops *HeaderOps) error {
	args := d.RemainingArgs()
	if len(args) == 0 || len(args) > 2 {
		if len(args) == 3 {
			return d.Err("header search and replace is not supported: use [+|-]<field> [<value>]")
		}
		return d.ArgErr()
	}
	field := args[0]
	switch {
	case strings.HasPrefix(field, "-"):
		if len(args) != 1 {
			return d.Err("deleting a header takes no value")
		}
		ops.Delete = append(ops.Delete, http.CanonicalHeaderKey(field[1:]))
	case len(args) != 2:
		return d.Errf("header %s needs a value (or -%s to delete it)", field, field)
	case strings.HasPrefix(field, "+"):
		if ops.Add == nil {
			ops.Add = make(http.Header)
		}
		ops.Add.Add(field[1:], args[1])
	default:
		if ops.Set == nil {
			ops.Set = make(http.Header)
		}
		ops.Set.Set(field, args[1])
	}
	return nil
}

// parseRateLimit parses <msgs/s> [<bytes/s>] [burst <msgs> [<bytes>]] [delay|close].
func parseRateLimit(d *caddyfile.Dispenser) (*RateLimit, error) {
	args := d.RemainingArgs()
	if len(args) == 0 {
		return nil, d.ArgErr()
	}
	rl := new(RateLimit)
	var err error
	if rl.MessagesPerSecond, err = strconv.ParseFloat(args[0], 64); err != nil || rl.MessagesPerSecond < 0 {
		return nil, d.Errf("rate_limit: bad messages per second %q", args[0])
	}
	args = args[1:]
	if len(args) > 0 && args[0] != "burst" && args[0] != "delay" && args[0] != "close" {
		n, err := humanize.ParseBytes(args[0])
		if err != nil {
			return nil, d.Errf("rate_limit: bad bytes per second %q: %v", args[0], err)
		}
		rl.BytesPerSecond = float64(n)
		args = args[1:]
	}
	if len(args) > 0 && args[0] == "burst" {
		if len(args) < 2 {
			return nil, d.Err("rate_limit: burst needs a message count")
		}
		if rl.MessageBurst, err = strconv.Atoi(args[1]); err != nil || rl.MessageBurst < 0 {
			return nil, d.Errf("rate_limit: bad burst %q", args[1])
		}
		args = args[2:]
		if len(args) > 0 && args[0] != "delay" && args[0] != "close" {
			n, err := humanize.ParseBytes(args[0])
			if err != nil {
				return nil, d.Errf("rate_limit: bad byte burst %q: %v", args[0], err)
			}
			rl.ByteBurst = int(n)
			args = args[1:]
		}
	}
	if len(args) > 0 {
		rl.Mode = args[0]
		if rl.Mode != "delay" && rl.Mode != "close" {
			return nil, d.Errf("rate_limit: unknown mode %q (valid: delay, close)", rl.Mode)
		}
		args = args[1:]
	}
	if len(args) > 0 {
		return nil, d.Errf("rate_limit: unexpected %q", args[0])
	}
	return rl, nil
}

func stringArg(d *caddyfile.Dispenser, dst *string) error {
	if !d.NextArg() {
		return d.ArgErr()
	}
	*dst = d.Val()
	if d.NextArg() {
		return d.ArgErr()
	}
	return nil
}

func listArg(d *caddyfile.Dispenser, dst *[]string) error {
	args := d.RemainingArgs()
	if len(args) == 0 {
		return d.ArgErr()
	}
	*dst = append(*dst, args...)
	return nil
}

func intArg(d *caddyfile.Dispenser, dst *int) error {
	name, s := d.Val(), ""
	if err := stringArg(d, &s); err != nil {
		return err
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return d.Errf("%s: bad number %q", name, s)
	}
	*dst = n
	return nil
}

func durationArg(d *caddyfile.Dispenser, dst *caddy.Duration) error {
	name, s := d.Val(), ""
	if err := stringArg(d, &s); err != nil {
		return err
	}
	dur, err := caddy.ParseDuration(s)
	if err != nil {
		return d.Errf("%s: bad duration %q: %v", name, s, err)
	}
	*dst = caddy.Duration(dur)
	return nil
}

// sizeArg parses a size with units (64KiB, 1MB), as reverse_proxy's buffer sizes.
func sizeArg(d *caddyfile.Dispenser, dst *int64) error {
	name, s := d.Val(), ""
	if err := stringArg(d, &s); err != nil {
		return err
	}
	n, err := humanize.ParseBytes(s)
	if err != nil {
		return d.Errf("%s: bad size %q: %v", name, s, err)
	}
	if n > 1<<62 {
		return d.Errf("%s: size %q too large", name, s)
	}
	*dst = int64(n)
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Handler)(nil)
