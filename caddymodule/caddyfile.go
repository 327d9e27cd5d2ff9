package caddymodule

import (
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
		sub := d.Val()
		var err error
		switch sub {
		case "to":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			h.Upstreams = append(h.Upstreams, args...)

		case "dynamic":
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

		case "lb_policy":
			lb := h.lb()
			if lb.SelectionPolicy != nil {
				return d.Err("load balancing selection policy already specified")
			}
			if lb.SelectionPolicy, err = parsePolicy(d); err != nil {
				return err
			}

		case "lb_retries":
			err = intArg(d, &h.lb().Retries)
		case "lb_try_duration":
			err = durationArg(d, &h.lb().TryDuration)
		case "lb_try_interval":
			err = durationArg(d, &h.lb().TryInterval)

		case "health_uri":
			err = stringArg(d, &h.active().URI)
		case "health_interval":
			err = durationArg(d, &h.active().Interval)
		case "health_timeout":
			err = durationArg(d, &h.active().Timeout)
		case "health_passes":
			err = intArg(d, &h.active().Passes)
		case "health_fails":
			err = intArg(d, &h.active().Fails)
		case "health_headers":
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

		case "fail_duration":
			err = durationArg(d, &h.passive().FailDuration)
		case "max_fails":
			err = intArg(d, &h.passive().MaxFails)

		case "tls":
			if d.NextArg() {
				return d.ArgErr()
			}
			h.tls()
		case "tls_server_name":
			err = stringArg(d, &h.tls().ServerName)
		case "tls_trusted_ca_certs":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			h.tls().RootCAPEMFiles = append(h.tls().RootCAPEMFiles, args...)
		case "tls_client_auth":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return d.Err("tls_client_auth takes a certificate file and a key file")
			}
			h.tls().ClientCertificateFile, h.tls().ClientCertificateKeyFile = args[0], args[1]
		case "tls_insecure_skip_verify":
			if d.NextArg() {
				return d.ArgErr()
			}
			h.tls().InsecureSkipVerify = true

		case "header_up", "header_down":
			if h.Headers == nil {
				h.Headers = new(Headers)
			}
			ops := &h.Headers.Request
			if sub == "header_down" {
				ops = &h.Headers.Response
			}
			if *ops == nil {
				*ops = new(HeaderOps)
			}
			err = parseHeaderOp(d, *ops)

		case "origins":
			err = listArg(d, &h.Origins)
		case "subprotocols":
			err = listArg(d, &h.Subprotocols)
		case "max_header_bytes":
			err = sizeArg(d, &h.MaxHeaderBytes)
		case "max_headers":
			err = intArg(d, &h.MaxHeaders)

		case "max_frame_size":
			err = sizeArg(d, &h.MaxFrameSize)
		case "max_message_size":
			err = sizeArg(d, &h.MaxMessageSize)
		case "allow":
			if err = stringArg(d, &h.Allow); err == nil {
				_, err = allowedType(h.Allow)
			}
		case "validate":
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
		case "rate_limit":
			h.RateLimit, err = parseRateLimit(d)
		case "compression":
			if err = stringArg(d, &h.Compression); err == nil {
				_, err = compressionMode(h.Compression)
				if err != nil {
					err = d.Err(err.Error())
				}
			}

		case "dial_timeout":
			err = durationArg(d, &h.DialTimeout)
		case "idle_timeout":
			err = durationArg(d, &h.IdleTimeout)
		case "max_lifetime":
			err = durationArg(d, &h.MaxLifetime)
		case "write_timeout":
			err = durationArg(d, &h.WriteTimeout)
		case "close_timeout":
			err = durationArg(d, &h.CloseTimeout)
		case "ping_interval":
			err = durationArg(d, &h.PingInterval)
		case "ping_timeout":
			err = durationArg(d, &h.PingTimeout)
		case "max_sessions":
			err = intArg(d, &h.MaxSessions)
		case "drain_code":
			err = intArg(d, &h.DrainCode)
		case "drain_window":
			err = durationArg(d, &h.DrainWindow)

		default:
			return d.Errf("unrecognized subdirective %s", sub)
		}
		if err != nil {
			return err
		}
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

func (h *Handler) tls() *TLSConfig {
	if h.TLS == nil {
		h.TLS = new(TLSConfig)
	}
	return h.TLS
}

// parsePolicy parses lb_policy's arguments, as reverse_proxy names them.
func parsePolicy(d *caddyfile.Dispenser) (*SelectionPolicy, error) {
	if !d.NextArg() {
		return nil, d.ArgErr()
	}
	sp := &SelectionPolicy{Policy: d.Val()}
	args := d.RemainingArgs()
	switch sp.Policy {
	case "random_choose":
		if len(args) > 1 {
			return nil, d.ArgErr()
		}
		if len(args) == 1 {
			n, err := strconv.Atoi(args[0])
			if err != nil || n < 2 {
				return nil, d.Errf("random_choose: choose must be an integer >= 2, got %q", args[0])
			}
			sp.Choose = n
		}
	case "header":
		if len(args) != 1 {
			return nil, d.Err("lb_policy header takes a header field name")
		}
		sp.Field = args[0]
	case "cookie":
		switch len(args) {
		case 0:
		case 1:
			sp.Name = args[0]
		default:
			return nil, d.Err("lb_policy cookie takes a cookie name (no secret: the upstream sets the cookie)")
		}
	case "random", "round_robin", "least_conn", "first", "ip_hash", "client_ip_hash":
		if len(args) != 0 {
			return nil, d.ArgErr()
		}
	default:
		return nil, d.Errf("unknown lb_policy %q (valid: random, random_choose, round_robin, least_conn, first, ip_hash, client_ip_hash, header, cookie)", sp.Policy)
	}
	return sp, nil
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
